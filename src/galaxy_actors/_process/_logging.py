"""Logging for the supervisor process: the device id on every record, text or JSON lines.

The library logs with ``extra={"device_id": ...}`` wherever a record is about one device;
`setup_logging` makes ``device_id`` an attribute of every record (None when a record is about
no device) so formats and log processors can rely on it. Where a record is about a task, a
failure, a bad frame or a reconnection attempt, the library also passes ``task_id``,
``reason`` (a `FailureReason`), ``kind`` (a `BadFrameKind`) and ``attempt``: the names and
values of the matching event's fields, so a log line and a ``watch`` frame about the same
thing can be joined. The JSON lines carry them as fields when present.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, Final, TextIO

__all__ = ["DeviceIdFilter", "JsonFormatter", "TextFormatter", "setup_logging"]

#: ``extra`` keys the library passes where they apply, emitted as JSON fields when present.
CONTEXT_FIELDS: Final = ("task_id", "reason", "kind", "attempt")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)-7s %(name)s [%(device)s] %(message)s"
# Marks the handler `setup_logging` installed, so a second call replaces it (tests call the
# CLI's main() several times in one process).
_HANDLER_NAME: Final = "galaxy_actors.cli"


class DeviceIdFilter(logging.Filter):
    """Give every record a ``device_id`` attribute (None when the caller passed none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "device_id"):
            record.device_id = None
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [device] message``; ``-`` when a record is about no device."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        device = getattr(record, "device_id", None)
        record.device = "-" if device is None else device
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, device_id, message;
    ``task_id``, ``reason``, ``kind`` and ``attempt`` when the record carries them, and
    ``exception`` when it carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "device_id": getattr(record, "device_id", None),
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each record.

    The live status view redirects ``sys.stderr`` while it runs, so that log lines scroll
    above the table instead of tearing it; a handler holding the original stream would
    bypass that."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(
    log_format: str = "text", level: str | int = "info", stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record to stderr (or ``stream``) as text or JSON lines, at ``level``
    and above. Calling it again replaces the handler it installed before."""
    if log_format not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {log_format!r}")
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(DeviceIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
