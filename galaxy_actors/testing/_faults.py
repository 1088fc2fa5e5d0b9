"""The fault-schedule model: what goes wrong, on which device, and when.

Rules of this file:
- Plain values. A `FaultSchedule` is a frozen description of a scenario: no Trio, no agents,
  no randomness. `galaxy_actors.testing.run_scenario` plays it; the Hypothesis strategies in
  `galaxy_actors.testing.strategies` draw it; a shrunk failure prints it.
- Reprs are for people first: fields left at their defaults are not shown, and what is shown is
  valid Python that pastes back into a regression test (``from galaxy_actors.testing import *``
  and ``from galaxy_actors import Delivery`` are all it needs).

Theory of operation. Every device gets its own simulated agent. A fault is either instant
(`DropConnection`, `StaleTaskEnd`, `MalformedFrame`) or a window ``[at, at + duration)``
during which one of the agent's behaviours is switched (refusing connections, ignoring
heartbeats, ...). Windows of one kind may overlap; the behaviour stays switched while any of
them is open. Task submissions are interleaved with the faults in time; each names its device.
Times are seconds of virtual time from the start of the scenario.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

import attrs

from .._errors import ConfigurationError
from .._task import Delivery

__all__ = [
    "Action",
    "CancelTask",
    "Connect",
    "DelayTaskEnd",
    "DeviceSchedule",
    "Disconnect",
    "DropConnection",
    "Fault",
    "FaultSchedule",
    "LoseTaskEnd",
    "MalformedFrame",
    "RefuseConnections",
    "RejectRegistration",
    "RejectTasks",
    "StaleTaskEnd",
    "StallHeartbeats",
    "Step",
    "TaskSubmission",
]

#: The ``sim_error`` a `TaskSubmission` with ``fails=True`` asks its agent to end with.
SIMULATED_TASK_ERROR: Final = "simulated task failure"


# --------------------------------------------------------------------------- validation


def _at(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{attribute.name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ConfigurationError(f"{attribute.name} must be finite and >= 0, got {value!r}")


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{attribute.name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{attribute.name} must be finite and > 0, got {value!r}")


def _optional_at(_instance: object, attribute: attrs.Attribute[float | None], value: Any) -> None:
    if value is not None:
        _at(_instance, attribute, value)


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

    at: float = attrs.field(validator=_at)

    def describe(self) -> str:
        return "drop the connection"


@attrs.frozen(repr=False)
class MalformedFrame(_Readable):
    """At ``at``, the agent sends a malformed frame on every open connection: invalid JSON
    text (dropped and counted by the device), or a binary frame with ``binary`` (a
    ``protocol_error`` that fails the connection)."""

    at: float = attrs.field(validator=_at)
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

    at: float = attrs.field(validator=_at)
    delay: float = attrs.field(default=0.0, validator=_at)

    def describe(self) -> str:
        later = f", {self.delay:g} s after" if self.delay else ""
        return f"drop the connection; its tasks' TASK_ENDs come on the next one{later}"


@attrs.frozen(repr=False)
class RefuseConnections(_Readable):
    """New connections are refused during ``[at, at + duration)``; open ones stay up."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)

    def describe(self) -> str:
        return f"refuse connections for {self.duration:g} s"


@attrs.frozen(repr=False)
class StallHeartbeats(_Readable):
    """The agent ignores heartbeats during ``[at, at + duration)`` (and only heartbeats)."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)

    def describe(self) -> str:
        return f"ignore heartbeats for {self.duration:g} s"


@attrs.frozen(repr=False)
class RejectRegistration(_Readable):
    """Registrations during ``[at, at + duration)`` are rejected with ``text`` (an ``error``
    frame, then the agent closes the socket): ``registration_rejected``."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)
    text: str = "Target device is not connected"

    def describe(self) -> str:
        return f"reject registrations for {self.duration:g} s ({self.text!r})"


@attrs.frozen(repr=False)
class RejectTasks(_Readable):
    """Tasks arriving during ``[at, at + duration)`` are refused with an ``error`` frame
    carrying ``text``: they end with `TaskRejected`."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)
    text: str = "Target device is not connected"

    def describe(self) -> str:
        return f"refuse tasks for {self.duration:g} s ({self.text!r})"


@attrs.frozen(repr=False)
class LoseTaskEnd(_Readable):
    """Tasks arriving during ``[at, at + duration)`` are acknowledged but never ended (their
    TASK_END is lost): they run into their timeout, or into the shutdown."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)

    def describe(self) -> str:
        return f"lose TASK_END of tasks arriving within {self.duration:g} s"


