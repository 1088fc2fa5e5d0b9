"""Invariants 8 to 11: what one connection may carry, how soon tasks settle, and who owns
the device actors. Like the others, they read the `Trace` alone.

- 8, a healthy run is clean: only the faults in `DIRTY_FAULTS` put bad frames on the wire,
  so without them no `BadFrame` is published, and every task that ended with a result had
  been acknowledged first.
- 9, isolation: the TASK_END that gave a task its result came on the connection the task
  was last sent on, and was that task's own.
- 10, bounded settlement: after a disconnect or a give-up, every task of the device has its
  outcome within the bound stated in `INVARIANTS`.
- 11, structure: each device's actor is a task of the supervisor's own nursery.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Final

from .._actors._events import BadFrame, RestartsStopped, TaskEnded
from ._faults import MalformedFrame, StaleTaskEnd
from ._trace import TaskRecord, Trace, WireRecord
from ._violations import Violation

#: The faults whose frames a client must drop as bad: garbage, and the TASK_END of a task
#: sent on an earlier connection. With neither, a run has no bad frame. (Lost, late and
#: refused TASK_ENDs, stalls, drops, refusals and reordered replies produce none: they end
#: tasks and connections, each by a rule, not by a frame the client drops.)
DIRTY_FAULTS: Final = (MalformedFrame, StaleTaskEnd)

#: Closing an in-memory connection takes no virtual time: the bound adds nothing for it.
CLOSE_BOUND: Final = 0.0

_RESULTS: Final = frozenset({"completed", "failed"})


def check_connection_invariants(trace: Trace, wanted: set[int]) -> list[Violation]:
    """The violations of invariants 8 to 11 in ``trace`` (those in ``wanted``)."""
    found: list[Violation] = []
    if 8 in wanted:
        found += _check_clean(trace)
    if 9 in wanted:
        found += _check_isolation(trace)
    if 10 in wanted:
        found += _check_settlement(trace)
    if 11 in wanted:
        found += _check_structure(trace)
    return found


# --------------------------------------------------------------------------- 8


def healthy(trace: Trace) -> bool:
    """Whether ``trace``'s schedule injects nothing that legitimately puts a bad frame on
    the wire. Reordered replies do not: the agent acknowledges a task and ends it in one
    handler, in that order, and one task at a time is on a connection."""
    devices = trace.schedule.devices
    return not any(isinstance(f, DIRTY_FAULTS) for d in devices for f in d.faults)


def _check_clean(trace: Trace) -> list[Violation]:
    if not healthy(trace):
        return []
    t0 = trace.started_at
    found = [
        Violation(
            8,
            event.device_id,
            f"a {event.kind} bad frame at t={event.at - t0:g} ({event.detail}) in a run "
            "with no malformed or stale frame",
        )
        for event in trace.events_of(BadFrame)
    ]
    for task in trace.tasks:
        if task.outcome in _RESULTS and task.accepted_at is None:
            ended = "?" if task.ended_at is None else f"{task.ended_at - t0:g}"
            found.append(
                Violation(
                    8,
                    task.submission.device,
                    f"task {task.submission.task_id!r} ended {task.outcome} at t={ended} "
                    "without having been acknowledged (timings.accepted_at is None)",
                )
            )
    return found


# --------------------------------------------------------------------------- 9


def _check_isolation(trace: Trace) -> list[Violation]:
    found: list[Violation] = []
    t0 = trace.started_at
    name = _task_namer(trace)
    sends: dict[str, list[WireRecord]] = defaultdict(list)
    ends: dict[tuple[str, float], list[WireRecord]] = defaultdict(list)
    for record in trace.wire:
        if record.session_id is None:
            continue
        if record.kind == "sent" and record.type == "task":
            sends[record.session_id].append(record)
        elif record.kind == "received" and record.type == "task_end":
            ends[(record.device_id, record.at)].append(record)
    for task in trace.tasks:
        if task.outcome not in _RESULTS or task.ended_at is None:
            continue
        device, sid, ended = task.submission.device, task.session_id, task.ended_at
        earlier = [r for r in sends[sid] if r.at <= ended]
        if not earlier:
            continue  # invariant 1: a result for a task never sent
        last = earlier[-1]
        # The engine ends a task at the instant its TASK_END is read: the frame that ended it
        # is one of those this device received at that instant.
        arrived = [r for r in ends[(device, ended)] if r.seq > last.seq]
        if any(r.session_id == sid and r.connection == last.connection for r in arrived):
            continue
        seen = "; ".join(
            f"the TASK_END of {name(r.session_id)} on connection {r.connection}"
            for r in arrived
            if r.session_id is not None
        )
        found.append(
            Violation(
                9,
                device,
                f"task {task.submission.task_id!r} ended {task.outcome} at t={ended - t0:g}, "
                f"but it was last sent on connection {last.connection} (t={last.at - t0:g}) "
                f"and no TASK_END of its own arrived there then; what arrived: "
                f"{seen or 'nothing'}",
            )
        )
    return found


def _task_namer(trace: Trace) -> Callable[[str], str]:
    by_session = {t.session_id: t.submission.task_id for t in trace.tasks}

    def name(session_id: str) -> str:
        task_id = by_session.get(session_id)
        return f"task {task_id!r}" if task_id is not None else f"session {session_id!r}"

    return name


# --------------------------------------------------------------------------- 10


def _check_settlement(trace: Trace) -> list[Violation]:
    found: list[Violation] = []
    t0 = trace.started_at
    grace = trace.settings.supervisor.disconnect_grace
    ends: dict[str, float] = {}
    for event in trace.events_of(TaskEnded):
        ends.setdefault(event.task_id, event.at)
    submitted = {r.session_id: r for r in trace.wire if r.kind == "submit"}
    # The user's disconnects: queued tasks end at once, the running one within the grace
    # (none with force), and then the connection closes.
    for record in trace.wire:
        if record.kind != "disconnect":
            continue
        force = record.detail == "force"
        bound = record.at + (0.0 if force else grace) + CLOSE_BOUND
        what = "a forced disconnect" if force else f"a disconnect (grace {grace:g} s)"
        for task in _pending(trace, record.device_id, record.seq, record.at, submitted, ends):
            found += _late(task, ends, bound, f"{what} at t={record.at - t0:g}", t0)
    # Give-ups: every task of the device ends as the give-up takes effect, once the dying
    # connection has closed.
    for event in trace.events_of(RestartsStopped):
        # A task submitted after the user connected the device again is not the give-up's.
        connect = next(
            (
                r.seq
                for r in trace.wire
                if r.kind == "connect" and r.device_id == event.device_id and r.at >= event.at
            ),
            None,
        )
        bound = event.at + CLOSE_BOUND
        for task in _pending(trace, event.device_id, connect, event.at, submitted, ends):
            found += _late(task, ends, bound, f"the give-up at t={event.at - t0:g}", t0)
    return found


def _pending(
    trace: Trace,
    device: str,
    before_seq: int | None,
    at: float,
    submitted: dict[str | None, WireRecord],
    ends: dict[str, float],
) -> list[TaskRecord]:
    """``device``'s tasks submitted (before ``before_seq``, if given) and accepted, with no
    outcome before ``at``."""
    pending = []
    for task in trace.tasks:
        record = submitted.get(task.session_id)
        if task.submission.device != device or task.refused is not None or record is None:
            continue
        if record.at > at or (before_seq is not None and record.seq > before_seq):
            continue
        end = ends.get(task.submission.task_id)
        if end is None or end >= at:
            pending.append(task)
    return pending


def _late(
    task: TaskRecord, ends: dict[str, float], bound: float, after: str, t0: float
) -> list[Violation]:
    end = ends.get(task.submission.task_id)
    if end is not None and end <= bound:
        return []
    when = "never" if end is None else f"at t={end - t0:g}"
    return [
        Violation(
            10,
            task.submission.device,
            f"task {task.submission.task_id!r} got its outcome ({task.outcome}) {when}, "
            f"after {after}; it was due by t={bound - t0:g}",
        )
    ]


# --------------------------------------------------------------------------- 11


def _check_structure(trace: Trace) -> list[Violation]:
    found: list[Violation] = []
    t0 = trace.started_at
    for device in trace.schedule.device_ids:
        records = [r for r in trace.actor_tasks if r.device_id == device]
        if not any(r.moment == "start" for r in records):
            found.append(Violation(11, device, "no actor task was recorded at its start"))
        if trace.finished and trace.stalled is None and not any(r.moment == "end" for r in records):
            found.append(Violation(11, device, "no actor task was left at the block's end"))
        for r in records:
            if not r.in_supervisor_nursery:
                task = "no task" if r.task is None else f"task {r.task!r}"
                moment = "at its start" if r.moment == "start" else "at the block's end"
                found.append(
                    Violation(
                        11,
                        device,
                        f"{moment} (t={r.at - t0:g}) its actor was {task}, a child of "
                        f"{r.parent}, not of the supervisor's nursery",
                    )
                )
    return found
