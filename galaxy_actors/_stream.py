"""The TCP stream under a plain ``ws://`` connection, made safe to cancel mid-frame.

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


__all__ = ["FrameSafeStream"]
