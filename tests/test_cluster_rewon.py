"""A device whose lease a node loses and wins back: every task still ends with one outcome.

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
