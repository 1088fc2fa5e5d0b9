"""The cluster's state in Redis/Valkey, over coredis: fleet definitions, membership, leases,
task streams, task records and outcomes. Each call is one round trip (a script where several
keys must change together); the callers decide what to do when Redis is away.

coredis 6 runs on AnyIO, hence on Trio: its connection pool owns a task group, opened by
``async with client``. `open_store` keeps that inside one block and turns a server that
cannot be reached at start into `ClusterUnavailable`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import attrs

try:
    import coredis
    import coredis.exceptions
    from coredis.commands.script import Script
    from coredis.response.types import StreamPendingExt
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "galaxy_actors.cluster needs coredis: pip install 'galaxy-actors[cluster]'"
    ) from exc

from .._actors._task import Delivery
from .._sansio._errors import ClusterUnavailable
from . import _scripts
from ._keys import GROUP, FleetKeys

__all__ = [
    "REDIS_DOWN",
    "ClusterUnavailable",
    "Entry",
    "Heartbeat",
    "Store",
    "TaskView",
    "open_store",
]

#: What a call raises while Redis cannot be reached (the callers wait and try again).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    coredis.exceptions.BusyLoadingError,
    TimeoutError,
    OSError,
)


@attrs.frozen
class Heartbeat:
    """A membership renewal's answer: ``fresh`` when Redis did not know this node."""

    fresh: bool
    incarnation: int
    live: tuple[str, ...]


@attrs.frozen
class Entry:
    """One stream entry: the stream, its id, and the task it carries."""

    stream: str
    entry_id: str
    task_id: str


@attrs.frozen
class TaskView:
    """A task as Redis holds it."""

    task_id: str
    description: str
    data_json: str
    device_id: str | None
    capabilities: tuple[str, ...]
    timeout: float
    delivery: Delivery
    priority: int
    state: str
    stream: str
    entry_id: str
    outcome_json: str | None

    @classmethod
    def from_fields(cls, task_id: str, fields: Mapping[str, str]) -> TaskView:
        return cls(
            task_id=task_id,
            description=fields.get("description", ""),
            data_json=fields.get("data", "{}"),
            device_id=fields.get("device") or None,
            capabilities=tuple(json.loads(fields.get("caps", "[]"))),
            timeout=float(fields.get("timeout", "1000")),
            delivery=Delivery(fields.get("delivery", Delivery.AT_MOST_ONCE.value)),
            priority=int(fields.get("priority", "0")),
            state=fields.get("state", "queued"),
            stream=fields.get("stream", ""),
            entry_id=fields.get("entry", ""),
            outcome_json=fields.get("outcome") or None,
        )


