"""One reader per connection: only the Session's loop receives; a waiting caller is woken
with its outcome. What the waiting caller still gets: heartbeats, deadlines, cancellation."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.lowlevel
from lab import frames_of, memory_lab

from galaxy_actors import (
    DeviceDisconnected,
    DeviceStatus,
    ResultStatus,
    TaskCancelled,
    TaskTimeout,
)
from galaxy_actors._transports._transport import Transport, TransportClosed
from galaxy_actors.events import BadFrame
from galaxy_actors.transport import MemoryConnector, MemoryServerConnection


@attrs.define(eq=False)
class OneReaderTransport:
    """A transport that refuses a second concurrent reader, as a transport built on a
    `trio.abc.Stream` would (`trio.BusyResourceError`), and records the most seen."""

    _inner: Transport
    readers: int = 0
    most: int = 0

    async def send(self, frame: str) -> None:
        await self._inner.send(frame)

    async def receive(self) -> str | bytes:
        if self.readers:
            raise trio.BusyResourceError("another task is already receiving")
        self.readers += 1
        self.most = max(self.most, self.readers)
        try:
            return await self._inner.receive()
        finally:
            self.readers -= 1

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.define(eq=False)
class OneReaderConnector:
    _inner: MemoryConnector
    opened: list[OneReaderTransport] = attrs.field(factory=list)

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        async with self._inner.open(url) as transport:
            wrapped = OneReaderTransport(transport)
            self.opened.append(wrapped)
            yield wrapped


async def test_one_task_reads_a_connection_and_every_result_has_its_acknowledgement(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Measured on the earlier design: with a 0 s task and 1 s idle gaps, 106-119 of 200
    # tasks had their TASK_END routed before their acknowledgement (a second reader).
    connectors: list[OneReaderConnector] = []

    def wrap(inner: MemoryConnector) -> OneReaderConnector:
        connectors.append(OneReaderConnector(inner))
        return connectors[0]

    async with memory_lab(wrap_connector=wrap) as lab:
        with lab.supervisor.subscribe(buffer=10_000) as events:
            await lab.connected("pc", task_duration=0.0)
            results = []
            for i in range(200):
                results.append(await lab.supervisor.run_task(f"t{i}", device_id="pc"))
                await trio.sleep(1.0)
            bad = []
            while True:
                try:
                    event = events.receive_nowait()
                except trio.WouldBlock:
                    break
                if isinstance(event, BadFrame):
                    bad.append(event)
        assert all(r.ok for r in results)
        assert [r.task_id for r in results if r.timings.accepted_at is None] == []
        assert bad == []
        stats = lab.supervisor.stats("pc")
        assert stats.unknown_task_frames == 0
    (connector,) = connectors
    assert [t.most for t in connector.opened] == [1]


async def test_a_task_end_with_wire_status_error_is_a_failed_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def server(conn: MemoryServerConnection) -> None:
        # A hand-written agent: registration, no device info, then TASK_END status "error".
        with contextlib.suppress(TransportClosed):
            while True:
                frame = json.loads(await conn.receive())
                kind = frame["type"]
                if kind in ("register", "heartbeat"):
                    await conn.send(json.dumps({"type": "heartbeat", "status": "ok"}))
                elif kind == "device_info_request":
                    await conn.send(
                        json.dumps(
                            {
                                "type": "device_info_response",
                                "status": "ok",
                                "response_id": frame["request_id"],
                                "result": {"error": "no info"},
                            }
                        )
                    )
                elif kind == "task":
                    sid = frame["session_id"]
                    await conn.send(
                        json.dumps({"type": "heartbeat", "status": "ok", "session_id": sid})
                    )
                    await conn.send(
                        json.dumps(
                            {
                                "type": "task_end",
                                "status": "error",
                                "session_id": sid,
                                "result": None,
                                "error": "agent crashed",
                            }
                        )
                    )

    async with memory_lab() as lab:
        lab.network.listen("ws://raw/ws", server, lab.nursery)
        lab.supervisor.add_device("pc", "ws://raw/ws", connect=False)
        assert await lab.supervisor.connect("pc")
        result = await lab.supervisor.run_task("t", device_id="pc")
        assert not result.ok
        assert result.status is ResultStatus.FAILED
        assert result.error == "agent crashed"
        assert result.timings.accepted_at is not None


async def test_heartbeats_go_out_while_a_caller_waits_for_a_long_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(heartbeat_interval=30.0, heartbeat_timeout=10.0) as lab:
        agent = await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        result = await sup.run_task("long", device_id="pc")
        assert result.ok
        heartbeats = [f.at for f in agent.received if f.message and f.message.type == "heartbeat"]
        assert heartbeats == [0.0, 30.0, 60.0, 90.0]


async def test_a_dead_peer_is_detected_while_a_caller_waits(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(heartbeat_interval=30.0, heartbeat_timeout=10.0) as lab:
        agent = await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        agent.answer_heartbeats = False
        agent.lose_task_end = True
        with pytest.raises(DeviceDisconnected, match="heartbeat_timeout"):
            await sup.run_task("never ends", device_id="pc")
        # The heartbeat at t=30 got no answer within 10 s.
        assert trio.current_time() == 40.0


async def test_a_task_timeout_wakes_the_waiting_caller_on_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", lose_task_end=True)
        sup = lab.supervisor
        with pytest.raises(TaskTimeout):
            await sup.run_task("lost", device_id="pc", task_timeout=7.0)
        assert trio.current_time() == 7.0


async def test_a_forced_disconnect_wakes_the_waiting_caller_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        async with trio.open_nursery() as nursery:

            async def disconnect_later() -> None:
                await trio.sleep(3)
                await sup.disconnect("pc", force=True)

            nursery.start_soon(disconnect_later)
            with pytest.raises(TaskCancelled):
                await sup.run_task("long", device_id="pc")
            assert trio.current_time() == 3.0


async def test_the_loop_takes_over_when_the_waiting_caller_is_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        handle = await sup.submit("abandoned", device_id="pc", task_id="a")
        with trio.move_on_after(2):
            await sup.run_task("queued behind", device_id="pc", task_id="b")
        with trio.move_on_after(1):
            await handle.result()  # this waiter reads the frames, then is cancelled
        assert sup.snapshot("pc").status is DeviceStatus.BUSY
        # Nobody waits any more: the loop reads the TASK_END at t=10 and frees the device.
        await sup.wait_for_status("pc", DeviceStatus.IDLE)
        assert trio.current_time() == 10.0
        assert (await handle.result()).ok
        assert (await sup.run_task("next", device_id="pc")).ok
        assert [f.request for f in frames_of(agent, "task")] == ["abandoned", "next"]


async def test_two_waiters_of_one_task_both_get_its_result(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=3.0)
        sup = lab.supervisor
        handle = await sup.submit("shared", device_id="pc")
        results = []

        async def wait() -> None:
            results.append(await handle.result())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(wait)
            nursery.start_soon(wait)
        assert len(results) == 2
        assert results[0] is results[1]
        assert results[0].ok
        assert trio.current_time() == 3.0


@attrs.define
class SlowClosingConnector:
    """Closing takes ``close_time`` seconds, as a closing handshake with a slow peer does."""

    inner: MemoryConnector
    close_time: float

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        async with self.inner.open(url) as transport:
            try:
                yield transport
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(self.close_time)


async def test_a_waiting_caller_learns_of_its_timeout_before_the_connection_is_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    slow = memory_lab(wrap_connector=lambda c: SlowClosingConnector(c, close_time=5.0))
    async with slow as lab:
        await lab.connected("pc", lose_task_end=True)
        with pytest.raises(TaskTimeout):
            await lab.supervisor.run_task("lost", device_id="pc", task_timeout=7.0)
        assert trio.current_time() == 7.0  # not 12: the close is still going on