@attrs.frozen(repr=False)
class DelayTaskEnd(_Readable):
    """Tasks arriving during ``[at, at + duration)`` end ``delay`` seconds after they arrive,
    instead of after the device's ``task_duration`` (a slow device). A task's own
    ``TaskSubmission.duration`` still wins."""

    at: float = attrs.field(validator=_at)
    duration: float = attrs.field(validator=_positive)
    delay: float = attrs.field(validator=_at)

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

    at: float = attrs.field(validator=_at)
    device: str
    force: bool = False

    def describe(self) -> str:
        return "the user disconnects it" + (" (force)" if self.force else "")


@attrs.frozen(repr=False)
class Connect(_Readable):
    """At ``at``, the user connects ``device`` (`Supervisor.connect`): at once, cutting a
    backoff short; after a give-up, with the attempt count started afresh."""

    at: float = attrs.field(validator=_at)
    device: str

    def describe(self) -> str:
        return "the user connects it"


@attrs.frozen(repr=False)
class CancelTask(_Readable):
    """At ``at``, the caller of ``task_id`` gives up on it (`Supervisor.cancel_task`): a
    queued task is withdrawn; a running one ends with `TaskCancelled` at once, and its device
    stays busy until its TASK_END."""

    at: float = attrs.field(validator=_at)
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

    at: float = attrs.field(validator=_at)
    device: str
    task_id: str
    priority: int = 0
    delivery: Delivery = attrs.field(default=Delivery.AT_MOST_ONCE, converter=_to_delivery)
    duration: float | None = attrs.field(default=None, validator=_optional_at)
    fails: bool = False
    timeout: float = attrs.field(default=1000.0, validator=_positive)

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


# --------------------------------------------------------------------------- schedules


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


