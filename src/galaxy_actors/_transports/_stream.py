"""The streams under a WebSocket connection that we own, and what they promise.

`OpeningWatch` (under every connection) sees what trio-websocket hides while it opens one.
`FrameSafeStream` (plain ``ws://``) makes the TCP stream safe to cancel mid-frame.

## FrameSafeStream

trio's `SocketStream.send_all` can be cancelled between two partial writes, which leaves
half a WebSocket frame on the wire and the connection useless for every later frame.
`FrameSafeStream.send_all` promises instead:

- a cancellation reaches it only before the first byte is written, so a cancelled send
  wrote nothing;
- once a byte is out, the rest is written shielded;
- a socket that stays unwritable for ``send_timeout`` seconds fails the send with
  `trio.BrokenResourceError` (the peer stopped reading), whether or not a byte was out.

It writes with trio's public socket API only (`trio.SocketStream.socket`, then
``await socket.send(data, flags)``): nothing here assumes that a socket is a C file
descriptor, which it is not on Windows.

Why the first ``send`` needs no shield: trio's socket ``send`` (``_nonblocking_helper`` in
trio/_socket.py, with ``_try_sync``; read in trio 0.35) checks for cancellation, then tries
the non-blocking send; if that returns, it ends with a cancel-shielded checkpoint and
returns the count; only if nothing could be written does it wait for the socket to become
writable, then tries again. It can be cancelled only at that first check and in that wait,
both before anything is written: a `trio.Cancelled` out of it means nothing was sent.
What is left after a partial write is written in a shielded scope
whose only way out, short of success or an error, is the stall deadline.

trio-websocket sends every frame (ours, its pongs and its close frames) through one
`send_all` at a time, under its own lock; a second concurrent `send_all` is a bug and
raises `trio.BusyResourceError`, as trio's own streams do.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from typing import NoReturn

import trio

# Without it a write to a peer that has gone raises SIGPIPE, which kills a host process that
# restored the default handler (Python ignores SIGPIPE, but embedding hosts may not). Linux
# has the flag; elsewhere the send is left as trio's own streams make it.
_SEND_FLAGS: int = getattr(socket, "MSG_NOSIGNAL", 0)


class FrameSafeStream(trio.abc.HalfCloseableStream):
    """Wraps a connected `trio.SocketStream`; every other operation is the wrapped one's."""

    __slots__ = ("_sending", "_socket", "_stream", "send_timeout", "stalled")

    def __init__(self, stream: trio.SocketStream, send_timeout: float = math.inf) -> None:
        self._stream = stream
        self._socket = stream.socket
        self._sending = False
        self.send_timeout = send_timeout
        # Why the last send failed when the socket stayed unwritable (None: it did not).
        self.stalled: str | None = None

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            with memoryview(data) as view:
                await self._send_all(view)
        finally:
            self._sending = False

    async def _send_all(self, view: memoryview) -> None:
        size = len(view)
        if not size:
            self._check_open()
            await trio.lowlevel.checkpoint()
            return
        limit = self.send_timeout
        # Unshielded: cancelled here, nothing was written (see the module's docstring).
        with trio.CancelScope(deadline=trio.current_time() + limit) as scope:
            sent = await self._send_some(view)
        if scope.cancelled_caught:
            self._stall(limit)
        if sent == size:
            return
        with trio.CancelScope(shield=True) as scope:
            while sent < size:
                # A stall is a time without progress, not a bound on the whole frame.
                scope.deadline = trio.current_time() + limit
                sent += await self._send_some(view[sent:])
        if scope.cancelled_caught:
            self._stall(limit)

    async def _send_some(self, view: memoryview) -> int:
        # Checked before every write: once the stream is closed, trio's socket raises a
        # plain OSError, which would read as a broken peer.
        self._check_open()
        try:
            return await self._socket.send(view, _SEND_FLAGS)
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket error: {exc}") from exc

    def _check_open(self) -> None:
        if self._socket.fileno() == -1:
            raise trio.ClosedResourceError("the connection's socket was closed")
        if self._socket.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")

    def _stall(self, limit: float) -> NoReturn:
        self.stalled = f"send stalled for {limit:g} s"
        raise trio.BrokenResourceError(self.stalled)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


class OpeningWatch(trio.abc.Stream):
    """Wraps the stream a WebSocket client connection runs over, to see how its opening
    handshake ends.

    trio-websocket reads the server's answer in its reader task: when the peer closes the
    connection before the HTTP 101 (or TLS breaks, e.g. a server that wants a client
    certificate refuses ours after a TLS 1.3 handshake), the reader ends quietly and the
    connect waits for its timeout. Here every read while ``opening`` is checked:
    an end of stream or a broken stream is recorded in ``ended`` / ``error`` and reported at
    once through ``on_failure``, which fails the attempt. The first line of the answer is
    kept so the report can name the HTTP status the peer answered with, if any.

    ``received`` counts every byte read, for `close_origin`'s use.
    """

    __slots__ = ("_head", "_on_failure", "_stream", "ended", "error", "opening", "received")

    def __init__(self, stream: trio.abc.Stream, on_failure: Callable[[], None]) -> None:
        self._stream = stream
        self._on_failure = on_failure
        self._head = b""
        # Until the caller clears it: the opening handshake is in progress.
        self.opening = True
        self.ended = False
        self.error: trio.BrokenResourceError | None = None
        self.received = 0

    @property
    def status_line(self) -> str:
        """The first line the peer answered with so far ("" if none yet)."""
        line, _, _ = self._head.partition(b"\r\n")
        return line.decode("latin-1", "replace")

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if self.opening:
                self.error = exc
                self._fail()
            raise
        self.received += len(data)
        if self.opening:
            if not data:
                self.ended = True
                self._fail()
            elif len(self._head) < _HEAD_LIMIT:
                self._head += bytes(data[: _HEAD_LIMIT - len(self._head)])
        return data

    def _fail(self) -> None:
        self.opening = False
        self._on_failure()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


# Enough for an HTTP status line; the rest of the answer is trio-websocket's business.
_HEAD_LIMIT = 256

__all__ = ["FrameSafeStream", "OpeningWatch"]
