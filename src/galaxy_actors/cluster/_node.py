"""A cluster node: a local supervisor serving the devices whose leases it holds, fed from
their Redis streams.

Who owns which task, inside ``async with open_node(...)``:

```
open_store (coredis's pool task group)
 └── open_supervisor(journal=NodeJournal)      the ordinary supervisor, devices come and go
      └── the node's nursery
           ├── "leases":   every renew_interval: heartbeat, plan (drain / acquire), one
           │               script renews, releases and acquires; acquired devices are added
           │               to the supervisor and their pending entries claimed
           ├── "fence":    drops a device the moment its fencing deadline passes
           ├── "consume":  XREADGROUP over the owned devices' streams and their capabilities'
           ├── "orphans":  claims capability entries held by dead nodes
           └── one runner per entry: take the task (fenced), run it on the supervisor (the
               journal marks it sent in Redis before its frame leaves), write the outcome and
               acknowledge the entry in one script
```

Redis away: reads and writes fail and are retried every ``retry_interval``; no new work is
taken, devices stay connected and run what they hold, outcomes wait; the fencing rule
still disconnects a device ``lease_ttl - margin`` after its last good renewal.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import attrs
import coredis.exceptions
import trio

from .._actors._journal import encode_outcome
from .._actors._running import open_supervisor
from .._actors._supervisor import Supervisor
from .._actors._task import Delivery
from .._sansio._errors import (
    DeviceDisconnected,
    DeviceUnavailable,
    DuplicateTaskId,
    GalaxyActorsError,
    JournalUnavailable,
    OutcomeUnknown,
    TaskCancelled,
    UnknownDevice,
)
from ._journal import Fence, NodeJournal
from ._keys import FleetKeys
from ._ownership import LeaseSettings, Ownership
from ._store import REDIS_DOWN, Entry, Store, TaskView, open_store

__all__ = ["Node", "NodeSettings", "open_node"]

logger = logging.getLogger("galaxy_actors.cluster")
T = TypeVar("T")

# Outcomes that only say the device left this node: the task is someone else's now.
_LEFT = (DeviceDisconnected, DeviceUnavailable, UnknownDevice, TaskCancelled, JournalUnavailable)


@attrs.frozen
class NodeSettings:
    """One node's identity and timing."""

    name: str
    fleet: str = "default"
    lease: LeaseSettings = attrs.field(factory=LeaseSettings)
    #: Entries taken per device (and per capability) before earlier ones end.
    prefetch: int = 8
    #: How long an ended task's record (its outcome) stays in Redis.
    retention: float = 7 * 24 * 3600.0
    #: A blocking stream read waits at most this long (ownership changes are seen after it).
    read_block: float = 0.1
    #: The pause between attempts while Redis is away.
    retry_interval: float = 0.25


