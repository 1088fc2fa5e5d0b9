"""The embedded journal's file: its schema, and the checks and the lock that open it.

Opening, in order, before anything is written: a lock file beside the journal
(``<path>.lock``, holding the owner's pid; an OS lock, released when the process dies) so
that two live supervisors never serve one journal; the SQLite header; ``PRAGMA
quick_check``; the schema version (``PRAGMA user_version``: an older file is migrated, a
newer one refused). A new journal is built in a temporary file and renamed into place, so a
file at the path is always a whole journal. Plain functions, run in a worker thread by
`SqliteJournal.open`.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any, Final, TextIO

from .._sansio._errors import JournalCorrupt, JournalError, JournalInUse, JournalVersion
from ._journal import DeviceRecord, OpenTask, Recovery, TaskRecord, gc_paused
from ._task import Delivery

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "SCHEMA_VERSION",
    "WAL_SIZE_LIMIT",
    "connect_checked",
    "create",
    "load",
    "record_of",
    "take_lock",
]

logger = logging.getLogger("galaxy_actors.journal")

# What the WAL file is cut back to when SQLite starts it over (``journal_size_limit``): a
# burst leaves it large, and SQLite reuses a WAL file but never shrinks it. Above one
# checkpoint interval's worth of pages (about 4 MiB): a steady load seldom truncates.
WAL_SIZE_LIMIT: Final = 8 * 2**20

# Each entry brings a file from version n-1 to n; a new file runs them all.
_MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        data_json TEXT NOT NULL,
        device_id TEXT,
        capabilities TEXT NOT NULL,
        timeout REAL NOT NULL,
        delivery TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        ended_at REAL
    );
    CREATE INDEX tasks_ended ON tasks (ended_at) WHERE state = 'ended';
    """,
    """
    CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        removed INTEGER NOT NULL,
        spec TEXT NOT NULL,
        seq INTEGER NOT NULL
    );
    """,
    # Version 3: the tasks table without AUTOINCREMENT, which updated sqlite_sequence on
    # every accept (a sixth of SQLite's work per task, counted by callgrind). A new task's
    # seq is still above every row's, so ``ORDER BY seq`` is still submission order.
    """
    CREATE TABLE tasks_v3 (
        seq INTEGER PRIMARY KEY,
        task_id TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        data_json TEXT NOT NULL,
        device_id TEXT,
        capabilities TEXT NOT NULL,
        timeout REAL NOT NULL,
        delivery TEXT NOT NULL,
        priority INTEGER NOT NULL,
        state TEXT NOT NULL,
        outcome TEXT,
        ended_at REAL
    );
    INSERT INTO tasks_v3 SELECT seq, task_id, description, data_json, device_id,
        capabilities, timeout, delivery, priority, state, outcome, ended_at FROM tasks;
    DROP TABLE tasks;
    ALTER TABLE tasks_v3 RENAME TO tasks;
    CREATE INDEX tasks_ended ON tasks (ended_at) WHERE state = 'ended';
    DELETE FROM sqlite_sequence WHERE name = 'tasks';
    """,
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_HEADER: Final = b"SQLite format 3\x00"


def _fail(path: Path, cls: type[JournalError], problem: str) -> JournalError:
    return cls(str(path), problem)


