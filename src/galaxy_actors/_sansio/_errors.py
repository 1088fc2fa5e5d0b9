"""Every error galaxy_actors raises, with one common base.

The shape of the hierarchy follows the question a caller asks when catching::

    GalaxyActorsError
    ├── ConfigurationError (ValueError)     a wrong argument or option: fix the call
    │   └── InvalidServerURL
    ├── DuplicateDevice (ValueError)        refused at the call site: the id is taken
    ├── DuplicateTaskId (ValueError)
    ├── UnknownDevice (KeyError)            no such device: a lookup, not a task outcome
    ├── UnknownTask (KeyError)
    ├── SupervisorClosed (RuntimeError)     no more work accepted
    ├── ProtocolError                       a frame that is not valid AIP (the codec)
    ├── TransportError                      what a `Connector`/`Transport` raises
    │   ├── ConnectError                    the connection could not be opened
    │   └── TransportClosed                 the open connection is closed
    ├── TaskError                           a task ended without a result from the device
    │   ├── DeviceUnavailable, QueueFull, TaskCancelled, TaskRejected, OutcomeUnknown
    │   ├── DeviceDisconnected (ConnectionError)
    │   ├── TaskTimeout (TimeoutError)
    │   └── JournalUnavailable (OSError)
    ├── JournalError                        the journal file cannot be used
    │   └── JournalCorrupt, JournalInUse, JournalVersion
    ├── StaleAddressFile (ValueError)       the supervisor process's address file:
    ├── AddressFileInUse (OSError)          no such process, or another one's
    └── InvalidTransition, LocalProtocolError (RuntimeError)   bugs in galaxy_actors

`TaskError` is exactly what ``await handle.result()`` raises: every subclass carries the
task and device ids, and the `TaskEnded` event names it. `UnknownDevice` stands outside it on
purpose: a wrong device id is a mistake of the call (like a ``KeyError`` from a dict), and an
``except TaskError`` written to handle tasks that did not run must not hide it.

Where a reference user would have caught a builtin (``TimeoutError``, ``ConnectionError``,
``KeyError``, ``ValueError``), the error also derives from it, so ported code keeps working.
A message that is built in more than one place has one named constructor here (such as
`TaskCancelled.withdrawn`), so it reads the same wherever it comes from.
"""

from __future__ import annotations

from pathlib import Path

from ._reasons import FailureReason
from ._redact import mask_url, redact


class GalaxyActorsError(Exception):
    """Base class of every error raised by galaxy_actors."""


class ConfigurationError(GalaxyActorsError, ValueError):
    """A wrong argument at a call site: negative delay, invalid URL, bad option value."""


class InvalidServerURL(ConfigurationError):
    """A device's ``server_url`` is not a ``ws://`` or ``wss://`` URL with a host.

    The message shows the URL masked (``?token=***``): it ends up in logs and replies.
    ``url`` keeps it as given, for the caller who owns it."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(f"invalid server_url {mask_url(url)!r}: {redact(why)}")
        self.url = url


class DuplicateDevice(GalaxyActorsError, ValueError):
    """A device with this id is already registered."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"device {device_id!r} is already registered")
        self.device_id = device_id


class DuplicateTaskId(GalaxyActorsError, ValueError):
    """A task with this id is still live in this supervisor.

    The AIP ``session_id`` is built from the task id, so two live tasks with one id would
    collide on a real agent server; the second is refused at the call site.
    """

    def __init__(self, task_id: str, why: str = "is already live in this supervisor") -> None:
        super().__init__(f"task id {task_id!r} {why}")
        self.task_id = task_id


