"""One device's workload: its queue, the task on the device, and the one outcome each
task ends with.

The device actor owns one `Workload` and decides *when* things happen (a connection
ended, a frame arrived); the workload says *what* happens to the tasks: which one runs
next, which outcome a task gets, and the one settlement rule for a task whose connection
ended under it. It knows nothing of connections or statuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
import trio

from .._sansio._engine_events import BadFrameKind, ConnectionDead, TaskEnded, TaskRefused
from .._sansio._errors import (
    DeviceDisconnected,
    TaskCancelled,
    TaskError,
    TaskRejected,
    TaskTimeout,
)
from .._sansio._reasons import TaskOutcome
from ._events import EventHub, TaskQueued, TaskSent
from ._events import TaskEnded as TaskEndedEvent
from ._mailbox import Mailbox
from ._task import Delivery, ExecutionResult, ResultStatus, TaskHandle

__all__ = ["DeviceStats", "Workload", "count_bad_frame"]


@attrs.define
class DeviceStats:
    """Counters a user can read for one device."""

    frames_received: int = 0
    tasks_completed: int = 0
    tasks_failed: int = 0
    connections: int = 0
    failures: int = 0
    protocol_errors: int = 0
    unexpected_frames: int = 0
    error_frames: int = 0
    unknown_task_frames: int = 0
    cross_device_frames: int = 0


# The counter of each kind: every kind has one (a new kind without one is a KeyError here,
# not a frame silently counted under another name).
_STAT_OF_KIND: Final = {
    BadFrameKind.PROTOCOL_ERROR: "protocol_errors",
    BadFrameKind.ERROR_FRAME: "error_frames",
    BadFrameKind.CROSS_DEVICE: "cross_device_frames",
    BadFrameKind.UNKNOWN_TASK: "unknown_task_frames",
    BadFrameKind.UNEXPECTED: "unexpected_frames",
}


def count_bad_frame(stats: DeviceStats, kind: BadFrameKind) -> None:
    """One more bad frame of this kind in ``stats`` (not a method: `DeviceStats` is public,
    and counting is the device's business)."""
    name = _STAT_OF_KIND[kind]
    setattr(stats, name, getattr(stats, name) + 1)


class Workload:
    __slots__ = ("_room", "device_id", "events", "mailbox", "running", "stats")

    def __init__(self, device_id: str, events: EventHub, stats: DeviceStats) -> None:
        self.device_id = device_id
        self.events = events
        self.stats = stats
        self.mailbox = Mailbox()
        # The task on the device: sent on the current connection, no TASK_END yet.
        self.running: TaskHandle | None = None
        # Set when the queue shrinks, for submitters waiting for room (``max_queue``).
        self._room: trio.Event | None = None

    def room(self) -> trio.Event:
        """An event set the next time the queue shrinks."""
        if self._room is None:
            self._room = trio.Event()
        return self._room

    def _shrunk(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            room.set()

    def next(self) -> TaskHandle | None:
        """Take the next task to run out of the queue."""
        task = self.mailbox.pop()
        if task is not None:
            self._shrunk()
        return task

    # ------------------------------------------------------------------------- the queue

    def queue(self, task: TaskHandle) -> None:
        """Behind everything of its priority."""
        self.mailbox.push(task)
        self._queued(task)

    def requeue(self, task: TaskHandle) -> None:
        """Ahead of everything of its priority: a task that must run again."""
        self.mailbox.push_front(task)
        self._queued(task)

    def _queued(self, task: TaskHandle) -> None:
        if self.events:
            self.events.publish(
                TaskQueued(
                    task.task_id,
                    self.device_id,
                    task.priority,
                    self.mailbox.depth_by_priority(),
                    trio.current_time(),
                )
            )

    def withdraw(self, task: TaskHandle, why: str) -> bool:
        """End a queued task with `TaskCancelled`. False if it is on the device or ended."""
        if task.done or self.running is task:
            return False
        if self.end(task, self.cancelled(task, why)):
            self.mailbox.withdrawn(task)
            self._shrunk()
            return True
        return False

    def end_queued(self, error: Callable[[TaskHandle], TaskError]) -> None:
        """End every queued task with the error ``error(task)`` makes for it."""
        for task in self.mailbox.drain():
            self.end(task, error(task))
        self._shrunk()

    def load_before(self, priority: int) -> int:
        """How many tasks would run before a new task of ``priority`` on this device."""
        queued = sum(n for p, n in self.mailbox.depth_by_priority().items() if p <= priority)
        return queued + (1 if self.running is not None else 0)

    # ------------------------------------------------------------------- the task on the device

    def start(self, task: TaskHandle, now: float) -> None:
        self.running = task
        task._mark_sent(now)
        if self.events:
            self.events.publish(TaskSent(task.task_id, self.device_id, now))

    def take_running(self, task_id: str) -> TaskHandle | None:
        """The task on the device if it is ``task_id``, no longer on the device."""
        task = self.running
        if task is None or task.task_id != task_id:
            return None
        self.running = None
        return task

    def accepted(self, task_id: str, at: float) -> None:
        """The server acknowledged ``task_id``, the task on the device."""
        task = self.running
        if task is not None and task.task_id == task_id:
            task._mark_accepted(at)

    def ended(self, event: TaskEnded | TaskRefused) -> bool:
        """The task on the device ended there: its TASK_END, or the server refused it. True
        if it was the task on the device (which is then free)."""
        task = self.take_running(event.task_id)
        if task is None:
            return False
        outcome: ExecutionResult | TaskError
        if isinstance(event, TaskEnded):
            outcome = ExecutionResult(
                task.task_id,
                self.device_id,
                ResultStatus.FAILED if event.failed else ResultStatus.COMPLETED,
                event.result,
                event.error,
                task.timings(event.at),
            )
        else:
            outcome = TaskRejected.refused(task.task_id, self.device_id, event.error)
        self.finish(task, outcome, event.at)
        return True

    def timed_out(self, task_id: str) -> bool:
        """No TASK_END came for ``task_id`` within its timeout (its connection is ending).
        True if it was the task on the device."""
        task = self.take_running(task_id)
        if task is None:
            return False
        self.finish(task, TaskTimeout.no_end(task.task_id, self.device_id, task.timeout))
        return True

    def finish(
        self, task: TaskHandle, outcome: ExecutionResult | TaskError, now: float | None = None
    ) -> None:
        """``task`` left the device with ``outcome`` (a no-op for the outcome if its caller
        had already given up on it)."""
        if isinstance(outcome, ExecutionResult) and outcome.ok:
            self.stats.tasks_completed += 1
        else:
            self.stats.tasks_failed += 1
        task._left_device()
        self.end(task, outcome, now)

    def settle(self, dead: ConnectionDead | None, *, accepting: bool) -> None:
        """The one rule for the task on the device when its connection ended.

        At-least-once, cut off by a failure: back to the head of the queue, to run after
        the reconnection, if the device still accepts work (``accepting``); if it does not
        (a disconnect or a removal is under way, which cancels the queue), `TaskCancelled`
        like the queue. At-most-once, cut off by a failure: `DeviceDisconnected`. Closed on
        purpose (``dead`` None: a disconnect whose grace ran out): `TaskCancelled`. No task
        is left pending."""
        task = self.running
        self.running = None
        if task is None:
            return
        if task.done:
            task._left_device()
        elif dead is None:
            self.finish(task, self.cancelled(task, "device disconnected before the task ended"))
        elif task.delivery is Delivery.AT_LEAST_ONCE and not task.abandoned:
            if accepting:
                task._requeue()
                self.requeue(task)
            else:
                self.finish(
                    task, self.cancelled(task, "device was disconnected before it ran again")
                )
        else:
            self.finish(
                task,
                DeviceDisconnected.during(task.task_id, self.device_id, dead.reason, dead.detail),
            )

    def not_sent(self, task: TaskHandle, *, by_caller: bool, accepting: bool) -> bool:
        """A frame-safe send of ``task`` was cancelled: nothing of it reached the device.
        True if it was the task on the device (which is then free again).

        Sent by its caller, who is being cancelled: the submission is undone (or, if the
        connection already ended and requeued the task, the task is withdrawn, since nobody
        will wait for it). Sent by the loop: back to the head of the queue, whatever its
        delivery, unless the device no longer takes tasks: then it ends like the queue."""
        if self.running is not task:
            if by_caller and not task.done:
                self.withdraw(task, "its caller was cancelled before it was sent")
            return False
        self.running = None
        task._unsend()
        if not by_caller:
            if accepting:
                self.requeue(task)
            else:
                self.end(task, self.cancelled(task, "device was disconnected before it was sent"))
        return True

    # ------------------------------------------------------------------------- outcomes

    def cancelled(self, task: TaskHandle, why: str) -> TaskCancelled:
        return TaskCancelled.withdrawn(task.task_id, self.device_id, why)

    def end(
        self, task: TaskHandle, outcome: ExecutionResult | TaskError, now: float | None = None
    ) -> bool:
        """Give ``task`` its one outcome; False if it already had one."""
        now = trio.current_time() if now is None else now
        if not task._resolve(outcome, now):
            return False
        if self.events:
            if isinstance(outcome, ExecutionResult):
                name, detail = TaskOutcome(outcome.status), outcome.error
            else:
                name, detail = TaskOutcome.of_error(outcome), str(outcome)
            timings = task.timings(now)
            self.events.publish(
                TaskEndedEvent(
                    task.task_id,
                    self.device_id,
                    name,
                    detail,
                    now,
                    timings.queued_for,
                    timings.ran_for,
                )
            )
        return True