def take_lock(path: Path) -> TextIO:
    """The lock file, locked for this process; `JournalInUse` if another holds it."""
    lock_path = f"{path}.lock"
    try:
        file = open(lock_path, "a+")  # noqa: SIM115 - held open for the journal's life
    except OSError as exc:
        raise _fail(path, JournalError, f"cannot open its lock file: {exc}") from None
    if fcntl is not None:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read(32).strip() or "unknown"
            file.close()
            raise _fail(
                path,
                JournalInUse,
                f"in use by another live supervisor (pid {holder}, lock file {lock_path}); "
                "two processes must never serve one journal",
            ) from None
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def create(path: Path) -> None:
    """A new, empty journal at ``path``, whole or not at all."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.new")
    temp.unlink(missing_ok=True)
    db = sqlite3.connect(temp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        _migrate(db, 0)
    finally:
        db.close()
    temp.replace(path)


def _migrate(db: sqlite3.Connection, version: int) -> None:
    for number in range(version, SCHEMA_VERSION):
        db.execute("BEGIN IMMEDIATE")
        for statement in _MIGRATIONS[number].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")


def connect_checked(path: Path, synchronous: str, *, autocheckpoint: bool) -> sqlite3.Connection:
    """A connection to the journal at ``path``, checked (`JournalCorrupt`, `JournalVersion`)
    and migrated. ``autocheckpoint`` False: another connection makes the checkpoints."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
    except OSError as exc:
        raise _fail(path, JournalError, f"cannot read: {exc}") from None
    if size == 0:
        raise _fail(path, JournalCorrupt, "empty file (truncated?), not a journal")
    if header != _HEADER:
        raise _fail(path, JournalCorrupt, "not an SQLite database (wrong header)")
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _fail(path, JournalCorrupt, "corrupt: " + "; ".join(problems[:3]))
        ((version,),) = db.execute("PRAGMA user_version").fetchall()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
        if version > SCHEMA_VERSION:
            raise _fail(
                path,
                JournalVersion,
                f"schema version {version} is newer than this galaxy_actors supports "
                f"({SCHEMA_VERSION}); run a newer version, or start on another file",
            )
        if version == 0 or "tasks" not in tables:
            raise _fail(path, JournalCorrupt, "an SQLite database, but not a task journal")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if not autocheckpoint:
            db.execute("PRAGMA wal_autocheckpoint=0")
        if version < SCHEMA_VERSION:
            logger.warning("journal %s: migrating schema %d -> %d", path, version, SCHEMA_VERSION)
            _migrate(db, version)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise _fail(path, JournalCorrupt, f"corrupt: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


# Open tasks, as `OpenTask` rows; and the rows among them that would not make a task.
_OPEN = (
    "SELECT task_id, description, data_json, device_id, capabilities, timeout, delivery,"
    " priority, state = 'sent' FROM tasks WHERE state != 'ended' ORDER BY seq"
)
_MALFORMED = (
    "SELECT task_id FROM tasks WHERE state != 'ended' AND NOT ("
    "typeof(task_id) = 'text' AND typeof(description) = 'text'"
    " AND typeof(data_json) = 'text' AND typeof(device_id) IN ('text', 'null')"
    " AND typeof(capabilities) = 'text' AND typeof(timeout) IN ('real', 'integer')"
    " AND delivery IN ('at_most_once', 'at_least_once') AND typeof(priority) = 'integer'"
    " AND state IN ('queued', 'sent')) LIMIT 1"
)
_WITH_CAPABILITIES = (
    "SELECT task_id, capabilities FROM tasks WHERE state != 'ended' AND capabilities != '[]'"
)


def load(path: Path, db: sqlite3.Connection) -> Recovery:
    """The open tasks and the device registrations the journal holds. The tasks come as
    the rows themselves, checked by SQLite first: what is read is used as it is."""
    try:
        bad = db.execute(_MALFORMED).fetchone()
        if bad is not None:
            raise ValueError(f"task {bad[0]!r}")
        for task_id, text in db.execute(_WITH_CAPABILITIES):
            capabilities = json.loads(text)
            if not isinstance(capabilities, list) or not all(
                isinstance(c, str) for c in capabilities
            ):
                raise ValueError(f"task {task_id!r}: capabilities {text!r}")
        with gc_paused():
            tasks: list[OpenTask] = db.execute(_OPEN).fetchall()
        devices = tuple(
            DeviceRecord(device_id, bool(removed), json.loads(spec))
            for device_id, removed, spec in db.execute(
                "SELECT device_id, removed, spec FROM devices ORDER BY seq"
            )
        )
    except (sqlite3.DatabaseError, ValueError, KeyError) as exc:
        raise _fail(path, JournalCorrupt, f"unreadable record: {exc}") from None
    return Recovery(tasks, devices)


def record_of(row: tuple[Any, ...]) -> TaskRecord:
    task_id, description, data_json, device_id, capabilities, timeout, delivery, priority = row
    return TaskRecord(
        task_id,
        description,
        data_json,
        device_id,
        tuple(json.loads(capabilities)),
        float(timeout),
        Delivery(delivery),
        int(priority),
    )
