"""Proof that the property tests can fail: the harness, run against deliberately broken
variants of the library, finds a violation of the right invariant and shrinks it to a small,
readable scenario. Without this, green property tests prove nothing.

Each variant is built here, by subclassing or by monkeypatching for the length of one test;
the library itself is never edited.

In the suite, each variant plays only the minimal scenario its search found (its ``known``
failing example): the invariant catches the variant, in milliseconds, the same way on every
run. (A search's path depends on the literals of every module loaded, which Hypothesis tries
as likely values: an edit anywhere could send a search in the suite elsewhere.)

``make soak`` (``GALAXY_ACTORS_HARNESS_SEARCH=1``) searches from scratch for every variant,
derandomized, and shrinks what it finds: the strategies reach each bug. When a change to the
library moves a variant's bug elsewhere, its known scenario stops failing (``DID NOT
RAISE``): search again with ``GALAXY_ACTORS_HARNESS_SEARCH=1`` and take the shrunk
scenario's ``trace.replay()``.
"""

from __future__ import annotations

import os
from typing import Any

import attrs
import pytest
import trio
from hypothesis import Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from galaxy_actors import (
    Decision,
    Delivery,
    DeviceStatus,
    FailureReason,
    RandomSource,
    Restart,
    RestartHistory,
    RestartPolicy,
    Supervisor,
)
from galaxy_actors._actors import _device as device_module
from galaxy_actors._actors._device import DeviceActor
from galaxy_actors._actors._host import ActorHost
from galaxy_actors._actors._mailbox import Mailbox
from galaxy_actors._actors._task import TaskHandle
from galaxy_actors._actors._workload import Workload
from galaxy_actors._sansio._aip import ServerMessageType, WireStatus, session_id_for
from galaxy_actors._sansio._engine import AIPConnection, ConnectionDead, EngineEvent, TaskAccepted
from galaxy_actors._sansio._engine import Phase as AIPPhase
from galaxy_actors.testing import (
    DeviceSchedule,
    Disconnect,
    DropConnection,
    FaultSchedule,
    InvariantViolation,
    RefuseConnections,
    StaleTaskEnd,
    StallHeartbeats,
    TaskSubmission,
    check_invariants,
    fault_schedules,
    restart_policies,
    run_scenario,
)

SCHEDULES = fault_schedules(devices=1, max_faults=3, max_tasks=4)
SEARCH = bool(os.environ.get("GALAXY_ACTORS_HARNESS_SEARCH"))
ONE_RETRY = RestartPolicy(reconnect_delay=1.0, max_retries=1)
NO_RETRY = RestartPolicy(reconnect_delay=1.0, max_retries=0)


def one_device(
    *faults: Any, tasks: tuple[TaskSubmission, ...] = (), **options: Any
) -> FaultSchedule:
    return FaultSchedule(devices=[DeviceSchedule("d0", faults=faults)], tasks=tasks, **options)


def at_once(task_id: str, **options: Any) -> TaskSubmission:
    return TaskSubmission(at=0.0, device="d0", task_id=task_id, **options)


TWO_TASKS = (at_once("t0"), at_once("t1"))


@attrs.frozen
class Known:
    """The minimal scenario a variant's search found (its replay line's arguments)."""

    schedule: FaultSchedule
    policy: RestartPolicy
    seed: int = 0


def shrunk_violation(
    schedules: SearchStrategy[FaultSchedule] = SCHEDULES,
    policies: SearchStrategy[RestartPolicy] | None = None,
    *,
    known: Known,
) -> InvariantViolation:
    """Search for a scenario that breaks an invariant; return the violation of the shrunk
    one (the last example Hypothesis plays is the minimal one). Outside ``make soak``: play
    only the ``known`` scenario, and return its violation."""

    # Derandomized and without a database: the same search, the same result, every run.
    # Without the explain phase: it traces every line and makes a shrink take minutes.
    # The soak's budget is larger: an edit elsewhere can move the bug further out.
    phases = [Phase.generate, Phase.shrink] if SEARCH else [Phase.explicit]

    @settings(
        max_examples=5000 if SEARCH else 500,
        database=None,
        derandomize=True,
        deadline=None,
        phases=phases,
    )
    @given(
        schedule=schedules,
        policy=restart_policies() if policies is None else policies,
        seed=st.integers(0, 100),
    )
    def search(schedule: FaultSchedule, policy: RestartPolicy, seed: int) -> None:
        check_invariants(run_scenario(schedule, policy, seed=seed))

    if not SEARCH:
        search = example(schedule=known.schedule, policy=known.policy, seed=known.seed)(search)
    with pytest.raises(InvariantViolation) as caught:
        search()
    return caught.value