@attrs.define(eq=False)
class Node:
    """A running node. Made by `open_node`; read ``served`` and ``ownership``."""

    store: Store
    supervisor: Supervisor
    settings: NodeSettings
    journal: NodeJournal
    ownership: Ownership
    incarnation: int = 0
    #: Devices added to the local supervisor (a subset of the leases held).
    served: set[str] = attrs.field(factory=set)
    #: True while Redis answers.
    redis_ok: bool = True
    _specs: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # Served devices whose streams are not ready yet (groups, claim of pending entries).
    _unclaimed: set[str] = attrs.field(factory=set)
    _inflight: dict[str, int] = attrs.field(factory=dict)
    _nursery: trio.Nursery | None = None

    @property
    def keys(self) -> FleetKeys:
        return self.store.keys

    # ------------------------------------------------------------------ leases

    async def _leases(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        own, lease = self.ownership, self.settings.lease
        started = False
        while True:
            tick = trio.current_time()
            try:
                await self._round()
                self.redis_ok = True
            except REDIS_DOWN as exc:
                if self.redis_ok:
                    logger.warning("node %s: Redis unreachable: %s", own.node, exc)
                self.redis_ok = False
            if not started:
                started = True
                task_status.started()
            await trio.sleep_until(tick + lease.renew_interval)

    async def _round(self) -> None:
        own, lease = self.ownership, self.settings.lease
        sent = trio.current_time()
        beat = await self.store.heartbeat(own.node, lease.lease_ttl)
        own.joined(sent, fresh=beat.fresh)
        self.incarnation = beat.incarnation
        self._specs = await self.store.devices()
        for device_id in sorted(self._unclaimed & self.served):
            await self._claim(device_id)
        plan = own.plan(trio.current_time(), beat.live, self._specs)
        assert self._nursery is not None
        for device_id in plan.drain:
            self._nursery.start_soon(self._drain, device_id)
        renew = {d: own.held[d].epoch for d in plan.renew}
        started = trio.current_time()
        renewed, acquired = await self.store.lease_round(
            own.node, lease.lease_ttl, renew, {}, plan.acquire
        )
        for device_id, ok in renewed.items():
            own.renewed(device_id, started, ok)
            if not ok:
                await self._drop(device_id, force=True)
        for device_id, epoch in acquired.items():
            own.acquired(device_id, epoch, started)
            await self._serve(device_id)

    async def _serve(self, device_id: str) -> None:
        spec = self._specs.get(device_id, {})
        try:
            self.supervisor.add_device(
                device_id,
                spec["url"],
                spec.get("os", "unknown"),
                capabilities=spec.get("capabilities"),
                metadata=spec.get("metadata"),
                max_retries=spec.get("max_retries"),
            )
        except (GalaxyActorsError, KeyError, TypeError) as exc:
            logger.error(
                "node %s: device %s cannot be served: %s", self.ownership.node, device_id, exc
            )
            return
        self.served.add(device_id)
        self._unclaimed.add(device_id)
        await self._claim(device_id)

    async def _claim(self, device_id: str) -> None:
        """Make the device's streams readable and take over whatever was pending on its own
        stream (its previous owner's): the lease says that owner has stopped. Retried each
        round until it succeeds; the device's streams are not read before."""
        spec = self._specs.get(device_id, {})
        stream = self.keys.device_stream(device_id)
        await self.store.ensure_group(stream)
        for capability in spec.get("capabilities") or ():
            await self.store.ensure_group(self.keys.capability_stream(capability))
        entries = await self.store.claim_all(stream, self.ownership.node)
        self._unclaimed.discard(device_id)
        for entry in entries:
            self._spawn(entry, device_id)

    async def _drain(self, device_id: str) -> None:
        """Hand a device over: disconnect it (its running task may finish within the
        lease's margin), then release the lease, which the loop renews meanwhile."""
        if device_id in self.served:
            self.served.discard(device_id)
            with contextlib.suppress(GalaxyActorsError):
                await self.supervisor.disconnect(device_id, grace=self.settings.lease.margin / 2)
                await self.supervisor.remove_device(device_id, force=True)
        held = self.ownership.held.get(device_id)
        if held is None:
            return
        while device_id in self.ownership.held:
            try:
                await self.store.lease_round(
                    self.ownership.node, 1.0, {}, {device_id: held.epoch}, []
                )
            except REDIS_DOWN:
                await trio.sleep(self.settings.retry_interval)
                continue
            self.ownership.released(device_id)

    async def _drop(self, device_id: str, *, force: bool) -> None:
        if device_id in self.served:
            self.served.discard(device_id)
            with contextlib.suppress(GalaxyActorsError):
                await self.supervisor.remove_device(device_id, force=force)

    async def _fence(self) -> None:
        own = self.ownership
        while True:
            deadline = min(own.next_deadline(), trio.current_time() + own.settings.renew_interval)
            await trio.sleep_until(deadline)
            for device_id in own.expired(trio.current_time()):
                logger.warning(
                    "node %s: lease of %s not renewed in time: disconnecting it",
                    own.node,
                    device_id,
                )
                await self._drop(device_id, force=True)

    # ------------------------------------------------------------------ consuming

    def _ready(self) -> set[str]:
        return self.served - self._unclaimed

    def _capabilities(self) -> set[str]:
        specs = self._specs
        return {c for d in self._ready() for c in (specs.get(d, {}).get("capabilities") or ())}

    async def _consume(self) -> None:
        prefetch = self.settings.prefetch
        while True:
            streams = [
                self.keys.device_stream(d)
                for d in sorted(self._ready())
                if self._inflight.get(d, 0) < prefetch
            ]
            streams += [
                self.keys.capability_stream(c)
                for c in sorted(self._capabilities())
                if self._inflight.get("cap:" + c, 0) < prefetch
            ]
            if not streams:
                await trio.sleep(self.settings.read_block)
                continue
            try:
                entries = await self.store.read(
                    self.ownership.node, streams, prefetch, self.settings.read_block
                )
            except REDIS_DOWN:
                await trio.sleep(self.settings.retry_interval)
                continue
            except coredis.exceptions.ResponseError as exc:
                # A stream or its group was deleted under us: make them again next round.
                logger.error("node %s: cannot read the streams: %s", self.ownership.node, exc)
                self._unclaimed |= self.served
                await trio.sleep(self.settings.retry_interval)
                continue
            for entry in entries:
                self._spawn(entry, self._device_of(entry.stream))

    async def _orphans(self) -> None:
        while True:
            await trio.sleep(self.settings.lease.renew_interval)
            try:
                live = await self.store.live_nodes()
                for capability in sorted(self._capabilities()):
                    stream = self.keys.capability_stream(capability)
                    for entry in await self.store.claim_from_dead(
                        stream, self.ownership.node, live
                    ):
                        self._spawn(entry, None)
            except REDIS_DOWN:
                continue
            except coredis.exceptions.ResponseError as exc:
                logger.error("node %s: cannot claim orphans: %s", self.ownership.node, exc)

    def _device_of(self, stream: str) -> str | None:
        prefix = self.keys.device_stream("x")[:-1]
        return stream[len(prefix) :] if stream.startswith(prefix) else None

    def _slot(self, entry: Entry, device_id: str | None) -> str:
        return device_id if device_id is not None else "cap:" + entry.stream.rsplit(":", 1)[1]

    def _spawn(self, entry: Entry, device_id: str | None) -> None:
        assert self._nursery is not None
        slot = self._slot(entry, device_id)
        self._inflight[slot] = self._inflight.get(slot, 0) + 1
        self._nursery.start_soon(self._runner, entry, device_id, slot)

    # ------------------------------------------------------------------ one task

    async def _runner(self, entry: Entry, device_id: str | None, slot: str) -> None:
        try:
            while True:
                try:
                    await self._run_entry(entry, device_id)
                    return
                except Exception:
                    # One task's trouble (a supervisor error, a malformed record) must not
                    # take the node down; it is tried again while the task is ours.
                    logger.exception(
                        "node %s: task %s failed here; trying again",
                        self.ownership.node,
                        entry.task_id,
                    )
                    await trio.sleep(self.settings.retry_interval)
        finally:
            self._inflight[slot] -= 1
            self.journal.release(entry.task_id)

    def _fence_for(self, device_id: str | None) -> Fence | None:
        if device_id is None:
            return Fence(f"{self.ownership.node} #{self.incarnation}", None)
        held = self.ownership.held.get(device_id)
        if held is None or device_id not in self.served:
            return None
        token = f"{self.ownership.node} {held.epoch}"
        return Fence(token, (device_id, token))

    async def _retry(self, call: Callable[[], Awaitable[T]], still: Callable[[], bool]) -> T | None:
        """``call()`` until Redis answers; None once ``still()`` turns false."""
        while still():
            try:
                return await call()
            except REDIS_DOWN:
                await trio.sleep(self.settings.retry_interval)
        return None

    async def _run_entry(self, entry: Entry, device_id: str | None) -> None:
        fence = self._fence_for(device_id)
        if fence is None:
            return

        def ours() -> bool:
            return device_id is None or self._fence_for(device_id) == fence

        view = await self._retry(
            lambda: self.store.take(entry.task_id, fence.owner, fence.lease), ours
        )
        if view is None:
            if ours() and await self._retry(lambda: self.store.fetch(entry.task_id), ours) is None:
                await self._retry(lambda: self.store.drop_entry(entry), ours)
            return
        if view.state == "ended" and view.outcome_json is not None:
            await self._finish(entry, fence, view.outcome_json, view.device_id, ours)
            return
        if view.state == "sent" and view.delivery is Delivery.AT_MOST_ONCE:
            unknown = OutcomeUnknown(
                f"task {view.task_id!r} was sent and its node stopped before its end was "
                "recorded: it may or may not have run, and is not sent again",
                task_id=view.task_id,
                device_id=view.device_id,
            )
            await self._finish(entry, fence, encode_outcome(unknown), view.device_id, ours)
            return
        await self._run_here(entry, view, fence, ours)

    async def _run_here(
        self, entry: Entry, view: TaskView, fence: Fence, ours: Callable[[], bool]
    ) -> None:
        data = json.loads(view.data_json)
        while ours():
            self.journal.fences[view.task_id] = fence
            try:
                handle = await self.supervisor.submit(
                    view.description,
                    data,
                    device_id=view.device_id,
                    capabilities=None if view.device_id else view.capabilities,
                    task_id=view.task_id,
                    task_timeout=view.timeout,
                    delivery=view.delivery,
                    priority=view.priority,
                )
            except DuplicateTaskId:
                return  # already running here (delivered twice)
            except (DeviceUnavailable, UnknownDevice):
                if view.device_id is not None:
                    return  # the device left this node: its next owner claims the entry
                await trio.sleep(self.settings.retry_interval)
                await self._retry(
                    lambda: self.store.requeue(entry, fence.owner, entry.stream), ours
                )
                return
            await handle.wait()
            outcome = handle.outcome
            assert outcome is not None
            sent = view.task_id in self.journal.sent
            if isinstance(outcome, JournalUnavailable) and not sent:
                if view.task_id in self.journal.fenced:
                    return
                await trio.sleep(self.settings.retry_interval)  # Redis away: try again
                continue
            ran_on = handle.device_id
            if isinstance(outcome, _LEFT) and (ran_on not in self.served):
                # Cut off because the device left this node, not by the device.
                # What counts is whether its frame left: a "sent" mark in Redis may precede a
                # send that never happened (the device was draining), and REQUEUE resets it.
                if view.device_id is None and not (
                    handle.sent and view.delivery is Delivery.AT_MOST_ONCE
                ):
                    await self._retry(
                        lambda: self.store.requeue(entry, fence.owner, entry.stream), ours
                    )
                    return
                if view.device_id is not None:
                    return
            await self._finish(entry, fence, encode_outcome(outcome), ran_on, ours)
            return

    async def _finish(
        self,
        entry: Entry,
        fence: Fence,
        outcome_json: str,
        device_id: str | None,
        ours: Callable[[], bool],
    ) -> None:
        written = await self._retry(
            lambda: self.store.finish(
                entry, fence.owner, fence.lease, outcome_json, device_id, self.settings.retention
            ),
            ours,
        )
        if written == 0:
            logger.warning(
                "node %s: outcome of %s refused: the task is another node's now",
                self.ownership.node,
                entry.task_id,
            )


@contextlib.asynccontextmanager
async def open_node(
    redis_url: str, settings: NodeSettings, /, **supervisor_options: Any
) -> AsyncIterator[Node]:
    """Run a node for the duration of the block.

    >>> url = "redis://127.0.0.1:6379"
    >>> async with open_node(url, NodeSettings("node-a")) as node:  # doctest: +SKIP
    ...     await trio.sleep_forever()

    ``supervisor_options`` go to `open_supervisor` (its ``settings``, ``connector``,
    ``policy``, setting overrides).
    Raises `ClusterUnavailable` when Redis cannot be reached at start. Leaving the block
    normally releases the node's leases at once; leaving it by an exception or a
    cancellation leaves them to expire, as a crash would.
    """
    async with open_store(redis_url, settings.fleet) as store:
        journal = NodeJournal(store)
        async with open_supervisor(journal=journal, **supervisor_options) as supervisor:
            node = Node(
                store, supervisor, settings, journal, Ownership(settings.name, settings.lease)
            )
            async with trio.open_nursery() as nursery:
                node._nursery = nursery
                await nursery.start(node._leases)
                nursery.start_soon(node._fence)
                nursery.start_soon(node._consume)
                nursery.start_soon(node._orphans)
                yield node
                nursery.cancel_scope.cancel()
            for device_id in sorted(node.served):
                await node._drop(device_id, force=False)
        with trio.move_on_after(settings.lease.renew_interval) as scope:
            scope.shield = True
            held = {d: h.epoch for d, h in node.ownership.held.items()}
            with contextlib.suppress(*REDIS_DOWN):
                await store.lease_round(settings.name, settings.lease.lease_ttl, {}, held, [])
                await store.leave(settings.name)
