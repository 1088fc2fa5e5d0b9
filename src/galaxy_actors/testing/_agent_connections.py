"""The simulated agent's connections: what it keeps per connection, and the transports under it.

`_Connection` is one client connection and what it registered; `_WebSocketGroup` holds the
connections of one `SimulatedAgent.serve_websocket` call, for its shutdown; a `_Link` is what
the agent needs of a connection (send, receive, close with a code, abort without a close
frame), implemented over `MemoryNetwork` by `_MemoryLink` and over trio-websocket by
`_WebSocketLink`. The agent's protocol logic is in ``_agent.py``.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio

from .._sansio._aip import ClientType
from .._transports._memory import MemoryServerConnection
from .._transports._transport import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    WebSocketTransport,
    close_websocket,
)


@attrs.define(eq=False)
class _Connection:
    """One client connection, and what it registered."""

    id: int
    link: _Link
    nursery: trio.Nursery
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    client_type: ClientType | None = None
    client_id: str | None = None
    target_id: str | None = None
    sessions: set[str] = attrs.Factory(set)
    frames: int = 0
    # The code the agent closes with when it ends the conversation (shutdown, by default).
    close_code: int = CLOSE_GOING_AWAY


@attrs.define(eq=False)
class _WebSocketGroup:
    """The connections of one `SimulatedAgent.serve_websocket` call, for its shutdown."""

    closing: bool = False
    shields: set[trio.CancelScope] = attrs.Factory(set)
    connections: set[_Connection] = attrs.Factory(set)

    def shut_down(self, deadline: float) -> None:
        self.closing = True
        for connection in self.connections:
            connection.scope.cancel()
        for shield in self.shields:
            shield.deadline = min(shield.deadline, deadline)


# --------------------------------------------------------------------------- links


class _Link(Protocol):
    """What the agent needs of a connection; errors are `TransportClosed`."""

    async def send(self, frame: str | bytes) -> None: ...

    async def receive(self) -> str | bytes: ...

    async def close(self, code: int) -> None:
        """Close with a close frame; bounded, shielded, never raises."""

    async def abort(self) -> None:
        """Close without a close frame, as a vanished peer would."""

    def abort_nowait(self) -> None:
        """`abort` in one step, without a checkpoint; `abort` afterwards is harmless."""


@attrs.define(eq=False)
class _MemoryLink:
    _connection: MemoryServerConnection

    async def send(self, frame: str | bytes) -> None:
        await self._connection.send(frame)

    async def receive(self) -> str | bytes:
        return await self._connection.receive()

    async def close(self, code: int) -> None:
        with trio.CancelScope(shield=True):
            await self._connection.close(code)

    async def abort(self) -> None:
        await self.close(CLOSE_ABNORMAL)

    def abort_nowait(self) -> None:
        self._connection.close_nowait(CLOSE_ABNORMAL)


@attrs.define(eq=False)
class _WebSocketLink(WebSocketTransport):
    # Held to abort: closing the TCP stream under trio-websocket sends no close frame.
    _stream: trio.SocketStream
    _close_timeout: float

    async def close(self, code: int) -> None:
        await close_websocket(self._ws, self._close_timeout, code)

    async def abort(self) -> None:
        with trio.CancelScope(shield=True):
            await self._stream.aclose()

    def abort_nowait(self) -> None:
        # Closing the socket itself is synchronous; the stream's aclose later is harmless.
        self._stream.socket.close()
