"""The AIP connection engine: every protocol rule of one connection, with no I/O.

Rules of this file (h11's ``_state.py`` is the model):

- Everything that decides what a received frame means, when a connection is dead, which
  frame goes out next and when the next deadline falls lives here, and nowhere else.
- It does no I/O, reads no clock and imports no Trio: frames and the current time go in,
  events and frames to send come out. Tests drive it with plain values.
- It knows tasks by id only. The task handles, the queue and the statuses belong to the
  device actor, which consumes the events this engine returns.

Theory of operation. One `AIPConnection` lives for one WebSocket connection, already open.
`start` returns the REGISTER frame; from then on the owner loop

- passes every received frame to `receive`, which returns at most one `Event`;
- sends whatever `outgoing` returns (the first heartbeat right after registration, the
  device-info request, then a heartbeat every ``heartbeat_interval``);
- sends a task with `send_task` when `can_send_task` says the connection is free;
- waits no longer than `next_deadline`, and then calls `check_deadlines`;
- reports the transport's close with `connection_lost`.

The phases are one table of allowed transitions, `PHASE_TRANSITIONS`, consulted on every
change. Once CLOSED, the engine ignores further input: the first reason a connection died is
the one reported, exactly once, as a `ConnectionDead` event.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, Final

from ._aip import FrameBuilder, ServerMessageType, WireStatus, device_info_from, parse_server
from ._aip import server_message as _server_message
from ._aip import session_id_for as _session_id_for
from ._engine_events import (
    BadFrameKind,
    BadInput,
    ConnectionDead,
    EngineEvent,
    InfoReceived,
    Registered,
    TaskAccepted,
    TaskEnded,
    TaskRefused,
)
from ._errors import LocalProtocolError, ProtocolError
from ._policy import FailureReason
from ._redact import bounded

__all__ = [
    "PHASE_TRANSITIONS",
    "AIPConnection",
    "BadFrameKind",
    "BadInput",
    "ConnectionDead",
    "EngineEvent",
    "InfoReceived",
    "LocalProtocolError",
    "Phase",
    "Registered",
    "TaskAccepted",
    "TaskEnded",
    "TaskRefused",
    "excerpt",
]


class Phase(enum.StrEnum):
    """Where one connection is in the AIP exchange (docs/protocol.md, flows 1-4)."""

    REGISTERING = "registering"  # REGISTER sent, waiting for its confirmation
    FETCHING_INFO = "fetching_info"  # registered; DEVICE_INFO requested, not yet answered
    SERVING = "serving"  # heartbeats and tasks
    CLOSED = "closed"  # dead or closed on purpose: no more input is interpreted


_P = Phase
PHASE_TRANSITIONS: Final[dict[Phase, frozenset[Phase]]] = {
    _P.REGISTERING: frozenset({_P.FETCHING_INFO, _P.CLOSED}),
    _P.FETCHING_INFO: frozenset({_P.SERVING, _P.CLOSED}),
    _P.SERVING: frozenset({_P.CLOSED}),
    _P.CLOSED: frozenset(),
}


# Server-controlled text is bounded and escaped (`bounded`) before it reaches any event:
# a hostile server can neither flood a log line nor forge one with a newline.
EXCERPT_LIMIT: Final = 200
# A task's own error text reaches its caller, who may need more of it.
TASK_ERROR_LIMIT: Final = 4096


def excerpt(text: object, limit: int = EXCERPT_LIMIT) -> str:
    """Any server-sent value as bounded, escaped text."""
    return bounded(text if isinstance(text, str) else repr(text), limit)


_HEARTBEAT = ServerMessageType.HEARTBEAT
_TASK_END = ServerMessageType.TASK_END
_ERROR = ServerMessageType.ERROR
_INFO = ServerMessageType.DEVICE_INFO_RESPONSE
_OK = WireStatus.OK
_FAILED_STATUSES: Final = frozenset({WireStatus.FAILED, WireStatus.ERROR})
_CLOSE_MESSAGE_TOO_BIG: Final = 1009
# Protocol error, invalid frame payload data (RFC 6455, 7.4.1).
_PROTOCOL_CLOSE_CODES: Final = frozenset({1002, 1007})


class AIPConnection:
    """The protocol state of one connection. See the module's theory of operation.

    ``session_owner`` maps a ``session_id`` to the device whose task owns it, if any: a
    frame about another device's task is reported as `BadFrameKind.CROSS_DEVICE`.
    """

    __slots__ = (
        "_frames",
        "_hb_interval",
        "_hb_next",
        "_hb_oldest",
        "_hb_timeout",
        "_info_request_id",
        "_info_timeout",
        "_offline_text",
        "_phase_deadline",
        "_reg_timeout",
        "_session_owner",
        "_sid",
        "_task_deadline",
        "_task_name",
        "accepted",
        "dead",
        "device_id",
        "frames_received",
        "in_flight",
        "last_frame_at",
        "phase",
    )

    def __init__(
        self,
        frames: FrameBuilder,
        *,
        task_name: str,
        device_id: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        registration_timeout: float,
        device_info_timeout: float,
        session_owner: Callable[[str], str | None] | None = None,
    ) -> None:
        self._frames = frames
        self._task_name = task_name
        self.device_id = device_id
        self._hb_interval = heartbeat_interval
        self._hb_timeout = heartbeat_timeout
        self._reg_timeout = registration_timeout
        self._info_timeout = device_info_timeout
        self._session_owner = session_owner
        self._offline_text = f"Target device '{device_id}' is not connected"
        self.phase = Phase.REGISTERING
        self._phase_deadline = math.inf
        self._hb_next = math.inf
        # The send time of the oldest heartbeat no frame has answered yet (docs/protocol.md: answers
        # cannot be correlated, so any frame answers them all).
        self._hb_oldest: float | None = None
        self._info_request_id: str | None = None
        self.in_flight: str | None = None
        self._sid = ""
        self._task_deadline = math.inf
        self.accepted = False
        self.frames_received = 0
        self.last_frame_at: float | None = None
        self.dead: ConnectionDead | None = None

    def __repr__(self) -> str:
        return f"<AIPConnection {self.device_id!r} {self.phase} in_flight={self.in_flight!r}>"

    # ------------------------------------------------------------------------ phases

    def _enter(self, phase: Phase) -> None:
        if phase not in PHASE_TRANSITIONS[self.phase]:
            raise LocalProtocolError(f"AIP phase {self.phase} -> {phase} is not allowed")
        self.phase = phase

    def _die(
        self, reason: FailureReason, detail: str, now: float, refused_task: str | None = None
    ) -> ConnectionDead:
        dead = ConnectionDead(
            reason,
            detail,
            now,
            self.in_flight if reason is FailureReason.TASK_TIMEOUT else None,
            refused_task,
        )
        self._enter(Phase.CLOSED)
        self.dead = dead
        return dead

    @property
    def serving(self) -> bool:
        return self.phase is Phase.SERVING

    def can_send_task(self) -> bool:
        """True when a task may be sent now: serving, and no task on the device."""
        return self.phase is Phase.SERVING and self.in_flight is None

    # ------------------------------------------------------------------------ output

    def start(self, now: float) -> str:
        """The REGISTER frame, the first frame of the connection."""
        if self._phase_deadline != math.inf or self.phase is not Phase.REGISTERING:
            raise LocalProtocolError("start() is called once, on a new connection")
        self._phase_deadline = now + self._reg_timeout
        return self._frames.register()

    def outgoing(self, now: float) -> str | None:
        """The next protocol frame due at ``now`` (a heartbeat, the device-info request),
        or None. Call until None; tasks go out through `send_task`."""
        phase = self.phase
        if phase is Phase.CLOSED or phase is Phase.REGISTERING:
            return None
        if now >= self._hb_next:
            # The first heartbeat goes out right after registration (docs/protocol.md, flow 3).
            self._hb_next = now + self._hb_interval
            if self._hb_oldest is None:
                self._hb_oldest = now
            return self._frames.heartbeat()
        if phase is Phase.FETCHING_INFO and self._info_request_id is None:
            self._info_request_id = request_id = f"info-{self.device_id}-{now!r}"
            self._phase_deadline = now + self._info_timeout
            return self._frames.device_info_request(request_id)
        return None

    def send_task(
        self, task_id: str, description: str, data_json: str, timeout: float, now: float
    ) -> str:
        """The TASK frame for ``task_id``; from now on it is the task in flight, with its
        deadline ``now + timeout``."""
        if not self.can_send_task():
            raise LocalProtocolError(
                f"cannot send task {task_id!r}: phase {self.phase}, in flight {self.in_flight!r}"
            )
        self.in_flight = task_id
        self._sid = _session_id_for(self._task_name, task_id)
        self._task_deadline = now + timeout
        self.accepted = False
        return self._frames.task(task_id, description, data_json)

    def unsend_task(self, task_id: str) -> None:
        """The TASK frame for ``task_id`` was never written (its send was cancelled before
        any byte left): the connection is free again."""
        if self.in_flight == task_id:
            self._clear_task()

    def _clear_task(self) -> None:
        self.in_flight = None
        self._sid = ""
        self._task_deadline = math.inf
        self.accepted = False

    # ------------------------------------------------------------------------ time

    def next_deadline(self) -> float:
        """When `check_deadlines` (or `outgoing`) next has something to do."""
        if self.phase is Phase.CLOSED:
            return math.inf
        deadline = self._hb_next
        oldest = self._hb_oldest
        if oldest is not None:
            deadline = min(deadline, oldest + self._hb_timeout)
        return min(deadline, self._phase_deadline, self._task_deadline)

    def check_deadlines(self, now: float) -> EngineEvent | None:
        """What the passing of time at ``now`` means: a dead connection, a task timeout,
        a registration with no answer, a device-info request with none (the connection
        carries on without info), or nothing."""
        if self.phase is Phase.CLOSED:
            return None
        oldest = self._hb_oldest
        if oldest is not None and now >= oldest + self._hb_timeout:
            return self._die(
                FailureReason.HEARTBEAT_TIMEOUT,
                f"no frame within {self._hb_timeout:g} s of a heartbeat",
                now,
            )
        if now >= self._task_deadline:
            return self._die(FailureReason.TASK_TIMEOUT, f"task {self.in_flight!r} timed out", now)
        if now >= self._phase_deadline:
            if self.phase is Phase.REGISTERING:
                return self._die(
                    FailureReason.CONNECT_FAILED,
                    f"no answer to REGISTER within {self._reg_timeout:g} s",
                    now,
                )
            return self._info_done(None, f"no device info within {self._info_timeout:g} s", now)
        return None

    # ------------------------------------------------------------------------ input

    def connection_lost(
        self, code: int | None, detail: str, now: float, *, by_peer: bool | None = None
    ) -> ConnectionDead:
        """The transport closed with close ``code``, sent by the peer (``by_peer``), by our
        side (False), or unknown (None). Returns the connection's end (the first one, if the
        engine had already ended it).

        1002 and 1007 (a frame that breaks the protocol, or text that is not UTF-8) are
        protocol errors whoever found them. 1009 is one only when it is our own limit that
        closed: an inbound frame too big for us. A peer's 1009 says *our* frame was too big
        for it: a closed connection, like every other code."""
        if code in _PROTOCOL_CLOSE_CODES or (code == _CLOSE_MESSAGE_TOO_BIG and not by_peer):
            reason = FailureReason.PROTOCOL_ERROR
        else:
            reason = FailureReason.CONNECTION_CLOSED
        return self.fail(reason, detail, now)

    def fail(self, reason: FailureReason, detail: str, now: float) -> ConnectionDead:
        """End the connection for a reason found outside the protocol (the connect failed,
        a send stalled). Returns the connection's end: the first one, if it had ended."""
        if self.dead is not None:
            return self.dead
        if self.phase is Phase.CLOSED:
            # Closed on purpose first: this ending is returned, not recorded (a Session
            # reports nothing after its close on purpose).
            return ConnectionDead(reason, detail, now)
        return self._die(reason, detail, now)

    def close(self) -> None:
        """Closed on purpose (a disconnect): no event; later input is ignored."""
        if self.phase is not Phase.CLOSED:
            self._enter(Phase.CLOSED)

    def receive(self, raw: str | bytes, now: float) -> EngineEvent | None:
        """One frame received at ``now``. Any frame proves the connection alive."""
        phase = self.phase
        if phase is Phase.CLOSED:
            return None
        self.frames_received += 1
        self.last_frame_at = now
        self._hb_oldest = None
        try:
            kind, status, fields = parse_server(raw)
        except ProtocolError as exc:
            if isinstance(raw, bytes):
                # docs/protocol.md: every frame is text; a binary one means the peer is broken.
                return self._die(FailureReason.PROTOCOL_ERROR, excerpt(str(exc)), now)
            return BadInput(
                BadFrameKind.PROTOCOL_ERROR, f"{excerpt(str(exc))}: {excerpt(raw)}", now
            )
        if phase is Phase.SERVING:
            return self._route(kind, status, fields, now)
        if phase is Phase.REGISTERING:
            if kind is _HEARTBEAT and status is _OK:
                self._enter(Phase.FETCHING_INFO)
                self._phase_deadline = math.inf
                self._hb_next = now
                return Registered(now)
            if kind is _ERROR:
                # The server closes the socket right after this frame: the reason must
                # read as a rejection, not as a close (docs/protocol.md, flow 1).
                text = fields.get("error") or "registration rejected"
                reason = (
                    FailureReason.DEVICE_OFFLINE
                    if self._says_offline(text)
                    else FailureReason.REGISTRATION_REJECTED
                )
                return self._die(reason, excerpt(text), now)
            return BadInput(BadFrameKind.UNEXPECTED, f"{kind} frame before registration", now)
        # FETCHING_INFO
        if kind is _INFO and fields.get("response_id") == self._info_request_id:
            info = device_info_from(_server_message((kind, status, fields)))
            return self._info_done(info, None if info else "the server has no device info", now)
        if kind is _ERROR and self._info_request_id is not None:
            # Authorization failures come back as an error frame without the request id.
            text = excerpt(fields.get("error") or "error frame without text")
            return self._info_done(None, f"device info refused: {text}", now)
        return self._route(kind, status, fields, now)

    def _info_done(self, info: dict[str, Any] | None, note: str | None, now: float) -> InfoReceived:
        self._enter(Phase.SERVING)
        self._phase_deadline = math.inf
        return InfoReceived(info, note, now)

    def _route(
        self, kind: ServerMessageType, status: WireStatus, fields: dict[str, Any], now: float
    ) -> EngineEvent | None:
        """A frame while registered. The isolation rule: task frames are matched against
        the task in flight on this connection only."""
        sid = fields.get("session_id")
        task_id = self.in_flight
        if kind is _HEARTBEAT:
            if sid is None:
                return None  # a heartbeat answer: liveness only
            if task_id is not None and sid == self._sid:
                if self.accepted:
                    return None  # a repeated acknowledgement changes nothing
                self.accepted = True
                return TaskAccepted(task_id, now)
            return self._foreign(sid, "acknowledgement", now)
        if kind is _TASK_END:
            if task_id is not None and sid == self._sid:
                self._clear_task()
                error = fields.get("error")
                return TaskEnded(
                    task_id,
                    status in _FAILED_STATUSES,
                    fields.get("result"),
                    None if error is None else excerpt(error, TASK_ERROR_LIMIT),
                    now,
                )
            return self._foreign(sid, "task_end", now)
        if kind is _ERROR:
            text = excerpt(fields.get("error") or "")
            if task_id is not None and not self.accepted:
                # A refused task gets an error frame without its session_id
                # (docs/protocol.md, flow 4).
                self._clear_task()
                if self._says_offline(fields.get("error")):
                    # The device agent left the server, which stays up and would refuse
                    # every queued task in turn: the task never ran and waits for the
                    # device instead; the connection ends, and registering again is
                    # refused until the device is back.
                    return self._die(FailureReason.DEVICE_OFFLINE, text, now, task_id)
                return TaskRefused(task_id, text or "task refused by the server", now)
            return BadInput(BadFrameKind.ERROR_FRAME, text or "error frame without text", now)
        if kind is _INFO:
            return BadInput(BadFrameKind.UNEXPECTED, "device_info_response nobody waits for", now)
        return BadInput(
            BadFrameKind.UNEXPECTED, f"{kind} frame sent to a constellation client", now
        )

    def _says_offline(self, text: object) -> bool:
        """The real server's words for "the device agent is not attached to me"."""
        return text == self._offline_text

    def _foreign(self, sid: str | None, what: str, now: float) -> BadInput:
        if sid is None:
            return BadInput(BadFrameKind.UNKNOWN_TASK, f"{what} without a session_id", now)
        shown = excerpt(sid, 120)
        owner = None if self._session_owner is None else self._session_owner(sid)
        if owner is not None and owner != self.device_id:
            # The reference's "cross-device task-result injection": never accepted.
            return BadInput(
                BadFrameKind.CROSS_DEVICE,
                f"security: {what} for session '{shown}' of device {owner!r} arrived on "
                f"device {self.device_id!r}'s connection; ignored",
                now,
            )
        return BadInput(BadFrameKind.UNKNOWN_TASK, f"{what} for unknown session '{shown}'", now)
