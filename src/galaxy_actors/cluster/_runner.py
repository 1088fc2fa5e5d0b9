"""One stream entry's task, run on the node's supervisor: taken (fenced), run, its outcome
written and the entry acknowledged in one script.

The rule that keeps every task to exactly one outcome: a runner gives an entry up only
when the entry is dealt with (its outcome written, or it was requeued or dropped), or when
the task is no longer this node's. In the second case the entry stays pending in the
node's name, and whoever owns the device next claims it (`Node` claims a device's pending
entries each time it starts serving it, this node included). A runner that finds its
device served again under a new lease (lost and won back while it ran) starts over with
the new fence rather than giving up: the node runs one runner per entry, so the claim
that came with the new lease did not start a second one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs
import trio

from .._actors._journal import encode_outcome
from .._actors._supervisor import Supervisor
from .._actors._task import Delivery
from .._sansio._errors import (
    DeviceDisconnected,
    DeviceUnavailable,
    DuplicateTaskId,
    JournalUnavailable,
    OutcomeUnknown,
    TaskCancelled,
    UnknownDevice,
)
from ._journal import Fence, NodeJournal
from ._store import REDIS_DOWN, Entry, Store, TaskView

__all__ = ["EntryRunner"]

logger = logging.getLogger("galaxy_actors.cluster")
T = TypeVar("T")

# Outcomes that only say the device left this node: the task is someone else's now.
_LEFT = (DeviceDisconnected, DeviceUnavailable, UnknownDevice, TaskCancelled, JournalUnavailable)


@attrs.define(eq=False)
class EntryRunner:
    """Runs entries for one node. ``fence_for(device_id)`` is the fence a write for that
    device's task must carry now (None: the device is not this node's); ``serves(device_id)``
    whether the device is connected here."""

    node: str
    store: Store
    supervisor: Supervisor
    journal: NodeJournal
    fence_for: Callable[[str | None], Fence | None]
    serves: Callable[[str | None], bool]
    retention: float
    retry_interval: float

    async def run(self, entry: Entry, device_id: str | None) -> None:
        """Until the entry is dealt with, or its task is no longer this node's."""
        while True:
            fence = self.fence_for(device_id)
            if fence is None:
                return  # the device's next owner claims the entry
            done: bool | None = None
            try:
                done = await self._run_entry(entry, device_id, fence)
            except Exception:
                # One task's trouble (a supervisor error, a malformed record) must not take
                # the node down; it is tried again while the task is ours.
                logger.exception(
                    "node %s: task %s failed here; trying again", self.node, entry.task_id
                )
            finally:
                self.journal.release(entry.task_id, fence)
            if done or (done is False and device_id is None):
                return  # dealt with; or a capability's task another node took over
            if self.fence_for(device_id) == fence:
                await trio.sleep(self.retry_interval)

    async def _retry(self, call: Callable[[], Awaitable[T]], still: Callable[[], bool]) -> T | None:
        """``call()`` until Redis answers; None once ``still()`` turns false."""
        while still():
            try:
                return await call()
            except REDIS_DOWN:
                await trio.sleep(self.retry_interval)
        return None

    async def _run_entry(self, entry: Entry, device_id: str | None, fence: Fence) -> bool:
        """True: dealt with. False: the task stopped being this node's under ``fence``."""

        def ours() -> bool:
            return device_id is None or self.fence_for(device_id) == fence

        view = await self._retry(
            lambda: self.store.take(entry.task_id, fence.owner, fence.lease), ours
        )
        if view is None:
            if ours() and await self._retry(lambda: self.store.fetch(entry.task_id), ours) is None:
                await self._retry(lambda: self.store.drop_entry(entry), ours)
                return True
            return False
        if view.state == "ended" and view.outcome_json is not None:
            return await self._finish(entry, fence, view.outcome_json, view.device_id, ours)
        if view.state == "sent" and view.delivery is Delivery.AT_MOST_ONCE:
            unknown = OutcomeUnknown(
                f"task {view.task_id!r} was sent and its node stopped before its end was "
                "recorded: it may or may not have run, and is not sent again",
                task_id=view.task_id,
                device_id=view.device_id,
            )
            return await self._finish(entry, fence, encode_outcome(unknown), view.device_id, ours)
        return await self._run_here(entry, view, fence, ours)

    async def _run_here(
        self, entry: Entry, view: TaskView, fence: Fence, ours: Callable[[], bool]
    ) -> bool:
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
                return False  # its previous run here has not let go of the id yet
            except (DeviceUnavailable, UnknownDevice) as exc:
                if view.device_id is not None:
                    if not (ours() and isinstance(exc, DeviceUnavailable)):
                        return False  # the device left this node: its next owner runs it
                    # The device is ours and refuses work (it gave up reconnecting): that is
                    # the task's outcome, as `Supervisor.submit` would have raised it.
                    return await self._finish(
                        entry, fence, encode_outcome(exc), view.device_id, ours
                    )
                await trio.sleep(self.retry_interval)
                await self._retry(
                    lambda: self.store.requeue(entry, fence.owner, entry.stream), ours
                )
                return True
            await handle.wait()
            outcome = handle.outcome
            assert outcome is not None
            sent = view.task_id in self.journal.sent
            if isinstance(outcome, JournalUnavailable) and not sent:
                if view.task_id in self.journal.fenced:
                    return False
                await trio.sleep(self.retry_interval)  # Redis away: try again
                continue
            ran_on = handle.device_id
            if isinstance(outcome, _LEFT) and not (ours() and self.serves(ran_on)):
                # Cut off because the device left this node, not by the device.
                if view.device_id is not None:
                    return False
                # What counts is whether its frame left: a "sent" mark in Redis may precede
                # a send that never happened (the device was draining); REQUEUE resets it.
                if not (handle.sent and view.delivery is Delivery.AT_MOST_ONCE):
                    await self._retry(
                        lambda: self.store.requeue(entry, fence.owner, entry.stream), ours
                    )
                    return True
            return await self._finish(entry, fence, encode_outcome(outcome), ran_on, ours)
        return False

    async def _finish(
        self,
        entry: Entry,
        fence: Fence,
        outcome_json: str,
        device_id: str | None,
        ours: Callable[[], bool],
    ) -> bool:
        """Write the outcome and acknowledge the entry. False when it was not written: the
        task is not this node's under ``fence`` (any more)."""
        written = await self._retry(
            lambda: self.store.finish(
                entry, fence.owner, fence.lease, outcome_json, device_id, self.retention
            ),
            ours,
        )
        if written == 0:
            logger.warning(
                "node %s: outcome of %s refused: the task is another node's now",
                self.node,
                entry.task_id,
            )
        return bool(written)
