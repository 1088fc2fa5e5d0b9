"""The ``[journal]`` table of the process's configuration file.

The process journals by default (a supervisor that dies loses no accepted task), to a file
beside the configuration file named after it: ``fleet.toml`` journals to
``fleet.journal.sqlite3``. ``enabled = false`` turns it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import attrs

from .._actors._journal_sqlite import SqliteJournal
from ._config_values import ValueReader

__all__ = ["JOURNAL_KEYS", "JournalConfig", "read_journal"]

JOURNAL_KEYS: Final = ("enabled", "path", "synchronous", "keep_seconds", "keep_count")


@attrs.frozen
class JournalConfig:
    """``path`` None: no journal (off, or a configuration not read from a file)."""

    path: Path | None = None
    synchronous: str = "normal"
    keep_seconds: float = 7 * 86400.0
    keep_count: int = 100_000

    def open(self) -> SqliteJournal | None:
        if self.path is None:
            return None
        return SqliteJournal(
            self.path,
            synchronous=self.synchronous,
            keep_seconds=self.keep_seconds,
            keep_count=self.keep_count,
        )


def read_journal(reader: ValueReader, t: dict[str, Any], source: str) -> JournalConfig:
    """Validate the ``[journal]`` table of the file ``source``."""
    p = "journal"
    reader.known_keys(t, JOURNAL_KEYS, p)
    d = JournalConfig()
    if not reader.boolean(t, "enabled", p, True) or source.startswith("<"):
        return d
    config = Path(source)
    name = reader.string(t, "path", p, f"{config.stem}.journal.sqlite3")
    if not name:
        raise reader.fail(f"{p}.path", "must not be empty (set enabled = false to turn it off)")
    keep_count = reader.integer(t, "keep_count", p, d.keep_count, 0)
    assert keep_count is not None
    return JournalConfig(
        path=config.parent / name,
        synchronous=reader.choice(t, "synchronous", p, ("normal", "full"), d.synchronous),
        keep_seconds=reader.seconds(t, "keep_seconds", p, d.keep_seconds, zero=True),
        keep_count=keep_count,
    )
