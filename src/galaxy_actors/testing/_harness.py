"""The scenario harness: play a `FaultSchedule` against a real supervisor, record a `Trace`,
and check the library's invariants on it.

Theory of operation. `run_scenario` starts one `SimulatedAgent` per device on a
`MemoryNetwork`, opens a supervisor whose connector records every connection attempt and
every frame in both directions (one log, one sequence number, so "before" is exact even at one
virtual instant), plays the schedule's steps at their times on ``MockClock(autojump_threshold=0)``
(virtual time: exact and instant), leaves the block at ``schedule.run_until``, and records what
is left. The supervisor's jitter and the agents' reordering are seeded from ``seed``; Trio's
scheduler is seeded by Hypothesis (see `_determinism`), so the same arguments give the same
`Trace`, and the trace says so (``trace.deterministic``) or says why not.

Two guards keep a run finite: a virtual-time deadline, and the `ProgressGuard`, which stops a
scenario that keeps running at one virtual instant (`ScenarioStalled`).

`check_invariants` reads only the trace. It does not trust the supervisor's bookkeeping: task
order is rebuilt from the wire, and the restart decisions from `PolicyModel`, the restart
policy's documented behaviour written out a second time, independently of
`RestartPolicy.decide`.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections import defaultdict
from functools import partial
from typing import Any, Final

import attrs
import trio
import trio.testing

from .._actors._events import (
    Event,
    Subscription,
)
from .._actors._running import open_supervisor
from .._actors._supervisor import Supervisor
from .._actors._task import TaskHandle
from .._sansio._aip import session_id_for
from .._sansio._errors import ConfigurationError, GalaxyActorsError, TaskError
from .._sansio._policy import RestartPolicy
from .._transports._memory import MemoryNetwork
from ._agent import MALFORMED_FRAME, SimulatedAgent
from ._determinism import call_seeded, in_hypothesis_example, scheduling_nondeterminism
from ._faults import (
    Action,
    CancelTask,
    Connect,
    DelayTaskEnd,
    Disconnect,
    DropConnection,
    FaultSchedule,
    LoseTaskEnd,
    MalformedFrame,
    RefuseConnections,
    RejectRegistration,
    RejectTasks,
    StaleTaskEnd,
    StallHeartbeats,
    Step,
    TaskSubmission,
)
from ._progress import ProgressGuard, ScenarioStalled
from ._recording import RecordingConnector, TaskWatch, Wire, descends_from, describe_task
from ._report import capture_logs, note_report
from ._trace import ActorTask, AgentFrame, LogLine, ScenarioSettings, TaskRecord, Trace

BINARY_FRAME: Final = b"\x00binary frame"


# =========================================================================== the runner


def run_scenario(
    schedule: FaultSchedule,
    policy: RestartPolicy | None = None,
    *,
    seed: int = 0,
    settings: ScenarioSettings | None = None,
) -> Trace:
    """Play ``schedule`` against a supervisor using ``policy``, in virtual time, and return
    its `Trace`. Synchronous: it calls `trio.run` with ``MockClock(autojump_threshold=0)``,
    so a minute of scenario takes milliseconds.

    Deterministic when Hypothesis is installed: the jitter and the agents are seeded from
    ``seed``, and Trio's scheduler by Hypothesis (outside a Hypothesis example, the run is
    wrapped in a one-example Hypothesis test for that). ``trace.deterministic`` says whether
    it was, ``trace.nondeterminism`` why not. Inside a Hypothesis example the scenario's
    report (timeline and ``replay:`` line) is noted, so it prints whichever assertion fails.

    Raises `ScenarioStalled` when the scenario stops moving in virtual time (see
    `ScenarioSettings`).

    >>> trace = run_scenario(schedule, RestartPolicy(reconnect_delay=1.0), seed=7)
    ... # doctest: +SKIP
    >>> check_invariants(trace)
    """
    run = partial(
        trio.run,
        partial(_run, schedule, policy or RestartPolicy(), seed, settings or ScenarioSettings()),
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    trace, why_not = call_seeded(run)
    return _finish(attrs.evolve(trace, nondeterminism=why_not))


async def run_scenario_async(
    schedule: FaultSchedule,
    policy: RestartPolicy | None = None,
    *,
    seed: int = 0,
    settings: ScenarioSettings | None = None,
) -> Trace:
    """`run_scenario` inside a running Trio test, which must run on
    ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture). The
    scenario's times count from the moment of the call. Its scheduling is reproducible only
    inside a Hypothesis example, and only if nothing else in the test runs meanwhile: the
    trace cannot see the rest of the test, so it says deterministic only in such an example."""
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock) or clock.autojump_threshold != 0:
        raise ConfigurationError(
            "run_scenario_async needs trio.testing.MockClock(autojump_threshold=0): "
            "use pytest-trio's autojump_clock fixture, or run_scenario"
        )
    why_not = scheduling_nondeterminism()
    if why_not is None and not in_hypothesis_example():
        why_not = "run_scenario_async ran outside a Hypothesis example"
    trace = await _run(schedule, policy or RestartPolicy(), seed, settings or ScenarioSettings())
    return _finish(attrs.evolve(trace, nondeterminism=why_not))


def _finish(trace: Trace) -> Trace:
    trace = note_report(trace)
    if trace.stalled is not None:
        raise ScenarioStalled(trace.stalled, trace)
    return trace


@attrs.define(eq=False)
class _Knobs:
    """One device's agent, and the fault windows open on it."""

    agent: SimulatedAgent
    base_task_duration: float
    open: dict[type[Any], list[Any]] = attrs.Factory(lambda: defaultdict(list))

    def apply(self) -> None:
        agent, open_ = self.agent, self.open
        agent.refuse_connections = bool(open_[RefuseConnections])
        agent.answer_heartbeats = not open_[StallHeartbeats]
        rejecting = open_[RejectRegistration]
        agent.reject_registration = rejecting[-1].text if rejecting else None
        refusing = open_[RejectTasks]
        agent.reject_tasks = refusing[-1].text if refusing else None
        agent.lose_task_end = bool(open_[LoseTaskEnd])
        delays = open_[DelayTaskEnd]
        agent.task_duration = delays[-1].delay if delays else self.base_task_duration


