"""The fault-schedule model: what goes wrong, on which device, and when.

Rules of this file:
- Plain values. A `FaultSchedule` is a frozen description of a scenario: no Trio, no agents,
  no randomness. `galaxy_actors.testing.run_scenario` plays it; the Hypothesis strategies in
  `galaxy_actors.testing.strategies` draw it; a shrunk failure prints it.
- Reprs are for people first: fields left at their defaults are not shown, and what is shown is
  valid Python that pastes back into a regression test (``from galaxy_actors.testing import *``
  and ``from galaxy_actors import Delivery`` are all it needs).

Theory of operation. Every device gets its own simulated agent. A schedule holds, per device,
the faults its agent plays, and the task submissions and user actions interleaved with them
in time; each submission or action names its device. Windows of one kind may overlap; the
behaviour stays switched while any of them is open. `FaultSchedule.steps` puts all of it in
the order the harness plays it. The faults, actions and submissions themselves, and the
readable reprs and validators the schedules share, are in ``_schedule_items.py`` (and
importable from here).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from .._sansio._checks import non_negative_field
from .._sansio._errors import ConfigurationError
from ._schedule_items import _WINDOWS, _Readable, fault_end
from ._schedule_items import SIMULATED_TASK_ERROR as SIMULATED_TASK_ERROR
from ._schedule_items import Action as Action
from ._schedule_items import CancelTask as CancelTask
from ._schedule_items import Connect as Connect
from ._schedule_items import DelayTaskEnd as DelayTaskEnd
from ._schedule_items import Disconnect as Disconnect
from ._schedule_items import DropConnection as DropConnection
from ._schedule_items import Fault as Fault
from ._schedule_items import LoseTaskEnd as LoseTaskEnd
from ._schedule_items import MalformedFrame as MalformedFrame
from ._schedule_items import RefuseConnections as RefuseConnections
from ._schedule_items import RejectRegistration as RejectRegistration
from ._schedule_items import RejectTasks as RejectTasks
from ._schedule_items import StaleTaskEnd as StaleTaskEnd
from ._schedule_items import StallHeartbeats as StallHeartbeats
from ._schedule_items import TaskSubmission as TaskSubmission

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
    task_duration: float = attrs.field(default=1.0, validator=non_negative_field)
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
    settle: float = attrs.field(default=40.0, validator=non_negative_field)

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
