"""Three nodes as ``galaxy-actors run`` subprocesses share 30 devices through a real Redis;
tasks come from a separate client (this test process); one node is killed with ``kill -9``
mid-load.

The agents run in the test process, on real ws:// sockets on 127.0.0.1, so their records
span every node: they show which task reached a device how many times, and whether any
device was ever registered twice at once (the agent refuses a second registration of the
same client id, as the real server does).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from redis_server import RedisServer

from galaxy_actors import ExecutionResult, OutcomeUnknown
from galaxy_actors.cluster import ClusterClient, open_client
from galaxy_actors.testing import SimulatedAgent

DEVICES = tuple(f"dev-{i:02d}" for i in range(30))
NODES = ("node-a", "node-b", "node-c")
PER_DEVICE = 4
# Short leases keep the test quick: a dead node's devices move within 3 + 0.5 s. Not
# shorter: on 2 shared cores a node's renewals must still fit in the lease, and heartbeats are
# kept slow so that a loaded machine does not time connections out.
LEASE_TTL, RENEW_INTERVAL, FENCE_MARGIN = 3.0, 0.5, 0.5
BOUND = LEASE_TTL + RENEW_INTERVAL
# Polling granularity and a loaded 2-core machine (three nodes, Redis and the agents).
SLACK = 1.0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GALAXY_ACTORS_REDIS_URL", None)
    return env


def write_node(path: Path, node: str, redis_url: str, devices: dict[str, str]) -> Path:
    """A node's file; only the first node's lists the fleet's devices (they go to Redis)."""
    entries = "".join(
        f'[[devices]]\ndevice_id = "{device}"\nserver_url = "{url}"\n'
        for device, url in devices.items()
    )
    path.write_text(
        "[supervisor]\nheartbeat_interval = 5.0\nheartbeat_timeout = 5.0\n"
        "shutdown_grace = 1.0\nclose_timeout = 0.5\n"
        "[restart]\nreconnect_delay = 0.05\nmax_delay = 0.2\nmax_retries = 100\n"
        "[control]\nenabled = false\n"
        '[logging]\nformat = "json"\nlevel = "info"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nnode = "{node}"\nfleet = "test"\n'
        f"lease_ttl = {LEASE_TTL}\nrenew_interval = {RENEW_INTERVAL}\n"
        f"fence_margin = {FENCE_MARGIN}\n" + entries
    )
    return path


@asynccontextmanager
async def node_process(config: Path) -> AsyncIterator[trio.Process]:
    """``galaxy-actors run config``; killed on the way out if still running."""
    log = config.with_suffix(".log")
    command = [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "none"]
    with log.open("wb") as out:
        process = await trio.lowlevel.open_process(
            command, stdout=out, stderr=subprocess.STDOUT, env=child_env()
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def task_frames(agents: list[SimulatedAgent]) -> Counter[str]:
    """How many ``task`` frames each task id reached an agent with, across every node."""
    counts: Counter[str] = Counter()
    for agent in agents:
        for frame in agent.received:
            message = frame.message
            if message is not None and message.type == "task":
                counts[(message.session_id or "").split("@", 1)[1]] += 1
    return counts


def refused_registrations(agents: list[SimulatedAgent]) -> int:
    """Registrations an agent refused: a device registered while it was still connected."""
    sent = sum(
        1
        for agent in agents
        for frame in agent.received
        if frame.message is not None and frame.message.type == "register"
    )
    return sent - sum(agent.registrations for agent in agents)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll the test's own objects (bounded by the caller's fail_after)."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


async def wait_owners(
    client: ClusterClient, predicate: Callable[[dict[str, str | None]], bool]
) -> dict[str, str | None]:
    """Poll the leases until ``predicate`` holds (bounded by the caller's fail_after)."""
    while True:
        owners = dict((await client.status()).owners)
        if predicate(owners):
            return owners
        await trio.sleep(0.02)