def assert_small(
    violation: InvariantViolation, *, faults: int, tasks: int, actions: int = 0
) -> FaultSchedule:
    schedule = violation.trace.schedule
    assert len(schedule.devices) == 1, violation
    if not SEARCH:
        # Where a search from scratch shrinks to depends on the literals of every module
        # loaded (Hypothesis tries them as likely values): an edit anywhere can leave it in
        # a local minimum one task larger. The soak holds it to finding the bug, not to these.
        assert schedule.fault_count <= faults, violation
        assert len(schedule.tasks) <= tasks, violation
        assert len(schedule.actions) <= actions, violation
    # The report reads as a scenario and a line that replays it: the timeline once, in the
    # note Hypothesis prints with the failing example.
    text = "\n".join([str(violation), *getattr(violation, "__notes__", ())])
    assert text.count("scenario (seed=") == 1
    assert "replay: run_scenario(FaultSchedule(" in str(violation)
    return schedule


# --------------------------------------------------------------------------- the three


def test_a_device_that_drops_its_queue_on_reconnect_loses_tasks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attempt = DeviceActor._attempt

    async def forgetful_attempt(self: DeviceActor) -> None:
        if self.stats.failures:  # a reconnection: the bug starts with an empty queue
            self.work.mailbox = Mailbox()
        await attempt(self)

    monkeypatch.setattr(DeviceActor, "_attempt", forgetful_attempt)
    known = Known(
        one_device(tasks=(at_once("t0", duration=3.0, timeout=3.0), at_once("t1"))), ONE_RETRY
    )
    violation = shrunk_violation(known=known)
    assert violation.invariant == 1
    assert "has no outcome" in violation.evidence
    # A task on the device, one queued behind it, a failure: two tasks, at most one fault.
    assert_small(violation, faults=1, tasks=2)


class OffByOnePolicy(RestartPolicy):
    """Gives up one attempt late: ``>`` where ``>=`` was meant."""

    def decide(
        self, history: RestartHistory, reason: FailureReason, now: float, rng: RandomSource
    ) -> Decision:
        lenient = attrs.evolve(self, max_retries=self.max_retries + 1)
        return RestartPolicy.decide(lenient, history, reason, now, rng)


def off_by_one(policy: RestartPolicy) -> RestartPolicy:
    return OffByOnePolicy(**{f.name: getattr(policy, f.name) for f in attrs.fields(RestartPolicy)})


def test_a_policy_off_by_one_in_give_up_is_caught() -> None:
    known = Known(one_device(DropConnection(at=0.5)), off_by_one(NO_RETRY))
    violation = shrunk_violation(policies=restart_policies().map(off_by_one), known=known)
    assert violation.invariant == 5
    assert "should give up" in violation.evidence
    assert_small(violation, faults=1, tasks=1)
    assert violation.trace.policy.max_retries == 0  # shrunk to the smallest case


def test_a_device_that_sends_the_next_task_before_the_task_end_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def eager(self: AIPConnection) -> bool:
        return self.phase is AIPPhase.SERVING  # forgot: `and self.in_flight is None`

    monkeypatch.setattr(AIPConnection, "can_send_task", eager)
    violation = shrunk_violation(known=Known(one_device(tasks=TWO_TASKS), NO_RETRY))
    assert 3 in violation.invariants
    assert any("was still on the device" in v.evidence for v in violation.violations)
    assert_small(violation, faults=0, tasks=3)


# --------------------------------------------------------------------------- one per invariant


def test_an_at_most_once_task_sent_again_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    settle = Workload.settle

    def resend_everything(self: Workload, dead: ConnectionDead | None, *, accepting: bool) -> None:
        task: TaskHandle | None = self.running
        if task is not None and dead is not None:
            task.delivery = Delivery.AT_LEAST_ONCE  # the bug: ignores what the caller asked
        settle(self, dead, accepting=accepting)

    monkeypatch.setattr(Workload, "settle", resend_everything)
    known = Known(one_device(DropConnection(at=0.5), tasks=(at_once("t0"),)), ONE_RETRY)
    violation = shrunk_violation(known=known)
    assert 2 in violation.invariants
    assert any("reached its agent 2 times" in v.evidence for v in violation.violations)
    # One fault. The tasks may be up to four: the shrinker can settle on a heartbeat stall,
    # which fails the Session during a task only if earlier tasks' frames kept it alive
    # that long (a local minimum; a single task and a dropped connection also show it).
    assert_small(violation, faults=1, tasks=4)


