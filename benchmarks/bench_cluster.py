"""The cluster's cost: tasks through Redis Streams and 1, 2 or 3 nodes, against one supervisor
used directly with the same agents; failover after ``kill -9``; Redis's work per task.

1. Throughput: ``--devices`` devices on one agent process, ``--tasks`` tasks submitted by
   ``--submitters`` concurrent callers, to the last outcome. Sides: ``direct`` (one
   `open_supervisor` in this process, `Supervisor.run_task`) and ``1 node``, ``2 nodes``,
   ``3 nodes`` (``galaxy-actors run`` subprocesses with a ``[cluster]`` table; the tasks
   submitted from this process with `ClusterClient`). Each round runs every side, in an
   order rotated from round to round; a round's ratio is the cluster's tasks/s over the
   direct side's. **On 2 cores this shows the cost, not a speed-up**: the agent, Redis, the
   client and every node share the same two cores, so more nodes add work, not capacity.
2. Redis's work per task: ``INFO commandstats`` and ``INFO stats`` deltas around each cluster
   side's measured window (commands, and bytes in and out), divided by the tasks; and the
   idle rate (lease renewals, membership, stream reads) per device and second, measured
   over a window with no tasks.
3. Memory in Redis: ``used_memory`` before the fleet is defined and once every device is
   owned (per device), and after the tasks, whose records stay for the retention (per task).
4. Failover: three nodes, ``kill -9`` of one; the time until every device it owned has a
   live owner again, against the bound ``lease_ttl + renew_interval``.

The agent runs in another process (``agent_server.py``) and answers at once; Redis (or
Valkey) is started on a free loopback port (``tests/redis_server.py`` finds the binary).
``.venv/bin/python benchmarks/bench_cluster.py --rounds 3 --tasks 300`` is a quick look.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import coredis
import trio
from _common import (
    HERE,
    AgentProcess,
    exit_on_sigterm,
    fmt_ratio,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    ratio_summary,
    summary,
    write_json,
)

from galaxy_actors import Supervisor, open_supervisor
from galaxy_actors.cluster import ClusterClient, open_client
from galaxy_actors.transport import WebSocketConnector

DATA: dict[str, Any] = {"file": "report.xlsx", "sheet": 1}
SIDES = ("direct", "1 node", "2 nodes", "3 nodes")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every side")
    parser.add_argument("--devices", type=int, default=30, help="devices of the fleet")
    parser.add_argument("--submitters", type=int, default=60, help="concurrent callers")
    parser.add_argument("--tasks", type=int, default=900, help="tasks per side per round")
    parser.add_argument("--memory-devices", type=int, default=1000, help="memory run's fleet")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle Redis window")
    parser.add_argument("--failovers", type=int, default=3, help="kill -9 rounds")
    parser.add_argument("--lease-ttl", type=float, default=3.0, help="failover runs' lease")
    parser.add_argument("--renew-interval", type=float, default=0.5)
    parser.add_argument("--fence-margin", type=float, default=0.5)
    parser.add_argument(
        "--phases",
        default="throughput,memory,failover",
        help="which phases to run, comma-separated (default: all three)",
    )
    parser.add_argument("--name", default="cluster", help="results/<name>.json")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- Redis


def _load_redis_server_module() -> Any:
    # The tests' own launcher: one place knows where the server binary comes from.
    path = HERE.parent / "tests" / "redis_server.py"
    spec = importlib.util.spec_from_file_location("redis_server", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def redis_server() -> Iterator[str]:
    """A fresh Redis/Valkey server on a free loopback port; yields its URL."""
    module = _load_redis_server_module()
    binary = module.find_server_binary()
    if binary is None:
        raise SystemExit(module.INSTALL_HINT)
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = module.RedisServer(binary, Path(directory))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


async def redis_counters(redis: coredis.Redis[str]) -> dict[str, float]:
    """Commands processed, bytes in and out, and memory used, from INFO."""
    stats = await redis.info("stats")
    memory = await redis.info("memory")
    return {
        "commands": float(stats["total_commands_processed"]),
        "bytes_in": float(stats["total_net_input_bytes"]),
        "bytes_out": float(stats["total_net_output_bytes"]),
        "used_memory": float(memory["used_memory"]),
    }


async def command_counts(redis: coredis.Redis[str]) -> dict[str, int]:
    """Calls per command, from INFO commandstats (``cmdstat_xadd`` -> ``xadd``)."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict)
    }


