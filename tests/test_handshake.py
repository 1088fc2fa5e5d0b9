"""How an opening handshake ends, and who closed a connection, over real loopback sockets.

The peers here are hand-made (raw TCP, an HTTP answer written by hand, WebSocket frames built
byte by byte) so they can misbehave in ways a WebSocket library will not: close before
answering, refuse with a status and hang up, close with any code. Real time, every wait
bounded; "at once" means well under the connector's connect timeout.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from galaxy_actors import FailureReason, open_supervisor
from galaxy_actors._sansio._aip import FrameBuilder
from galaxy_actors._sansio._engine import AIPConnection
from galaxy_actors._transports._transport import WEBSOCKET_CLIENTS, WebSocketClient
from galaxy_actors.events import RestartScheduled, RestartsStopped
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import ConnectError, TransportClosed, WebSocketConnector

LIMIT = 10
CONNECT_TIMEOUT = 5.0  # what a hidden failure would cost
AT_ONCE = 1.0

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.fixture(params=WEBSOCKET_CLIENTS)
def websocket(request: pytest.FixtureRequest) -> WebSocketClient:
    """Every test here runs against both WebSocket clients: they keep the same promises."""
    client: WebSocketClient = request.param
    return client


@asynccontextmanager
async def tcp_server(handler: Handler) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def read_request(stream: trio.SocketStream) -> bytes:
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some()
        if not chunk:
            break
        request += chunk
    return request


async def accept_and_close(stream: trio.SocketStream) -> None:
    await stream.aclose()


def answer(head: bytes) -> Handler:
    """A server that reads the request, writes ``head`` and hangs up."""

    async def handler(stream: trio.SocketStream) -> None:
        await read_request(stream)
        await stream.send_all(head)
        await stream.aclose()

    return handler


async def connect_error(url: str, websocket: WebSocketClient) -> tuple[ConnectError, float]:
    connector = WebSocketConnector(connect_timeout=CONNECT_TIMEOUT, websocket=websocket)
    start = trio.current_time()
    with pytest.raises(ConnectError) as caught:
        async with connector.open(url):
            pass
    return caught.value, trio.current_time() - start


# --------------------------------------------------------------------------- the opening


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_a_peer_that_accepts_and_closes_is_reported_at_once(
    scheme: str, websocket: WebSocketClient
) -> None:
    with trio.fail_after(LIMIT):
        async with tcp_server(accept_and_close) as port:
            failure, took = await connect_error(f"{scheme}://127.0.0.1:{port}/ws", websocket)
    assert took < AT_ONCE, took
    assert failure.reason is FailureReason.HANDSHAKE_FAILED
    assert "closed the connection during the" in str(failure)


async def test_a_peer_that_closes_after_reading_the_request_is_reported_at_once(
    websocket: WebSocketClient,
) -> None:
    with trio.fail_after(LIMIT):
        async with tcp_server(answer(b"")) as port:
            failure, took = await connect_error(f"ws://127.0.0.1:{port}/ws", websocket)
    assert took < AT_ONCE, took
    assert failure.reason is FailureReason.HANDSHAKE_FAILED
    assert str(failure) == "the peer closed the connection during the opening handshake"


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden",
        # No length: the body runs to the close, which trio-websocket never reads as such.
        b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nno token",
    ],
)
async def test_401_and_403_are_unauthorized_at_once(
    head: bytes, websocket: WebSocketClient
) -> None:
    with trio.fail_after(LIMIT):
        async with tcp_server(answer(head)) as port:
            failure, took = await connect_error(f"ws://127.0.0.1:{port}/ws", websocket)
    assert took < AT_ONCE, took
    status = int(head.split()[1])
    assert failure.reason is FailureReason.UNAUTHORIZED and failure.status_code == status
    assert str(failure) == f"handshake rejected: HTTP {status}"


async def test_other_refusals_stay_connect_failed(websocket: WebSocketClient) -> None:
    with trio.fail_after(LIMIT):
        head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        async with tcp_server(answer(head)) as port:
            failure, _ = await connect_error(f"ws://127.0.0.1:{port}/ws", websocket)
    assert failure.reason is FailureReason.CONNECT_FAILED and failure.status_code == 503


async def test_a_wrong_token_gives_up_at_once_under_the_default_policy(
    websocket: WebSocketClient,
) -> None:
    agent = SimulatedAgent(devices=["pc"], token="s3cret")
    with trio.fail_after(LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(agent.serve_websocket)
            connector = WebSocketConnector(websocket=websocket)
            async with open_supervisor(task_name="hs", connector=connector) as sup:
                sup.add_device("pc", url + "?token=wrong", "Linux", connect=False)
                with sup.subscribe() as events:
                    assert await sup.connect("pc") is False
                    seen = []
                    async for event in events:
                        seen.append(event)
                        if isinstance(event, RestartsStopped):
                            break
                assert not any(isinstance(e, RestartScheduled) for e in seen)
                failure = sup.snapshot("pc").last_failure or ""
                assert failure == "unauthorized: handshake rejected: HTTP 403"
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- close codes

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked frame, as a server sends it."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


def websocket_then(data: bytes) -> Handler:
    """A server that accepts the WebSocket handshake, sends ``data``, reads what comes back
    for a moment and hangs up."""

    async def handler(stream: trio.SocketStream) -> None:
        request = await read_request(stream)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        await stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n" + data
        )
        with trio.move_on_after(0.5):
            await stream.receive_some()
        await stream.aclose()

    return handler


async def closed_by(
    data: bytes, websocket: WebSocketClient, max_frame_size: int = 4096
) -> TransportClosed:
    connector = WebSocketConnector(
        connect_timeout=CONNECT_TIMEOUT, max_frame_size=max_frame_size, websocket=websocket
    )
    with trio.fail_after(LIMIT):
        async with (
            tcp_server(websocket_then(data)) as port,
            connector.open(f"ws://127.0.0.1:{port}/ws") as transport,
        ):
            with pytest.raises(TransportClosed) as caught:
                while True:
                    await transport.receive()
    return caught.value


def reason_for(closed: TransportClosed) -> FailureReason:
    engine = AIPConnection(
        FrameBuilder("hs", "pc"),
        task_name="hs",
        device_id="pc",
        heartbeat_interval=30.0,
        heartbeat_timeout=10.0,
        registration_timeout=30.0,
        device_info_timeout=10.0,
    )
    engine.start(0.0)
    dead = engine.connection_lost(closed.code, str(closed), 1.0, by_peer=closed.by_peer)
    return dead.reason


async def test_a_peer_closing_with_1009_is_not_our_size_limit(websocket: WebSocketClient) -> None:
    closed = await closed_by(close_frame(1009, b"your frame is too big"), websocket)
    assert closed.code == 1009 and closed.by_peer is True
    assert "by the peer" in str(closed) and "your frame is too big" in str(closed)
    assert reason_for(closed) is FailureReason.CONNECTION_CLOSED


async def test_a_frame_over_our_limit_is_our_1009_and_a_protocol_error(
    websocket: WebSocketClient,
) -> None:
    closed = await closed_by(frame(0x1, b"x" * 5000), websocket, max_frame_size=4096)
    assert closed.code == 1009 and closed.by_peer is False
    assert "by us" in str(closed)
    assert reason_for(closed) is FailureReason.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "data",
    [frame(0x1, b"ab\xff\xfe"), close_frame(1007)],
    ids=["invalid-utf8-from-the-peer", "peer-closes-with-1007"],
)
async def test_1007_is_a_protocol_error_whoever_sent_it(
    data: bytes, websocket: WebSocketClient
) -> None:
    closed = await closed_by(data, websocket)
    assert closed.code == 1007
    assert reason_for(closed) is FailureReason.PROTOCOL_ERROR


async def test_other_codes_are_a_closed_connection_with_the_code(
    websocket: WebSocketClient,
) -> None:
    closed = await closed_by(close_frame(4000, b"maintenance"), websocket)
    assert closed.code == 4000 and closed.by_peer is True
    assert "code 4000" in str(closed) and "maintenance" in str(closed)
    assert reason_for(closed) is FailureReason.CONNECTION_CLOSED
