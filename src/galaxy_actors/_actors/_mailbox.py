"""A device's mailbox: its queue of pending tasks.

Order is (priority, submission order): a lower priority number runs sooner, equal
priorities stay FIFO. A task put back after its connection died (at-least-once delivery)
goes ahead of everything of its priority. The mailbox belongs to the device actor, not to a
connection, so it survives reconnections.

Withdrawn tasks (cancelled while queued) are removed lazily: they stay in the heap, marked
done, and are skipped when they reach the top, which keeps withdrawal O(1). Lazily, but not
for ever: once the heap holds more withdrawn entries than live ones, it is rebuilt from the
live ones. During an outage callers may give up by the thousand while nothing is popped;
the heap then stays within twice the live tasks, and each rebuild, linear in the heap, is
paid for by the withdrawals since the last one (amortised O(1) per withdrawal).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from ._task import TaskHandle

__all__ = ["Mailbox"]


class Mailbox:
    __slots__ = ("_by_priority", "_head", "_heap", "_live", "_tail")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, TaskHandle]] = []
        self._tail = itertools.count(1)
        self._head = itertools.count(-1, -1)
        self._live = 0
        self._by_priority: dict[int, int] = {}

    def __len__(self) -> int:
        return self._live

    def __bool__(self) -> bool:
        return self._live > 0

    def push(self, task: TaskHandle) -> None:
        """Queue behind everything of the same or a lower priority number."""
        self._add(task, next(self._tail))

    def push_front(self, task: TaskHandle) -> None:
        """Queue ahead of everything of the same priority (a task that must run again)."""
        self._add(task, next(self._head))

    def _add(self, task: TaskHandle, seq: int) -> None:
        priority = task.priority
        heapq.heappush(self._heap, (priority, seq, task))
        self._live += 1
        counts = self._by_priority
        counts[priority] = counts.get(priority, 0) + 1

    def pop(self) -> TaskHandle | None:
        """The next task to run, or None when empty."""
        heap = self._heap
        while heap:
            _, _, task = heapq.heappop(heap)
            if not task.done:
                self._forget(task)
                return task
        return None

    def withdrawn(self, task: TaskHandle) -> None:
        """Account for a queued task that was ended while queued (it stays until popped, or
        until withdrawn entries outnumber live ones)."""
        self._forget(task)
        heap = self._heap
        if len(heap) > 2 * self._live:
            # (priority, seq) is unique per entry, so the rebuilt heap pops in the same order.
            self._heap = [entry for entry in heap if not entry[2].done]
            heapq.heapify(self._heap)

    def _forget(self, task: TaskHandle) -> None:
        self._live -= 1
        counts = self._by_priority
        left = counts[task.priority] - 1
        if left:
            counts[task.priority] = left
        else:
            del counts[task.priority]

    def drain(self) -> Iterator[TaskHandle]:
        """Remove and yield every live task, in order."""
        while (task := self.pop()) is not None:
            yield task

    def depth_by_priority(self) -> dict[int, int]:
        return dict(sorted(self._by_priority.items()))

    def __iter__(self) -> Iterator[TaskHandle]:
        """Live tasks in run order (a copy: safe to end tasks while iterating)."""
        return iter([t for _, _, t in sorted(self._heap) if not t.done])