def test_a_mailbox_that_ignores_submission_order_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Mailbox, "push", Mailbox.push_front)  # LIFO
    violation = shrunk_violation(known=Known(one_device(tasks=TWO_TASKS), NO_RETRY))
    assert violation.invariant == 3
    assert "which was queued ahead of it" in violation.evidence
    assert_small(violation, faults=0, tasks=3)


def test_a_reconnection_that_ignores_the_policy_delay_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decide = ActorHost.decide

    def hasty(self: ActorHost, actor: DeviceActor, reason: FailureReason, detail: str) -> Any:
        decision = decide(self, actor, reason, detail)
        if reason is FailureReason.HEARTBEAT_TIMEOUT and isinstance(decision, Restart):
            return Restart(0.0)  # announced one delay, sleeps none
        return decision

    monkeypatch.setattr(ActorHost, "decide", hasty)
    known = Known(one_device(StallHeartbeats(at=0.0, duration=10.5)), ONE_RETRY)
    violation = shrunk_violation(policies=restart_policies(reconnect_delay=1.0), known=known)
    assert violation.invariant == 4
    assert "but started at" in violation.evidence
    schedule = assert_small(violation, faults=1, tasks=0)
    assert isinstance(schedule.devices[0].faults[0], StallHeartbeats)


def test_a_status_change_outside_the_table_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    set_status = DeviceActor.set_status

    def skip_connected(self: DeviceActor, new: DeviceStatus) -> None:
        if new is not DeviceStatus.CONNECTED:  # a refactor forgot to announce CONNECTED
            set_status(self, new)

    # The library's own guard would raise; the bug is one its guard does not see.
    monkeypatch.setattr(device_module, "check_transition", lambda *args: None)
    monkeypatch.setattr(DeviceActor, "set_status", skip_connected)
    violation = shrunk_violation(known=Known(one_device(), NO_RETRY))
    assert violation.invariant == 6
    assert "connecting -> idle is not an allowed transition" in violation.evidence
    assert_small(violation, faults=0, tasks=0)


def test_a_task_left_running_after_the_block_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    add_device = Supervisor.add_device

    def add_device_with_a_watchdog(self: Supervisor, *args: Any, **kwargs: Any) -> Any:
        profile = add_device(self, *args, **kwargs)
        # Started outside the supervisor's nursery: nothing ends it with the block.
        trio.lowlevel.spawn_system_task(trio.sleep_forever, name="watchdog")
        return profile

    monkeypatch.setattr(Supervisor, "add_device", add_device_with_a_watchdog)
    violation = shrunk_violation(known=Known(one_device(), NO_RETRY))
    assert violation.invariant == 7
    assert "watchdog" in violation.evidence
    assert_small(violation, faults=0, tasks=0)


def test_a_task_ended_without_its_acknowledgement_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_event = DeviceActor.on_event

    def deaf_to_acknowledgements(self: DeviceActor, event: EngineEvent) -> None:
        if not isinstance(event, TaskAccepted):  # a refactor dropped a branch
            on_event(self, event)

    monkeypatch.setattr(DeviceActor, "on_event", deaf_to_acknowledgements)
    violation = shrunk_violation(known=Known(one_device(tasks=(at_once("t0"),)), NO_RETRY))
    assert violation.invariants == {8}
    assert "without having been acknowledged" in violation.evidence
    assert_small(violation, faults=0, tasks=1)


