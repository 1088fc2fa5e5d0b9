"""The embedded journal's upkeep: copying the WAL back into the database (checkpoints), and
dropping ended tasks past their retention (compaction).

Plain functions on a connection, each safe to run in a worker thread: neither is on the
path of a task. `SqliteJournal` decides when and where they run.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path

__all__ = ["checkpoint", "delete_ended", "expired"]

logger = logging.getLogger("galaxy_actors.journal")

_DELETE = "DELETE FROM tasks WHERE seq = ? AND state = 'ended'"


def checkpoint(side: sqlite3.Connection | None, path: Path) -> None:
    """Copy what the WAL holds back into the database, on ``side`` (not the writer's
    connection). PASSIVE: it never waits for the writer, nor makes it wait."""
    if side is None:
        return
    try:
        side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:
        logger.warning("journal %s: checkpoint failed: %s", path, exc)


def expired(
    db: sqlite3.Connection | None, path: Path, *, before: float, keep_count: int
) -> list[int]:
    """The ended tasks past the retention: ended before ``before`` (seconds since the
    epoch), or past the ``keep_count`` most recently ended. Their ``seq``, ascending."""
    if db is None:
        return []
    try:
        old = db.execute(
            "SELECT seq FROM tasks WHERE state = 'ended' AND ended_at < ?", (before,)
        ).fetchall()
        extra = db.execute(
            "SELECT seq FROM tasks WHERE state = 'ended'"
            " ORDER BY ended_at DESC, seq DESC LIMIT -1 OFFSET ?",
            (keep_count,),
        ).fetchall()
    except sqlite3.Error as exc:
        logger.warning("journal %s: compaction failed: %s", path, exc)
        return []
    return sorted({row[0] for row in old} | {row[0] for row in extra})


def delete_ended(db: sqlite3.Connection | None, path: Path, seqs: list[int]) -> int:
    """Delete these ended tasks in one transaction; how many went (0 if it failed)."""
    if db is None or not seqs:
        return 0
    try:
        db.execute("BEGIN IMMEDIATE")
        before = db.total_changes
        db.executemany(_DELETE, [(seq,) for seq in seqs])
        dropped = db.total_changes - before
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        logger.warning("journal %s: compaction failed: %s", path, exc)
        return 0
    return dropped
