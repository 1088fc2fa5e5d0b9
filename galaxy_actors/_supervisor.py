"""The supervisor: owns the device actors, the registry, the restart policy and routing.

Theory of operation. `open_supervisor` opens a nursery; every device actor is a task in it,
and nothing the supervisor starts outlives the ``async with`` block. When a device's Session
fails, its actor asks the supervisor (`decide`), which consults the restart policy with the
device's history, publishes the failure and the decision, and hands back the delay or the
give-up; the actor sleeps the delay on Trio's clock. The decision is a synchronous call into
the supervisor in the failing actor's task: a hand-off to a supervisor task would cost a
scheduler pass and buy nothing, since deciding never waits.

Containment. A device's trouble stays the device's: a restart policy that raises (or
answers something other than a decision) gives that device up, logged with the traceback,
and the rest of the fleet carries on; `RestartFloor` keeps a policy that restarts at once
for ever from spinning a device in a hot loop.

Leaving the block: no new tasks are accepted; every device is disconnected gracefully in
parallel (queued tasks cancelled, running tasks given ``shutdown_grace`` seconds, sockets
closed with a close frame); then whatever is left is cancelled. The wait is bounded by
``shutdown_grace + close_timeout + 1 s``, where ``close_timeout`` is the connector's
attribute of that name, an optional part of a `Connector` (`WebSocketConnector` has one:
its bound on a closing handshake), or 4 s for a connector without one. A device still
closing past that bound is cancelled; the event hub is closed by then, and what it
publishes afterwards is dropped (counted in ``events.dropped_after_close``). Every task
submitted has its outcome by the time the block has exited.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._device import ActorSettings, DeviceActor
from ._durable import Durability
from ._errors import (
    ConfigurationError,
    DeviceUnavailable,
    DuplicateTaskId,
    SupervisorClosed,
    TaskCancelled,
    UnknownDevice,
    UnknownTask,
)
from ._events import (
    ConnectionFailed,
    DeviceAdded,
    DeviceRemoved,
    EventHub,
    GaveUp,
    RestartScheduled,
    Subscription,
)
from ._policy import (
    Decision,
    FailureReason,
    GiveUp,
    RandomSource,
    Restart,
    RestartFloor,
    RestartPolicy,
)
from ._registry import AgentProfile, DeviceRegistry, DeviceSnapshot
from ._status import DeviceStatus
from ._task import Delivery, ExecutionResult, TaskHandle
from ._throttle import Throttled
from ._transport import Connector, WebSocketConnector, validate_server_url
from ._workload import DeviceStats

if TYPE_CHECKING:
    import os

    from ._journal import Journal
    from ._session import Session

__all__ = ["Supervisor", "open_supervisor"]

logger = logging.getLogger("galaxy_actors.supervisor")

WARNING_INTERVAL = 10.0

# How long closing a connection may take when the connector does not say (no
# ``close_timeout``), and what the shutdown allows beyond grace and close for the rest of
# the unwinding. Together, the fixed 5 s the bound had before it read the connector's.
_UNKNOWN_CLOSE_TIME = 4.0
_SHUTDOWN_MARGIN = 1.0


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    # The type first: comparing a str with 0 would raise TypeError, not our error.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if allow_zero else value > 0)
        or not math.isfinite(value)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


class Supervisor:
    """Keeps a fleet of devices connected and busy. Make one with `open_supervisor`."""

    def __init__(
        self,
        *,
        task_name: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        registration_timeout: float,
        device_info_timeout: float,
        send_timeout: float,
        disconnect_grace: float,
        shutdown_grace: float,
        policy: RestartPolicy | None,
        connector: Connector | None,
        max_concurrent_connections: int | None,
        rng: RandomSource | None,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(task_name, str) or not task_name or "@" in task_name:
            raise ConfigurationError(
                f"task_name must be a non-empty string without '@', got {task_name!r}"
            )
        if max_concurrent_connections is not None and (
            isinstance(max_concurrent_connections, bool)
            or not isinstance(max_concurrent_connections, int)
            or max_concurrent_connections < 1
        ):
            raise ConfigurationError(
                "max_concurrent_connections must be an int >= 1 or None, "
                f"got {max_concurrent_connections!r}"
            )
        self.settings = ActorSettings(
            task_name=task_name,
            heartbeat_interval=_positive("heartbeat_interval", heartbeat_interval),
            heartbeat_timeout=_positive("heartbeat_timeout", heartbeat_timeout),
            registration_timeout=_positive("registration_timeout", registration_timeout),
            device_info_timeout=_positive("device_info_timeout", device_info_timeout),
            send_timeout=_positive("send_timeout", send_timeout),
            disconnect_grace=_positive("disconnect_grace", disconnect_grace, allow_zero=True),
        )
        self.shutdown_grace = _positive("shutdown_grace", shutdown_grace, allow_zero=True)
        # None means the default, here and only here (open_supervisor and DeviceManager
        # pass their arguments through).
        self.policy = policy if policy is not None else RestartPolicy()
        self.connector: Connector = connector if connector is not None else WebSocketConnector()
        self.handshake_limiter = (
            None
            if max_concurrent_connections is None
            else trio.CapacityLimiter(max_concurrent_connections)
        )
        self.events = EventHub()
        #: Per-device warnings that a server can trigger at will (bad frames): at most one
        #: line per device and kind every `WARNING_INTERVAL` seconds, with a count of the rest.
        self.warnings = Throttled(logging.getLogger("galaxy_actors.device"), WARNING_INTERVAL)
        self.registry = DeviceRegistry()
        self._rng: RandomSource = rng if rng is not None else random.Random()
        self._actors: dict[str, DeviceActor] = {}
        self._live: dict[str, TaskHandle] = {}
        self._session_prefix = f"{task_name}@"
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._accepting = True
        #: Keeps immediate restarts from becoming a hot loop (see `RestartFloor`).
        self.restart_floor = RestartFloor()
        # Callers of `wait_for_status`, per device: cancelled when the device is removed or
        # the supervisor has shut down, as no status change may ever come to wake them.
        self._status_waiters: dict[str, set[trio.CancelScope]] = {}
        #: The task journal's hooks (`_durable.py`); None without a journal.
        self.durable = None if journal is None else Durability(self, _journal_of(journal))

    # ---------------------------------------------------------------------------- devices

    def add_device(
        self,
        device_id: str,
        server_url: str,
        os: str = "unknown",
        *,
        capabilities: Collection[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_retries: int | None = None,
        connect: bool = True,
    ) -> AgentProfile:
        """Register a device and start its actor; with ``connect`` (the default) it connects
        in the background. Raises `DuplicateDevice`, `InvalidServerURL`,
        `ConfigurationError`, `SupervisorClosed`."""
        nursery = self._require_open()
        if not isinstance(device_id, str) or not device_id:
            raise ConfigurationError(f"device_id must be a non-empty string, got {device_id!r}")
        validate_server_url(server_url)
        if isinstance(capabilities, str):
            raise ConfigurationError("capabilities must be a collection of strings, not a str")
        policy = self.policy
        if max_retries is not None and max_retries != policy.max_retries:
            policy = attrs.evolve(policy, max_retries=max_retries)
        profile = AgentProfile(
            device_id=device_id,
            server_url=server_url,
            os=os,
            capabilities=list(capabilities or ()),
            metadata=dict(metadata or {}),
            max_retries=policy.max_retries,
        )
        self.registry.add(profile)
        actor = DeviceActor(profile, self, policy)
        self._actors[device_id] = actor
        if connect:
            actor.want_connection()
        nursery.start_soon(actor.run, name=f"device:{device_id}")
        if self.durable is not None:
            self.durable.device_added(actor)
        if self.events:
            self.events.publish(DeviceAdded(device_id, trio.current_time()))
        return profile

    async def remove_device(self, device_id: str, *, force: bool = False) -> None:
        """Disconnect (gracefully unless ``force``), stop the actor and forget the device."""
        actor = self._actor(device_id)
        await actor.disconnect(force=force)
        actor.cancel()  # its task ends: nothing per device is left in the nursery
        del self._actors[device_id]
        self.registry.remove(device_id)
        for waiter in self._status_waiters.pop(device_id, ()):
            waiter.cancel()
        if self.events:
            self.events.publish(DeviceRemoved(device_id, trio.current_time()))

    async def connect(self, device_id: str) -> bool:
        """Connect ``device_id`` now and wait for the attempt's outcome: True when the device
        is idle, False when the attempt failed (it then retries per the policy)."""
        if self._closing or self._nursery is None:
            raise SupervisorClosed("the supervisor is closed or shutting down")
        return await self._actor(device_id).connect()

    async def disconnect(
        self, device_id: str, *, force: bool = False, grace: float | None = None
    ) -> None:
        """Disconnect ``device_id``: queued tasks end with `TaskCancelled`; the running task
        may finish within ``grace`` seconds (default ``disconnect_grace``) unless ``force``;
        the connection closes with a close frame; the device stays DISCONNECTED."""
        if grace is not None:
            _positive("grace", grace, allow_zero=True)
        await self._actor(device_id).disconnect(force=force, grace=grace)

    def _actor(self, device_id: str) -> DeviceActor:
        try:
            return self._actors[device_id]
        except KeyError:
            raise UnknownDevice(device_id) from None

    def stats(self, device_id: str) -> DeviceStats:
        actor = self._actor(device_id)
        actor.sync_counters()
        return actor.stats

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        return self._snapshot(self._actor(device_id))

    def snapshots(self) -> list[DeviceSnapshot]:
        """Every device's state now, in registration order."""
        return [self._snapshot(a) for a in self._actors.values()]

    @staticmethod
    def _snapshot(actor: DeviceActor) -> DeviceSnapshot:
        actor.sync_counters()
        return actor.profile.snapshot(actor.queue_depth, actor.work.mailbox.depth_by_priority())

    def queue_depth_by_priority(self, device_id: str) -> dict[int, int]:
        return self._actor(device_id).work.mailbox.depth_by_priority()

    async def wait_for_status(self, device_id: str, *statuses: DeviceStatus) -> None:
        """Wait until ``device_id`` is in one of ``statuses``.

        It looks at the status when woken, so a status held only within one scheduling step
        (CONNECTING that fails at once, say) can pass unseen; to see every transition, read
        `StatusChanged` events from `subscribe`.

        Raises `UnknownDevice` if the device is unknown, or is removed before the status
        comes, and `SupervisorClosed` if the supervisor's block ends first."""
        actor = self._actor(device_id)
        if actor.profile.status in statuses:
            return
        waiters = self._status_waiters.setdefault(device_id, set())
        with trio.CancelScope() as scope:
            waiters.add(scope)
            try:
                while actor.profile.status not in statuses:
                    await actor.wait_changed()
                return
            finally:
                waiters.discard(scope)
                if not waiters and self._status_waiters.get(device_id) is waiters:
                    del self._status_waiters[device_id]
        if self._actors.get(device_id) is not actor:
            raise UnknownDevice(device_id)
        raise SupervisorClosed(
            f"the supervisor shut down before device {device_id!r} reached "
            + " or ".join(str(s) for s in statuses)
        )

    @property
    def device_ids(self) -> list[str]:
        return list(self._actors)

    # ------------------------------------------------------------------------ decisions

    def decide(self, actor: DeviceActor, reason: FailureReason, detail: str) -> Decision:
        """Called by a failed device actor: restart after a delay, or give up.

        Never raises for the policy: the policy is user code, run in the failing device's
        task, inside the supervisor's nursery, where an exception would take every device
        down. A policy that raises, or answers something other than a `Restart` or a
        `GiveUp`, gives up this device (logged with the traceback); the others carry on.
        A restart's delay is then raised to `restart_floor` if the device is in a hot loop.
        """
        now = trio.current_time()
        policy = actor.policy
        decision: Decision
        try:
            decision = policy.decide(actor.history, reason, now, self._rng)
            if not isinstance(decision, Restart | GiveUp):
                raise TypeError(
                    f"it returned {decision!r} ({type(decision).__name__}), "
                    "not a Restart or a GiveUp"
                )
            history = policy.record(actor.history, decision, now)
        except Exception as exc:
            logger.exception(
                "device %s: the restart policy failed after %s; giving this device up",
                actor.device_id,
                reason,
                extra={"device_id": actor.device_id, "reason": str(reason)},
            )
            decision = GiveUp(f"the restart policy raised {type(exc).__name__}: {exc}")
            history = actor.history
        asked = decision
        decision, actor.history = self.restart_floor.apply(history, decision, now)
        if decision is not asked:
            logger.warning(
                "device %s: %d quick restarts in a row: waiting %g s, not %g s",
                actor.device_id,
                actor.history.quick_restarts,
                self.restart_floor.delay,
                asked.delay if isinstance(asked, Restart) else 0.0,
                extra={"device_id": actor.device_id},
            )
        profile = actor.profile
        events = self.events
        if events:
            events.publish(ConnectionFailed(actor.device_id, str(reason), detail, now))
        if isinstance(decision, GiveUp):
            logger.error(
                "device %s: giving up: %s",
                actor.device_id,
                decision.why,
                extra={"device_id": actor.device_id, "reason": str(reason)},
            )
            if events:
                events.publish(GaveUp(actor.device_id, decision.why, now))
        else:
            logger.info(
                "device %s: reconnecting in %g s (attempt %d/%d)",
                actor.device_id,
                decision.delay,
                actor.history.attempts,
                profile.max_retries,
                extra={
                    "device_id": actor.device_id,
                    "reason": str(reason),
                    "attempt": actor.history.attempts,
                },
            )
            if events:
                events.publish(
                    RestartScheduled(
                        actor.device_id,
                        actor.history.attempts,
                        profile.max_retries,
                        decision.delay,
                        now,
                    )
                )
        return decision

    def device_of_session(self, session_id: str) -> str | None:
        if not session_id.startswith(self._session_prefix):
            return None
        task = self._live.get(session_id[len(self._session_prefix) :])
        return None if task is None else task.device_id

    # ---------------------------------------------------------------------------- tasks

    # ``timeout`` is the task's limit on the device (the reference's name), not this call's.
    async def submit(
        self,
        description: str,
        data: Mapping[str, Any] | None = None,
        *,
        device_id: str | None = None,
        capabilities: Collection[str] | None = None,
        task_id: str | None = None,
        timeout: float = 1000.0,
        delivery: Delivery | str = Delivery.AT_MOST_ONCE,
        priority: int = 0,
    ) -> TaskHandle:
        """Submit a task to ``device_id``, or to the best device with ``capabilities`` (idle
        first, then the fewest tasks ahead of it). Returns once the task is sent or queued;
        await ``handle.result()`` for its outcome.

        Raises at once, and the task does not exist, on: `UnknownDevice`,
        `DeviceUnavailable` (disconnected, gave up, or no device has the capabilities),
        `DuplicateTaskId`, `SupervisorClosed`, `ConfigurationError` (bad argument, or data
        that is not JSON-serialisable).
        """
        if self.durable is not None:
            return await self.durable.submit(
                description, data, device_id, capabilities, task_id, timeout, delivery, priority
            )
        # A checkpoint, as Trio's own calls are (a queued task makes none, and a frame the
        # Session writes at once is followed by no schedule point), in their usual shape:
        # cancellable before anything happens, yielding once it has.
        await trio.lowlevel.checkpoint_if_cancelled()
        task, session = self._admit(
            description, data, device_id, capabilities, task_id, timeout, delivery, priority
        )
        if session is not None:
            await self._send_now(session, task)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return task

    def _admit(
        self,
        description: str,
        data: Mapping[str, Any] | None,
        device_id: str | None,
        capabilities: Collection[str] | None,
        task_id: str | None,
        timeout: float,
        delivery: Delivery | str,
        priority: int,
        *,
        accept: bool = True,
    ) -> tuple[TaskHandle, Session | None]:
        """Check the arguments, make the task and hand it to its device: queued, or to be
        sent at once on the Session returned (by `_send_now`, in the caller's task).

        Plain code, no await: the usual path of a task is the one with the fewest coroutine
        frames (each is an allocation the cyclic GC then walks)."""
        self._require_open()
        # Every task passes here: the usual argument types are recognised first, cheaply.
        if type(description) is not str and not isinstance(description, str):
            raise ConfigurationError(f"task description must be a string, got {description!r}")
        if type(timeout) is not float or not 0.0 < timeout < math.inf:
            timeout = _positive("timeout", timeout)
        if type(priority) is not int and (
            isinstance(priority, bool) or not isinstance(priority, int)
        ):
            raise ConfigurationError(f"priority must be an int, got {priority!r}")
        if type(delivery) is not Delivery:
            try:
                delivery = Delivery(delivery)
            except ValueError:
                raise ConfigurationError(f"unknown delivery {delivery!r}") from None
        if task_id is None:
            task_id = uuid.uuid4().hex
        elif not isinstance(task_id, str) or not task_id:
            raise ConfigurationError(f"task_id must be a non-empty string, got {task_id!r}")
        if task_id in self._live:
            raise DuplicateTaskId(task_id)
        try:
            data_json = json.dumps({} if data is None else data)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"task data is not JSON-serialisable: {exc}") from None
        if device_id is not None:
            actor = self._actors.get(device_id)
            if actor is None:
                raise UnknownDevice(device_id, task_id=task_id)
        else:
            actor = self._route(capabilities or (), priority, task_id)
        task = TaskHandle(
            task_id,
            description,
            data_json,
            timeout=timeout,
            delivery=delivery,
            priority=priority,
            submitted_at=trio.current_time(),
            on_released=self._forget,
        )
        if not accept:  # journaled: its device gets it once it is on disk (_durable.py)
            task.device_id = actor.device_id
            return task, None
        session = actor.accept(task)
        self._live[task_id] = task
        return task, session

    async def _send_now(self, session: Session, task: TaskHandle) -> None:
        try:
            await session.send_task(task, by_caller=True)
        except BaseException:
            # Cancelled before any of the frame left: the task never started (`_not_sent`).
            self._forget(task)
            raise

    def _forget(self, task: TaskHandle) -> None:
        if self._live.get(task.task_id) is task:
            del self._live[task.task_id]

    def _route(self, capabilities: Collection[str], priority: int, task_id: str) -> DeviceActor:
        if isinstance(capabilities, str):
            raise ConfigurationError("capabilities must be a collection of strings, not a str")
        need = set(capabilities)
        best: DeviceActor | None = None
        best_key: tuple[int, int] | None = None
        for actor in self._actors.values():
            if not actor.accepting or not need.issubset(actor.profile.capabilities):
                continue
            status = actor.profile.status
            load = actor.load_before(priority)
            if status is DeviceStatus.IDLE and load == 0:
                return actor  # idle and nothing queued: nobody beats it
            rank = 1 if status in (DeviceStatus.IDLE, DeviceStatus.BUSY) else 2
            key = (rank, load)
            if best_key is None or key < best_key:
                best, best_key = actor, key
        if best is None:
            wanted = ", ".join(sorted(need)) or "(none)"
            raise DeviceUnavailable(
                f"no connected or reconnecting device has capabilities {wanted}",
                task_id=task_id,
                device_id=None,
            )
        return best

    async def run_task(
        self,
        description: str,
        data: Mapping[str, Any] | None = None,
        *,
        device_id: str | None = None,
        capabilities: Collection[str] | None = None,
        task_id: str | None = None,
        timeout: float = 1000.0,
        delivery: Delivery | str = Delivery.AT_MOST_ONCE,
        priority: int = 0,
    ) -> ExecutionResult:
        """Submit a task and wait for its result; raises its `TaskError` otherwise.

        If the caller is cancelled while waiting, a queued task is withdrawn (it will not
        run) and a running one ends with `TaskCancelled` (the device finishes it, and its
        result is dropped)."""
        if self.durable is not None:
            task = await self.durable.submit(
                description, data, device_id, capabilities, task_id, timeout, delivery, priority
            )
        else:
            task, session = self._admit(
                description, data, device_id, capabilities, task_id, timeout, delivery, priority
            )
            if session is not None:
                await self._send_now(session, task)
        try:
            return await task.result()
        except trio.Cancelled:
            self.cancel_task(task, "its caller was cancelled")
            raise

    async def task(self, task_id: str) -> TaskHandle:
        """The task with this id: live, or (with a journal) ended and still retained, or
        recovered from the journal. Raises `UnknownTask`. ``await handle.result()``."""
        task = self._live.get(task_id)
        if task is not None:
            return task
        if self.durable is None:
            raise UnknownTask(task_id)
        return await self.durable.fetch(task_id)

    def cancel_task(self, task: TaskHandle, why: str = "cancelled by the user") -> None:
        """Withdraw ``task`` if queued; if already on the device, end it with
        `TaskCancelled` now and drop its result when it comes."""
        if task.done:
            return
        actor = self._actors.get(task.device_id or "")
        if actor is not None:
            actor.abandon(task, why)
        else:
            task.abandoned = True
            task._resolve(
                TaskCancelled(
                    f"task {task.task_id!r} cancelled: {why}",
                    task_id=task.task_id,
                    device_id=task.device_id,
                ),
                trio.current_time(),
            )

    # --------------------------------------------------------------------------- events

    def subscribe(self, buffer: float = 1000) -> contextlib.AbstractContextManager[Subscription]:
        """Receive lifecycle events: ``with sup.subscribe() as events: async for e in events``.

        A subscriber that falls more than ``buffer`` events behind misses events (counted in
        ``subscription.dropped``); it never slows a device down."""
        return self.events.subscribe(buffer)

    # ------------------------------------------------------------------------- lifecycle

    def stop_accepting(self) -> None:
        """Refuse new devices and tasks from now on (`SupervisorClosed`); everything already
        submitted runs on. The first step of a graceful shutdown while the block is open."""
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting and not self._closing and self._nursery is not None

    def _require_open(self) -> trio.Nursery:
        if not self.accepting or self._nursery is None:
            raise SupervisorClosed("the supervisor is closed, shutting down, or not accepting")
        return self._nursery

    @property
    def shutdown_bound(self) -> float:
        """The longest the shutdown waits for devices to disconnect: ``shutdown_grace``,
        plus the connector's ``close_timeout`` (4 s if it has none), plus 1 s."""
        close = getattr(self.connector, "close_timeout", None)
        if (
            isinstance(close, bool)
            or not isinstance(close, int | float)
            or not (close >= 0 and math.isfinite(close))
        ):
            close = _UNKNOWN_CLOSE_TIME
        return self.shutdown_grace + close + _SHUTDOWN_MARGIN

    async def _shutdown(self) -> None:
        self._closing = True
        if self.durable is not None:
            self.durable.closing()
        actors = list(self._actors.values())
        # Shielded: shutdown must complete even when the block was left by cancellation;
        # bounded: grace for running tasks plus the connector's own bound on a close, so
        # that a close the connector allows is not cut short.
        with trio.CancelScope(shield=True, deadline=trio.current_time() + self.shutdown_bound):
            async with trio.open_nursery() as nursery:
                for actor in actors:
                    nursery.start_soon(self._stop_actor, actor)

    def _release_status_waiters(self) -> None:
        waiters, self._status_waiters = self._status_waiters, {}
        for scopes in waiters.values():
            for scope in scopes:
                scope.cancel()

    async def _stop_actor(self, actor: DeviceActor) -> None:
        await actor.disconnect(grace=self.shutdown_grace)
        actor.cancel()

    def cancel(self, task_id: str, why: str = "cancelled by the user") -> bool:
        """`cancel_task` for the live task with this id (queued or running), for callers
        that hold an id rather than a handle (the control endpoint). True if it was withdrawn
        before it ran, False if it was already on the device. Raises `UnknownTask` when no
        task with this id is waiting for its outcome (unknown, or already ended, even if its
        id is still reserved because the agent has not finished it)."""
        task = self._live.get(task_id)
        if task is None or task.done:
            raise UnknownTask(task_id)
        sent = task.sent
        self.cancel_task(task, why)
        return not sent


