"""The journal's bad input and faults: corrupt, truncated, in use, newer, older, disk full."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from lab import frames_of, memory_lab

from galaxy_actors import open_supervisor
from galaxy_actors._actors._journal_sqlite import SCHEMA_VERSION
from galaxy_actors.errors import JournalCorrupt, JournalInUse, JournalUnavailable, JournalVersion
from galaxy_actors.journal import SqliteJournal


async def make_journal(path: Path, tasks: int = 0) -> None:
    async with memory_lab(journal=path) as lab:
        await lab.connected("pc")
        for i in range(tasks):
            await lab.supervisor.run_task("t", {"pad": "x" * 200}, device_id="pc", task_id=f"t{i}")


def run_process(config: Path) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "none"],
        capture_output=True,
        timeout=30,
        check=False,
    )


async def test_a_corrupt_file_is_refused_named_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    await make_journal(path, tasks=50)
    data = path.read_bytes()
    broken = data[:4096] + b"\xff" * 4096 + data[8192:]
    path.write_bytes(broken)
    with pytest.raises(JournalCorrupt, match=str(path)):
        async with open_supervisor(journal=path):
            pass
    assert path.read_bytes() == broken


@pytest.mark.parametrize("keep", [0, 3000])
async def test_a_truncated_file_is_refused(tmp_path: Path, keep: int) -> None:
    path = tmp_path / "j.sqlite3"
    await make_journal(path, tasks=100)
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(JournalCorrupt):
        await SqliteJournal(path).open()
    assert path.stat().st_size == keep


async def test_the_process_exits_2_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[journal]\npath = "bad.sqlite3"\n'
        '[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:9/ws"\n'
    )
    (tmp_path / "bad.sqlite3").write_bytes(b"not a database at all" * 10)
    done = await trio.to_thread.run_sync(run_process, config)
    assert done.returncode == 2
    assert b"bad.sqlite3" in done.stderr and b"not an SQLite database" in done.stderr


async def test_a_journal_in_use_by_a_live_supervisor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with memory_lab(journal=path):
        with pytest.raises(JournalInUse, match="another live supervisor"):
            async with open_supervisor(journal=path):
                pass
    # Released with its holder: the next supervisor takes it.
    async with memory_lab(journal=path):
        pass


async def test_a_newer_schema_is_refused_and_an_older_one_migrated(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    await make_journal(newer)
    db = sqlite3.connect(newer)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalVersion, match="newer"):
        await SqliteJournal(newer).open()

    older = tmp_path / "older.sqlite3"
    await make_journal(older, tasks=1)
    db = sqlite3.connect(older)
    db.execute("DROP TABLE devices")  # what version 1 had: no devices table
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    async with memory_lab(journal=older) as lab:
        assert (await (await lab.supervisor.task("t0")).result()).ok
    db = sqlite3.connect(older)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


# Version 2's tasks table, as files written before version 3 hold it.
V2_TASKS = """
    CREATE TABLE tasks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL, data_json TEXT NOT NULL, device_id TEXT,
        capabilities TEXT NOT NULL, timeout REAL NOT NULL, delivery TEXT NOT NULL,
        priority INTEGER NOT NULL, state TEXT NOT NULL, outcome TEXT, ended_at REAL)
"""


def write_v2(path: Path, task_ids: list[str]) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(V2_TASKS)
    db.execute("CREATE INDEX tasks_ended ON tasks (ended_at) WHERE state = 'ended'")
    db.execute("CREATE TABLE devices (device_id TEXT PRIMARY KEY, removed INTEGER NOT NULL,"
               " spec TEXT NOT NULL, seq INTEGER NOT NULL)")  # fmt: skip
    for task_id in task_ids:
        db.execute(
            "INSERT INTO tasks (task_id, description, data_json, device_id, capabilities,"
            " timeout, delivery, priority, state) VALUES (?, 'do', '{}', 'pc', '[]', 60.0,"
            " 'at_least_once', 0, 'queued')",
            (task_id,),
        )
    db.execute("PRAGMA user_version = 2")
    db.close()


async def test_a_version_2_file_keeps_its_tasks_and_their_order(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    # Submission order is not the ids' order: recovery must follow the file's.
    write_v2(path, ["c", "a", "b"])
    async with memory_lab(journal=path) as lab:
        agent = await lab.connected("pc")
        for task_id in ("c", "a", "b"):
            assert (await (await lab.supervisor.task(task_id)).result()).ok
        assert (await lab.supervisor.run_task("new", device_id="pc", task_id="d")).ok
        assert [f.session_id.split("@", 1)[1] for f in frames_of(agent, "task")] == [
            "c", "a", "b", "d"
        ]  # fmt: skip
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()
    assert "AUTOINCREMENT" not in sql
    seqs = dict(db.execute("SELECT task_id, seq FROM tasks"))
    db.close()
    assert seqs["c"] < seqs["a"] < seqs["b"] < seqs["d"]


@pytest.mark.parametrize(
    "column, value",
    [("delivery", "sometimes"), ("capabilities", "{}"), ("timeout", "soon"), ("state", "gone")],
)
async def test_an_open_task_that_would_not_make_a_task_is_refused(
    tmp_path: Path, column: str, value: str
) -> None:
    path = tmp_path / "j.sqlite3"
    write_v2(path, ["t0", "t1"])
    db = sqlite3.connect(path)
    db.execute(f"UPDATE tasks SET {column} = ? WHERE task_id = 't1'", (value,))
    db.commit()
    db.close()
    with pytest.raises(JournalCorrupt, match=r"unreadable record.*t1"):
        async with open_supervisor(journal=path):
            pass


class FullDisk(SqliteJournal):
    """A journal whose file may not grow past its size now: SQLite's own "disk full"."""

    def fill(self, full: bool) -> None:
        assert self._db is not None
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {pages if full else 1 << 30}")


async def test_disk_full_fails_the_submit_and_clears_when_space_returns(tmp_path: Path) -> None:
    journal = FullDisk(tmp_path / "j.sqlite3", retry_interval=0.05)
    # Bounded: a device whose send the journal refused must not wait for the next frame.
    with trio.fail_after(10):
        await _disk_full(journal)
    db = sqlite3.connect(tmp_path / "j.sqlite3")
    states = dict(db.execute("SELECT task_id, state FROM tasks"))
    db.close()
    assert states["before"] == states["after"] == "ended"
    # Nothing half-written: every row is a task that was accepted.
    assert all(state == "ended" for state in states.values())


async def _disk_full(journal: FullDisk) -> None:
    async with memory_lab(journal=journal) as lab:
        await lab.connected("pc", task_duration=0.2)
        sup = lab.supervisor
        running = await sup.submit("before", device_id="pc", task_id="before")
        journal.fill(True)
        with pytest.raises(JournalUnavailable, match="not accepted"):
            for i in range(200):  # until the file needs a new page
                await sup.submit("x" * 500, {"sim_duration": 0}, device_id="pc", task_id=f"f{i}")
        assert journal.stats.degraded and journal.stats.failed_commits >= 1
        assert (await running.result()).ok  # accepted before: runs on
        journal.fill(False)
        assert (await sup.run_task("after", device_id="pc", task_id="after")).ok
        assert not journal.stats.degraded
