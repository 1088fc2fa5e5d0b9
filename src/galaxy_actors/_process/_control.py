"""The control endpoint of the supervisor process: small JSON requests over WebSocket.

Theory of operation. `ControlServer.serve` accepts connections on listeners bound beforehand
(so the process knows its port, and fails before starting anything when it cannot bind).
Each client connection is served by one task, one request at a time; connections are served
concurrently. A request is one JSON text frame carrying the token:

    {"token": "...", "op": "submit" | "devices" | "watch" | "connect" | ..., "id": <any>, ...}

and gets one reply frame ``{"op", "id", "ok", ...}``; ``ok`` false comes with
``"error": {"type", "message"}``. ``watch`` replies once, then streams events as frames
``{"event": "<class name>", ..., "wall_time": "<ISO 8601 UTC>"}`` until either side closes
(`_event_frame`: ``at`` is on the supervisor's clock); a watching connection takes no
more requests. The operator's ops (``connect``, ``disconnect``, ``add``, ``remove``,
``cancel``, ``reload``) change the running fleet. The protocol reference is in
``docs/process.md``.

Nothing a client sends can hurt the supervisor: requests are validated before anything is
done (the token here, then the ops' table in ``_control_requests.py``), every failure
becomes an error reply, and a watcher reads events through a bounded subscription that drops
(and reports) what a slow reader cannot take, so no device ever waits for a client. Until a
request has shown the token, nothing of it is echoed back, and refusals are logged at most
once per ``refusal_log_interval`` seconds per kind (a flood must not flood the log).

At `aclose`, a watcher is sent every event published before it, then its stream ends: the
last events of a shutdown (each device's ``disconnected``) are the ones a watcher most
wants.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
import trio
import trio_websocket

from .._actors._events import Event, Subscription
from .._actors._supervisor import Supervisor
from .._actors._throttle import Throttled
from .._sansio._errors import GalaxyActorsError, TaskError, UnknownDevice
from .._sansio._redact import bounded, redact
from .._transports._transport import CLOSE_GOING_AWAY, CLOSE_NORMAL, close_websocket
from ._control_requests import _FIELDS, _check_fields, _depth_over, _error_reply, _RequestError
from ._control_requests import MAX_DEPTH as MAX_DEPTH
from ._control_requests import OPS as OPS
from ._report import device_rows, event_to_json, outcome_to_json

__all__ = ["ControlServer", "open_control_listeners"]

logger = logging.getLogger("galaxy_actors.control")

#: What a ``reload`` calls: apply the configuration file again, return the reply's fields.
Reload = Callable[[], Awaitable[dict[str, Any]]]


@attrs.define(eq=False)
class _Client:
    ws: trio_websocket.WebSocketConnection
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    watching: bool = False
    # Set while a watcher waits for the next event: `aclose` cancels it to end the stream
    # once what is buffered has been sent.
    waiting: trio.CancelScope | None = None

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
        reload: what the ``reload`` op runs (None: the op is refused as unsupported).
        changes: held while a request adds or removes devices; share it with whatever else
            changes the fleet (the process's SIGHUP reload), so that changes never interleave.
        watch_buffer: events a watcher may fall behind before it misses some.
        close_timeout: bound on each closing handshake.
        max_message_size: a larger request closes its connection (code 1009).
        refusal_log_interval: seconds between two log lines about refused requests of one
            kind (the next line counts the ones held back).
    """

    supervisor: Supervisor
    token: str
    reload: Reload | None = None
    changes: trio.Lock = attrs.Factory(trio.Lock)
    watch_buffer: int = 1000
    close_timeout: float = 2.0
    handshake_timeout: float = 10.0
    max_message_size: int = 1024 * 1024
    refusal_log_interval: float = attrs.field(
        default=10.0, on_setattr=lambda self, _, value: self._set_refusal_interval(value)
    )
    #: False once `stop_accepting` (or `aclose`) was called: submits get ``ShuttingDown``.
    accepting: bool = attrs.field(init=False, default=True)
    _closing: bool = attrs.field(init=False, default=False)
    _clients: set[_Client] = attrs.field(init=False, factory=set)
    _pending: int = attrs.field(init=False, default=0)
    _changed: trio.Event = attrs.field(init=False, factory=trio.Event)
    _refusals: Throttled = attrs.field(init=False)

    @_refusals.default
    def _make_refusals(self) -> Throttled:
        return Throttled(logger, self.refusal_log_interval)

    def _set_refusal_interval(self, value: float) -> float:
        self._refusals.interval = value
        return value

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
        seconds to send their replies and watchers as long to receive every event published
        so far, then close every connection with a close frame."""
        self.accepting = False
        self._closing = True
        for client in self._clients:
            if client.waiting is not None:
                client.waiting.cancel()
        with trio.move_on_after(grace):
            while self._pending or any(client.watching for client in self._clients):
                await self._wait_changed()
        self._refusals.flush()
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
                    _check_fields(request)
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
        op = request["op"]
        try:
            _check_fields(request)
            if op == "submit":
                return await self._submit(request)
            if op == "devices":
                # Redacted: a failure's text may quote a device's URL, and its token.
                rows = [_redacted(row.to_json()) for row in device_rows(self.supervisor)]
                return {"ok": True, "accepting": self.accepting, "devices": rows}
            try:
                return await self._operate(op, request)
            except GalaxyActorsError as exc:
                raise _RequestError(type(exc).__name__, redact(str(exc))) from None
        except _RequestError as exc:
            return _error_reply(exc)
        except Exception as exc:
            # A bug here must cost one reply, never the supervisor.
            logger.exception("control request failed")
            return {"ok": False, "error": {"type": "InternalError", "message": repr(exc)}}

    def _refuse(self, kind: str, error: str, message: str) -> _RequestError:
        self._refusals.warning(kind, f"control request refused: {kind}")
        return _RequestError(error, message)

    def _parse(self, frame: str | bytes, envelope: dict[str, Any]) -> dict[str, Any]:
        # Until the token is checked, the reply says nothing of what the request held: an
        # endpoint must not reflect a stranger's input (nor its id) back.
        if not isinstance(frame, str):
            raise self._refuse("binary frame", "BadRequest", "binary frame: a request is JSON text")
        try:
            request = json.loads(frame)
        except ValueError as exc:
            raise self._refuse("not JSON", "BadRequest", f"not JSON: {exc}") from None
        except RecursionError:
            request = None
        if request is None or _depth_over(request, MAX_DEPTH):
            message = f"nested deeper than {MAX_DEPTH} levels"
            raise self._refuse("too deep", "BadRequest", message)
        if not isinstance(request, dict):
            raise self._refuse("not an object", "BadRequest", "a request must be a JSON object")
        token = request.get("token")
        # Checked before anything else is looked at; compare_digest: no timing oracle.
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode(), self.token.encode()
        ):
            kind = "wrong token" if token else "no token"
            raise self._refuse(kind, "Unauthorized", "missing or wrong token")
        envelope["id"] = request.get("id")
        op = request.get("op")
        envelope["op"] = op if isinstance(op, str) else None
        if op not in OPS:
            raise _RequestError(
                "BadRequest", f"unknown op {bounded(repr(op), 80)}; expected one of {OPS}"
            )
        return request

    async def _operate(self, op: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """The operator's ops; a `GalaxyActorsError` becomes the error reply."""
        sup = self.supervisor
        device = request.get("device", "")
        if op == "connect":
            connected = await sup.connect(device)
            return {"ok": True, "device_id": device, "connected": connected}
        if op == "disconnect":
            await sup.disconnect(device, force=request.get("force", False))
            return {"ok": True, "device_id": device}
        if op == "cancel":
            task_id = request["task_id"]
            withdrawn = sup.cancel(task_id, "cancelled through the control endpoint")
            return {"ok": True, "task_id": task_id, "withdrawn": withdrawn}
        if op == "result":
            return await self._result(request["task_id"], wait=request.get("wait", False))
        if op == "reload":
            if self.reload is None:
                raise _RequestError("Unsupported", "this endpoint cannot reload")
            return {"ok": True, **await self.reload()}
        async with self.changes:
            if op == "add":
                sup.add_device(
                    device,
                    request["url"],
                    request.get("os", "unknown"),
                    capabilities=request.get("capabilities"),
                    metadata=request.get("metadata"),
                    max_retries=request.get("max_retries"),
                )
                spec = {k: request[k] for k in _FIELDS["add"] if k != "device" and k in request}
            else:
                await sup.remove_device(device, force=request.get("force", False))
                spec = None
            if sup.durable is not None:  # a restart brings the same fleet back
                await sup.durable.record_device(device, spec)
        return {"ok": True, "device_id": device}

    async def _result(self, task_id: str, *, wait: bool) -> dict[str, Any]:
        """A task's outcome by id: live, or retained by the journal; ``wait`` for it."""
        handle = await self.supervisor.task(task_id)
        if wait or handle.done:
            await handle.wait()
        if handle.outcome is None:
            state = "sent" if handle.sent else "queued"
            return {
                "ok": False,
                "task_id": task_id,
                "device_id": handle.device_id,
                "outcome": "pending",
                "state": state,
                "error": {"type": "Pending", "message": f"task {task_id!r} is {state}"},
            }
        return outcome_to_json(handle.outcome)

    async def _submit(self, request: Mapping[str, Any]) -> dict[str, Any]:
        device = request.get("device")
        capabilities = request.get("capabilities")
        if device is not None and capabilities is not None:
            raise _RequestError("BadRequest", "give 'device' or 'capabilities', not both")
        if not self.accepting:
            raise _RequestError("ShuttingDown", "the supervisor is shutting down: no new tasks")
        try:
            handle = await self.supervisor.submit(
                request["description"],
                request.get("data"),
                device_id=device,
                capabilities=capabilities,
                task_id=request.get("task_id"),
                task_timeout=request.get("timeout", 1000.0),
                priority=request.get("priority", 0),
                delivery=request.get("delivery", "at_most_once"),
            )
        except TaskError as exc:  # refused at once: the task never existed
            return outcome_to_json(exc)
        except UnknownDevice as exc:  # the same reply as any task refused at once
            return {
                "ok": False,
                "task_id": None,
                "device_id": exc.device_id,
                "outcome": "UnknownDevice",
                "error": {"type": "UnknownDevice", "message": str(exc)},
            }
        except GalaxyActorsError as exc:
            raise _RequestError(type(exc).__name__, str(exc)) from None
        await handle.wait()
        assert handle.outcome is not None
        return outcome_to_json(handle.outcome)

    async def _watch(self, client: _Client, envelope: Mapping[str, Any]) -> None:
        with self.supervisor.subscribe(self.watch_buffer) as events:
            await client.send({**envelope, "ok": True})
            client.watching = True
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, client.ws, nursery.cancel_scope)
                # Suppressed here: crossing the nursery it would arrive wrapped in a group.
                with contextlib.suppress(trio_websocket.ConnectionClosed):
                    reported = 0
                    while (event := await self._next_event(client, events)) is not None:
                        if events.dropped != reported:
                            reported = events.dropped
                            await client.send({"event": "Dropped", "count": reported})
                        await client.send(_redacted(_event_frame(event)))
                # The supervisor closed, the endpoint is closing, or the client went away.
                nursery.cancel_scope.cancel()
            client.watching = False

    async def _next_event(self, client: _Client, events: Subscription) -> Event | None:
        """The next event to send, or None once the stream is over: the hub closed, or
        `aclose` began and every event buffered before it has been taken."""
        while True:
            try:
                return events.receive_nowait()
            except trio.WouldBlock:
                if self._closing:
                    return None
            except (trio.EndOfChannel, trio.ClosedResourceError):
                return None
            # Only the wait is cancellable by `aclose`, never a send half done.
            with trio.CancelScope() as client.waiting:
                try:
                    return await events.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return None
                finally:
                    client.waiting = None


def _event_frame(event: Event) -> dict[str, Any]:
    """The event's JSON, with ``wall_time``: when it happened, ISO 8601 UTC.

    Events carry ``at`` on Trio's clock, which means nothing outside the process. The wall
    time is ``at`` plus the offset between the two clocks, read as the event is sent: both
    advance at the same rate, so a watcher that reads late still sees when the event
    happened, not when it was sent (only a step of the wall clock in between shifts it)."""
    frame = event_to_json(event)
    wall = event.at + (time.time() - trio.current_time())
    when = datetime.datetime.fromtimestamp(wall, datetime.UTC)
    frame["wall_time"] = when.isoformat(timespec="milliseconds")
    return frame


def _redacted(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: redact(v) if isinstance(v, str) else v for key, v in fields.items()}


async def _drain(ws: trio_websocket.WebSocketConnection, scope: trio.CancelScope) -> None:
    # A watcher sends nothing more; reading notices its close at once rather than at the
    # next event, and keeps trio-websocket answering pings, which it does only while
    # someone reads.
    with contextlib.suppress(trio_websocket.ConnectionClosed):
        while True:
            await ws.get_message()
    scope.cancel()
