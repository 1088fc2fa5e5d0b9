"""The testing kit's own promises: reproducible or saying why not, readable failures, and a
scenario that stops moving in virtual time fails instead of hanging."""

from __future__ import annotations

import functools
import logging
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import galaxy_actors.testing
from galaxy_actors import Decision, FailureReason, Restart, RestartPolicy
from galaxy_actors._actors import _host as host_module
from galaxy_actors._sansio._policy import RestartFloor
from galaxy_actors.events import BadFrame, RestartScheduled
from galaxy_actors.testing import (
    DeviceSchedule,
    DropConnection,
    FaultSchedule,
    RejectRegistration,
    ScenarioSettings,
    ScenarioStalled,
    StaleTaskEnd,
    TaskSubmission,
    check_invariants,
    run_scenario,
)

DROPPED = FaultSchedule(devices=[DeviceSchedule("d0", faults=[DropConnection(at=1.0)])], settle=5.0)
POLICY = RestartPolicy(reconnect_delay=1.0, max_retries=2)


# --------------------------------------------------------------------------- determinism


def test_the_kit_touches_no_private_name_of_trio_or_hypothesis() -> None:
    # A private name can change its meaning in any release, and nothing would catch it.
    private = re.compile(r"\btrio\._|\btrio\.\w+\._|hypothesis\.internal|_ALLOW_DETERMINISTIC")
    kit = Path(galaxy_actors.testing.__file__).parent
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for path in sorted(kit.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert not found


def test_a_scenario_outside_hypothesis_is_deterministic_and_says_so() -> None:
    first = run_scenario(DROPPED, POLICY, seed=3)
    assert first.deterministic and first.nondeterminism is None
    assert run_scenario(DROPPED, POLICY, seed=3) == first


@settings(max_examples=3, database=None, deadline=None)
@given(seed=st.integers(0, 9))
def test_a_scenario_inside_an_example_is_deterministic(seed: int) -> None:
    assert run_scenario(DROPPED, POLICY, seed=seed).deterministic


def test_without_hypothesis_a_trace_says_its_replay_may_differ_and_strategies_say_what_to_install(
    tmp_path: Path,
) -> None:
    # A fresh interpreter where Hypothesis cannot be imported: Trio's plugin never runs.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["hypothesis"] = None  # import hypothesis now raises ModuleNotFoundError
        from galaxy_actors import RestartPolicy
        from galaxy_actors.testing import DeviceSchedule, FaultSchedule, run_scenario
        from galaxy_actors.testing._report import scenario_report

        trace = run_scenario(FaultSchedule(devices=[DeviceSchedule("d0")], settle=1.0),
                             RestartPolicy(), seed=1)
        print("deterministic:", trace.deterministic)
        print(scenario_report(trace))
        try:
            from galaxy_actors.testing import fault_schedules
        except ImportError as exc:
            print("ImportError:", exc)
        import galaxy_actors.testing as kit
        for name in ("fault_schedules", "restart_policies", "faults", "task_submissions",
                     "actions"):
            try:
                getattr(kit, name)()
            except ImportError as exc:
                print(name, "says:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    out = done.stdout
    assert "deterministic: False" in out
    assert (
        "replay may differ: scheduling was not deterministic because Hypothesis is not "
        "installed (pip install 'galaxy-actors[testing]')" in out
    )
    assert "ImportError: " in out and "pip install 'galaxy-actors[testing]'" in out
    for name in ("fault_schedules", "restart_policies", "faults", "task_submissions", "actions"):
        said = next(line for line in out.splitlines() if line.startswith(f"{name} says:"))
        assert name in said and "pip install 'galaxy-actors[testing]'" in said


# --------------------------------------------------------------------------- failures


def test_a_failing_assertion_of_the_tests_own_prints_the_timeline_and_replay_line() -> None:
    @settings(max_examples=5, database=None, deadline=None, phases=[Phase.generate])
    @given(seed=st.just(4))
    def users_property(seed: int) -> None:
        trace = run_scenario(DROPPED, POLICY, seed=seed)
        assert len(trace.attempts("d0")) == 1, "my own assertion"

    with pytest.raises(AssertionError, match="my own assertion") as info:
        users_property()
    notes = "\n".join(getattr(info.value, "__notes__", ()))
    assert "scenario (seed=4):" in notes
    assert "t=1       d0: drop the connection" in notes
    assert f"replay: run_scenario({DROPPED!r}, " in notes


def test_the_scenarios_log_goes_to_the_trace_and_a_report_shows_a_bounded_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    schedule = FaultSchedule(
        devices=[DeviceSchedule("d0", faults=[DropConnection(at=float(t)) for t in range(1, 30)])],
        settle=2.0,
    )
    trace = run_scenario(schedule, RestartPolicy(reconnect_delay=0.5, max_retries=100), seed=0)
    assert not [r for r in caplog.records if r.name.startswith("galaxy_actors")]
    assert len(trace.log) >= 29
    assert all(line.level == "WARNING" for line in trace.log)
    from galaxy_actors.testing._report import LOG_LINES_SHOWN, scenario_report

    report = scenario_report(trace).splitlines()
    start = next(i for i, line in enumerate(report) if line.startswith("log: "))
    assert f"log: {len(trace.log)} record(s) ({len(trace.log)} WARNING)" in report[start]
    replay = next(i for i, line in enumerate(report) if line.startswith("replay: "))
    assert 1 <= replay - start - 1 <= LOG_LINES_SHOWN
    assert "(x29)" in report[replay - 1]  # one line per run of the same message
    # The library's logging is as it was afterwards.
    assert logging.getLogger("galaxy_actors").propagate


# --------------------------------------------------------------------------- no progress


def at_once_when_rejected(reason: FailureReason, attempts: int) -> Decision | None:
    if reason is FailureReason.REGISTRATION_REJECTED:
        return Restart(0.0)
    return None


SPINNING = FaultSchedule(
    devices=[
        DeviceSchedule(
            "d0", faults=[RejectRegistration(at=1.0, duration=2.0), DropConnection(at=1.5)]
        )
    ],
    settle=5.0,
)
SPIN_POLICY = RestartPolicy(reconnect_delay=1.0, per_reason=at_once_when_rejected)


@pytest.fixture
def no_restart_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor without its restart floor: the hot loop the harness must catch (a
    broken floor, or any other way of making no progress in virtual time)."""
    monkeypatch.setattr(host_module, "RestartFloor", functools.partial(RestartFloor, delay=0.0))


def test_the_restart_floor_turns_a_restart_at_once_for_ever_into_progress() -> None:
    trace = run_scenario(SPINNING, SPIN_POLICY, seed=0)
    assert trace.finished and trace.stalled is None
    attempts = [e for e in trace.events if isinstance(e, RestartScheduled)]
    # Five at once, then one per 0.25 s while the registrations are refused (2 s).
    assert 5 <= len(attempts) <= 20


@pytest.mark.usefixtures("no_restart_floor")
def test_a_policy_restarting_at_once_for_ever_fails_the_scenario_with_its_schedule() -> None:
    started = time.perf_counter()
    with pytest.raises(ScenarioStalled) as info:
        run_scenario(SPINNING, SPIN_POLICY, seed=0)
    assert time.perf_counter() - started < 60
    message = str(info.value)
    assert "no progress in virtual time: 1,001 connection attempts by 'd0' at t=2.5" in message
    assert "t=1       d0: reject registrations for 2 s" in message
    assert "replay: run_scenario(" in message and "per_reason=at_once_when_rejected" in message
    assert info.value.trace.stalled is not None and not info.value.trace.finished


@pytest.mark.usefixtures("no_restart_floor")
def test_scheduler_steps_at_one_instant_are_bounded_too() -> None:
    settings = ScenarioSettings(max_attempts_per_instant=10**9, max_steps_per_instant=2_000)
    with pytest.raises(ScenarioStalled, match=r"more than 2,000 scheduler steps at t=2\.5"):
        run_scenario(SPINNING, SPIN_POLICY, seed=0, settings=settings)


# --------------------------------------------------------------------------- what is recorded


def test_a_stale_task_end_reaches_the_new_connection_and_ends_nothing_there() -> None:
    schedule = FaultSchedule(
        devices=[DeviceSchedule("d0", faults=[StaleTaskEnd(at=1.0, delay=1.0)])],
        tasks=[
            TaskSubmission(at=0.5, device="d0", task_id="t0", duration=3.0),
            TaskSubmission(at=1.5, device="d0", task_id="t1", duration=3.0),
        ],
    )
    trace = run_scenario(schedule, POLICY)
    check_invariants(trace)
    # Reconnected at t=2, where t1 went out; t0's TASK_END came there a second later.
    stale = [r for r in trace.wire if r.kind == "received" and r.type == "task_end"]
    assert [(r.at, r.connection, r.session_id) for r in stale] == [
        (3.0, 2, "scenario@t0"),
        (5.0, 2, "scenario@t1"),
    ]
    assert [e.kind for e in trace.events_of(BadFrame)] == ["unknown_task"]
    assert trace.task("t0").outcome == "DeviceDisconnected"
    t1 = trace.task("t1")
    assert (t1.outcome, t1.sent_at, t1.accepted_at, t1.ended_at) == ("completed", 2.0, 2.0, 5.0)


def test_the_trace_says_where_each_device_actor_ran() -> None:
    trace = run_scenario(DROPPED, POLICY)
    assert [(a.moment, a.task, a.parent, a.in_supervisor_nursery) for a in trace.actor_tasks] == [
        ("start", "device:d0", "the supervisor's nursery", True),
        ("end", "device:d0", "the supervisor's nursery", True),
    ]
