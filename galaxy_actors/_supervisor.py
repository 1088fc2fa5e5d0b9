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

Leaving the block (`_running.py`): no new tasks are accepted, every device is disconnected
gracefully in parallel within `shutdown_bound`, and every task submitted has its outcome by
the time the block has exited.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._admission import check_device, check_max_queue, check_task, route
from ._device import DeviceActor
from ._durable import Durability, journal_of
from ._errors import (
    DuplicateTaskId,
    QueueFull,
    SupervisorClosed,
    TaskCancelled,
    UnknownDevice,
    UnknownTask,
)
from ._events import DeviceAdded, DeviceRemoved, EventHub, Subscription
from ._policy import Decision, FailureReason, RandomSource, RestartFloor, RestartPolicy
from ._registry import AgentProfile, DeviceRegistry, DeviceSnapshot
from ._restarts import decide_restart
from ._settings import ActorSettings, check_connection_limit, positive, shutdown_bound
from ._status import DeviceStatus
from ._task import Delivery, ExecutionResult, TaskHandle
from ._throttle import Throttled
from ._transport import Connector, WebSocketConnector
from ._workload import DeviceStats

if TYPE_CHECKING:
    import os

    from ._journal import Journal
    from ._session import Session

__all__ = ["Supervisor"]

logger = logging.getLogger("galaxy_actors.supervisor")

WARNING_INTERVAL = 10.0


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
        max_queue: int | None = None,
    ) -> None:
        self.settings = ActorSettings.checked(
            task_name=task_name,
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_timeout,
            registration_timeout=registration_timeout,
            device_info_timeout=device_info_timeout,
            send_timeout=send_timeout,
            disconnect_grace=disconnect_grace,
        )
        #: The default bound on each device's queue (None: unbounded); see `submit`.
        self.max_queue = check_max_queue(max_queue)
        limit = check_connection_limit(max_concurrent_connections)
        self.shutdown_grace = positive("shutdown_grace", shutdown_grace, allow_zero=True)
        # None means the default, here and only here (open_supervisor and DeviceManager
        # pass their arguments through).
        self.policy = policy if policy is not None else RestartPolicy()
        self.connector: Connector = connector if connector is not None else WebSocketConnector()
        self.handshake_limiter = None if limit is None else trio.CapacityLimiter(limit)
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
        #: The task journal's hooks (`_durable.py`); None without a journal.
        self.durable = None if journal is None else Durability(self, journal_of(journal))

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
        max_queue: int | None = None,
    ) -> AgentProfile:
        """Register a device and start its actor; with ``connect`` (the default) it connects
        in the background. ``max_queue`` bounds its queue (default: the supervisor's).
        Raises `DuplicateDevice`, `InvalidServerURL`, `ConfigurationError`,
        `SupervisorClosed`."""
        nursery = self._require_open()
        check_device(device_id, server_url, capabilities)
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
        bound = self.max_queue if max_queue is None else check_max_queue(max_queue)
        actor = DeviceActor(profile, self, policy, bound)
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
            positive("grace", grace, allow_zero=True)
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
        while actor.profile.status not in statuses:
            if actor.removed:  # no status change will come: say why
                if self._actors.get(device_id) is not actor:
                    raise UnknownDevice(device_id)
                raise SupervisorClosed(
                    f"the supervisor shut down before device {device_id!r} reached "
                    + " or ".join(str(s) for s in statuses)
                )
            await actor.wait_changed()

    @property
    def device_ids(self) -> list[str]:
        return list(self._actors)

    # ------------------------------------------------------------------------ decisions

    def decide(self, actor: DeviceActor, reason: FailureReason, detail: str) -> Decision:
        """Called by a failed device actor: restart after a delay, or give up
        (`decide_restart`: never raises for the policy, and applies `restart_floor`)."""
        return decide_restart(
            actor, reason, detail, rng=self._rng, floor=self.restart_floor, events=self.events
        )

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
        block: bool = True,
    ) -> TaskHandle:
        """Submit a task to ``device_id``, or to the best device with ``capabilities`` (idle
        first, then the fewest tasks ahead of it). Returns once the task is sent or queued;
        await ``handle.result()`` for its outcome.

        Backpressure: when the device's queue already holds ``max_queue`` tasks, this waits
        for room (cancellable: the task then does not exist), or with ``block=False``
        raises `QueueFull` at once.

        Raises at once, and the task does not exist, on: `UnknownDevice`,
        `DeviceUnavailable` (disconnected, gave up, or no device has the capabilities),
        `DuplicateTaskId`, `SupervisorClosed`, `ConfigurationError` (bad argument, or data
        that is not JSON-serialisable), `QueueFull` (``block=False``).
        """
        # A checkpoint, as Trio's own calls are (a queued task makes none, and a frame the
        # Session writes at once is followed by no schedule point), in their usual shape:
        # cancellable before anything happens, yielding once it has.
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                if self.durable is not None:
                    return await self.durable.submit(
                        description,
                        data,
                        device_id,
                        capabilities,
                        task_id,
                        timeout,
                        delivery,
                        priority,
                    )
                task, session = self._admit(
                    description, data, device_id, capabilities, task_id, timeout, delivery, priority
                )
                break
            except QueueFull as full:
                if not block:
                    raise
                await self._room(full)
        if session is not None:
            await self._send_now(session, task)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return task

    async def _room(self, full: QueueFull) -> None:
        """Wait until the full device's queue shrinks (or it is gone: the caller retries and
        learns why)."""
        actor = self._actors.get(full.device_id or "")
        if actor is not None and actor.queue_full:
            await actor.work.room().wait()

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
        timeout, delivery, task_id, data_json = check_task(
            description, data, task_id, timeout, delivery, priority
        )
        if task_id in self._live:
            raise DuplicateTaskId(task_id)
        if device_id is not None:
            actor = self._actors.get(device_id)
            if actor is None:
                raise UnknownDevice(device_id)
        else:
            actor = route(self._actors.values(), capabilities or (), priority, task_id)
        if actor.queue_full:
            raise QueueFull(
                f"device {actor.device_id!r} already has {actor.max_queue} queued tasks",
                task_id=task_id,
                device_id=actor.device_id,
            )
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
        block: bool = True,
    ) -> ExecutionResult:
        """Submit a task and wait for its result; raises its `TaskError` otherwise.
        ``block`` is `submit`'s.

        If the caller is cancelled while waiting, a queued task is withdrawn (it will not
        run) and a running one ends with `TaskCancelled` (the device finishes it, and its
        result is dropped)."""
        task: TaskHandle | None = None
        if self.durable is None and self.accepting:
            # The usual path, with no coroutine frame of `submit`'s in between.
            try:
                task, session = self._admit(
                    description, data, device_id, capabilities, task_id, timeout, delivery, priority
                )
            except QueueFull:
                if not block:
                    raise
            else:
                if session is not None:
                    await self._send_now(session, task)
        if task is None:
            task = await self.submit(
                description,
                data,
                device_id=device_id,
                capabilities=capabilities,
                task_id=task_id,
                timeout=timeout,
                delivery=delivery,
                priority=priority,
                block=block,
            )
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
                TaskCancelled.withdrawn(task.task_id, task.device_id, why), trio.current_time()
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
        return shutdown_bound(self.shutdown_grace, self.connector)

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
