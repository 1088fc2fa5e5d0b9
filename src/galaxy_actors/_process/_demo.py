"""The demo: a fleet of simulated agents, some flaky, supervised and fed tasks.

Theory of operation. One `SimulatedAgent` per device, each on its own port of 127.0.0.1 (or
its own address on a `MemoryNetwork`, for tests in virtual time). A fraction of them are
flaky: a chaos task per flaky agent now and then drops its connections, stalls its
heartbeats, rejects registrations for a while, or goes down long enough for the device to
give up (the demo then reconnects it, as an operator would). The supervisor uses short
heartbeat and backoff settings so that every failure shows within seconds. A feeder submits
tasks, half by capability and half to a named device; a collector per task records its one
outcome. At the end (duration or stop) the supervisor's block is left, which settles every
task, and the summary checks that nothing was lost: submitted == the sum of the outcomes.

Owners: ``fleet`` (agents, collectors, event counter) outlives the supervisor's block, so the
shutdown's outcomes are still collected; ``work`` (feeder, chaos, view) ends before it.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Sequence
from functools import partial
from typing import Final, TextIO

import attrs
import trio

from .._actors._events import ConnectionFailed, RestartScheduled, RestartsStopped
from .._actors._running import open_supervisor
from .._actors._supervisor import Supervisor
from .._actors._task import Delivery, ExecutionResult, TaskHandle
from .._sansio._errors import TaskCancelled, TaskError
from .._sansio._policy import Jitter, RestartPolicy
from .._transports._memory import MemoryNetwork
from .._transports._transport import Connector, WebSocketConnector
from ..testing import SimulatedAgent
from ._report import DeviceRow
from ._view import show_status

__all__ = ["DemoSettings", "DemoTally", "run_demo"]

logger = logging.getLogger("galaxy_actors.demo")

ALWAYS: Final = "shell"
CAPABILITIES: Final = ("browser", "office", "camera")
FAULTS: Final = ("drop", "stall-heartbeats", "reject-registration", "outage")
FAULT_WEIGHTS: Final = (3, 3, 2, 2)
OS_NAMES: Final = ("Windows", "Linux", "macOS")


@attrs.frozen
class DemoSettings:
    """What ``galaxy-actors demo`` runs: ``flaky`` is the fraction of flaky agents,
    ``duration`` in seconds, ``task_rate`` tasks per second."""

    devices: int = 8
    flaky: float = 0.25
    duration: float = 20.0
    seed: int = 0
    task_rate: float = 8.0


@attrs.define
class DemoTally:
    """What happened. Tasks: ``submitted`` were accepted; each then ended exactly once as
    completed, failed (the device said so), an error (by type) or cancelled."""

    submitted: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    errors: collections.Counter[str] = attrs.Factory(collections.Counter)
    refused: collections.Counter[str] = attrs.Factory(collections.Counter)
    faults: collections.Counter[str] = attrs.Factory(collections.Counter)
    connection_failures: collections.Counter[str] = attrs.Factory(collections.Counter)
    restarts: int = 0
    give_ups: int = 0
    reconnections: int = 0

    @property
    def outcomes(self) -> int:
        """Tasks that ended, whichever way."""
        return self.completed + self.failed + self.cancelled + self.errors.total()

    @property
    def lost(self) -> int:
        """Submitted tasks without an outcome: 0 once the supervisor has shut down."""
        return self.submitted - self.outcomes

    def footer(self, rows: Sequence[DeviceRow]) -> str:
        """One line of task counts under the status view, from the same ``rows`` as the
        table: its DONE and FAILED totals, the tasks still queued or on a device, and the
        rest of the submitted tasks, which ended without running (cancelled in a queue, or
        refused because their device gave up). The outcomes as the callers saw them are in
        the summary at the end."""
        done = sum(r.tasks_done for r in rows)
        failed = sum(r.tasks_failed for r in rows)
        waiting = sum(r.queue_depth + (r.current_task_id is not None) for r in rows)
        ended = self.submitted - done - failed - waiting
        return (
            f"tasks: {self.submitted} submitted = {done} done + {failed} failed on a device + "
            f"{waiting} queued or running + {ended} ended before running; faults injected: "
            f"{self.faults.total()}, give-ups: {self.give_ups}"
        )

    def summary(self, settings: DemoSettings, flaky: int) -> list[str]:
        """The end-of-demo report, as lines; the last one checks that nothing was lost."""

        def counts(counter: collections.Counter[str]) -> str:
            return ", ".join(f"{k} {n}" for k, n in counter.most_common()) or "-"

        check = (
            "nothing lost"
            if self.lost == 0
            else f"LOST {self.lost} (tasks without an outcome: a bug)"
        )
        return [
            f"demo summary: {settings.devices} devices ({flaky} flaky), "
            f"{settings.duration:g} s, seed {settings.seed}",
            f"  tasks submitted     {self.submitted}",
            f"    completed         {self.completed}",
            f"    failed            {self.failed}  (the device reported failure)",
            f"    errors            {self.errors.total()}  {counts(self.errors)}",
            f"    cancelled         {self.cancelled}  (queued at shutdown or disconnection)",
            f"  refused at submit   {self.refused.total()}  {counts(self.refused)}",
            f"  faults injected     {self.faults.total()}  {counts(self.faults)}",
            f"  connection failures {self.connection_failures.total()}  "
            f"{counts(self.connection_failures)}",
            f"  reconnections       {self.reconnections}",
            f"  give-ups            {self.give_ups}",
            f"  check: submitted {self.submitted} = completed {self.completed} + failed "
            f"{self.failed} + errors {self.errors.total()} + cancelled {self.cancelled}: {check}",
        ]


async def run_demo(
    settings: DemoSettings,
    *,
    out: TextIO,
    view: str = "plain",
    stop: trio.Event | None = None,
    network: MemoryNetwork | None = None,
) -> DemoTally:
    """Run the demo for ``settings.duration`` seconds or until ``stop`` is set, show the
    status with ``view`` on ``out``, print the summary there, and return the tally. With
    ``network``, agents are served in memory (virtual-time tests) instead of on 127.0.0.1."""
    rng = random.Random(settings.seed)
    ids = [f"dev-{i + 1:02d}" for i in range(settings.devices)]
    flaky = set(rng.sample(ids, round(settings.devices * settings.flaky)))
    agents = {
        device_id: SimulatedAgent(
            devices=[device_id], seed=rng.randrange(2**32), record_frames=False, close_timeout=0.5
        )
        for device_id in ids
    }
    tally = DemoTally()
    async with trio.open_nursery() as fleet:
        urls: dict[str, str] = {}
        connector: Connector
        if network is not None:
            for device_id, agent in agents.items():
                urls[device_id] = f"ws://{device_id}.demo/ws"
                agent.serve_memory(network, urls[device_id], fleet)
            connector = network.connector()
        else:
            for device_id, agent in agents.items():
                urls[device_id] = await fleet.start(agent.serve_websocket, "127.0.0.1", 0)
            connector = WebSocketConnector(connect_timeout=2.0, close_timeout=1.0)
        async with open_supervisor(
            task_name="demo",
            heartbeat_interval=2.0,
            heartbeat_timeout=1.0,
            registration_timeout=2.0,
            device_info_timeout=2.0,
            send_timeout=2.0,
            shutdown_grace=2.0,
            policy=RestartPolicy(
                reconnect_delay=0.5, max_delay=4.0, max_retries=4, jitter=Jitter.EQUAL
            ),
            connector=connector,
            rng=random.Random(rng.random()),
        ) as sup:
            await fleet.start(_count_events, sup, tally)
            for index, device_id in enumerate(ids):
                sup.add_device(
                    device_id,
                    urls[device_id],
                    OS_NAMES[index % len(OS_NAMES)],
                    capabilities=[ALWAYS, CAPABILITIES[index % len(CAPABILITIES)]],
                    metadata={"flaky": device_id in flaky},
                )
            async with trio.open_nursery() as work:
                work.start_soon(_feed, sup, fleet, tally, rng, ids, settings.task_rate)
                for device_id in sorted(flaky):
                    chaos_rng = random.Random(rng.random())
                    work.start_soon(_chaos, sup, agents[device_id], device_id, chaos_rng, tally)
                work.start_soon(
                    partial(show_status, title="galaxy_actors demo", footer=tally.footer),
                    sup,
                    view,
                    out,
                )
                with trio.move_on_after(settings.duration):
                    await (trio.Event() if stop is None else stop).wait()
                work.cancel_scope.cancel()
            logger.info("demo: stopping; queued tasks are cancelled, running ones may finish")
        # The supervisor's block is left: every task has its outcome, and the collectors and
        # the event counter end on their own.
        tally.reconnections = sum(max(0, sup.stats(d).connections - 1) for d in ids)
        fleet.cancel_scope.cancel()
    for line in tally.summary(settings, len(flaky)):
        print(line, file=out)
    out.flush()
    return tally


async def _count_events(
    sup: Supervisor, tally: DemoTally, *, task_status: trio.TaskStatus[None]
) -> None:
    # Unbounded: the demo's summary must count every event (its rate is small).
    with sup.subscribe(math.inf) as events:
        task_status.started()
        async for event in events:
            if isinstance(event, ConnectionFailed):
                tally.connection_failures[event.reason] += 1
            elif isinstance(event, RestartScheduled):
                tally.restarts += 1
            elif isinstance(event, RestartsStopped):
                tally.give_ups += 1


async def _feed(
    sup: Supervisor,
    collectors: trio.Nursery,
    tally: DemoTally,
    rng: random.Random,
    ids: list[str],
    rate: float,
) -> None:
    number = 0
    while True:
        await trio.sleep(rng.expovariate(rate))
        number += 1
        data: dict[str, object] = {"sim_duration": round(rng.uniform(0.05, 0.6), 3)}
        if rng.random() < 0.05:
            data["sim_error"] = "simulated failure"
        delivery = Delivery.AT_LEAST_ONCE if rng.random() < 0.2 else Delivery.AT_MOST_ONCE
        description = f"demo task {number}"
        try:
            if rng.random() < 0.5:
                capability = rng.choice((ALWAYS, *CAPABILITIES))
                handle = await sup.submit(
                    description,
                    data,
                    capabilities=[capability],
                    task_timeout=5.0,
                    delivery=delivery,
                )
            else:
                handle = await sup.submit(
                    description,
                    data,
                    device_id=rng.choice(ids),
                    task_timeout=5.0,
                    delivery=delivery,
                )
        except TaskError as exc:  # refused at once (the device gave up): it never existed
            tally.refused[type(exc).__name__] += 1
            continue
        tally.submitted += 1
        collectors.start_soon(_collect, handle, tally)


async def _collect(handle: TaskHandle, tally: DemoTally) -> None:
    await handle.wait()
    outcome = handle.outcome
    if isinstance(outcome, ExecutionResult):
        if outcome.ok:
            tally.completed += 1
        else:
            tally.failed += 1
    elif isinstance(outcome, TaskCancelled):
        tally.cancelled += 1
    else:
        tally.errors[type(outcome).__name__] += 1


async def _chaos(
    sup: Supervisor,
    agent: SimulatedAgent,
    device_id: str,
    rng: random.Random,
    tally: DemoTally,
) -> None:
    extra = {"device_id": device_id}
    while True:
        await trio.sleep(rng.uniform(2.0, 5.0))
        fault = rng.choices(FAULTS, weights=FAULT_WEIGHTS)[0]
        tally.faults[fault] += 1
        logger.info("demo: injecting %s on %s", fault, device_id, extra=extra)
        if fault == "drop":
            await agent.drop_connections()
        elif fault == "stall-heartbeats":
            agent.answer_heartbeats = False
            try:
                await trio.sleep(rng.uniform(3.0, 6.0))
            finally:
                agent.answer_heartbeats = True
        elif fault == "reject-registration":
            agent.reject_registration = "maintenance: try again later"
            await agent.drop_connections()
            try:
                await trio.sleep(rng.uniform(1.0, 3.0))
            finally:
                agent.reject_registration = None
        else:
            # Long enough for the device to give up (4 retries: at most 7.5 s of backoff).
            agent.refuse_connections = True
            await agent.drop_connections()
            try:
                await trio.sleep(10.0)
            finally:
                agent.refuse_connections = False
            if sup.snapshot(device_id).gave_up:
                logger.info("demo: reconnecting %s after its give-up", device_id, extra=extra)
                await sup.connect(device_id)
