"""What a scenario run records: the `Trace` that `check_invariants` reads.

Records only: nothing here runs a scenario or judges one (`_harness.py` and
`_invariants.py` do), so both sides share one vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .._actors._events import (
    Event,
    StatusChanged,
)
from .._actors._settings import Settings
from .._sansio._policy import Jitter, RestartPolicy
from .._sansio._status import DeviceStatus
from ._faults import (
    FaultSchedule,
    TaskSubmission,
)

# =========================================================================== the trace


#: The supervisor's `Settings` in a scenario: short, so scenarios stay small.
SCENARIO_SUPERVISOR = Settings(
    task_name="scenario",
    heartbeat_interval=10.0,
    heartbeat_timeout=2.0,
    registration_timeout=5.0,
    device_info_timeout=5.0,
    send_timeout=5.0,
    disconnect_grace=3.0,
    shutdown_grace=2.0,
)


@attrs.frozen(kw_only=True)
class ScenarioSettings:
    """A scenario's settings: the supervisor's (``supervisor``, a `Settings`; default
    `SCENARIO_SUPERVISOR`), and the limits past which a scenario that makes no progress in
    virtual time fails with `ScenarioStalled` instead of hanging: connection attempts by
    one device, and scheduler steps, at one virtual instant.

    >>> ScenarioSettings(supervisor=attrs.evolve(SCENARIO_SUPERVISOR, heartbeat_timeout=1.0))
    ... # doctest: +SKIP
    """

    supervisor: Settings = SCENARIO_SUPERVISOR
    max_attempts_per_instant: int = 1000
    max_steps_per_instant: int = 100_000


@attrs.frozen
class WireRecord:
    """One thing seen at the supervisor's end of the wire, or one submission.

    ``kind`` is one of: ``attempt`` (the supervisor asks for a connection), ``open`` (the
    attempt connected), ``refused`` (it did not; ``detail`` says why), ``sent`` and
    ``received`` (a frame; ``type`` and ``session_id`` decoded, ``type`` None for a frame that
    is not AIP), ``closed`` (the supervisor's end of connection ``connection`` closed),
    ``submit`` (the scenario is about to submit ``session_id``'s task) and ``refused_task``
    (``submit`` raised ``detail``). ``connection`` numbers a device's connections 1, 2, ...
    as its agent numbers them.
    """

    seq: int
    at: float
    device_id: str
    kind: str
    connection: int = 0
    type: str | None = None
    session_id: str | None = None
    detail: str | None = None


@attrs.frozen
class AgentFrame:
    """A frame as the device's agent received it (from `SimulatedAgent.received`)."""

    at: float
    connection: int
    type: str | None
    session_id: str | None


@attrs.frozen
class LogLine:
    """A log record of the library's, emitted while a scenario ran (``at``: virtual time
    from the scenario's start; None if it came from outside Trio)."""

    at: float | None
    level: str
    logger: str
    message: str

    def __str__(self) -> str:
        at = "?" if self.at is None else f"{self.at:g}"
        return f"t={at:<8} {self.level} {self.logger}: {self.message}"


@attrs.frozen
class TaskRecord:
    """What became of one `TaskSubmission`.

    ``refused`` names the error ``submit`` raised (the task then does not exist);
    otherwise ``outcome`` is "completed", "failed" or the `TaskError` class name (None if it
    never ended), ``caller_saw`` what the awaiting caller got, each time it got something.
    """

    submission: TaskSubmission
    session_id: str
    refused: str | None
    outcome: str | None
    detail: str | None
    caller_saw: tuple[str, ...]
    #: For a task that ended with a result ("completed" or "failed"): its
    #: `ExecutionResult.timings`, when it was last sent, acknowledged (None: never) and
    #: ended. None for any other outcome.
    sent_at: float | None = None
    accepted_at: float | None = None
    ended_at: float | None = None


@attrs.frozen
class ActorTask:
    """Where one device's actor task ran, as the harness saw it: right after
    `Supervisor.add_device` (``moment`` "start": a task it spawned) or as the supervisor's
    block was about to be left ("end": the task seen at the start, if still alive).

    ``task`` is the task's name (None: add_device spawned no task); ``parent`` says whose
    nursery it is a child of; ``in_supervisor_nursery`` whether that nursery is the one
    the supervisor's block opened (and, at the end, whether the task is still among its
    ``child_tasks``)."""

    device_id: str
    at: float
    moment: str
    task: str | None
    parent: str
    in_supervisor_nursery: bool


@attrs.frozen
class Trace:
    """Everything a scenario did, for `check_invariants` and for tests' own assertions.

    Times are `trio.current_time()` values; ``started_at`` is the scenario's time zero (0.0
    under `run_scenario`). Equal seeds give equal traces when ``deterministic`` (see
    docs/testing.md, "Replaying a failure").
    """

    schedule: FaultSchedule
    policy: RestartPolicy
    seed: int
    settings: ScenarioSettings
    started_at: float
    exit_at: float
    #: The supervisor's events, in the order it published them.
    events: tuple[Event, ...]
    #: The supervisor's end of the wire, and the submissions, in order.
    wire: tuple[WireRecord, ...]
    #: Per device, every frame its agent received.
    agent_frames: Mapping[str, tuple[AgentFrame, ...]]
    tasks: tuple[TaskRecord, ...]
    #: Tasks spawned inside the supervisor block still alive when it exited.
    leftover_tasks: tuple[str, ...]
    #: Per device, connections its agent still held open once the block had exited.
    open_connections_after_exit: Mapping[str, int]
    #: False when the scenario hit its virtual-time guard instead of ending.
    finished: bool = True
    #: Where each device's actor task ran (invariant 11).
    actor_tasks: tuple[ActorTask, ...] = ()
    #: Why the scenario was stopped before its end: it made no progress in virtual time
    #: (`run_scenario` then raises `ScenarioStalled` with this trace).
    stalled: str | None = None
    #: Why Trio's scheduling order may not be reproducible (None: it is, the same arguments
    #: give the same trace).
    nondeterminism: str | None = None
    #: The library's log records while the scenario ran: kept here rather than passed on
    #: to the root logger's handlers (a property run logs thousands).
    log: tuple[LogLine, ...] = ()
    #: True when the scenario's report was given to Hypothesis's `note` (it prints with a
    #: failing example, whichever assertion failed).
    noted: bool = attrs.field(default=False, eq=False, repr=False)

    @property
    def deterministic(self) -> bool:
        """Whether the same arguments are known to give the same trace again."""
        return self.nondeterminism is None

    def status_changes(self, device_id: str | None = None) -> list[StatusChanged]:
        return [
            e
            for e in self.events
            if isinstance(e, StatusChanged) and device_id in (None, e.device_id)
        ]

    def attempts(self, device_id: str) -> list[float]:
        """When ``device_id`` started connection attempts (its CONNECTING times)."""
        return [e.at for e in self.status_changes(device_id) if e.new is DeviceStatus.CONNECTING]

    def task(self, task_id: str) -> TaskRecord:
        for record in self.tasks:
            if record.submission.task_id == task_id:
                return record
        raise KeyError(task_id)

    def events_of(self, kind: type[Any], device_id: str | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and device_id in (None, getattr(e, "device_id", None))
        ]

    def replay(self) -> str:
        """A line of Python that plays this scenario again."""
        policy = _policy_repr(self.policy)
        return f"run_scenario({self.schedule!r}, {policy}, seed={self.seed!r})"

    def describe(self) -> str:
        """What happened, one line per event, status change and task frame."""
        t0 = self.started_at
        lines = []
        for event in self.events:
            at = getattr(event, "at", 0.0) - t0
            lines.append(f"  t={at:<8g} {_event_text(event)}")
        for record in self.wire:
            if record.kind in ("sent", "received") and record.type in ("task", "task_end"):
                arrow = "->" if record.kind == "sent" else "<-"
                lines.append(
                    f"  t={record.at - t0:<8g} {record.device_id}#{record.connection} "
                    f"{arrow} {record.type} {record.session_id}"
                )
        return "\n".join(lines)


def _policy_repr(policy: RestartPolicy) -> str:
    """``policy`` as Python that builds it: only the settings that differ from the defaults,
    enums by name, a ``per_reason`` hook by its name."""
    shown = []
    for field in attrs.fields(type(policy)):
        value = getattr(policy, field.name)
        if not field.init or value == field.default:
            continue
        if isinstance(value, Jitter):
            text = f"Jitter.{value.name}"
        elif callable(value):
            text = getattr(value, "__qualname__", repr(value))
        else:
            text = repr(value)
        shown.append(f"{field.name}={text}")
    return f"{type(policy).__name__}({', '.join(shown)})"


def _event_text(event: Event) -> str:
    fields = attrs.asdict(event, recurse=False)
    fields.pop("at", None)
    device = fields.pop("device_id", None)
    shown = ", ".join(f"{k}={v!s}" for k, v in fields.items())
    return f"{device}: {type(event).__name__}({shown})"