def delta(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    return {key: after[key] - before.get(key, 0) for key in after}


# --------------------------------------------------------------------------- nodes


def node_config(
    path: Path,
    *,
    redis_url: str,
    fleet: str,
    node: str,
    devices: dict[str, str],
    lease: tuple[float, float, float],
) -> Path:
    """A node's configuration file; ``devices`` (id -> URL) are added to the fleet at start."""
    lease_ttl, renew, margin = lease
    entries = "".join(
        f'[[devices]]\ndevice_id = "{device}"\nserver_url = "{url}"\nos = "Linux"\n'
        for device, url in devices.items()
    )
    path.write_text(
        '[supervisor]\ntask_name = "bench"\nshutdown_grace = 1.0\nclose_timeout = 1.0\n'
        "[control]\nenabled = false\n"
        '[logging]\nlevel = "error"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nnode = "{node}"\nfleet = "{fleet}"\n'
        f"lease_ttl = {lease_ttl}\nrenew_interval = {renew}\nfence_margin = {margin}\n" + entries
    )
    return path


class NodeProcess:
    """``galaxy-actors run CONFIG`` in a subprocess: stopped with SIGTERM, or killed."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.with_suffix(".log")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "none"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """``kill -9``: no goodbye, its leases expire."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; killed if it outlives ``timeout``. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


@contextmanager
def nodes(configs: Sequence[Path]) -> Iterator[list[NodeProcess]]:
    started = [NodeProcess(config) for config in configs]
    try:
        yield started
    finally:
        for node in started:
            node.stop()


# --------------------------------------------------------------------------- direct side


async def direct_side(
    url: str, devices: Sequence[str], args: argparse.Namespace, tag: str
) -> float:
    """Tasks/s of one supervisor in this process, submitting to the same agent."""
    async with open_supervisor(task_name="bench", connector=WebSocketConnector()) as sup:
        for device in devices:
            sup.add_device(device, url, "Linux", connect=False)
        async with trio.open_nursery() as nursery:
            for device in devices:
                nursery.start_soon(sup.connect, device)
        return await _timed(args, devices, lambda d, t: _direct_task(sup, d, t), tag)


async def _direct_task(sup: Supervisor, device: str, task_id: str) -> None:
    await sup.run_task("x", DATA, device_id=device, task_id=task_id)


async def _timed(args: argparse.Namespace, devices: Sequence[str], run_one: Any, tag: str) -> float:
    """Run ``args.tasks`` tasks over ``devices`` from ``args.submitters`` callers; tasks/s."""
    per = args.tasks // args.submitters

    async def caller(s: int) -> None:
        for i in range(per):
            await run_one(devices[(s + i) % len(devices)], f"{tag}-{s}-{i}")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for s in range(args.submitters):
            nursery.start_soon(caller, s)
    return per * args.submitters / (time.perf_counter() - start)


# --------------------------------------------------------------------------- cluster sides


async def wait_owned(
    client: ClusterClient, devices: Sequence[str], nodes: Sequence[str], within: float
) -> dict[str, str | None]:
    """Wait until every device has a lease held by one of ``nodes``; returns the owners."""
    with trio.fail_after(within):
        while True:
            owners = dict((await client.status()).owners)
            if all(owners.get(d) in nodes for d in devices):
                return owners
            await trio.sleep(0.05)


async def warm_up(client: ClusterClient, devices: Sequence[str], tag: str) -> None:
    """One task per device to the end: every device is connected and its group read."""
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for device in devices:
                nursery.start_soon(_cluster_task, client, device, f"{tag}-warm-{device}")


#: Task ids that had no outcome within TASK_WAIT seconds (reported, never waited for).
LOST: list[str] = []
TASK_WAIT = 60.0


async def _cluster_task(client: ClusterClient, device: str, task_id: str) -> None:
    await client.submit("x", DATA, device_id=device, task_id=task_id)
    with trio.move_on_after(TASK_WAIT) as scope:
        await client.result(task_id)
    if scope.cancelled_caught:
        LOST.append(task_id)
        print(f"  task {task_id} on {device}: no outcome within {TASK_WAIT:g} s", flush=True)


def start_nodes(
    work: Path, redis_url: str, fleet: str, count: int, devices: dict[str, str], lease: Any
) -> list[Path]:
    return [
        node_config(
            work / f"{fleet}-n{i}.toml",
            redis_url=redis_url,
            fleet=fleet,
            node=f"n{i}",
            devices=devices if i == 0 else {},
            lease=lease,
        )
        for i in range(count)
    ]


async def cluster_side(
    args: argparse.Namespace, work: Path, count: int, tag: str
) -> dict[str, Any]:
    """Tasks/s through ``count`` nodes, with Redis's counters around the measured window."""
    fleet = tag
    devices = [f"{tag}-d{i}" for i in range(args.devices)]
    lease = (args.lease_ttl, args.renew_interval, args.fence_margin)
    configs = start_nodes(
        work, args.redis_url, fleet, count, dict.fromkeys(devices, args.agent_url), lease
    )
    async with open_client(args.redis_url, fleet) as client:
        redis = client.store.client
        with nodes(configs):
            names = [f"n{i}" for i in range(count)]
            await wait_owned(client, devices, names, within=60)
            await warm_up(client, devices, tag)
            before, calls_before = await redis_counters(redis), await command_counts(redis)
            rate = await _timed(args, devices, lambda d, t: _cluster_task(client, d, t), tag)
            after, calls_after = await redis_counters(redis), await command_counts(redis)
            idle = None
            if count == 1:
                idle = await idle_rate(redis, args.idle_seconds)
    tasks = args.tasks // args.submitters * args.submitters
    counted = delta(after, before)
    calls = {k: v for k, v in delta(calls_after, calls_before).items() if v}
    return {
        "tasks_per_s": rate,
        "commands_per_task": counted["commands"] / tasks,
        "bytes_in_per_task": counted["bytes_in"] / tasks,
        "bytes_out_per_task": counted["bytes_out"] / tasks,
        "calls_per_task": {k: v / tasks for k, v in sorted(calls.items())},
        "idle": idle,
    }


async def idle_rate(redis: coredis.Redis[str], seconds: float) -> dict[str, float]:
    """Redis's work while the fleet idles: commands and bytes per second."""
    before = await redis_counters(redis)
    start = time.perf_counter()
    await trio.sleep(seconds)
    after = await redis_counters(redis)
    elapsed = time.perf_counter() - start
    counted = delta(after, before)
    return {k: counted[k] / elapsed for k in ("commands", "bytes_in", "bytes_out")}


async def throughput(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    per_task: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES[1:]}
    for r in range(args.rounds):
        # Rotate the order, so that a drift of the machine favours no side.
        order = SIDES[r % len(SIDES) :] + SIDES[: r % len(SIDES)]
        for side in order:
            tag = f"r{r}{side[0]}"
            if side == "direct":
                devices = [f"{tag}-d{i}" for i in range(args.devices)]
                rates[side].append(await direct_side(args.agent_url, devices, args, tag))
            else:
                got = await cluster_side(args, work, int(side[0]), tag)
                rates[side].append(got["tasks_per_s"])
                per_task[side].append(got)
        print(
            f"  round {r + 1}/{args.rounds}: "
            + ", ".join(f"{side} {rates[side][-1]:.0f}/s" for side in SIDES),
            flush=True,
        )
    return {
        "tasks_per_s": {side: summary(values) for side, values in rates.items()},
        "ratios": {side: ratio_summary(rates[side], rates["direct"]) for side in SIDES[1:]},
        "redis_per_task": per_task,
    }


# --------------------------------------------------------------------------- memory


async def memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Redis's memory per device (defined and owned) and per task record kept."""
    fleet = "mem"
    devices = [f"mem-d{i}" for i in range(args.memory_devices)]
    # The short lease of the failover runs: a node given a thousand devices at once must
    # take them and still renew every lease on time.
    lease = (args.lease_ttl, args.renew_interval, args.fence_margin)
    async with open_client(args.redis_url, fleet) as client:
        redis = client.store.client
        empty = (await redis_counters(redis))["used_memory"]
        configs = start_nodes(
            work, args.redis_url, fleet, 1, dict.fromkeys(devices, args.agent_url), lease
        )
        with nodes(configs):
            await wait_owned(client, devices, ["n0"], within=120)
            # Each device's stream and group are made just after its lease is taken.
            await wait_streams(client, devices, within=120)
            owned = (await redis_counters(redis))["used_memory"]
            keys = await key_sizes(client, devices[0])
            n = args.tasks // args.submitters * args.submitters
            await _timed(args, devices, lambda d, t: _cluster_task(client, d, t), "mem")
            after = (await redis_counters(redis))["used_memory"]
    return {
        "devices": len(devices),
        "bytes_per_device": (owned - empty) / len(devices),
        "tasks": n,
        "bytes_per_task": (after - owned) / n,
        "keys_of_one_device": keys,
    }


async def wait_streams(client: ClusterClient, devices: Sequence[str], within: float) -> None:
    """Wait until every device's stream (with its group) exists."""
    keys = [client.store.keys.device_stream(d) for d in devices]
    with trio.fail_after(within):
        while await client.store.client.exists(keys) < len(keys):  # noqa: ASYNC110 - in Redis
            await trio.sleep(0.05)


async def key_sizes(client: ClusterClient, device: str) -> dict[str, int]:
    """MEMORY USAGE of one owned device's own keys (its stream and group, its lease)."""
    redis, keys = client.store.client, client.store.keys
    sizes = {}
    for name, key in (("stream", keys.device_stream(device)), ("lease", keys.lease(device))):
        sizes[name] = int(await redis.memory_usage(key) or 0)
    return sizes


# --------------------------------------------------------------------------- failover


async def failover(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """kill -9 one of three nodes; seconds until each of its devices has a new owner, and
    until a task to such a device completes."""
    lease = (args.lease_ttl, args.renew_interval, args.fence_margin)
    bound = args.lease_ttl + args.renew_interval
    takeover: list[float] = []
    first_task: list[float] = []
    for r in range(args.failovers):
        fleet = f"fo{r}"
        devices = [f"{fleet}-d{i}" for i in range(args.devices)]
        configs = start_nodes(
            work, args.redis_url, fleet, 3, dict.fromkeys(devices, args.agent_url), lease
        )
        async with open_client(args.redis_url, fleet) as client:
            with nodes(configs) as running:
                owners = await wait_owned(client, devices, ["n0", "n1", "n2"], within=60)
                await warm_up(client, devices, fleet)
                moved = [d for d, owner in owners.items() if owner == "n1"]
                start = time.perf_counter()
                running[1].kill()
                await wait_owned(client, moved, ["n0", "n2"], within=bound * 4)
                takeover.append(time.perf_counter() - start)
                await _cluster_task(client, moved[0], f"{fleet}-after")
                first_task.append(time.perf_counter() - start)
        print(
            f"  failover {r + 1}/{args.failovers}: {len(moved)} devices re-owned in "
            f"{takeover[-1]:.2f} s (bound {bound:g} s), a task done {first_task[-1]:.2f} s "
            "after the kill",
            flush=True,
        )
    return {
        "lease_ttl": args.lease_ttl,
        "renew_interval": args.renew_interval,
        "bound": bound,
        "takeover_s": summary(takeover),
        "first_task_s": summary(first_task),
    }


# --------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "args": {k: v for k, v in vars(args).items() if k not in ("agent_url", "redis_url")}
    }
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        work = Path(tmp)
        phases = args.phases.split(",")
        if "throughput" in phases:
            print("throughput: direct against 1, 2 and 3 nodes", flush=True)
            results["throughput"] = await throughput(args, work)
            write_json(args.name, results, quiet=True)
        if "memory" in phases:
            print("memory in Redis", flush=True)
            results["memory"] = await memory(args, work)
            write_json(args.name, results, quiet=True)
        if "failover" in phases:
            print("failover after kill -9", flush=True)
            results["failover"] = await failover(args, work)
        results["tasks_without_outcome"] = list(LOST)
    return results


def report(results: dict[str, Any]) -> None:
    if "throughput" in results:
        report_throughput(results)
    rows = []
    if "memory" in results:
        mem = results["memory"]
        keys = mem["keys_of_one_device"]
        rows += [
            [
                f"bytes per device ({mem['devices']} defined and owned)",
                f"{mem['bytes_per_device']:.0f}",
            ],
            ["bytes per task record kept (retention)", f"{mem['bytes_per_task']:.0f}"],
            [
                "MEMORY USAGE of one device's stream+group, lease",
                f"{keys['stream']}, {keys['lease']}",
            ],
        ]
    if "failover" in results:
        fo = results["failover"]
        rows += [
            [
                f"failover: devices re-owned after kill -9 (bound {fo['bound']:g} s)",
                f"{fo['takeover_s']['median']:.2f} s [{fo['takeover_s']['min']:.2f}-"
                f"{fo['takeover_s']['max']:.2f}]",
            ],
            ["failover: first task done after kill -9", f"{fo['first_task_s']['median']:.2f} s"],
        ]
    if rows:
        print_table("Redis memory, failover", ["figure", "value"], rows)
    if results.get("tasks_without_outcome"):
        lost = results["tasks_without_outcome"]
        print(f"\n{len(lost)} tasks had no outcome within {TASK_WAIT:g} s: {', '.join(lost)}")


def report_throughput(results: dict[str, Any]) -> None:
    tp = results["throughput"]
    rows = [["direct", f"{tp['tasks_per_s']['direct']['median']:.0f}", "1", "", "", ""]]
    for side in SIDES[1:]:
        per = tp["redis_per_task"][side]
        commands = summary([p["commands_per_task"] for p in per])["median"]
        bytes_io = summary([p["bytes_in_per_task"] + p["bytes_out_per_task"] for p in per])
        rows.append(
            [
                side,
                f"{tp['tasks_per_s'][side]['median']:.0f}",
                fmt_ratio(tp["ratios"][side]),
                f"{commands:.1f}",
                f"{bytes_io['median']:.0f}",
                "",
            ]
        )
    print_table(
        "Cluster: tasks/s against one supervisor used directly (ratio: median [quartiles]); "
        "on 2 cores more nodes add work, not capacity",
        ["side", "tasks/s", "ratio to direct", "Redis cmds/task", "Redis bytes/task", ""],
        rows,
    )
    for side in SIDES[1:]:
        calls: dict[str, list[float]] = {}
        for got in tp["redis_per_task"][side]:
            for name, value in got["calls_per_task"].items():
                calls.setdefault(name, []).append(value)
        top = sorted(((summary(v)["median"], k) for k, v in calls.items()), reverse=True)[:8]
        print(f"  {side}: " + ", ".join(f"{k} {v:.1f}" for v, k in top))
    idle = tp["redis_per_task"]["1 node"][0]["idle"]
    devices = results["args"]["devices"]
    print(
        f"  idle (1 node, {devices} devices): {idle['commands']:.0f} commands/s, "
        f"{(idle['bytes_in'] + idle['bytes_out']) / 1024:.1f} KiB/s"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    exit_on_sigterm()
    raise_nofile_limit()
    with redis_server() as redis_url, AgentProcess() as agent:
        args.redis_url = redis_url
        args.agent_url = agent.url
        results = trio.run(run, args)
    report(results)
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
