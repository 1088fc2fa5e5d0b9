"""Fleet scale: N devices in one supervisor process, beside N bare connections.

Each side of a round runs in a fresh worker process (this script with ``--worker``), so its
RSS is its own; the agent (``agent_server.py``) serves both sides from one other process.
A worker raises its open-files limit, imports everything, warms up with ``--warm`` devices
(or bare connections) kept open, and measures from there:

- ready time: from the first `Supervisor.add_device` until every one of N devices is idle
  (REGISTER confirmed, heartbeat and device info exchanged), against N bare trio-websocket
  connections making the same three exchanges (``bare-same``: the target) and against N
  bare connections doing connect + REGISTER only (``bare``: reported beside it). Our side
  makes as many handshakes at once as ``--ours-limit`` allows (default: open_supervisor's
  default ``max_concurrent_connections``, 64; the figures in
  docs/performance.md up to this round were taken at None, no limit). The bare sides are not held to
  our limit: at each size each bare baseline is first run at every concurrency of
  ``--bare-limits`` (64, 256, 1024 and 0, no limit), ``--calibrate-runs`` times each, and the
  rounds use the one fastest for it (printed, and kept in the JSON);
- RSS growth per device: RSS (``/proc/self/statm``) once all N are up, minus RSS after the
  warm-up, over N (imports and warm-up excluded);
- idle CPU (``--idle SIZE:HEARTBEAT,…``): process CPU time over a window of whole heartbeat
  periods, against bare connections sending the same heartbeats from one task each (each of
  these runs also gives one more ready time and RSS figure at its size);
- ``--tracemalloc-size``: Python allocations per device alive once N are idle, by line.

Sides alternate order from round to round; a round's ratio pairs the two adjacent runs.
Targets: ready within 1.05x bare-same (at every size), <= 30 KB RSS per device at 10,000
devices, idle CPU < 5 % of a core at 30 s heartbeats. A missed target is printed with by
how much. Full size: ``bench_fleet.py --sizes 1000,3000,10000
--rounds 15`` (about 45 minutes here; ``make bench`` runs a smaller plan, see run_all.py).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import math
import os
import pstats
import statistics
import sys
import time
import tracemalloc
from typing import Any

import trio
from _common import (
    AgentProcess,
    BareFleet,
    cpu_seconds,
    exit_on_sigterm,
    fmt_ratio,
    int_list,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    ratio_summary,
    rss_bytes,
    run_worker,
    summary,
    verdict,
    write_json,
)

from galaxy_actors import DeviceStatus, RestartPolicy, Settings, Supervisor, open_supervisor
from galaxy_actors._transports._transport import DEFAULT_WEBSOCKET, WEBSOCKET_CLIENTS
from galaxy_actors.events import ConnectionFailed, StatusChanged
from galaxy_actors.transport import WebSocketConnector

TARGET_RSS_KB = 30.0
TARGET_READY = 1.05  # against bare-same, the same three exchanges
TARGET_IDLE_CPU = 0.05


def idle_list(text: str) -> list[tuple[int, float]]:
    """argparse type for "10000:30,1000:1"."""
    pairs = []
    for part in text.split(","):
        if part.strip():
            size, _, heartbeat = part.partition(":")
            pairs.append((int(size), float(heartbeat or 30)))
    return pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int_list, default=[1000, 3000, 10000])
    parser.add_argument("--rounds", type=int, default=15, help="paired rounds per size")
    parser.add_argument(
        "--rounds-large",
        type=int,
        default=None,
        help="paired rounds for sizes >= --large-from (default: --rounds)",
    )
    parser.add_argument("--warm", type=int, default=50, help="warm-up devices, kept open")
    parser.add_argument(
        "--ours-limit",
        type=int,
        default=0,
        help="our max_concurrent_connections (0: open_supervisor's default, 64; -1: no limit)",
    )
    parser.add_argument(
        "--bare-limits",
        type=int_list,
        default=[64, 256, 1024, 0],
        help="bare concurrency settings to calibrate over at each size (0: no limit)",
    )
    parser.add_argument(
        "--bare-limits-fixed",
        default="",
        help="skip the calibration: concurrency per baseline, e.g. bare-same=64,bare=1024 "
        "(from an earlier calibration at the same size; 0: no limit)",
    )
    parser.add_argument(
        "--calibrate-runs", type=int, default=2, help="runs per bare concurrency setting"
    )
    parser.add_argument(
        "--calibrate-timeout",
        type=float,
        default=30.0,
        help="seconds per 1,000 devices a calibration run may take before it counts as "
        "failed (a bare client has no timeout on its exchanges: some hang)",
    )
    parser.add_argument(
        "--large-from",
        type=int,
        default=10000,
        help="sizes from this one run --rounds-large rounds",
    )
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument(
        "--baselines",
        type=lambda text: [part for part in text.split(",") if part],
        default=["register", "same"],
        help="bare baselines: register (connect + REGISTER), same (+ heartbeat, device info)",
    )
    parser.add_argument(
        "--bare-frames", choices=["register", "same"], default="register", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--idle",
        type=idle_list,
        default=[(10000, 30.0), (1000, 1.0)],
        help="idle CPU runs, SIZE:HEARTBEAT_SECONDS,… ('' for none)",
    )
    parser.add_argument(
        "--same-up-to",
        type=int,
        default=None,
        help="run the bare-same baseline only at sizes up to this (default: all)",
    )
    parser.add_argument(
        "--idle-periods",
        type=int,
        default=1,
        help="heartbeat periods per idle window (at least 5 s)",
    )
    parser.add_argument("--idle-profile", action="store_true", help="cProfile the idle window")
    parser.add_argument("--tracemalloc-size", type=int, default=0, help="0: skip")
    parser.add_argument(
        "--websocket",
        choices=WEBSOCKET_CLIENTS,
        default=DEFAULT_WEBSOCKET,
        help="our side's WebSocket client (WebSocketConnector's websocket=)",
    )
    parser.add_argument("--name", default="fleet", help="results/<name>.json")
    parser.add_argument("--worker-timeout", type=float, default=300.0)
    # Worker mode (run by the orchestrator in a fresh process).
    parser.add_argument("--worker", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="w", help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--idle-window", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--tracemalloc", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# =========================================================================== workers


async def connect_ours(sup: Supervisor, url: str, ids: list[str], within: float) -> dict[str, Any]:
    """Add ``ids`` and wait until every one is idle: seconds, connection failures."""
    failures = 0
    remaining = set(ids)
    with sup.subscribe(buffer=math.inf) as events:
        start, cpu0 = time.perf_counter(), cpu_seconds()
        for device_id in ids:
            sup.add_device(device_id, url, "bench")
        with trio.move_on_after(within):
            async for event in events:
                if isinstance(event, StatusChanged) and event.new is DeviceStatus.IDLE:
                    remaining.discard(event.device_id)
                    if not remaining:
                        break
                elif isinstance(event, ConnectionFailed):
                    failures += 1
        elapsed = time.perf_counter() - start
    return {
        "seconds": elapsed,
        "cpu_seconds": cpu_seconds() - cpu0,
        "failures": failures,
        "not_ready": len(remaining),
    }


def memory_by_line(snapshot: tracemalloc.Snapshot, n: int, limit: int = 30) -> dict[str, Any]:
    """Traced bytes alive per device, by source line and by file."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    lines = snapshot.statistics("lineno")
    files = snapshot.statistics("filename")
    total = sum(stat.size for stat in lines)

    def where(frame: tracemalloc.Frame) -> str:
        name = frame.filename.split("site-packages/")[-1].split("/work/main/")[-1]
        return name.split("/lib/python3.11/")[-1]

    return {
        "bytes_per_device": total / n,
        "blocks_per_device": sum(stat.count for stat in lines) / n,
        "by_line": [
            [f"{where(s.traceback[0])}:{s.traceback[0].lineno}", s.size / n, s.count / n]
            for s in lines[:limit]
        ],
        "by_file": [[where(s.traceback[0]), s.size / n, s.count / n] for s in files[:limit]],
    }


