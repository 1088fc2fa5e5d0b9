"""Shared test scaffolding: a supervisor wired to simulated agents on an in-memory network."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import attrs
import trio

from galaxy_actors import DeviceStatus, Supervisor, open_supervisor
from galaxy_actors.events import Event, StatusChanged, Subscription
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent
from galaxy_actors.transport import Connector, MemoryConnector


@attrs.define
class Lab:
    """Agents on a MemoryNetwork, and the supervisor under test connected to it."""

    nursery: trio.Nursery
    network: MemoryNetwork
    sup: Supervisor | None = None

    def agent(self, url: str = "ws://agent/ws", **kwargs: Any) -> SimulatedAgent:
        agent = SimulatedAgent(**kwargs)
        agent.serve_memory(self.network, url, self.nursery)
        return agent

    @property
    def supervisor(self) -> Supervisor:
        assert self.sup is not None
        return self.sup

    async def connected(
        self, device_id: str = "pc", url: str = "ws://agent/ws", **agent_options: Any
    ) -> SimulatedAgent:
        """An agent serving ``device_id`` at ``url``, and the device added and connected."""
        agent_options.setdefault("devices", [device_id])
        agent = self.agent(url, **agent_options)
        self.supervisor.add_device(device_id, url, "Linux", connect=False)
        assert await self.supervisor.connect(device_id)
        return agent


@asynccontextmanager
async def memory_lab(
    *,
    wrap_connector: Callable[[MemoryConnector], Connector] | None = None,
    network: MemoryNetwork | None = None,
    **supervisor_options: Any,
) -> AsyncIterator[Lab]:
    """Yield a Lab whose supervisor uses the in-memory network. Agents made with
    ``lab.agent`` outlive the supervisor, so its shutdown can be observed from them.
    ``wrap_connector`` wraps the network's connector (to hold or slow some operations)."""
    async with trio.open_nursery() as nursery:
        lab = Lab(nursery, network or MemoryNetwork())
        options: dict[str, Any] = {"task_name": "lab", **supervisor_options}
        connector = lab.network.connector()
        options.setdefault(
            "connector", connector if wrap_connector is None else wrap_connector(connector)
        )
        async with open_supervisor(**options) as sup:
            lab.sup = sup
            yield lab
        nursery.cancel_scope.cancel()


def frames_of(agent: SimulatedAgent, kind: str | None = None) -> list[Any]:
    """Decoded frames the agent received, optionally only those of one type."""
    return [
        f.message
        for f in agent.received
        if f.message is not None and (kind is None or f.message.type == kind)
    ]


async def next_event(subscription: Subscription, predicate: Callable[[Event], bool]) -> Event:
    """Receive events until one matches ``predicate``. Unlike polling a status, this sees
    every transition, even one undone within the same scheduling step."""
    while True:
        event = await subscription.receive()
        if predicate(event):
            return event


def became(device_id: str, status: DeviceStatus) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, StatusChanged) and e.device_id == device_id and e.new is status


class YieldCounter(trio.abc.Instrument):
    """Counts the times the current task yields to the scheduler (the end of each of its
    steps), from `counting_yields()` on: a cancellation point that does not yield is not one."""

    def __init__(self) -> None:
        self.task = trio.lowlevel.current_task()
        self.yields = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.yields += 1


@contextmanager
def counting_yields() -> Iterator[YieldCounter]:
    counter = YieldCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield counter
    finally:
        trio.lowlevel.remove_instrument(counter)
