"""Every error galaxy_actors raises, with one common base.

Task outcomes that are not results are exceptions here too, so that `await handle.result()`
either returns an `ExecutionResult` or raises one of the `TaskError` subclasses. Where a
reference user would have caught a builtin (``TimeoutError``, ``ConnectionError``,
``KeyError``, ``ValueError``), the error also derives from it, so ported code keeps working.
"""

from __future__ import annotations

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


class ProtocolError(GalaxyActorsError):
    """A frame that is not valid AIP. ``raw`` holds the text exactly as received."""

    def __init__(self, message: str, raw: str | bytes) -> None:
        super().__init__(message)
        self.raw = raw


class SupervisorClosed(GalaxyActorsError, RuntimeError):
    """The supervisor is shutting down or closed and accepts no more work."""


# --------------------------------------------------------------------------- task outcomes


class TaskError(GalaxyActorsError):
    """A task ended without a result from the device. Carries the task and device ids."""

    def __init__(self, message: str, *, task_id: str, device_id: str | None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.device_id = device_id


class UnknownDevice(TaskError, KeyError):
    """No device with this id is registered."""

    def __init__(self, device_id: str, *, task_id: str = "") -> None:
        super().__init__(
            f"no device {device_id!r} is registered", task_id=task_id, device_id=device_id
        )

    def __str__(self) -> str:
        # KeyError's __str__ would show the message in quotes.
        return str(self.args[0])


class DeviceUnavailable(TaskError):
    """The device cannot take tasks: disconnected, gave up reconnecting, being removed,
    or no registered device has the required capabilities."""


class QueueFull(TaskError):
    """The device's queue already holds its ``max_queue`` tasks, and the submission was made
    with ``block=False`` (a blocking submit waits for room instead). The task does not
    exist."""


class DeviceDisconnected(TaskError, ConnectionError):
    """The connection died while the task was on the device (at-most-once delivery)."""

    def __init__(self, message: str, *, task_id: str, device_id: str | None, reason: str) -> None:
        super().__init__(message, task_id=task_id, device_id=device_id)
        self.reason = reason


class TaskTimeout(TaskError, TimeoutError):
    """No TASK_END arrived within the task's timeout. The device reconnects."""


class TaskCancelled(TaskError):
    """The task was withdrawn before it ran: cancelled by its caller, by a disconnect,
    or by shutdown."""


class TaskRejected(TaskError):
    """The agent server refused the task with an ``error`` frame; ``server_error`` holds
    its text."""

    def __init__(
        self, message: str, *, task_id: str, device_id: str | None, server_error: str
    ) -> None:
        super().__init__(message, task_id=task_id, device_id=device_id)
        self.server_error = server_error


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