def test_a_stale_task_end_accepted_on_a_new_connection_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The bug: the engine remembers every session id its device sent, on any connection,
    # and takes a TASK_END for one of them as the end of the task now in flight.
    sent: dict[str, set[str]] = {}
    send_task = AIPConnection.send_task
    route = AIPConnection._route

    def remembering_send(self: AIPConnection, task_id: str, *args: Any) -> str:
        sent.setdefault(self.device_id, set()).add(session_id_for(self._task_name, task_id))
        return send_task(self, task_id, *args)

    def lenient_route(
        self: AIPConnection,
        kind: ServerMessageType,
        status: WireStatus,
        fields: dict[str, Any],
        now: float,
    ) -> Any:
        task_id = self.in_flight
        stale = fields.get("session_id") in sent.get(self.device_id, ())
        if kind is ServerMessageType.TASK_END and task_id is not None and stale:
            fields = {**fields, "session_id": session_id_for(self._task_name, task_id)}
        return route(self, kind, status, fields, now)

    monkeypatch.setattr(AIPConnection, "send_task", remembering_send)
    monkeypatch.setattr(AIPConnection, "_route", lenient_route)
    violation = shrunk_violation(
        fault_schedules(devices=1, max_faults=2, max_tasks=3, fault_kinds=[StaleTaskEnd]),
        known=Known(one_device(StaleTaskEnd(at=0.5, delay=0.5), tasks=TWO_TASKS), ONE_RETRY),
    )
    assert 9 in violation.invariants
    evidence = next(v.evidence for v in violation.violations if v.invariant == 9)
    assert "no TASK_END of its own arrived there then" in evidence
    assert "what arrived: the TASK_END of task" in evidence
    schedule = assert_small(violation, faults=1, tasks=2)
    assert isinstance(schedule.devices[0].faults[0], StaleTaskEnd)


def test_a_task_left_pending_after_a_disconnect_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settle = Workload.settle

    def requeue_regardless(self: Workload, dead: ConnectionDead | None, *, accepting: bool) -> None:
        # The old bug: an at-least-once task cut off during a disconnect's grace went back
        # to the queue of a device that takes no more work, and waited there for ever.
        settle(self, dead, accepting=True)

    monkeypatch.setattr(Workload, "settle", requeue_regardless)
    violation = shrunk_violation(
        # Everything within a few seconds: the bug needs a connection lost within a
        # disconnect's grace while a task runs.
        fault_schedules(
            devices=1,
            max_faults=1,
            max_tasks=2,
            max_actions=2,
            horizon=4.0,
            fault_kinds=[DropConnection],
            deliveries=[Delivery.AT_LEAST_ONCE],
        ),
        known=Known(
            one_device(
                DropConnection(at=3.5),
                tasks=(TaskSubmission(3.0, "d0", "t0", delivery=Delivery.AT_LEAST_ONCE),),
                actions=[Disconnect(at=3.0, device="d0")],
            ),
            NO_RETRY,
        ),
    )
    assert violation.invariants == {10}
    assert "after a disconnect (grace 3 s)" in violation.evidence
    assert_small(violation, faults=1, tasks=1, actions=1)


class _SystemNursery:
    """Stands in for the supervisor's nursery: starts tasks as system tasks instead."""

    def start_soon(self, fn: Any, *args: Any, name: object = None) -> None:
        trio.lowlevel.spawn_system_task(fn, *args, name=name)


def test_a_device_actor_outside_the_supervisors_nursery_is_caught(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    add_device = Supervisor.add_device

    def add_device_elsewhere(self: Supervisor, *args: Any, **kwargs: Any) -> Any:
        # A refactor that starts the actor where the block does not own it.
        own = self._nursery
        self._nursery = _SystemNursery()  # type: ignore[assignment]
        try:
            return add_device(self, *args, **kwargs)
        finally:
            self._nursery = own

    monkeypatch.setattr(Supervisor, "add_device", add_device_elsewhere)
    violation = shrunk_violation(known=Known(one_device(), NO_RETRY))
    assert violation.invariants == {11}
    assert "its actor was task 'device:d0', a child of a nursery of '<init>'" in (
        violation.evidence
    )
    assert_small(violation, faults=0, tasks=0)


def test_the_violation_names_the_invariant_and_the_evidence() -> None:
    faults = [DropConnection(at=1.0), RefuseConnections(at=1.0, duration=30.0)]
    schedule = FaultSchedule(devices=[DeviceSchedule("pc", faults=faults)])
    trace = run_scenario(schedule, off_by_one(RestartPolicy(reconnect_delay=1.0, max_retries=2)))
    with pytest.raises(InvariantViolation) as caught:
        check_invariants(trace)
    text = str(caught.value)
    assert text.startswith("invariant 5 (a device gives up exactly after max_retries")
    assert "on device 'pc'" in text
    assert "after 2 failed reconnection attempt(s) (max_retries=2)" in text
    assert "t=1       pc: drop the connection" in text