@contextlib.asynccontextmanager
async def open_supervisor(
    *,
    task_name: str = "galaxy",
    heartbeat_interval: float = 30.0,
    heartbeat_timeout: float = 10.0,
    registration_timeout: float = 30.0,
    device_info_timeout: float = 10.0,
    send_timeout: float = 10.0,
    disconnect_grace: float = 30.0,
    shutdown_grace: float = 5.0,
    policy: RestartPolicy | None = None,
    connector: Connector | None = None,
    max_concurrent_connections: int | None = None,
    rng: RandomSource | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
) -> AsyncIterator[Supervisor]:
    """Run a supervisor for the duration of the block.

    >>> async with open_supervisor(task_name="lab") as sup:          # doctest: +SKIP
    ...     sup.add_device("pc-1", "ws://10.0.0.5:5000/ws", "Windows", capabilities=["web"])
    ...     result = await sup.run_task("Open the browser", capabilities=["web"])

    Arguments:
        task_name: this constellation's name; part of every frame's identity.
        heartbeat_interval: seconds between heartbeats.
        heartbeat_timeout: a connection with no frame within this long of a heartbeat is dead.
        registration_timeout / device_info_timeout: how long to wait for those answers.
        send_timeout: a frame that cannot be written within this long fails the connection.
        disconnect_grace: how long a running task may finish on a graceful disconnect.
        shutdown_grace: the same when the block is left; the whole shutdown waits at most
            ``shutdown_grace + close_timeout + 1`` seconds (see `running`).
        policy: the `RestartPolicy` (default: the reference's 5, 10, 20, 40, 80 s).
        connector: how to reach agents (default: trio-websocket); tests pass a
            `MemoryNetwork` connector. A connector may have a ``close_timeout`` attribute
            (seconds a close may take); the shutdown then waits that long for closes.
        max_concurrent_connections: at most this many handshakes at once (None: no limit).
        rng: random source for jitter (default: a fresh `random.Random()`).
        journal: a task journal, or the path of an SQLite one (`SqliteJournal`): accepted
            tasks survive the process (docs/architecture.md, "Durability"). None: off.
    """
    supervisor = Supervisor(
        task_name=task_name,
        heartbeat_interval=heartbeat_interval,
        heartbeat_timeout=heartbeat_timeout,
        registration_timeout=registration_timeout,
        device_info_timeout=device_info_timeout,
        send_timeout=send_timeout,
        disconnect_grace=disconnect_grace,
        shutdown_grace=shutdown_grace,
        policy=policy,
        connector=connector,
        max_concurrent_connections=max_concurrent_connections,
        rng=rng,
        journal=journal,
    )
    async with running(supervisor):
        yield supervisor