async def idle_window(seconds: float, profile: bool) -> dict[str, Any]:
    profiler = cProfile.Profile() if profile else None
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    await trio.sleep(seconds)
    if profiler is not None:
        profiler.disable()
    wall = time.perf_counter() - wall0
    out: dict[str, Any] = {"cpu_share": (cpu_seconds() - cpu0) / wall, "window": wall}
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=io.StringIO())
        raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
        rows = sorted(
            (
                [
                    f"{k[0].split('site-packages/')[-1].split('/work/main/')[-1]}:{k[1]}({k[2]})",
                    v[2],
                    v[3],
                ]
                for k, v in raw.items()
            ),
            key=lambda row: row[1],
            reverse=True,
        )
        out["profile_top_own_seconds"] = rows[:25]
    return out


async def ours_worker(args: argparse.Namespace) -> dict[str, Any]:
    policy = RestartPolicy(reconnect_delay=1.0, max_retries=1000, max_delay=5.0, jitter="full")
    timeout = args.worker_timeout
    out: dict[str, Any] = {}
    limit: dict[str, Any] = {}
    if args.limit:
        limit["max_concurrent_connections"] = None if args.limit < 0 else args.limit
    async with open_supervisor(
        task_name=args.tag,
        heartbeat_interval=args.heartbeat,
        connector=WebSocketConnector(websocket=args.websocket),
        policy=policy,
        **limit,
    ) as sup:
        out["warm"] = await connect_ours(sup, args.url, [f"w{i}" for i in range(args.warm)], 60)
        gc.collect()
        rss0 = rss_bytes()
        if args.tracemalloc:
            tracemalloc.start()
        ids = [f"d{i}" for i in range(args.n)]
        out["ready"] = await connect_ours(sup, args.url, ids, timeout)
        gc.collect()
        out["rss_growth"] = rss_bytes() - rss0
        out["rss_total"] = rss_bytes()
        if args.tracemalloc:
            out["tracemalloc"] = memory_by_line(tracemalloc.take_snapshot(), args.n)
            tracemalloc.stop()
        if args.idle_window > 0:
            out["idle"] = await idle_window(args.idle_window, args.idle_profile)
            out["idle"]["failures"] = sum(sup.stats(d).failures for d in ids)
            out["idle"]["not_idle"] = sum(
                1 for s in sup.snapshots() if s.status is not DeviceStatus.IDLE
            )
        emit(out)
    return out


