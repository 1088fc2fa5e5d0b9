"""Reconnect storm: every agent connection of a fleet drops at once.

For each fleet size and each jitter mode (none / full / decorrelated), a supervisor connects
N devices to the agent process (``agent_server.py``), puts one task on every device (at-least-
once, running for ``--task-seconds``), then the agent aborts every connection at once
(``drop``: no close frame, as a network failure), and one more task per device is submitted
while the fleet is down, so it queues. Measured from the drop:

- reconnection attempts per second over time, on the wire (what the agent sees) and as the
  policy scheduled them (before waiting for a handshake slot), plotted for the three modes in
  ``results/storm.png``, and in total;
- peak concurrent opening handshakes (TCP + WebSocket, counted by a wrapping connector) and
  the peak number of devices waiting for a handshake slot (``--limit``, sampled);
- time until every device reconnected, and until every task ended and every device is idle;
- tasks lost: tasks without an outcome once all that is over (must be 0), and the outcomes.

Beside them, in the same run, the floor: N bare trio-websocket connections that reconnect
at once (no backoff, same handshake limit) and re-register.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import trio
from _common import (
    RESULTS,
    AgentProcess,
    BareFleet,
    exit_on_sigterm,
    int_list,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    write_json,
)
from _png import LineChart, render, write_png

from galaxy_actors import DeviceStatus, RestartPolicy, TaskHandle, open_supervisor
from galaxy_actors._transports._transport import DEFAULT_WEBSOCKET, WEBSOCKET_CLIENTS
from galaxy_actors.events import ConnectionFailed, RestartScheduled, StatusChanged, TaskEnded
from galaxy_actors.transport import Transport, WebSocketConnector

COLORS = {
    "none": (220, 50, 47),
    "full": (38, 139, 210),
    "decorrelated": (133, 153, 0),
    "bare": (120, 120, 120),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int_list, default=[1000, 5000])
    parser.add_argument(
        "--jitters",
        type=lambda text: [part for part in text.split(",") if part],
        default=["none", "full", "decorrelated"],
    )
    parser.add_argument("--limit", type=int, default=64, help="handshakes at once (0: no limit)")
    parser.add_argument(
        "--reconnect-delay", type=float, default=5.0, help="policy base delay (reference: 5 s)"
    )
    parser.add_argument("--max-delay", type=float, default=30.0, help="policy delay cap")
    parser.add_argument(
        "--task-seconds",
        type=float,
        default=0.0,
        help="duration of the tasks running at the drop (0: 2 s + 2 ms per device)",
    )
    parser.add_argument("--bin", type=float, default=0.25, help="histogram bin (s)")
    parser.add_argument("--timeout", type=float, default=180.0, help="bound on each phase (s)")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare floor")
    parser.add_argument(
        "--websocket",
        choices=WEBSOCKET_CLIENTS,
        default=DEFAULT_WEBSOCKET,
        help="our side's WebSocket client (WebSocketConnector's websocket=)",
    )
    parser.add_argument("--plot", default=str(RESULTS / "storm.png"), help="PNG path")
    parser.add_argument("--name", default="storm", help="results/<name>.json")
    return parser.parse_args(argv)


@attrs.define(eq=False)
class CountingConnector:
    """A `WebSocketConnector` that counts attempts and opening handshakes in progress."""

    inner: WebSocketConnector = attrs.field(factory=WebSocketConnector)
    attempts: list[float] = attrs.field(factory=list)
    in_handshake: int = 0
    peak: int = 0

    def reset(self) -> None:
        self.attempts = []
        self.peak = self.in_handshake

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        self.attempts.append(trio.current_time())
        self.in_handshake += 1
        self.peak = max(self.peak, self.in_handshake)
        async with contextlib.AsyncExitStack() as stack:
            try:
                transport = await stack.enter_async_context(self.inner.open(url))
            finally:
                self.in_handshake -= 1
            yield transport


async def sample_limiter(limiter: trio.CapacityLimiter | None, out: list[int]) -> None:
    """Record every 10 ms how many sessions wait for a handshake slot."""
    if limiter is None:
        return
    while True:
        out.append(limiter.statistics().tasks_waiting)
        await trio.sleep(0.01)


async def storm_ours(
    args: argparse.Namespace, agent: AgentProcess, n: int, jitter: str
) -> dict[str, Any]:
    connector = CountingConnector(WebSocketConnector(websocket=args.websocket))
    policy = RestartPolicy(
        reconnect_delay=args.reconnect_delay,
        max_retries=100_000,
        max_delay=args.max_delay,
        jitter=jitter,
    )
    ids = [f"d{i}" for i in range(n)]
    out: dict[str, Any] = {"n": n, "jitter": jitter}
    async with open_supervisor(
        task_name=f"storm-{jitter}-{n}",
        connector=connector,
        max_concurrent_connections=args.limit or None,
        policy=policy,
        shutdown_grace=0.0,
    ) as sup:
        # ----------------------------------------------------------------- up
        with sup.subscribe(buffer=math.inf) as events, trio.fail_after(args.timeout):
            start = trio.current_time()
            for device_id in ids:
                sup.add_device(device_id, agent.url, "bench")
            idle: set[str] = set()
            async for event in events:
                if isinstance(event, StatusChanged) and event.new is DeviceStatus.IDLE:
                    idle.add(event.device_id)
                    if len(idle) == n:
                        break
            out["connect_seconds"] = trio.current_time() - start

        # Long enough to be still running when the last one is sent and the drop comes.
        seconds = args.task_seconds if args.task_seconds else 2.0 + 0.002 * n
        running: list[TaskHandle] = []
        for device_id in ids:
            running.append(
                await sup.submit(
                    "storm: running at the drop",
                    {"sim_duration": seconds},
                    device_id=device_id,
                    delivery="at_least_once",
                )
            )
        await trio.sleep(0.2)  # every TASK frame has reached the agent
        out["task_seconds"] = seconds

        # ----------------------------------------------------------------- storm
        waiting: list[int] = []
        failed_at: dict[str, float] = {}
        back_at: dict[str, float] = {}
        reasons: Counter[str] = Counter()
        ended: list[float] = []
        scheduled: list[float] = []
        with sup.subscribe(buffer=math.inf) as events:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sample_limiter, sup._host.handshake_limiter, waiting)
                connector.reset()
                t0 = trio.current_time()
                dropped = await trio.to_thread.run_sync(agent.command, "drop")
                out["drop"] = json.loads(dropped)
                queued = [
                    await sup.submit(
                        "storm: queued during the storm",
                        {"sim_duration": 0},
                        device_id=device_id,
                        delivery="at_least_once",
                    )
                    for device_id in ids
                ]
                handles = running + queued
                # Tasks that ended before this subscription started send no event here.
                pending = {h.task_id for h in handles if not h.done}
                out["running_at_drop"] = sum(1 for h in running if not h.done)
                with trio.move_on_after(args.timeout):
                    while len(back_at) < n or pending:
                        event = await events.receive()
                        if isinstance(event, StatusChanged):
                            if event.new is DeviceStatus.FAILED:
                                failed_at.setdefault(event.device_id, event.at)
                            elif (
                                event.new is DeviceStatus.IDLE
                                and event.old is DeviceStatus.CONNECTED
                                and event.device_id in failed_at
                            ):
                                back_at.setdefault(event.device_id, event.at)
                        elif isinstance(event, ConnectionFailed):
                            reasons[event.reason] += 1
                        elif isinstance(event, RestartScheduled):
                            scheduled.append(event.at + event.delay)
                        elif isinstance(event, TaskEnded):
                            ended.append(event.at)
                            pending.discard(event.task_id)
                nursery.cancel_scope.cancel()
        outcomes: Counter[str] = Counter()
        for handle in handles:
            outcome = handle.outcome
            if outcome is None:
                outcomes["no outcome (lost)"] += 1
            elif isinstance(outcome, Exception):
                outcomes[type(outcome).__name__] += 1
            else:
                outcomes[str(outcome.status)] += 1
        out.update(
            attempts=[t - t0 for t in connector.attempts],
            scheduled=[t - t0 for t in scheduled],
            peak_handshakes=connector.peak,
            peak_waiting_for_slot=max(waiting, default=0),
            devices_failed=len(failed_at),
            devices_back=len(back_at),
            reconnected_seconds=(max(back_at.values()) - t0) if len(back_at) == n else math.nan,
            all_idle_seconds=(
                max([*back_at.values(), *ended]) - t0
                if len(back_at) == n and not pending
                else math.nan
            ),
            failure_reasons=dict(reasons),
            tasks=len(handles),
            tasks_lost=sum(1 for h in handles if not h.done),
            outcomes=dict(outcomes),
        )
        shutdown = time.perf_counter()
    out["shutdown_seconds"] = time.perf_counter() - shutdown
    return out


async def storm_bare(args: argparse.Namespace, agent: AgentProcess, n: int) -> dict[str, Any]:
    fleet = BareFleet(agent.url, f"bare-storm-{n}", args.limit or None, retry_delay=0.0)
    out: dict[str, Any] = {"n": n, "jitter": "bare"}
    async with trio.open_nursery() as nursery:
        up = await fleet.connect(nursery, [f"d{i}" for i in range(n)], args.timeout)
        out["connect_seconds"] = up["seconds"]
        fleet.attempts = []
        fleet.peak_handshakes = 0
        fleet.expect(n)
        t0 = trio.current_time()
        out["drop"] = json.loads(await trio.to_thread.run_sync(agent.command, "drop"))
        missing = await fleet.wait_ready(args.timeout)
        out.update(
            attempts=[t - t0 for t in fleet.attempts],
            peak_handshakes=fleet.peak_handshakes,
            reconnected_seconds=trio.current_time() - t0 if not missing else math.nan,
            not_back=missing,
        )
        nursery.cancel_scope.cancel()
    return out


def rate_series(attempts: list[float], bin_s: float, until: float) -> list[tuple[float, float]]:
    """Attempts per second in bins of ``bin_s`` seconds, as (bin middle, rate) points."""
    bins = max(1, math.ceil(until / bin_s))
    counts = [0] * bins
    for t in attempts:
        if 0 <= t < until:
            counts[int(t / bin_s)] += 1
    return [((k + 0.5) * bin_s, c / bin_s) for k, c in enumerate(counts)]


async def run(args: argparse.Namespace, agent: AgentProcess) -> list[dict[str, Any]]:
    runs = []
    for n in args.sizes:
        for jitter in args.jitters:
            await trio.to_thread.run_sync(agent.wait_quiet)
            result = await storm_ours(args, agent, n, jitter)
            runs.append(result)
            write_json(args.name, {"parameters": vars(args), "runs": runs}, quiet=True)
            print(
                f"  {n} devices, jitter {jitter}: {len(result['attempts'])} attempts, peak "
                f"{result['peak_handshakes']} handshakes, all back in "
                f"{result['reconnected_seconds']:.1f} s, idle in "
                f"{result['all_idle_seconds']:.1f} s, tasks lost {result['tasks_lost']}",
                flush=True,
            )
        if not args.no_bare:
            await trio.to_thread.run_sync(agent.wait_quiet)
            result = await storm_bare(args, agent, n)
            runs.append(result)
            print(
                f"  {n} bare connections: {len(result['attempts'])} attempts, peak "
                f"{result['peak_handshakes']} handshakes, all back in "
                f"{result['reconnected_seconds']:.1f} s",
                flush=True,
            )
    return runs


def plot(args: argparse.Namespace, runs: list[dict[str, Any]]) -> Path:
    """Per size: attempts on the wire per second, and restarts the policy scheduled per
    second (when each device wanted to reconnect, before waiting for a handshake slot)."""
    charts = []
    limit = f"limit {args.limit}" if args.limit else "no limit"
    for n in args.sizes:
        mine = [r for r in runs if r["n"] == n]
        until = args.bin + max(
            (max([*r["attempts"], *r.get("scheduled", [])], default=0.0) for r in mine),
            default=1.0,
        )
        for key, what in (("attempts", "attempts/s on the wire"), ("scheduled", "restarts due/s")):
            chart = LineChart(
                title=f"{n} devices, {limit}, base {args.reconnect_delay:g} s: {what}",
                x_label="seconds since every connection dropped",
                y_label=what.split(" ")[0],
            )
            for r in mine:
                if key in r:
                    series = rate_series(r[key], args.bin, until)
                    chart.add(r["jitter"], series, COLORS[r["jitter"]])
            charts.append(chart)
    path = Path(args.plot)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, *render(charts))
    return path


def report(runs: list[dict[str, Any]]) -> None:
    rows = []
    for r in runs:
        attempts = r["attempts"]
        peak_rate = max((c for _, c in rate_series(attempts, 1.0, max(attempts) + 1)), default=0)
        rows.append(
            [
                r["n"],
                r["jitter"],
                len(attempts),
                f"{peak_rate:.0f}",
                r["peak_handshakes"],
                r.get("peak_waiting_for_slot", ""),
                f"{r['reconnected_seconds']:.1f}",
                f"{r['all_idle_seconds']:.1f}" if "all_idle_seconds" in r else "",
                f"{r['tasks_lost']} of {r['tasks']}" if "tasks" in r else "",
                r.get("running_at_drop", ""),
            ]
        )
    print_table(
        "Reconnect storm (times from the drop; bare: reconnect at once, no backoff)",
        [
            "devices",
            "jitter",
            "attempts",
            "peak /s",
            "peak handshakes",
            "peak waiting",
            "all back (s)",
            "all idle (s)",
            "tasks lost",
            "running at drop",
        ],
        rows,
    )
    for r in runs:
        if r.get("outcomes"):
            print(
                f"  {r['n']} {r['jitter']}: outcomes {r['outcomes']}; failures "
                f"{r['failure_reasons']}; shutdown {r['shutdown_seconds']:.1f} s"
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    exit_on_sigterm()
    raise_nofile_limit()
    with AgentProcess() as agent:
        runs = trio.run(run, args, agent)
    report(runs)
    path = plot(args, runs)
    print(f"wrote {path}")
    write_json(args.name, {"parameters": vars(args), "runs": runs})
    lost = sum(r.get("tasks_lost", 0) for r in runs)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
