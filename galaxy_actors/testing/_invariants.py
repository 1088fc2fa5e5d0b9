"""The invariants a scenario must keep, checked on its `Trace` alone.

`check_invariants` does not trust the supervisor's bookkeeping: task order is rebuilt from
the wire, and the restart decisions from `PolicyModel`, the restart policy's documented
behaviour written out a second time, independently of `RestartPolicy.decide`.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final

import attrs

from .._events import (
    ConnectionFailed,
    GaveUp,
    RestartScheduled,
    StatusChanged,
    TaskEnded,
)
from .._policy import Decision, FailureReason, GiveUp, Jitter, RandomSource, Restart, RestartPolicy
from .._status import ALLOWED_TRANSITIONS, DeviceStatus
from .._task import Delivery
from ._trace import TaskRecord, Trace, _event_text, _policy_repr

#: The invariants `check_invariants` proves, by number (those of the project's issue).
INVARIANTS: Final[Mapping[int, str]] = {
    1: "every submitted task ends with exactly one outcome",
    2: "delivery: at-most-once never sends a task twice; at-least-once ends each task once",
    3: "per device, tasks are sent in (priority, submission) order, one at a time",
    4: "the delay before each reconnection attempt is the policy's, to the virtual clock",
    5: "a device gives up exactly after max_retries failed attempts; success resets the count",
    6: "statuses change only along ALLOWED_TRANSITIONS",
    7: "nothing is left after the supervisor block exits",
}

_FINAL_AT_LEAST_ONCE: Final = frozenset(
    {"completed", "failed", "TaskTimeout", "TaskRejected", "TaskCancelled", "DeviceUnavailable"}
)


# =========================================================================== the checks


@attrs.frozen
class Violation:
    """One invariant broken: which one, on which device, and the evidence."""

    invariant: int
    device_id: str | None
    evidence: str

    def __str__(self) -> str:
        where = f" on device {self.device_id!r}" if self.device_id is not None else ""
        what = INVARIANTS[self.invariant]
        return f"invariant {self.invariant} ({what}) broken{where}: {self.evidence}"


class InvariantViolation(AssertionError):
    """A scenario broke an invariant. ``violations`` holds all that were found (the first is
    ``invariant`` and ``evidence``); the message ends with the scenario and a line that plays
    it again."""

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
        lines.append(f"scenario (seed={trace.seed}):")
        lines.append(trace.schedule.describe())
        lines.append(f"policy: {_policy_repr(trace.policy)}")
        lines.append(f"replay: {trace.replay()}")
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
            finished.add(sid)
            if in_flight.get(key) == sid:
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


# --------------------------------------------------------------------------- 4 and 5


@attrs.define
class PolicyModel:
    """What `RestartPolicy` promises, written out a second time, for one device.

    Fed the device's failures and successful connections in order, it says what each
    decision must be. It shares the random source of every other device's model, as the
    devices of one supervisor share its ``rng``. A policy that keeps these promises matches
    it exactly, jitter included, given the same seed.
    """

    policy: RestartPolicy
    rng: RandomSource
    max_retries: int
    attempts: int = 0
    last_delay: float | None = None
    up_since: float | None = None
    restart_times: list[float] = attrs.Factory(list)
    #: The interval the last jittered delay was drawn from.
    last_bounds: tuple[float, float] | None = None

    def connected(self, now: float) -> None:
        """A connection came up (the device became IDLE) at ``now``."""
        if self.policy.reset_after is None:
            self.attempts, self.last_delay = 0, None
        self.up_since = now

    def failed(self, reason: FailureReason, now: float) -> Decision:
        """A connection or attempt failed at ``now``: the decision the policy must take."""
        policy = self.policy
        if (
            policy.reset_after is not None
            and self.up_since is not None
            and now - self.up_since >= policy.reset_after
        ):
            self.attempts, self.last_delay = 0, None
        self.up_since = None
        decision = self._decide(reason, now)
        if isinstance(decision, Restart):
            self.attempts += 1
            self.last_delay = decision.delay
            if policy.intensity is not None:
                period = policy.intensity[1]
                self.restart_times = [t for t in self.restart_times if now - t < period]
                self.restart_times.append(now)
        return decision

    def _decide(self, reason: FailureReason, now: float) -> Decision:
        policy = self.policy
        if policy.per_reason is not None:
            override = policy.per_reason(reason, self.attempts)
            if override is not None:
                return override
        if self.attempts >= self.max_retries:
            return GiveUp(f"exceeded max retries ({self.max_retries})")
        if policy.intensity is not None:
            limit, period = policy.intensity
            if sum(1 for t in self.restart_times if now - t < period) >= limit:
                return GiveUp(f"more than {limit} restarts within {period:g} s")
        low, high = self.last_bounds = self.bounds()
        if low == high:
            return Restart(low)
        return Restart(low + (high - low) * self.rng.random())

    def bounds(self) -> tuple[float, float]:
        """The interval the next delay must fall in."""
        policy = self.policy
        base = policy.reconnect_delay * 2.0**self.attempts
        if policy.max_delay is not None:
            base = min(base, policy.max_delay)
        if policy.jitter is Jitter.NONE:
            return base, base
        if policy.jitter is Jitter.FULL:
            return 0.0, base
        if policy.jitter is Jitter.EQUAL:
            return base / 2, base
        low = policy.reconnect_delay
        previous = self.last_delay if self.last_delay is not None else low
        high = max(low, 3 * previous)
        if policy.max_delay is not None:
            low, high = min(low, policy.max_delay), min(high, policy.max_delay)
        return low, high


def _check_restarts(trace: Trace, policy: RestartPolicy) -> list[Violation]:
    found: list[Violation] = []
    rng = random.Random(trace.seed)
    models = {
        d.device_id: PolicyModel(
            policy, rng, policy.max_retries if d.max_retries is None else d.max_retries
        )
        for d in trace.schedule.devices
    }
    # The decision each failure is waiting for, per device: (failure, expected decision).
    pending: dict[str, tuple[ConnectionFailed, Decision]] = {}
    # A restart scheduled and not yet started, per device: (when, delay).
    scheduled: dict[str, RestartScheduled] = {}
    gave_up: dict[str, GaveUp] = {}
    opens: dict[str, list[float]] = defaultdict(list)
    connects: dict[str, list[float]] = defaultdict(list)  # the user's `Supervisor.connect`
    for record in trace.wire:
        if record.kind == "attempt":
            opens[record.device_id].append(record.at)
        elif record.kind == "connect":
            connects[record.device_id].append(record.at)

    for event in trace.events:
        device = getattr(event, "device_id", None)
        if device not in models:
            continue
        model = models[device]
        if device in pending and not isinstance(event, RestartScheduled | GaveUp):
            failure, _ = pending.pop(device)
            found.append(
                Violation(
                    5,
                    device,
                    f"the failure at t={failure.at:g} was followed by {_event_text(event)} "
                    "instead of a restart or a give-up",
                )
            )
        if isinstance(event, StatusChanged):
            if event.old is DeviceStatus.CONNECTED and event.new is DeviceStatus.IDLE:
                model.connected(event.at)  # the connect sequence completed
            elif event.new is DeviceStatus.CONNECTING:
                user = [c for c in connects[device] if c <= event.at]
                if device in gave_up and user and user[-1] >= gave_up[device].at:
                    # Connecting after a give-up starts the count afresh.
                    del gave_up[device]
                    models[device] = attrs.evolve(
                        model, attempts=0, last_delay=None, up_since=None, restart_times=[]
                    )
                found += _check_attempt(
                    event, scheduled.pop(device, None), gave_up, opens, user[-1:]
                )
            elif event.new is DeviceStatus.DISCONNECTED and device in scheduled:
                restart = scheduled.pop(device)
                if event.at > restart.at + restart.delay:
                    found.append(
                        Violation(
                            4,
                            device,
                            f"the restart due at t={restart.at + restart.delay:g} never "
                            f"happened before the shutdown at t={event.at:g}",
                        )
                    )
        elif isinstance(event, ConnectionFailed):
            try:
                reason = FailureReason(event.reason)
            except ValueError:
                found.append(Violation(5, device, f"unknown failure reason {event.reason!r}"))
                continue
            pending[device] = (event, model.failed(reason, event.at))
        elif isinstance(event, RestartScheduled | GaveUp):
            if device not in pending:
                found.append(
                    Violation(5, device, f"{_event_text(event)} without a failure before it")
                )
                continue
            failure, expected = pending.pop(device)
            found += _compare_decision(failure, expected, event, model)
            if isinstance(event, RestartScheduled):
                scheduled[device] = event
            else:
                gave_up[device] = event
    for device, (failure, _) in pending.items():
        found.append(
            Violation(5, device, f"the failure at t={failure.at:g} got no restart or give-up")
        )
    return found


def _compare_decision(
    failure: ConnectionFailed,
    expected: Decision,
    got: RestartScheduled | GaveUp,
    model: PolicyModel,
) -> list[Violation]:
    device = failure.device_id
    attempts = model.attempts
    if isinstance(expected, GiveUp) and isinstance(got, RestartScheduled):
        return [
            Violation(
                5,
                device,
                f"after {attempts} failed reconnection attempt(s) (max_retries="
                f"{model.max_retries}) the failure at t={failure.at:g} ({failure.reason}) "
                f"should give up ({expected.why}), but restart attempt {got.attempt} was "
                f"scheduled in {got.delay:g} s",
            )
        ]
    if isinstance(expected, Restart) and isinstance(got, GaveUp):
        return [
            Violation(
                5,
                device,
                f"gave up at t={got.at:g} ({got.why}) after only {attempts - 1} failed "
                f"reconnection attempt(s); max_retries={model.max_retries}",
            )
        ]
    if not (isinstance(expected, Restart) and isinstance(got, RestartScheduled)):
        return []
    found = []
    if got.at != failure.at:
        found.append(
            Violation(4, device, f"restart decided at t={got.at:g}, failure at t={failure.at:g}")
        )
    if got.attempt != attempts or got.max_retries != model.max_retries:
        found.append(
            Violation(
                5,
                device,
                f"restart at t={got.at:g} announced as attempt {got.attempt} of "
                f"{got.max_retries}; the policy counts attempt {attempts} of "
                f"{model.max_retries}",
            )
        )
    if got.delay != expected.delay:
        low, high = model.last_bounds or (expected.delay, expected.delay)
        where = "outside" if not (low <= got.delay <= high) else "inside"
        found.append(
            Violation(
                4,
                device,
                f"restart attempt {got.attempt} after the failure at t={failure.at:g} waits "
                f"{got.delay!r} s; the policy says {expected.delay!r} s "
                f"({where} its bounds [{low!r}, {high!r}])",
            )
        )
    return found


def _check_attempt(
    event: StatusChanged,
    restart: RestartScheduled | None,
    gave_up: Mapping[str, GaveUp],
    opens: Mapping[str, list[float]],
    user_connect: list[float],
) -> list[Violation]:
    """A connection attempt started (``event``): was it due? ``user_connect`` holds the time
    of the user's last `Supervisor.connect` call before it, if any."""
    device = event.device_id
    found = []
    if device in gave_up:
        found.append(
            Violation(
                5,
                device,
                f"reconnected at t={event.at:g} after giving up at t={gave_up[device].at:g}",
            )
        )
    if restart is not None:
        due = restart.at + restart.delay
        cut_short = bool(user_connect) and restart.at <= user_connect[0] <= event.at < due
        if event.at != due and not cut_short:
            found.append(
                Violation(
                    4,
                    device,
                    f"restart attempt {restart.attempt} was scheduled at t={restart.at!r} "
                    f"with delay {restart.delay!r} s, due at t={due!r}, but started at "
                    f"t={event.at!r}",
                )
            )
    if event.at not in opens.get(device, ()):
        found.append(
            Violation(
                4, device, f"CONNECTING at t={event.at:g} without a connection attempt on the wire"
            )
        )
    return found


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
