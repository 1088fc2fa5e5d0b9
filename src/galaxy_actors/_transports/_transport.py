"""Transports: how frames move between a device actor and an agent server.

A `Transport` sends and receives whole frames and closes with a close frame. A `Connector`
opens one, as an async context manager that owns whatever background task the transport
needs (trio-websocket's reader, if that client is chosen), so the connection and everything
it started live and die inside the Session that opened it.

`WebSocketConnector` here opens real ``ws://`` and ``wss://`` connections with one of two
clients: the direct one (`_wsdirect`, the default: wsproto driven by the Session's own
receive, no task per connection) or trio-websocket's (`WebSocketTransport` below).
`MemoryNetwork` in `_memory` is in-memory, for tests on ``MockClock`` (no sockets, exact
virtual time).
Errors are translated at this edge into `TransportClosed` and `ConnectError`, so nothing
above it knows a WebSocket library's exception types, and nothing crosses a nursery as an
exception group.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
from collections.abc import AsyncIterator
from typing import Literal, Protocol, cast
from urllib.parse import urlsplit

import attrs
import trio
import trio_websocket

from .._sansio._errors import ConfigurationError, ConnectError, InvalidServerURL, TransportClosed
from ._stream import FrameSafeStream, OpeningWatch
from ._tls import client_context
from ._websocket import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    DEFAULT_MAX_FRAME_SIZE,
    closed_error,
    opening_failure,
    oversize_text,
    start_tls,
    tls_failure,
)
from ._wsdirect import open_direct

# ConnectError and TransportClosed live in _errors; they stay listed here while _session.py
# still imports them from this module.
__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "DEFAULT_MAX_FRAME_SIZE",
    "WEBSOCKET_CLIENTS",
    "ConnectError",
    "Connector",
    "FrameSafeTransport",
    "Transport",
    "TransportClosed",
    "WebSocketClient",
    "WebSocketConnector",
    "validate_server_url",
]

logger = logging.getLogger("galaxy_actors.transport")

WebSocketClient = Literal["direct", "trio-websocket"]
WEBSOCKET_CLIENTS: tuple[WebSocketClient, ...] = ("direct", "trio-websocket")
DEFAULT_WEBSOCKET: WebSocketClient = "direct"


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
        `ConnectError`; the block's own exceptions pass through unchanged."""


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
    # Set by the connector: what tells our own 1009 from a peer's (`_close_origin`).
    _watch: OpeningWatch | None = attrs.field(default=None, kw_only=True)
    _max_frame_size: int | None = attrs.field(default=None, kw_only=True)
    _closing: bool = attrs.field(default=False, init=False)

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
            raise self._closed(exc) from None

    async def receive(self) -> str | bytes:
        try:
            message: str | bytes = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise self._closed(exc) from None
        return message

    async def aclose(self) -> None:
        self._closing = True
        await self._ws.aclose()

    def _closed(self, exc: trio_websocket.ConnectionClosed) -> TransportClosed:
        reason = exc.reason
        if reason is None:
            return TransportClosed(
                "connection closed", None, by_peer=False if self._closing else None
            )
        code, text = int(reason.code), reason.reason
        return closed_error(code, text, self._close_origin(code, text))

    def _close_origin(self, code: int, text: str | None) -> bool | None:
        """Who closed with ``code``, from trio-websocket's public `CloseReason` alone.

        trio-websocket reports a peer's close frame and its own closes alike; what sets its
        own 1009 apart is its fixed reason text naming our limit, and that it can only
        happen once more than that limit was read. Both are checked: a trio-websocket peer
        with our limit sends the same text when *our* frame was too big for it. (A frame
        wsproto cannot parse, 1002 or 1007, is reported as if the peer had closed: those
        codes are protocol errors whoever sent them, so that does not matter.)"""
        if code == CLOSE_ABNORMAL:
            return None
        if self._closing:
            return False
        limit, watch = self._max_frame_size, self._watch
        return not (
            code == CLOSE_MESSAGE_TOO_BIG
            and limit is not None
            and watch is not None
            and watch.received > limit
            and text == oversize_text(limit)
        )


