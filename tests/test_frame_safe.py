"""Sends that a cancellation cannot tear: `FrameSafeStream`, and what a Session does when a
frame-safe send is cancelled before any of the frame left."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from lab import counting_yields, frames_of, memory_lab, next_event

from galaxy_actors import (
    ConnectionFailed,
    DeviceStatus,
    TaskCancelled,
    encode_server,
)
from galaxy_actors._aip import ServerMessage, ServerMessageType, WireStatus
from galaxy_actors._stream import FrameSafeStream
from galaxy_actors._transport import MemoryConnector, MemoryServerConnection, Transport
from galaxy_actors.testing import MemoryNetwork

URL = "ws://agent/ws"
# Larger than any socket buffer pair on Linux loopback, so the send has to wait for the peer.
BIG = 16 * 1024 * 1024


@asynccontextmanager
async def socket_pair(
    send_timeout: float = 10.0,
) -> AsyncIterator[tuple[FrameSafeStream, trio.SocketStream]]:
    a, b = trio.socket.socketpair()
    safe = FrameSafeStream(trio.SocketStream(a), send_timeout)
    peer = trio.SocketStream(b)
    try:
        yield safe, peer
    finally:
        await safe.aclose()
        await peer.aclose()


async def read_exactly(stream: trio.SocketStream, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await stream.receive_some(65536)
        assert chunk, "peer closed early"
        chunks += chunk
    return bytes(chunks)


async def test_a_small_frame_goes_out_whole(autojump_clock: trio.abc.Clock) -> None:
    async with socket_pair() as (safe, peer):
        await safe.send_all(b"hello")
        assert await read_exactly(peer, 5) == b"hello"


async def test_an_eager_send_is_a_cancellation_point_but_does_not_yield_after_the_write(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair() as (safe, peer):
        # send_all is a full checkpoint, as every Trio stream call.
        with counting_yields() as counter:
            await safe.send_all(b"one")
        assert counter.yields == 1
        # send_all_eagerly writes and returns at once: its caller's next step (a receive)
        # is the schedule point.
        with counting_yields() as counter:
            await safe.send_all_eagerly(b"two")
        assert counter.yields == 0
        with trio.CancelScope() as scope:
            scope.cancel()
            await safe.send_all_eagerly(b"torn?")
        assert scope.cancelled_caught
        assert await read_exactly(peer, 6) == b"onetwo"


async def test_a_cancelled_send_writes_nothing(autojump_clock: trio.abc.Clock) -> None:
    async with socket_pair() as (safe, peer):
        with trio.CancelScope() as scope:
            scope.cancel()
            await safe.send_all(b"torn?")
        assert scope.cancelled_caught
        await safe.send_all(b"next")
        # The first thing the peer sees is the second frame: nothing of the first left.
        assert await read_exactly(peer, 4) == b"next"


async def test_a_send_cancelled_while_waiting_for_room_writes_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair() as (safe, peer):
        filled = 0
        while True:  # fill the socket's buffers: the peer reads nothing yet
            try:
                filled += os.write(safe.socket.fileno(), b"f" * 65536)
            except BlockingIOError:
                break
        with trio.move_on_after(1) as scope:
            await safe.send_all(b"second")
        assert scope.cancelled_caught
        assert await read_exactly(peer, filled) == b"f" * filled
        with trio.move_on_after(1):
            extra = await peer.receive_some(100)
            pytest.fail(f"the cancelled send wrote {extra!r}")


async def test_a_started_send_finishes_though_its_caller_is_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair() as (safe, peer):
        payload = bytes(range(256)) * (BIG // 256)
        got = bytearray()
        async with trio.open_nursery() as nursery:
            sender_scope = trio.CancelScope()

            async def sender() -> None:
                with sender_scope:
                    await safe.send_all(payload)

            nursery.start_soon(sender)
            got += await peer.receive_some(65536)  # the send has started
            sender_scope.cancel()
            got += await read_exactly(peer, len(payload) - len(got))
        assert bytes(got) == payload


async def test_a_peer_that_stops_reading_fails_the_send_after_send_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair(send_timeout=5.0) as (safe, _peer):
        start = trio.current_time()
        with pytest.raises(trio.BrokenResourceError, match="send stalled for 5 s"):
            await safe.send_all(b"x" * BIG)
        assert trio.current_time() - start == pytest.approx(5.0)
        assert safe.stalled == "send stalled for 5 s"


async def test_sending_on_a_closed_stream_raises_closed_resource_error() -> None:
    async with socket_pair() as (safe, _peer):
        await safe.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await safe.send_all(b"late")


# --------------------------------------------------------------------------- in a Session


async def test_a_caller_cancelled_before_its_task_left_leaves_no_trace(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        with trio.CancelScope() as scope:
            scope.cancel()
            await sup.run_task("never sent", device_id="pc", task_id="t-1")
        assert scope.cancelled_caught
        assert frames_of(agent, "task") == []
        assert sup.registry.require("pc").status is DeviceStatus.IDLE
        # The id is free again and the device works.
        result = await sup.run_task("sent", device_id="pc", task_id="t-1")
        assert result.ok
        assert [f.request for f in frames_of(agent, "task")] == ["sent"]


@attrs.define
class HeldTransport:
    """A frame-safe transport that holds the TASK frame of ``held`` until cancelled."""

    inner: Transport
    held: str

    def frame_safe_sends(self, send_timeout: float) -> bool:
        return True

    async def send(self, frame: str) -> None:
        if f'@{self.held}"' in frame:
            await trio.sleep_forever()  # cancellable, and nothing of the frame left
        await self.inner.send(frame)

    async def receive(self) -> str | bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define
class HoldingConnector:
    inner: MemoryConnector
    held: str

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        async with self.inner.open(url) as transport:
            yield HeldTransport(transport, self.held)


async def test_a_queued_task_whose_send_was_cancelled_never_reaches_the_device(
    autojump_clock: trio.abc.Clock,
) -> None:
    held = memory_lab(wrap_connector=lambda c: HoldingConnector(c, "b"), shutdown_grace=2.0)
    async with held as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        first = await sup.submit("first", device_id="pc", task_id="a")
        second = await sup.submit("second", device_id="pc", task_id="b")
        assert (await first.result()).ok
        await trio.testing.wait_all_tasks_blocked()
        # The loop is now sending "b", and that send is held: leave the block.
    assert isinstance(second.outcome, TaskCancelled)
    assert [f.request for f in frames_of(agent, "task")] == ["first"]


async def test_a_peer_that_stops_reading_an_in_memory_connection_fails_it_after_send_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    confirmation = encode_server(ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK))

    async def confirm_then_stop_reading(connection: MemoryServerConnection) -> None:
        await connection.receive()  # REGISTER
        await connection.send(confirmation)
        await trio.sleep_forever()

    async with memory_lab(network=MemoryNetwork(buffer=1), send_timeout=3.0) as lab:
        lab.network.listen(URL, confirm_then_stop_reading, lab.nursery)
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("pc", URL, "Linux", connect=False)
            assert not await sup.connect("pc")
            failure = await next_event(events, lambda e: isinstance(e, ConnectionFailed))
    assert isinstance(failure, ConnectionFailed)
    assert (failure.reason, failure.detail) == ("connection_closed", "send stalled for 3 s")
    assert failure.at == 3.0


async def test_a_disconnect_during_the_loops_send_cancels_that_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(wrap_connector=lambda c: HoldingConnector(c, "b")) as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        first = await sup.submit("first", device_id="pc", task_id="a")
        second = await sup.submit("second", device_id="pc", task_id="b")
        assert (await first.result()).ok
        await trio.sleep(1)  # the loop is sending "b", and that send is held
        await sup.disconnect("pc")
        assert trio.current_time() == 2.0
        with pytest.raises(TaskCancelled, match="disconnected before it was sent"):
            await second.result()
        assert sup.registry.require("pc").status is DeviceStatus.DISCONNECTED
        assert sup.snapshot("pc").queue_depth == 0
    assert [f.request for f in frames_of(agent, "task")] == ["first"]
