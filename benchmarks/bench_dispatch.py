"""Dispatch overhead: galaxy_actors against a bare trio-websocket client, same agent process.

1. Latency: one device, sequential tasks through `DeviceManager.assign_task_to_device`,
   against one bare connection sending the identical TASK frames (built with the same
   `FrameBuilder`) and reading until the task_end with the matching session_id. Each round
   runs ``--tasks`` tasks on each side, the order of the sides alternating from round to
   round; a round's ratio is our median (and p99) over the bare one's.
   Targets: median of the per-round median ratios <= 1.05, of the p99 ratios <= 1.5.
   Also (``--interleaved``, no target): the sides alternating task by task, so that both
   see the same moments of a noisy machine; the ratio of blocks of 500 pairs.
2. Throughput: ``--devices`` devices with ``--callers`` callers each (many tasks in flight,
   most of them queued), against as many bare connections each sending tasks back to back.
   Target: median per-round ratio of tasks/s >= 0.9.
3. ``--profile``: cProfile of our dispatch path (and of the bare client's, for scale).

The agent runs in another process (``agent_server.py``) and answers at once.
``.venv/bin/python benchmarks/bench_dispatch.py --rounds 3 --tasks 200`` is a quick look.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from _common import (
    AgentProcess,
    BareConnection,
    cpu_seconds,
    exit_on_sigterm,
    fmt_ratio,
    percentile,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    ratio_summary,
    summary,
    verdict,
    write_json,
)

from galaxy_actors import DeviceManager
from galaxy_actors._transports._transport import DEFAULT_WEBSOCKET, WEBSOCKET_CLIENTS
from galaxy_actors.transport import WebSocketConnector

DESCRIPTION = "Open Excel"
DATA: dict[str, Any] = {"file": "report.xlsx", "sheet": 1}
TARGET_MEDIAN = 1.05
TARGET_P99 = 1.5
TARGET_THROUGHPUT = 0.9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=21, help="paired rounds (>= 15 to report)")
    parser.add_argument("--tasks", type=int, default=500, help="sequential tasks per side/round")
    parser.add_argument("--warmup", type=int, default=300, help="warm-up tasks per side")
    parser.add_argument(
        "--interleaved", type=int, default=6000, help="tasks per side, alternating (0: skip)"
    )
    parser.add_argument("--devices", type=int, default=100, help="devices for throughput")
    parser.add_argument("--callers", type=int, default=4, help="concurrent callers per device")
    parser.add_argument(
        "--throughput-tasks", type=int, default=2000, help="tasks per side per throughput round"
    )
    parser.add_argument(
        "--throughput-rounds", type=int, default=15, help="paired throughput rounds (0: skip)"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the dispatch path")
    parser.add_argument("--profile-tasks", type=int, default=3000, help="tasks profiled")
    parser.add_argument(
        "--heartbeat", type=float, default=30.0, help="our heartbeat interval (s); 30 = default"
    )
    parser.add_argument(
        "--websocket",
        choices=WEBSOCKET_CLIENTS,
        default=DEFAULT_WEBSOCKET,
        help="our side's WebSocket client (WebSocketConnector's websocket=)",
    )
    parser.add_argument("--name", default="dispatch", help="results/<name>.json")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- one side


async def ours_sequential(manager: DeviceManager, device_id: str, tag: str, n: int) -> list[float]:
    latencies = []
    clock = time.perf_counter
    assign = manager.assign_task_to_device
    for i in range(n):
        start = clock()
        await assign(f"{tag}-{i}", device_id, DESCRIPTION, DATA)
        latencies.append(clock() - start)
    return latencies


async def bare_sequential(bare: BareConnection, tag: str, n: int) -> list[float]:
    latencies = []
    clock = time.perf_counter
    for i in range(n):
        start = clock()
        await bare.run_task(f"{tag}-{i}", DESCRIPTION, DATA)
        latencies.append(clock() - start)
    return latencies


async def interleaved(
    manager: DeviceManager, device_id: str, bare: BareConnection, n: int
) -> dict[str, Any]:
    """``n`` tasks a side, alternating one by one (the order of the sides rotates every
    turn): the sides meet the same moments of a noisy machine, unlike rounds of 500."""
    clock = time.perf_counter
    assign = manager.assign_task_to_device
    sides: dict[str, Callable[[str], Awaitable[Any]]] = {
        "ours": lambda task_id: assign(task_id, device_id, DESCRIPTION, DATA),
        "bare": lambda task_id: bare.run_task(task_id, DESCRIPTION, DATA),
    }
    times: dict[str, list[float]] = {side: [] for side in sides}
    order = list(sides)
    for i in range(n):
        order.append(order.pop(0))
        for side in order:
            start = clock()
            await sides[side](f"i-{side}-{i}")
            times[side].append(clock() - start)
    block = 500
    blocks = {
        side: [percentile(t[k : k + block], 50) for k in range(0, n, block)]
        for side, t in times.items()
    }
    return {
        "tasks_per_side": n,
        "block": block,
        "block_median_ratio": ratio_summary(blocks["ours"], blocks["bare"]),
        **{
            f"{side}_us": {k: v * 1e6 for k, v in summary(t).items() if k != "n"}
            for side, t in times.items()
        },
    }


async def ours_throughput(
    manager: DeviceManager, device_ids: list[str], callers: int, per_caller: int, tag: str
) -> None:
    async def caller(device_id: str, c: int) -> None:
        for i in range(per_caller):
            await manager.assign_task_to_device(f"{tag}-{device_id}-{c}-{i}", device_id, "t", DATA)

    async with trio.open_nursery() as nursery:
        for device_id in device_ids:
            for c in range(callers):
                nursery.start_soon(caller, device_id, c)


async def bare_throughput(bares: list[BareConnection], per_connection: int, tag: str) -> None:
    async def worker(k: int, bare: BareConnection) -> None:
        for i in range(per_connection):
            await bare.run_task(f"{tag}-{k}-{i}", "t", DATA)

    async with trio.open_nursery() as nursery:
        for k, bare in enumerate(bares):
            nursery.start_soon(worker, k, bare)


# --------------------------------------------------------------------------- the run


async def open_bares(url: str, n: int, prefix: str, nursery: trio.Nursery) -> list[BareConnection]:
    """Open ``n`` registered bare connections that live as long as ``nursery``."""
    bares: list[BareConnection] = []

    async def hold(k: int, task_status: trio.TaskStatus[BareConnection]) -> None:
        async with BareConnection.open(url) as ws:
            bare = BareConnection(ws, prefix, f"{prefix}-{k}")
            await bare.register()
            task_status.started(bare)
            await trio.sleep_forever()

    for k in range(n):
        bares.append(await nursery.start(hold, k))
    return bares


def profile_table(profiler: cProfile.Profile, n_tasks: int, limit: int = 25) -> list[list[Any]]:
    """The ``limit`` functions with the most own time: µs per task, own and cumulative."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    rows = []
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in raw.items():
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append(
            [
                f"{short}:{line}({name})",
                calls / n_tasks,
                tottime / n_tasks * 1e6,
                cumtime / n_tasks * 1e6,
                tottime / total * 100 if total else 0.0,
            ]
        )
    rows.sort(key=lambda row: row[2], reverse=True)
    return rows[:limit]


