"""Transports: how frames move between a device actor and an agent server.

A `Transport` sends and receives whole frames and closes with a close frame. A `Connector`
opens one, as an async context manager that owns whatever background task the transport
needs (trio-websocket's reader), so the connection and everything it started live and die
inside the Session that opened it.

Two implementations: `WebSocketConnector` here (trio-websocket, for real agent servers) and
`MemoryNetwork` in `_memory` (in-memory, for tests on ``MockClock``: no sockets, exact
virtual time).
Errors are translated at this edge into `TransportClosed` and `ConnectFailed`, so nothing
above it knows trio-websocket's exception types, and nothing crosses a nursery as an
exception group.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Protocol, cast
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

from ._errors import GalaxyActorsError, InvalidServerURL
from ._stream import FrameSafeStream

__all__ = [
    "ConnectFailed",
    "Connector",
    "FrameSafeTransport",
    "Transport",
    "TransportClosed",
    "WebSocketConnector",
    "validate_server_url",
]

# Close codes of RFC 6455 that mean something to a session.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006  # never sent: what a peer sees when the socket dies without a close
CLOSE_MESSAGE_TOO_BIG = 1009
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024


class TransportClosed(GalaxyActorsError):
    """The connection is closed. ``code`` is the WebSocket close code when one is known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectFailed(GalaxyActorsError):
    """The connection could not be opened: refused, timed out, or the handshake rejected
    (``status_code`` then holds the HTTP status, e.g. 403 without a valid token)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class Transport(Protocol):
    """One connection, as a Session uses it. The contract every implementation keeps:

    - Exactly one task calls `receive` on a connection at any time: the Session's loop.
      Never two readers at once; frame order would then be left to the scheduler.
    - `send` may be called by another task while that one receives, and by several tasks at
      once: the transport serialises concurrent sends, so frames never interleave.
    - A `send` that raised `trio.Cancelled` may have sent part of its frame, which leaves
      the connection unusable, unless the transport is a `FrameSafeTransport`: then it sent
      nothing. A Session shields and bounds its sends over any other transport.
    - A closed or broken connection raises `TransportClosed` from `send` and `receive`,
      never the underlying library's exception.
    """

    async def send(self, frame: str) -> None:
        """Send one text frame. Raises `TransportClosed`. A cancellation point; it need not
        be a schedule point once the frame is out (the in-memory transport returns at once
        then: a Session receives next, and that is one)."""

    async def receive(self) -> str | bytes:
        """The next frame (bytes for a binary frame). Raises `TransportClosed`. Called by
        one task at a time."""

    async def aclose(self) -> None:
        """Close with a close frame and wait for the peer's. Callers bound it in time."""


class FrameSafeTransport(Transport, Protocol):
    """A `Transport` that can promise more of `send`, checked with ``getattr`` (a plain
    `Transport` need not have the method):

    ``frame_safe_sends(send_timeout)`` returns True if from now on a cancelled `send` has
    sent nothing, a started one is finished whatever happens to its caller, and a send
    that cannot progress for ``send_timeout`` seconds raises `TransportClosed`. A Session
    then sends with no cancel scope of its own; otherwise it shields and bounds each send.
    """

    def frame_safe_sends(self, send_timeout: float) -> bool: ...


class Connector(Protocol):
    def open(self, url: str) -> contextlib.AbstractAsyncContextManager[Transport]:
        """Open a connection to ``url``; it is closed when the block ends. Entering raises
        `ConnectFailed`; the block's own exceptions pass through unchanged."""


def validate_server_url(url: str) -> str:
    """Check that ``url`` is a WebSocket URL a connector can open; return it unchanged
    (query string included: real servers authenticate with ``?token=``)."""
    if not isinstance(url, str):
        raise InvalidServerURL(repr(url), "must be a string")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidServerURL(url, str(exc)) from None
    if parts.scheme not in ("ws", "wss"):
        raise InvalidServerURL(url, "scheme must be ws:// or wss://")
    if not parts.hostname:
        raise InvalidServerURL(url, "no host")
    if port == 0:
        raise InvalidServerURL(url, "port 0")
    return url


# --------------------------------------------------------------------------- WebSocket


@attrs.define(eq=False)
class WebSocketTransport:
    """A `Transport` over a trio-websocket connection (the client's; the simulated agent's
    server side reuses it).

    Every frame goes out through ``send_message``, which serialises sends under the
    connection's lock (its reader sends pongs and close frames through the same stream, so
    it must). Over a `FrameSafeStream` a cancelled ``send_message`` sent nothing: it is
    cancellable while it waits for that lock, when nothing is written, and the stream lets
    a cancellation in only before the first byte."""

    _ws: trio_websocket.WebSocketConnection
    # Set when the connection runs over a FrameSafeStream (plain ws://, opened by us).
    _safe_stream: FrameSafeStream | None = attrs.field(default=None, kw_only=True)

    def frame_safe_sends(self, send_timeout: float) -> bool:
        if self._safe_stream is None:
            return False
        self._safe_stream.send_timeout = send_timeout
        return True

    async def send(self, frame: str | bytes) -> None:
        try:
            await self._ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            stream = self._safe_stream
            if stream is not None and stream.stalled:
                raise TransportClosed(stream.stalled) from None
            raise _closed(exc) from None

    async def receive(self) -> str | bytes:
        try:
            message: str | bytes = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None
        return message

    async def aclose(self) -> None:
        await self._ws.aclose()


