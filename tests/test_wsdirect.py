"""The direct WebSocket client (`WebSocketConnector(websocket="direct")`): what it does
without a reader task of its own, against a peer that can misbehave.

The peer is wsproto's server side over a raw trio stream on 127.0.0.1 port 0, driven step
by step by each test (or raw bytes where wsproto would refuse to misbehave). Real time,
every wait bounded; "at once" means well under the connector's timeouts.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason

from galaxy_actors import ConfigurationError, FailureReason
from galaxy_actors._process._config import ConfigError, parse_config
from galaxy_actors._transports._websocket import close_name
from galaxy_actors._transports._wsdirect import DirectTransport
from galaxy_actors.transport import ConnectError, TransportClosed, WebSocketConnector

LIMIT = 10
AT_ONCE = 1.0
CHUNK = 1024 * 1024


class Peer:
    """The server's end of one connection: wsproto's server side over a trio stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.SERVER)
        self._events: list[Event] = []

    async def accept(self, *then: Event) -> None:
        """Accept the opening handshake, with ``then`` in the same write."""
        request = await self.next_event()
        assert isinstance(request, Request)
        await self.stream.send_all(self.ws.send(AcceptConnection()) + self.encode(*then))

    def encode(self, *events: Event) -> bytes:
        return b"".join(self.ws.send(event) for event in events)

    async def send(self, *events: Event) -> None:
        await self.stream.send_all(self.encode(*events))

    async def next_event(self) -> Event:
        while not self._events:
            data = await self.stream.receive_some(65536)
            self.ws.receive_data(data or None)
            self._events.extend(self.ws.events())
        return self._events.pop(0)

    async def next_message(self) -> str | bytes:
        """The next whole message, its fragments joined; other events are skipped."""
        parts: list[str | bytes] = []
        while True:
            event = await self.next_event()
            if isinstance(event, TextMessage | BytesMessage):
                parts.append(event.data)
                if event.message_finished:
                    if isinstance(parts[0], str):
                        return "".join(str(p) for p in parts)
                    return b"".join(bytes(p) for p in parts)  # type: ignore[arg-type]


Script = Callable[[Peer], Awaitable[None]]


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[str]:
    """A server that runs ``script`` on each connection; yields its ws:// URL."""

    async def handler(stream: trio.SocketStream) -> None:
        async with stream:
            await script(Peer(stream))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"
        nursery.cancel_scope.cancel()


def connector(**options: float) -> WebSocketConnector:
    return WebSocketConnector(websocket="direct", **options)  # type: ignore[arg-type]


@asynccontextmanager
async def connected(script: Script, **options: float) -> AsyncIterator[DirectTransport]:
    with trio.fail_after(LIMIT):
        async with serving(script) as url, connector(**options).open(url) as transport:
            assert isinstance(transport, DirectTransport)
            yield transport


# --------------------------------------------------------------------------- messages


async def test_a_ping_is_answered_while_the_reader_waits_and_a_sender_sends() -> None:
    got: list[object] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        got.append(await peer.next_message())
        await peer.send(Ping(b"are you there"))
        got.append(await peer.next_event())
        await peer.send(TextMessage("done"))
        await peer.next_event()

    async with connected(script) as transport, trio.open_nursery() as nursery:
        received: list[str | bytes] = []

        async def reader() -> None:
            received.append(await transport.receive())

        nursery.start_soon(reader)
        await trio.sleep(0.1)  # the reader is parked in receive
        await transport.send("from another task")
    # The pong went out from inside the parked receive, which then returned the message.
    assert got == ["from another task", Pong(b"are you there")]
    assert received == ["done"]


async def test_fragmented_messages_are_joined_with_a_ping_between_fragments() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(
            TextMessage("frag", message_finished=False),
            Ping(b"between"),
            TextMessage("mented", message_finished=True),
            BytesMessage(b"\x00\x01", message_finished=False),
            BytesMessage(b"\x02", message_finished=True),
        )
        assert await peer.next_event() == Pong(b"between")
        await peer.next_event()

    async with connected(script) as transport:
        assert await transport.receive() == "fragmented"
        assert await transport.receive() == b"\x00\x01\x02"


async def test_frames_that_come_with_the_handshakes_answer_are_delivered() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept(TextMessage("first"), TextMessage("second"))
        await peer.next_event()

    async with connected(script) as transport:
        assert [await transport.receive(), await transport.receive()] == ["first", "second"]


