"""A WebSocket client with no task of its own: the one reader of the connection (the
Session's loop) reads the stream inside `DirectTransport.receive` and feeds wsproto.

Theory of operation. trio-websocket reads every connection in a background task, which
puts each message in a channel for ``get_message``: over it a frame travels reader task →
Session loop → waiting caller, one scheduler pass more than a bare client's reader → caller
(docs/performance.md, "Dispatch"). Here the Session's loop *is* the reader: ``receive``
reads the stream, gives the bytes to wsproto's `WSConnection` (its public API only) and
returns the next whole message. What trio-websocket's reader did on the side is done
inside ``receive`` too: a ping is answered with a pong, the peer's close frame with ours.

Rules of this file:
- One task receives (the `Transport` contract); any number may send. Every write, ours and
  the replies ``receive`` owes the peer, goes out under one lock, so frames never
  interleave. A reply that could not be written yet (its writer was cancelled first) stays
  queued in front of the next write.
- A cancelled ``receive`` loses nothing: every message wsproto decoded is queued here before
  anything else can be cancelled, and a read that was cancelled read nothing.
- A message over ``max_message_size`` is refused as it arrives (we close with 1009), so a
  hostile peer cannot make us buffer without bound; nor can the handshake's answer (h11's
  own bound) or its refusal's body (never read).
- Every ending is reported as `TransportClosed`, in the words trio-websocket's client uses
  (`_websocket.closed_error`), after the messages that arrived before it.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Final

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from .._sansio._errors import ConnectError, TransportClosed
from .._sansio._policy import FailureReason
from ._stream import FrameSafeStream
from ._websocket import (
    CLOSE_ABNORMAL,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    closed_error,
    opening_failure,
    oversize_text,
    start_tls,
    tls_failure,
)

__all__ = ["DirectTransport", "open_direct"]

# What one read asks for: a burst of frames (400 task ends in flight) is decoded in one
# pass; trio allocates only what arrived.
RECEIVE_BYTES: Final = 65536
# Enough of the handshake's answer to name the HTTP status if the peer hangs up mid-answer.
_HEAD_LIMIT: Final = 256
# Leaving from a cancelled scope: bound the close by the time to send ours, not the reply.
_SEND_CLOSE_ONLY: Final = 0.1
_OPEN: Final = ConnectionState.OPEN
_LOCAL_CLOSING: Final = ConnectionState.LOCAL_CLOSING


class DirectTransport:
    """A `Transport` over a `WSConnection` and a trio stream we own (a `FrameSafeStream`
    for ``ws://``, an `trio.SSLStream` for ``wss://``). Made by `open_direct`."""

    __slots__ = (
        "_closed",
        "_closing",
        "_lock",
        "_max_size",
        "_messages",
        "_out",
        "_parts",
        "_reader",
        "_receiving",
        "_reply_timeout",
        "_safe_stream",
        "_size",
        "_stream",
        "_ws",
    )

    def __init__(
        self,
        ws: WSConnection,
        stream: trio.abc.Stream,
        *,
        reader: trio.abc.ReceiveStream,
        safe: FrameSafeStream | None,
        max_message_size: int,
        reply_timeout: float,
    ) -> None:
        self._ws = ws
        self._stream = stream
        # What receive reads: the TCP stream under a FrameSafeStream (which only changes
        # how a send is written), so a read goes through no wrapper.
        self._reader = reader
        self._safe_stream = safe
        self._max_size = max_message_size
        # Bounds a shielded reply (pong, close) over a stream that is not frame-safe.
        self._reply_timeout = reply_timeout
        self._lock = trio.StrictFIFOLock()
        self._messages: deque[str | bytes] = deque()
        # The message being assembled from fragments, and its size so far.
        self._parts: list[str | bytes] = []
        self._size = 0
        # Replies owed to the peer (pongs, our close frame), written before the next frame.
        self._out = b""
        # How the connection ended; raised once the messages before it are delivered.
        self._closed: TransportClosed | None = None
        self._closing = False
        self._receiving = False

    def frame_safe_sends(self, send_timeout: float) -> bool:
        if self._safe_stream is None:
            return False
        self._safe_stream.send_timeout = send_timeout
        return True

    # ------------------------------------------------------------------------ receiving

    async def receive(self) -> str | bytes:
        messages = self._messages
        if messages and not self._out:
            return messages.popleft()
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving")
        self._receiving = True
        try:
            while True:
                if self._out:
                    # A failure is recorded in _closed, raised after the queued messages.
                    with contextlib.suppress(TransportClosed):
                        await self._write_replies()
                if messages:
                    return messages.popleft()
                if self._closed is not None:
                    raise self._closed
                try:
                    data = await self._reader.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if data:
                    self._ws.receive_data(_as_bytes(data))
                    self.feed(self._ws.events())
                else:
                    self._lost()
        finally:
            self._receiving = False

    def feed(self, events: Iterator[Event]) -> None:
        """Take wsproto's ``events``: queue the messages, owe the replies. Called by
        `open_direct` too, with what arrived right behind the handshake's answer."""
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                assert isinstance(event, Message)
                self._message(event)
            elif kind is Ping:
                assert isinstance(event, Ping)
                if self._ws.state is _OPEN:
                    self._out += self._ws.send(event.response())
            elif kind is CloseConnection:
                assert isinstance(event, CloseConnection)
                self._close_received(event)

    def _message(self, event: Message[str] | Message[bytes | bytearray]) -> None:
        if self._closed is not None:
            return  # after our close: nothing more is delivered
        data = event.data if isinstance(event.data, str) else _as_bytes(event.data)
        size = self._size + len(data)
        if size > self._max_size:
            self._parts, self._size = [], 0
            self._close(CLOSE_MESSAGE_TOO_BIG, oversize_text(self._max_size))
            return
        if not event.message_finished:
            self._parts.append(data)
            self._size = size
            return
        if self._parts:
            self._parts.append(data)
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(data, str):
                self._messages.append("".join(p for p in parts if isinstance(p, str)))
            else:
                self._messages.append(b"".join(p for p in parts if isinstance(p, bytes)))
        else:
            self._messages.append(data)

    def _close_received(self, event: CloseConnection) -> None:
        state = self._ws.state
        if state is _OPEN:
            # Still open: wsproto found a frame that breaks the protocol (1002) or text
            # that is not UTF-8 (1007), and tells us to close with that code.
            self._close(event.code, event.reason)
            return
        if state is ConnectionState.REMOTE_CLOSING:
            self._out += self._ws.send(event.response())
        if self._closed is None:
            by_peer = not self._closing
            self._closed = closed_error(event.code, event.reason or None, by_peer)

    def _close(self, code: int, reason: str | None) -> None:
        """Our close frame, owed to the peer; the connection is over for its users."""
        if self._ws.state is _OPEN:
            self._out += self._ws.send(CloseConnection(code, reason or ""))
        if self._closed is None:
            self._closed = closed_error(code, reason, by_peer=False)

    def _lost(self) -> None:
        """The stream ended or broke without a close handshake."""
        if self._closed is None:
            self._closed = closed_error(CLOSE_ABNORMAL, None, by_peer=None)
        self._out = b""

    # -------------------------------------------------------------------------- sending

    async def send(self, frame: str | bytes) -> None:
        closed = self._closed
        if closed is None:
            try:
                data = self._ws.send(
                    TextMessage(frame) if isinstance(frame, str) else BytesMessage(frame)
                )
            except LocalProtocolError:
                closed = self._closed or closed_error(CLOSE_NORMAL, None, by_peer=False)
        if closed is not None:
            await trio.lowlevel.checkpoint()
            raise closed
        await self._write(data)

    async def _write_replies(self) -> None:
        if self._safe_stream is not None:
            await self._write(b"")
            return
        # A cancelled write over TLS may have sent part of a record: shielded, bounded.
        limit = self._reply_timeout
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit) as scope:
            await self._write(b"")
        if scope.cancelled_caught and self._closed is None:
            self._closed = TransportClosed(f"send stalled for {limit:g} s")

    async def _write(self, data: bytes) -> None:
        """Write the replies owed, then ``data``, under the send lock. Raises
        `TransportClosed`; a cancellation before the first byte leaves the replies owed."""
        lock = self._lock
        try:
            lock.acquire_nowait()  # free: no schedule point, the write is one
        except trio.WouldBlock:
            await lock.acquire()
        try:
            owed, self._out = self._out, b""
            if owed:
                data = owed + data
            if not data:
                return
            try:
                await self._stream.send_all(data)
            except trio.Cancelled:
                if self._safe_stream is None:
                    # Perhaps half a frame out: nothing after it can be read.
                    self._lost()
                else:
                    self._out = owed + self._out
                raise
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                stalled = self._safe_stream.stalled if self._safe_stream is not None else None
                self._lost()
                if stalled:
                    raise TransportClosed(stalled) from None
                assert self._closed is not None
                raise self._closed from None
        finally:
            lock.release()

    # -------------------------------------------------------------------------- closing

    async def aclose(self) -> None:
        """Send our close frame (1000) unless one went already, and read until the
        peer's, the end of the stream, or the caller's deadline; then close the stream."""
        self._closing = True
        try:
            self._close(CLOSE_NORMAL, None)
            await self._write(b"")
            # A task still parked in receive will see the reply; a second reader may not.
            while self._ws.state is _LOCAL_CLOSING and not self._receiving:
                data = await self._reader.receive_some(RECEIVE_BYTES)
                if not data:
                    break
                self._ws.receive_data(_as_bytes(data))
                for _ in self._ws.events():
                    pass  # after our close, messages are dropped; its reply ends the loop
        except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self._stream)