@contextlib.asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[Supervisor]:
    """Run an already constructed `Supervisor` for the duration of the block (what
    `open_supervisor` does after building one). A supervisor runs once.

    Exceptions: the block's own exception comes out as itself. One of the supervisor's
    tasks failing (something no device contains, such as a `KeyboardInterrupt`) comes out
    as an `ExceptionGroup`, as from any Trio nursery; when the block failed too, its
    exception is in that group beside the task's, so neither is lost. Catch either with
    ``except*``.

    Leaving the block waits for every device to disconnect, at most ``shutdown_grace +
    close_timeout + 1`` seconds (``close_timeout``: the connector's attribute, 4 s if it has
    none); events published after that are dropped, never raised."""
    if supervisor._nursery is not None or supervisor._closing:
        raise SupervisorClosed("a Supervisor runs only once")
    durable = supervisor.durable
    if durable is not None:
        await durable.open()  # a corrupt or busy journal fails here, before anything runs
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            supervisor._nursery = nursery
            if durable is not None:
                durable.start(nursery)
            try:
                yield supervisor
            except GeneratorExit:
                raise
            except BaseException as exc:
                # Re-raised below, outside the nursery, so the caller sees its own exception
                # rather than an ExceptionGroup wrapping it.
                body_error = exc
            finally:
                await supervisor._shutdown()
                supervisor.events.close()
                supervisor.warnings.flush()
                supervisor._release_status_waiters()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # A Cancelled in the block came from this nursery's cancellation (a task failed):
        # it is not the block's own failure.
        if body_error is None or isinstance(body_error, trio.Cancelled):
            raise
        raise BaseExceptionGroup(
            "the supervisor's block and one of its tasks failed", [body_error, *group.exceptions]
        ) from None
    finally:
        if durable is not None:
            with trio.CancelScope(shield=True):
                await durable.journal.aclose()
    if body_error is not None:
        raise body_error


def _journal_of(journal: Journal | str | os.PathLike[str]) -> Journal:
    # Imported here: a supervisor without a journal never loads sqlite3.
    if isinstance(journal, str) or hasattr(journal, "__fspath__"):
        from ._journal_sqlite import SqliteJournal

        return SqliteJournal(journal)  # type: ignore[arg-type]
    return journal
