"""What the supervisor process shows about its fleet, as plain values and JSON.

Shared by the control endpoint (``devices``, ``watch`` and ``submit`` replies), the status
view and the demo, so that the terminal and the endpoint always say the same thing. Times on
Trio's clock mean nothing outside the process: rows carry ages and countdowns in seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import trio

from .._actors._events import Event
from .._actors._supervisor import Supervisor
from .._actors._task import ExecutionResult, TaskTimings
from .._sansio._errors import TaskError

__all__ = ["DeviceRow", "device_rows", "event_to_json", "outcome_to_json"]


@attrs.frozen
class DeviceRow:
    """One device's status line."""

    device_id: str
    status: str
    os: str
    capabilities: tuple[str, ...]
    queue_depth: int
    #: The reconnection attempt under way or waited for, the number the log's "reconnecting
    #: in 2 s (attempt 3/5)" gives it; the attempts made, once no retry is scheduled.
    attempts: int
    max_retries: int
    #: Seconds since the connection last proved alive; None if it never did.
    last_heartbeat_age: float | None
    #: Seconds until the next reconnection attempt; None when none is scheduled.
    next_retry_in: float | None
    gave_up: bool
    last_failure: str | None
    current_task_id: str | None
    tasks_done: int
    tasks_failed: int
    connections: int
    failures: int

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object (the ``devices`` op's format)."""
        row = attrs.asdict(self)
        row["capabilities"] = list(self.capabilities)
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> DeviceRow:
        """The row from `to_json`'s output (a control endpoint's ``devices`` reply)."""
        names = {a.name for a in attrs.fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        values["capabilities"] = tuple(values.get("capabilities", ()))
        return cls(**values)


def device_rows(supervisor: Supervisor) -> list[DeviceRow]:
    """A row per device, in the order they were added."""
    now = trio.current_time()
    rows = []
    for snap in supervisor.snapshots():
        stats = supervisor.stats(snap.device_id)
        # The profile counts an attempt once it starts (as the reference does); the log and
        # the RestartScheduled event number it when it is scheduled.
        scheduled = snap.next_retry_at is not None
        rows.append(
            DeviceRow(
                device_id=snap.device_id,
                status=str(snap.status),
                os=snap.os,
                capabilities=snap.capabilities,
                queue_depth=snap.queue_depth,
                attempts=snap.connection_attempts + scheduled,
                max_retries=snap.max_retries,
                last_heartbeat_age=None
                if snap.last_heartbeat is None
                else max(0.0, now - snap.last_heartbeat),
                next_retry_in=None
                if snap.next_retry_at is None
                else max(0.0, snap.next_retry_at - now),
                gave_up=snap.gave_up,
                last_failure=snap.last_failure,
                current_task_id=snap.current_task_id,
                tasks_done=stats.tasks_completed,
                tasks_failed=stats.tasks_failed,
                connections=stats.connections,
                failures=stats.failures,
            )
        )
    return rows


def event_to_json(event: Event) -> dict[str, Any]:
    """``{"event": "StatusChanged", "device_id": ..., ...}``: the event's fields, its class
    name under ``event``; ``at`` stays on the supervisor's clock (for ordering only)."""
    return {"event": type(event).__name__, **attrs.asdict(event)}


def _timings(timings: TaskTimings) -> dict[str, Any]:
    return {
        "queued_for": timings.queued_for,
        "ran_for": timings.ran_for,
        "submitted_at": timings.submitted_at,
        "sent_at": timings.sent_at,
        "accepted_at": timings.accepted_at,
        "ended_at": timings.ended_at,
    }


def outcome_to_json(outcome: ExecutionResult | TaskError) -> dict[str, Any]:
    """A task's one outcome. A result: ``ok`` true, ``outcome`` "completed" or "failed" (the
    device reported failure: ``error`` says why), ``result``, ``timings``. An error: ``ok``
    false, ``outcome`` the error class name, ``error`` {type, message}."""
    if isinstance(outcome, ExecutionResult):
        return {
            "ok": True,
            "task_id": outcome.task_id,
            "device_id": outcome.device_id,
            "outcome": str(outcome.status),
            "result": outcome.result,
            "error": outcome.error,
            "timings": _timings(outcome.timings),
        }
    return {
        "ok": False,
        "task_id": outcome.task_id or None,
        "device_id": outcome.device_id,
        "outcome": type(outcome).__name__,
        "error": {"type": type(outcome).__name__, "message": str(outcome)},
    }
