"""The supervisor: owns the device actors, the registry, the restart policy and routing.

Theory of operation. `open_supervisor` opens a nursery; every device actor is a task in it,
and nothing the supervisor starts outlives the ``async with`` block. When a device's Session
fails, its actor asks the supervisor's `ActorHost` (`decide`: the actors' private view of
the supervisor), which consults the restart policy with the device's history, publishes the
failure and the decision, and hands back the delay or the give-up; the actor sleeps the
delay on Trio's clock. The decision is a synchronous call in the failing actor's task: a
hand-off to a supervisor task would cost a scheduler pass and buy nothing, since deciding
never waits. Users see values: `Settings`, `DeviceSnapshot`s, copies of `DeviceStats`.

Containment. A device's trouble stays the device's (`_restarts.py`): a restart policy that
raises gives that device up, and `RestartFloor` keeps one from spinning it in a hot loop.

Leaving the block (`_running.py`): no new tasks are accepted, every device is disconnected
gracefully in parallel within `shutdown_bound`, and every task submitted has its outcome by
the time the block has exited.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._sansio._checks import non_negative, optional_int_at_least
from .._sansio._errors import (
    DuplicateTaskId,
    QueueFull,
    SupervisorClosed,
    TaskCancelled,
    UnknownDevice,
    UnknownTask,
)
from .._sansio._policy import RandomSource, RestartPolicy
from .._sansio._status import DeviceStatus
from .._transports._transport import Connector, WebSocketConnector
from ._admission import check_device, check_task, choose_device
from ._device import DeviceActor
from ._durable import Durability, journal_of
from ._events import DeviceAdded, DeviceRemoved, Subscription
from ._host import ActorHost
from ._registry import AgentProfile, DeviceRegistry, DeviceSnapshot
from ._settings import Settings, apply_overrides, shutdown_bound
from ._task import Delivery, ExecutionResult, TaskHandle
from ._workload import DeviceStats

if TYPE_CHECKING:
    import os

    from ._journal import Journal
    from ._session import Session

__all__ = ["Supervisor"]


class Supervisor:
    """Keeps a fleet of devices connected and busy. Make one with `open_supervisor`."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        policy: RestartPolicy | None = None,
        connector: Connector | None = None,
        rng: RandomSource | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
    ) -> None:
        #: The checked `Settings` (default: `Settings()`).
        self.settings = apply_overrides(settings, {}, "Supervisor")
        # None means the default, here and only here (open_supervisor and DeviceManager
        # pass their arguments through).
        self.policy = policy if policy is not None else RestartPolicy()
        self._live: dict[str, TaskHandle] = {}
        self._host = ActorHost(
            self.settings,
            connector if connector is not None else WebSocketConnector(),
            rng if rng is not None else random.Random(),
            self._live,
        )
        self._registry = DeviceRegistry()
        self._actors: dict[str, DeviceActor] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._accepting = True
        #: The task journal's hooks (`_durable.py`); None without a journal.
        self.durable = None if journal is None else Durability(self, journal_of(journal))

    @property
    def connector(self) -> Connector:
        """How this supervisor reaches agents."""
        return self._host.connector

    @property
    def events_dropped_after_close(self) -> int:
        """Events published after the supervisor's block ended, and so seen by nobody."""
        return self._host.events.dropped_after_close

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
    ) -> DeviceSnapshot:
        """Register a device and start its actor; with ``connect`` (the default) it connects
        in the background. ``max_queue`` bounds its queue (default: the supervisor's).
        Returns the device's state then. Raises `DuplicateDevice`, `InvalidServerURL`,
        `ConfigurationError`, `SupervisorClosed`."""
        nursery = self._require_open()
        check_device(device_id, server_url, capabilities)
        if max_queue is None:
            bound = self.settings.max_queue
        else:
            bound = optional_int_at_least("max_queue", max_queue, 1)
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
        self._registry.add(profile)
        actor = DeviceActor(profile, self._host, policy, bound)
        self._actors[device_id] = actor
        if connect:
            actor.want_connection()
        nursery.start_soon(actor.run, name=f"device:{device_id}")
        if self.durable is not None:
            self.durable.device_added(actor)
        if self._host.events:
            self._host.events.publish(DeviceAdded(device_id, trio.current_time()))
        return self._snapshot(actor)

    async def remove_device(self, device_id: str, *, force: bool = False) -> None:
        """Disconnect (gracefully unless ``force``), stop the actor and forget the device."""
        actor = self._actor(device_id)
        await actor.disconnect(force=force)
        actor.cancel()  # its task ends: nothing per device is left in the nursery
        del self._actors[device_id]
        self._registry.remove(device_id)
        if self._host.events:
            self._host.events.publish(DeviceRemoved(device_id, trio.current_time()))

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
            non_negative("grace", grace)
        await self._actor(device_id).disconnect(force=force, grace=grace)

    def _actor(self, device_id: str) -> DeviceActor:
        try:
            return self._actors[device_id]
        except KeyError:
            raise UnknownDevice(device_id) from None

    def stats(self, device_id: str) -> DeviceStats:
        """A copy of the device's counters now (the supervisor keeps counting in its own)."""
        actor = self._actor(device_id)
        actor.sync_counters()
        return attrs.evolve(actor.stats)

    def snapshot(self, device_id: str) -> DeviceSnapshot:
        """The device's state now, as a frozen value."""
        return self._snapshot(self._actor(device_id))

    def system_info(self, device_id: str) -> dict[str, Any] | None:
        """A copy of the system information the device reported when it connected, if
        any."""
        return copy.deepcopy(self._actor(device_id).profile.system_info)

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

    # ---------------------------------------------------------------------------- tasks

    async def submit(
        self,
        description: str,
        data: Mapping[str, Any] | None = None,
        *,
        device_id: str | None = None,
        capabilities: Collection[str] | None = None,
        task_id: str | None = None,
        task_timeout: float = 1000.0,
        delivery: Delivery | str = Delivery.AT_MOST_ONCE,
        priority: int = 0,
        block: bool = True,
    ) -> TaskHandle:
        """Submit a task to ``device_id``, or to the best device with ``capabilities`` (idle
        first, then the fewest tasks ahead of it). Returns once the task is sent or queued;
        await ``handle.result()`` for its outcome. ``task_timeout`` is the task's limit on the
        device: with no TASK_END within that many seconds of being sent, it ends with
        `TaskTimeout` (it bounds the task, not this call: bound the call with Trio's
        ``move_on_after``).

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
                        task_timeout,
                        delivery,
                        priority,
                    )
                task, session = self._admit(
                    description,
                    data,
                    device_id,
                    capabilities,
                    task_id,
                    task_timeout,
                    delivery,
                    priority,
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
        task_timeout: float,
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
            description, data, task_id, task_timeout, delivery, priority
        )
        if task_id in self._live:
            raise DuplicateTaskId(task_id)
        actor = choose_device(self._actors, device_id, capabilities, priority, task_id)
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
        task_timeout: float = 1000.0,
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
                    description,
                    data,
                    device_id,
                    capabilities,
                    task_id,
                    task_timeout,
                    delivery,
                    priority,
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
                task_timeout=task_timeout,
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
        return self._host.events.subscribe(buffer)

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
        return shutdown_bound(self.settings.shutdown_grace, self.connector)

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
