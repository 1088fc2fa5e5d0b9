"""Sending a text frame on a trio-websocket connection with no scheduling point before
the write.

Why: `WebSocketConnection.send_message` takes the connection's send lock with
``async with``, and acquiring even a free Trio lock is a checkpoint, so the sending task
yields to the scheduler before a byte is written. In a device's round trip that yield is
on the critical path: the caller that just received a TASK_END sends its next TASK, and
whatever else is runnable at that moment runs first (the Session loop, given the
connection back by `Session.drive`; other devices' tasks). Measured here: the time from a
TASK_END arriving to the next TASK leaving fell from about 175 to 145 µs, and the median
round trip from 1.12 to 1.04 times a bare trio-websocket client's
(docs/performance.md).

Over our `FrameSafeStream` (plain ws://) the write is a cancellation point of its own
(before the first byte; shielded after it), which is all a Session needs of a send: it
receives next, and that is the schedule point. When the lock is free, `DirectSender`
takes it without waiting, encodes the frame and writes at once; when it is held
(trio-websocket's reader is answering a ping, or another send waits for room in the
socket) it does nothing, and the caller sends through ``send_message`` as usual.

This reads private attributes of trio-websocket's connection (``_stream``,
``_stream_lock``, ``_wsproto``, ``_close_reason``) and, on a broken socket, calls its
``_abort_web_socket``, exactly as ``send_message`` does. `direct_sender` checks that they
exist (trio-websocket 0.11 and 0.12 have them); if not, it returns None and every send
takes the public path: slower, otherwise the same. tests/test_direct.py asserts that the
installed trio-websocket takes the direct path, so an upgrade that loses it is noticed.
"""

from __future__ import annotations

import attrs
import trio
import trio_websocket
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from ._stream import FrameSafeStream

__all__ = ["DirectSender", "direct_sender"]

_OPEN = ConnectionState.OPEN


@attrs.define(eq=False)
class DirectSender:
    """Writes text frames of one connection straight to its `FrameSafeStream`."""

    _ws: trio_websocket.WebSocketConnection
    _stream: FrameSafeStream

    async def send(self, frame: str) -> bool:
        """Send ``frame`` and return True; or return False at once, having sent nothing
        and without a checkpoint, when the send must take the public path (the lock is
        held, or the connection is closing: ``send_message`` then raises as it should).

        A cancellation point, before the write; a schedule point only if the frame had to
        wait for room in the socket (`FrameSafeStream.send_all_eagerly`): the Session,
        which sends through here, receives next, and that is one.

        Raises `trio_websocket.ConnectionClosed` if the socket is broken, as
        ``send_message`` does; `trio.Cancelled` only before any of the frame left."""
        ws = self._ws
        if ws._close_reason is not None or ws._wsproto.state is not _OPEN:
            return False
        lock = ws._stream_lock
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            return False
        try:
            data = ws._wsproto.send(TextMessage(data=frame))
            try:
                await self._stream.send_all_eagerly(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await ws._abort_web_socket()
                assert ws._close_reason is not None
                raise trio_websocket.ConnectionClosed(ws._close_reason) from None
        finally:
            lock.release()
        return True


def direct_sender(ws: object, stream: FrameSafeStream | None) -> DirectSender | None:
    """A `DirectSender` for ``ws`` if it runs over ``stream`` and has the attributes the
    direct path needs; None otherwise (a TLS stream, another trio-websocket)."""
    if stream is None or not isinstance(ws, trio_websocket.WebSocketConnection):
        return None
    lock = getattr(ws, "_stream_lock", None)
    own_stream: object = getattr(ws, "_stream", None)
    if (
        own_stream is stream
        and isinstance(lock, trio.Lock | trio.StrictFIFOLock)
        and isinstance(getattr(ws, "_wsproto", None), WSConnection)
        and hasattr(ws, "_close_reason")
        and callable(getattr(ws, "_abort_web_socket", None))
    ):
        return DirectSender(ws, stream)
    return None
