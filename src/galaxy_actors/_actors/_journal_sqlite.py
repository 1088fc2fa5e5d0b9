"""The embedded task journal: one SQLite file (standard library), WAL mode, group commit.

Theory of operation. Every write request (`accept`, `mark_sent`, ...) joins a pending list
and returns a `Commit`. Whoever commits takes everything pending as one transaction, so a
thousand concurrent submissions cost a few commits, not a thousand (group commit):

- a caller awaiting its commit makes it itself (`_drive`): at once when its task is the
  only one committing, else after one schedule point, so that the others' writes go in
  too; nobody waits for a writer task to be scheduled, and the outcomes and marks nobody
  awaits ride along;
- the writer task (`run`) commits what nobody awaits (an at-least-once task's "sent", a
  taken-back "sent", an outcome before its waiter comes) after a short batch window, and
  retries failed outcome writes.

Where the disk work runs. With ``synchronous=NORMAL`` (the default) a WAL commit is a
``write()`` into the operating system's cache, with no fsync: less than handing the batch
to a worker thread and back (a thread wake-up each way, and two passes of the event loop),
which costs several times the commit itself. So commits are made in the event loop's
thread, as a log handler writes its line. What can take milliseconds stays off the loop,
in a worker thread (one at a time, through a limiter of 1): the fsyncs of a checkpoint
(SQLite's automatic checkpoint is off on the writer's connection; a checkpointer task
copies the WAL back into the database on a second connection while the writer goes on
appending, then what was appended meanwhile with commits held back, so that the WAL file
is reused), opening (``quick_check``, loading the open tasks, `_journal_file.py`),
compaction's scan for expired rows (the deletes, by key, are made in small chunks in the
loop), and closing. With ``synchronous=FULL`` every commit is an fsync, so every commit and
read goes to the worker thread, and waiters leave the commit to the writer task.

Durability level. ``journal_mode=WAL`` with ``synchronous=NORMAL`` (the default): a committed
transaction is in the WAL file, in the operating system's cache, when its commit returns. It
survives the process being killed (SIGKILL, a crash, an OOM kill); it does not survive a
power loss or an OS crash, which may roll back the last transactions (never corrupt the
file). Pass ``synchronous="full"`` for an fsync per commit, which survives those too.

Faults. A write that fails (disk full, read-only file, I/O error) rolls its whole batch
back: nothing half-written. Accepting a task and marking one sent fail at once (the submit,
or the send, does not happen); outcomes and device registrations are kept and retried every
``retry_interval`` seconds, their waiters released meanwhile. The condition is logged,
counted (`JournalStats`) and clears with the next good commit.

Beside it: `_journal_file.py` opens the file (lock file, header, ``quick_check``, schema
version, reading the open tasks back); `_journal_batch.py` holds the statements and makes a
batch one transaction; `_journal_upkeep.py` makes checkpoints and compaction's reads and
deletes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar

import trio

from .._sansio._errors import JournalUnavailable
from ._journal import (
    Commit,
    JournalStats,
    Outcome,
    Recovery,
    StoredTask,
    TaskRecord,
    decode_outcome,
    encode_outcome,
)
from ._journal_batch import ACCEPT, DEVICE, ENDED, FETCH, FORGET, QUEUED, SENT, Op, write_batch
from ._journal_file import SCHEMA_VERSION, connect_checked, create, load, record_of, take_lock
from ._journal_upkeep import checkpoint, delete_ended, expired

__all__ = ["SCHEMA_VERSION", "SqliteJournal"]

logger = logging.getLogger("galaxy_actors.journal")

_T = TypeVar("_T")

# Pages written since the last checkpoint, estimated (a commit writes a few: the table's
# leaf, its indexes'; a big batch one more per so many rows), before the
# checkpointer copies the WAL back: about SQLite's own automatic checkpoint, which the
# event loop's connection does not run.
_CHECKPOINT_PAGES: Final = 1000
_PAGES_PER_COMMIT: Final = 4
_ROWS_PER_PAGE: Final = 16
# Compaction deletes at most this many rows per transaction in the event loop's thread.
_DELETE_CHUNK: Final = 200
# How long a write nobody waits for (an at-least-once "sent", an outcome nobody awaits yet)
# may wait for company: a waiter's own commit takes it along sooner.
_LAZY_WINDOW: Final = 0.002
# Two tasks made or awaited commits this recently: others are writing too, and a waiter
# lets their writes join its commit (one schedule point) rather than committing alone. A
# single caller's commits come from one task, so it never waits.
_GROUP_WINDOW: Final = 0.01


class SqliteJournal:
    """The journal in the SQLite file at ``path``.

    Arguments:
        synchronous: ``"normal"`` (survives a killed process) or ``"full"`` (also a power
            loss; an fsync per commit).
        keep_seconds / keep_count: ended tasks are kept (fetchable by id) this long, and at
            most this many (the most recently ended); `compact` drops the rest.
        compact_every: run `compact` after this many ended tasks.
        retry_interval: how often failed outcome writes are tried again.
        wall_clock: seconds since the epoch (a journal outlives the process and its clock).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "normal",
        keep_seconds: float = 7 * 86400.0,
        keep_count: int = 100_000,
        compact_every: int = 1000,
        retry_interval: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if synchronous not in ("normal", "full"):
            raise ValueError(f"synchronous must be 'normal' or 'full', got {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.keep_seconds = keep_seconds
        self.keep_count = keep_count
        self.compact_every = compact_every
        self.retry_interval = retry_interval
        self.wall_clock = wall_clock
        self.stats = JournalStats()
        self._db: sqlite3.Connection | None = None
        self._lock_file: TextIO | None = None
        self._recovery: Recovery | None = None
        self._pending: list[Op] = []
        self._retry_at = -math.inf
        # The writer's sleep while nothing is due; a request brings its deadline forward.
        self._idle: trio.CancelScope | None = None
        # The last task that made or awaited a commit, and when; and when two tasks last
        # did so within the group window of each other (`_drive`).
        self._last_by: trio.lowlevel.Task | None = None
        self._last_at = -math.inf
        self._shared_at = -math.inf
        self._ended_since_compact = 0
        # One thread at a time touches the files: a batch or a read in a worker thread
        # (``synchronous="full"``), a checkpoint, opening and closing.
        self._thread = trio.CapacityLimiter(1)
        # Commits in the event loop's thread: WAL without an fsync per commit.
        self._inline = synchronous == "normal"
        # The checkpointer's connection (and compaction's reads): worker threads only.
        self._side: sqlite3.Connection | None = None
        self._unchecked_pages = 0
        self._checkpoint_due = trio.Event()
        # Set while the checkpointer finishes a checkpoint: commits wait for it.
        self._held: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<SqliteJournal {str(self.path)!r}>"

    # ------------------------------------------------------------------------ opening

    async def open(self) -> Recovery:
        if self._recovery is None:
            self._recovery = await self._in_thread(self._open)
        return self._recovery

    def _open(self) -> Recovery:
        self._lock_file = take_lock(self.path)
        try:
            if not self.path.exists():
                create(self.path)
            # In the event loop's thread, the checkpoint's fsyncs would stall it: the
            # checkpointer makes them, on its own connection.
            self._db = connect_checked(self.path, self.synchronous, autocheckpoint=not self._inline)
            if self._inline:
                self._side = sqlite3.connect(
                    self.path, isolation_level=None, check_same_thread=False
                )
            return load(self.path, self._db)
        except BaseException:
            self._close()
            raise

    async def aclose(self) -> None:
        await self._in_thread(self._close)

    def _close(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            with contextlib.suppress(sqlite3.Error):
                side.close()
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        file, self._lock_file = self._lock_file, None
        if file is not None:
            file.close()  # releases the lock; the file stays (it may be re-taken at once)

    # ------------------------------------------------------------------------ writes

    def _request(
        self, sql: str, params: tuple[Any, ...], retry: bool, *, arm: bool = True
    ) -> Commit:
        # In the event loop's thread, a waiter commits for everyone (`_drive`); otherwise
        # the writer does, at once. ``arm`` False: the caller awaits the commit at once, so
        # the writer need not be woken for it (if that wait is cancelled, `_drive` wakes it).
        commit = Commit(self._drive) if self._inline else Commit()
        self._pending.append((sql, params, commit, retry))
        if arm or not self._inline:
            self._arm()
        return commit

    def _arm(self) -> None:
        """Wake the writer after the batch window (once per batch: setting a deadline is
        not free). A waiter committing meanwhile disarms it (`_drive`)."""
        idle = self._idle
        if idle is not None and idle.deadline == math.inf:
            window = _LAZY_WINDOW if self._inline else 0.0
            idle.deadline = max(trio.current_time() + window, self._retry_at)

    async def _drive(self, commit: Commit) -> None:
        """Make the commit now, in the waiting task, with everything pending. When other
        tasks are committing too (one did, a moment ago), more writes may be on the way:
        after one schedule point they are in, and one commit carries them all (group
        commit). A lone caller commits at once, adding no pass of the event loop."""
        me = trio.lowlevel.current_task()
        now = trio.current_time()
        if self._last_by is not me and now - self._last_at < _GROUP_WINDOW:
            self._shared_at = now
        # Not only "another task was last": the task that has just committed for a crowd
        # goes on to its next write first, and must still wait for the others' company.
        crowded = now - self._shared_at < _GROUP_WINDOW
        self._last_by, self._last_at = me, now
        try:
            if crowded:
                commit.waited = True
                await trio.lowlevel.checkpoint()
                if commit.done:
                    return
            await self._commit_pending(commit)
        except BaseException:
            # Cancelled before committing: what is pending (this write too) is the
            # writer's now.
            if self._pending:
                self._arm()
            raise
        idle = self._idle
        if idle is not None and not self._pending and idle.deadline != math.inf:
            # Nothing left for the writer: a wake-up that finds nothing costs a pass of
            # the event loop and a cancellation, several times this.
            idle.deadline = math.inf
        if self._checkpoint_due.is_set():
            # A caller committing in a loop that never waits otherwise would starve the
            # checkpointer, and the WAL file would grow: let it start.
            commit.waited = True
            await trio.lowlevel.checkpoint()

    def accept(self, record: TaskRecord, *, sent: bool = False) -> Commit:
        caps = record.capabilities
        return self._request(
            ACCEPT,
            (
                record.task_id,
                record.description,
                record.data_json,
                record.device_id,
                json.dumps(caps) if caps else "[]",
                record.timeout,
                record.delivery.value,
                record.priority,
                "sent" if sent else "queued",
            ),
            False,
            arm=False,
        )

    def mark_sent(self, task_id: str) -> Commit:
        return self._request(SENT, (task_id,), False)

    def mark_queued(self, task_id: str) -> Commit:
        return self._request(QUEUED, (task_id,), True)

    def mark_ended(self, task_id: str, outcome: Outcome, *, awaited: bool = False) -> Commit:
        self._ended_since_compact += 1
        params = (encode_outcome(outcome), self.wall_clock(), task_id)
        return self._request(ENDED, params, True, arm=not awaited)

    def forget(self, task_id: str) -> Commit:
        return self._request(FORGET, (task_id,), True)

    def device_added(self, device_id: str, spec: Mapping[str, Any]) -> Commit:
        return self._request(DEVICE, (device_id, 0, json.dumps(dict(spec))), True)

    def device_removed(self, device_id: str) -> Commit:
        return self._request(DEVICE, (device_id, 1, "{}"), True)

    async def _on_db(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the writer's connection: here, or in a worker thread when every
        commit is an fsync."""
        if self._inline:
            return fn(*args)
        return await self._in_thread(fn, *args)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` in a worker thread, one at a time."""
        return await trio.to_thread.run_sync(fn, *args, limiter=self._thread)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self._inline:
                nursery.start_soon(self._checkpoints, name="journal checkpointer")
            try:
                await self._write_loop()
            finally:
                nursery.cancel_scope.cancel()

    async def _write_loop(self) -> None:
        try:
            while True:
                with trio.CancelScope(deadline=self._next_write_at()) as self._idle:
                    await trio.sleep_forever()
                self._idle = None
                await self._commit_pending()
                if self._ended_since_compact >= self.compact_every:
                    await self.compact()
        finally:
            # Shutdown (or a cancelled supervisor): what is pending is written, and a due
            # compaction made, boundedly.
            self._idle = None
            with trio.CancelScope(shield=True, deadline=trio.current_time() + 5.0):
                while self._pending and not self.stats.degraded and self._db is not None:
                    await self._commit_pending()
                if self._ended_since_compact >= self.compact_every and self._db is not None:
                    await self.compact()

    def _next_write_at(self) -> float:
        if not self._pending:
            return math.inf
        window = _LAZY_WINDOW if self._inline else 0.0
        return max(trio.current_time() + window, self._retry_at)

    async def _commit_pending(self, waiter: Commit | None = None) -> None:
        """Commit what is pending, once no checkpoint holds commits back. A ``waiter``
        whose write a commit made meanwhile commits nothing: a crowd held back by the
        checkpoint would otherwise follow the first one's commit with one each."""
        while self._held is not None:
            if waiter is not None:
                waiter.waited = True
            await self._held.wait()
        if waiter is not None and waiter.done:
            return
        batch, self._pending = self._pending, []
        if not batch:
            return
        await self._commit(batch)

    async def _commit(self, batch: list[Op]) -> None:
        error = await self._on_db(self._write, batch)
        stats = self.stats
        if error is None:
            stats.commits += 1
            stats.writes += len(batch)
            if self._inline:
                self._unchecked_pages += _PAGES_PER_COMMIT + len(batch) // _ROWS_PER_PAGE
                if self._unchecked_pages >= _CHECKPOINT_PAGES:
                    self._checkpoint_due.set()
            if stats.degraded:
                stats.degraded = False
                logger.warning("journal %s: writing again", self.path)
            for op in batch:
                op[2].settle()
            return
        stats.failed_commits += 1
        if not stats.degraded:
            stats.degraded = True
            logger.error(
                "journal %s: cannot write (%s): new tasks are refused until it can; "
                "outcomes are kept and written when it can",
                self.path,
                error,
            )
        failure = JournalUnavailable(
            f"journal {self.path}: cannot write: {error}", task_id="", device_id=None
        )
        kept = [op for op in batch if op[3]]
        self._pending[:0] = kept
        self._retry_at = trio.current_time() + self.retry_interval
        if kept and self._idle is not None:
            self._idle.deadline = self._retry_at
        for op in batch:
            op[2].settle(failure)

    def _write(self, batch: list[Op]) -> str | None:
        return write_batch(self._db, batch)

    async def _checkpoints(self) -> None:
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = trio.Event()
            self._unchecked_pages = 0
            # The bulk while commits go on; then what they added meanwhile, with commits
            # held back (their waiters wait, the event loop does not). Only a checkpoint
            # that copied every frame, with no commit since, lets the next commit start
            # the WAL file over: under a steady load one that races the writer never does,
            # and the file grows without bound.
            await self._in_thread(checkpoint, self._side, self.path)
            self._held = trio.Event()
            try:
                await self._in_thread(checkpoint, self._side, self.path)
            finally:
                held, self._held = self._held, None
                held.set()

    # ------------------------------------------------------------------------ reads

    async def fetch(self, task_id: str) -> StoredTask | None:
        if self._inline:
            return self._fetch(task_id)  # an indexed read: less than a thread's round trip
        return await self._in_thread(self._fetch, task_id)

    def _fetch(self, task_id: str) -> StoredTask | None:
        db = self._db
        assert db is not None
        row = db.execute(FETCH, (task_id,)).fetchone()
        if row is None:
            return None
        outcome = None if row[9] is None else decode_outcome(task_id, row[9])
        return StoredTask(record_of(row[:8]), row[8] != "queued", outcome)

    async def compact(self) -> int:
        self._ended_since_compact = 0
        before = self.wall_clock() - self.keep_seconds
        if self._inline:
            # Finding them scans up to ``keep_count`` index entries: in a worker thread, on
            # the side connection (a WAL reader does not hold up the writer). Deleting them
            # by key is quick, in chunks between which the event loop runs.
            seqs = await self._in_thread(self._expired_on, self._side, before)
            dropped = 0
            for start in range(0, len(seqs), _DELETE_CHUNK):
                dropped += delete_ended(self._db, self.path, seqs[start : start + _DELETE_CHUNK])
                await trio.lowlevel.checkpoint()
        else:
            dropped = await self._in_thread(self._compact, before)
        self.stats.compacted += dropped
        return dropped

    def _expired_on(self, db: sqlite3.Connection | None, before: float) -> list[int]:
        return expired(db, self.path, before=before, keep_count=self.keep_count)

    def _compact(self, before: float) -> int:
        return delete_ended(self._db, self.path, self._expired_on(self._db, before))
