"""Hypothesis strategies for scenarios: `fault_schedules` and `restart_policies`.

Imported on first use of one of these names from `galaxy_actors.testing` (its module
``__getattr__``), so that Hypothesis stays a test-time dependency: ``import
galaxy_actors.testing`` never imports it, and without Hypothesis the first use raises an
`ImportError` naming the extra to install.

Everything shrinks toward the simple case, so a failing scenario is reported as the smallest
one that still fails: fewer devices, fewer faults and tasks, earlier and shorter events, the
first choice of each list (a dropped connection before any other fault, at-most-once before
at-least-once, no jitter, no cap, no reset_after, no intensity limit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import attrs

from ._determinism import INSTALL_HINT

try:
    from hypothesis import strategies as st
    from hypothesis.strategies import SearchStrategy
except ModuleNotFoundError as exc:
    if exc.name is None or exc.name.partition(".")[0] != "hypothesis":
        raise
    raise ImportError(
        "galaxy_actors.testing's strategies (fault_schedules, restart_policies, faults, "
        f"task_submissions, actions) need Hypothesis: {INSTALL_HINT}",
        name=exc.name,
    ) from exc

from .._actors._task import Delivery
from .._sansio._policy import Jitter, ReasonHook, RestartPolicy
from ._faults import (
    Action,
    CancelTask,
    Connect,
    DelayTaskEnd,
    DeviceSchedule,
    Disconnect,
    DropConnection,
    Fault,
    FaultSchedule,
    LoseTaskEnd,
    MalformedFrame,
    RefuseConnections,
    RejectRegistration,
    RejectTasks,
    StaleTaskEnd,
    StallHeartbeats,
    TaskSubmission,
)

__all__ = [
    "EXTRA_FAULT_KINDS",
    "FAULT_KINDS",
    "actions",
    "fault_schedules",
    "faults",
    "restart_policies",
    "task_submissions",
]

T = TypeVar("T")

#: Every kind of fault, simplest first (the order `faults` shrinks in).
FAULT_KINDS: tuple[type[Any], ...] = (
    DropConnection,
    RefuseConnections,
    StallHeartbeats,
    RejectRegistration,
    MalformedFrame,
    LoseTaskEnd,
    DelayTaskEnd,
    RejectTasks,
)

#: Faults `faults` draws only when asked for by name (``kinds``): `StaleTaskEnd`, which the
#: isolation property draws. Left out of the defaults so that the searches written for
#: `FAULT_KINDS` keep drawing (and shrinking to) the same scenarios.
EXTRA_FAULT_KINDS: tuple[type[Any], ...] = (StaleTaskEnd,)


# Defaults, built once (strategies are lazy values; ruff's B008 wants them out of signatures).
_PRIORITIES: SearchStrategy[int] = st.integers(0, 2)
_TIMEOUTS: SearchStrategy[float] = st.sampled_from([1000.0, 3.0])
_BOOLEANS: SearchStrategy[bool] = st.booleans()
_DEVICES: SearchStrategy[int] = st.integers(1, 2)
_TASK_DURATIONS: SearchStrategy[float] = st.sampled_from([1.0, 0.0, 4.0])
_RECONNECT_DELAYS: SearchStrategy[float] = st.sampled_from([1.0, 0.5, 2.0, 0.0])
_MAX_RETRIES: SearchStrategy[int] = st.integers(0, 4)
_MAX_DELAYS: SearchStrategy[float | None] = st.none() | st.sampled_from([3.0, 1.5])
_JITTERS: SearchStrategy[Jitter] = st.sampled_from(list(Jitter))
_RESET_AFTERS: SearchStrategy[float | None] = st.none() | st.sampled_from([5.0, 1.0])
_INTENSITIES: SearchStrategy[tuple[int, float] | None] = st.none() | st.tuples(
    st.integers(1, 3), st.sampled_from([10.0, 30.0])
)


def _strategy(value: T | SearchStrategy[T]) -> SearchStrategy[T]:
    """Let every argument be a plain value or a strategy."""
    return value if isinstance(value, SearchStrategy) else st.just(value)


def _times(horizon: float, step: float) -> SearchStrategy[float]:
    # Multiples of ``step``: readable, and coincident times (the races worth testing) are
    # likely. Integers shrink toward 0: earlier.
    return st.integers(0, int(horizon / step)).map(lambda n: n * step)


def _durations(longest: float, step: float) -> SearchStrategy[float]:
    return st.integers(1, max(1, int(longest / step))).map(lambda n: n * step)


def faults(
    *,
    kinds: Sequence[type[Any]] = FAULT_KINDS,
    horizon: float = 20.0,
    longest: float = 15.0,
    step: float = 0.5,
) -> SearchStrategy[Fault]:
    """One fault of one of ``kinds``, starting within ``horizon`` seconds and lasting at most
    ``longest`` seconds (windows), on a grid of ``step`` seconds."""
    at = _times(horizon, step)
    duration = _durations(longest, step)
    builders: dict[type[Any], SearchStrategy[Fault]] = {
        DropConnection: st.builds(DropConnection, at=at),
        RefuseConnections: st.builds(RefuseConnections, at=at, duration=duration),
        StallHeartbeats: st.builds(StallHeartbeats, at=at, duration=duration),
        RejectRegistration: st.builds(RejectRegistration, at=at, duration=duration),
        MalformedFrame: st.builds(MalformedFrame, at=at, binary=st.booleans()),
        LoseTaskEnd: st.builds(LoseTaskEnd, at=at, duration=duration),
        DelayTaskEnd: st.builds(
            DelayTaskEnd, at=at, duration=duration, delay=_times(longest, step)
        ),
        RejectTasks: st.builds(RejectTasks, at=at, duration=duration),
        StaleTaskEnd: st.builds(StaleTaskEnd, at=at, delay=_times(2.0, step)),
    }
    unknown = [k for k in kinds if k not in builders]
    if unknown or not kinds:
        raise ValueError(
            f"kinds must be a non-empty selection of FAULT_KINDS and EXTRA_FAULT_KINDS, "
            f"got {kinds!r}"
        )
    return st.one_of([builders[k] for k in (*FAULT_KINDS, *EXTRA_FAULT_KINDS) if k in kinds])


def task_submissions(
    device_ids: Sequence[str],
    *,
    horizon: float = 20.0,
    step: float = 0.5,
    deliveries: Sequence[Delivery] = (Delivery.AT_MOST_ONCE, Delivery.AT_LEAST_ONCE),
    priorities: SearchStrategy[int] | int = _PRIORITIES,
    durations: SearchStrategy[float | None] | None = None,
    timeouts: SearchStrategy[float] | float = _TIMEOUTS,
    fails: SearchStrategy[bool] | bool = _BOOLEANS,
) -> SearchStrategy[TaskSubmission]:
    """One task submission to one of ``device_ids``. Its ``task_id`` is a placeholder:
    `fault_schedules` numbers tasks t0, t1, ... in the order it draws them."""
    if durations is None:
        durations = st.none() | _times(8.0, step)
    return st.builds(
        TaskSubmission,
        at=_times(horizon, step),
        device=st.sampled_from(list(device_ids)),
        task_id=st.just("t?"),
        priority=_strategy(priorities),
        delivery=st.sampled_from(list(deliveries)),
        duration=durations,
        fails=_strategy(fails),
        timeout=_strategy(timeouts),
    )


def actions(
    device_ids: Sequence[str],
    task_ids: Sequence[str] = (),
    *,
    horizon: float = 20.0,
    step: float = 0.5,
) -> SearchStrategy[Action]:
    """One user action: disconnect or connect one of ``device_ids``, or cancel one of
    ``task_ids``."""
    at = _times(horizon, step)
    device = st.sampled_from(list(device_ids))
    choices: list[SearchStrategy[Action]] = [
        st.builds(Disconnect, at=at, device=device, force=st.booleans()),
        st.builds(Connect, at=at, device=device),
    ]
    if task_ids:
        choices.append(st.builds(CancelTask, at=at, task_id=st.sampled_from(list(task_ids))))
    return st.one_of(choices)


def fault_schedules(
    *,
    devices: SearchStrategy[int] | int = _DEVICES,
    max_faults: int = 4,
    max_tasks: int = 6,
    horizon: float = 20.0,
    step: float = 0.5,
    fault_kinds: Sequence[type[Any]] = FAULT_KINDS,
    deliveries: Sequence[Delivery] = (Delivery.AT_MOST_ONCE, Delivery.AT_LEAST_ONCE),
    priorities: SearchStrategy[int] | int = _PRIORITIES,
    task_durations: SearchStrategy[float] | float = _TASK_DURATIONS,
    device_max_retries: SearchStrategy[int | None] | int | None = None,
    reorder_replies: SearchStrategy[bool] | bool = False,
    max_actions: int = 0,
    settle: float = 40.0,
) -> SearchStrategy[FaultSchedule]:
    """A `FaultSchedule`: 1 to 2 devices ``d0``, ``d1``, ... (or ``devices``), each with up
    to ``max_faults`` faults, and up to ``max_tasks`` task submissions ``t0``, ``t1``, ...
    spread over them, all within ``horizon`` seconds.

    Arguments:
        fault_kinds: which faults to draw (from `FAULT_KINDS` and `EXTRA_FAULT_KINDS`).
        deliveries, priorities: what the submissions use.
        task_durations: each device's default task duration.
        device_max_retries: per-device ``max_retries`` overrides (None: the policy's).
        reorder_replies: whether agents answer out of order.
        max_actions: up to this many user actions (`Disconnect`, `Connect`, `CancelTask`);
            none by default: the faults alone.
        settle: how long the scenario runs after its last event.

    >>> @given(schedule=fault_schedules(max_tasks=3, fault_kinds=[DropConnection]))
    ... def test_something(schedule): ...    # doctest: +SKIP
    """
    # The parts are built here, once, not in every draw: Hypothesis validates each new
    # strategy the first time it draws from it, which cost as much as playing the scenario.
    count_strategy = _strategy(devices)
    fault_lists = st.lists(
        faults(kinds=fault_kinds, horizon=horizon, step=step), max_size=max_faults
    )
    retries_strategy = _strategy(device_max_retries)
    durations_strategy = _strategy(task_durations)
    reorder_strategy = _strategy(reorder_replies)
    # The rest depends on the devices drawn: built once per device count.
    task_lists: dict[int, SearchStrategy[list[TaskSubmission]]] = {}
    action_lists: dict[tuple[int, int], SearchStrategy[list[Action]]] = {}

    @st.composite
    def schedules(draw: st.DrawFn) -> FaultSchedule:
        count = draw(count_strategy)
        ids = [f"d{i}" for i in range(count)]
        device_schedules = []
        for device_id in ids:
            retries = draw(retries_strategy)
            device_schedules.append(
                DeviceSchedule(
                    device_id,
                    faults=draw(fault_lists),
                    task_duration=draw(durations_strategy),
                    max_retries=retries,
                    reorder_replies=draw(reorder_strategy),
                )
            )
        if count not in task_lists:
            task_lists[count] = st.lists(
                task_submissions(
                    ids, horizon=horizon, step=step, deliveries=deliveries, priorities=priorities
                ),
                max_size=max_tasks,
            )
        drawn = draw(task_lists[count])
        tasks = [_renamed(task, f"t{i}") for i, task in enumerate(drawn)]
        user: list[Action] = []
        if max_actions:
            key = (count, len(tasks))
            if key not in action_lists:
                task_ids = [t.task_id for t in tasks]
                action_lists[key] = st.lists(
                    actions(ids, task_ids, horizon=horizon, step=step), max_size=max_actions
                )
            user = draw(action_lists[key])
        return FaultSchedule(devices=device_schedules, tasks=tasks, actions=user, settle=settle)

    return schedules()


def _renamed(task: TaskSubmission, task_id: str) -> TaskSubmission:
    return attrs.evolve(task, task_id=task_id)


def restart_policies(
    *,
    reconnect_delay: SearchStrategy[float] | float = _RECONNECT_DELAYS,
    max_retries: SearchStrategy[int] | int = _MAX_RETRIES,
    max_delay: SearchStrategy[float | None] | float | None = _MAX_DELAYS,
    jitter: SearchStrategy[Jitter] | Jitter = _JITTERS,
    reset_after: SearchStrategy[float | None] | float | None = _RESET_AFTERS,
    intensity: SearchStrategy[tuple[int, float] | None] | tuple[int, float] | None = _INTENSITIES,
    per_reason: SearchStrategy[ReasonHook | None] | ReasonHook | None = None,
) -> SearchStrategy[RestartPolicy]:
    """`RestartPolicy` values with short delays (scenarios run for seconds, not minutes).
    Each argument is a value to fix or a strategy to draw from.

    >>> restart_policies(jitter=Jitter.NONE, max_retries=3)   # only the delays vary
    ... # doctest: +SKIP
    """
    return st.builds(
        RestartPolicy,
        reconnect_delay=_strategy(reconnect_delay),
        max_retries=_strategy(max_retries),
        max_delay=_strategy(max_delay),
        jitter=_strategy(jitter),
        reset_after=_strategy(reset_after),
        intensity=_strategy(intensity),
        per_reason=_strategy(per_reason),
    )