class UnknownTask(GalaxyActorsError, KeyError):
    """No live task has this id: it never existed, or it has its outcome already."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"no live task {task_id!r}")
        self.task_id = task_id

    def __str__(self) -> str:
        # KeyError's __str__ would show the message in quotes.
        return str(self.args[0])


class UnknownDevice(GalaxyActorsError, KeyError):
    """No device with this id is registered. Raised at the call site (``submit``,
    ``connect``, ``remove_device``, ...), never as a task's outcome."""

    def __init__(self, device_id: str) -> None:
        super().__init__(f"no device {device_id!r} is registered")
        self.device_id = device_id

    def __str__(self) -> str:
        # KeyError's __str__ would show the message in quotes.
        return str(self.args[0])


class ProtocolError(GalaxyActorsError):
    """A frame that is not valid AIP. ``raw`` holds the text exactly as received."""

    def __init__(self, message: str, raw: str | bytes) -> None:
        super().__init__(message)
        self.raw = raw


class SupervisorClosed(GalaxyActorsError, RuntimeError):
    """The supervisor is shutting down or closed and accepts no more work."""


# --------------------------------------------------------------------------- transports


class TransportError(GalaxyActorsError):
    """A connection to a device's server failed: what a `Connector` or `Transport`
    raises, and what a custom one must raise for the session to handle it."""


class ConnectError(TransportError):
    """The connection could not be opened: refused, timed out, or the handshake rejected
    (``status_code`` then holds the HTTP status, e.g. 403 without a valid token).

    ``reason`` is the `FailureReason` a Session reports: by default ``unauthorized`` for
    HTTP 401 and 403, else ``connect_failed``; a connector that knows better says so
    (``tls_failed``, ``handshake_failed``)."""

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        reason: FailureReason | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        if reason is None:
            unauthorized = status_code in _UNAUTHORIZED
            reason = FailureReason.UNAUTHORIZED if unauthorized else FailureReason.CONNECT_FAILED
        self.reason = reason

    @classmethod
    def rejected(cls, status_code: int) -> ConnectError:
        """The server answered the opening handshake with HTTP ``status_code``."""
        return cls(f"handshake rejected: HTTP {status_code}", status_code)


_UNAUTHORIZED = frozenset({401, 403})


