"""Why things ended: the enums that errors and events carry instead of free strings.

Ground floor: this module imports nothing of galaxy_actors, so the policy, the codec, the
errors and the events can all use it. Each enum is a `StrEnum` whose values are the strings
the JSON log, the ``watch`` stream and the metrics labels have always shown, so a
subscriber can compare with either the member or its text.
"""

from __future__ import annotations

import enum

__all__ = ["BadFrameKind", "FailureReason", "TaskOutcome"]


class FailureReason(enum.StrEnum):
    """Why a connection (a Session) ended against our will.

    The connection attempt's own reasons, from the earliest to the latest stage:
    ``connect_failed`` (no TCP connection, or no opening handshake within the connect
    timeout), ``tls_failed`` (the TLS handshake failed: certificate verification, or the
    server refused ours), ``handshake_failed`` (the server accepted the TCP connection and
    then closed or reset it before answering the WebSocket handshake: usually not a
    WebSocket server on that port, or ws:// to a TLS port), ``unauthorized`` (the server
    refused the handshake with HTTP 401 or 403: a wrong or missing token).
    """

    CONNECT_FAILED = "connect_failed"
    TLS_FAILED = "tls_failed"
    HANDSHAKE_FAILED = "handshake_failed"
    UNAUTHORIZED = "unauthorized"
    REGISTRATION_REJECTED = "registration_rejected"
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    CONNECTION_CLOSED = "connection_closed"
    PROTOCOL_ERROR = "protocol_error"
    TASK_TIMEOUT = "task_timeout"
    # The server is up but the device agent is not attached to it ("Target device 'X' is
    # not connected", at registration or for a task): queued tasks wait for it.
    DEVICE_OFFLINE = "device_offline"


class BadFrameKind(enum.StrEnum):
    """How a frame from a device's server was bad. Such a frame is counted, logged and
    dropped; the connection carries on (except a binary frame, which fails it)."""

    #: Not valid AIP: not UTF-8 text, not a JSON object, or a field of the wrong type.
    PROTOCOL_ERROR = "protocol_error"
    #: Valid AIP, but not a frame a constellation client expects at this point.
    UNEXPECTED = "unexpected"
    #: An ``error`` frame tied to nothing we sent.
    ERROR_FRAME = "error_frame"
    #: A task frame for no task in flight on this connection.
    UNKNOWN_TASK = "unknown_task"
    #: A task frame for a task of another device: a security event.
    CROSS_DEVICE = "cross_device"


class TaskOutcome(enum.StrEnum):
    """How a task ended, as its `TaskEnded` event says.

    ``completed`` and ``failed`` are the device's own verdict (the `ResultStatus` of the
    `ExecutionResult`); every other member names the `TaskError` subclass the task's
    ``result()`` raises."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "TaskCancelled"
    TIMED_OUT = "TaskTimeout"
    REJECTED = "TaskRejected"
    DISCONNECTED = "DeviceDisconnected"
    DEVICE_UNAVAILABLE = "DeviceUnavailable"
    QUEUE_FULL = "QueueFull"
    OUTCOME_UNKNOWN = "OutcomeUnknown"
    JOURNAL_UNAVAILABLE = "JournalUnavailable"
    #: A `TaskError` of no more specific class (e.g. read from a later version's journal).
    ERROR = "TaskError"

    @classmethod
    def of_error(cls, error: BaseException) -> TaskOutcome:
        """The member naming ``error``'s class, or its nearest base that has one."""
        for klass in type(error).__mro__:
            try:
                return cls(klass.__name__)
            except ValueError:
                continue
        return cls.ERROR
