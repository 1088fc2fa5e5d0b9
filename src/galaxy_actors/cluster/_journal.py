"""A node's `Journal`: the local supervisor's "sent" marks, written to Redis with fencing.

The node runs an ordinary supervisor (`open_supervisor`) with this journal, so the
supervisor's own durability hook (`_durable.py`) marks a task sent at the exact moment its
frame is about to leave, and an at-most-once task waits for that mark to be in Redis. The
other journal duties are the node's: task records are written by the submitting client,
outcomes by the node's runner (with the acknowledgement), recovery by claiming stream
entries. So this journal accepts and forgets at once and holds nothing across restarts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .._actors._journal import Commit, JournalStats, Outcome, Recovery, StoredTask, TaskRecord
from .._sansio._errors import JournalUnavailable
from ._store import REDIS_DOWN, Store

__all__ = ["Fence", "NodeJournal"]

logger = logging.getLogger("galaxy_actors.cluster")


@attrs.frozen
class Fence:
    """What a write for one task must prove: the task's owner token and, for a device's own
    stream, the device's lease (device id, ``"<node> <epoch>"``)."""

    owner: str
    lease: tuple[str, str] | None


def _done(error: JournalUnavailable | None = None) -> Commit:
    commit = Commit()
    commit.settle(error)
    return commit


@attrs.define(eq=False)
class NodeJournal:
    """The `Journal` a node gives its supervisor (see the module docstring)."""

    store: Store
    stats: JournalStats = attrs.field(factory=JournalStats)
    #: Tasks the node handed to its supervisor, with their fence.
    fences: dict[str, Fence] = attrs.field(factory=dict)
    #: Tasks whose "sent" mark is in Redis.
    sent: set[str] = attrs.field(factory=set)
    #: Tasks whose mark was refused: the node no longer owns them.
    fenced: set[str] = attrs.field(factory=set)
    _send: trio.MemorySendChannel[tuple[str, Commit]] | None = None

    async def open(self) -> Recovery:
        return Recovery()

    async def run(self) -> None:
        send, receive = trio.open_memory_channel[tuple[str, Commit]](float("inf"))
        self._send = send
        async with trio.open_nursery() as nursery:
            async for task_id, commit in receive:
                nursery.start_soon(self._mark, task_id, commit)

    async def aclose(self) -> None:
        if self._send is not None:
            self._send.close()

    async def _mark(self, task_id: str, commit: Commit) -> None:
        fence = self.fences.get(task_id)
        if fence is None:
            commit.settle()
            return
        try:
            ok = await self.store.mark_sent(task_id, fence.owner, fence.lease)
        except REDIS_DOWN as exc:
            self.stats.failed_commits += 1
            self.stats.degraded = True
            commit.settle(JournalUnavailable(f"Redis: {exc}", task_id=task_id, device_id=None))
            return
        self.stats.commits += 1
        self.stats.degraded = False
        if ok:
            self.sent.add(task_id)
            commit.settle()
        else:
            self.fenced.add(task_id)
            commit.settle(
                JournalUnavailable(
                    "this node no longer owns the task", task_id=task_id, device_id=None
                )
            )

    def accept(self, record: TaskRecord, *, sent: bool = False) -> Commit:
        # The client wrote the task's record; what is left is the "sent" mark of a task that
        # goes to an idle device at once, which must be in Redis before its frame leaves.
        return self.mark_sent(record.task_id) if sent else _done()

    def mark_sent(self, task_id: str) -> Commit:
        commit = Commit()
        if self._send is None:
            commit.settle(JournalUnavailable("node stopping", task_id=task_id, device_id=None))
        else:
            self._send.send_nowait((task_id, commit))
        return commit

    def mark_queued(self, task_id: str) -> Commit:
        # The mark stays in Redis: a task marked sent that was not is, after a failover, at
        # worst an at-most-once task ending `OutcomeUnknown`; never one that runs twice.
        return _done()

    def mark_ended(self, task_id: str, outcome: Outcome, *, awaited: bool = False) -> Commit:
        return _done()  # the node's runner writes it, with the acknowledgement

    def forget(self, task_id: str) -> Commit:
        return _done()

    def device_added(self, device_id: str, spec: Mapping[str, Any]) -> Commit:
        return _done()

    def device_removed(self, device_id: str) -> Commit:
        return _done()

    async def fetch(self, task_id: str) -> StoredTask | None:
        return None  # the node asks Redis itself before handing a task over

    async def compact(self) -> int:
        return 0

    def release(self, task_id: str, fence: Fence) -> None:
        """The node's runner under ``fence`` is done with the task (a runner under another
        fence, its run after a requeue, keeps its own)."""
        if self.fences.get(task_id, fence) != fence:
            return
        self.fences.pop(task_id, None)
        self.sent.discard(task_id)
        self.fenced.discard(task_id)
