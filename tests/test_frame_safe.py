"""Sends that a cancellation cannot tear: `FrameSafeStream`, the same guarantees through a
real ``ws://`` connection, and what a Session does when a frame-safe send is cancelled
before any of the frame left.

Real sockets only on loopback (a socket pair, or 127.0.0.1 port 0), every wait bounded."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
import trio.testing
from lab import counting_yields, frames_of, memory_lab, next_event

from galaxy_actors import DeviceStatus, TaskCancelled
from galaxy_actors._sansio._aip import (
    FrameBuilder,
    ServerMessage,
    ServerMessageType,
    WireStatus,
    decode_server,
)
from galaxy_actors._transports._stream import FrameSafeStream
from galaxy_actors._transports._transport import (
    CLOSE_ABNORMAL,
    WEBSOCKET_CLIENTS,
    WebSocketClient,
    WebSocketTransport,
)
from galaxy_actors._transports._wsdirect import DirectTransport
from galaxy_actors.aip import encode_server
from galaxy_actors.events import ConnectionFailed
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent
from galaxy_actors.transport import (
    MemoryConnector,
    MemoryServerConnection,
    Transport,
    TransportClosed,
    WebSocketConnector,
)

URL = "ws://agent/ws"
# Larger than any socket buffer pair on Linux loopback, so the send has to wait for the peer.
BIG = 16 * 1024 * 1024
LIMIT = 10  # seconds, for the tests in real time; each ends far sooner


def full_socketpair() -> tuple[socket.socket, socket.socket, int]:
    """A connected pair whose first socket's buffers (and its peer's) are full; and how
    many bytes it took."""
    a, b = socket.socketpair()
    a.setblocking(False)
    filled = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            filled += a.send(b"f" * 65536)
    return a, b, filled


@asynccontextmanager
async def socket_pair(
    send_timeout: float = 10.0, pair: tuple[socket.socket, socket.socket] | None = None
) -> AsyncIterator[tuple[FrameSafeStream, trio.SocketStream]]:
    a, b = pair or socket.socketpair()
    safe = FrameSafeStream(trio.SocketStream(trio.socket.from_stdlib_socket(a)), send_timeout)
    peer = trio.SocketStream(trio.socket.from_stdlib_socket(b))
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


async def assert_nothing_more(stream: trio.SocketStream) -> None:
    with trio.move_on_after(1):
        extra = await stream.receive_some(100)
        pytest.fail(f"the cancelled send wrote {extra!r}")


async def test_a_small_frame_goes_out_whole(autojump_clock: trio.abc.Clock) -> None:
    async with socket_pair() as (safe, peer):
        await safe.send_all(b"hello")
        assert await read_exactly(peer, 5) == b"hello"


async def test_a_send_is_a_checkpoint_as_every_trio_stream_call(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair() as (safe, peer):
        with counting_yields() as counter:
            await safe.send_all(b"one")
        assert counter.yields == 1
        with counting_yields() as counter:
            await safe.send_all(b"")
        assert counter.yields == 1
        assert await read_exactly(peer, 3) == b"one"


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
    a, b, filled = full_socketpair()
    async with socket_pair(pair=(a, b)) as (safe, peer):
        with trio.move_on_after(1) as scope:
            await safe.send_all(b"second")
        assert scope.cancelled_caught
        assert safe.stalled is None
        assert await read_exactly(peer, filled) == b"f" * filled
        await assert_nothing_more(peer)


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
        assert not sender_scope.cancelled_caught
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


async def test_a_send_that_cannot_start_fails_after_send_timeout_having_sent_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b, filled = full_socketpair()
    async with socket_pair(send_timeout=5.0, pair=(a, b)) as (safe, peer):
        start = trio.current_time()
        with pytest.raises(trio.BrokenResourceError, match="send stalled for 5 s"):
            await safe.send_all(b"never")
        assert trio.current_time() - start == pytest.approx(5.0)
        assert await read_exactly(peer, filled) == b"f" * filled
        await assert_nothing_more(peer)


async def test_sending_on_a_closed_stream_raises_closed_resource_error() -> None:
    async with socket_pair() as (safe, _peer):
        await safe.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await safe.send_all(b"late")
        with pytest.raises(trio.ClosedResourceError):
            await safe.send_all(b"")


async def test_sending_after_send_eof_raises_closed_resource_error() -> None:
    async with socket_pair() as (safe, _peer):
        await safe.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await safe.send_all(b"late")


async def test_a_peer_that_has_gone_is_a_broken_resource_error() -> None:
    async with socket_pair() as (safe, peer):
        await peer.aclose()
        with trio.fail_after(LIMIT), pytest.raises(trio.BrokenResourceError):
            while True:
                await safe.send_all(b"x" * 65536)


async def test_two_concurrent_sends_are_a_busy_resource_error(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with socket_pair() as (safe, peer), trio.open_nursery() as nursery:
        nursery.start_soon(safe.send_all, b"x" * BIG)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await safe.send_all(b"interleaved")
        await read_exactly(peer, BIG)


# A host that restored the default SIGPIPE handler (Python itself ignores SIGPIPE): a write
# to a peer that has gone must fail the send, not kill the process.
SIGPIPE_SCRIPT = textwrap.dedent(
    """
    import signal
    import trio
    from galaxy_actors._transports._stream import FrameSafeStream

    async def main():
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        stream = FrameSafeStream(await trio.open_tcp_stream("127.0.0.1", port))
        peer = await listener.accept()
        await peer.aclose()
        await listener.aclose()
        try:
            with trio.fail_after(5):
                while True:
                    await stream.send_all(b"x" * 65536)
        except trio.BrokenResourceError:
            print("broken")

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    trio.run(main)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGPIPE"), reason="no SIGPIPE on this platform")
def test_a_broken_peer_is_an_error_not_sigpipe_in_a_host_with_the_default_handler() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SIGPIPE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=LIMIT * 3,
        check=False,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "broken"), done.stderr


