"""Sends with no scheduling point before the write (`DirectSender`), over real loopback
sockets: the installed trio-websocket takes the direct path, the frames it writes are
valid WebSocket frames, and the lock, cancellation and a broken socket behave as they do
through ``send_message``.

Real time here, every wait bounded: autojump would race the real I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket
from lab import counting_yields

from galaxy_actors import WebSocketConnector
from galaxy_actors._aip import FrameBuilder, decode_server
from galaxy_actors._direct import DirectSender, direct_sender
from galaxy_actors._stream import FrameSafeStream
from galaxy_actors._transport import CLOSE_ABNORMAL, TransportClosed, WebSocketTransport
from galaxy_actors.testing import SimulatedAgent

LIMIT = 10  # seconds; each test ends far sooner
FRAMES = FrameBuilder("direct", "pc")


@asynccontextmanager
async def connection() -> AsyncIterator[tuple[SimulatedAgent, WebSocketTransport]]:
    agent = SimulatedAgent(devices=["pc"])
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(agent.serve_websocket)
            async with WebSocketConnector().open(url) as transport:
                assert isinstance(transport, WebSocketTransport)
                yield agent, transport
            nursery.cancel_scope.cancel()


def parts(transport: WebSocketTransport) -> tuple[trio_websocket.WebSocketConnection, DirectSender]:
    direct = transport._direct
    assert direct is not None
    return transport._ws, direct


def registrations(agent: SimulatedAgent) -> int:
    return sum(1 for f in agent.received if f.message is not None and f.message.type == "register")


async def test_the_installed_trio_websocket_takes_the_direct_path() -> None:
    # If an upgrade of trio-websocket renames what the direct path reads, sends still work
    # through send_message, only slower: this test is what notices.
    async with connection() as (agent, transport):
        assert transport._direct is not None
        await transport.send(FRAMES.register())
        answer = decode_server(await transport.receive())
        assert (answer.type, answer.status) == ("heartbeat", "ok")
        assert registrations(agent) == 1


async def test_a_direct_send_writes_before_yielding_to_the_scheduler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Through send_message, taking trio-websocket's free send lock is a checkpoint: other
    # runnable tasks run before the frame is written, which is latency on every round trip.
    yields_at_write: list[int] = []
    write = FrameSafeStream._write

    def recording_write(self: FrameSafeStream, data: memoryview) -> int:
        yields_at_write.append(counter.yields)
        return write(self, data)

    async with connection() as (agent, transport):
        monkeypatch.setattr(FrameSafeStream, "_write", recording_write)
        with counting_yields() as counter:
            await transport.send(FRAMES.register())
        assert yields_at_write == [0]
        await transport.receive()
        assert registrations(agent) == 1


async def test_a_send_waits_while_trio_websocket_holds_its_send_lock() -> None:
    async with connection() as (agent, transport), trio.open_nursery() as nursery:
        ws, _ = parts(transport)
        release = trio.Event()

        async def hold_lock(task_status: trio.TaskStatus[None]) -> None:
            async with ws._stream_lock:  # as its reader does while it sends a pong
                task_status.started()
                await release.wait()

        await nursery.start(hold_lock)
        sent = trio.Event()

        async def send() -> None:
            await transport.send(FRAMES.register())
            sent.set()

        nursery.start_soon(send)
        await trio.sleep(0.05)
        assert not sent.is_set()  # it waits for the lock: no bytes interleaved
        release.set()
        await sent.wait()
        await transport.receive()  # the registration answer: the frame arrived whole
        assert registrations(agent) == 1


async def test_a_cancelled_direct_send_sends_nothing_and_frees_the_lock() -> None:
    async with connection() as (agent, transport):
        ws, _ = parts(transport)
        with trio.CancelScope() as scope:
            scope.cancel()
            await transport.send(FRAMES.register())
        assert scope.cancelled_caught
        assert not ws._stream_lock.locked()
        await transport.send(FRAMES.register())
        await transport.receive()
        # One registration, not two: the cancelled frame never left.
        assert registrations(agent) == 1


async def test_a_broken_socket_fails_the_send_and_closes_the_connection() -> None:
    async with connection() as (_, transport):
        ws, direct = parts(transport)
        stream = transport._safe_stream
        assert stream is not None
        stream.socket.close()
        # No checkpoint since the close: trio-websocket's reader has not seen it yet, so
        # it is the direct path that meets the closed socket.
        with pytest.raises(trio_websocket.ConnectionClosed):
            await direct.send(FRAMES.register())
        assert ws.closed is not None and ws.closed.code == CLOSE_ABNORMAL
        assert not ws._stream_lock.locked()
        with pytest.raises(TransportClosed) as caught:
            await transport.send(FRAMES.register())
        assert caught.value.code == CLOSE_ABNORMAL


async def test_only_a_trio_websocket_connection_over_its_frame_safe_stream_goes_direct() -> None:
    async with connection() as (_, transport):
        ws, _ = parts(transport)
        stream = transport._safe_stream
        assert stream is not None
        assert direct_sender(ws, None) is None  # wss://: TLS under the connection
        assert direct_sender(object(), stream) is None  # not a trio-websocket connection
        other = FrameSafeStream(stream._stream)
        assert direct_sender(ws, other) is None  # a stream the connection does not write to
        # A trio-websocket without one of the attributes the direct path reads: public path.
        for name in ("_stream_lock", "_wsproto", "_close_reason"):
            kept = ws.__dict__.pop(name)
            try:
                assert direct_sender(ws, stream) is None, name
            finally:
                ws.__dict__[name] = kept
        assert direct_sender(ws, stream) is not None
