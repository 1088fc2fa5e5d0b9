"""The in-memory transport: a stand-in for the network in tests, on ``MockClock``.

`MemoryNetwork` has servers listen on URLs and clients open them; each connection is a pair
of memory channels, so a frame is sent whole or not at all, and time is Trio's virtual time.
It keeps the `Transport` contract of `_transport` and reports what a WebSocket connection
would: close codes (1009 for an oversized frame, with who closed), refused handshakes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit

import attrs
import trio

from .._sansio._errors import ConnectError, TransportClosed
from ._transport import CLOSE_MESSAGE_TOO_BIG, CLOSE_NORMAL, DEFAULT_MAX_FRAME_SIZE, Transport

__all__ = ["MemoryConnector", "MemoryNetwork", "MemoryServerConnection"]


class _Pipe:
    """One direction of an in-memory connection."""

    __slots__ = ("receive", "send")

    def __init__(self, size: float) -> None:
        self.send, self.receive = trio.open_memory_channel[str | bytes](size)


@attrs.define(eq=False)
class _MemoryEnd:
    """One end of an in-memory connection: it reads one pipe and writes the other."""

    _incoming: _Pipe
    _outgoing: _Pipe
    _state: _CloseState
    _max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    _send_timeout: float = attrs.field(default=math.inf, init=False)

    def frame_safe_sends(self, send_timeout: float) -> bool:
        # A frame is one item in a channel: sent whole, or not at all.
        self._send_timeout = send_timeout
        return True

    async def send(self, frame: str | bytes) -> None:
        # Cancellable before the frame goes, never after (`FrameSafeTransport`).
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._state.code is not None:
            raise self._closed("connection closed")
        if len(frame) > self._max_frame_size:
            # What trio-websocket does at the receiving end of an oversized frame: that end
            # closes, on its own limit.
            self._state.closed_by = self._outgoing
            await self.close(CLOSE_MESSAGE_TOO_BIG)
            return
        channel = self._outgoing.send
        try:
            try:
                channel.send_nowait(frame)
            except trio.WouldBlock:
                # A full buffer (`MemoryNetwork.buffer`): the peer stopped reading.
                with trio.move_on_after(self._send_timeout):
                    await channel.send(frame)
                    return
                raise TransportClosed(f"send stalled for {self._send_timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self._closed("connection closed") from None

    async def receive(self) -> str | bytes:
        try:
            return await self._incoming.receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise self._closed(f"connection closed (code {self._state.code})") from None

    def _closed(self, message: str) -> TransportClosed:
        closer = self._state.closed_by
        by_peer = None if closer is None else closer is not self._incoming
        return TransportClosed(message, self._state.code, by_peer=by_peer)

    async def close(self, code: int = CLOSE_NORMAL) -> None:
        """Close both directions; frames already sent may still be read by the peer."""
        self.close_nowait(code)
        await trio.lowlevel.checkpoint()

    def close_nowait(self, code: int = CLOSE_NORMAL) -> None:
        """`close` without a checkpoint, for closing many connections in one step."""
        if self._state.code is None:
            self._state.code = code
            if self._state.closed_by is None:
                self._state.closed_by = self._incoming
        self._outgoing.send.close()
        self._incoming.send.close()

    async def aclose(self) -> None:
        await self.close(CLOSE_NORMAL)


@attrs.define
class _CloseState:
    code: int | None = None
    # The end that closed, named by the pipe it reads (ends know their pipes, not each other).
    closed_by: _Pipe | None = None


@attrs.define(eq=False)
class MemoryServerConnection(_MemoryEnd):
    """The server's end of an in-memory connection, handed to a `MemoryNetwork` handler.

    ``path`` and ``query`` are those of the URL the client opened. ``close(code)`` closes
    with a given close code, as a WebSocket server would."""

    path: str = "/"
    query: str = ""


Handler = Callable[[MemoryServerConnection], Awaitable[None]]


@attrs.define(eq=False)
class _Endpoint:
    handler: Handler
    nursery: trio.Nursery
    # Returns an HTTP status to refuse the handshake with, or None to accept.
    check: Callable[[str], int | None] | None = None


@attrs.define(eq=False)
class MemoryNetwork:
    """An in-memory stand-in for the network: servers listen on URLs, clients open them.

    Each accepted connection runs ``handler(connection)`` in the nursery the server gave
    at `listen`. No sockets, no real time: usable under ``MockClock``.

    >>> network = MemoryNetwork()            # doctest: +SKIP
    >>> network.listen("ws://agent-1/", handler, nursery)
    >>> supervisor = open_supervisor(connector=network.connector())
    """

    _endpoints: dict[str, _Endpoint] = attrs.field(factory=dict)
    handshake_delay: float = 0.0
    buffer: float = math.inf

    def listen(
        self,
        url: str,
        handler: Handler,
        nursery: trio.Nursery,
        check: Callable[[str], int | None] | None = None,
    ) -> None:
        """Serve ``url`` (scheme, host and path; the query string is ignored)."""
        self._endpoints[_address(url)] = _Endpoint(handler, nursery, check)

    def unlisten(self, url: str) -> None:
        self._endpoints.pop(_address(url), None)

    def connector(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> MemoryConnector:
        return MemoryConnector(self, max_frame_size)

    def _find(self, url: str) -> _Endpoint | None:
        return self._endpoints.get(_address(url))


def _address(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path or '/'}"


@attrs.frozen
class MemoryConnector:
    """A `Connector` over a `MemoryNetwork`."""

    network: MemoryNetwork
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        if self.network.handshake_delay:
            await trio.sleep(self.network.handshake_delay)
        else:
            await trio.lowlevel.checkpoint()
        endpoint = self.network._find(url)
        if endpoint is None:
            raise ConnectError("connection failed: Connection refused")
        parts = urlsplit(url)
        if endpoint.check is not None:
            status = endpoint.check(parts.query)
            if status is not None:
                raise ConnectError.rejected(status)
        to_server, to_client = _Pipe(self.network.buffer), _Pipe(self.network.buffer)
        state = _CloseState()
        # A frame's size is checked against the limit of the end that receives it.
        client = _MemoryEnd(to_client, to_server, state)
        server = MemoryServerConnection(
            to_server,
            to_client,
            state,
            self.max_frame_size,
            path=parts.path or "/",
            query=parts.query,
        )
        endpoint.nursery.start_soon(endpoint.handler, server)
        try:
            yield client
        finally:
            await client.aclose()