async def bare_worker(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        fleet = BareFleet(
            args.url,
            args.tag,
            args.limit,
            same=args.bare_frames == "same",
            heartbeat=args.heartbeat,
        )
        out["warm"] = await fleet.connect(nursery, [f"w{i}" for i in range(args.warm)], 60)
        gc.collect()
        rss0 = rss_bytes()
        if args.tracemalloc:
            tracemalloc.start()
        out["ready"] = await fleet.connect(
            nursery, [f"d{i}" for i in range(args.n)], args.worker_timeout
        )
        gc.collect()
        out["rss_growth"] = rss_bytes() - rss0
        out["rss_total"] = rss_bytes()
        if args.tracemalloc:
            out["tracemalloc"] = memory_by_line(tracemalloc.take_snapshot(), args.n)
            tracemalloc.stop()
        if args.idle_window > 0:
            failures = fleet.failures
            out["idle"] = await idle_window(args.idle_window, args.idle_profile)
            out["idle"]["failures"] = fleet.failures - failures
        emit(out)
    return out


def emit(out: dict[str, Any]) -> None:
    """Print the result and leave at once: closing thousands of connections one by one
    would only measure the shutdown (the agent sees the sockets close)."""
    import json

    print(json.dumps(out), flush=True)
    sys.stderr.flush()
    os._exit(0)


def worker_main(args: argparse.Namespace) -> int:
    raise_nofile_limit()
    quiet_logging()
    trio.run(ours_worker if args.worker == "ours" else bare_worker, args)
    return 0


# =========================================================================== orchestrator

# A side of a round: ours, or a bare baseline and the frames it sends.
SIDES = {
    "ours": ("ours", "register"),
    "bare": ("bare", "register"),
    "bare-same": ("bare", "same"),
}


def worker_argv(
    args: argparse.Namespace,
    url: str,
    side: str,
    n: int,
    tag: str,
    limit: int,
    timeout: float,
    **extra: Any,
) -> list[str]:
    worker, frames = SIDES[side]
    argv = [
        __file__,
        "--worker",
        worker,
        "--bare-frames",
        frames,
        "--url",
        url,
        "--n",
        str(n),
        "--tag",
        tag,
        "--warm",
        str(args.warm),
        "--limit",
        str(limit),
        "--worker-timeout",
        str(timeout),
        "--websocket",
        args.websocket,
    ]
    for key, value in extra.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


def limit_name(limit: int) -> str:
    return str(limit) if limit > 0 else "no limit"


def ours_limit_name(args: argparse.Namespace) -> str:
    # --ours-limit 0 leaves open_supervisor's default, which is a limit (Settings).
    default = Settings().max_concurrent_connections
    if args.ours_limit:
        return limit_name(args.ours_limit)
    return f"default {limit_name(default or 0)}"


def run_side(
    agent: AgentProcess,
    args: argparse.Namespace,
    side: str,
    n: int,
    tag: str,
    limit: int | None = None,
    timeout: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One worker run; ``limit``: concurrent handshakes (None: the side's own setting);
    ``timeout``: how long it waits for its devices (None: ``--worker-timeout``)."""
    if limit is None:
        limit = args.ours_limit if side == "ours" else args.bare_limit.get(side, 0)
    if timeout is None:
        timeout = args.worker_timeout
    agent.wait_quiet()
    result = run_worker(
        worker_argv(args, agent.url, side, n, tag, limit, timeout, **extra),
        timeout=timeout + 120,
    )
    ready = result["ready"]
    if ready["not_ready"] or ready["failures"]:
        print(
            f"    {side}: {ready['not_ready']} of {n} not ready in time, "
            f"{ready['failures']} connection failures",
            flush=True,
        )
    return result


def calibrate(
    args: argparse.Namespace, agent: AgentProcess, n: int, baselines: list[str]
) -> dict[str, Any]:
    """Each bare baseline at every concurrency of ``--bare-limits``: the fastest for it at
    this size becomes its setting (``args.bare_limit``). A setting whose run failed or left
    connections not ready counts as infinitely slow."""
    out: dict[str, Any] = {}
    for side in baselines:
        times: dict[int, list[float]] = {limit: [] for limit in args.bare_limits}
        for r in range(args.calibrate_runs):
            order = args.bare_limits if r % 2 == 0 else args.bare_limits[::-1]
            for limit in order:
                ready = run_side(
                    agent,
                    args,
                    side,
                    n,
                    f"cal{side}{n}l{limit}r{r}",
                    limit,
                    timeout=args.calibrate_timeout * max(1.0, n / 1000),
                )["ready"]
                ok = not ready["not_ready"] and not ready["failures"]
                times[limit].append(ready["seconds"] if ok else math.inf)
        medians = {limit: statistics.median(t) for limit, t in times.items()}
        best = min(medians, key=lambda limit: medians[limit])
        args.bare_limit[side] = best
        out[side] = {
            "chosen": best,
            "median_s": {limit_name(k): v for k, v in medians.items()},
            "runs_s": {limit_name(k): v for k, v in times.items()},
        }
        print(
            f"  {n} devices, {side} calibration (ready s, median of {args.calibrate_runs}): "
            + ", ".join(f"{limit_name(k)} {v:.2f}" for k, v in medians.items())
            + f" -> {limit_name(best)}",
            flush=True,
        )
    return out


def scale(args: argparse.Namespace, agent: AgentProcess, n: int, rounds: int) -> dict[str, Any]:
    sides = ["ours", *args.baselines]
    if args.same_up_to is not None and n > args.same_up_to and "bare-same" in sides:
        sides.remove("bare-same")
    if args.bare_limits_fixed:
        calibration = {"fixed": args.bare_limits_fixed}
        for part in args.bare_limits_fixed.split(","):
            side, _, limit = part.partition("=")
            args.bare_limit[side.strip()] = int(limit)
    elif len(args.bare_limits) > 1:
        calibration = calibrate(args, agent, n, sides[1:])
    else:  # one setting: nothing to choose
        calibration = {}
        args.bare_limit.update(dict.fromkeys(sides[1:], args.bare_limits[0]))
    limits = {
        side: ours_limit_name(args) if side == "ours" else limit_name(args.bare_limit.get(side, 0))
        for side in sides
    }
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for r in range(rounds):
        # Rotate the order every round, so that each side runs first, last, in between.
        shift = r % len(sides)
        order = sides[shift:] + sides[:shift]
        if r // len(sides) % 2:
            order.reverse()
        for side in order:
            runs[side].append(run_side(agent, args, side, n, f"{side}{n}r{r}"))
        print(
            f"  {n} devices, round {r + 1}/{rounds}: ready "
            + ", ".join(f"{side} {runs[side][-1]['ready']['seconds']:.2f} s" for side in sides)
            + "; CPU/device "
            + ", ".join(
                f"{side} {runs[side][-1]['ready']['cpu_seconds'] / n * 1e6:.0f} µs"
                for side in sides
            )
            + "; RSS/device "
            + ", ".join(
                f"{side} {runs[side][-1]['rss_growth'] / n / 1024:.1f} KB" for side in sides
            ),
            flush=True,
        )
    ready = {side: [x["ready"]["seconds"] for x in runs[side]] for side in sides}
    rss = {side: [x["rss_growth"] / n / 1024 for x in runs[side]] for side in sides}
    # The client's own CPU per device brought up: what the machine's load moves least.
    cpu = {side: [x["ready"]["cpu_seconds"] / n * 1e6 for x in runs[side]] for side in sides}
    return {
        "n": n,
        "rounds": rounds,
        "concurrent_handshakes": limits,
        "calibration": calibration,
        "ready_ratio": {b: ratio_summary(ready["ours"], ready[b]) for b in sides[1:]},
        "rss_ratio": {b: ratio_summary(rss["ours"], rss[b]) for b in sides[1:]},
        "ready_s": {side: summary(ready[side]) for side in sides},
        "rss_kb_per_device": {side: summary(rss[side]) for side in sides},
        "cpu_ratio": {b: ratio_summary(cpu["ours"], cpu[b]) for b in sides[1:]},
        "cpu_us_per_device": {side: summary(cpu[side]) for side in sides},
        "failures": {side: sum(x["ready"]["failures"] for x in runs[side]) for side in sides},
        "not_ready": {side: sum(x["ready"]["not_ready"] for x in runs[side]) for side in sides},
        "ready_rounds": ready,
        "rss_rounds": rss,
    }


def idle(
    args: argparse.Namespace, agent: AgentProcess, k: int, n: int, hb: float
) -> dict[str, Any]:
    """Idle CPU of N devices at heartbeat ``hb`` over whole heartbeat periods, beside N bare
    connections sending the same heartbeats; each run also gives a ready time and RSS.
    The bare side makes the same exchanges as ours (bare-same), at the concurrency
    calibrated at the largest size measured before (no limit if none was)."""
    window = max(5.0, hb * args.idle_periods)
    sides = ["ours", "bare-same"]
    order = sides if k % 2 == 0 else sides[::-1]
    row: dict[str, Any] = {
        "n": n,
        "heartbeat": hb,
        "window": window,
        "bare_side": "bare-same",
        "concurrent_handshakes": {
            "ours": ours_limit_name(args),
            "bare": limit_name(args.bare_limit.get("bare-same", 0)),
        },
    }
    for side in order:
        result = run_side(
            agent,
            args,
            side,
            n,
            f"idle{side}{n}hb{hb:g}",
            heartbeat=hb,
            idle_window=window,
            idle_profile=args.idle_profile and side == "ours",
        )
        key = "bare" if side != "ours" else side
        row[key] = result["idle"]
        row[key]["ready_seconds"] = result["ready"]["seconds"]
        row[key]["rss_kb_per_device"] = result["rss_growth"] / n / 1024
        # CPU per heartbeat exchange: the figure that does not depend on the fleet size.
        row[key]["cpu_us_per_heartbeat"] = result["idle"]["cpu_share"] / (n / hb) * 1e6
    row["ratio"] = row["ours"]["cpu_share"] / max(row["bare"]["cpu_share"], 1e-9)
    print(
        f"  idle CPU, {n} devices, heartbeat {hb:g} s: "
        + ", ".join(
            f"{side} {row[side]['cpu_share']:.1%} of a core "
            f"({row[side]['cpu_us_per_heartbeat']:.0f} µs per heartbeat, "
            f"{row[side]['failures']} failures)"
            for side in ("ours", "bare")
        ),
        flush=True,
    )
    return row


def report(results: dict[str, Any]) -> None:
    rows = []
    for s in results["scale"]:
        n = s["n"]
        big = n >= 10000
        limits = s.get("concurrent_handshakes", {})
        for b in s["ready_ratio"]:
            ready = s["ready_s"]
            target = b == "bare-same"
            rows.append(
                [
                    f"{n} ready (s) vs {b} (handshakes: ours {limits.get('ours')}, "
                    f"{b} {limits.get(b)})",
                    s["rounds"],
                    f"{ready['ours']['median']:.2f} / p99 {ready['ours']['p99']:.2f}",
                    f"{ready[b]['median']:.2f} / p99 {ready[b]['p99']:.2f}",
                    fmt_ratio(s["ready_ratio"][b]),
                    f"<= {TARGET_READY}" if target else "",
                    verdict(s["ready_ratio"][b]["median"], TARGET_READY) if target else "",
                ]
            )
        cpu = s.get("cpu_us_per_device")
        for b in s.get("cpu_ratio", {}):
            assert cpu is not None
            rows.append(
                [
                    f"{n} client CPU µs/device to ready vs {b}",
                    s["rounds"],
                    f"{cpu['ours']['median']:.0f}",
                    f"{cpu[b]['median']:.0f}",
                    fmt_ratio(s["cpu_ratio"][b]),
                    "",
                    "",
                ]
            )
        rss = s["rss_kb_per_device"]
        b = results["baselines"][0]
        rows.append(
            [
                f"{n} RSS KB/device vs {b}",
                s["rounds"],
                f"{rss['ours']['median']:.1f} / p99 {rss['ours']['p99']:.1f}",
                f"{rss[b]['median']:.1f} / p99 {rss[b]['p99']:.1f}",
                fmt_ratio(s["rss_ratio"][b]),
                f"<= {TARGET_RSS_KB:g} KB" if big else "",
                verdict(rss["ours"]["median"], TARGET_RSS_KB) if big else "",
            ]
        )
    for row in results.get("idle", []):
        target = row["heartbeat"] == 30 and row["n"] >= 10000
        n = row["n"]
        rows.append(
            [
                f"{n} idle CPU, hb {row['heartbeat']:g} s",
                1,
                f"{row['ours']['cpu_share']:.2%}",
                f"{row['bare']['cpu_share']:.2%}",
                f"{row['ratio']:.2f}",
                "< 5 %" if target else "",
                verdict(row["ours"]["cpu_share"], TARGET_IDLE_CPU) if target else "",
            ]
        )
        rows.append(
            [
                f"{n} idle CPU µs/heartbeat",
                1,
                f"{row['ours']['cpu_us_per_heartbeat']:.0f}",
                f"{row['bare']['cpu_us_per_heartbeat']:.0f}",
                f"{row['ratio']:.2f}",
                "",
                "",
            ]
        )
        if row["heartbeat"] >= 30 and not any(s["n"] == n for s in results["scale"]):
            # A single paired round at this size, from the idle runs.
            big = n >= 10000
            ready_ratio = row["ours"]["ready_seconds"] / row["bare"]["ready_seconds"]
            limits = row.get("concurrent_handshakes", {})
            rows.append(
                [
                    f"{n} ready (s) vs {row.get('bare_side', 'bare')} (handshakes: ours "
                    f"{limits.get('ours')}, bare {limits.get('bare')})",
                    1,
                    f"{row['ours']['ready_seconds']:.2f}",
                    f"{row['bare']['ready_seconds']:.2f}",
                    f"{ready_ratio:.3f}",
                    f"<= {TARGET_READY}",
                    verdict(ready_ratio, TARGET_READY),
                ]
            )
            rows.append(
                [
                    f"{n} RSS KB/device vs {row.get('bare_side', 'bare')}",
                    1,
                    f"{row['ours']['rss_kb_per_device']:.1f}",
                    f"{row['bare']['rss_kb_per_device']:.1f}",
                    f"{row['ours']['rss_kb_per_device'] / row['bare']['rss_kb_per_device']:.3f}",
                    f"<= {TARGET_RSS_KB:g} KB" if big else "",
                    verdict(row["ours"]["rss_kb_per_device"], TARGET_RSS_KB) if big else "",
                ]
            )
    print_table(
        "Fleet: galaxy_actors vs bare trio-websocket (bare-same: connect + REGISTER, heartbeat "
        "and device info, as ours; bare: connect + REGISTER only; each bare side at its "
        "fastest calibrated concurrency; ratio: median [quartiles] of rounds)",
        ["figure", "rounds", "ours", "bare", "ratio ours/bare", "target", "verdict"],
        rows,
    )
    tm = results.get("tracemalloc")
    if tm:
        for side in ("ours", "bare"):
            t = tm[side]
            print_table(
                f"tracemalloc, {side}: {t['bytes_per_device'] / 1024:.1f} KB and "
                f"{t['blocks_per_device']:.0f} blocks alive per device ({tm['n']} devices)",
                ["where", "bytes/device", "blocks/device"],
                [[w, f"{b:.0f}", f"{c:.1f}"] for w, b, c in t["by_line"][:15]],
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    if args.worker:
        return worker_main(args)
    exit_on_sigterm()
    raise_nofile_limit()
    args.baselines = ["bare" if b == "register" else "bare-same" for b in args.baselines]
    args.bare_limit = {}  # baseline -> concurrency, set by calibrate()
    results: dict[str, Any] = {
        "parameters": {k: v for k, v in vars(args).items() if v is not None},
        "baselines": args.baselines,
        "scale": [],
        "idle": [],
    }
    started = time.perf_counter()
    with AgentProcess() as agent:
        for n in args.sizes:
            large = n >= args.large_from and args.rounds_large
            rounds = args.rounds_large if large else args.rounds
            results["scale"].append(scale(args, agent, n, rounds))
            write_json(args.name, results, quiet=True)
        for k, (n, hb) in enumerate(args.idle):
            results["idle"].append(idle(args, agent, k, n, hb))
            write_json(args.name, results, quiet=True)
        if args.tracemalloc_size:
            n = args.tracemalloc_size
            tm: dict[str, Any] = {"n": n}
            for side in ("ours", "bare"):
                tm[side] = run_side(agent, args, side, n, f"tm{side}", tracemalloc=True)[
                    "tracemalloc"
                ]
            results["tracemalloc"] = tm
    results["seconds"] = time.perf_counter() - started
    report(results)
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