# --------------------------------------------------------------------------- opening


@contextlib.asynccontextmanager
async def open_direct(
    host: str,
    port: int,
    resource: str,
    *,
    host_header: str,
    ssl_context: ssl.SSLContext | None,
    connect_timeout: float,
    close_timeout: float,
    max_message_size: int,
) -> AsyncIterator[DirectTransport]:
    """Open a client connection: TCP, TLS with ``ssl_context`` when one is given, the
    opening handshake; close it when the block ends (our close frame,
    the peer's awaited for at most ``close_timeout``). Entering raises `ConnectError` with
    the words `WebSocketConnector` uses; the block's own exceptions pass through as
    themselves (no nursery, so no exception group)."""
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
    transport: DirectTransport | None = None
    try:
        with trio.move_on_after(connect_timeout):
            try:
                tcp = stream = await trio.open_tcp_stream(host, port)
                io: trio.abc.Stream
                safe = None
                if ssl_context is not None:
                    stream = io = await start_tls(tcp, ssl_context, host)
                else:
                    io = safe = FrameSafeStream(tcp)
                transport = await _handshake(
                    io,
                    stream,
                    safe,
                    host_header,
                    resource,
                    secure=ssl_context is not None,
                    max_message_size=max_message_size,
                    reply_timeout=close_timeout,
                )
            except OSError as exc:
                raise ConnectError(f"connection failed: {exc.strerror or exc}") from None
        if transport is None:
            raise ConnectError(f"no handshake within {connect_timeout:g} s")
        try:
            yield transport
        finally:
            limit = close_timeout
            if trio.current_effective_deadline() == -math.inf:
                limit = min(limit, _SEND_CLOSE_ONLY)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
                await transport.aclose()
    finally:
        if stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)