def by_module(profiler: cProfile.Profile, n_tasks: int) -> list[list[Any]]:
    """Own time grouped by module (library, trio, trio-websocket, wsproto, json …)."""
    stats = pstats.Stats(profiler, stream=io.StringIO())
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    for (filename, _line, name), entry in raw.items():
        if "site-packages/" in filename:
            key = filename.split("site-packages/")[-1].split("/")[0]
        elif "galaxy_actors" in filename:
            key = "galaxy_actors/" + filename.rsplit("/", 1)[-1]
        elif "benchmarks" in filename:
            key = "benchmark loop"
        elif filename == "~":
            key = "builtins: " + name.split(" of ")[0].strip("<>")
        else:
            key = "stdlib/" + filename.rsplit("/", 1)[-1]
        groups[key] = groups.get(key, 0.0) + entry[2]
    total = sum(groups.values())
    rows: list[list[Any]] = [[k, v / n_tasks * 1e6, v / total * 100] for k, v in groups.items()]
    rows.sort(key=lambda row: float(row[1]), reverse=True)
    return rows


async def run(args: argparse.Namespace, agent: AgentProcess) -> dict[str, Any]:
    url = agent.url
    results: dict[str, Any] = {"parameters": {k: v for k, v in vars(args).items() if k != "agent"}}
    with trio.fail_after(args.timeout):
        async with (
            DeviceManager(
                task_name="ours",
                heartbeat_interval=args.heartbeat,
                connector=WebSocketConnector(websocket=args.websocket),
                max_concurrent_connections=64,
            ) as manager,
            trio.open_nursery() as nursery,
        ):
            if not await manager.register_device("d-0", url, "bench"):
                raise RuntimeError("could not register the device")
            (bare,) = await open_bares(url, 1, "bare", nursery)

            # ------------------------------------------------------------ latency
            await ours_sequential(manager, "d-0", "warm", args.warmup)
            await bare_sequential(bare, "warm", args.warmup)
            ours_rounds: list[list[float]] = []
            bare_rounds: list[list[float]] = []
            for r in range(args.rounds):
                sides: list[tuple[str, Callable[[], Awaitable[list[float]]]]] = [
                    ("ours", partial(ours_sequential, manager, "d-0", f"r{r}", args.tasks)),
                    ("bare", partial(bare_sequential, bare, f"r{r}", args.tasks)),
                ]
                if r % 2:
                    sides.reverse()
                for side, fn in sides:
                    (ours_rounds if side == "ours" else bare_rounds).append(await fn())
                print(
                    f"  latency round {r + 1}/{args.rounds}: ours "
                    f"{percentile(ours_rounds[-1], 50) * 1e6:.0f} µs, bare "
                    f"{percentile(bare_rounds[-1], 50) * 1e6:.0f} µs",
                    flush=True,
                )
            results["latency"] = latency_figures(ours_rounds, bare_rounds)
            if args.interleaved > 0:
                results["interleaved"] = await interleaved(manager, "d-0", bare, args.interleaved)

            # ------------------------------------------------------------ throughput
            if args.throughput_rounds > 0:
                results["throughput"] = await throughput(args, manager, url)

            # ------------------------------------------------------------ profile
            if args.profile:
                results["profile"] = await profile(args, manager, bare)
            nursery.cancel_scope.cancel()
    return results


