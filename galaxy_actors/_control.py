"""The control endpoint of the supervisor process: small JSON requests over WebSocket.

Theory of operation. `ControlServer.serve` accepts connections on listeners bound beforehand
(so the process knows its port, and fails before starting anything when it cannot bind).
Each client connection is served by one task, one request at a time; connections are served
concurrently. A request is one JSON text frame carrying the token:

    {"token": "...", "op": "submit" | "devices" | "watch", "id": <anything, echoed>, ...}

and gets one reply frame ``{"op", "id", "ok", ...}``; ``ok`` false comes with
``"error": {"type", "message"}``. ``watch`` replies once, then streams events as frames
``{"event": "<class name>", ...}`` until either side closes; a watching connection takes no
more requests. The protocol reference is in ``docs/process.md``.

Nothing a client sends can hurt the supervisor: requests are validated here, every failure
becomes an error reply, and a watcher reads events through a bounded subscription that drops
(and reports) what a slow reader cannot take, so no device ever waits for a client.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio
import trio_websocket

from ._errors import GalaxyActorsError, TaskError
from ._report import device_rows, event_to_json, outcome_to_json
from ._supervisor import Supervisor
from ._transport import CLOSE_GOING_AWAY, CLOSE_NORMAL, close_websocket

__all__ = ["ControlServer", "open_control_listeners"]

logger = logging.getLogger("galaxy_actors.control")

OPS: Final = ("submit", "devices", "watch")
_ENVELOPE: Final = ("token", "op", "id")
_SUBMIT_FIELDS: Final = {
    "description": (str,),
    "device": (str, type(None)),
    "capabilities": (list, type(None)),
    "data": (dict, type(None)),
    "timeout": (int, float),
    "priority": (int,),
    "delivery": (str,),
    "task_id": (str, type(None)),
}


class _RequestError(Exception):
    """A request that gets an error reply: ``kind`` is the reply's ``error.type``."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


@attrs.define(eq=False)
class _Client:
    ws: trio_websocket.WebSocketConnection
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send_message(json.dumps(message, default=str))


