"""Cluster nodes through Redis outages and membership changes, on a real server (real
time). The outage tests use a server that keeps its data across a restart (append-only
file, fsync on every write), as a production Redis would."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
import trio
from redis_server import RedisServer

from galaxy_actors import (
    ClientMessageType,
    DeviceStatus,
    ExecutionResult,
    MemoryNetwork,
    OutcomeUnknown,
)
from galaxy_actors.cluster import (
    ClusterUnavailable,
    LeaseSettings,
    Node,
    NodeSettings,
    open_client,
    open_node,
)
from galaxy_actors.testing import SimulatedAgent

URL = "ws://agent/ws"


def settings(name: str, lease: LeaseSettings) -> NodeSettings:
    return NodeSettings(name, fleet="f", lease=lease, read_block=0.05, retry_interval=0.05)


async def until(condition: Callable[[], bool], within: float) -> float:
    """Wait until ``condition()`` holds; returns when (fails the test after ``within`` s)."""
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the state is the node's, not an event
            await trio.sleep(0.01)
    return trio.current_time()


def task_frames(agent: SimulatedAgent) -> int:
    return sum(
        1
        for frame in agent.received
        if frame.message is not None and frame.message.type is ClientMessageType.TASK
    )


def registrations_refused(agent: SimulatedAgent) -> int:
    registers = sum(
        1
        for frame in agent.received
        if frame.message is not None and frame.message.type is ClientMessageType.REGISTER
    )
    return registers - agent.registrations


async def test_a_node_cut_off_from_redis_disconnects_before_its_lease_can_expire(
    persistent_redis_server: RedisServer,
) -> None:
    redis = persistent_redis_server
    lease = LeaseSettings(lease_ttl=3.0, renew_interval=0.5, margin=1.0)
    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["pc"])
    async with trio.open_nursery() as nursery, open_client(redis.url, "f") as client:
        agent.serve_memory(network, URL, nursery)
        await client.define_device("pc", URL, "Windows")
        async with open_node(
            redis.url, settings("a", lease), connector=network.connector()
        ) as node:
            await until(lambda: "pc" in node.served, lease.lease_ttl + 2)
            task = await client.submit("long", {"sim_duration": 30}, device_id="pc")
            await until(lambda: task_frames(agent) == 1, 5)  # on the device, for sure

            redis.stop()
            stopped = trio.current_time()
            with pytest.raises(ClusterUnavailable):
                await client.submit("more", device_id="pc")
            # The fencing rule: served until the last renewal + lease_ttl - margin at most,
            # so before Redis can expire the lease (last renewal + lease_ttl at least).
            dropped = await until(
                lambda: "pc" not in node.served and node.supervisor.device_ids == [],
                lease.serve_budget + 1,
            )
            assert dropped - stopped <= lease.serve_budget + 0.2
            assert dropped - stopped >= lease.serve_budget - lease.renew_interval - 0.2

            # Redis is back: the node takes the device again (after its join wait), and the
            # at-most-once task that was on the device when it was cut off ends unknown.
            redis.start()
            with trio.fail_after(3 * lease.lease_ttl):
                outcome = await client.result(task)
            assert isinstance(outcome, OutcomeUnknown)
            await until(lambda: "pc" in node.served, 2 * lease.lease_ttl)
        assert task_frames(agent) == 1  # never sent twice
        nursery.cancel_scope.cancel()


async def test_a_short_outage_keeps_devices_connected_and_outcomes_wait_for_redis(
    persistent_redis_server: RedisServer,
) -> None:
    redis = persistent_redis_server
    lease = LeaseSettings(lease_ttl=4.0, renew_interval=0.5, margin=1.0)
    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["pc"])
    async with trio.open_nursery() as nursery, open_client(redis.url, "f") as client:
        agent.serve_memory(network, URL, nursery)
        await client.define_device("pc", URL, "Windows")
        async with open_node(
            redis.url, settings("a", lease), connector=network.connector()
        ) as node:
            await until(lambda: "pc" in node.served, lease.lease_ttl + 2)
            left: list[float] = []

            async def watch_served(node: Node) -> None:
                while True:
                    if "pc" not in node.served:
                        left.append(trio.current_time())
                    await trio.sleep(0.01)

            nursery.start_soon(watch_served, node)
            task = await client.submit("work", {"sim_duration": 1.0}, device_id="pc")
            await until(lambda: task_frames(agent) == 1, 5)
            redis.stop()
            await trio.sleep(1.5)  # the task ends on the device meanwhile
            assert node.supervisor.snapshot("pc").status is DeviceStatus.IDLE
            assert not node.redis_ok
            redis.start()
            with trio.fail_after(5):
                outcome = await client.result(task)
            assert isinstance(outcome, ExecutionResult) and outcome.ok
            assert node.redis_ok or await until(lambda: node.redis_ok, 2)
            assert left == []  # never disconnected
        assert agent.connections_accepted == 1
        nursery.cancel_scope.cancel()


async def test_devices_move_to_a_joining_node_without_two_connections(
    redis_server: RedisServer,
) -> None:
    lease = LeaseSettings(lease_ttl=1.5, renew_interval=0.3, margin=0.5)
    network = MemoryNetwork()
    devices = [f"d{i}" for i in range(8)]
    agent = SimulatedAgent(devices=devices, task_duration=0.05)
    async with trio.open_nursery() as nursery, open_client(redis_server.url, "f") as client:
        agent.serve_memory(network, URL, nursery)
        for device_id in devices:
            await client.define_device(device_id, URL, capabilities=["work"])
        async with open_node(
            redis_server.url, settings("a", lease), connector=network.connector()
        ) as a:
            await until(lambda: a.served == set(devices), lease.lease_ttl + 2)
            async with open_node(
                redis_server.url, settings("b", lease), connector=network.connector()
            ) as b:
                ids = [await client.submit(f"t{n}", capabilities=["work"]) for n in range(40)]
                await until(lambda: b.served and a.served | b.served == set(devices), 10)
                assert a.served.isdisjoint(b.served)
                with trio.fail_after(20):
                    for task_id in ids:
                        assert isinstance(await client.result(task_id), ExecutionResult)
                owners = (await client.status()).owners
                assert set(owners.values()) == {"a", "b"}
            # b has left (normally: its leases are released), and a takes everything back.
            with trio.fail_after(10):
                async with contextlib.aclosing(client.watch_status(0.05)) as statuses:
                    async for status in statuses:
                        if status.nodes == ("a",) and set(status.owners.values()) == {"a"}:
                            break
            assert a.served == set(devices)
        assert registrations_refused(agent) == 0
        nursery.cancel_scope.cancel()
