"""The values a fault schedule is made of: faults, user actions and task submissions.

Rules of this file:
- Plain values: frozen, validated when made (a `ConfigurationError` names the bad field), no
  Trio, no agents, no randomness.
- Reprs are for people first: fields left at their defaults are not shown, and what is shown is
  valid Python that pastes back into a regression test (`_Readable`, which the schedules in
  ``_faults.py`` use too).

A fault is either instant (`DropConnection`, `StaleTaskEnd`, `MalformedFrame`) or a window
``[at, at + duration)`` during which one of the agent's behaviours is switched (refusing
connections, ignoring heartbeats, ...). A user action (`Disconnect`, `Connect`, `CancelTask`)
and a `TaskSubmission` happen at their ``at``. Times are seconds of virtual time from the
start of the scenario.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import attrs

from .._actors._task import Delivery
from .._sansio._checks import non_negative_field, positive_field
from .._sansio._errors import ConfigurationError

__all__ = [
    "SIMULATED_TASK_ERROR",
    "Action",
    "CancelTask",
    "Connect",
    "DelayTaskEnd",
    "Disconnect",
    "DropConnection",
    "Fault",
    "LoseTaskEnd",
    "MalformedFrame",
    "RefuseConnections",
    "RejectRegistration",
    "RejectTasks",
    "StaleTaskEnd",
    "StallHeartbeats",
    "TaskSubmission",
    "fault_end",
]

#: The ``sim_error`` a `TaskSubmission` with ``fails=True`` asks its agent to end with.
SIMULATED_TASK_ERROR: Final = "simulated task failure"


# --------------------------------------------------------------------------- validation


def _optional_at(_instance: object, attribute: attrs.Attribute[float | None], value: Any) -> None:
    if value is not None:
        non_negative_field(_instance, attribute, value)


def _to_delivery(value: Delivery | str) -> Delivery:
    try:
        return Delivery(value)
    except ValueError:
        raise ConfigurationError(f"unknown delivery {value!r}") from None


# --------------------------------------------------------------------------- reprs


def _shown(value: object) -> str:
    if isinstance(value, Delivery):
        return f"Delivery.{value.name}"
    return repr(value)


def _non_default(obj: Any) -> Iterator[tuple[str, object]]:
    """The init fields of ``obj`` whose values differ from their defaults."""
    for field in attrs.fields(type(obj)):
        if not field.init:
            continue
        value = getattr(obj, field.name)
        default = field.default
        if default is not attrs.NOTHING and value == default:
            continue
        yield field.name, value


class _Readable:
    """Mixin: a compact ``repr`` (defaults left out) and the same for Hypothesis' printer."""

    __slots__ = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={_shown(value)}" for name, value in _non_default(self))
        return f"{type(self).__name__}({shown})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        # Hypothesis' pretty printer (IPython's protocol): it prints attrs classes field by
        # field, defaults included, which buries a shrunk example in noise.
        name = type(self).__name__
        if cycle:
            p.text(f"{name}(...)")
            return
        with p.group(len(name) + 1, f"{name}(", ")"):
            for i, (field, value) in enumerate(_non_default(self)):
                if i:
                    p.text(",")
                    p.breakable()
                p.text(f"{field}=")
                if isinstance(value, Delivery):
                    p.text(_shown(value))
                else:
                    p.pretty(value)


# --------------------------------------------------------------------------- faults


@attrs.frozen(repr=False)
class DropConnection(_Readable):
    """At ``at``, the agent aborts every open connection without a close frame (a network
    failure): the device sees ``connection_closed``."""

    at: float = attrs.field(validator=non_negative_field)

    def describe(self) -> str:
        return "drop the connection"


@attrs.frozen(repr=False)
class MalformedFrame(_Readable):
    """At ``at``, the agent sends a malformed frame on every open connection: invalid JSON
    text (dropped and counted by the device), or a binary frame with ``binary`` (a
    ``protocol_error`` that fails the connection)."""

    at: float = attrs.field(validator=non_negative_field)
    binary: bool = False

    def describe(self) -> str:
        return "send a binary frame" if self.binary else "send a malformed text frame"


@attrs.frozen(repr=False)
class StaleTaskEnd(_Readable):
    """At ``at``, the agent drops every open connection (as `DropConnection`), but the tasks
    it was running on them are not forgotten: each one's TASK_END, as it would have been, is
    sent on the next connection registered, ``delay`` seconds after its registration. A
    server that delivers a result to the client's new connection: the client must not take
    it for the end of whatever task it sent there (it is a bad frame, unless the same task
    was sent again and is the one in flight)."""

    at: float = attrs.field(validator=non_negative_field)
    delay: float = attrs.field(default=0.0, validator=non_negative_field)

    def describe(self) -> str:
        later = f", {self.delay:g} s after" if self.delay else ""
        return f"drop the connection; its tasks' TASK_ENDs come on the next one{later}"


@attrs.frozen(repr=False)
class RefuseConnections(_Readable):
    """New connections are refused during ``[at, at + duration)``; open ones stay up."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)

    def describe(self) -> str:
        return f"refuse connections for {self.duration:g} s"


@attrs.frozen(repr=False)
class StallHeartbeats(_Readable):
    """The agent ignores heartbeats during ``[at, at + duration)`` (and only heartbeats)."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)

    def describe(self) -> str:
        return f"ignore heartbeats for {self.duration:g} s"


