"""The events of the AIP connection engine (`_engine.py`), as plain values.

Each is what the engine tells its owner about one connection: the device actor consumes them
(`DeviceActor.on_event`). Frozen and slotted: thousands are made per second on a busy fleet.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._reasons import BadFrameKind, FailureReason

__all__ = [
    "BadFrameKind",
    "BadInput",
    "ConnectionDead",
    "EngineEvent",
    "InfoReceived",
    "Registered",
    "TaskAccepted",
    "TaskEnded",
    "TaskRefused",
]


@attrs.frozen(slots=True)
class Registered:
    """The server confirmed REGISTER."""

    at: float


@attrs.frozen(slots=True)
class InfoReceived:
    """The connect sequence is complete. ``info`` is the device's system info, or None
    (no info, refused, or no answer in time: ``note`` says which)."""

    info: dict[str, Any] | None
    note: str | None
    at: float


@attrs.frozen(slots=True)
class TaskAccepted:
    """The server acknowledged the task in flight (docs/protocol.md, flow 4)."""

    task_id: str
    at: float


@attrs.frozen(slots=True)
class TaskEnded:
    """TASK_END for the task in flight. ``failed``: the wire status was failed or error."""

    task_id: str
    failed: bool
    result: Any
    error: str | None
    at: float


@attrs.frozen(slots=True)
class TaskRefused:
    """An `error` frame arrived while the task in flight was not yet acknowledged."""

    task_id: str
    error: str
    at: float


@attrs.frozen(slots=True)
class BadInput:
    """A frame that is counted, logged and dropped; the connection carries on."""

    kind: BadFrameKind
    detail: str
    at: float


@attrs.frozen(slots=True)
class ConnectionDead:
    """The connection is over; nothing more comes from the engine. ``timed_out_task`` is
    the task whose timeout ended it (reason task_timeout). ``refused_task`` is the task the
    server refused because the device is not attached to it (reason device_offline): it
    never ran, so it is safe to run later. Any other task still in flight is the owner's
    to settle."""

    reason: FailureReason
    detail: str
    at: float
    timed_out_task: str | None = None
    refused_task: str | None = None


EngineEvent = (
    Registered | InfoReceived | TaskAccepted | TaskEnded | TaskRefused | BadInput | ConnectionDead
)