async def test_a_second_concurrent_reader_is_refused() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.next_event()

    async with connected(script) as transport, trio.open_nursery() as nursery:
        nursery.start_soon(transport.receive)
        await trio.sleep(0.1)
        with pytest.raises(trio.BusyResourceError):
            await transport.receive()
        nursery.cancel_scope.cancel()


async def test_a_cancelled_receive_keeps_the_message_it_decoded() -> None:
    # The peer sends a ping and a message together, then stops reading while we keep
    # sending: the receive decodes both, owes a pong, and is cancelled while that pong
    # waits (for the send lock, or for room in the socket). Nothing is lost: the pong goes
    # out later, whole, between whole frames, and the message is the next receive's.
    full, reading = trio.Event(), trio.Event()
    sizes: list[int] = []
    pongs: list[Event] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        await full.wait()
        await peer.send(Ping(b"p"), TextMessage("next"))
        await reading.wait()
        size = 0
        while True:
            event = await peer.next_event()
            if isinstance(event, TextMessage):
                size += len(event.data)
                if event.message_finished:
                    sizes.append(size)
                    size = 0
            elif isinstance(event, Pong):
                pongs.append(event)
                break
        await peer.next_event()

    async with connected(script) as transport, trio.open_nursery() as nursery:
        assert transport.frame_safe_sends(LIMIT)

        async def flood() -> None:
            while True:
                await transport.send("x" * CHUNK)

        nursery.start_soon(flood)
        await trio.sleep(0.2)  # the socket is full: the peer does not read
        full.set()
        with trio.move_on_after(0.3) as scope:
            await transport.receive()
        assert scope.cancelled_caught
        nursery.cancel_scope.cancel()
        reading.set()
        assert await transport.receive() == "next"
    assert pongs == [Pong(b"p")]
    assert sizes and set(sizes) == {CHUNK}


# --------------------------------------------------------------------------- limits


async def test_a_message_over_the_limit_is_refused_as_it_arrives() -> None:
    closes: list[Event] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(TextMessage("fine"))
        # One frame announcing 1 GiB, of which 2 KiB arrive: refused without waiting for
        # (or keeping) the rest.
        await peer.stream.send_all(struct.pack("!BBQ", 0x81, 127, 1 << 30) + b"x" * 2048)
        closes.append(await peer.next_event())

    async with connected(script, max_frame_size=1024) as transport:
        assert await transport.receive() == "fine"
        with pytest.raises(TransportClosed) as caught:
            await transport.receive()
        with pytest.raises(TransportClosed):
            await transport.send("after")
    closed = caught.value
    assert (closed.code, closed.by_peer) == (1009, False)
    assert str(closed) == (
        "connection closed by us (code 1009 MESSAGE_TOO_BIG: "
        "Exceeded maximum message size: 1024 bytes)"
    )
    assert closes == [CloseConnection(1009, "Exceeded maximum message size: 1024 bytes")]


async def test_fragments_count_toward_the_limit_together() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        for _ in range(3):
            await peer.send(BytesMessage(b"y" * 400, message_finished=False))
        await peer.next_event()

    async with connected(script, max_frame_size=1024) as transport:
        with pytest.raises(TransportClosed) as caught:
            await transport.receive()
    assert caught.value.code == 1009


# --------------------------------------------------------------------------- closing


async def test_the_peers_close_is_answered_and_reported_after_the_messages_before_it() -> None:
    replies: list[Event] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        await peer.send(TextMessage("last words"), CloseConnection(4000, "maintenance"))
        replies.append(await peer.next_event())

    async with connected(script) as transport:
        assert await transport.receive() == "last words"
        with pytest.raises(TransportClosed) as caught:
            await transport.receive()
    assert (caught.value.code, caught.value.by_peer) == (4000, True)
    assert str(caught.value) == (
        "connection closed by the peer (code 4000 PRIVATE_RESERVED: maintenance)"
    )
    assert replies == [CloseConnection(4000, "maintenance")]


async def test_our_close_waits_for_the_peers_answer() -> None:
    seen: list[Event] = []

    async def script(peer: Peer) -> None:
        await peer.accept()
        event = await peer.next_event()
        seen.append(event)
        await trio.sleep(0.3)  # the close must wait for this answer, not hang up before
        assert isinstance(event, CloseConnection)
        await peer.send(event.response())
        seen.append(await peer.next_event())  # then our end of the stream

    with trio.fail_after(LIMIT):
        async with serving(script) as url:
            async with connector(close_timeout=5).open(url) as transport:
                start = trio.current_time()
            took = trio.current_time() - start
    assert 0.3 <= took < AT_ONCE + 0.3, took
    assert [(e.code, e.reason) for e in seen if isinstance(e, CloseConnection)] == [
        (1000, ""),
        (1006, None),  # the end of the stream, after the close handshake
    ]
    with pytest.raises(TransportClosed) as caught:
        await transport.send("after")
    assert (caught.value.code, caught.value.by_peer) == (1000, False)


