"""A simulated AIP agent server, for tests, demos and benchmarks.

Rules of this file:
- It behaves like a real agent server on every point of ``docs/protocol.md`` ("A faithful
  simulated agent"), so code tested against it holds against real servers: explicit nulls on
  every field, registration confirmed by ``heartbeat``/ok or rejected by ``error`` and a close,
  the identity check on every frame, the immediate task acknowledgement, ``task_end`` echoing
  ``session_id``, ``error`` frames without ``session_id`` for refused tasks.
- Every behaviour knob is a plain attribute that a test may change at any time while the agent
  runs; faults are either knobs (silence, lost ``task_end``, reordering, malformed frames,
  refusal) or calls (`SimulatedAgent.drop_connections`, `SimulatedAgent.send_raw`).
- One connection's trouble never escapes into the serving nursery.

Theory of operation: both transports (trio-websocket over TCP, and `MemoryNetwork`) are reduced
to a `_Link` (send, receive, close with a code, abort without a close frame) and served by one
loop per connection, `SimulatedAgent._serve_link`. That loop reads the ``register`` frame, then
answers each frame inline; only tasks with a duration and reordered replies get a background
task, in a nursery that lives exactly as long as the connection. Benchmarks run thousands of
connections, so a connection costs one task here (plus trio-websocket's reader).

`SimulatedAgent` is one class, built from three modules: accepting connections on both
transports is in ``_agent_serving.py``, running tasks (refusal, plan, TASK_END) in
``_agent_tasks.py``, and the conversation itself (registration, identity, the answer to each
frame, the faults a test calls) here; what it keeps per connection is in
``_agent_connections.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import Collection, Mapping
from typing import Any, Final

import attrs
import trio

from .._sansio._aip import (
    ClientMessage,
    ClientMessageType,
    ClientType,
    ServerMessage,
    ServerMessageType,
    WireStatus,
    decode_client,
    encode_server,
)
from .._sansio._errors import ProtocolError, TransportClosed
from .._transports._memory import MemoryNetwork
from .._transports._transport import CLOSE_ABNORMAL, CLOSE_NORMAL
from ._agent_connections import _Connection, _Link
from ._agent_serving import WEBSOCKET_PATH as WEBSOCKET_PATH
from ._agent_serving import _AgentServing
from ._agent_tasks import _AgentTasks, _TaskPlan, _uuid

__all__ = ["ReceivedFrame", "SimulatedAgent", "default_device_info"]

# What `SimulatedAgent.malformed_after_register` sends: not JSON.
MALFORMED_FRAME: Final = "{not json"


def default_device_info(device_id: str) -> dict[str, Any]:
    """The system info the agent reports for ``device_id`` unless configured otherwise: the
    keys a real device agent pushes when it registers (docs/protocol.md, flow 2)."""
    return {
        "device_id": device_id,
        "platform": "windows",
        "os_version": "10.0.22631",
        "cpu_count": 8,
        "memory_total_gb": 16.0,
        "hostname": f"{device_id}-host",
        "ip_address": "192.0.2.10",
        "supported_features": ["gui", "cli", "browser", "file_system", "office"],
        "platform_type": "computer",
        "schema_version": "1.0",
        "custom_metadata": {},
    }


@attrs.frozen
class ReceivedFrame:
    """One frame the agent received, as recorded in `SimulatedAgent.received`.

    Attributes:
        at: ``trio.current_time()`` when it arrived.
        connection: the id of the connection it came on (1, 2, … in order of acceptance).
        raw: the frame exactly as received (``bytes`` for a binary frame).
        message: the decoded frame, or None when it is not valid AIP.
    """

    at: float
    connection: int
    raw: str | bytes
    message: ClientMessage | None


def _frozen_devices(devices: Collection[str] | None) -> frozenset[str] | None:
    return None if devices is None else frozenset(devices)


@attrs.define(eq=False)
class SimulatedAgent(_AgentServing, _AgentTasks):
    """An AIP agent server serving one or more devices, with configurable faults.

    >>> agent = SimulatedAgent(devices=["dev-1"], task_duration=0.5)   # doctest: +SKIP
    >>> url = await nursery.start(agent.serve_websocket)                # ws://127.0.0.1:…/ws
    >>> agent.serve_memory(network, "ws://agent/ws", nursery)           # or in memory

    Arguments (each also an attribute a test may change while the agent runs):
        devices: the device ids attached to this server; None accepts any ``target_id``.
            Stored as a frozenset: assign a new collection to change it.
        token: when set, a handshake without ``?token=<token>`` is refused with HTTP 403.
        device_info: system info per device id; a device missing from it has none (the
            "not found" answer). None (the default) gives every served device
            `default_device_info`.
        task_duration, task_result, task_error: how tasks end by default: after
            ``task_duration`` seconds, ``completed`` with ``[{"request": …, "result":
            task_result}]``, or ``failed`` with that ``error`` when ``task_error`` is set.
            A task's ``metadata.task_data`` overrides them with ``sim_duration``,
            ``sim_result``, ``sim_error`` (null for success) and ``sim_lose_end``.
        lose_task_end: acknowledge tasks but never end them.
        reject_tasks: when set, every task is answered by an ``error`` frame with this text.
        reject_registration: when set, every registration is rejected with this text.
        answer_heartbeats: False makes the agent ignore heartbeats (and only heartbeats).
        reorder_replies: handle each frame after registration after a random delay of at
            most ``reorder_max_delay`` seconds, so replies arrive out of order, as from a
            real server. The delays come from ``rng``, a ``random.Random(seed)``.
        malformed_after_register: send `MALFORMED_FRAME` right after confirming a
            registration.
        drop_after_frames: abort a connection (no close frame) when it has sent this many
            frames, the last one unanswered.
        refuse_connections: refuse new connections (memory: "connection refused";
            WebSocket: the handshake is refused with HTTP 503). Open ones are unaffected.
        record_frames: append every received frame to `received` (benchmarks turn it off).
        close_timeout: bound on a closing handshake the agent starts.
        handshake_timeout: bound on a WebSocket opening handshake.
        max_frame_size: a larger inbound WebSocket frame closes the connection (1009).
    """

    devices: frozenset[str] | None = attrs.field(default=None, converter=_frozen_devices)
    token: str | None = None
    device_info: Mapping[str, Mapping[str, Any]] | None = None
    task_duration: float = 0.0
    task_result: Any = "done"
    task_error: str | None = None
    lose_task_end: bool = False
    reject_tasks: str | None = None
    reject_registration: str | None = None
    answer_heartbeats: bool = True
    reorder_replies: bool = False
    reorder_max_delay: float = 0.01
    seed: int | None = None
    malformed_after_register: bool = False
    drop_after_frames: int | None = None
    _refuse_connections: bool = False
    record_frames: bool = True
    close_timeout: float = 1.0
    handshake_timeout: float = 10.0
    max_frame_size: int = 100 * 1024 * 1024

    rng: random.Random = attrs.field(
        init=False,
        repr=False,
        default=attrs.Factory(lambda self: random.Random(self.seed), takes_self=True),
    )
    #: Every frame received, in order of arrival (when ``record_frames``).
    received: list[ReceivedFrame] = attrs.field(init=False, repr=False, factory=list)
    #: Connections whose handshake succeeded.
    connections_accepted: int = attrs.field(init=False, default=0)
    #: Registrations confirmed.
    registrations: int = attrs.field(init=False, default=0)
    #: ``task`` frames received after registration, answered or refused.
    tasks_received: int = attrs.field(init=False, default=0)

    _connections: dict[int, _Connection] = attrs.field(init=False, repr=False, factory=dict)
    _clients: dict[str, _Connection] = attrs.field(init=False, repr=False, factory=dict)
    _sessions: dict[str, _Connection] = attrs.field(init=False, repr=False, factory=dict)
    _ids: itertools.count[int] = attrs.field(
        init=False, repr=False, factory=lambda: itertools.count(1)
    )
    _memory_endpoints: list[tuple[MemoryNetwork, str, trio.Nursery]] = attrs.field(
        init=False, repr=False, factory=list
    )
    # The request and plan of each task running, by session id: what a stale TASK_END says.
    _plans: dict[str, tuple[str | None, _TaskPlan]] = attrs.field(
        init=False, repr=False, factory=dict
    )
    # TASK_ENDs of dropped connections, for the next one (`drop_connections`).
    _stale: list[tuple[str, str | None, _TaskPlan]] = attrs.field(
        init=False, repr=False, factory=list
    )
    _stale_delay: float = attrs.field(init=False, repr=False, default=0.0)

    # ------------------------------------------------------------------ knobs and counters

    @property
    def refuse_connections(self) -> bool:
        """True while new connections are refused; open connections are unaffected."""
        return self._refuse_connections

    @refuse_connections.setter
    def refuse_connections(self, value: bool) -> None:
        # A refused TCP connect has no in-memory equivalent but an address nobody listens on.
        self._refuse_connections = value
        for network, url, nursery in self._memory_endpoints:
            if value:
                network.unlisten(url)
            else:
                self._listen_memory(network, url, nursery)

    @property
    def open_connections(self) -> int:
        """Connections currently open (registered or not)."""
        return len(self._connections)

    # ------------------------------------------------------------------ faults

    async def drop_connections(self, *, stale_ends_after: float | None = None) -> None:
        """Abort every open connection without a close frame, as when the network fails.
        Clients see an abnormal closure (1006).

        With ``stale_ends_after``, the tasks running on them are not forgotten: their
        TASK_ENDs go out on the next connection registered, that many seconds after its
        registration (a server that delivers results to the client's new connection).

        Every connection is closed in one step, before any other task runs: as when a
        network fails, no client reconnects while the others are still being dropped."""
        connections = list(self._connections.values())
        for connection in connections:
            if stale_ends_after is not None:
                for session_id in sorted(connection.sessions):
                    if session_id in self._plans:
                        self._stale.append((session_id, *self._plans[session_id]))
                self._stale_delay = stale_ends_after
            connection.link.abort_nowait()
        for connection in connections:
            await connection.link.abort()

    async def send_raw(self, frame: str | bytes) -> None:
        """Send ``frame`` as is (text, or a binary frame for bytes) on every open connection."""
        for connection in list(self._connections.values()):
            with contextlib.suppress(TransportClosed):
                await connection.link.send(frame)

    # ------------------------------------------------------------------ one connection

    async def _serve_link(
        self, link: _Link, nursery: trio.Nursery, group: set[_Connection] | None
    ) -> None:
        """Converse on ``link`` until either side ends it. ``nursery`` holds this connection's
        background tasks; the caller cancels it afterwards."""
        connection = _Connection(next(self._ids), link, nursery)
        self._connections[connection.id] = connection
        self.connections_accepted += 1
        if group is not None:
            group.add(connection)
        try:
            with connection.scope:
                await self._converse(connection)
        except TransportClosed:
            pass
        finally:
            del self._connections[connection.id]
            if group is not None:
                group.discard(connection)
            self._forget(connection)
            await link.close(connection.close_code)

    def _forget(self, connection: _Connection) -> None:
        # A real server releases a client_id and its sessions when it notices the socket gone.
        if connection.client_id is not None and self._clients.get(connection.client_id) is (
            connection
        ):
            del self._clients[connection.client_id]
        for session_id in connection.sessions:
            if self._sessions.get(session_id) is connection:
                del self._sessions[session_id]
            self._plans.pop(session_id, None)

    async def _converse(self, connection: _Connection) -> None:
        if not await self._register(connection):
            return
        while True:
            message, error = await self._receive(connection)
            if message is not None and message.type is ClientMessageType.TASK:
                self.tasks_received += 1
            if self.reorder_replies:
                delay = self.rng.uniform(0.0, self.reorder_max_delay)
                connection.nursery.start_soon(self._handle_later, connection, message, error, delay)
            else:
                await self._handle(connection, message, error)

    async def _receive(self, connection: _Connection) -> tuple[ClientMessage | None, str | None]:
        raw = await connection.link.receive()
        try:
            message: ClientMessage | None = decode_client(raw)
            error = None
        except ProtocolError as exc:
            message, error = None, f"Invalid message: {exc}"
        if self.record_frames:
            self.received.append(ReceivedFrame(trio.current_time(), connection.id, raw, message))
        connection.frames += 1
        if self.drop_after_frames is not None and connection.frames >= self.drop_after_frames:
            await connection.link.abort()
            raise TransportClosed("dropped by drop_after_frames", CLOSE_ABNORMAL)
        return message, error

    async def _register(self, connection: _Connection) -> bool:
        message, error = await self._receive(connection)
        if message is not None:
            error = self._registration_refusal(message)
        if message is None or message.client_id is None or error is not None:
            await self._send_error(connection, error or "Invalid message")
            connection.close_code = CLOSE_NORMAL
            return False
        connection.client_type = message.client_type or ClientType.DEVICE
        connection.client_id = message.client_id
        connection.target_id = message.target_id
        self._clients[message.client_id] = connection
        self.registrations += 1
        await self._send(
            connection,
            ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK, response_id=_uuid()),
        )
        if self.malformed_after_register:
            await connection.link.send(MALFORMED_FRAME)
        if self._stale:
            stale, self._stale = self._stale, []
            connection.nursery.start_soon(self._send_stale, connection, stale)
        return True

    def _registration_refusal(self, message: ClientMessage) -> str | None:
        if message.type is not ClientMessageType.REGISTER:
            return f"First message must be a register message, got '{message.type}'"
        if self.reject_registration is not None:
            return self.reject_registration
        if message.client_id is None:
            return "Registration requires client_id"
        if message.client_type is ClientType.CONSTELLATION:
            if message.target_id is None:
                return "Constellation registration requires target_id"
            if not self._serves(message.target_id):
                return f"Target device '{message.target_id}' is not connected"
        if message.client_id in self._clients:
            return (
                f"client_id '{message.client_id}' is already registered; "
                "duplicate registrations are not allowed"
            )
        return None

    def detach_device(self, device_id: str) -> None:
        """The device agent ``device_id`` leaves this server, as a real device agent that
        disconnects does: the server stays up, and answers every task and registration
        for it with "Target device '<id>' is not connected" until `attach_device`. Tasks
        already running on it finish as usual. Needs an explicit ``devices`` set."""
        if self.devices is None:
            raise ValueError("detach_device needs the agent's devices listed (devices=[...])")
        self.devices = self.devices - {device_id}

    def attach_device(self, device_id: str) -> None:
        """The device agent ``device_id`` is back on this server."""
        if self.devices is not None:
            self.devices = self.devices | {device_id}

    def _serves(self, device_id: str) -> bool:
        return self.devices is None or device_id in self.devices

    async def _handle_later(
        self,
        connection: _Connection,
        message: ClientMessage | None,
        error: str | None,
        delay: float,
    ) -> None:
        await trio.sleep(delay)
        with contextlib.suppress(TransportClosed):
            await self._handle(connection, message, error)

    async def _handle(
        self, connection: _Connection, message: ClientMessage | None, error: str | None
    ) -> None:
        if message is None:
            await self._send_error(connection, error or "Invalid message")
            return
        kind = message.type
        if kind is ClientMessageType.HEARTBEAT and not self.answer_heartbeats:
            return
        mismatch = _identity_mismatch(connection, message)
        if mismatch is not None:
            await self._send_error(connection, mismatch)
        elif kind is ClientMessageType.HEARTBEAT:
            await self._send(
                connection,
                ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK, response_id=_uuid()),
            )
        elif kind is ClientMessageType.DEVICE_INFO_REQUEST:
            await self._answer_device_info(connection, message)
        elif kind is ClientMessageType.TASK:
            await self._start_task(connection, message)
        elif kind is not ClientMessageType.ERROR:
            # A client's error frame is only logged by real servers; anything else is refused.
            await self._send_error(connection, f"Unsupported message type '{kind}'")

    async def _answer_device_info(self, connection: _Connection, message: ClientMessage) -> None:
        device_id = message.target_id or connection.target_id
        info = self._device_info_for(device_id)
        result = (
            dict(info)
            if info is not None
            else {"error": f"Device {device_id} not found or no system info available"}
        )
        await self._send(
            connection,
            ServerMessage(
                ServerMessageType.DEVICE_INFO_RESPONSE,
                WireStatus.OK,
                response_id=message.request_id,
                result=result,
            ),
        )

    def _device_info_for(self, device_id: str | None) -> Mapping[str, Any] | None:
        if device_id is None or not self._serves(device_id):
            return None
        if self.device_info is None:
            return default_device_info(device_id)
        return self.device_info.get(device_id)

    async def _send_error(self, connection: _Connection, text: str) -> None:
        await self._send(
            connection, ServerMessage(ServerMessageType.ERROR, WireStatus.ERROR, error=text)
        )

    @staticmethod
    async def _send(connection: _Connection, message: ServerMessage) -> None:
        await connection.link.send(encode_server(message))


def _identity_mismatch(connection: _Connection, message: ClientMessage) -> str | None:
    # The newest servers bind both fields at registration; an absent client_type means
    # "device" on the wire (docs/protocol.md), which is how the reference's heartbeats get refused.
    if (message.client_type or ClientType.DEVICE) is not connection.client_type:
        return "client_type does not match the registered connection"
    if message.client_id != connection.client_id:
        return "client_id does not match the registered connection"
    return None