# --------------------------------------------------------------------------- over ws://

FRAMES = FrameBuilder("frame-safe", "pc")


@pytest.fixture(params=WEBSOCKET_CLIENTS)
def websocket(request: pytest.FixtureRequest) -> WebSocketClient:
    """The ws:// tests run against both WebSocket clients: they keep the same promises."""
    client: WebSocketClient = request.param
    return client


@asynccontextmanager
async def ws_connection(
    websocket: WebSocketClient,
) -> AsyncIterator[tuple[SimulatedAgent, WebSocketTransport | DirectTransport]]:
    agent = SimulatedAgent(devices=["pc"])
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(agent.serve_websocket)
            async with WebSocketConnector(websocket=websocket).open(url) as transport:
                assert isinstance(transport, WebSocketTransport | DirectTransport)
                yield agent, transport
            nursery.cancel_scope.cancel()


def registrations(agent: SimulatedAgent) -> int:
    return sum(1 for f in agent.received if f.message is not None and f.message.type == "register")


async def test_a_ws_connection_is_frame_safe_and_its_frames_arrive_whole(
    websocket: WebSocketClient,
) -> None:
    async with ws_connection(websocket) as (agent, transport):
        assert transport.frame_safe_sends(5.0)
        await transport.send(FRAMES.register())
        answer = decode_server(await transport.receive())
        assert (answer.type, answer.status) == ("heartbeat", "ok")
        assert registrations(agent) == 1


async def test_a_cancelled_ws_send_sends_nothing_and_the_connection_goes_on(
    websocket: WebSocketClient,
) -> None:
    async with ws_connection(websocket) as (agent, transport):
        with trio.CancelScope() as scope:
            scope.cancel()
            await transport.send(FRAMES.register())
        assert scope.cancelled_caught
        await transport.send(FRAMES.register())
        await transport.receive()
        # One registration, not two: the cancelled frame never left.
        assert registrations(agent) == 1


async def test_a_broken_socket_fails_the_send_and_closes_the_connection(
    websocket: WebSocketClient,
) -> None:
    async with ws_connection(websocket) as (_, transport):
        stream = transport._safe_stream
        assert stream is not None
        stream.socket.close()
        with pytest.raises(TransportClosed) as caught:
            await transport.send(FRAMES.register())
        assert caught.value.code == CLOSE_ABNORMAL
        with pytest.raises(TransportClosed) as caught:
            await transport.send(FRAMES.register())
        assert caught.value.code == CLOSE_ABNORMAL


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
        assert sup.snapshot("pc").status is DeviceStatus.IDLE
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
        assert sup.snapshot("pc").status is DeviceStatus.DISCONNECTED
        assert sup.snapshot("pc").queue_depth == 0
    assert [f.request for f in frames_of(agent, "task")] == ["first"]
