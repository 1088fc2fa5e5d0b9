"""Task handles for what the journal holds, and journal records for handles: the two-way
translation `_durable.Durability` makes between the supervisor's tasks and the journal's.
"""

from __future__ import annotations

import trio

from ._journal import Outcome, TaskRecord
from ._task import Delivery, TaskHandle

__all__ = ["DELIVERY", "Orphan", "handle_of", "record_of_handle"]

#: A stored delivery's value, as the enum.
DELIVERY = {str(delivery): delivery for delivery in Delivery}
#: A recovered task waiting for its device: (handle, the device asked for or None if routed
#: by capabilities, those capabilities, whether it had been sent).
Orphan = tuple[TaskHandle, str | None, tuple[str, ...], bool]


def handle_of(record: TaskRecord, outcome: Outcome | None) -> TaskHandle:
    """A handle for a task known only to the journal: with its retained outcome."""
    task = TaskHandle(
        record.task_id,
        record.description,
        record.data_json,
        timeout=record.timeout,
        delivery=record.delivery,
        priority=record.priority,
        submitted_at=trio.current_time(),
    )
    task.device_id = record.device_id
    if outcome is not None:
        task._resolve(outcome, trio.current_time())
    return task


def record_of_handle(task: TaskHandle) -> TaskRecord:
    # A live task submitted without a journal record (none: every journaled task has one,
    # but a settling one has dropped it): compare what the handle says.
    return TaskRecord(
        task.task_id,
        task.description,
        task.data_json,
        task.device_id,
        (),
        task.timeout,
        task.delivery,
        task.priority,
    )
