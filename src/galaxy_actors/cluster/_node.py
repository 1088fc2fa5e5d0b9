"""A cluster node: a local supervisor serving the devices whose leases it holds, fed from
their Redis streams.

Who owns which task, inside ``async with open_node(...)``:

```
open_store (coredis's pool task group)
 └── open_supervisor(journal=NodeJournal)      the ordinary supervisor, devices come and go
      └── the node's nursery
           ├── "leases":   every renew_interval: heartbeat, plan (drain / acquire), one
           │               script renews, releases and acquires; nothing else, so that the
           │               renewal is never late, however many devices are won or lost
           ├── "take":     adds the devices won to the supervisor, then makes their streams
           │               readable and claims their pending entries, a batch per script
           ├── "fence":    drops a device the moment its fencing deadline passes
           ├── "consume":  XREADGROUP over the owned devices' streams and their capabilities'
           ├── "orphans":  claims capability entries held by dead nodes
           ├── one task per device lost or drained: its removal from the supervisor; the
           │   device is not taken again before the removal is over
           └── one runner per entry (`EntryRunner`): take the task (fenced), run it on the
               supervisor (the journal marks it sent in Redis before its frame leaves),
               write the outcome and acknowledge the entry in one script
```

Redis away: reads and writes fail and are retried every ``retry_interval``; no new work is
taken, devices stay connected and run what they hold, outcomes wait; the fencing rule
still disconnects a device ``lease_ttl - margin`` after its last good renewal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import attrs
import coredis.exceptions
import trio

from .._actors._running import open_supervisor
from .._actors._supervisor import Supervisor
from .._sansio._errors import GalaxyActorsError
from ._journal import Fence, NodeJournal
from ._keys import FleetKeys
from ._ownership import LeaseSettings, Ownership
from ._runner import EntryRunner
from ._store import REDIS_DOWN, Entry, Store, open_store

__all__ = ["Node", "NodeSettings", "open_node"]

logger = logging.getLogger("galaxy_actors.cluster")

# A batch of streams not made ready: Redis away, or a stream that is not a stream.
_CLAIM_FAILED: tuple[type[BaseException], ...] = (*REDIS_DOWN, coredis.exceptions.ResponseError)


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
    #: Streams made ready (groups, pending entries claimed) per round trip.
    claim_batch: int = 100
    _specs: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # The token of the definitions in ``_specs`` (`Store.devices_since`); None: read again.
    _specs_token: str | None = None
    # Served devices whose streams are not ready yet (groups, claim of pending entries).
    _unclaimed: set[str] = attrs.field(factory=set)
    # Devices being removed from the supervisor (their connection closing).
    _leaving: set[str] = attrs.field(factory=set)
    # Definitions the supervisor refused, as refused: logged once, tried again when changed.
    _refused: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    # Set when there may be devices to take, or streams to claim.
    _wanted: trio.Event = attrs.field(factory=trio.Event)
    _inflight: dict[str, int] = attrs.field(factory=dict)
    # The entries a runner holds, by (stream, entry id): one runner per entry.
    _running: set[tuple[str, str]] = attrs.field(factory=set)
    _runner: EntryRunner | None = None
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
        """One renewal round: a bounded number of round trips whatever the node wins or
        loses in it. Devices won are taken (`_take`), devices lost removed (`_drop`), each
        in a task of its own, so that nothing delays the next renewal."""
        own, lease = self.ownership, self.settings.lease
        sent = trio.current_time()
        beat = await self.store.heartbeat(own.node, lease.lease_ttl)
        own.joined(sent, fresh=beat.fresh)
        self.incarnation = beat.incarnation
        token, specs = await self.store.devices_since(self._specs_token)
        if specs is not None:
            self._specs, self._specs_token = specs, token
        plan = own.plan(trio.current_time(), beat.live, self._specs)
        assert self._nursery is not None
        for device_id in plan.drain:
            self._nursery.start_soon(self._drain, device_id)
        renew = {d: own.held[d].epoch for d in plan.renew}
        # Not while its previous connection here is still being closed: the supervisor
        # would refuse the device, and it must never be connected twice.
        acquire = [d for d in plan.acquire if d not in self._leaving]
        started = trio.current_time()
        renewed, acquired = await self.store.lease_round(
            own.node, lease.lease_ttl, renew, {}, acquire
        )
        for device_id, ok in renewed.items():
            own.renewed(device_id, started, ok)
            if not ok:
                self._nursery.start_soon(self._drop, device_id)
        for device_id, epoch in acquired.items():
            own.acquired(device_id, epoch, started)
        self._wanted.set()

    async def _take(self) -> None:
        """Serve the devices whose leases were won, a batch at a time: add them to the
        supervisor, then make their streams readable and claim what was pending on them
        (their previous owner's, or this node's from an earlier lease) in one round trip.
        A device's streams are not read before; a batch that fails (Redis away) is tried
        again."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            while True:
                added = self._to_add()
                for device_id in added:
                    self._add(device_id)
                batch = sorted(self._unclaimed & self.served)[: self.claim_batch]
                if not added and not batch:
                    break
                if batch and not await self._claim(batch):
                    await trio.sleep(self.settings.retry_interval)
                    self._wanted.set()
                    break
                # Adding devices costs CPU, not I/O: let the renewal run between batches.
                await trio.lowlevel.checkpoint()

    def _to_add(self) -> list[str]:
        """The next devices to add to the supervisor: held, not draining, within their
        fencing deadline, not being removed, and not refused as they are defined."""
        own, now = self.ownership, trio.current_time()
        found: list[str] = []
        for device_id in sorted(own.held):
            if (
                own.held[device_id].draining
                or device_id in self.served
                or device_id in self._leaving
                or not own.serves(device_id, now)
                or self._refused.get(device_id, False) == self._specs.get(device_id, {})
            ):
                continue
            found.append(device_id)
            if len(found) == self.claim_batch:
                break
        return found

    async def _claim(self, batch: list[str]) -> bool:
        caps = {c for d in batch for c in self._specs.get(d, {}).get("capabilities") or ()}
        try:
            entries = await self.store.claim_streams(
                self.ownership.node,
                [self.keys.device_stream(d) for d in batch],
                [self.keys.capability_stream(c) for c in sorted(caps)],
            )
        except _CLAIM_FAILED as exc:
            logger.warning("node %s: cannot claim streams: %s", self.ownership.node, exc)
            return False
        for entry in entries:
            device_id = self._device_of(entry.stream)
            if device_id in self.served:
                self._spawn(entry, device_id)
        self._unclaimed.difference_update(batch)
        return True

    def _add(self, device_id: str) -> None:
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
            self._refused[device_id] = spec
            logger.error(
                "node %s: device %s cannot be served: %s", self.ownership.node, device_id, exc
            )
            return
        self._refused.pop(device_id, None)
        self.served.add(device_id)
        self._unclaimed.add(device_id)

    async def _drain(self, device_id: str) -> None:
        """Hand a device over: disconnect it (its running task may finish within the
        lease's margin), then release the lease, which the loop renews meanwhile."""
        await self._drop(device_id, grace=self.settings.lease.margin / 2)
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

    async def _drop(
        self, device_id: str, *, force: bool = True, grace: float | None = None
    ) -> None:
        """Stop serving a device: at once (its lease is lost), or letting its running task
        finish (within ``grace``: a drain; not ``force``: the node stopping). Until the
        supervisor has let it go, the device is ``_leaving``: not taken again."""
        if device_id not in self.served:
            return
        self.served.discard(device_id)
        self._unclaimed.discard(device_id)
        self._leaving.add(device_id)
        try:
            with contextlib.suppress(GalaxyActorsError):
                if grace is not None:
                    await self.supervisor.disconnect(device_id, grace=grace)
                await self.supervisor.remove_device(device_id, force=force)
        finally:
            self._leaving.discard(device_id)
            self._wanted.set()  # it may be this node's again by now

    async def _fence(self) -> None:
        own = self.ownership
        assert self._nursery is not None
        while True:
            deadline = min(own.next_deadline(), trio.current_time() + own.settings.renew_interval)
            await trio.sleep_until(deadline)
            for device_id in own.expired(trio.current_time()):
                logger.warning(
                    "node %s: lease of %s not renewed in time: disconnecting it",
                    own.node,
                    device_id,
                )
                # All at once: each removal waits for its connection to close.
                self._nursery.start_soon(self._drop, device_id)

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
        """Run ``entry`` unless a runner holds it already (a claim of this node's own
        pending entries, or a read that crossed a claim, hands it over twice)."""
        key = (entry.stream, entry.entry_id)
        if key in self._running:
            return
        assert self._nursery is not None and self._runner is not None
        self._running.add(key)
        slot = self._slot(entry, device_id)
        self._inflight[slot] = self._inflight.get(slot, 0) + 1
        self._nursery.start_soon(self._run, self._runner, entry, device_id, slot)

    async def _run(
        self, runner: EntryRunner, entry: Entry, device_id: str | None, slot: str
    ) -> None:
        try:
            await runner.run(entry, device_id)
        finally:
            self._inflight[slot] -= 1
            self._running.discard((entry.stream, entry.entry_id))

    def _fence_for(self, device_id: str | None) -> Fence | None:
        if device_id is None:
            return Fence(f"{self.ownership.node} #{self.incarnation}", None)
        held = self.ownership.held.get(device_id)
        if held is None or device_id not in self.served:
            return None
        token = f"{self.ownership.node} {held.epoch}"
        return Fence(token, (device_id, token))


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
            node._runner = EntryRunner(
                settings.name,
                store,
                supervisor,
                journal,
                node._fence_for,
                node.served.__contains__,
                settings.retention,
                settings.retry_interval,
            )
            async with trio.open_nursery() as nursery:
                node._nursery = nursery
                await nursery.start(node._leases)
                nursery.start_soon(node._take)
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