def latency_figures(ours: list[list[float]], bare: list[list[float]]) -> dict[str, Any]:
    ours_med = [percentile(x, 50) for x in ours]
    bare_med = [percentile(x, 50) for x in bare]
    ours_p99 = [percentile(x, 99) for x in ours]
    bare_p99 = [percentile(x, 99) for x in bare]
    pooled_ours = [v for x in ours for v in x]
    pooled_bare = [v for x in bare for v in x]
    return {
        "median_ratio": ratio_summary(ours_med, bare_med),
        "p99_ratio": ratio_summary(ours_p99, bare_p99),
        "ours_us": {k: v * 1e6 for k, v in summary(pooled_ours).items() if k != "n"},
        "bare_us": {k: v * 1e6 for k, v in summary(pooled_bare).items() if k != "n"},
        "ours_round_medians_us": [v * 1e6 for v in ours_med],
        "bare_round_medians_us": [v * 1e6 for v in bare_med],
        "ours_round_p99s_us": [v * 1e6 for v in ours_p99],
        "bare_round_p99s_us": [v * 1e6 for v in bare_p99],
        "tasks_per_side": len(pooled_ours),
    }


async def throughput(args: argparse.Namespace, manager: DeviceManager, url: str) -> dict[str, Any]:
    agent_cpu: dict[str, list[float]] = {"ours": [], "bare": []}
    own_cpu: dict[str, list[float]] = {"ours": [], "bare": []}
    n = args.devices
    per_caller = max(1, args.throughput_tasks // (n * args.callers))
    total = n * args.callers * per_caller
    device_ids = [f"t-{k}" for k in range(n)]
    async with trio.open_nursery() as nursery:
        async with trio.open_nursery() as registering:
            for device_id in device_ids:
                registering.start_soon(manager.register_device, device_id, url, "bench")
        connected = set(manager.get_connected_devices())
        if not set(device_ids) <= connected:
            raise RuntimeError("throughput devices did not all connect")
        bares = await open_bares(url, n, "tbare", nursery)
        await ours_throughput(manager, device_ids, args.callers, 1, "tw")
        await bare_throughput(bares, args.callers, "tw")
        rates: dict[str, list[float]] = {"ours": [], "bare": []}
        for r in range(args.throughput_rounds):
            sides: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                (
                    "ours",
                    partial(
                        ours_throughput, manager, device_ids, args.callers, per_caller, f"tp{r}"
                    ),
                ),
                ("bare", partial(bare_throughput, bares, total // n, f"tp{r}")),
            ]
            if r % 2:
                sides.reverse()
            for side, fn in sides:
                before = await trio.to_thread.run_sync(agent_stats_cpu, args.agent)
                cpu_before = cpu_seconds()
                start = time.perf_counter()
                await fn()
                elapsed = time.perf_counter() - start
                cpu_after = cpu_seconds()
                after = await trio.to_thread.run_sync(agent_stats_cpu, args.agent)
                rates[side].append(total / elapsed)
                agent_cpu[side].append((after - before) / elapsed)
                own_cpu[side].append((cpu_after - cpu_before) / elapsed)
            print(
                f"  throughput round {r + 1}/{args.throughput_rounds}: ours "
                f"{rates['ours'][-1]:.0f}/s, bare {rates['bare'][-1]:.0f}/s",
                flush=True,
            )
        nursery.cancel_scope.cancel()
    return {
        "tasks_per_round": total,
        "in_flight_ours": n * args.callers,
        "ratio": ratio_summary(rates["ours"], rates["bare"]),
        "ours_per_s": summary(rates["ours"]),
        "bare_per_s": summary(rates["bare"]),
        "agent_cpu_share_ours": summary(agent_cpu["ours"]),
        "agent_cpu_share_bare": summary(agent_cpu["bare"]),
        "client_cpu_share_ours": summary(own_cpu["ours"]),
        "client_cpu_share_bare": summary(own_cpu["bare"]),
        "client_cpu_us_per_task_ours": summary(
            [c / r * 1e6 for c, r in zip(own_cpu["ours"], rates["ours"], strict=True)]
        ),
        "client_cpu_us_per_task_bare": summary(
            [c / r * 1e6 for c, r in zip(own_cpu["bare"], rates["bare"], strict=True)]
        ),
        "ours_rounds": rates["ours"],
        "bare_rounds": rates["bare"],
    }


def agent_stats_cpu(agent: AgentProcess) -> float:
    return float(agent.stats()["cpu"])


async def profile(
    args: argparse.Namespace, manager: DeviceManager, bare: BareConnection
) -> dict[str, Any]:
    n = args.profile_tasks
    out: dict[str, Any] = {"tasks": n}
    for side in ("ours", "bare"):
        profiler = cProfile.Profile()
        start = time.perf_counter()
        profiler.enable()
        if side == "ours":
            await ours_sequential(manager, "d-0", "prof", n)
        else:
            await bare_sequential(bare, "prof", n)
        profiler.disable()
        out[side] = {
            "wall_us_per_task_profiled": (time.perf_counter() - start) / n * 1e6,
            "top": profile_table(profiler, n),
            "modules": by_module(profiler, n),
        }
    return out


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> None:
    lat = results["latency"]
    rows = [
        [
            "latency median (µs)",
            f"{lat['ours_us']['median']:.0f}",
            f"{lat['bare_us']['median']:.0f}",
            fmt_ratio(lat["median_ratio"]),
            f"<= {TARGET_MEDIAN}",
            verdict(lat["median_ratio"]["median"], TARGET_MEDIAN),
        ],
        [
            "latency p99 (µs)",
            f"{lat['ours_us']['p99']:.0f}",
            f"{lat['bare_us']['p99']:.0f}",
            fmt_ratio(lat["p99_ratio"]),
            f"<= {TARGET_P99}",
            verdict(lat["p99_ratio"]["median"], TARGET_P99),
        ],
    ]
    inter = results.get("interleaved")
    if inter:
        rows.append(
            [
                "latency median, interleaved",
                f"{inter['ours_us']['median']:.0f}",
                f"{inter['bare_us']['median']:.0f}",
                fmt_ratio(inter["block_median_ratio"]),
                "",
                "",
            ]
        )
    tp = results.get("throughput")
    if tp:
        rows.append(
            [
                f"tasks/s, {tp['in_flight_ours']} in flight",
                f"{tp['ours_per_s']['median']:.0f}",
                f"{tp['bare_per_s']['median']:.0f}",
                fmt_ratio(tp["ratio"]),
                f">= {TARGET_THROUGHPUT}",
                verdict(tp["ratio"]["median"], TARGET_THROUGHPUT, at_most=False),
            ]
        )
    print_table(
        "Dispatch: galaxy_actors vs bare trio-websocket (ratio: median [quartiles] of rounds)",
        ["figure", "ours", "bare", "ratio ours/bare", "target", "verdict"],
        rows,
    )
    if tp:
        print(
            f"  CPU share of a core during throughput: agent process "
            f"{tp['agent_cpu_share_ours']['median']:.0%} (ours) / "
            f"{tp['agent_cpu_share_bare']['median']:.0%} (bare); client process "
            f"{tp['client_cpu_share_ours']['median']:.0%} (ours) / "
            f"{tp['client_cpu_share_bare']['median']:.0%} (bare); client CPU per task "
            f"{tp['client_cpu_us_per_task_ours']['median']:.0f} µs (ours) / "
            f"{tp['client_cpu_us_per_task_bare']['median']:.0f} µs (bare)"
        )
    prof = results.get("profile")
    if prof:
        for side in ("ours", "bare"):
            print_table(
                f"cProfile, {side}: own time by module (µs per task, under the profiler)",
                ["module", "µs/task", "%"],
                [[k, f"{v:.1f}", f"{p:.1f}"] for k, v, p in prof[side]["modules"][:12]],
            )
        print_table(
            "cProfile, ours: top functions by own time",
            ["function", "calls/task", "own µs", "cum µs", "% own"],
            [
                [name[-70:], f"{c:.2f}", f"{t:.1f}", f"{cu:.1f}", f"{p:.1f}"]
                for name, c, t, cu, p in prof["ours"]["top"][:20]
            ],
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    exit_on_sigterm()
    raise_nofile_limit()
    with AgentProcess() as agent:
        args.agent = agent
        try:
            results = trio.run(run, args, agent)
        finally:
            del args.agent
    report(results)
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