@attrs.frozen(repr=False)
class RejectRegistration(_Readable):
    """Registrations during ``[at, at + duration)`` are rejected with ``text`` (an ``error``
    frame, then the agent closes the socket): ``registration_rejected``."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)
    text: str = "Target device is not connected"

    def describe(self) -> str:
        return f"reject registrations for {self.duration:g} s ({self.text!r})"


@attrs.frozen(repr=False)
class RejectTasks(_Readable):
    """Tasks arriving during ``[at, at + duration)`` are refused with an ``error`` frame
    carrying ``text``: they end with `TaskRejected`."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)
    text: str = "Target device is not connected"

    def describe(self) -> str:
        return f"refuse tasks for {self.duration:g} s ({self.text!r})"


@attrs.frozen(repr=False)
class LoseTaskEnd(_Readable):
    """Tasks arriving during ``[at, at + duration)`` are acknowledged but never ended (their
    TASK_END is lost): they run into their timeout, or into the shutdown."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)

    def describe(self) -> str:
        return f"lose TASK_END of tasks arriving within {self.duration:g} s"


@attrs.frozen(repr=False)
class DelayTaskEnd(_Readable):
    """Tasks arriving during ``[at, at + duration)`` end ``delay`` seconds after they arrive,
    instead of after the device's ``task_duration`` (a slow device). A task's own
    ``TaskSubmission.duration`` still wins."""

    at: float = attrs.field(validator=non_negative_field)
    duration: float = attrs.field(validator=positive_field)
    delay: float = attrs.field(validator=non_negative_field)

    def describe(self) -> str:
        return f"delay TASK_END by {self.delay:g} s for tasks arriving within {self.duration:g} s"


Fault = (
    DropConnection
    | StaleTaskEnd
    | MalformedFrame
    | RefuseConnections
    | StallHeartbeats
    | RejectRegistration
    | RejectTasks
    | LoseTaskEnd
    | DelayTaskEnd
)

_WINDOWS: Final = (
    RefuseConnections,
    StallHeartbeats,
    RejectRegistration,
    RejectTasks,
    LoseTaskEnd,
    DelayTaskEnd,
)


def fault_end(fault: Fault) -> float:
    """When ``fault`` stops acting: its window's end, or its instant."""
    if isinstance(fault, _WINDOWS):
        return fault.at + fault.duration
    return fault.at


# --------------------------------------------------------------------------- user actions


@attrs.frozen(repr=False)
class Disconnect(_Readable):
    """At ``at``, the user disconnects ``device`` (`Supervisor.disconnect`): its queued tasks
    are cancelled, a running one may finish within the grace (none with ``force``), and it
    stays disconnected until a `Connect`."""

    at: float = attrs.field(validator=non_negative_field)
    device: str
    force: bool = False

    def describe(self) -> str:
        return "the user disconnects it" + (" (force)" if self.force else "")


@attrs.frozen(repr=False)
class Connect(_Readable):
    """At ``at``, the user connects ``device`` (`Supervisor.connect`): at once, cutting a
    backoff short; after a give-up, with the attempt count started afresh."""

    at: float = attrs.field(validator=non_negative_field)
    device: str

    def describe(self) -> str:
        return "the user connects it"


@attrs.frozen(repr=False)
class CancelTask(_Readable):
    """At ``at``, the caller of ``task_id`` gives up on it (`Supervisor.cancel_task`): a
    queued task is withdrawn; a running one ends with `TaskCancelled` at once, and its device
    stays busy until its TASK_END."""

    at: float = attrs.field(validator=non_negative_field)
    task_id: str

    def describe(self) -> str:
        return f"the user cancels {self.task_id!r}"


Action = Disconnect | Connect | CancelTask


# --------------------------------------------------------------------------- tasks


@attrs.frozen(repr=False)
class TaskSubmission(_Readable):
    """At ``at``, the scenario submits task ``task_id`` to ``device`` and awaits its outcome.

    Arguments:
        priority, delivery, timeout: passed to `Supervisor.submit` as they are.
        duration: how long the task runs on the agent (a slow task when long); None takes
            the device's current default (its ``task_duration``, or a `DelayTaskEnd`).
        fails: the agent ends the task ``failed`` (with `SIMULATED_TASK_ERROR`).
    """

    at: float = attrs.field(validator=non_negative_field)
    device: str
    task_id: str
    priority: int = 0
    delivery: Delivery = attrs.field(default=Delivery.AT_MOST_ONCE, converter=_to_delivery)
    duration: float | None = attrs.field(default=None, validator=_optional_at)
    fails: bool = False
    timeout: float = attrs.field(default=1000.0, validator=positive_field)

    def task_data(self) -> dict[str, Any]:
        """The ``metadata.task_data`` that tells the simulated agent how this task ends."""
        data: dict[str, Any] = {}
        if self.duration is not None:
            data["sim_duration"] = self.duration
        if self.fails:
            data["sim_error"] = SIMULATED_TASK_ERROR
        return data

    def describe(self) -> str:
        parts = [f"submit {self.task_id!r}"]
        if self.priority:
            parts.append(f"priority {self.priority}")
        if self.delivery is not Delivery.AT_MOST_ONCE:
            parts.append(str(self.delivery))
        if self.duration is not None:
            parts.append(f"runs {self.duration:g} s")
        if self.fails:
            parts.append("fails")
        if self.timeout != 1000.0:
            parts.append(f"timeout {self.timeout:g} s")
        return ", ".join(parts)
