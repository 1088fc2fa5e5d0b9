"""The fleet's device definitions on a real Redis/Valkey server: a node re-reads them only
when they changed (a token written with every change), not every definition every round."""

from __future__ import annotations

from typing import Any

import trio
from redis_server import RedisServer

from galaxy_actors.cluster import LeaseSettings, NodeSettings, open_client, open_node
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import MemoryNetwork

URL = "ws://agent/ws"
LEASE = LeaseSettings(lease_ttl=1.0, renew_interval=0.1, margin=0.3)


async def hgetall_calls(redis: Any) -> int:
    """HGETALL commands the server has run, those inside scripts included."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


async def test_definitions_are_read_again_only_when_they_changed(
    redis_server: RedisServer,
) -> None:
    async with open_client(redis_server.url, "f") as client:
        store = client.store
        await client.define_device("pc", URL, "Windows")
        token, specs = await store.devices_since(None)
        assert token is not None and specs is not None and set(specs) == {"pc"}
        assert await store.devices_since(token) == (token, None)  # unchanged: nothing sent
        # The same definition again changes nothing.
        await client.define_device("pc", URL, "Windows")
        assert await store.devices_since(token) == (token, None)
        await client.define_device("cam", URL, "Linux", capabilities=["camera"])
        token2, specs = await store.devices_since(token)
        assert token2 not in (None, token) and specs is not None
        assert specs["cam"]["capabilities"] == ["camera"] and set(specs) == {"pc", "cam"}
        assert await client.remove_device("pc")
        token3, specs = await store.devices_since(token2)
        assert token3 not in (None, token2) and specs is not None and set(specs) == {"cam"}
        assert not await client.remove_device("pc")  # gone already: no change
        assert await store.devices_since(token3) == (token3, None)
        # Redis emptied (restarted without its data): no token, and the fleet is read as it
        # is now, every time, whatever token the reader held.
        await store.client.flushall()
        assert await store.devices_since(token3) == (None, {})
        assert await store.devices_since(None) == (None, {})


async def test_a_node_does_not_read_an_unchanged_fleet_each_round_and_sees_a_change(
    redis_server: RedisServer,
) -> None:
    settings = NodeSettings("a", fleet="f", lease=LEASE, read_block=0.05, retry_interval=0.05)
    network = MemoryNetwork()
    devices = [f"d{i}" for i in range(5)]
    agent = SimulatedAgent(devices=[*devices, "late"])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_client(redis_server.url, "f") as client:
            agent.serve_memory(network, URL, nursery)
            for device_id in devices:
                await client.define_device(device_id, URL, "Linux")
            redis = client.store.client
            async with open_node(redis_server.url, settings, connector=network.connector()) as node:
                while node.served != set(devices):  # noqa: ASYNC110 - the node's state
                    await trio.sleep(0.01)
                before = await hgetall_calls(redis)
                await trio.sleep(10 * LEASE.renew_interval)  # ten rounds or so, no change
                assert await hgetall_calls(redis) == before
                # A device defined now is seen by the next round, and served.
                await client.define_device("late", URL, "Linux")
                while "late" not in node.served:  # noqa: ASYNC110 - the node's state
                    await trio.sleep(0.01)
                assert await hgetall_calls(redis) == before + 1
            nursery.cancel_scope.cancel()
