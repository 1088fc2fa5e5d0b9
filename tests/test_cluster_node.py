"""Cluster nodes and the client on a real Redis/Valkey server, with in-process nodes serving
simulated agents over the in-memory network. Real time: Redis is a real process."""

from __future__ import annotations

import contextlib
from collections import Counter
from typing import Any

import pytest
import trio
from redis_server import RedisServer

from galaxy_actors import (
    ConfigurationError,
    DuplicateTaskId,
    ExecutionResult,
    OutcomeUnknown,
)
from galaxy_actors.aip import ClientMessageType
from galaxy_actors.cluster import (
    ClusterUnavailable,
    LeaseSettings,
    Node,
    NodeSettings,
    open_client,
    open_node,
)
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import MemoryNetwork

URL = "ws://agent/ws"
LEASE = LeaseSettings(lease_ttl=1.5, renew_interval=0.3, margin=0.5)


def settings(name: str) -> NodeSettings:
    return NodeSettings(name, fleet="t", lease=LEASE, read_block=0.05, retry_interval=0.05)


def task_frames(agent: SimulatedAgent, task_ids: list[str]) -> Counter[str]:
    """How many TASK frames the agent received per task id (the session id ends with it)."""
    sessions = [
        frame.message.session_id or ""
        for frame in agent.received
        if frame.message is not None and frame.message.type is ClientMessageType.TASK
    ]
    return Counter({t: sum(s.endswith(t) for s in sessions) for t in task_ids})


async def test_redis_unreachable_at_start_is_a_clear_error(redis_server: RedisServer) -> None:
    redis_server.stop()
    with pytest.raises(ClusterUnavailable, match="cannot be reached"):
        async with open_node(redis_server.url, settings("a")):
            pass  # pragma: no cover


async def test_a_node_runs_device_and_capability_tasks_submitted_by_a_client(
    redis_server: RedisServer,
) -> None:
    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["pc", "cam"], task_duration=0.05)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_client(redis_server.url, "t") as client:
            agent.serve_memory(network, URL, nursery)
            await client.define_device("pc", URL, "Windows", capabilities=["web"])
            await client.define_device("cam", URL, "Linux", capabilities=["camera"])
            async with open_node(
                redis_server.url, settings("a"), connector=network.connector()
            ) as node:
                first = await client.submit("open", {"x": 1}, device_id="pc", task_id="t1")
                again = await client.submit("open", {"x": 1}, device_id="pc", task_id="t1")
                with pytest.raises(DuplicateTaskId):
                    await client.submit("close", device_id="pc", task_id="t1")
                with pytest.raises(ConfigurationError):
                    await client.submit("nowhere")
                snap = await client.submit("snap", capabilities=["camera"])
                one = await client.result(first)
                assert isinstance(one, ExecutionResult) and one.ok and one.device_id == "pc"
                assert again == first
                two = await client.result(snap)
                assert isinstance(two, ExecutionResult) and two.device_id == "cam"
                status = await client.status()
                assert status.nodes == ("a",)
                assert status.owners == {"cam": "a", "pc": "a"}
                assert node.served == {"pc", "cam"}
            # Left normally: the leases are released at once.
            assert (await client.status()).owners == {"cam": None, "pc": None}
            assert task_frames(agent, ["t1", snap]) == {"t1": 1, snap: 1}
            nursery.cancel_scope.cancel()


async def test_failover_every_task_ends_once_and_no_at_most_once_task_runs_twice(
    redis_server: RedisServer,
) -> None:
    network = MemoryNetwork()
    devices = [f"d{i}" for i in range(6)]
    agent = SimulatedAgent(devices=devices, task_duration=0.15)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, open_client(redis_server.url, "t") as client:
            agent.serve_memory(network, URL, nursery)
            for device_id in devices:
                await client.define_device(device_id, URL, "Linux", capabilities=["work"])

            nodes: dict[str, Node] = {}

            async def run_node(name: str, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
                with trio.CancelScope() as scope:
                    async with open_node(
                        redis_server.url, settings(name), connector=network.connector()
                    ) as node:
                        nodes[name] = node
                        task_status.started(scope)
                        await trio.sleep_forever()

            a = await nursery.start(run_node, "a")
            b = await nursery.start(run_node, "b")
            await trio.sleep(LEASE.lease_ttl + 2 * LEASE.renew_interval)  # the join wait
            ids = []
            for n in range(80):
                delivery = "at_most_once" if n % 2 else "at_least_once"
                target: dict[str, Any] = (
                    {"capabilities": ["work"]} if n % 4 >= 2 else {"device_id": devices[n % 6]}
                )
                ids.append(
                    await client.submit(
                        f"job {n}", task_id=f"job-{n:02}", delivery=delivery, **target
                    )
                )
            await trio.sleep(0.5)
            before = (await client.status()).owners
            lost = {d for d, owner in before.items() if owner == "a"}
            assert lost and set(before.values()) == {"a", "b"}
            a.cancel()  # node a dies: its leases expire, node b takes its devices
            died = trio.current_time()

            def all_b() -> bool:
                return b_node.served == set(devices)

            b_node = nodes["b"]
            with trio.fail_after(10):
                while not all_b():  # noqa: ASYNC110 - the state is the node's
                    await trio.sleep(0.01)
            # Within the bound, give or take this loaded machine's scheduling.
            assert trio.current_time() - died <= LEASE.takeover_bound + 1.0
            outcomes = {task_id: await client.result(task_id) for task_id in ids}
            status = await client.status()
            assert status.nodes == ("b",)
            assert set(status.owners.values()) == {"b"}
            b.cancel()

            frames = task_frames(agent, ids)
            for n, task_id in enumerate(ids):
                outcome = outcomes[task_id]
                if n % 2:  # at most once: never sent twice
                    assert frames[task_id] <= 1
                    if isinstance(outcome, ExecutionResult):
                        assert frames[task_id] == 1, task_id
                    else:
                        # Cut off by the failover. Its "sent" is marked before its frame
                        # leaves, so node a may have died between the two: the frame may
                        # or may not have gone out, which is what OutcomeUnknown says.
                        assert isinstance(outcome, OutcomeUnknown), outcome
                else:
                    assert isinstance(outcome, ExecutionResult), outcome
                    assert frames[task_id] >= 1, task_id
            # Exactly one outcome each, in the outcome stream too.
            seen = Counter(event.task_id for event in await _all_outcomes(client))
            assert seen == dict.fromkeys(ids, 1)
            nursery.cancel_scope.cancel()


async def _all_outcomes(client: object) -> list[object]:
    from galaxy_actors.cluster import ClusterClient

    assert isinstance(client, ClusterClient)
    events = []
    with trio.move_on_after(1.5):
        async with contextlib.aclosing(client.watch(since="0")) as watching:
            async for event in watching:
                events.append(event)
    return events
