"""The embedded journal's writes: its statements, and a batch of write requests made as one
transaction (group commit's unit). Nothing half-written: a batch commits whole or not at
all. Plain functions on the writer's connection, in whichever thread makes the commit.
"""

from __future__ import annotations

import itertools
import sqlite3
from operator import itemgetter
from typing import Any, Final

from ._journal import Commit

__all__ = [
    "ACCEPT",
    "DEVICE",
    "ENDED",
    "FETCH",
    "FORGET",
    "QUEUED",
    "SENT",
    "Op",
    "write_batch",
]

# The statements, one string each: a group of the same statement goes to one `executemany`.
ACCEPT: Final = (
    "INSERT INTO tasks (task_id, description, data_json, device_id, capabilities, timeout,"
    " delivery, priority, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (task_id) DO NOTHING"
)
SENT: Final = "UPDATE tasks SET state = 'sent' WHERE task_id = ? AND state = 'queued'"
QUEUED: Final = "UPDATE tasks SET state = 'queued' WHERE task_id = ? AND state = 'sent'"
ENDED: Final = "UPDATE tasks SET state = 'ended', outcome = ?, ended_at = ? WHERE task_id = ?"
FORGET: Final = "DELETE FROM tasks WHERE task_id = ? AND state != 'ended'"
DEVICE: Final = (
    "INSERT OR REPLACE INTO devices (device_id, removed, spec, seq) VALUES"
    " (?, ?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM devices))"
)
FETCH: Final = (
    "SELECT task_id, description, data_json, device_id, capabilities, timeout,"
    " delivery, priority, state, outcome FROM tasks WHERE task_id = ?"
)

# A write request: (statement, parameters, its commit, retry). ``retry``: kept and retried
# after a failed commit (an outcome must not be lost to a full disk); the others fail at
# once, so their caller does not go ahead. A plain tuple: one is made per write.
Op = tuple[str, tuple[Any, ...], Commit, bool]
_statement = itemgetter(0)
_params = itemgetter(1)


def write_batch(db: sqlite3.Connection | None, batch: list[Op]) -> str | None:
    """Make ``batch`` one transaction; None, or why it failed (rolled back). An accept
    whose id the journal holds writes nothing, and its commit says so (``existed``)."""
    if db is None:
        return "the journal is closed"
    try:
        if len(batch) == 1:
            # One statement is a transaction of its own (autocommit): two round trips
            # into SQLite fewer, on the path of a lone caller.
            _write_one(db, batch[0])
            return None
        db.execute("BEGIN IMMEDIATE")
        try:
            if not _write_grouped(db, batch):
                # An accept found its id (rare): again, one by one, to learn which.
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                for op in batch:
                    _write_one(db, op)
            db.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk does): nothing half-written.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        return str(exc) or type(exc).__name__
    return None


def _write_one(db: sqlite3.Connection, op: Op) -> None:
    sql, params, commit, _ = op
    if db.execute(sql, params).rowcount == 0 and sql is ACCEPT:
        commit.existed = True


def _write_grouped(db: sqlite3.Connection, batch: list[Op]) -> bool:
    """A run of the same statement (the accepts of many submitters) in one call each.
    False if an accept wrote nothing (its id was there)."""
    for sql, ops in itertools.groupby(batch, _statement):
        if sql is ACCEPT:
            rows = [op[1] for op in ops]
            before = db.total_changes
            db.executemany(sql, rows)
            if db.total_changes - before != len(rows):
                return False
        else:
            db.executemany(sql, map(_params, ops))
    return True
