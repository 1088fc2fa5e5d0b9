"""The device actor: one task per device, owning its mailbox, its status and its Sessions.

Theory of operation. The actor runs Sessions one after another. It parks (DISCONNECTED, or
FAILED after giving up) until a connection is wanted; then each Session ends either on
purpose (a disconnect: the actor parks again) or with a failure reason, which the actor
reports to its owner, the supervisor. The supervisor's answer is a `Restart` after a delay,
which the actor sleeps on Trio's clock (exact and instant under ``MockClock``), or a
`GiveUp`. The mailbox belongs to the actor, not to a Session: queued tasks survive
reconnections and run after them.

Statuses change only through `set_status`, which checks the transition table in
``_status.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from ._aip import FrameBuilder
from ._errors import DeviceUnavailable, TaskCancelled, TaskError
from ._events import BadFrame, EventHub, StatusChanged, TaskEnded, TaskQueued
from ._mailbox import Mailbox
from ._policy import Decision, FailureReason, GiveUp, RestartHistory, RestartPolicy
from ._session import Session
from ._status import DeviceStatus, check_transition
from ._task import ExecutionResult, TaskHandle

if TYPE_CHECKING:
    from ._registry import AgentProfile
    from ._transport import Connector

logger = logging.getLogger("galaxy_actors.device")


@attrs.frozen
class ActorSettings:
    """Timing and identity settings shared by every device of one supervisor."""

    task_name: str
    heartbeat_interval: float
    heartbeat_timeout: float
    registration_timeout: float
    device_info_timeout: float
    send_timeout: float
    disconnect_grace: float


class Owner(Protocol):
    """What a device actor needs from its supervisor."""

    settings: ActorSettings
    connector: Connector
    handshake_limiter: trio.CapacityLimiter | None
    events: EventHub

    def decide(self, actor: DeviceActor, reason: FailureReason, detail: str) -> Decision: ...

    def device_of_session(self, session_id: str) -> str | None: ...


@attrs.define
class DeviceStats:
    """Counters a user can read for one device."""

    frames_received: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    connections: int = 0
    failures: int = 0
    protocol_errors: int = 0
    unexpected_frames: int = 0
    error_frames: int = 0
    unknown_task_frames: int = 0
    cross_device_frames: int = 0


class DeviceActor:
    """One device. Created by the supervisor; users reach it through the supervisor."""

    # A fleet holds thousands of these: no per-instance __dict__.
    __slots__ = (
        "_attempt_done",
        "_attempt_ok",
        "_changed",
        "_nap",
        "_parked",
        "device_id",
        "frames",
        "history",
        "mailbox",
        "owner",
        "policy",
        "profile",
        "removed",
        "session",
        "settings",
        "stats",
        "wanted",
    )

    def __init__(self, profile: AgentProfile, owner: Owner, policy: RestartPolicy) -> None:
        self.profile = profile
        self.device_id = profile.device_id
        self.owner = owner
        self.settings = owner.settings
        self.policy = policy
        self.frames = FrameBuilder(self.settings.task_name, profile.device_id)
        self.mailbox = Mailbox()
        self.stats = DeviceStats()
        self.history = RestartHistory()
        self.session: Session | None = None
        self.wanted = False
        self.removed = False
        self._nap: trio.CancelScope | None = None
        self._attempt_done: trio.Event | None = None
        self._attempt_ok = False
        self._parked = trio.Event()
        self._changed: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<DeviceActor {self.device_id!r} {self.profile.status}>"

    # ---------------------------------------------------------------------------- status

    def set_status(self, new: DeviceStatus) -> None:
        old = self.profile.status
        if old is new:
            return
        check_transition(self.device_id, old, new)
        self.profile.status = new
        if self._changed is not None:
            self._changed.set()
            self._changed = None
        if self.owner.events:
            self.owner.events.publish(StatusChanged(self.device_id, old, new, trio.current_time()))

    async def wait_changed(self) -> None:
        """Wait for the next status change."""
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

    @property
    def accepting(self) -> bool:
        """Whether a task submitted now will be queued or run (not refused at once)."""
        return self.wanted and not self.removed

    # ------------------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """The actor's task. Ends once `cancel` was called (the device removed, or the
        supervisor shutting down), or when cancelled."""
        try:
            while True:
                if self.removed:
                    return
                if not self.wanted:
                    self._parked.set()
                    with trio.CancelScope() as self._nap:
                        await trio.sleep_forever()
                    self._nap = None
                    continue
                self._parked = trio.Event()
                await self._attempt()
        finally:
            self._end_everything("device removed or supervisor shut down")
            self._finish_attempt(ok=False)
            if self.profile.status is not DeviceStatus.DISCONNECTED:
                self.set_status(DeviceStatus.DISCONNECTED)
            self._parked.set()

    async def _attempt(self) -> None:
        profile = self.profile
        profile.next_retry_at = None
        profile.connection_attempts = self.history.attempts
        if self._attempt_done is None:
            self._attempt_done = trio.Event()
        self.set_status(DeviceStatus.CONNECTING)
        session = Session(self)
        self.session = session
        try:
            await session.run()
        except Exception as exc:
            # Whatever it was, it ends this device's connection, not the supervisor.
            logger.exception(
                "device %s: session crashed", self.device_id, extra={"device_id": self.device_id}
            )
            session.fail(FailureReason.PROTOCOL_ERROR, f"unexpected error: {exc!r}")
        finally:
            self.session = None
            session.settle_in_flight()
            profile.current_task_id = None
        if session.failure is None:
            # Ended on purpose: a disconnect.
            self._finish_attempt(ok=False)
            self.set_status(DeviceStatus.DISCONNECTED)
            return
        reason, detail = session.failure
        await self._failed(reason, detail)

    def session_failed(self, reason: FailureReason, detail: str) -> None:
        """Called by the Session the moment it fails, before its task outcomes."""
        self.stats.failures += 1
        self.profile.last_failure = f"{reason}: {detail}"
        self.set_status(DeviceStatus.FAILED)
        logger.warning(
            "device %s disconnected: %s: %s",
            self.device_id,
            reason,
            detail,
            extra={"device_id": self.device_id},
        )

    async def _failed(self, reason: FailureReason, detail: str) -> None:
        profile = self.profile
        if not self.wanted or self.removed:
            # Failed while being disconnected or removed: no restart, and no give-up
            # either; the disconnect decides what the device becomes.
            self._finish_attempt(ok=False)
            return
        decision = self.owner.decide(self, reason, detail)
        self._finish_attempt(ok=False)
        if isinstance(decision, GiveUp):
            self.wanted = False
            profile.gave_up = True
            self._end_queued(
                lambda task: DeviceUnavailable(
                    f"device {self.device_id!r} gave up reconnecting ({decision.why}) before "
                    f"task {task.task_id!r} ran",
                    task_id=task.task_id,
                    device_id=self.device_id,
                )
            )
            return
        now = trio.current_time()
        profile.next_retry_at = now + decision.delay
        with trio.CancelScope(deadline=now + decision.delay) as self._nap:
            await trio.sleep_forever()
        self._nap = None
        profile.next_retry_at = None
        if not self.wanted and profile.status is DeviceStatus.FAILED:
            self.set_status(DeviceStatus.DISCONNECTED)

    def connected(self, system_info: dict[str, Any] | None) -> None:
        """The connect sequence completed: called by the Session."""
        now = trio.current_time()
        profile = self.profile
        profile.system_info = system_info
        self.history = self.policy.connected(self.history, now)
        profile.connection_attempts = self.history.attempts
        profile.gave_up = False
        profile.last_failure = None
        self.stats.connections += 1
        self.set_status(DeviceStatus.IDLE)
        self._finish_attempt(ok=True)

    def _finish_attempt(self, *, ok: bool) -> None:
        done = self._attempt_done
        if done is not None:
            self._attempt_ok = ok
            self._attempt_done = None
            done.set()

    async def connect(self) -> bool:
        """Connect now (cutting a backoff sleep short) and wait for the attempt's outcome."""
        status = self.profile.status
        if status in (DeviceStatus.IDLE, DeviceStatus.BUSY):
            return True
        if self.profile.gave_up:
            # An explicit connect after giving up starts the count afresh.
            self.history = RestartHistory()
            self.profile.gave_up = False
        self.wanted = True
        if self._attempt_done is None:
            self._attempt_done = trio.Event()
        done = self._attempt_done
        if self._nap is not None:
            self._nap.cancel()
        await done.wait()
        return self._attempt_ok

    def want_connection(self) -> None:
        """Connect in the background (auto-connect); returns at once."""
        self.wanted = True
        if self._nap is not None:
            self._nap.cancel()

    async def disconnect(self, *, force: bool = False, grace: float | None = None) -> None:
        """Stop reconnecting, cancel queued tasks, let the running task finish within
        ``grace`` seconds (none with ``force``), close the connection, and wait until the
        device is DISCONNECTED."""
        self.wanted = False
        self._end_queued(
            lambda task: TaskCancelled(
                f"task {task.task_id!r} cancelled: device {self.device_id!r} was disconnected",
                task_id=task.task_id,
                device_id=self.device_id,
            )
        )
        session = self.session
        if session is not None:
            session.stop(
                0.0 if force else (self.settings.disconnect_grace if grace is None else grace)
            )
        elif self._nap is not None:
            self._nap.cancel()
        await self._parked.wait()
        if self.profile.status is DeviceStatus.FAILED:
            self.set_status(DeviceStatus.DISCONNECTED)

    # ---------------------------------------------------------------------------- tasks

    def accept(self, task: TaskHandle) -> Session | None:
        """Take ``task``: queue it, or, if the device is free and nothing waits before it,
        return the Session the caller sends it on at once (`Session.send_task`)."""
        if not self.accepting:
            why = "gave up reconnecting" if self.profile.gave_up else "is not connected"
            raise DeviceUnavailable(
                f"device {self.device_id!r} {why}", task_id=task.task_id, device_id=self.device_id
            )
        task.device_id = self.device_id
        session = self.session
        if session is not None and not self.mailbox and session.can_send_now():
            return session
        self.mailbox.push(task)
        self._queued(task)
        return None

    def requeue(self, task: TaskHandle) -> None:
        """Put a task whose connection died back at the head of its priority (at-least-once
        delivery): it runs again after the reconnection, before anything of its priority."""
        self.mailbox.push_front(task)
        self._queued(task)

    def _queued(self, task: TaskHandle) -> None:
        events = self.owner.events
        if events:
            events.publish(
                TaskQueued(
                    task.task_id,
                    self.device_id,
                    task.priority,
                    self.mailbox.depth_by_priority(),
                    trio.current_time(),
                )
            )

    def withdraw(self, task: TaskHandle, why: str) -> bool:
        """End a queued task with `TaskCancelled`. False if it was sent or had ended."""
        if task.done or (task.sent and self._is_in_flight(task)):
            return False
        if self._end(
            task,
            TaskCancelled(
                f"task {task.task_id!r} cancelled: {why}",
                task_id=task.task_id,
                device_id=self.device_id,
            ),
        ):
            self.mailbox.withdrawn(task)
            return True
        return False

    def _is_in_flight(self, task: TaskHandle) -> bool:
        session = self.session
        return session is not None and session.in_flight is task

    def abandon(self, task: TaskHandle, why: str) -> None:
        """Nobody waits for ``task`` any more. Queued: withdrawn. On the device: it ends with
        `TaskCancelled` now; the device stays busy until its TASK_END, which is dropped."""
        if not self.withdraw(task, why):
            task.abandoned = True
            self._end(
                task,
                TaskCancelled(
                    f"task {task.task_id!r} cancelled: {why}",
                    task_id=task.task_id,
                    device_id=self.device_id,
                ),
            )

    def task_started(self, task: TaskHandle) -> None:
        self.profile.current_task_id = task.task_id
        self.set_status(DeviceStatus.BUSY)

    def task_not_started(self, task: TaskHandle, *, requeue: bool) -> None:
        """``task``'s send was cancelled before any of it left (a frame-safe transport).
        ``requeue``: back to the head of the queue; else the device is free again."""
        self.profile.current_task_id = None
        if requeue:
            self.requeue(task)
        elif self.profile.status is DeviceStatus.BUSY:
            self.set_status(DeviceStatus.IDLE)

    def task_ended(
        self, task: TaskHandle, outcome: ExecutionResult | TaskError, now: float | None = None
    ) -> None:
        """The task on the device ended (TASK_END, refusal or timeout)."""
        self.profile.current_task_id = None
        if isinstance(outcome, ExecutionResult) and outcome.ok:
            self.stats.tasks_completed += 1
        else:
            self.stats.tasks_failed += 1
        self._end(task, outcome, now)
        if self.profile.status is DeviceStatus.BUSY:
            self.set_status(DeviceStatus.IDLE)

    def task_cancelled(self, task: TaskHandle, why: str) -> None:
        self.task_ended(
            task,
            TaskCancelled(
                f"task {task.task_id!r} cancelled: {why}",
                task_id=task.task_id,
                device_id=self.device_id,
            ),
        )

    def _end(
        self, task: TaskHandle, outcome: ExecutionResult | TaskError, now: float | None = None
    ) -> bool:
        now = trio.current_time() if now is None else now
        if not task._resolve(outcome, now):
            return False
        events = self.owner.events
        if events:
            if isinstance(outcome, ExecutionResult):
                name, detail = str(outcome.status), outcome.error
            else:
                name, detail = type(outcome).__name__, str(outcome)
            events.publish(TaskEnded(task.task_id, self.device_id, name, detail, now))
        return True

    def _end_queued(self, error: Callable[[TaskHandle], TaskError]) -> None:
        """End every queued task with the error ``error(task)`` makes for it."""
        for task in self.mailbox.drain():
            self._end(task, error(task))

    def _end_everything(self, why: str) -> None:
        self._end_queued(
            lambda task: TaskCancelled(
                f"task {task.task_id!r} cancelled: {why}",
                task_id=task.task_id,
                device_id=self.device_id,
            )
        )

    # ------------------------------------------------------------------------ bad input

    def bad_frame(self, kind: str, detail: str) -> None:
        stats = self.stats
        if kind == "protocol_error":
            stats.protocol_errors += 1
        elif kind == "error_frame":
            stats.error_frames += 1
        elif kind == "cross_device":
            stats.cross_device_frames += 1
        elif kind == "unknown_task":
            stats.unknown_task_frames += 1
        else:
            stats.unexpected_frames += 1
        level = logging.ERROR if kind == "cross_device" else logging.WARNING
        logger.log(
            level,
            "device %s: %s: %s",
            self.device_id,
            kind,
            detail,
            extra={"device_id": self.device_id},
        )
        events = self.owner.events
        if events:
            events.publish(BadFrame(self.device_id, kind, detail, trio.current_time()))

    def foreign_session(self, session_id: str | None, what: str) -> None:
        """A frame about a task this connection does not have in flight."""
        if session_id is None:
            self.bad_frame("unknown_task", f"{what} without a session_id")
            return
        owner_device = self.owner.device_of_session(session_id)
        if owner_device is not None and owner_device != self.device_id:
            # The reference's "cross-device task-result injection": never accept it.
            self.bad_frame(
                "cross_device",
                f"security: {what} for session {session_id!r} "
                f"of device {owner_device!r} arrived on device {self.device_id!r}'s "
                "connection; ignored",
            )
        else:
            self.bad_frame("unknown_task", f"{what} for unknown session {session_id!r}")

    # -------------------------------------------------------------------------- teardown

    def cancel(self) -> None:
        """Stop everything now (device removed or supervisor shutting down)."""
        self.removed = True
        self.wanted = False
        session = self.session
        if session is not None:
            session.stop(0.0)
        if self._nap is not None:
            self._nap.cancel()

    @property
    def next_retry_in(self) -> float | None:
        at = self.profile.next_retry_at
        return None if at is None else max(0.0, at - trio.current_time())

    @property
    def queue_depth(self) -> int:
        return len(self.mailbox)

    def load_before(self, priority: int) -> int:
        """How many tasks would run before a new task of ``priority`` on this device."""
        queued = sum(n for p, n in self.mailbox.depth_by_priority().items() if p <= priority)
        session = self.session
        busy = session is not None and session.in_flight is not None
        return queued + (1 if busy else 0)