@attrs.frozen
class WebSocketConnector:
    """Opens WebSocket client connections.

    Arguments:
        connect_timeout: bound on TCP connect plus the opening handshake (TLS included).
        close_timeout: bound on the closing handshake; the socket is closed after it
            whatever the peer does.
        max_frame_size: a larger inbound message closes the connection (code 1009).
        message_queue_size: frames trio-websocket buffers before it stops reading (its
            client only).
        websocket: which client speaks WebSocket. ``"direct"``: wsproto driven by the
            Session's own receive, no task per connection (`_wsdirect`); one scheduler
            pass less per frame received. ``"trio-websocket"``: trio-websocket's client,
            with its reader task. Both keep the same promises and report failures in the
            same words.

    TLS, for ``wss://`` URLs (a ``ws://`` URL ignores them); the server's certificate is
    always verified unless ``insecure_skip_verify`` says otherwise:
        ssl_context: a ready `ssl.SSLContext`, used as is (no other TLS option with it).
        ca_file: a PEM file of the CAs to trust instead of the system's.
        client_cert: a PEM certificate to present (mutual TLS), its key inside or in
            ``client_key``.
        insecure_skip_verify: trust any certificate, for test rigs only: logged at
            WARNING on every connect.

    A file that cannot be loaded, or options that contradict each other, raise
    `ConfigurationError` here, not at the first connect.

    >>> connector = WebSocketConnector(ca_file="rig-ca.pem")  # doctest: +SKIP
    """

    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    message_queue_size: int = 8
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, kw_only=True)
    ca_file: str | os.PathLike[str] | None = attrs.field(default=None, kw_only=True)
    client_cert: str | os.PathLike[str] | None = attrs.field(default=None, kw_only=True)
    client_key: str | os.PathLike[str] | None = attrs.field(default=None, kw_only=True)
    insecure_skip_verify: bool = attrs.field(default=False, kw_only=True)
    websocket: WebSocketClient = attrs.field(default=DEFAULT_WEBSOCKET, kw_only=True)
    # The context every wss:// connection shares, built once (`_tls`); empty until needed
    # when no option asks for one, so a ws:// fleet never loads the system's CA store.
    _contexts: dict[str, ssl.SSLContext] = attrs.field(
        init=False, factory=dict, eq=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        if self.websocket not in WEBSOCKET_CLIENTS:
            choices = " or ".join(repr(c) for c in WEBSOCKET_CLIENTS)
            raise ConfigurationError(f"websocket must be {choices}, got {self.websocket!r}")
        if not isinstance(self.insecure_skip_verify, bool):
            raise ConfigurationError(
                f"insecure_skip_verify must be True or False, got {self.insecure_skip_verify!r}"
            )
        files = {"ca_file": self.ca_file, "client_cert": self.client_cert}
        files["client_key"] = self.client_key
        named = [name for name, value in files.items() if value is not None]
        if self.insecure_skip_verify:
            named.append("insecure_skip_verify")
        if self.ssl_context is not None:
            if not isinstance(self.ssl_context, ssl.SSLContext):
                raise ConfigurationError(
                    f"ssl_context must be an ssl.SSLContext, got {type(self.ssl_context).__name__}"
                )
            if named:
                raise ConfigurationError(
                    f"ssl_context is used as is: configure {', '.join(named)} on it instead"
                )
            self._contexts["wss"] = self.ssl_context
        elif named:
            self._contexts["wss"] = client_context(
                ca_file=self.ca_file,
                client_cert=self.client_cert,
                client_key=self.client_key,
                insecure_skip_verify=self.insecure_skip_verify,
            )

    def _tls_context(self) -> ssl.SSLContext:
        context = self._contexts.get("wss")
        if context is None:
            context = self._contexts["wss"] = client_context()
        return context

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        parts = urlsplit(url)
        host = parts.hostname or ""
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if port in (80, 443) else f"{host}:{port}"
        if secure and self.insecure_skip_verify:
            # Host and port only: the URL may carry a token.
            logger.warning(
                "TLS certificate verification is off (insecure_skip_verify) for %s:%d",
                host,
                port,
            )
        if self.websocket == "direct":
            async with open_direct(
                host,
                port,
                resource,
                host_header=host_header,
                ssl_context=self._tls_context() if secure else None,
                connect_timeout=self.connect_timeout,
                close_timeout=self.close_timeout,
                max_message_size=self.max_frame_size,
            ) as transport:
                yield transport
            return
        failure: ConnectError | None = None
        body_error: BaseException | None = None
        # We open and own the TCP (and TLS) stream: trio-websocket's aclose() skips closing
        # the socket when the peer closed first or refused the handshake, which leaks a
        # descriptor per failed connection (thousands in a reconnect storm).
        stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
        safe: FrameSafeStream | None = None
        watch: OpeningWatch | None = None
        try:
            async with trio.open_nursery() as nursery:
                ws = None
                with trio.move_on_after(self.connect_timeout) as attempt:
                    try:
                        stream = await trio.open_tcp_stream(host, port)
                        inner: trio.abc.Stream
                        if secure:
                            context = self._tls_context()
                            stream = inner = await start_tls(stream, context, host)
                        else:
                            inner = safe = FrameSafeStream(stream)
                        # A failure it sees ends the attempt at once, not at the timeout.
                        watch = OpeningWatch(inner, attempt.cancel)
                        ws = await trio_websocket.wrap_client_stream(
                            nursery,
                            # trio-websocket types its stream as a SocketStream, but uses
                            # only the Stream interface.
                            cast(trio.SocketStream, watch),
                            host_header,
                            resource,
                            message_queue_size=self.message_queue_size,
                            max_message_size=self.max_frame_size,
                        )
                    except ConnectError as exc:
                        failure = exc
                    except (OSError, trio_websocket.HandshakeError) as exc:
                        failure = ConnectError(
                            _describe_connect_error(exc), getattr(exc, "status_code", None)
                        )
                    finally:
                        if watch is not None:
                            watch.opening = False
                if ws is None:
                    failure = failure or _opening_failure(watch, secure, self.connect_timeout)
                    nursery.cancel_scope.cancel()
                else:
                    try:
                        yield WebSocketTransport(
                            ws, safe_stream=safe, watch=watch, max_frame_size=self.max_frame_size
                        )
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
            # nursery, not by the connect call.
            rejected = group.exceptions[0]
            while isinstance(rejected, BaseExceptionGroup):  # except* keeps any nesting
                rejected = rejected.exceptions[0]
            failure = ConnectError.rejected(rejected.status_code)
        except* (OSError, trio_websocket.HandshakeError) as group:
            failure = ConnectError(_describe_connect_error(group.exceptions[0]))
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)
        if body_error is not None:
            raise body_error
        if failure is not None:
            raise failure