async def _handshake(
    stream: trio.abc.Stream,
    reader: trio.abc.ReceiveStream,
    safe: FrameSafeStream | None,
    host_header: str,
    resource: str,
    *,
    secure: bool,
    max_message_size: int,
    reply_timeout: float,
) -> DirectTransport:
    """Send the opening request and read the answer. The answer's head is bounded by h11
    (a larger one is a protocol error); a refusal's body is never read."""
    ws = WSConnection(ConnectionType.CLIENT)
    head = b""
    try:
        await stream.send_all(ws.send(Request(host=host_header, target=resource)))
        while True:
            data = await reader.receive_some(RECEIVE_BYTES)
            if not data:
                raise opening_failure(_first_line(head), secure)
            if len(head) < _HEAD_LIMIT:
                head += data[: _HEAD_LIMIT - len(head)]
            try:
                ws.receive_data(_as_bytes(data))
            except RemoteProtocolError as exc:
                raise ConnectError(
                    f"handshake failed: the peer's answer is not a WebSocket upgrade ({exc})",
                    reason=FailureReason.HANDSHAKE_FAILED,
                ) from None
            events = ws.events()
            for event in events:
                if isinstance(event, AcceptConnection):
                    transport = DirectTransport(
                        ws,
                        stream,
                        reader=reader,
                        safe=safe,
                        max_message_size=max_message_size,
                        reply_timeout=reply_timeout,
                    )
                    transport.feed(events)  # frames that came with the answer
                    return transport
                if isinstance(event, RejectConnection):
                    raise ConnectError.rejected(event.status_code)
    except trio.BrokenResourceError as exc:
        raise tls_failure(exc, "during the opening handshake") from None


def _first_line(head: bytes) -> str:
    line, _, _ = head.partition(b"\r\n")
    return line.decode("latin-1", "replace")


def _as_bytes(data: bytes | bytearray) -> bytes:
    # A socket's read is bytes already; a TLS stream's may be a bytearray.
    return data if isinstance(data, bytes) else bytes(data)
