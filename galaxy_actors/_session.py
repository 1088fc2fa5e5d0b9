"""A Session: one connection attempt of one device, from handshake to its end.

Theory of operation. A Session runs in its device actor's task, inside a cancel scope that
is the Session's life: any failure records a reason and cancels that scope, so the whole
connection (trio-websocket's reader included, which lives in the connector's nursery inside
the scope) dies as a unit and nothing half-dead survives it.

The reader, heartbeat and executor of DESIGN.md are roles of one loop, not three tasks (each
task costs a device 2-3 KB and each hand-off a scheduler pass, see TRIO-NOTES.md):

- the loop always drains the connection and routes each frame inline (no slow consumer can
  stall trio-websocket's reader), in one receive scope kept open across frames;
- it sends heartbeats on a deadline and fails the Session when no frame at all arrived
  within ``heartbeat_timeout`` of the oldest unanswered heartbeat (AIP.md: answers cannot be
  correlated, any inbound frame proves liveness);
- it dispatches the next queued task when the device becomes free.

When the device is idle and its queue empty, the caller's own task sends the TASK frame
(`send_task`), with no hand-off; while it waits for the outcome it reads the connection's
frames itself (`drive`), and the loop steps aside, keeping the heartbeats and every
deadline. Over a frame-safe transport (`FrameSafeTransport`) sends need no cancel scope: a
cancelled send sent nothing, and the task did not start (`_not_sent`).
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import TYPE_CHECKING, NoReturn

import trio

from ._aip import (
    ServerFields,
    ServerMessageType,
    WireStatus,
    device_info_from,
    parse_server,
    server_message,
    session_id_for,
)
from ._errors import DeviceDisconnected, ProtocolError, TaskRejected, TaskTimeout
from ._policy import FailureReason
from ._status import DeviceStatus
from ._task import Delivery, ExecutionResult, ResultStatus, TaskHandle
from ._transport import CLOSE_MESSAGE_TOO_BIG, ConnectFailed, Transport, TransportClosed

if TYPE_CHECKING:
    from ._device import DeviceActor

logger = logging.getLogger("galaxy_actors.session")

_HEARTBEAT = ServerMessageType.HEARTBEAT
_TASK_END = ServerMessageType.TASK_END
_ERROR = ServerMessageType.ERROR
_INFO = ServerMessageType.DEVICE_INFO_RESPONSE
_FAILED_STATUSES = frozenset({WireStatus.FAILED, WireStatus.ERROR})


class Session:
    """One connection of one device. Created and run by `DeviceActor`."""

    __slots__ = (
        "_driver",
        "_driver_scope",
        "_frame_safe",
        "_handback",
        "_hb_next",
        "_hb_oldest",
        "_in_flight_sid",
        "_phase_deadline",
        "_recv_scope",
        "actor",
        "failure",
        "in_flight",
        "intentional",
        "ready",
        "scope",
        "stop_deadline",
        "stopping",
        "transport",
    )

    def __init__(self, actor: DeviceActor) -> None:
        self.actor = actor
        self.scope = trio.CancelScope()
        self.transport: Transport | None = None
        self.failure: tuple[FailureReason, str] | None = None
        self.intentional = False
        self.ready = False
        self.stopping = False
        self.stop_deadline = math.inf
        self.in_flight: TaskHandle | None = None
        self._in_flight_sid = ""
        self._recv_scope: trio.CancelScope | None = None
        self._hb_next = math.inf
        self._hb_oldest: float | None = None
        self._phase_deadline = math.inf
        self._frame_safe = False
        # A caller reading its own task's frames (`drive`), the scope that lets the loop
        # wake it, and the Event it sets when it gives the connection back to the loop.
        self._driver: TaskHandle | None = None
        self._driver_scope: trio.CancelScope | None = None
        self._handback: trio.Event | None = None

    # ----------------------------------------------------------------- control from outside

    def fail(self, reason: FailureReason, detail: str) -> None:
        """End the Session because of ``reason``. The first ending recorded wins.

        The device is FAILED from this moment, before any task outcome is delivered, so
        that nobody woken by one sees it idle and sends on a dying connection."""
        self.ready = False
        if self.failure is None and not self.intentional:
            self.failure = (reason, detail)
            self.actor.session_failed(reason, detail)
        self.scope.cancel()
        self._release_driver()

    def stop(self, grace: float) -> None:
        """End the Session on purpose: at once if no task runs, else once it ends or after
        ``grace`` seconds, whichever is first. No queued task is dispatched any more."""
        if not self.ready:
            if self.failure is None:
                self.intentional = True
            self.scope.cancel()
            return
        self.stopping = True
        self.stop_deadline = min(self.stop_deadline, trio.current_time() + grace)
        self._wake()

    def can_send_now(self) -> bool:
        return self.ready and self.in_flight is None and not self.stopping

    def _wake(self) -> None:
        if self._recv_scope is not None:
            self._recv_scope.deadline = -math.inf

    # ----------------------------------------------------------------------------- the run

    async def run(self) -> None:
        """Connect, register, fetch device info, then serve until the Session ends. Every
        ending is recorded in ``failure``/``intentional``; nothing expected is raised.

        Two cancel scopes: until the connection is open, ``fail``/``stop`` cancel the whole
        attempt; once it is open they cancel only the protocol inside it, so the connector
        closes the connection with its reader still running, and the closing handshake
        completes instead of waiting out its bound (TRIO-NOTES, pitfall 3). A real server
        forgets our ``client_id`` only once it has seen that close."""
        actor = self.actor
        limiter = actor.owner.handshake_limiter
        with self.scope:
            if limiter is not None:
                await limiter.acquire_on_behalf_of(self)
            try:
                async with actor.owner.connector.open(actor.profile.server_url) as transport:
                    inner = trio.CancelScope()
                    if self.scope.cancel_called:
                        inner.cancel()
                    self.scope = inner
                    self.transport = transport
                    frame_safe = getattr(transport, "frame_safe_sends", None)
                    self._frame_safe = bool(
                        frame_safe is not None and frame_safe(actor.settings.send_timeout)
                    )
                    with inner:
                        await self._register()
                        if limiter is not None:
                            limiter.release_on_behalf_of(self)
                            limiter = None
                        await self._fetch_device_info()
                        await self._serve()
            except ConnectFailed as exc:
                self.fail(FailureReason.CONNECT_FAILED, str(exc))
            finally:
                if limiter is not None:
                    limiter.release_on_behalf_of(self)

    async def _abort(self, reason: FailureReason, detail: str) -> NoReturn:
        self.fail(reason, detail)
        await trio.lowlevel.checkpoint()  # raises Cancelled: the Session's scope is cancelled
        raise AssertionError("unreachable: the session scope was cancelled")

    async def _register(self) -> None:
        actor = self.actor
        settings = actor.settings
        self._phase_deadline = trio.current_time() + settings.registration_timeout
        await self._send(actor.frames.register())
        while True:
            frame = await self._next_frame()
            if frame is None:
                await self._abort(
                    FailureReason.CONNECT_FAILED,
                    f"no answer to REGISTER within {settings.registration_timeout:g} s",
                )
            kind, status, fields = frame
            if kind is _HEARTBEAT and status is WireStatus.OK:
                break
            if kind is _ERROR:
                # The server closes the socket right after this frame (TRIO-NOTES, pitfall
                # 7): fail on the frame, so the reason reads as a rejection.
                await self._abort(
                    FailureReason.REGISTRATION_REJECTED,
                    fields.get("error") or "registration rejected",
                )
            actor.bad_frame("unexpected", f"{kind} frame before registration")
        now = trio.current_time()
        actor.profile.last_heartbeat = now
        actor.set_status(DeviceStatus.CONNECTED)
        self._hb_next = now  # the first heartbeat goes out right after the connection is up

    async def _fetch_device_info(self) -> None:
        actor = self.actor
        settings = actor.settings
        await self._heartbeat_if_due()
        request_id = uuid.uuid4().hex
        self._phase_deadline = trio.current_time() + settings.device_info_timeout
        await self._send(actor.frames.device_info_request(request_id))
        info = None
        while True:
            frame = await self._next_frame()
            if frame is None:
                logger.warning(
                    "device %s: no device info within %g s",
                    actor.device_id,
                    settings.device_info_timeout,
                    extra={"device_id": actor.device_id},
                )
                break
            kind, _, fields = frame
            if kind is _INFO and fields.get("response_id") == request_id:
                info = device_info_from(server_message(frame))
                break
            if kind is _ERROR:
                # Authorization failures come back as an error frame without request_id.
                actor.bad_frame("error_frame", f"device info refused: {fields.get('error')}")
                break
            self._route(frame, trio.current_time())
        self._phase_deadline = math.inf
        actor.connected(info)
        self.ready = True

    async def _serve(self) -> None:
        """The loop of a registered connection: receive and route frames, send heartbeats
        when due, dispatch the next queued task when the device is free.

        One receive scope stays open while frames keep coming: entering a cancel scope
        costs about as much as routing a frame, and a task with the usual long timeout
        changes no deadline, so a task's two frames cost no scope at all. Over a frame-safe
        transport the next queued task is sent from inside the scope too. The scope is left
        to send a due heartbeat, to stop, or when it expires (a deadline, or `_wake`).

        While a caller reads its own task's frames (`drive`), the loop waits for it to hand
        the connection back, in the same scope: the deadlines stay the loop's."""
        actor = self.actor
        mailbox = actor.mailbox
        transport = self.transport
        assert transport is not None
        current_time = trio.current_time
        try:
            while True:
                if self.in_flight is None:
                    if self.stopping:
                        return
                    task = mailbox.pop()
                    if task is not None:
                        await self.send_task(task)
                        continue
                await self._heartbeat_if_due()
                with trio.CancelScope(deadline=self._deadline()) as scope:
                    self._recv_scope = scope
                    while True:
                        handback = self._handback
                        if handback is not None:
                            await handback.wait()
                            now = current_time()
                        else:
                            try:
                                raw = await transport.receive()
                            except TransportClosed as exc:
                                await self._closed(exc)
                            now = current_time()
                            self._take(raw, now)
                            driver = self._driver
                            if driver is not None and driver.done:
                                self._release_driver()  # we routed the end of its task
                        if self.scope.cancel_called:
                            # The Session failed or was stopped, maybe by a waiting caller
                            # while this task already held its next frame (routed above: a
                            # result that arrived is kept). Nothing more is started.
                            await trio.lowlevel.checkpoint()  # raises Cancelled
                        if self.in_flight is None and (self.stopping or mailbox):
                            if self.stopping or not self._frame_safe:
                                break  # stop, or send the next task shielded, outside
                            # In the scope: a cancelled frame-safe send sent nothing and
                            # put the task back (`_not_sent`), so nothing is lost.
                            task = mailbox.pop()
                            if task is not None:
                                await self.send_task(task)
                        if now >= self._hb_next:
                            break  # a heartbeat is due
                        deadline = self._deadline()
                        if deadline != scope.deadline:
                            scope.deadline = deadline
                self._recv_scope = None
                if scope.cancelled_caught:
                    now = current_time()
                    await self._check_timeouts(now)
                    if now >= self.stop_deadline or (self.stopping and self.in_flight is None):
                        task = self.in_flight
                        if task is not None:
                            self.in_flight = None
                            actor.task_cancelled(task, "device disconnected before the task ended")
                        return
        finally:
            self._release_driver()

    def _take(self, raw: str | bytes, now: float) -> None:
        """One frame received after the connect sequence: decoded and routed. A frame that
        ends the Session (`_decode`) cancels its scope, which the reader then meets."""
        frame = self._decode(raw, now)
        if frame is not None:
            self._route(frame, now)

    def _decode(self, raw: str | bytes, now: float) -> ServerFields | None:
        """One received frame proves the connection alive; its checked fields, or None for
        a frame that does not decode: a text one is counted, logged and dropped, a binary
        one fails the Session (AIP.md). No `ServerMessage` is built: it would be a third of
        the cost of decoding, on every frame (`parse_server`)."""
        self._hb_oldest = None
        self.actor.profile.last_heartbeat = now
        try:
            return parse_server(raw)
        except ProtocolError as exc:
            if isinstance(raw, bytes):
                self.fail(FailureReason.PROTOCOL_ERROR, str(exc))
            else:
                self.actor.bad_frame("protocol_error", f"{exc}: {raw[:200]!r}")
            return None

    # ------------------------------------------------------------------- a caller reads

    async def drive(self, task: TaskHandle) -> bool:
        """Called by a task waiting for ``task``'s outcome while ``task`` is on the device:
        read and route this connection's frames in the waiting task itself, until ``task``
        ends. Returns False, at once, if it cannot (another caller reads, or ``task`` is not
        the one on the device); True once it has waited.

        Why: the loop would receive the TASK_END and then wake the caller, one more
        scheduler pass per task than a bare client makes (about 5 % of a round trip here,
        docs/performance.md). Meanwhile the loop waits for the connection back (`_serve`),
        still sends heartbeats and keeps every deadline; it wakes the caller through
        ``_driver_scope`` if it ends ``task`` itself (a timeout, a stop, the Session's end).
        Frames reach their readers in order: the loop, the frames after it steps aside to
        the caller, the frames after the caller hands back to the loop."""
        if self._driver is not None or self.in_flight is not task or not self.ready:
            return False
        transport = self.transport
        assert transport is not None
        handback = trio.Event()
        self._driver = task
        self._handback = handback
        try:
            with trio.CancelScope() as scope:
                self._driver_scope = scope
                while not task.done:
                    try:
                        raw = await transport.receive()
                    except TransportClosed:
                        break  # the loop reads the same and ends the Session with the reason
                    self._take(raw, trio.current_time())  # a failure cancels ``scope``
        finally:
            self._driver = self._driver_scope = self._handback = None
            handback.set()
        return True

    def _release_driver(self) -> None:
        """Wake the caller reading frames (`drive`), if any: the loop takes over."""
        scope = self._driver_scope
        if scope is not None:
            scope.cancel()

    # ------------------------------------------------------------------------ receiving

    async def _heartbeat_if_due(self) -> None:
        now = trio.current_time()
        if now >= self._hb_next:
            await self._send(self.actor.frames.heartbeat())
            if self._hb_oldest is None:
                self._hb_oldest = now
            self._hb_next = now + self.actor.settings.heartbeat_interval

    def _deadline(self) -> float:
        deadline = min(self._hb_next, self._phase_deadline, self.stop_deadline)
        if self._hb_oldest is not None:
            deadline = min(deadline, self._hb_oldest + self.actor.settings.heartbeat_timeout)
        task = self.in_flight
        if task is not None:
            deadline = min(deadline, task._deadline)
        return deadline

    async def _next_frame(self) -> ServerFields | None:
        """The next valid frame during the connect sequence, or None once the phase
        deadline passed. Sends heartbeats when due; aborts the Session on a heartbeat
        timeout, a closed connection or a binary frame; drops bad text frames."""
        transport = self.transport
        assert transport is not None
        while True:
            await self._heartbeat_if_due()
            with trio.move_on_at(self._deadline()) as scope:
                try:
                    raw = await transport.receive()
                except TransportClosed as exc:
                    await self._closed(exc)
            now = trio.current_time()
            if scope.cancelled_caught:
                await self._check_timeouts(now)
                if now >= self._phase_deadline:
                    return None
                continue
            frame = self._decode(raw, now)
            if frame is not None:
                return frame
            if self.scope.cancel_called:
                await trio.lowlevel.checkpoint()  # raises Cancelled: the frame failed it

    async def _closed(self, exc: TransportClosed) -> NoReturn:
        reason = (
            FailureReason.PROTOCOL_ERROR
            if exc.code == CLOSE_MESSAGE_TOO_BIG
            else FailureReason.CONNECTION_CLOSED
        )
        await self._abort(reason, str(exc))

    async def _check_timeouts(self, now: float) -> None:
        settings = self.actor.settings
        if self._hb_oldest is not None and now >= self._hb_oldest + settings.heartbeat_timeout:
            await self._abort(
                FailureReason.HEARTBEAT_TIMEOUT,
                f"no frame within {settings.heartbeat_timeout:g} s of a heartbeat",
            )
        task = self.in_flight
        if task is not None and now >= task._deadline:
            self.in_flight = None
            self.fail(FailureReason.TASK_TIMEOUT, f"task {task.task_id!r} timed out")
            error = TaskTimeout(
                f"task {task.task_id!r} got no TASK_END within {task.timeout:g} s",
                task_id=task.task_id,
                device_id=self.actor.device_id,
            )
            self.actor.task_ended(task, error)
            await self._abort(FailureReason.TASK_TIMEOUT, f"task {task.task_id!r} timed out")

    def _route(self, frame: ServerFields, now: float) -> None:
        """Handle one frame outside the connect sequence. Never raises, never waits."""
        actor = self.actor
        kind, status, fields = frame
        sid = fields.get("session_id")
        task = self.in_flight
        if kind is _HEARTBEAT:
            if sid is None:
                return  # a heartbeat answer: liveness only
            if task is not None and sid == self._in_flight_sid:
                task._mark_accepted(now)
                return
            actor.foreign_session(sid, "acknowledgement")
        elif kind is _TASK_END:
            if task is not None and sid == self._in_flight_sid:
                self.in_flight = None
                actor.task_ended(
                    task,
                    ExecutionResult(
                        task.task_id,
                        actor.device_id,
                        ResultStatus.FAILED
                        if status in _FAILED_STATUSES
                        else ResultStatus.COMPLETED,
                        fields.get("result"),
                        fields.get("error"),
                        task.timings(now),
                    ),
                    now,
                )
                return
            actor.foreign_session(sid, "task_end")
        elif kind is _ERROR:
            if task is not None and task._accepted_at is None:
                # A refused task gets an error frame without its session_id (AIP.md, flow 4).
                self.in_flight = None
                text = fields.get("error") or "task refused by the server"
                actor.task_ended(
                    task,
                    TaskRejected(
                        f"task {task.task_id!r} refused by device {actor.device_id!r}: {text}",
                        task_id=task.task_id,
                        device_id=actor.device_id,
                        server_error=text,
                    ),
                )
                return
            actor.bad_frame("error_frame", fields.get("error") or "error frame without text")
        elif kind is _INFO:
            actor.bad_frame("unexpected", "device_info_response nobody waits for")
        else:
            actor.bad_frame("unexpected", f"{kind} frame sent to a constellation client")

    # -------------------------------------------------------------------------- sending

    async def send_task(self, task: TaskHandle, *, by_caller: bool = False) -> None:
        """Put ``task`` on the device. Called by the loop, or directly by the submitting
        task (``by_caller``) when the device is idle and its queue empty (no hand-off).

        A send must never be torn by its caller's cancellation: that would corrupt the
        connection for every later task. Over a frame-safe transport a cancelled send sent
        nothing, so the task simply did not start (`_not_sent`) and no cancel scope is
        needed; otherwise the send is shielded and bounded here."""
        actor = self.actor
        now = trio.current_time()
        before = task._sent_at, task._accepted_at
        self.in_flight = task
        self._in_flight_sid = session_id_for(actor.settings.task_name, task.task_id)
        task._mark_sent(now, self)
        actor.task_started(task)
        recv_scope = self._recv_scope
        if recv_scope is not None and task._deadline < recv_scope.deadline:
            recv_scope.deadline = task._deadline
        frame = actor.frames.task(task.task_id, task.description, task.data_json)
        if not self._frame_safe:
            await self._send(frame, shield=True)
            return
        try:
            await self._send(frame)
        except trio.Cancelled:
            self._not_sent(task, before, by_caller)
            raise

    def _not_sent(
        self, task: TaskHandle, before: tuple[float | None, float | None], by_caller: bool
    ) -> None:
        """A frame-safe send of ``task`` was cancelled: nothing of it reached the device.

        Sent by its caller, who is being cancelled: the submission is undone (or, if the
        Session already ended and requeued the task, the task is withdrawn, since nobody
        will wait for it). Sent by the loop: its scope was cancelled (the Session is ending,
        a deadline came due, or a stop woke it) and the task goes back to the head of the
        queue, whatever its delivery; unless the device no longer takes tasks (a disconnect
        or removal, which has already ended the queued ones): then it ends the same way."""
        actor = self.actor
        if self.in_flight is task:
            self.in_flight = None
            task._unsend(*before)
            if by_caller or actor.accepting:
                actor.task_not_started(task, requeue=not by_caller)
            else:
                actor.task_cancelled(task, "the device was disconnected before it was sent")
        elif by_caller and not task.done:
            actor.withdraw(task, "its caller was cancelled before it was sent")

    async def _send(self, frame: str, *, shield: bool = False) -> None:
        transport = self.transport
        assert transport is not None
        if self._frame_safe:
            try:
                await transport.send(frame)
            except TransportClosed as exc:
                self.fail(FailureReason.CONNECTION_CLOSED, str(exc))
            return
        limit = self.actor.settings.send_timeout
        try:
            with trio.CancelScope(shield=shield, deadline=trio.current_time() + limit) as scope:
                await transport.send(frame)
        except TransportClosed as exc:
            self.fail(FailureReason.CONNECTION_CLOSED, str(exc))
            return
        if scope.cancelled_caught:
            self.fail(FailureReason.CONNECTION_CLOSED, f"send stalled for {limit:g} s")

    # --------------------------------------------------------------------------- ending

    def settle_in_flight(self) -> None:
        """After the Session ended: give the task that was on the device its outcome, or put
        it back at the head of the queue (at-least-once delivery)."""
        task = self.in_flight
        self.in_flight = None
        if task is None or task.done:
            return
        actor = self.actor
        if self.failure is None:
            actor.task_cancelled(task, "device disconnected before the task ended")
            return
        reason, detail = self.failure
        if task.delivery is Delivery.AT_LEAST_ONCE and not task.abandoned:
            task._requeue()
            actor.requeue(task)
            return
        actor.task_ended(
            task,
            DeviceDisconnected(
                f"device {actor.device_id!r} lost its connection during task {task.task_id!r}: "
                f"{reason}: {detail}",
                task_id=task.task_id,
                device_id=actor.device_id,
                reason=str(reason),
            ),
        )


__all__ = ["Session"]