def _closed(exc: trio_websocket.ConnectionClosed) -> TransportClosed:
    reason = exc.reason
    code = getattr(reason, "code", None)
    text = getattr(reason, "reason", None)
    detail = f"code {code}" + (f": {text}" if text else "")
    return TransportClosed(f"connection closed ({detail})", code)


@attrs.frozen
class WebSocketConnector:
    """Opens trio-websocket connections.

    Arguments:
        connect_timeout: bound on TCP connect plus the opening handshake.
        close_timeout: bound on the closing handshake; the socket is closed after it
            whatever the peer does.
        max_frame_size: a larger inbound frame closes the connection (code 1009).
        message_queue_size: frames trio-websocket buffers before it stops reading.
    """

    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    message_queue_size: int = 8

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if port in (80, 443) else f"{host}:{port}"
        failure: ConnectFailed | None = None
        body_error: BaseException | None = None
        # We open and own the TCP stream: trio-websocket's aclose() skips closing the socket
        # when the peer closed first or refused the handshake, which leaks a descriptor per
        # failed connection (thousands in a reconnect storm).
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        safe: FrameSafeStream | None = None
        try:
            async with trio.open_nursery() as nursery:
                ws = None
                with trio.move_on_after(self.connect_timeout):
                    try:
                        if secure:
                            stream = await trio.open_ssl_over_tcp_stream(
                                host, port, https_compatible=True
                            )
                        else:
                            stream = await trio.open_tcp_stream(host, port)
                            safe = FrameSafeStream(stream)
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            # trio-websocket types its stream as a SocketStream, but uses
                            # only the Stream interface (and .socket, which it has).
                            cast(trio.SocketStream, safe or stream),
                            host_header,
                            resource,
                            message_queue_size=self.message_queue_size,
                            max_message_size=self.max_frame_size,
                        )
                    except (OSError, trio_websocket.HandshakeError) as exc:
                        failure = ConnectFailed(
                            _describe_connect_error(exc), getattr(exc, "status_code", None)
                        )
                if ws is None:
                    failure = failure or ConnectFailed(
                        f"no handshake within {self.connect_timeout:g} s"
                    )
                    nursery.cancel_scope.cancel()
                else:
                    try:
                        yield WebSocketTransport(ws, safe_stream=safe)
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        # Re-raised below, outside the nursery: the block's own exception
                        # comes out as itself, not wrapped in an ExceptionGroup.
                        body_error = exc
                    finally:
                        limit = self.close_timeout
                        if trio.current_effective_deadline() == -math.inf:
                            limit = min(limit, _SEND_CLOSE_ONLY)
                        await close_websocket(ws, limit)
                        nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:
            # A refused handshake is raised by trio-websocket's reader task, inside our
            # nursery, not by the connect call (see TRIO-NOTES, pitfall 1).
            rejected = group.exceptions[0]
            status = getattr(rejected, "status_code", None)
            failure = ConnectFailed(f"handshake rejected: HTTP {status}", status)
        except* (OSError, trio_websocket.HandshakeError) as group:
            failure = ConnectFailed(_describe_connect_error(group.exceptions[0]))
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        if body_error is not None:
            raise body_error
        if failure is not None:
            raise failure


# Leaving from a cancelled scope, trio-websocket's reader is being cancelled too and will not
# read the peer's close reply: bound the close by the time to send ours, not by the reply.
_SEND_CLOSE_ONLY = 0.1


async def close_websocket(
    ws: trio_websocket.WebSocketConnection, limit: float, code: int = CLOSE_NORMAL
) -> None:
    """Close ``ws`` with a close frame, waiting at most ``limit`` seconds for the peer's.

    aclose() waits for the peer's close frame with no timeout and sends nothing from an
    already-cancelled scope (TRIO-NOTES, pitfall 3): shielded, and bounded. Errors of a
    connection already gone are expected here and dropped."""
    with (
        trio.CancelScope(shield=True, deadline=trio.current_time() + limit),
        contextlib.suppress(
            trio_websocket.ConnectionClosed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
        ),
    ):
        await ws.aclose(code)


def _describe_connect_error(exc: BaseException) -> str:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"handshake rejected: HTTP {exc.status_code}"
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"handshake failed: {exc!r}"
