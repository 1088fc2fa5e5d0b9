"""`ClusterClient`: define a fleet's devices, submit tasks, read and watch their outcomes.

A client is any process with the Redis URL: it writes the task record and the stream entry
in one script (idempotent by task id, as the journal is), and reads outcomes from the task's
record or the outcome stream. It never talks to a node.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

import attrs
import trio

from .._actors._journal import Outcome, decode_outcome
from .._actors._task import Delivery
from .._sansio._errors import ConfigurationError, DuplicateTaskId
from ._store import REDIS_DOWN, ClusterUnavailable, Store, TaskView, open_store

__all__ = ["ClusterClient", "ClusterStatus", "OutcomeEvent", "open_client"]


@attrs.frozen
class OutcomeEvent:
    """One task's outcome, as `ClusterClient.watch` yields it."""

    task_id: str
    device_id: str | None
    outcome: Outcome


@attrs.frozen
class ClusterStatus:
    """The fleet at one moment: live nodes, and each device's lease holder (None: none)."""

    nodes: tuple[str, ...]
    owners: Mapping[str, str | None]


@attrs.define(eq=False)
class ClusterClient:
    """Made by `open_client`. Every call raises `ClusterUnavailable` while Redis is away."""

    store: Store

    async def define_device(
        self,
        device_id: str,
        url: str,
        os: str = "unknown",
        *,
        capabilities: Collection[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_retries: int | None = None,
    ) -> None:
        """Add (or replace) a device of the fleet; a node picks it up within a renewal."""
        spec: dict[str, Any] = {"url": url, "os": os, "capabilities": list(capabilities or ())}
        if metadata:
            spec["metadata"] = dict(metadata)
        if max_retries is not None:
            spec["max_retries"] = max_retries
        with _unavailable():
            await self.store.define_device(device_id, spec)

    async def remove_device(self, device_id: str) -> bool:
        """Remove a device from the fleet; its node drains it. False if it was unknown."""
        with _unavailable():
            return await self.store.undefine_device(device_id)

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
    ) -> str:
        """Queue a task for ``device_id``, or for any device with the first of
        ``capabilities``; returns its id. Submitting the same id and request again does
        nothing (`DuplicateTaskId` if the id names another task)."""
        if (device_id is None) == (not capabilities):
            raise ConfigurationError("give exactly one of device_id and capabilities")
        try:
            data_json = json.dumps(dict(data or {}))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"task data is not JSON-serialisable: {exc}") from None
        view = TaskView(
            task_id=task_id or uuid.uuid4().hex,
            description=description,
            data_json=data_json,
            device_id=device_id,
            capabilities=tuple(capabilities or ()),
            timeout=float(task_timeout),
            delivery=Delivery(delivery),
            priority=int(priority),
            state="queued",
            stream="",
            entry_id="",
            outcome_json=None,
        )
        with _unavailable():
            created = await self.store.submit(view)
        if created < 0:
            raise DuplicateTaskId(view.task_id)
        return view.task_id

    async def outcome(self, task_id: str) -> Outcome | None:
        """The task's outcome if it has ended (None: not yet, or unknown)."""
        with _unavailable():
            view = await self.store.fetch(task_id)
        if view is None or view.outcome_json is None:
            return None
        return decode_outcome(task_id, view.outcome_json)

    async def state(self, task_id: str) -> str | None:
        """``queued``, ``sent``, ``ended``, or None for an unknown (or expired) id."""
        with _unavailable():
            view = await self.store.fetch(task_id)
        return None if view is None else view.state

    async def result(self, task_id: str) -> Outcome:
        """Wait for the task's outcome (bound the wait with `trio.move_on_after`)."""
        while True:
            with _unavailable():
                last = await self.store.last_outcome_id()
            found = await self.outcome(task_id)
            if found is not None:
                return found
            with _unavailable():
                await self.store.outcomes_since(last, block=1.0)

    async def watch(self, since: str = "$") -> AsyncIterator[OutcomeEvent]:
        """Outcomes as they are written (``since="0"``: from the oldest kept). Iterate
        inside ``async with contextlib.aclosing(client.watch()) as events:``."""
        last = since
        if last == "$":
            with _unavailable():
                last = await self.store.last_outcome_id()
        while True:
            with _unavailable():
                got = await self.store.outcomes_since(last, block=1.0)
            for entry_id, fields in got:
                last = entry_id
                task_id = fields.get("task", "")
                yield OutcomeEvent(
                    task_id,
                    fields.get("device") or None,
                    decode_outcome(task_id, fields.get("outcome", "{}")),
                )

    async def watch_status(self, interval: float = 1.0) -> AsyncIterator[ClusterStatus]:
        """The fleet's status now, then each time it changes (read every ``interval`` s).
        Iterate inside ``contextlib.aclosing``, as `watch`."""
        last: ClusterStatus | None = None
        while True:
            status = await self.status()
            if status != last:
                last = status
                yield status
            await trio.sleep(interval)

    async def status(self) -> ClusterStatus:
        """Live nodes and each defined device's lease holder, now."""
        with _unavailable():
            nodes = await self.store.live_nodes()
            devices = await self.store.devices()
            owners = await self.store.owners(sorted(devices))
        return ClusterStatus(tuple(sorted(nodes)), owners)


@contextlib.contextmanager
def _unavailable() -> Any:
    try:
        yield
    except REDIS_DOWN as exc:
        raise ClusterUnavailable(f"Redis cannot be reached: {exc}") from None


@contextlib.asynccontextmanager
async def open_client(url: str, fleet: str = "default") -> AsyncIterator[ClusterClient]:
    """A `ClusterClient` for ``fleet`` for the block; `ClusterUnavailable` if Redis cannot
    be reached at start."""
    async with open_store(url, fleet) as store:
        yield ClusterClient(store)
    await trio.lowlevel.checkpoint()