def _opening_failure(watch: OpeningWatch | None, secure: bool, timeout: float) -> ConnectError:
    """Why an attempt ended with no connection and no exception: what the watch saw, or the
    timeout."""
    if watch is None or not (watch.ended or watch.error):
        return ConnectError(f"no handshake within {timeout:g} s")
    if watch.error is not None:
        return tls_failure(watch.error, "during the opening handshake")
    return opening_failure(watch.status_line, secure)


# Leaving from a cancelled scope, trio-websocket's reader is being cancelled too and will not
# read the peer's close reply: bound the close by the time to send ours, not by the reply.
_SEND_CLOSE_ONLY = 0.1


async def close_websocket(
    ws: trio_websocket.WebSocketConnection, limit: float, code: int = CLOSE_NORMAL
) -> None:
    """Close ``ws`` with a close frame, waiting at most ``limit`` seconds for the peer's.

    aclose() waits for the peer's close frame with no timeout and sends nothing from an
    already-cancelled scope (whose awaits would all be cancelled at once): shielded, and
    bounded. Errors of a connection already gone are expected here and dropped."""
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
        return str(ConnectError.rejected(exc.status_code))
    if isinstance(exc, OSError):
        return f"connection failed: {exc.strerror or exc}"
    return f"handshake failed: {exc!r}"