async def test_a_peer_that_never_answers_our_close_is_left_after_close_timeout() -> None:
    async def script(peer: Peer) -> None:
        await peer.accept()
        await trio.sleep_forever()

    with trio.fail_after(LIMIT):
        async with serving(script) as url:
            start = trio.current_time()
            async with connector(close_timeout=0.5).open(url):
                pass
            took = trio.current_time() - start
    assert 0.5 <= took < 0.5 + AT_ONCE, took


# --------------------------------------------------------------------------- the opening


Head = Callable[[bytes], bytes]


def raw_answer(answer: bytes, *, keep_writing: bytes = b"") -> Script:
    """A peer that answers the opening with ``answer`` (then writes ``keep_writing`` for
    ever, if given)."""

    async def script(peer: Peer) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await peer.stream.receive_some(65536)
        await peer.stream.send_all(answer)
        while keep_writing:
            await peer.stream.send_all(keep_writing)
        await trio.sleep(LIMIT)

    return script


async def opening_error(script: Script, connect_timeout: float = 5.0) -> tuple[ConnectError, float]:
    with trio.fail_after(LIMIT):
        async with serving(script) as url:
            start = trio.current_time()
            with pytest.raises(ConnectError) as caught:
                async with connector(connect_timeout=connect_timeout).open(url):
                    pass
            return caught.value, trio.current_time() - start


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Padding: " + b"p" * 100_000,
    ],
    ids=["wrong-accept-key", "not-http", "endless-header"],
)
async def test_a_hostile_answer_fails_the_handshake_at_once(answer: bytes) -> None:
    failure, took = await opening_error(raw_answer(answer))
    assert took < AT_ONCE, took
    assert failure.reason is FailureReason.HANDSHAKE_FAILED
    assert str(failure).startswith("handshake failed: "), failure


async def test_a_refusal_with_an_endless_body_is_reported_without_reading_it() -> None:
    answer = b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
    failure, took = await opening_error(raw_answer(answer, keep_writing=b"10\r\n" + b"b" * 16))
    assert took < AT_ONCE, took
    assert failure.reason is FailureReason.UNAUTHORIZED and failure.status_code == 403


async def test_an_answer_that_never_ends_is_bounded_by_the_connect_timeout() -> None:
    async def script(peer: Peer) -> None:
        await peer.stream.send_all(b"HTTP/1.1 101 Switching Protocols\r\n")
        await trio.sleep(LIMIT)

    failure, took = await opening_error(script, connect_timeout=0.5)
    assert 0.5 <= took < 0.5 + AT_ONCE, took
    assert str(failure) == "no handshake within 0.5 s"


def test_close_codes_are_named_as_wsproto_names_them() -> None:
    assert {c.value: close_name(c.value) for c in CloseReason} == {
        c.value: c.name for c in CloseReason
    }
    assert [close_name(c) for c in (2999, 3000, 4999, 5000)] == [
        "RFC_RESERVED",
        "IANA_RESERVED",
        "PRIVATE_RESERVED",
        "INVALID_CODE",
    ]


# --------------------------------------------------------------------------- choosing it

_CONFIG = (
    '[supervisor]\n{line}\n[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:1/ws"\n'
)


@pytest.mark.parametrize("client", ["direct", "trio-websocket"])
def test_the_configuration_file_chooses_the_client(client: str) -> None:
    config = parse_config(_CONFIG.format(line=f'websocket = "{client}"'))
    connector = config.supervisor.supervisor_options()["connector"]
    assert isinstance(connector, WebSocketConnector) and connector.websocket == client


def test_an_unknown_client_is_refused_where_it_is_named() -> None:
    with pytest.raises(ConfigError, match=r"supervisor\.websocket: must be one of"):
        parse_config(_CONFIG.format(line='websocket = "aiohttp"'))
    with pytest.raises(ConfigurationError, match="websocket must be 'direct' or"):
        WebSocketConnector(websocket="aiohttp")  # type: ignore[arg-type]