@attrs.frozen(repr=False)
class DeviceSchedule(_Readable):
    """One device of a scenario: its faults and its agent's defaults.

    Arguments:
        device_id: the device's id (the agent serves only this device).
        faults: the faults, in any order.
        task_duration: how long a task runs on this device unless told otherwise.
        max_retries: the device's own ``max_retries`` (`Supervisor.add_device`); None
            takes the policy's.
        reorder_replies: the agent answers frames after small random delays, out of order,
            as real servers do (seeded from the scenario's seed).
    """

    device_id: str
    faults: tuple[Fault, ...] = attrs.field(default=(), converter=_tuple)
    task_duration: float = attrs.field(default=1.0, validator=_at)
    max_retries: int | None = None
    reorder_replies: bool = False

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.device_id, str) or not self.device_id:
            raise ConfigurationError(f"device_id must be a non-empty string: {self.device_id!r}")
        if self.max_retries is not None and (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise ConfigurationError(f"max_retries must be an int >= 0 or None: {self!r}")


@attrs.frozen
class Step:
    """One thing the harness does at one instant: a window opens or closes, an instant fault
    happens, or a task is submitted. ``what`` is the fault or the `TaskSubmission`."""

    at: float
    device_id: str
    kind: str  # "start", "end", "instant", "submit", "action"
    what: Fault | TaskSubmission | Action


@attrs.frozen(repr=False)
class FaultSchedule(_Readable):
    """A whole scenario: the devices with their faults, and the task submissions.

    >>> schedule = FaultSchedule(
    ...     devices=[DeviceSchedule("d0", faults=[DropConnection(at=2.0)])],
    ...     tasks=[TaskSubmission(at=1.0, device="d0", task_id="t0", duration=3.0)],
    ... )
    >>> print(schedule.describe())
      t=0       d0: connect
      t=1       d0: submit 't0', runs 3 s
      t=2       d0: drop the connection
      t=42      leave the supervisor block

    Arguments:
        devices: the devices, each connected at the start of the scenario.
        tasks: task submissions, each naming its device; task ids must be unique.
        actions: what the user does meanwhile: `Disconnect`, `Connect`, `CancelTask`.
        settle: how long the scenario goes on after the last fault or submission, before
            the supervisor's block is left (time for backoffs, give-ups and tasks to end).
    """

    devices: tuple[DeviceSchedule, ...] = attrs.field(converter=_tuple)
    tasks: tuple[TaskSubmission, ...] = attrs.field(default=(), converter=_tuple)
    actions: tuple[Action, ...] = attrs.field(default=(), converter=_tuple)
    settle: float = attrs.field(default=40.0, validator=_at)

    def __attrs_post_init__(self) -> None:
        ids = [d.device_id for d in self.devices]
        if not ids:
            raise ConfigurationError("a FaultSchedule needs at least one device")
        if len(set(ids)) != len(ids):
            raise ConfigurationError(f"device ids must be unique, got {ids}")
        task_ids = [t.task_id for t in self.tasks]
        if len(set(task_ids)) != len(task_ids):
            raise ConfigurationError(f"task ids must be unique, got {task_ids}")
        for task in self.tasks:
            if task.device not in ids:
                raise ConfigurationError(f"{task!r} names an unknown device")
        for action in self.actions:
            if isinstance(action, CancelTask):
                if action.task_id not in task_ids:
                    raise ConfigurationError(f"{action!r} names an unknown task")
            elif action.device not in ids:
                raise ConfigurationError(f"{action!r} names an unknown device")

    def device_of(self, action: Action) -> str:
        """The device ``action`` is about."""
        if isinstance(action, CancelTask):
            return self.task(action.task_id).device
        return action.device

    @property
    def device_ids(self) -> tuple[str, ...]:
        return tuple(d.device_id for d in self.devices)

    def device(self, device_id: str) -> DeviceSchedule:
        for device in self.devices:
            if device.device_id == device_id:
                return device
        raise KeyError(device_id)

    def task(self, task_id: str) -> TaskSubmission:
        for task in self.tasks:
            if task.task_id == task_id:
                return task
        raise KeyError(task_id)

    @property
    def last_event_at(self) -> float:
        """When the last fault stops acting or the last task is submitted."""
        ends = [fault_end(f) for d in self.devices for f in d.faults]
        ends += [t.at for t in self.tasks]
        ends += [a.at for a in self.actions]
        return max(ends, default=0.0)

    @property
    def run_until(self) -> float:
        """When the scenario leaves the supervisor's block, from its start."""
        return self.last_event_at + self.settle

    @property
    def fault_count(self) -> int:
        return sum(len(d.faults) for d in self.devices)

    def steps(self) -> list[Step]:
        """Everything the harness does, in the order it does it: by time; at one instant,
        windows close before others open, then instant faults, then submissions, then user
        actions, each in the order of the schedule."""
        steps: list[tuple[float, int, int, Step]] = []
        n = 0
        for device in self.devices:
            for fault in device.faults:
                if isinstance(fault, _WINDOWS):
                    end = fault.at + fault.duration
                    steps.append((fault.at, 1, n, Step(fault.at, device.device_id, "start", fault)))
                    steps.append((end, 0, n, Step(end, device.device_id, "end", fault)))
                else:
                    steps.append(
                        (fault.at, 2, n, Step(fault.at, device.device_id, "instant", fault))
                    )
                n += 1
        for task in self.tasks:
            steps.append((task.at, 3, n, Step(task.at, task.device, "submit", task)))
            n += 1
        for action in self.actions:
            step = Step(action.at, self.device_of(action), "action", action)
            steps.append((action.at, 4, n, step))
            n += 1
        steps.sort(key=lambda s: s[:3])
        return [s[3] for s in steps]

    def describe(self) -> str:
        """The scenario as a timeline, one line per step."""
        lines = []
        for device in self.devices:
            notes = []
            if device.task_duration != 1.0:
                notes.append(f"tasks run {device.task_duration:g} s")
            if device.max_retries is not None:
                notes.append(f"max_retries {device.max_retries}")
            if device.reorder_replies:
                notes.append("replies reordered")
            extra = f" ({', '.join(notes)})" if notes else ""
            lines.append(f"  t={0.0:<7g} {device.device_id}: connect{extra}")
        for step in self.steps():
            what = step.what
            if step.kind == "end":
                text = f"end of: {what.describe()} (from t={what.at:g})"
            else:
                text = what.describe()
            lines.append(f"  t={step.at:<7g} {step.device_id}: {text}")
        lines.append(f"  t={self.run_until:<7g} leave the supervisor block")
        return "\n".join(lines)


def schedule_of(
    devices: Sequence[str] | Sequence[DeviceSchedule],
    tasks: Iterable[TaskSubmission] = (),
    **kwargs: Any,
) -> FaultSchedule:
    """A `FaultSchedule` from bare device ids (no faults) or `DeviceSchedule` values."""
    return FaultSchedule(
        devices=[d if isinstance(d, DeviceSchedule) else DeviceSchedule(d) for d in devices],
        tasks=tasks,
        **kwargs,
    )