def _pairs(flat: Sequence[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}


@attrs.define(eq=False)
class Store:
    """One fleet in one Redis. Made by `open_store`."""

    client: coredis.Redis[str]
    keys: FleetKeys
    #: Outcomes kept in the outcome stream (approximately: Redis trims by whole nodes).
    outcome_stream_cap: int = 100_000
    # One Script per source: it hashes its text once and remembers whether Redis has it.
    _scripts: dict[str, Script[str]] = attrs.field(factory=dict)

    def _script(self, source: str) -> Script[str]:
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    # ------------------------------------------------------------------ fleet definitions

    async def define_device(self, device_id: str, spec: Mapping[str, Any]) -> None:
        """Store a device's definition (`Supervisor.add_device`'s arguments) for the nodes."""
        await self._define(device_id, json.dumps(dict(spec), sort_keys=True))

    async def undefine_device(self, device_id: str) -> bool:
        return await self._define(device_id, "")

    async def _define(self, device_id: str, text: str) -> bool:
        # A fresh token with every change, never a counter: a Redis restored from an older
        # snapshot could count back up to a number a node holds, for other definitions.
        script = self._script(_scripts.DEFINE)
        keys = [self.keys.devices, self.keys.devices_version]
        return bool(await script(keys=keys, args=[device_id, text, uuid.uuid4().hex]))

    async def devices(self) -> dict[str, dict[str, Any]]:
        raw = await self.client.hgetall(self.keys.devices)
        return {device_id: json.loads(text) for device_id, text in raw.items()}

    async def devices_since(
        self, token: str | None
    ) -> tuple[str | None, dict[str, dict[str, Any]] | None]:
        """The definitions if they changed since ``token`` was read, with their token; None
        for them when they did not. A node's every round asks: an unchanged fleet costs
        one short reply, not every definition again."""
        script = self._script(_scripts.DEFINITIONS)
        keys = [self.keys.devices, self.keys.devices_version]
        reply: list[Any] = await script(keys=keys, args=[token or ""])
        if len(reply) == 1:
            return token, None
        current, flat = str(reply[0]) or None, reply[1]
        return current, {str(flat[i]): json.loads(flat[i + 1]) for i in range(0, len(flat), 2)}

    # ------------------------------------------------------------------ membership, leases

    async def heartbeat(self, node: str, ttl: float) -> Heartbeat:
        script = self._script(_scripts.HEARTBEAT)
        reply: list[Any] = await script(
            keys=[self.keys.nodes, self.keys.incarnation], args=[node, int(ttl * 1000)]
        )
        fresh, incarnation, live = reply
        return Heartbeat(bool(fresh), int(incarnation), tuple(str(n) for n in live))

    async def live_nodes(self) -> tuple[str, ...]:
        script = self._script(_scripts.LIVE)
        found: list[Any] = await script(keys=[self.keys.nodes], args=[])
        return tuple(str(n) for n in found)

    async def leave(self, node: str) -> None:
        await self.client.zrem(self.keys.nodes, [node])

    async def lease_round(
        self,
        node: str,
        ttl: float,
        renew: Mapping[str, int],
        release: Mapping[str, int],
        acquire: Sequence[str],
    ) -> tuple[dict[str, bool], dict[str, int]]:
        """Renew, release and acquire leases in one step: (renewed or not per device, the
        epoch of each device acquired)."""
        lease = self.keys.lease
        keys = [self.keys.epochs, *map(lease, renew), *map(lease, release), *map(lease, acquire)]
        args: list[str | int] = [node, int(ttl * 1000), len(renew), len(release), len(acquire)]
        for pairs in (renew, release):
            for device_id, epoch in pairs.items():
                args += [device_id, epoch]
        args += list(acquire)
        script = self._script(_scripts.ROUND)
        reply: list[Any] = await script(keys=keys, args=args)
        out = [int(x) for x in reply]
        renewed = {d: bool(ok) for d, ok in zip(renew, out, strict=False)}
        acquired = {d: e for d, e in zip(acquire, out[len(renew) :], strict=True) if e}
        return renewed, acquired

    async def owners(self, device_ids: Sequence[str]) -> dict[str, str | None]:
        """Each device's lease holder (None: no lease)."""
        if not device_ids:
            return {}
        values = await self.client.mget([self.keys.lease(d) for d in device_ids])
        return {
            d: (None if v is None else str(v).split(" ")[0])
            for d, v in zip(device_ids, values, strict=True)
        }

    # ------------------------------------------------------------------ tasks

    async def submit(self, view: TaskView) -> int:
        """Append a task to its stream with its record. 1: new; 0: the same request was
        there already; -1: the id names another task."""
        if view.device_id is not None:
            stream = self.keys.device_stream(view.device_id)
        else:
            stream = self.keys.capability_stream(view.capabilities[0])
        fields = [
            ("data", view.data_json),
            ("caps", json.dumps(list(view.capabilities))),
            ("timeout", repr(view.timeout)),
            ("delivery", view.delivery.value),
            ("priority", str(view.priority)),
        ]
        args = [view.task_id, view.description, view.device_id or ""]
        for name, value in fields:
            args += [name, value]
        script = self._script(_scripts.SUBMIT)
        return int(await script(keys=[self.keys.task(view.task_id), stream], args=args))

    async def fetch(self, task_id: str) -> TaskView | None:
        fields = await self.client.hgetall(self.keys.task(task_id))
        return TaskView.from_fields(task_id, fields) if fields else None

    async def read(
        self, consumer: str, streams: Sequence[str], count: int, block: float
    ) -> list[Entry]:
        """New entries for this consumer (a node) from ``streams``, waiting ``block`` s."""
        if not streams:
            return []
        got = await self.client.xreadgroup(
            GROUP,
            consumer,
            streams={s: ">" for s in streams},
            count=count,
            block=max(1, int(block * 1000)),
        )
        return [
            Entry(str(stream), str(e.identifier), str(e.field_values.get("task", "")))
            for stream, entries in (got or {}).items()
            for e in entries
        ]

    async def claim_streams(
        self, consumer: str, claim: Sequence[str], ensure: Sequence[str] = ()
    ) -> list[Entry]:
        """Make the groups of ``claim`` and ``ensure`` (streams), and make every pending
        entry of ``claim``, whoever held it, ``consumer``'s: one round trip for a batch."""
        streams = [*claim, *ensure]
        if not streams:
            return []
        script = self._script(_scripts.CLAIM_STREAMS)
        flat: list[Any] = await script(keys=streams, args=[consumer, len(claim)])
        return [
            Entry(streams[int(flat[i]) - 1], str(flat[i + 1]), str(flat[i + 2]))
            for i in range(0, len(flat) - 2, 3)
        ]

    async def claim_from_dead(self, stream: str, consumer: str, live: Sequence[str]) -> list[Entry]:
        """The pending entries of ``stream`` held by consumers not in ``live``."""
        info = await self.client.xinfo_consumers(stream, GROUP)
        dead = [str(c["name"]) for c in info if str(c["name"]) not in live and c["pending"] != 0]
        claimed: list[Entry] = []
        for name in dead:
            pending = await self.client.xpending(stream, GROUP, "-", "+", 1000, consumer=name)
            ids = [str(p.identifier) for p in pending if isinstance(p, StreamPendingExt)]
            if ids:
                entries = await self.client.xclaim(stream, GROUP, consumer, 0, ids)
                for e in entries:
                    if not isinstance(e, str):
                        task_id = str(e.field_values.get("task", ""))
                        claimed.append(Entry(stream, str(e.identifier), task_id))
            if len(pending) < 1000:
                # It holds nothing now: a dead node's name would otherwise stay for ever.
                await self.client.xgroup_delconsumer(stream, GROUP, name)
        return claimed

    async def take(
        self, task_id: str, owner: str, lease: tuple[str, str] | None
    ) -> TaskView | None:
        """The task's record, now owned by ``owner`` (None: fenced, or unknown)."""
        keys, args = self._fence(task_id, owner, lease)
        script = self._script(_scripts.TAKE)
        flat: list[Any] = await script(keys=keys, args=args)
        return TaskView.from_fields(task_id, _pairs(flat)) if flat else None

    async def mark_sent(self, task_id: str, owner: str, lease: tuple[str, str] | None) -> bool:
        keys, args = self._fence(task_id, owner, lease)
        script = self._script(_scripts.MARK_SENT)
        return bool(await script(keys=keys, args=args))

    async def finish(
        self,
        entry: Entry,
        owner: str,
        lease: tuple[str, str] | None,
        outcome_json: str,
        device_id: str | None,
        retention: float,
    ) -> int:
        """Write the outcome under the task id and to the outcome stream, then acknowledge
        the entry: 1 written, 2 it had ended already, 0 fenced (nothing written)."""
        keys = [self.keys.task(entry.task_id), entry.stream, self.keys.outcomes]
        if lease is not None:
            keys.append(self.keys.lease(lease[0]))
        args: list[str | int] = [
            owner,
            "" if lease is None else lease[1],
            entry.entry_id,
            outcome_json,
            int(retention * 1000),
            device_id or "",
            entry.task_id,
            self.outcome_stream_cap,
        ]
        script = self._script(_scripts.FINISH)
        return int(await script(keys=keys, args=args))

    async def requeue(self, entry: Entry, owner: str, stream: str) -> bool:
        keys = [self.keys.task(entry.task_id), entry.stream, stream]
        script = self._script(_scripts.REQUEUE)
        return bool(await script(keys=keys, args=[owner, entry.entry_id, entry.task_id]))

    async def drop_entry(self, entry: Entry) -> None:
        """Acknowledge an entry whose task record is gone (it cannot be run)."""
        await self.client.xack(entry.stream, GROUP, [entry.entry_id])
        await self.client.xdel(entry.stream, [entry.entry_id])

    async def outcomes_since(
        self, last_id: str, block: float | None
    ) -> list[tuple[str, dict[str, str]]]:
        """Outcome stream entries after ``last_id`` (``"$"``: from now on)."""
        got = await self.client.xread(
            {self.keys.outcomes: last_id},
            count=1000,
            block=None if block is None else max(1, int(block * 1000)),
        )
        return [
            (str(e.identifier), {str(k): str(v) for k, v in e.field_values.items()})
            for entries in (got or {}).values()
            for e in entries
        ]

    async def last_outcome_id(self) -> str:
        last = await self.client.xrevrange(self.keys.outcomes, count=1)
        return str(last[0].identifier) if last else "0-0"

    def _fence(
        self, task_id: str, owner: str, lease: tuple[str, str] | None
    ) -> tuple[list[str], list[str]]:
        keys, args = [self.keys.task(task_id)], [owner]
        if lease is not None:
            keys.append(self.keys.lease(lease[0]))
            args.append(lease[1])
        return keys, args


@contextlib.asynccontextmanager
async def open_store(url: str, fleet: str, *, connect_timeout: float = 5.0) -> AsyncIterator[Store]:
    """A `Store` for ``fleet`` at ``url`` for the block. Raises `ClusterUnavailable` when
    the server does not answer at start."""
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url, decode_responses=True, connect_timeout=connect_timeout
    )
    try:
        async with client:
            try:
                await client.ping()
            except REDIS_DOWN as exc:
                raise ClusterUnavailable(
                    f"Redis at {_safe(url)} cannot be reached: {exc}"
                ) from None
            yield Store(client, FleetKeys(fleet))
    except BaseExceptionGroup as group:
        # coredis's pool runs the block inside its task group, which wraps whatever the
        # block raises: hand a single exception back as itself.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _safe(url: str) -> str:
    """The URL without its password (secrets are never logged)."""
    head, sep, tail = url.rpartition("@")
    if not sep:
        return url
    scheme, _, _ = head.partition("://")
    return f"{scheme}://***@{tail}"