async def open_control_listeners(host: str, port: int) -> tuple[list[trio.SocketListener], str]:
    """Bind the endpoint's listening socket(s); returns them and the URL clients use."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    return listeners, f"ws://{url_host}:{bound_port}/"


@attrs.define(eq=False)
class ControlServer:
    """Serves the control protocol for ``supervisor`` to clients holding ``token``.

    Arguments:
        watch_buffer: events a watcher may fall behind before it misses some.
        close_timeout: bound on each closing handshake.
        max_message_size: a larger request closes its connection (code 1009).
    """

    supervisor: Supervisor
    token: str
    watch_buffer: int = 1000
    close_timeout: float = 2.0
    handshake_timeout: float = 10.0
    max_message_size: int = 1024 * 1024
    #: False once `stop_accepting` (or `aclose`) was called: submits get ``ShuttingDown``.
    accepting: bool = attrs.field(init=False, default=True)
    _closing: bool = attrs.field(init=False, default=False)
    _clients: set[_Client] = attrs.field(init=False, factory=set)
    _pending: int = attrs.field(init=False, default=0)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)

    async def serve(
        self,
        listeners: Sequence[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; the listeners are closed when it ends."""
        await trio.serve_listeners(self._serve_tcp, list(listeners), task_status=task_status)

    def stop_accepting(self) -> None:
        """Refuse new tasks from now on; everything else keeps working."""
        self.accepting = False
        self.supervisor.stop_accepting()

    async def aclose(self, grace: float = 5.0) -> None:
        """Stop: refuse new tasks and connections, give requests in progress up to ``grace``
        seconds to send their replies, then close every connection with a close frame."""
        self.accepting = False
        self._closing = True
        with trio.move_on_after(grace):
            while self._pending:
                await self._wait_changed()
        for client in list(self._clients):
            client.scope.cancel()
        with trio.move_on_after(self.close_timeout + 1.0):
            while self._clients:
                await self._wait_changed()

    async def _wait_changed(self) -> None:
        await self._changed.wait()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ connections

    async def _serve_tcp(self, stream: trio.SocketStream) -> None:
        try:
            if self._closing:
                return
            async with trio.open_nursery() as nursery:
                ws = await self._accept(nursery, stream)
                if ws is not None:
                    await self._serve_client(_Client(ws))
                nursery.cancel_scope.cancel()
        finally:
            # trio-websocket leaves the socket open when the peer closed first: close it here.
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _accept(
        self, nursery: trio.Nursery, stream: trio.SocketStream
    ) -> trio_websocket.WebSocketConnection | None:
        with (
            trio.move_on_after(self.handshake_timeout),
            contextlib.suppress(trio_websocket.ConnectionClosed),
        ):
            request = await trio_websocket.wrap_server_stream(
                nursery, stream, message_queue_size=4, max_message_size=self.max_message_size
            )
            ws: trio_websocket.WebSocketConnection = await request.accept()
            return ws
        return None

    async def _serve_client(self, client: _Client) -> None:
        self._clients.add(client)
        try:
            with client.scope:
                await self._converse(client)
        except trio_websocket.ConnectionClosed:
            pass
        except Exception:
            # A bug here must cost one connection, never the endpoint or the supervisor.
            logger.exception("control connection failed")
        finally:
            self._clients.discard(client)
            self._changed.set()
            code = CLOSE_GOING_AWAY if self._closing else CLOSE_NORMAL
            await close_websocket(client.ws, self.close_timeout, code)

    async def _converse(self, client: _Client) -> None:
        while True:
            frame = await client.ws.get_message()
            envelope: dict[str, Any] = {"op": None, "id": None}
            try:
                request = self._parse(frame, envelope)
                if request["op"] == "watch":
                    self._check_fields(request, {})
                    # Replies, then streams until either side ends: so does the connection.
                    await self._watch(client, envelope)
                    return
            except _RequestError as exc:
                await client.send({**envelope, **_error_reply(exc)})
                continue
            # Counted until the reply is sent: `aclose` lets owed outcomes go out first.
            self._pending += 1
            try:
                await client.send({**envelope, **await self._reply(request)})
            finally:
                self._pending -= 1
                self._changed.set()

    # ------------------------------------------------------------------ requests

    async def _reply(self, request: Mapping[str, Any]) -> dict[str, Any]:
        try:
            if request["op"] == "submit":
                return await self._submit(request)
            self._check_fields(request, {})
            rows = [row.to_json() for row in device_rows(self.supervisor)]
            return {"ok": True, "accepting": self.accepting, "devices": rows}
        except _RequestError as exc:
            return _error_reply(exc)
        except Exception as exc:
            # A bug here must cost one reply, never the supervisor.
            logger.exception("control request failed")
            return {"ok": False, "error": {"type": "InternalError", "message": repr(exc)}}

    def _parse(self, frame: str | bytes, envelope: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(frame, str):
            raise _RequestError("BadRequest", "binary frame: a request is JSON text")
        try:
            request = json.loads(frame)
        except ValueError as exc:
            raise _RequestError("BadRequest", f"not JSON: {exc}") from None
        if not isinstance(request, dict):
            raise _RequestError("BadRequest", "a request must be a JSON object")
        envelope["id"] = request.get("id")
        op = request.get("op")
        envelope["op"] = op if isinstance(op, str) else None
        token = request.get("token")
        # Checked before anything else is looked at; compare_digest: no timing oracle.
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), self.token.encode()
        ):
            logger.warning("control request refused: %s token", "wrong" if token else "no")
            raise _RequestError("Unauthorized", "missing or wrong token")
        if op not in OPS:
            raise _RequestError("BadRequest", f"unknown op {op!r}; expected one of {OPS}")
        return request

    @staticmethod
    def _check_fields(request: Mapping[str, Any], fields: Mapping[str, tuple[type, ...]]) -> None:
        for key, value in request.items():
            if key in _ENVELOPE:
                continue
            kinds = fields.get(key)
            if kinds is None:
                raise _RequestError("BadRequest", f"unknown field {key!r} for {request['op']}")
            # JSON true/false are Python ints: never accept one for a number.
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise _RequestError("BadRequest", f"field {key!r} must be {names}, got {value!r}")

    async def _submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self._check_fields(request, _SUBMIT_FIELDS)
        if "description" not in request:
            raise _RequestError("BadRequest", "submit needs a 'description'")
        device = request.get("device")
        capabilities = request.get("capabilities")
        if device is not None and capabilities is not None:
            raise _RequestError("BadRequest", "give 'device' or 'capabilities', not both")
        if capabilities is not None and not all(isinstance(c, str) for c in capabilities):
            raise _RequestError("BadRequest", "'capabilities' must be a list of strings")
        if not self.accepting:
            raise _RequestError("ShuttingDown", "the supervisor is shutting down: no new tasks")
        try:
            handle = await self.supervisor.submit(
                request["description"],
                request.get("data"),
                device_id=device,
                capabilities=capabilities,
                task_id=request.get("task_id"),
                timeout=request.get("timeout", 1000.0),
                priority=request.get("priority", 0),
                delivery=request.get("delivery", "at_most_once"),
            )
        except TaskError as exc:  # refused at once: the task never existed
            return outcome_to_json(exc)
        except GalaxyActorsError as exc:
            raise _RequestError(type(exc).__name__, str(exc)) from None
        await handle.wait()
        assert handle.outcome is not None
        return outcome_to_json(handle.outcome)

    async def _watch(self, client: _Client, envelope: Mapping[str, Any]) -> None:
        with self.supervisor.subscribe(self.watch_buffer) as events:
            await client.send({**envelope, "ok": True})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, client.ws, nursery.cancel_scope)
                # Suppressed here: crossing the nursery it would arrive wrapped in a group.
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    reported = 0
                    async for event in events:
                        if events.dropped != reported:
                            reported = events.dropped
                            await client.send({"event": "Dropped", "count": reported})
                        await client.send(event_to_json(event))
                # The supervisor closed, or the client went away: the stream is over.
                nursery.cancel_scope.cancel()


def _error_reply(exc: _RequestError) -> dict[str, Any]:
    return {"ok": False, **exc.extra, "error": {"type": exc.kind, "message": str(exc)}}


async def _drain(ws: trio_websocket.WebSocketConnection, scope: trio.CancelScope) -> None:
    # A watcher sends nothing more; reading notices its close at once rather than at the
    # next event, and keeps trio-websocket answering pings (TRIO-NOTES, pitfall 4).
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await ws.get_message()
    scope.cancel()
