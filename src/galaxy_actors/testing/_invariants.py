"""The invariants a scenario must keep, checked on its `Trace` alone.

`check_invariants` does not trust the supervisor's bookkeeping: task order is rebuilt from
the wire, and the restart decisions from `PolicyModel`, the restart policy's documented
behaviour written out a second time, independently of `RestartPolicy.decide`.

Invariants 4 and 5, with `PolicyModel`, are checked in `_restart_invariants`; 8 to 11
(bad frames, isolation, settlement, structure) in `_connection_invariants`.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from .._actors._events import TaskEnded
from .._actors._task import Delivery
from .._sansio._policy import RestartPolicy
from .._sansio._status import ALLOWED_TRANSITIONS, DeviceStatus
from ._connection_invariants import check_connection_invariants
from ._report import scenario_report
from ._restart_invariants import _check_restarts
from ._trace import TaskRecord, Trace
from ._violations import INVARIANTS, Violation

_FINAL_AT_LEAST_ONCE: Final = frozenset(
    {"completed", "failed", "TaskTimeout", "TaskRejected", "TaskCancelled", "DeviceUnavailable"}
)


# =========================================================================== the checks


class InvariantViolation(AssertionError):
    """A scenario broke an invariant. ``violations`` holds all that were found (the first is
    ``invariant`` and ``evidence``); the message ends with the scenario and a line that plays
    it again (inside a Hypothesis example, `run_scenario` noted them already: Hypothesis
    prints them with the failing example)."""

    def __init__(self, violations: Sequence[Violation], trace: Trace) -> None:
        self.violations = tuple(violations)
        self.trace = trace
        first = self.violations[0]
        self.invariant = first.invariant
        self.evidence = first.evidence
        lines = [str(first)]
        lines += [f"  and {v}" for v in self.violations[1:6]]
        if len(self.violations) > 6:
            lines.append(f"  and {len(self.violations) - 6} more")
        if trace.noted:
            # Hypothesis prints the whole report with the failing example: not twice.
            lines.append("scenario: its timeline is in the note below")
            lines.append(f"replay: {trace.replay()}")
        else:
            lines.append(scenario_report(trace))
        super().__init__("\n".join(lines))

    @property
    def invariants(self) -> set[int]:
        return {v.invariant for v in self.violations}


def check_invariants(
    trace: Trace, policy: RestartPolicy | None = None, *, only: Iterable[int] | None = None
) -> None:
    """Raise `InvariantViolation` if ``trace`` breaks any of the `INVARIANTS` (or those
    numbered in ``only``). ``policy`` defaults to the one the scenario ran with; its
    settings, read as documented on `RestartPolicy`, say what the delays and give-ups must
    be."""
    violations = find_violations(trace, policy, only=only)
    if violations:
        raise InvariantViolation(violations, trace)


def find_violations(
    trace: Trace, policy: RestartPolicy | None = None, *, only: Iterable[int] | None = None
) -> list[Violation]:
    """Every broken invariant in ``trace``, in the order of their numbers."""
    wanted = set(INVARIANTS if only is None else only)
    policy = trace.policy if policy is None else policy
    found: list[Violation] = []
    if wanted & {1, 2}:
        found += [v for v in _check_outcomes(trace) if v.invariant in wanted]
    if 3 in wanted:
        found += _check_order(trace)
    if wanted & {4, 5}:
        found += [v for v in _check_restarts(trace, policy) if v.invariant in wanted]
    if 6 in wanted:
        found += _check_transitions(trace)
    if 7 in wanted:
        found += _check_clean_exit(trace)
    if wanted & {8, 9, 10, 11}:
        found += check_connection_invariants(trace, wanted)
    return sorted(found, key=lambda v: v.invariant)


# --------------------------------------------------------------------------- 1 and 2


def _check_outcomes(trace: Trace) -> list[Violation]:
    found: list[Violation] = []
    ended: dict[str, list[TaskEnded]] = defaultdict(list)
    for event in trace.events:
        if isinstance(event, TaskEnded):
            ended[event.task_id].append(event)
    sent_by_agents: Counter[str] = Counter(
        frame.session_id
        for frames in trace.agent_frames.values()
        for frame in frames
        if frame.type == "task" and frame.session_id is not None
    )
    # What the supervisor's end of the wire saw, per task.
    sent_by_client: Counter[str] = Counter()
    ends_received: Counter[str] = Counter()
    errors_after_send: set[str] = set()
    sends_after_end: list[str] = []
    in_flight: dict[tuple[str, int], str | None] = {}
    finished: set[str] = set()
    for record in trace.wire:
        key = (record.device_id, record.connection)
        sid = record.session_id
        if record.kind == "sent" and record.type == "task" and sid is not None:
            sent_by_client[sid] += 1
            if sid in finished:
                sends_after_end.append(sid)
            in_flight[key] = sid
        elif record.kind == "received" and record.type == "task_end" and sid is not None:
            ends_received[sid] += 1
            if in_flight.get(key) == sid:
                # Only a TASK_END on the task's own connection ends it: a stale one
                # (`StaleTaskEnd`) is dropped, and an at-least-once task runs again.
                finished.add(sid)
                in_flight[key] = None
        elif record.kind == "received" and record.type == "error":
            current = in_flight.get(key)
            if current is not None:
                errors_after_send.add(current)

    for task in trace.tasks:
        sub = task.submission
        tid, sid, device = sub.task_id, task.session_id, sub.device
        events = ended.get(tid, [])
        sends = sent_by_agents[sid]
        if task.refused is not None:
            if events or sends:
                found.append(
                    Violation(
                        1,
                        device,
                        f"task {tid!r} was refused at submit ({task.refused}) yet "
                        f"{len(events)} outcome event(s) and {sends} TASK frame(s) followed",
                    )
                )
            continue
        if task.outcome is None:
            found.append(
                Violation(1, device, f"task {tid!r} has no outcome after the block exited")
            )
            continue
        if len(events) != 1:
            shown = ", ".join(f"{e.outcome} at t={e.at:g}" for e in events) or "none"
            found.append(
                Violation(1, device, f"task {tid!r} has {len(events)} outcome events: {shown}")
            )
        elif events[0].outcome != task.outcome:
            found.append(
                Violation(
                    1,
                    device,
                    f"task {tid!r}: its handle says {task.outcome} but the event says "
                    f"{events[0].outcome}",
                )
            )
        if task.caller_saw != (task.outcome,):
            found.append(
                Violation(
                    1 if sub.delivery is Delivery.AT_MOST_ONCE else 2,
                    device,
                    f"task {tid!r} ended {task.outcome} but its caller saw {list(task.caller_saw)}",
                )
            )
        # The outcome must be backed by what happened on the wire.
        # (A frame written as its connection died may never reach the agent: the
        # supervisor's end of the wire is what its outcome must agree with.)
        why = _unsupported(task, sent_by_client[sid], ends_received[sid], sid in errors_after_send)
        if why is not None:
            found.append(Violation(1, device, f"task {tid!r} ended {task.outcome}, but {why}"))
        if sub.delivery is Delivery.AT_MOST_ONCE and sends > 1:
            found.append(
                Violation(2, device, f"at-most-once task {tid!r} reached its agent {sends} times")
            )
        if sub.delivery is Delivery.AT_LEAST_ONCE and task.outcome not in _FINAL_AT_LEAST_ONCE:
            found.append(
                Violation(
                    2,
                    device,
                    f"at-least-once task {tid!r} ended {task.outcome} ({task.detail}) instead "
                    "of being sent again",
                )
            )
        if sid in sends_after_end:
            found.append(
                Violation(2, device, f"task {tid!r} was sent again after its TASK_END arrived")
            )
    return found


def _unsupported(task: TaskRecord, sends: int, ends: int, errored: bool) -> str | None:
    outcome, sub = task.outcome, task.submission
    if outcome in ("completed", "failed"):
        if not ends:
            return "no TASK_END for it ever arrived"
        expected = "failed" if sub.fails else "completed"
        if outcome != expected:
            return f"its agent was told to end it {expected}"
    elif outcome in ("DeviceDisconnected", "TaskTimeout") and not sends:
        return "it was never sent"
    elif outcome == "TaskRejected" and not errored:
        return "no error frame arrived while it was on the device"
    elif outcome == "DeviceDisconnected" and sub.delivery is not Delivery.AT_MOST_ONCE:
        return "it was at-least-once"
    return None


# --------------------------------------------------------------------------- 3


def _check_order(trace: Trace) -> list[Violation]:
    found: list[Violation] = []
    tasks = {t.session_id: t for t in trace.tasks}
    ends_at = {t.session_id: _end_time(trace, t) for t in trace.tasks}
    _name = _namer(trace)
    # Later sends of each task, to tell a re-queued task (at-least-once) from a dropped one.
    send_seqs: dict[str, list[int]] = defaultdict(list)
    for record in trace.wire:
        if record.kind == "sent" and record.type == "task" and record.session_id is not None:
            send_seqs[record.session_id].append(record.seq)

    waiting: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    tail = itertools.count(1)
    head = itertools.count(-1, -1)
    in_flight: dict[tuple[str, int], str | None] = {}
    acked: dict[tuple[str, int], bool] = {}
    ended_on_wire: set[tuple[tuple[str, int], str]] = set()
    open_connection: dict[str, int | None] = {}

    for record in trace.wire:
        device = record.device_id
        key = (device, record.connection)
        sid = record.session_id
        kind = record.kind
        if kind == "submit" and sid in tasks:
            waiting[device][sid] = (tasks[sid].submission.priority, next(tail))
        elif kind in ("refused_task", "cancel") and sid is not None:
            waiting[device].pop(sid, None)  # refused, or withdrawn while queued
        elif kind == "disconnect":
            waiting[device].clear()  # a disconnect cancels the whole queue
        elif kind == "open":
            if open_connection.get(device) is not None:
                found.append(
                    Violation(
                        3,
                        device,
                        f"connection {record.connection} opened at t={record.at:g} while "
                        f"connection {open_connection[device]} was still open",
                    )
                )
            open_connection[device] = record.connection
        elif kind == "sent" and record.type == "task" and sid is not None:
            current = in_flight.get(key)
            if current is not None:
                found.append(
                    Violation(
                        3,
                        device,
                        f"{_name(sid)} was sent at t={record.at:g} while "
                        f"{_name(current)} was still on the device (no TASK_END yet)",
                    )
                )
            queue = {
                other: k
                for other, k in waiting[device].items()
                if ends_at.get(other) is None or ends_at[other] >= record.at  # type: ignore[operator]
            }
            if sid not in queue:
                found.append(
                    Violation(
                        3,
                        device,
                        f"{_name(sid)} was sent at t={record.at:g} without waiting to be sent",
                    )
                )
            else:
                first = min(queue, key=queue.__getitem__)
                if first != sid:
                    found.append(
                        Violation(
                            3,
                            device,
                            f"{_name(sid)} was sent at t={record.at:g} before "
                            f"{_name(first)}, which was queued ahead of it",
                        )
                    )
            waiting[device].pop(sid, None)
            in_flight[key] = sid
            acked[key] = False
        elif kind == "received" and sid is not None and sid == in_flight.get(key):
            if record.type == "heartbeat":
                acked[key] = True
            elif record.type == "task_end":
                ended_on_wire.add((key, sid))
                in_flight[key] = None
        elif kind == "received" and record.type == "error" and in_flight.get(key):
            if not acked.get(key):
                ended_on_wire.add((key, in_flight[key]))  # type: ignore[arg-type]
                in_flight[key] = None
        elif kind == "closed":
            if open_connection.get(device) == record.connection:
                open_connection[device] = None
            current = in_flight.pop(key, None)
            if current is not None and current in tasks:
                task = tasks[current]
                end = ends_at.get(current)
                again = any(seq > record.seq for seq in send_seqs[current])
                if task.submission.delivery is Delivery.AT_LEAST_ONCE and (
                    again or (end is not None and end > record.at)
                ):
                    waiting[device][current] = (task.submission.priority, next(head))
    return found


def _end_time(trace: Trace, task: TaskRecord) -> float | None:
    for event in trace.events:
        if isinstance(event, TaskEnded) and event.task_id == task.submission.task_id:
            return event.at
    return None


def _namer(trace: Trace) -> Callable[[str], str]:
    """Names tasks for evidence: id, priority, and place in the order of submission."""
    tasks = {t.session_id: t for t in trace.tasks}
    order = [r.session_id for r in trace.wire if r.kind == "submit"]

    def name(session_id: str) -> str:
        task = tasks.get(session_id)
        if task is None:
            return f"unknown session {session_id!r}"
        sub, n = task.submission, order.index(session_id) + 1
        return f"task {sub.task_id!r} (priority {sub.priority}, submission #{n} at t={sub.at:g})"

    return name


# --------------------------------------------------------------------------- 6 and 7


def _check_transitions(trace: Trace) -> list[Violation]:
    found = []
    status = {d: DeviceStatus.DISCONNECTED for d in trace.schedule.device_ids}
    for event in trace.status_changes():
        current = status.get(event.device_id)
        if current is None:
            continue
        if event.old is not current:
            found.append(
                Violation(
                    6,
                    event.device_id,
                    f"at t={event.at:g} a change {event.old} -> {event.new} came while the "
                    f"device was {current}",
                )
            )
        elif event.new not in ALLOWED_TRANSITIONS[event.old]:
            found.append(
                Violation(
                    6,
                    event.device_id,
                    f"at t={event.at:g} {event.old} -> {event.new} is not an allowed transition",
                )
            )
        status[event.device_id] = event.new
    return found


def _check_clean_exit(trace: Trace) -> list[Violation]:
    found = []
    if not trace.finished:
        found.append(Violation(7, None, "the supervisor block did not exit (virtual-time guard)"))
    found += [Violation(7, None, f"task left running: {name}") for name in trace.leftover_tasks]
    for device, count in trace.open_connections_after_exit.items():
        if count:
            found.append(Violation(7, device, f"its agent still has {count} open connection(s)"))
    opened = {(r.device_id, r.connection) for r in trace.wire if r.kind == "open"}
    closed = {(r.device_id, r.connection) for r in trace.wire if r.kind == "closed"}
    for device, number in sorted(opened - closed):
        found.append(Violation(7, device, f"connection {number} was never closed"))
    final = {d: DeviceStatus.DISCONNECTED for d in trace.schedule.device_ids}
    for event in trace.status_changes():
        final[event.device_id] = event.new
    for device, status in final.items():
        if status is not DeviceStatus.DISCONNECTED:
            found.append(Violation(7, device, f"left {status}, not disconnected"))
    for record in trace.wire:
        if record.at > trace.exit_at and record.kind in ("open", "sent"):
            found.append(
                Violation(7, record.device_id, f"{record.kind} at t={record.at:g} after the exit")
            )
    return found