async def test_kill_9_of_a_node_mid_load_moves_its_devices_within_the_bound_and_loses_nothing(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    agents = [SimulatedAgent(devices=DEVICES[i::3], task_duration=0.15) for i in range(3)]
    tasks = {
        f"{device}-{i}": (device, "at_most_once" if i % 2 else "at_least_once")
        for device in DEVICES
        for i in range(PER_DEVICE)
    }
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, open_client(redis_server.url, "test") as client:
            urls = [await nursery.start(agent.serve_websocket) for agent in agents]
            fleet = {device: urls[i % 3] for i, device in enumerate(DEVICES)}
            configs = [
                write_node(
                    tmp_path / f"{node}.toml",
                    node,
                    redis_server.url,
                    fleet if node == NODES[0] else {},
                )
                for node in NODES
            ]
            async with (
                node_process(configs[0]) as a,
                node_process(configs[1]) as b,
                node_process(configs[2]) as c,
            ):
                processes = dict(zip(NODES, (a, b, c), strict=True))
                # Every device owned, spread over the three nodes.
                owners = await wait_owners(
                    client,
                    lambda o: len(o) == len(DEVICES) and set(o.values()) == set(NODES),
                )
                await trio.sleep(0.5)  # the first connections are made
                for task_id, (device, delivery) in tasks.items():
                    await client.submit(
                        task_id, {}, device_id=device, task_id=task_id, delivery=delivery
                    )
                # Mid-load: tasks are running on every node's devices.
                await wait_until(lambda: len(task_frames(agents)) >= len(DEVICES))
                victim = NODES[1]
                moved = sorted(d for d, owner in owners.items() if owner == victim)
                processes[victim].send_signal(signal.SIGKILL)
                killed_at = trio.current_time()
                taken: dict[str, float] = {}

                def all_taken(owners: dict[str, str | None]) -> bool:
                    now = trio.current_time()
                    for device in moved:
                        if owners[device] not in (None, victim):
                            taken.setdefault(device, now - killed_at)
                    return len(taken) == len(moved)

                await wait_owners(client, all_taken)
                # Within the bound, counted from the kill (the last renewal was before it).
                assert max(taken.values()) <= BOUND + SLACK, taken
                outcomes = {task_id: await client.result(task_id) for task_id in tasks}
                written = await client.store.outcomes_since("0-0", block=None)
                for node in (NODES[0], NODES[2]):
                    processes[node].send_signal(signal.SIGTERM)
                with trio.fail_after(20):
                    assert await processes[NODES[0]].wait() == 0
                    assert await processes[NODES[2]].wait() == 0
            nursery.cancel_scope.cancel()
    # Every task has exactly one outcome, in the outcome stream too.
    assert set(outcomes) == set(tasks)
    assert sorted(fields["task"] for _, fields in written) == sorted(tasks)
    # What no at-most-once task may do: reach a device twice.
    sent = task_frames(agents)
    twice = [t for t, (_, delivery) in tasks.items() if delivery == "at_most_once" and sent[t] > 1]
    assert twice == []
    # An at-least-once task always completes; an at-most-once one completes, or, if it was
    # in flight on the killed node, ends OutcomeUnknown.
    for task_id, outcome in outcomes.items():
        device, delivery = tasks[task_id]
        if isinstance(outcome, ExecutionResult):
            assert outcome.ok, outcome
        else:
            assert delivery == "at_most_once" and device in moved, (task_id, outcome)
            assert isinstance(outcome, OutcomeUnknown), (task_id, outcome)
    # No device was ever connected by two nodes at once.
    assert refused_registrations(agents) == 0


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "galaxy_actors", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_env(),
    )


async def test_the_operator_commands_against_one_node(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    agent = SimulatedAgent(devices=["pc-1"])
    url = redis_server.url
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_client(url, "test") as client:
            agent_url = await nursery.start(agent.serve_websocket)
            config = write_node(tmp_path / "a.toml", "node-a", url, {"pc-1": agent_url})
            async with node_process(config) as node:
                await wait_owners(client, lambda o: o.get("pc-1") == "node-a")
                done = await cli(
                    "submit",
                    "--cluster",
                    url,
                    "--fleet",
                    "test",
                    "--device",
                    "pc-1",
                    "open the report",
                    "--task-id",
                    "t-1",
                )
                assert done.returncode == 0, done.stderr
                assert done.stdout.decode().startswith("completed on pc-1 (task t-1,")
                again = await cli("result", "--cluster", str(config), "t-1", "--json")
                assert again.returncode == 0
                assert '"outcome": "completed"' in again.stdout.decode()
                status = await cli("status", "--cluster", str(config))
                assert status.stdout.decode().splitlines() == [
                    "1 live nodes (node-a 1); 1 devices",
                    "pc-1  node-a",
                ]
                # SIGTERM: a clean exit that hands the lease back at once. Its last renewal
                # was at most RENEW_INTERVAL ago, so it could not have expired by itself yet.
                node.send_signal(signal.SIGTERM)
                with trio.fail_after(LEASE_TTL - RENEW_INTERVAL):
                    assert await node.wait() == 0
                    assert (await client.status()).owners == {"pc-1": None}
            nursery.cancel_scope.cancel()


async def test_a_node_that_cannot_reach_redis_exits_1_saying_so(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    redis_server.stop()
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    config = write_node(tmp_path / "a.toml", "node-a", url, {})
    with trio.fail_after(30):
        done = await cli("run", str(config), "--view", "none")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert f"{config}: cluster: Redis at redis://***@127.0.0.1:{redis_server.port}/0" in err
    assert "cannot be reached" in err
    assert "hunter2" not in err + done.stdout.decode()