@attrs.define(eq=False)
class _Scenario:
    """One run of a schedule: the agents, the wire, the callers, and what they saw."""

    schedule: FaultSchedule
    policy: RestartPolicy
    seed: int
    settings: ScenarioSettings
    started_at: float = attrs.Factory(trio.current_time)
    network: MemoryNetwork = attrs.Factory(MemoryNetwork)
    wire: Wire = attrs.Factory(Wire)
    knobs: dict[str, _Knobs] = attrs.Factory(dict)
    handles: dict[str, TaskHandle] = attrs.Factory(dict)
    refused: dict[str, str] = attrs.Factory(dict)
    caller_saw: dict[str, list[str]] = attrs.Factory(lambda: defaultdict(list))
    events: list[Event] = attrs.Factory(list)
    watch: TaskWatch = attrs.Factory(TaskWatch)
    progress: ProgressGuard = attrs.field(init=False)
    log: list[LogLine] = attrs.Factory(list)
    exit_at: float = math.nan
    actor_tasks: list[ActorTask] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        settings = self.settings
        self.progress = ProgressGuard(
            settings.max_attempts_per_instant, settings.max_steps_per_instant, self.started_at
        )

    @property
    def urls(self) -> dict[str, str]:
        return {d.device_id: f"ws://agent-{i}/ws" for i, d in enumerate(self.schedule.devices)}

    async def run(self) -> Trace:
        schedule = self.schedule
        leftovers: list[str] = []
        trio.lowlevel.add_instrument(self.watch)
        trio.lowlevel.add_instrument(self.progress)
        try:
            with capture_logs(self.started_at) as self.log:
                async with trio.open_nursery() as agents_nursery:
                    self._start_agents(agents_nursery)
                    async with trio.open_nursery() as callers:
                        deadline = self.started_at + schedule.run_until + 1000.0
                        with trio.move_on_at(deadline) as guard:
                            self.progress.scope = guard
                            await self._supervise(callers)
                        self.progress.scope = None
                        self.exit_at = trio.current_time()
                        self.watch.recording = False
                        leftovers = [
                            describe_task(task)
                            for task in self.watch.alive
                            if not descends_from(task, (agents_nursery, callers))
                        ]
                        await self._let_the_dust_settle()
                        open_after = {d: k.agent.open_connections for d, k in self.knobs.items()}
                        callers.cancel_scope.cancel()
                    agents_nursery.cancel_scope.cancel()
        finally:
            trio.lowlevel.remove_instrument(self.progress)
            trio.lowlevel.remove_instrument(self.watch)
        return self._trace(leftovers, open_after, finished=not guard.cancelled_caught)

    def _start_agents(self, nursery: trio.Nursery) -> None:
        urls = self.urls
        for i, device in enumerate(self.schedule.devices):
            agent = SimulatedAgent(
                devices=[device.device_id],
                task_duration=device.task_duration,
                reorder_replies=device.reorder_replies,
                seed=self.seed * 1000 + i,
            )
            agent.serve_memory(self.network, urls[device.device_id], nursery)
            self.knobs[device.device_id] = _Knobs(agent, device.task_duration)

    async def _supervise(self, callers: trio.Nursery) -> None:
        settings, urls = self.settings, self.urls
        self.watch.recording = True
        subscription: Subscription | None = None
        # The supervisor's block opens its nursery in this task: it is the child nursery
        # that appears inside the block (public Trio API; the supervisor's is private).
        before = set(map(id, trio.lowlevel.current_task().child_nurseries))
        with contextlib.ExitStack() as stack:
            try:
                async with open_supervisor(
                    settings.supervisor,
                    policy=self.policy,
                    connector=RecordingConnector(
                        self.network.connector(),
                        self.wire,
                        {u: d for d, u in urls.items()},
                        self.progress.attempt,
                    ),
                    rng=random.Random(self.seed),
                ) as sup:
                    # Unbounded, and kept open through the shutdown, so no event is missed.
                    subscription = stack.enter_context(sup.subscribe(buffer=math.inf))
                    opened = [
                        n
                        for n in trio.lowlevel.current_task().child_nurseries
                        if id(n) not in before
                    ]
                    home = opened[0] if len(opened) == 1 else None
                    actors: dict[str, list[trio.lowlevel.Task]] = {}
                    for device in self.schedule.devices:
                        first = len(self.watch.spawned)
                        sup.add_device(
                            device.device_id,
                            urls[device.device_id],
                            "simulated",
                            max_retries=device.max_retries,
                        )
                        actors[device.device_id] = self.watch.spawned[first:]
                        self._record_actors(device.device_id, "start", actors, home)
                    for step in self.schedule.steps():
                        await trio.sleep_until(self.started_at + step.at)
                        if isinstance(step.what, TaskSubmission):
                            await self._submit(sup, step.what, callers)
                        elif isinstance(step.what, Disconnect | Connect | CancelTask):
                            self._act(sup, step.what, step.device_id, callers)
                        else:
                            await _play(self.knobs[step.device_id], step)
                    await trio.sleep_until(self.started_at + self.schedule.run_until)
                    for device in self.schedule.devices:
                        self._record_actors(device.device_id, "end", actors, home)
            finally:
                while subscription is not None:
                    try:
                        self.events.append(subscription.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break

    def _record_actors(
        self,
        device_id: str,
        moment: str,
        actors: dict[str, list[trio.lowlevel.Task]],
        home: trio.Nursery | None,
    ) -> None:
        """Record where ``device_id``'s actor runs: the tasks `add_device` spawned for it,
        and, at the end, whether each is still a child of the supervisor's nursery."""
        now = trio.current_time()
        tasks = actors[device_id]
        if not tasks and moment == "start":
            self.actor_tasks.append(
                ActorTask(device_id, now, moment, None, "nobody: no task spawned", False)
            )
        for task in tasks:
            nursery = task.parent_nursery
            if moment == "end" and task not in self.watch.alive:
                parent, inside = "no nursery any more (it had exited)", False
            elif nursery is not None and nursery is home:
                inside = moment == "start" or task in nursery.child_tasks
                parent = "the supervisor's nursery"
            else:
                owner = "nobody" if nursery is None else nursery.parent_task.name
                parent, inside = f"a nursery of {owner!r}", False
            self.actor_tasks.append(ActorTask(device_id, now, moment, task.name, parent, inside))

    async def _submit(self, sup: Supervisor, task: TaskSubmission, callers: trio.Nursery) -> None:
        session_id = session_id_for(self.settings.supervisor.task_name, task.task_id)
        self.wire.add(task.device, "submit", session_id=session_id)
        try:
            handle = await sup.submit(
                f"scenario task {task.task_id}",
                task.task_data(),
                device_id=task.device,
                task_id=task.task_id,
                task_timeout=task.timeout,
                delivery=task.delivery,
                priority=task.priority,
            )
        except GalaxyActorsError as exc:
            self.refused[task.task_id] = type(exc).__name__
            self.wire.add(
                task.device, "refused_task", session_id=session_id, detail=type(exc).__name__
            )
        else:
            self.handles[task.task_id] = handle
            callers.start_soon(self._await_outcome, task.task_id, handle)

    def _act(self, sup: Supervisor, action: Action, device_id: str, callers: trio.Nursery) -> None:
        wire = self.wire
        if isinstance(action, CancelTask):
            handle = self.handles.get(action.task_id)
            session_id = session_id_for(self.settings.supervisor.task_name, action.task_id)
            wire.add(device_id, "cancel", session_id=session_id)
            if handle is not None:
                sup.cancel_task(handle, "the scenario cancelled it")
            return

        # In a task of its own, as a user's call would be: both wait (for the grace, for the
        # attempt) and the schedule goes on meanwhile. Logged in that task, right before the
        # call, so nothing happens between the log and the call's first (synchronous) steps.
        async def call() -> None:
            with contextlib.suppress(GalaxyActorsError):
                if isinstance(action, Disconnect):
                    wire.add(device_id, "disconnect", detail="force" if action.force else None)
                    await sup.disconnect(device_id, force=action.force)
                else:
                    wire.add(device_id, "connect")
                    await sup.connect(device_id)

        callers.start_soon(call)

    async def _await_outcome(self, task_id: str, handle: TaskHandle) -> None:
        try:
            result = await handle.result()
        except TaskError as exc:
            self.caller_saw[task_id].append(type(exc).__name__)
        else:
            self.caller_saw[task_id].append(str(result.status))

    async def _let_the_dust_settle(self) -> None:
        # A few scheduling passes, no virtual time: enough for the agents to see their
        # connections closed and for the callers to be woken by their outcomes.
        for _ in range(100):
            if all(k.agent.open_connections == 0 for k in self.knobs.values()) and all(
                self.caller_saw.get(task_id) for task_id in self.handles
            ):
                return
            await trio.lowlevel.checkpoint()

    def _trace(self, leftovers: list[str], open_after: dict[str, int], *, finished: bool) -> Trace:
        task_name = self.settings.supervisor.task_name
        records = []
        for task in self.schedule.tasks:
            handle = self.handles.get(task.task_id)
            outcome = detail = None
            times: tuple[float | None, ...] = (None, None, None)
            if handle is not None and handle.done:
                result = handle.outcome
                if isinstance(result, TaskError):
                    outcome, detail = type(result).__name__, str(result)
                elif result is not None:
                    outcome, detail = str(result.status), result.error
                    timings = result.timings
                    times = (timings.sent_at, timings.accepted_at, timings.ended_at)
            records.append(
                TaskRecord(
                    task,
                    session_id_for(task_name, task.task_id),
                    self.refused.get(task.task_id),
                    outcome,
                    detail,
                    tuple(self.caller_saw.get(task.task_id, ())),
                    *times,
                )
            )
        agent_frames = {
            device_id: tuple(
                AgentFrame(
                    f.at,
                    f.connection,
                    None if f.message is None else str(f.message.type),
                    None if f.message is None else f.message.session_id,
                )
                for f in k.agent.received
            )
            for device_id, k in self.knobs.items()
        }
        return Trace(
            schedule=self.schedule,
            policy=self.policy,
            seed=self.seed,
            settings=self.settings,
            started_at=self.started_at,
            exit_at=self.exit_at,
            events=tuple(self.events),
            wire=tuple(self.wire.records),
            agent_frames=agent_frames,
            tasks=tuple(records),
            leftover_tasks=tuple(leftovers),
            open_connections_after_exit=open_after,
            finished=finished,
            actor_tasks=tuple(self.actor_tasks),
            log=tuple(self.log),
            stalled=self.progress.stalled,
        )


async def _run(
    schedule: FaultSchedule, policy: RestartPolicy, seed: int, settings: ScenarioSettings
) -> Trace:
    return await _Scenario(schedule, policy, seed, settings).run()


async def _play(knobs: _Knobs, step: Step) -> None:
    fault = step.what
    if isinstance(fault, DropConnection):
        await knobs.agent.drop_connections()
    elif isinstance(fault, StaleTaskEnd):
        await knobs.agent.drop_connections(stale_ends_after=fault.delay)
    elif isinstance(fault, MalformedFrame):
        await knobs.agent.send_raw(BINARY_FRAME if fault.binary else MALFORMED_FRAME)
    else:
        windows = knobs.open[type(fault)]
        if step.kind == "start":
            windows.append(fault)
        else:
            windows.remove(fault)
        knobs.apply()
