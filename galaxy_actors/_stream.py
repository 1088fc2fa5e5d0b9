"""The TCP stream under a plain ``ws://`` connection, made safe to cancel mid-frame.

trio's `SocketStream.send_all` can be cancelled between two partial writes, which leaves
half a WebSocket frame on the wire and the connection useless for every later frame. The
usual guard is a shielded cancel scope with a deadline around each send, and on the dispatch
path that scope (with the deadline it registers) was the largest single cost we added to a
task's round trip (docs/performance.md).

`FrameSafeStream.send_all` gives the guarantee without it:

- a cancellation reaches it only before the first byte is written, so a cancelled send
  wrote nothing;
- once a byte is out, the rest is written shielded;
- a socket that stays unwritable for ``send_timeout`` seconds fails the send with
  `trio.BrokenResourceError` (the peer stopped reading).

The common case, a frame that fits in the socket's send buffer, is one ``write`` between the
two checkpoints trio's own socket calls make, with no cancel scope at all.

trio-websocket sends every frame (ours, its pongs and its close frames) through one
`send_all` at a time, under its own lock.
"""

from __future__ import annotations

import math
import os

import trio


class FrameSafeStream(trio.abc.HalfCloseableStream):
    """Wraps a connected `trio.SocketStream`; every other operation is the wrapped one's."""

    __slots__ = ("_socket", "_stream", "send_timeout", "stalled")

    def __init__(self, stream: trio.SocketStream, send_timeout: float = math.inf) -> None:
        self._stream = stream
        self._socket = stream.socket
        self.send_timeout = send_timeout
        # Why the last send failed when the socket stayed unwritable (None: it did not).
        self.stalled: str | None = None

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._socket

    def _write(self, data: memoryview) -> int:
        # The descriptor is checked at every write: once the stream is closed its number
        # may already belong to another connection.
        fd = self._socket.fileno()
        if fd == -1:
            raise trio.ClosedResourceError("the connection's socket was closed")
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"socket error: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if await self._send(data):
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def send_all_eagerly(self, data: bytes | bytearray | memoryview) -> None:
        """`send_all` without the schedule point after a frame written at once: then only a
        cancellation point (before the write). For a caller whose next step is a schedule
        point anyway (a Session sends, then receives), that yield would cost a scheduler
        pass per frame and let other tasks run before its own next step, for nothing."""
        await self._send(data)

    async def _send(self, data: bytes | bytearray | memoryview) -> bool:
        """Write ``data`` whole. True if it went out at once, with no schedule point yet;
        False if it had to wait for room in the socket (it yielded then)."""
        view = memoryview(data)
        size = len(view)
        await trio.lowlevel.checkpoint_if_cancelled()
        sent = self._write(view) if size else 0
        if sent == size:
            return True
        limit = self.send_timeout
        with trio.CancelScope(shield=sent > 0, deadline=trio.current_time() + limit) as scope:
            while sent < size:
                await trio.lowlevel.wait_writable(self._socket)
                sent += self._write(view[sent:])
                if sent:
                    scope.shield = True
        if scope.cancelled_caught:
            self.stalled = f"send stalled for {limit:g} s"
            raise trio.BrokenResourceError(self.stalled)
        return False

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()


__all__ = ["FrameSafeStream"]
