"""The task journal's interface: what the supervisor writes, and what it reads back.

Theory of operation. A `Journal` is a small, storage-neutral interface in terms of task ids
and device ids, so that a distributed engine (Redis Streams) can replace the embedded SQLite
one (`_journal_sqlite.py`) without the supervisor noticing. Writes are *requests*: each
returns a `Commit` at once, and the journal commits pending requests together, many per
transaction (group commit). A caller that needs durability awaits the commit; one that does
not (marking an at-least-once task sent) moves on. A journal may make the commit in the
awaiting task itself (``drive``): everything pending goes with it, so nobody waits for a
writer task to be scheduled.

The journal knows nothing of Trio tasks, devices or connections: it keeps task records,
their state (``queued``, ``sent``, ``ended`` with an outcome) and device registrations. The
supervisor's side of durability (when to write, how to recover) is `_durable.py`.

This module is sans-IO apart from `Commit` (a `trio.Event`): records and the outcome codec
are plain values.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import attrs
import trio

from .._sansio._errors import (
    DeviceDisconnected,
    DeviceUnavailable,
    JournalUnavailable,
    OutcomeUnknown,
    TaskCancelled,
    TaskError,
    TaskRejected,
    TaskTimeout,
)
from ._task import Delivery, ExecutionResult, ResultStatus, TaskTimings

__all__ = [
    "Commit",
    "DeviceRecord",
    "Journal",
    "JournalStats",
    "OpenTask",
    "Recovery",
    "StoredTask",
    "TaskRecord",
    "decode_outcome",
    "encode_outcome",
    "gc_paused",
]

Outcome = ExecutionResult | TaskError


class TaskRecord(NamedTuple):
    """What was accepted: enough to send the task again after a restart. ``device_id`` is the
    device asked for (None: routed by ``capabilities``, and routed again on recovery). A
    named tuple: one is made per submitted task."""

    task_id: str
    description: str
    data_json: str
    device_id: str | None
    capabilities: tuple[str, ...]
    timeout: float
    delivery: Delivery
    priority: int

    def same_request(self, description: str, device_id: str | None) -> bool:
        """Whether a new submission with this id asks for the same task (idempotent)."""
        return self.description == description and self.device_id == device_id


#: A task without an outcome in the journal, as the row a journal reads: ``(task_id,
#: description, data_json, device_id, capabilities as a JSON list, timeout, delivery's
#: value, priority, sent)``. ``sent`` true: its frame may have reached the device (an
#: at-most-once task then ends `OutcomeUnknown` on recovery). A plain tuple, checked by
#: the journal: recovery reads 100,000 of them, and an object each was most of its time.
OpenTask = tuple[str, str, str, str | None, str, float, str, int, int]


@attrs.frozen
class DeviceRecord:
    """A device registered (``spec`` holds `add_device`'s arguments) or removed at runtime."""

    device_id: str
    removed: bool
    spec: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class Recovery:
    """What a journal holds when a supervisor starts on it. ``tasks`` in submission order."""

    tasks: Sequence[OpenTask] = ()
    devices: tuple[DeviceRecord, ...] = ()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a bulk of long-lived objects is made (recovery's
    rows and handles): each collection walks every object made so far, and they made up
    three quarters of building 100,000 task handles. Synchronous code only."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@attrs.frozen
class StoredTask:
    """One task as the journal holds it: open (``outcome`` None) or ended."""

    record: TaskRecord
    sent: bool
    outcome: Outcome | None


@attrs.define
class JournalStats:
    """Counters of one journal, for logs and status."""

    commits: int = 0
    writes: int = 0
    failed_commits: int = 0
    compacted: int = 0
    #: True while writes fail (disk full, read-only); clears on the next good commit.
    degraded: bool = False


class Commit:
    """A write request's fate: ``await commit.wait()`` returns once it is on disk, or once
    it failed (``error`` is then set). Failed lazy writes are retried by the journal.

    ``drive``: how a waiter makes the commit itself, if the journal can (called only while
    the commit is not done; it may settle it, or leave it to the journal's writer).
    ``existed``: an accept that wrote nothing, since the journal held its task id already.
    ``waited``: `wait` went through a schedule point (let other tasks run)."""

    __slots__ = ("_drive", "_event", "done", "error", "existed", "waited")

    def __init__(self, drive: Callable[[Commit], Awaitable[None]] | None = None) -> None:
        self._drive = drive
        # Made only for a waiter that must wait: most commits are settled by their own
        # waiter's drive, and one is made per write.
        self._event: trio.Event | None = None
        self.done = False
        self.error: JournalUnavailable | None = None
        self.existed = False
        self.waited = False

    def settle(self, error: JournalUnavailable | None = None) -> None:
        self.error = error
        self.done = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        """Wait until the commit is done. With a ``drive`` that commits at once this may
        return without a schedule point (the write is the work this call does)."""
        if self.done:
            return
        if self._drive is not None:
            await self._drive(self)
            if self.done:
                return
        if self._event is None:
            self._event = trio.Event()
        self.waited = True
        await self._event.wait()


class Journal(Protocol):
    """The storage behind durability. `SqliteJournal` is the embedded one.

    Lifecycle: `open` (once; lock, check, migrate, load), `run` in a task until cancelled
    (it commits pending writes, and flushes what is left when cancelled), `aclose`."""

    stats: JournalStats

    async def open(self) -> Recovery:
        """Take the journal for this process and read what it holds. Raises `JournalError`
        (corrupt, in use, newer version). Calling it again returns the same `Recovery`."""

    async def run(self) -> None:
        """Commit pending writes until cancelled."""

    async def aclose(self) -> None:
        """Release the journal (its lock, its file)."""

    def accept(self, record: TaskRecord, *, sent: bool = False) -> Commit:
        """Append an accepted task. Its commit failing means the task was not accepted,
        so its caller awaits the commit (a journal may leave it to that wait to make). If
        the journal holds its id already it writes nothing, and says so (``existed``).
        ``sent``: and its frame is about to be written (it goes to an idle device at once),
        as `mark_sent` would record, in the same write."""

    def mark_sent(self, task_id: str) -> Commit:
        """The task's frame is about to be written."""

    def mark_queued(self, task_id: str) -> Commit:
        """A task recorded as sent went back to its queue before its frame was written."""

    def mark_ended(self, task_id: str, outcome: Outcome, *, awaited: bool = False) -> Commit:
        """The task has its one outcome. ``awaited``: a waiter is about to await the
        commit (a journal may leave it to that wait to make)."""

    def forget(self, task_id: str) -> Commit:
        """The submission was undone before it was sent: no trace of it is kept."""

    def device_added(self, device_id: str, spec: Mapping[str, Any]) -> Commit:
        """A device registered at runtime."""

    def device_removed(self, device_id: str) -> Commit:
        """A device removed at runtime."""

    async def fetch(self, task_id: str) -> StoredTask | None:
        """The task with this id (open, or ended and still retained), or None."""

    async def compact(self) -> int:
        """Drop ended tasks past the retention; returns how many."""


# --------------------------------------------------------------------- the outcome codec

_ERRORS: dict[str, type[TaskError]] = {
    cls.__name__: cls
    for cls in (
        TaskError,
        DeviceDisconnected,
        DeviceUnavailable,
        JournalUnavailable,
        OutcomeUnknown,
        TaskCancelled,
        TaskRejected,
        TaskTimeout,
    )
}


# Made once: `json.dumps` with ``default`` builds an encoder per call.
_encode = json.JSONEncoder(default=str).encode


def encode_outcome(outcome: Outcome) -> str:
    """An outcome as JSON text, for `decode_outcome` in a later process."""
    if isinstance(outcome, ExecutionResult):
        t = outcome.timings
        fields: dict[str, Any] = {
            "kind": "result",
            "device_id": outcome.device_id,
            "status": str(outcome.status),
            "result": outcome.result,
            "error": outcome.error,
            "timings": [t.submitted_at, t.sent_at, t.accepted_at, t.ended_at],
        }
    else:
        fields = {
            "kind": "error",
            "type": type(outcome).__name__,
            "message": str(outcome),
            "device_id": outcome.device_id,
            "reason": getattr(outcome, "reason", None),
            "server_error": getattr(outcome, "server_error", None),
        }
    # A result is whatever the server sent in JSON, so it encodes; str() is the safety net.
    return _encode(fields)


def decode_outcome(task_id: str, text: str) -> Outcome:
    """The outcome `encode_outcome` wrote. Timings are on the writing process's clock."""
    fields = json.loads(text)
    device_id = fields.get("device_id")
    if fields["kind"] == "result":
        return ExecutionResult(
            task_id,
            device_id,
            ResultStatus(fields["status"]),
            fields["result"],
            fields["error"],
            TaskTimings(*fields["timings"]),
        )
    # A type this version does not know (a later one's) reads as its base, TaskError.
    cls = _ERRORS.get(fields["type"], TaskError)
    message = fields["message"]
    error: TaskError
    if cls is DeviceDisconnected:
        error = DeviceDisconnected(
            message, task_id=task_id, device_id=device_id, reason=fields.get("reason") or ""
        )
    elif cls is TaskRejected:
        error = TaskRejected(
            message,
            task_id=task_id,
            device_id=device_id,
            server_error=fields.get("server_error") or "",
        )
    else:
        error = cls(message, task_id=task_id, device_id=device_id)
    return error
