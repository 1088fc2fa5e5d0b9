"""Tasks: what a caller submits, the handle it gets back, and the one outcome it ends with.

A `TaskHandle` is resolved exactly once, by whoever ends the task first (the device's
connection when TASK_END arrives, a timeout, a disconnect, a cancellation); any later
attempt to resolve it is ignored and reported to the caller of `_resolve` as False. That
single guarded transition is what makes "every task ends with exactly one outcome" hold
however the endings race.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from .._sansio._errors import TaskError

if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["Delivery", "ExecutionResult", "ResultStatus", "TaskHandle", "TaskTimings"]


class Delivery(enum.StrEnum):
    """What happens to a task on the device when its connection dies."""

    AT_MOST_ONCE = "at_most_once"  # it fails with DeviceDisconnected (the default)
    AT_LEAST_ONCE = "at_least_once"  # it goes back to the head of the queue and runs again


class ResultStatus(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"


@attrs.frozen
class TaskTimings:
    """When the task was submitted, sent, acknowledged by the server and ended, in seconds
    on Trio's clock. ``sent_at`` and ``accepted_at`` are None when it never got that far."""

    submitted_at: float
    sent_at: float | None
    accepted_at: float | None
    ended_at: float

    @property
    def queued_for(self) -> float:
        """Time spent waiting in the device's queue."""
        return (self.sent_at if self.sent_at is not None else self.ended_at) - self.submitted_at

    @property
    def ran_for(self) -> float | None:
        """Time from sending to the end, or None if it was never sent."""
        return None if self.sent_at is None else self.ended_at - self.sent_at


@attrs.frozen
class ExecutionResult:
    """The device's answer to a task (its TASK_END). ``status`` FAILED means the device
    ran the task and reported failure, with ``error`` saying why; ``result`` is kept as the
    server sent it (from real servers, a list of ``{"request": ..., "result": ...}``)."""

    task_id: str
    device_id: str
    status: ResultStatus
    result: Any
    error: str | None
    timings: TaskTimings

    @property
    def ok(self) -> bool:
        return self.status is ResultStatus.COMPLETED


class PendingWrite(Protocol):
    """A journal write under way (`_journal.Commit` is one)."""

    @property
    def done(self) -> bool: ...

    async def wait(self) -> None: ...


class TaskJournal(Protocol):
    """Where a journaled task's sending and outcome are recorded (`_durable.Durability` is
    one). Declared here so that a task knows no journal module (and imports none)."""

    async def sent(self, task: TaskHandle, session: Any, *, by_caller: bool) -> bool:
        """Before the task's frame is written: False if it must not be."""

    def ended(self, task: TaskHandle, outcome: ExecutionResult | TaskError) -> PendingWrite | None:
        """When the task gets its outcome: the write its waiters wait for."""


class _Stage(enum.IntEnum):
    QUEUED = 0
    SENT = 1
    DONE = 2


class TaskHandle:
    """A submitted task. Await `result` for its outcome.

    >>> handle = await supervisor.submit("Open Excel", {"file": "q3.xlsx"}, device_id="pc")
    ... # doctest: +SKIP
    >>> result = await handle.result()   # ExecutionResult, or raises a TaskError
    """

    __slots__ = (
        "_accepted_at",
        "_before_send",
        "_done",
        "_ended_at",
        "_ended_commit",
        "_journal",
        "_on_device",
        "_on_released",
        "_outcome",
        "_sent_at",
        "_stage",
        "abandoned",
        "data_json",
        "delivery",
        "description",
        "device_id",
        "priority",
        "submitted_at",
        "task_id",
        "timeout",
    )

    def __init__(
        self,
        task_id: str,
        description: str,
        data_json: str,
        *,
        timeout: float,
        delivery: Delivery,
        priority: int,
        submitted_at: float,
        on_released: Callable[[TaskHandle], None] | None = None,
    ) -> None:
        self.task_id = task_id
        self.description = description
        self.data_json = data_json
        self.timeout = timeout
        self.delivery = delivery
        self.priority = priority
        self.submitted_at = submitted_at
        self.device_id: str | None = None
        # True once nobody waits for the outcome any more: not to be sent again.
        self.abandoned = False
        self._stage = _Stage.QUEUED
        self._sent_at: float | None = None
        self._accepted_at: float | None = None
        self._ended_at: float | None = None
        self._outcome: ExecutionResult | TaskError | None = None
        self._done = trio.Event()
        # Called once the task has its outcome *and* no agent holds it any more: its id
        # stays reserved until then, since the agent may still be running it.
        self._on_released = on_released
        self._on_device = False
        self._before_send: tuple[float | None, float | None] = (None, None)
        # Set for a journaled task (`_durable.py`): its outcome is recorded before a
        # waiter sees it, and its sending before its frame leaves.
        self._journal: TaskJournal | None = None
        self._ended_commit: PendingWrite | None = None

    def __repr__(self) -> str:
        return f"<TaskHandle {self.task_id!r} device={self.device_id!r} {self._stage.name.lower()}>"

    @property
    def done(self) -> bool:
        return self._stage is _Stage.DONE

    @property
    def sent(self) -> bool:
        """True once the task was sent to a device (it may have been re-queued since)."""
        return self._sent_at is not None

    @property
    def outcome(self) -> ExecutionResult | TaskError | None:
        """The outcome once done: a result, or the error `result` would raise."""
        return self._outcome

    async def wait(self) -> None:
        """Wait until the task has its outcome. Cancelling the wait leaves the task be.
        With a journal, the outcome is on disk when this returns."""
        await self._done.wait()
        commit = self._ended_commit
        if commit is not None:
            await commit.wait()

    async def result(self) -> ExecutionResult:
        """Wait for the outcome: the `ExecutionResult`, or raise its `TaskError`."""
        await self.wait()
        outcome = self._outcome
        if isinstance(outcome, TaskError):
            raise outcome
        assert outcome is not None
        return outcome

    def timings(self, ended_at: float) -> TaskTimings:
        return TaskTimings(self.submitted_at, self._sent_at, self._accepted_at, ended_at)

    # ------------------------------------------------------------- owned by the device actor

    def _mark_sent(self, now: float) -> None:
        self._before_send = self._sent_at, self._accepted_at
        self._stage = _Stage.SENT
        self._sent_at = now
        self._accepted_at = None
        self._on_device = True

    def _unsend(self) -> None:
        """Undo `_mark_sent`: the send was cancelled before any of the frame left."""
        self._stage = _Stage.QUEUED
        self._sent_at, self._accepted_at = self._before_send
        self._on_device = False

    def _mark_accepted(self, now: float) -> None:
        if self._accepted_at is None:
            self._accepted_at = now

    def _requeue(self) -> None:
        self._stage = _Stage.QUEUED
        self._left_device()

    def _left_device(self) -> None:
        """No agent holds the task any more (it ended there, or its connection is gone)."""
        if self._on_device:
            self._on_device = False
            if self._stage is _Stage.DONE and self._on_released is not None:
                self._on_released(self)

    def _resolve(self, outcome: ExecutionResult | TaskError, now: float) -> bool:
        """End the task with ``outcome`` unless it already ended. True if this call did."""
        if self._stage is _Stage.DONE:
            return False
        self._stage = _Stage.DONE
        self._ended_at = now
        self._outcome = outcome
        if self._journal is not None:
            self._ended_commit = self._journal.ended(self, outcome)
        self._done.set()
        if not self._on_device and self._on_released is not None:
            self._on_released(self)
        return True