class TransportClosed(TransportError):
    """The connection is closed. ``code`` is the WebSocket close code when one is known.

    ``by_peer`` says who closed with that code: True, the peer (its close frame); False, our
    side (our own close, or trio-websocket closing with 1009 because a frame from the peer
    was over our ``max_frame_size``); None, nobody sent a close frame (the socket died:
    1006) or the transport cannot tell."""

    def __init__(
        self, message: str, code: int | None = None, *, by_peer: bool | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.by_peer = by_peer


# --------------------------------------------------------------------------- task outcomes


class TaskError(GalaxyActorsError):
    """A task ended without a result from the device. Carries the task and device ids."""

    def __init__(self, message: str, *, task_id: str, device_id: str | None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.device_id = device_id


class DeviceUnavailable(TaskError):
    """The device cannot take tasks: disconnected, gave up reconnecting, being removed,
    or no registered device has the required capabilities."""


class QueueFull(TaskError):
    """The device's queue already holds its ``max_queue`` tasks, and the submission was made
    with ``block=False`` (a blocking submit waits for room instead). The task does not
    exist."""


class DeviceDisconnected(TaskError, ConnectionError):
    """The connection died while the task was on the device (at-most-once delivery).
    ``reason`` is the connection's `FailureReason` (as text when read from a journal)."""

    def __init__(self, message: str, *, task_id: str, device_id: str | None, reason: str) -> None:
        super().__init__(message, task_id=task_id, device_id=device_id)
        self.reason = reason

    @classmethod
    def during(
        cls, task_id: str, device_id: str, reason: FailureReason, detail: str
    ) -> DeviceDisconnected:
        """The connection of ``device_id`` died while ``task_id`` ran on it."""
        return cls(
            f"device {device_id!r} lost its connection during task {task_id!r}: {reason}: {detail}",
            task_id=task_id,
            device_id=device_id,
            reason=str(reason),
        )


class TaskTimeout(TaskError, TimeoutError):
    """No TASK_END arrived within the task's timeout. The device reconnects."""

    @classmethod
    def no_end(cls, task_id: str, device_id: str, timeout: float) -> TaskTimeout:
        """``task_id`` got no TASK_END within ``timeout`` seconds."""
        return cls(
            f"task {task_id!r} got no TASK_END within {timeout:g} s",
            task_id=task_id,
            device_id=device_id,
        )


class TaskCancelled(TaskError):
    """The task was withdrawn before it ran: cancelled by its caller, by a disconnect,
    or by shutdown."""

    @classmethod
    def withdrawn(cls, task_id: str, device_id: str | None, why: str) -> TaskCancelled:
        """``task_id`` was withdrawn before it ran, for the reason ``why``."""
        return cls(f"task {task_id!r} cancelled: {why}", task_id=task_id, device_id=device_id)


class TaskRejected(TaskError):
    """The agent server refused the task with an ``error`` frame; ``server_error`` holds
    its text."""

    def __init__(
        self, message: str, *, task_id: str, device_id: str | None, server_error: str
    ) -> None:
        super().__init__(message, task_id=task_id, device_id=device_id)
        self.server_error = server_error

    @classmethod
    def refused(cls, task_id: str, device_id: str, server_error: str) -> TaskRejected:
        """The server of ``device_id`` refused ``task_id`` with ``server_error``."""
        return cls(
            f"task {task_id!r} refused by device {device_id!r}: {server_error}",
            task_id=task_id,
            device_id=device_id,
            server_error=server_error,
        )


class OutcomeUnknown(TaskError):
    """The task was sent to its device, and the supervisor stopped (killed, crashed) before
    its TASK_END was recorded. It may or may not have run: an at-most-once task is never
    sent again, so this is all that can be said. Given by the journal at recovery."""


class JournalUnavailable(TaskError, OSError):
    """The task journal could not write (disk full, read-only, I/O error). Raised by
    ``submit`` (the task was not accepted), or the outcome of an at-most-once task whose
    sending could not be recorded (it was not sent)."""


# --------------------------------------------------------------------------- the journal


class JournalError(GalaxyActorsError):
    """The journal file cannot be used. ``path`` names it; the file is left as it was."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"journal {path}: {problem}")
        self.path = path
        self.problem = problem


class JournalCorrupt(JournalError):
    """The journal file is not a readable journal: corrupt, truncated, or another file."""


class JournalInUse(JournalError):
    """Another live supervisor holds the journal: two processes must never serve one."""


class JournalVersion(JournalError):
    """The journal was written by a newer galaxy_actors (its schema version is higher)."""


# --------------------------------------------------------------------------- the process


class StaleAddressFile(GalaxyActorsError, ValueError):
    """The address file's process is not running: the supervisor that wrote it is gone."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"stale address file {path} (pid {pid} is not running)")
        self.path = path
        self.pid = pid


class AddressFileInUse(GalaxyActorsError, OSError):
    """The address file belongs to another supervisor that is still running."""

    def __init__(self, path: Path, pid: int) -> None:
        super().__init__(f"address file {path} is in use by a running supervisor (pid {pid})")
        self.path = path
        self.pid = pid


# --------------------------------------------------------------------------- bugs


class InvalidTransition(GalaxyActorsError, RuntimeError):
    """An internal bug: a status change the transition table does not allow."""

    @classmethod
    def of(cls, device_id: str, old: str, new: str) -> InvalidTransition:
        """``device_id`` was asked to go from status ``old`` to ``new``."""
        return cls(f"device {device_id!r}: {old} -> {new} is not allowed")


class LocalProtocolError(GalaxyActorsError, RuntimeError):
    """The engine's owner asked for something the protocol does not allow now (a bug in
    the caller, as h11's LocalProtocolError)."""


class ClusterUnavailable(GalaxyActorsError):
    """Redis/Valkey could not be reached (at start, or for a cluster client's call)."""
