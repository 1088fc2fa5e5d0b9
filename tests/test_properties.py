"""The library's invariants, proved on drawn reconnection scenarios.

Each property draws fault schedules, restart policies and seeds, plays every scenario with
`run_scenario` (a real supervisor against simulated agents, in virtual time) and checks every
invariant of `galaxy_actors.testing.INVARIANTS` on its trace; some add a check of their own.
``GALAXY_ACTORS_SCENARIOS`` (default 200) scenarios per property; ``make soak`` runs 10,000
and prints the count and the time.

The restart policy is also model-checked on its own, without Trio, by a state machine.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
from hypothesis import Phase, given, settings
from hypothesis import seed as search_seed
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from galaxy_actors import (
    ConfigurationError,
    Decision,
    Delivery,
    DeviceStatus,
    FailureReason,
    GiveUp,
    Jitter,
    Restart,
    RestartHistory,
    RestartPolicy,
)
from galaxy_actors.events import (
    ConnectionFailed,
    RestartScheduled,
    RestartsStopped,
    StatusChanged,
    TaskEnded,
)
from galaxy_actors.testing import (
    SCENARIO_SUPERVISOR,
    CancelTask,
    DelayTaskEnd,
    DeviceSchedule,
    DropConnection,
    FaultSchedule,
    LoseTaskEnd,
    MalformedFrame,
    PolicyModel,
    RefuseConnections,
    RejectRegistration,
    ScenarioSettings,
    StaleTaskEnd,
    StallHeartbeats,
    TaskSubmission,
    Trace,
    check_invariants,
    fault_schedules,
    restart_policies,
    run_scenario,
    run_scenario_async,
)

SCENARIOS = int(os.environ.get("GALAXY_ACTORS_SCENARIOS", "200"))
SEEDS = st.integers(0, 2**16)

# Reproducible from what a run prints. Derandomized (the same examples every run) when the
# suite's profile is (see conftest.py), or in CI (``CI`` set, or ``HYPOTHESIS_PROFILE=ci``);
# elsewhere seeded, and the seed is printed with the scenario counts (replay with
# ``GALAXY_ACTORS_SEED=<seed>``). Decided here, so these properties behave the same with or
# without a conftest.
IN_CI = settings.default.derandomize or (
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev") == "ci"
)
SEARCH_SEED = (
    None if IN_CI else int(os.environ.get("GALAXY_ACTORS_SEED") or random.randrange(2**32))
)
scenarios_settings = settings(
    max_examples=SCENARIOS,
    # No deadline: a scenario's wall-clock time depends on the machine, not on the code's
    # correctness (its virtual time is exact, and checked by the invariants).
    deadline=None,
    print_blob=True,
    derandomize=IN_CI,
    database=None if IN_CI else settings.default.database,
    # No explain phase: it traces every line of every scenario and makes a shrink take
    # minutes instead of seconds.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


def scenarios(test: Callable[..., None]) -> Callable[..., None]:
    """The settings (and the seed, when not derandomized) of every property here."""
    test = scenarios_settings(test)
    return test if SEARCH_SEED is None else search_seed(SEARCH_SEED)(test)


CONNECTION_FAULTS = [DropConnection, RefuseConnections, StallHeartbeats, MalformedFrame]


# --------------------------------------------------------------------------- counting


@attrs.define
class ScenarioStats:
    """How many scenarios each property ran, and for how long; printed at the end."""

    counts: dict[str, int] = attrs.Factory(dict)
    first: dict[str, float] = attrs.Factory(dict)
    last: dict[str, float] = attrs.Factory(dict)

    def count(self) -> None:
        # pytest's documented "<nodeid> (<phase>)" of the running test.
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split("::", 1)[-1].rsplit(" ", 1)[0]
        now = time.perf_counter()
        self.first.setdefault(test, now)
        self.last[test] = now
        self.counts[test] = self.counts.get(test, 0) + 1

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.counts:
            return
        terminalreporter.write_sep("-", "property scenarios")
        total_seconds = 0.0
        for test, count in sorted(self.counts.items()):
            took = self.last[test] - self.first[test]
            total_seconds += took
            terminalreporter.write_line(f"{count:>7} scenarios in {took:7.1f} s  {test}")
        total = sum(self.counts.values())
        rate = total / total_seconds if total_seconds else 0.0
        terminalreporter.write_line(
            f"{total:>7} scenarios in {total_seconds:7.1f} s  in all ({rate:.0f} per second)"
        )
        if SEARCH_SEED is None:
            terminalreporter.write_line("search derandomized (CI): the same examples every run")
        else:
            terminalreporter.write_line(f"replay this search with GALAXY_ACTORS_SEED={SEARCH_SEED}")


STATS = ScenarioStats()


@pytest.fixture(autouse=True, scope="session")
def report_scenario_counts(pytestconfig: pytest.Config) -> None:
    """Prints `STATS` in the terminal summary (``make soak`` shows how many ran, how fast)."""
    if not pytestconfig.pluginmanager.is_registered(STATS):
        pytestconfig.pluginmanager.register(STATS, "galaxy-actors-scenario-counts")


@pytest.fixture(autouse=True, scope="module")
def quiet_library_logs() -> Iterator[None]:
    """Thousands of scenarios log thousands of expected warnings (every failure is one).
    The kit keeps them in each trace, out of a falsifying example's report; not creating
    them at all saves the time."""
    logger = logging.getLogger("galaxy_actors")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def play(
    schedule: FaultSchedule,
    policy: RestartPolicy,
    seed: int,
    settings: ScenarioSettings | None = None,
) -> Trace:
    trace = run_scenario(schedule, policy, seed=seed, settings=settings)
    STATS.count()
    check_invariants(trace)
    return trace


# --------------------------------------------------------------------------- all faults


@scenarios
@given(
    schedule=fault_schedules(
        reorder_replies=st.booleans(),
        device_max_retries=st.none() | st.integers(0, 3),
        max_actions=2,
    ),
    policy=restart_policies(),
    seed=SEEDS,
)
def test_every_invariant_holds_under_any_fault_schedule(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    play(schedule, policy, seed)


# --------------------------------------------------------------------------- the user


@scenarios
@given(
    schedule=fault_schedules(max_faults=2, max_tasks=5, max_actions=4),
    policy=restart_policies(),
    seed=SEEDS,
)
def test_disconnects_connects_and_cancellations_amid_faults(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    trace = play(schedule, policy, seed)
    for action in schedule.actions:
        if not isinstance(action, CancelTask):
            continue
        task = trace.task(action.task_id)
        if task.refused is not None or action.at < task.submission.at:
            continue  # nothing to cancel
        ended = [e.at for e in trace.events_of(TaskEnded) if e.task_id == action.task_id]
        # Cancelled at that very moment, unless it had ended by then.
        assert task.outcome == "TaskCancelled" or ended[0] <= action.at


# --------------------------------------------------------------------------- delivery


@scenarios
@given(
    schedule=fault_schedules(
        devices=1,
        max_tasks=5,
        fault_kinds=[*CONNECTION_FAULTS, DelayTaskEnd],
        deliveries=[Delivery.AT_LEAST_ONCE, Delivery.AT_MOST_ONCE],
    ),
    policy=restart_policies(max_retries=st.integers(1, 6), reset_after=None, intensity=None),
    seed=SEEDS,
)
def test_a_task_cut_off_by_its_connection_runs_again_only_if_at_least_once(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    trace = play(schedule, policy, seed)
    sends = {
        t.session_id: sum(
            1
            for r in trace.wire
            if r.kind == "sent" and r.type == "task" and r.session_id == t.session_id
        )
        for t in trace.tasks
    }
    for task in trace.tasks:
        if task.outcome == "DeviceDisconnected":
            assert task.submission.delivery is Delivery.AT_MOST_ONCE
            assert sends[task.session_id] == 1
        if task.submission.delivery is Delivery.AT_MOST_ONCE:
            assert sends[task.session_id] <= 1


# --------------------------------------------------------------------------- isolation


@scenarios
@given(
    schedule=fault_schedules(
        devices=1,
        max_tasks=5,
        fault_kinds=[StaleTaskEnd, DropConnection, DelayTaskEnd],
        reorder_replies=st.booleans(),
        max_actions=2,
    ),
    policy=restart_policies(max_retries=st.integers(1, 6)),
    seed=SEEDS,
)
def test_a_task_end_from_a_dropped_connection_never_ends_another_task(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    # Invariant 9 under fire: agents that send, on the new connection, the TASK_ENDs of the
    # tasks they ran on the dropped one, at any moment of the next task's run.
    trace = play(schedule, policy, seed)
    for task in trace.tasks:
        if task.outcome in ("completed", "failed"):
            assert task.ended_at is not None and task.sent_at is not None


# --------------------------------------------------------------------------- order


@scenarios
@given(
    schedule=fault_schedules(
        devices=1,
        max_faults=3,
        max_tasks=8,
        horizon=10.0,
        priorities=st.integers(0, 3),
        fault_kinds=[DropConnection, StallHeartbeats, LoseTaskEnd, DelayTaskEnd],
    ),
    policy=restart_policies(max_retries=st.integers(2, 5)),
    seed=SEEDS,
)
def test_a_busy_device_sends_its_queue_in_priority_then_submission_order(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    play(schedule, policy, seed)


# --------------------------------------------------------------------------- restarts


@scenarios
@given(
    schedule=fault_schedules(
        devices=st.integers(2, 3),
        max_tasks=2,
        fault_kinds=[RefuseConnections, RejectRegistration, DropConnection, StallHeartbeats],
    ),
    policy=restart_policies(
        jitter=st.sampled_from([Jitter.FULL, Jitter.EQUAL, Jitter.DECORRELATED]),
        max_retries=st.integers(1, 5),
        reset_after=None,
    ),
    seed=SEEDS,
)
def test_jittered_delays_are_inside_their_bounds_and_exact_to_the_seed(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    trace = play(schedule, policy, seed)
    # Besides the invariant (each delay equal to the seeded policy's), every delay is inside
    # the bounds the policy itself publishes, and each attempt starts exactly when it said.
    for device in schedule.device_ids:
        previous: float | None = None
        for event in trace.events:
            if getattr(event, "device_id", None) != device:
                continue
            if isinstance(event, StatusChanged) and event.old is DeviceStatus.CONNECTED:
                previous = None  # a success: the decorrelated jitter starts afresh
            elif isinstance(event, RestartScheduled):
                low, high = policy.delay_bounds(event.attempt - 1, previous)
                assert low <= event.delay <= high
                previous = event.delay
                due = event.at + event.delay
                assert due in trace.attempts(device) or due > trace.exit_at


@scenarios
@given(
    schedule=fault_schedules(
        max_faults=6,
        max_tasks=2,
        fault_kinds=[DropConnection, RefuseConnections, RejectRegistration, StallHeartbeats],
        device_max_retries=st.none() | st.integers(0, 4),
    ),
    policy=restart_policies(reset_after=st.none() | st.sampled_from([1.0, 3.0, 8.0])),
    seed=SEEDS,
)
def test_a_device_gives_up_after_exactly_max_retries_failed_attempts(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    trace = play(schedule, policy, seed)
    if policy.reset_after is not None or policy.intensity is not None:
        return  # the count then depends on up-times and windows: left to the invariant
    # Independently of PolicyModel: count the restarts since the last successful connection.
    for device in schedule.devices:
        max_retries = policy.max_retries if device.max_retries is None else device.max_retries
        restarts = 0
        for event in trace.events:
            if getattr(event, "device_id", None) != device.device_id:
                continue
            if isinstance(event, StatusChanged) and event.old is DeviceStatus.CONNECTED:
                restarts = 0
            elif isinstance(event, RestartScheduled):
                restarts += 1
                assert event.attempt == restarts <= max_retries
            elif isinstance(event, RestartsStopped):
                assert restarts == max_retries


@scenarios
@given(
    stall_at=st.integers(0, 60).map(lambda n: n / 2),
    heartbeats=st.tuples(st.sampled_from([10.0, 3.0, 30.0]), st.sampled_from([2.0, 5.0])),
    policy=restart_policies(max_retries=st.integers(1, 4)),
    seed=SEEDS,
)
def test_a_silent_device_is_detected_within_interval_plus_timeout(
    stall_at: float,
    heartbeats: tuple[float, float],
    policy: RestartPolicy,
    seed: int,
) -> None:
    # Not one of the seven invariants, but the liveness promise of docs/architecture.md:
    # without it, a session that never noticed silence would pass them all.
    interval, timeout = heartbeats
    bound = interval + timeout
    schedule = FaultSchedule(
        devices=[DeviceSchedule("pc", faults=[StallHeartbeats(at=stall_at, duration=bound + 1)])],
        settle=1.0,
    )
    timings = attrs.evolve(
        SCENARIO_SUPERVISOR, heartbeat_interval=interval, heartbeat_timeout=timeout
    )
    settings = ScenarioSettings(supervisor=timings)
    trace = play(schedule, policy, seed, settings)
    detected = [e.at for e in trace.events_of(ConnectionFailed) if e.reason == "heartbeat_timeout"]
    assert detected, "the silence was never noticed"
    assert stall_at < detected[0] <= stall_at + bound


def reference_hook(reason: FailureReason, attempts: int) -> Decision | None:
    """The per-reason example of docs/architecture.md: at once after a heartbeat timeout,
    never after a protocol error."""
    if reason is FailureReason.HEARTBEAT_TIMEOUT:
        return Restart(0.0)
    if reason is FailureReason.PROTOCOL_ERROR:
        return GiveUp("protocol error")
    return None


@scenarios
@given(
    schedule=fault_schedules(max_tasks=3),
    policy=restart_policies(per_reason=reference_hook),
    seed=SEEDS,
)
def test_a_per_reason_hook_decides_for_its_reasons(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int
) -> None:
    trace = play(schedule, policy, seed)
    for failure in trace.events_of(ConnectionFailed):
        if failure.reason == FailureReason.PROTOCOL_ERROR:
            assert any(
                g.at == failure.at for g in trace.events_of(RestartsStopped, failure.device_id)
            )


# --------------------------------------------------------------------------- determinism


def test_the_replay_line_gives_the_trace_the_example_saw() -> None:
    # What docs/testing.md promises: a scenario run inside a Hypothesis example (Hypothesis
    # seeds Trio's scheduler when the example starts) and its replay line run on its own
    # (run_scenario seeds it the same way) give equal traces. Replayed after the search, out
    # of any example, as a user pastes the line into a regression test.
    seen: list[tuple[FaultSchedule, RestartPolicy, int, Trace]] = []

    @scenarios
    @given(
        schedule=fault_schedules(reorder_replies=st.booleans(), max_actions=2),
        policy=restart_policies(),
        seed=SEEDS,
    )
    def first_runs(schedule: FaultSchedule, policy: RestartPolicy, seed: int) -> None:
        seen.append((schedule, policy, seed, play(schedule, policy, seed)))

    first_runs()
    assert seen
    for schedule, policy, seed, trace in seen:
        assert trace.deterministic, trace.nondeterminism
        assert run_scenario(schedule, policy, seed=seed) == trace, trace.replay()


# --------------------------------------------------------------------------- examples


def test_a_dropped_connection_is_retried_after_exactly_the_policy_delay() -> None:
    schedule = FaultSchedule(
        devices=[
            DeviceSchedule("pc", faults=[DropConnection(at=2.0), RefuseConnections(2.0, 4.0)])
        ],
        tasks=[TaskSubmission(at=1.0, device="pc", task_id="t0", duration=3.0)],
        settle=20.0,
    )
    trace = run_scenario(schedule, RestartPolicy(reconnect_delay=1.0, max_retries=3), seed=1)
    check_invariants(trace)
    # Refused until t=6: attempts at 2+1, 3+2, 5+4 = 9.
    assert trace.attempts("pc") == [0.0, 3.0, 5.0, 9.0]
    assert trace.task("t0").outcome == "DeviceDisconnected"
    assert trace.task("t0").caller_saw == ("DeviceDisconnected",)
    assert trace.exit_at == 26.0


def test_an_at_least_once_task_is_sent_again_after_the_reconnection() -> None:
    schedule = FaultSchedule(
        devices=[DeviceSchedule("pc", faults=[DropConnection(at=2.0)])],
        tasks=[
            TaskSubmission(
                at=1.0, device="pc", task_id="t0", duration=3.0, delivery=Delivery.AT_LEAST_ONCE
            )
        ],
    )
    trace = run_scenario(schedule, RestartPolicy(reconnect_delay=1.0), seed=0)
    check_invariants(trace)
    sent = [(r.at, r.connection) for r in trace.wire if r.kind == "sent" and r.type == "task"]
    assert sent == [(1.0, 1), (3.0, 2)]
    assert trace.task("t0").outcome == "completed"
    assert [f.at for f in trace.agent_frames["pc"] if f.type == "task"] == [1.0, 3.0]


def test_importing_the_kit_does_not_import_hypothesis() -> None:
    import subprocess
    import sys

    code = "import sys, galaxy_actors.testing; print('hypothesis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_run_scenario_async_inside_a_trio_test(autojump_clock: trio.abc.Clock) -> None:
    await trio.sleep(5)  # the scenario's times count from its own start
    schedule = FaultSchedule(
        devices=[DeviceSchedule("pc", faults=[StallHeartbeats(at=1.0, duration=20.0)])],
        settle=10.0,
    )
    trace = await run_scenario_async(schedule, RestartPolicy(reconnect_delay=1.0), seed=3)
    check_invariants(trace)
    assert trace.started_at == 5.0
    # Heartbeats at +0 and +10; the one at +10 goes unanswered until +12.
    assert [e.at for e in trace.events_of(ConnectionFailed)] == [17.0]
    assert trace.attempts("pc") == [5.0, 18.0]


async def test_run_scenario_async_refuses_a_real_clock() -> None:
    with pytest.raises(ConfigurationError, match="MockClock"):
        await run_scenario_async(FaultSchedule(devices=[DeviceSchedule("pc")]))


# --------------------------------------------------------------------------- the policy alone


class SharedPolicy(RuleBasedStateMachine):
    """A fleet's devices driving one `RestartPolicy` and one random source, the way a
    supervisor does, checked against `PolicyModel` (the documented behaviour written out a
    second time). No Trio: the policy is sans-IO."""

    @initialize(
        policy=restart_policies(
            reconnect_delay=st.sampled_from([5.0, 1.0, 0.0, 0.25]),
            max_retries=st.integers(0, 8),
            max_delay=st.none() | st.sampled_from([30.0, 2.0, 0.5]),
            reset_after=st.none() | st.sampled_from([10.0, 1.0]),
            intensity=st.none() | st.tuples(st.integers(1, 4), st.sampled_from([5.0, 60.0])),
            per_reason=st.none() | st.just(reference_hook),
        ),
        overrides=st.lists(st.none() | st.integers(0, 4), min_size=1, max_size=3),
        seed=SEEDS,
    )
    def setup(self, policy: RestartPolicy, overrides: list[int | None], seed: int) -> None:
        STATS.count()
        self.now = 0.0
        self.rng = random.Random(seed)
        model_rng = random.Random(seed)
        # Per-device max_retries the way Supervisor.add_device applies it.
        self.policies = [
            policy if n is None else attrs.evolve(policy, max_retries=n) for n in overrides
        ]
        self.histories = [RestartHistory() for _ in overrides]
        self.models = [PolicyModel(p, model_rng, p.max_retries) for p in self.policies]
        self.streaks = [0 for _ in overrides]  # restarts since the last reset
        self.restarts: list[list[float]] = [[] for _ in overrides]

    def device(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.policies) - 1), label="device")

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 3.0, 20.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(data=st.data(), reason=st.sampled_from(list(FailureReason)))
    def fail(self, data: st.DataObject, reason: FailureReason) -> None:
        i = self.device(data)
        policy, history, now = self.policies[i], self.histories[i], self.now
        before = self.rng.getstate()
        decision = policy.decide(history, reason, now, self.rng)
        after = self.rng.getstate()
        # Pure: the same inputs (random state included) give the same decision.
        self.rng.setstate(before)
        assert policy.decide(history, reason, now, self.rng) == decision
        assert self.rng.getstate() == after
        expected = self.models[i].failed(reason, now)
        assert type(decision) is type(expected)
        if isinstance(decision, Restart):
            assert isinstance(expected, Restart)
            assert decision.delay == expected.delay  # jitter included: same seed, same draw
            if policy.per_reason is None or policy.per_reason(reason, 0) is None:
                low, high = self.models[i].last_bounds or (decision.delay, decision.delay)
                assert low <= decision.delay <= high
            if policy.max_delay is not None and policy.per_reason is None:
                assert decision.delay <= policy.max_delay
        elapsed_up = history.up_since is not None and (
            policy.reset_after is not None and now - history.up_since >= policy.reset_after
        )
        if elapsed_up:
            self.streaks[i] = 0
        self.histories[i] = policy.record(history, decision, now)
        if isinstance(decision, Restart):
            self.streaks[i] += 1
            self.restarts[i].append(now)

    @rule(data=st.data())
    def connect(self, data: st.DataObject) -> None:
        i = self.device(data)
        self.histories[i] = self.policies[i].connected(self.histories[i], self.now)
        self.models[i].connected(self.now)
        if self.policies[i].reset_after is None:
            self.streaks[i] = 0

    @invariant()
    def the_attempt_count_is_the_models(self) -> None:
        for history, model in zip(self.histories, self.models, strict=True):
            assert history.attempts == model.attempts

    @invariant()
    def never_more_restarts_in_a_row_than_max_retries(self) -> None:
        for policy, streak in zip(self.policies, self.streaks, strict=True):
            if policy.per_reason is None:
                assert streak <= policy.max_retries

    @invariant()
    def never_more_restarts_in_a_window_than_the_intensity_allows(self) -> None:
        for policy, times in zip(self.policies, self.restarts, strict=True):
            if policy.intensity is None or policy.per_reason is not None:
                continue
            limit, period = policy.intensity
            for t in times:
                assert sum(1 for u in times if t <= u < t + period) <= limit


if SEARCH_SEED is not None:
    search_seed(SEARCH_SEED)(SharedPolicy)
TestSharedPolicy = SharedPolicy.TestCase
TestSharedPolicy.settings = settings(scenarios_settings, stateful_step_count=40)
