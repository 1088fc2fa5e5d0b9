"""How connections reach the simulated agent: WebSocket over TCP (or TLS), or `MemoryNetwork`.

`_AgentServing` is the part of `SimulatedAgent` that accepts connections: it listens, refuses
a handshake as a real server does (wrong path 404, ``refuse_connections`` 503, a missing or
wrong token 403), wraps what it accepts in a `_Link`, and hands that to
`SimulatedAgent._serve_link`, where the conversation happens (``_agent.py``). It holds no
state of its own: the knobs it reads are `SimulatedAgent`'s attributes, declared below for
the type checker only.
"""

from __future__ import annotations

import contextlib
import ssl
from functools import partial
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

import trio
import trio_websocket

from .._transports._memory import MemoryNetwork, MemoryServerConnection
from ._agent_connections import _Connection, _Link, _MemoryLink, _WebSocketGroup, _WebSocketLink

WEBSOCKET_PATH: Final = "/ws"


class _AgentServing:
    """Mixin of `SimulatedAgent`: serving its endpoints and accepting connections."""

    __slots__ = ()

    if TYPE_CHECKING:
        token: str | None
        close_timeout: float
        handshake_timeout: float
        max_frame_size: int
        _refuse_connections: bool
        _memory_endpoints: list[tuple[MemoryNetwork, str, trio.Nursery]]

        async def _serve_link(
            self, link: _Link, nursery: trio.Nursery, group: set[_Connection] | None
        ) -> None: ...

    async def serve_websocket(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        backlog: int = 1024,
        ssl_context: ssl.SSLContext | None = None,
        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve AIP over WebSocket on ``host:port`` (0: any free port), path ``/ws``, until
        cancelled; ``await nursery.start(agent.serve_websocket)`` returns the URL.

        ``backlog`` is the TCP accept queue: benchmarks open thousands of connections at once.
        With ``ssl_context`` (a server context: its certificate, and ``verify_mode`` to ask
        for a client's) it serves ``wss://``.
        When cancelled, every connection is closed with code 1001 (going away), each closing
        handshake bounded by ``close_timeout``.
        """
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=backlog)
        bound_port = listeners[0].socket.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        group = _WebSocketGroup()
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    trio.serve_listeners, partial(self._serve_tcp, group, ssl_context), listeners
                )
            )
            scheme = "ws" if ssl_context is None else "wss"
            try:
                task_status.started(f"{scheme}://{url_host}:{bound_port}{WEBSOCKET_PATH}")
                await trio.sleep_forever()
            finally:
                group.shut_down(trio.current_time() + self.close_timeout)

    def serve_memory(self, network: MemoryNetwork, url: str, nursery: trio.Nursery) -> None:
        """Serve AIP at ``url`` on an in-memory network; each connection runs in ``nursery``.
        Cancelling ``nursery`` closes every connection with code 1001."""
        self._memory_endpoints.append((network, url, nursery))
        if not self._refuse_connections:
            self._listen_memory(network, url, nursery)

    def _listen_memory(self, network: MemoryNetwork, url: str, nursery: trio.Nursery) -> None:
        network.listen(url, self._serve_memory_connection, nursery, check=self._token_refusal)

    def _token_refusal(self, query: str) -> int | None:
        if self.token is not None and parse_qs(query).get("token") != [self.token]:
            return 403
        return None

    def _handshake_refusal(self, target: str) -> int | None:
        path, _, query = target.partition("?")
        if path != WEBSOCKET_PATH:
            return 404
        if self._refuse_connections:
            return 503
        return self._token_refusal(query)

    async def _serve_memory_connection(self, connection: MemoryServerConnection) -> None:
        async with trio.open_nursery() as nursery:
            await self._serve_link(_MemoryLink(connection), nursery, None)
            nursery.cancel_scope.cancel()

    async def _serve_tcp(
        self,
        group: _WebSocketGroup,
        ssl_context: ssl.SSLContext | None,
        stream: trio.SocketStream,
    ) -> None:
        # Shielded from the cancellation of serve_websocket: at shutdown trio-websocket's
        # reader must still run, or no closing handshake can complete. The group cancels
        # the conversation and puts a deadline on this scope instead.
        with trio.CancelScope(shield=True) as shield:
            if group.closing:
                shield.cancel()
            group.shields.add(shield)
            try:
                async with trio.open_nursery() as nursery:
                    link = await self._accept_websocket(nursery, stream, ssl_context)
                    if link is not None:
                        await self._serve_link(link, nursery, group.connections)
                    nursery.cancel_scope.cancel()
            finally:
                group.shields.discard(shield)
                with trio.CancelScope(shield=True):
                    await stream.aclose()

    async def _accept_websocket(
        self, nursery: trio.Nursery, stream: trio.SocketStream, ssl_context: ssl.SSLContext | None
    ) -> _WebSocketLink | None:
        with (
            trio.move_on_after(self.handshake_timeout),
            contextlib.suppress(trio_websocket.ConnectionClosed, trio.BrokenResourceError),
        ):
            served: trio.SocketStream | trio.SSLStream[trio.SocketStream] = stream
            if ssl_context is not None:
                served = trio.SSLStream(stream, ssl_context, server_side=True)
                # Here, not on trio-websocket's first read: a client that refuses our
                # certificate (or brings none when one is required) ends the connection.
                await served.do_handshake()
            request = await trio_websocket.wrap_server_stream(
                nursery, served, message_queue_size=8, max_message_size=self.max_frame_size
            )
            status = self._handshake_refusal(request.path)
            if status is not None:
                await request.reject(status)
                return None
            ws = await request.accept()
            return _WebSocketLink(ws, stream, self.close_timeout)
        return None
