"""A node taking devices: many at once without delaying its lease renewal; a device whose
lease it loses and wins back, with every task still ending with one outcome.

Real Redis (a persistent server, stopped and started again for the outage), in-process
nodes, simulated agents over the in-memory network. Real time: Redis is a real process.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import attrs
import trio
from redis_server import RedisServer

from galaxy_actors import ExecutionResult, OutcomeUnknown
from galaxy_actors.cluster import LeaseSettings, NodeSettings, open_client, open_node
from galaxy_actors.cluster._keys import FleetKeys
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import MemoryNetwork, Transport

URL = "ws://agent/ws"


@attrs.define
class SlowCloseConnector:
    """The in-memory network, with a peer that takes ``close_delay`` seconds to answer the
    closing handshake (as a real agent under load may: trio-websocket waits for its close
    frame, up to the connector's close timeout). Removing a device then takes that long."""

    network: MemoryNetwork
    close_delay: float

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        async with self.network.connector().open(url) as transport:
            try:
                yield transport
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.close_delay)


async def until(condition: Callable[[], bool], within: float) -> None:
    with trio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - the state is the node's, not an event
            await trio.sleep(0.01)


async def test_a_device_won_back_while_its_old_connection_still_closes_is_served_again(
    persistent_redis_server: RedisServer,
) -> None:
    """The lost task of the 1,000-device benchmark: a node cut off from its lease past its
    fencing deadline starts removing the device; it wins the lease back (the same node,
    a new epoch) while that removal still waits for the old connection to close. The node
    must serve the device again once the removal is over: the task that was on the device
    ends `OutcomeUnknown`, and a task submitted later runs."""
    redis = persistent_redis_server
    lease = LeaseSettings(lease_ttl=0.8, renew_interval=0.15, margin=0.25)
    settings = NodeSettings("a", fleet="f", lease=lease, read_block=0.05, retry_interval=0.05)
    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["pc"])
    connector = SlowCloseConnector(network, close_delay=2.5)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, open_client(redis.url, "f") as client:
            agent.serve_memory(network, URL, nursery)
            await client.define_device("pc", URL, "Windows")
            async with open_node(redis.url, settings, connector=connector) as node:
                await until(lambda: "pc" in node.served, lease.lease_ttl + 2)
                first = await client.submit("long", {"sim_duration": 60}, device_id="pc")
                await until(lambda: agent.tasks_received == 1, 5)

                # Cut off past the lease: the node fences the device off, and its removal
                # waits for the old connection to close (3 s).
                redis.stop()
                await until(lambda: "pc" not in node.served, lease.lease_ttl + 1)
                await trio.sleep(lease.lease_ttl - lease.serve_budget + 0.2)
                redis.start()  # the lease has expired: the node may win it back at once

                with trio.fail_after(connector.close_delay + 4 * lease.lease_ttl):
                    outcome = await client.result(first)
                assert isinstance(outcome, OutcomeUnknown), outcome
                second = await client.submit("short", device_id="pc")
                with trio.fail_after(5):
                    done = await client.result(second)
                assert isinstance(done, ExecutionResult) and done.ok, done
                assert node.served == {"pc"}
            assert agent.tasks_received == 2  # the cut-off task was never sent again
            nursery.cancel_scope.cancel()


async def test_many_devices_won_at_once_do_not_delay_the_lease_renewal(
    redis_server: RedisServer,
) -> None:
    """A node given hundreds of devices at once renews its leases on time meanwhile: the
    lease of the device it took first never runs low, and it drops none of them. (Taking
    them one by one inside the renewal round lost them all: the round outlasted the
    lease.) Nobody listens at the devices' URL: their connections are refused and retried
    later, so what is measured is the node taking them, not the agent."""
    lease = LeaseSettings(lease_ttl=1.0, renew_interval=0.2, margin=0.3)
    settings = NodeSettings("a", fleet="f", lease=lease, read_block=0.05, retry_interval=0.05)
    devices = [f"d{i:03}" for i in range(400)]
    network = MemoryNetwork()
    first = FleetKeys("f").lease(devices[0])
    async with open_client(redis_server.url, "f") as client:
        for device_id in devices:
            await client.define_device(device_id, URL, "Linux")
        redis = client.store.client
        async with open_node(redis_server.url, settings, connector=network.connector()) as node:
            lowest = float("inf")
            taken_at: float | None = None
            with trio.fail_after(20):
                # Until every device is served and a lease has passed since.
                while taken_at is None or trio.current_time() < taken_at + lease.lease_ttl:
                    left = await redis.pttl(first)
                    if left > 0:
                        lowest = min(lowest, left / 1000)
                    if taken_at is None and node.served == set(devices):
                        taken_at = trio.current_time()
                    await trio.sleep(0.01)
            assert node.served == set(devices)
            # Renewed every renew_interval: never lower than a lease minus two intervals
            # (give or take this loaded machine's scheduling).
            assert lowest >= lease.lease_ttl - 2 * lease.renew_interval - 0.1, lowest


async def test_a_dead_nodes_consumer_is_deleted_once_its_entries_are_claimed(
    redis_server: RedisServer,
) -> None:
    """A node that takes a device claims what its previous owner left pending, and that
    owner's consumer, holding nothing now, leaves the stream's group: names of dead nodes
    do not pile up in Redis."""
    lease = LeaseSettings(lease_ttl=0.8, renew_interval=0.15, margin=0.25)
    settings = NodeSettings("a", fleet="f", lease=lease, read_block=0.05, retry_interval=0.05)
    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["pc"])
    stream = FleetKeys("f").device_stream("pc")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery, open_client(redis_server.url, "f") as client:
            agent.serve_memory(network, URL, nursery)
            await client.define_device("pc", URL, "Windows")
            task = await client.submit("job", device_id="pc", delivery="at_least_once")
            redis = client.store.client
            # A node that has since died had read it.
            await redis.xreadgroup("nodes", "gone", streams={stream: ">"}, count=10)
            async with open_node(redis_server.url, settings, connector=network.connector()):
                outcome = await client.result(task)
                assert isinstance(outcome, ExecutionResult) and outcome.ok, outcome
                consumers = [str(c["name"]) for c in await redis.xinfo_consumers(stream, "nodes")]
                assert consumers == ["a"]
            nursery.cancel_scope.cancel()
