"""The device actor: one task per device, owning its mailbox, its status and its Sessions.

Theory of operation. The actor runs Sessions one after another. It parks (DISCONNECTED, or
FAILED after giving up) until a connection is wanted; then each Session ends either on
purpose (a disconnect: the actor parks again) or with a failure reason, which the actor
reports to its owner, the supervisor. The supervisor's answer is a `Restart` after a delay,
which the actor sleeps on Trio's clock (exact and instant under ``MockClock``), or a
`GiveUp`. The workload (queue and the task on the device, `_workload.py`) belongs to the
actor, not to a Session: queued tasks survive reconnections and run after them.

The actor is its Sessions' `SessionHost`: what the protocol engine says about the
connection arrives as events in `on_event`; the Session never reaches into the actor
otherwise, and the actor never reads the connection.

Statuses change only through `set_status`, which checks the transition table in
``_status.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import trio

from .._sansio._aip import FrameBuilder
from .._sansio._engine import AIPConnection
from .._sansio._engine_events import (
    BadFrameKind,
    BadInput,
    ConnectionDead,
    EngineEvent,
    InfoReceived,
    Registered,
    TaskAccepted,
    TaskEnded,
    TaskRefused,
)
from .._sansio._errors import DeviceUnavailable, TaskError
from .._sansio._policy import Decision, FailureReason, GiveUp, RestartHistory, RestartPolicy
from .._sansio._status import DeviceStatus, check_transition
from ._events import BadFrame, EventHub, StatusChanged
from ._session import Session
from ._settings import Settings
from ._task import ExecutionResult, TaskHandle
from ._throttle import Throttled
from ._workload import DeviceStats, Workload, count_bad_frame

if TYPE_CHECKING:
    from .._transports._transport import Connector
    from ._registry import AgentProfile

logger = logging.getLogger("galaxy_actors.device")


class Owner(Protocol):
    """What a device actor needs from its supervisor."""

    settings: Settings
    connector: Connector
    handshake_limiter: trio.CapacityLimiter | None
    events: EventHub
    # Per-device warnings a server can trigger at will go out rate limited.
    warnings: Throttled

    def decide(self, actor: DeviceActor, reason: FailureReason, detail: str) -> Decision: ...

    def device_of_session(self, session_id: str) -> str | None: ...


class DeviceActor:
    """One device. Created by the supervisor; users reach it through the supervisor.

    It is the `SessionHost` of its Sessions: the engine's events arrive in `on_event`, and
    the task on the device (``running``) is the actor's, not the Session's."""

    # A fleet holds thousands of these: no per-instance __dict__.
    __slots__ = (
        "_attempt_done",
        "_attempt_ok",
        "_changed",
        "_decision",
        "_frames_before",
        "_nap",
        "_parked",
        "device_id",
        "frames",
        "history",
        "max_queue",
        "owner",
        "policy",
        "profile",
        "removed",
        "session",
        "settings",
        "stats",
        "wanted",
        "work",
    )

    def __init__(
        self,
        profile: AgentProfile,
        owner: Owner,
        policy: RestartPolicy,
        max_queue: int | None = None,
    ) -> None:
        self.profile = profile
        # At most this many queued tasks (None: no bound); see `queue_full`.
        self.max_queue = max_queue
        self.device_id = profile.device_id
        self.owner = owner
        self.settings = owner.settings
        self.policy = policy
        self.frames = FrameBuilder(self.settings.task_name, profile.device_id)
        self.stats = DeviceStats()
        self.work = Workload(self.device_id, owner.events, self.stats)
        self.history = RestartHistory()
        self.session: Session | None = None
        self.wanted = False
        self.removed = False
        self._frames_before = 0
        # The restart decision taken when the current connection failed, and when.
        self._decision: tuple[Decision, float] | None = None
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

    def sync_counters(self) -> None:
        """Bring the counters the engine keeps per connection into the profile and stats."""
        session = self.session
        if session is not None:
            engine = session.engine
            self.stats.frames_received = self._frames_before + engine.frames_received
            if engine.last_frame_at is not None:
                self.profile.last_heartbeat = engine.last_frame_at

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
            why = "device removed or supervisor shut down"
            self.work.end_queued(lambda task: self.work.cancelled(task, why))
            self._finish_attempt(ok=False)
            if self.profile.status is not DeviceStatus.DISCONNECTED:
                self.set_status(DeviceStatus.DISCONNECTED)
            self._parked.set()

    def _new_session(self) -> Session:
        settings = self.settings
        owner = self.owner
        engine = AIPConnection(
            self.frames,
            task_name=settings.task_name,
            device_id=self.device_id,
            heartbeat_interval=settings.heartbeat_interval,
            heartbeat_timeout=settings.heartbeat_timeout,
            registration_timeout=settings.registration_timeout,
            device_info_timeout=settings.device_info_timeout,
            session_owner=owner.device_of_session,
        )
        return Session(
            self, engine, send_timeout=settings.send_timeout, limiter=owner.handshake_limiter
        )

    async def _attempt(self) -> None:
        profile = self.profile
        profile.next_retry_at = None
        profile.connection_attempts = self.history.attempts
        if self._attempt_done is None:
            self._attempt_done = trio.Event()
        self.set_status(DeviceStatus.CONNECTING)
        self._decision = None
        session = self._new_session()
        self.session = session
        try:
            await session.run(self.owner.connector, profile.server_url)
        except Exception as exc:
            # Whatever it was, it ends this device's connection, not the supervisor.
            logger.exception(
                "device %s: session crashed", self.device_id, extra={"device_id": self.device_id}
            )
            session.fail(FailureReason.PROTOCOL_ERROR, f"unexpected error: {exc!r}")
        finally:
            self.sync_counters()
            self._frames_before += session.engine.frames_received
            self.session = None
            self.work.settle(session.dead, accepting=self.accepting)
            profile.current_task_id = None
        dead = session.dead
        if dead is None:
            # Ended on purpose: a disconnect.
            self._finish_attempt(ok=False)
            self.set_status(DeviceStatus.DISCONNECTED)
            return
        await self._failed(dead.reason, dead.detail)

    def _session_failed(self, dead: ConnectionDead) -> None:
        """The connection died: FAILED at once, before any task outcome is delivered, so
        nobody woken by one sees the device idle and sends on a dying connection."""
        self.stats.failures += 1
        self.profile.last_failure = f"{dead.reason}: {dead.detail}"
        self.set_status(DeviceStatus.FAILED)
        logger.warning(
            "device %s disconnected: %s: %s",
            self.device_id,
            dead.reason,
            dead.detail,
            extra={
                "device_id": self.device_id,
                "reason": str(dead.reason),
                "task_id": dead.timed_out_task,
            },
        )
        if self.wanted and not self.removed:
            # Decided (and published) now, when the failure happens, not once the dying
            # connection has finished closing, which may take the close bound.
            decision = self.owner.decide(self, dead.reason, dead.detail)
            self._decision = (decision, dead.at)
            if isinstance(decision, GiveUp):
                self.profile.gave_up = True  # as the RestartsStopped event says; carried out below
        if dead.refused_task is not None:
            refused = self.work.running
            if refused is not None and refused.task_id == dead.refused_task:
                # It never ran: back to the head of the queue, for when the device is back.
                self.work.not_sent(refused, by_caller=False, accepting=self.accepting)
        if dead.timed_out_task is not None and self.work.timed_out(dead.timed_out_task):
            self._device_free()

    async def _failed(self, reason: FailureReason, detail: str) -> None:
        profile = self.profile
        if not self.wanted or self.removed:
            # Failed while being disconnected or removed: no restart, and no give-up
            # either; the disconnect decides what the device becomes.
            self._decision = None
            self._finish_attempt(ok=False)
            return
        decided, self._decision = self._decision, None
        if decided is None:  # wanted again only after it failed (a connect meanwhile)
            decided = (self.owner.decide(self, reason, detail), trio.current_time())
        decision, decided_at = decided
        self._finish_attempt(ok=False)
        if isinstance(decision, GiveUp):
            self.wanted = False
            profile.gave_up = True
            self.work.end_queued(
                lambda task: DeviceUnavailable(
                    f"device {self.device_id!r} gave up reconnecting ({decision.why}) before "
                    f"task {task.task_id!r} ran",
                    task_id=task.task_id,
                    device_id=self.device_id,
                )
            )
            return
        profile.next_retry_at = decided_at + decision.delay
        with trio.CancelScope(deadline=decided_at + decision.delay) as self._nap:
            await trio.sleep_forever()
        self._nap = None
        profile.next_retry_at = None
        if not self.wanted and profile.status is DeviceStatus.FAILED:
            self.set_status(DeviceStatus.DISCONNECTED)

    def _connected(self, event: InfoReceived) -> None:
        """The connect sequence completed."""
        if event.note is not None:
            logger.warning(
                "device %s: %s", self.device_id, event.note, extra={"device_id": self.device_id}
            )
        profile = self.profile
        profile.system_info = event.info
        self.history = self.policy.connected(self.history, event.at)
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
        """Connect now (cutting a backoff sleep short) and wait for the attempt's outcome.
        During a disconnect, first wait for it to finish: then connect again."""
        if not self.wanted and self.session is not None:
            await self._parked.wait()  # a disconnect under way: let it finish
        if self.wanted and self.profile.status in (DeviceStatus.IDLE, DeviceStatus.BUSY):
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
        self.work.end_queued(lambda task: self.work.cancelled(task, "device was disconnected"))
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

    # ------------------------------------------------------------------ the engine's events

    def on_event(self, event: EngineEvent) -> None:
        """An event of the current connection's engine (`SessionHost`)."""
        kind = type(event)
        if kind is TaskAccepted:
            assert isinstance(event, TaskAccepted)
            self.work.accepted(event.task_id, event.at)
        elif kind is TaskEnded or kind is TaskRefused:
            assert isinstance(event, TaskEnded | TaskRefused)
            if self.work.ended(event):
                self._device_free()
        elif kind is BadInput:
            assert isinstance(event, BadInput)
            self.bad_frame(event.kind, event.detail)
        elif kind is Registered:
            self.profile.last_heartbeat = event.at
            self.set_status(DeviceStatus.CONNECTED)
        elif kind is InfoReceived:
            assert isinstance(event, InfoReceived)
            self._connected(event)
        elif kind is ConnectionDead:
            assert isinstance(event, ConnectionDead)
            self._session_failed(event)

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
        if session is not None and not self.work.mailbox and session.can_send_now():
            return session
        self.work.queue(task)
        return None

    def next_task(self) -> TaskHandle | None:
        """The next queued task to send (`SessionHost`)."""
        return self.work.next()

    @property
    def queue_full(self) -> bool:
        """Whether a task submitted now would find the queue at its ``max_queue``."""
        return self.max_queue is not None and len(self.work.mailbox) >= self.max_queue

    def task_sent(self, task: TaskHandle, now: float) -> None:
        """``task`` is on the device from now on (`SessionHost`)."""
        self.work.start(task, now)
        self.profile.current_task_id = task.task_id
        self.set_status(DeviceStatus.BUSY)

    def task_not_sent(self, task: TaskHandle, *, by_caller: bool) -> None:
        """A frame-safe send of ``task`` was cancelled before any of it left (`SessionHost`)."""
        if self.work.not_sent(task, by_caller=by_caller, accepting=self.accepting):
            self._device_free()

    def withdraw(self, task: TaskHandle, why: str) -> bool:
        """End a queued task with `TaskCancelled`. False if it was sent or had ended."""
        return self.work.withdraw(task, why)

    def abandon(self, task: TaskHandle, why: str) -> None:
        """Nobody waits for ``task`` any more. Queued: withdrawn. On the device: it ends with
        `TaskCancelled` now; the device stays busy until its TASK_END, which is dropped, and
        the task's id stays reserved until then (the agent may still be running it)."""
        if not self.work.withdraw(task, why):
            task.abandoned = True
            self.work.end(task, self.work.cancelled(task, why))

    def _end_running(
        self, task: TaskHandle, outcome: ExecutionResult | TaskError, now: float | None = None
    ) -> None:
        """The task on the device ended there (TASK_END, refusal, timeout)."""
        self.work.finish(task, outcome, now)
        self._device_free()

    def _device_free(self) -> None:
        self.profile.current_task_id = None
        if self.profile.status is DeviceStatus.BUSY:
            self.set_status(DeviceStatus.IDLE)

    # ------------------------------------------------------------------------ bad input

    def bad_frame(self, kind: BadFrameKind, detail: str) -> None:
        """Count, publish and log (rate limited per device and kind) one bad frame. The
        counter and the events are exact; the log says how many lines it held back."""
        count_bad_frame(self.stats, kind)
        self.owner.warnings.log(
            logging.ERROR if kind is BadFrameKind.CROSS_DEVICE else logging.WARNING,
            (self.device_id, kind),
            f"device {self.device_id}: {kind}: {detail}",
            {"device_id": self.device_id, "kind": kind},
        )
        events = self.owner.events
        if events:
            events.publish(BadFrame(self.device_id, kind, detail, trio.current_time()))

    # -------------------------------------------------------------------------- teardown

    def cancel(self) -> None:
        """Stop everything now (device removed or supervisor shutting down)."""
        self.removed = True
        self.wanted = False
        if self._changed is not None:  # a status waiter learns it will wait in vain
            self._changed.set()
            self._changed = None
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
        return len(self.work.mailbox)

    def load_before(self, priority: int) -> int:
        return self.work.load_before(priority)
