"""The task journal: durable accept, recovery rules, idempotent submission, fetching by id.

In-process tests over the in-memory transport and a real SQLite file. A "crash" here is a
journal that stops committing (as a killed process would) and a supervisor that is then
abandoned; the process-level kill is in test_journal_process.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from lab import frames_of, memory_lab

from galaxy_actors import (
    Delivery,
    DuplicateTaskId,
    ExecutionResult,
    OutcomeUnknown,
    Supervisor,
    SupervisorClosed,
    UnknownTask,
)
from galaxy_actors._actors._journal import TaskRecord
from galaxy_actors._actors._journal_file import WAL_SIZE_LIMIT
from galaxy_actors.journal import SqliteJournal


def record(
    task_id: str,
    *,
    device: str | None = "pc",
    delivery: Delivery = Delivery.AT_MOST_ONCE,
    priority: int = 0,
    capabilities: tuple[str, ...] = (),
) -> TaskRecord:
    return TaskRecord(
        task_id, f"do {task_id}", "{}", device, capabilities, 60.0, delivery, priority
    )


async def write_journal(path: Path, *ops: tuple[str, Any]) -> None:
    """Write records straight through the journal's interface, as a dead process left them."""
    journal = SqliteJournal(path)
    await journal.open()
    commits = []
    for op, arg in ops:
        if op == "accept":
            commits.append(journal.accept(arg))
        elif op == "accept-sent":
            commits.append(journal.accept(arg, sent=True))
        elif op == "sent":
            commits.append(journal.mark_sent(arg))
        elif op == "ended":
            commits.append(journal.mark_ended(*arg))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        for commit in commits:
            await commit.wait()
            assert commit.error is None
        nursery.cancel_scope.cancel()
    await journal.aclose()


def rows(path: Path) -> dict[str, str]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT task_id, state FROM tasks"))
    finally:
        db.close()


def file_size(path: Path) -> int:
    return path.stat().st_size


def task_ids_received(agent: Any) -> list[str]:
    return [frame.session_id.split("@", 1)[1] for frame in frames_of(agent, "task")]


async def test_submit_returns_once_the_task_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with memory_lab(journal=path) as lab:
        await lab.connected("pc", task_duration=0.2)
        handle = await lab.supervisor.submit("a", device_id="pc", task_id="t1")
        assert rows(path)["t1"] == "sent"
        result = await handle.result()
        assert result.ok
        # The outcome is on disk once a waiter sees it.
        assert rows(path)["t1"] == "ended"


async def test_recovery_queues_again_and_never_resends_at_most_once(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    await write_journal(
        path,
        ("accept", record("queued-late", priority=0)),
        ("accept", record("queued-urgent", priority=-1)),
        ("accept", record("maybe-ran")),
        ("sent", "maybe-ran"),
        # Accepted as sent (to an idle device): the same "maybe ran".
        ("accept-sent", record("maybe-ran-too")),
        ("accept", record("again", delivery=Delivery.AT_LEAST_ONCE)),
        ("sent", "again"),
    )
    async with memory_lab(journal=path) as lab:
        sup = lab.supervisor
        unknown = await sup.task("maybe-ran")
        with pytest.raises(OutcomeUnknown, match="may or may not have run"):
            await unknown.result()
        with pytest.raises(OutcomeUnknown):
            await (await sup.task("maybe-ran-too")).result()
        agent = await lab.connected("pc")
        for task_id in ("queued-late", "queued-urgent", "again"):
            assert (await (await sup.task(task_id)).result()).ok
        # By priority; within one, the sent at-least-once task at the head of its queue.
        assert task_ids_received(agent) == ["queued-urgent", "again", "queued-late"]
    assert rows(path) == dict.fromkeys(
        ["queued-late", "queued-urgent", "maybe-ran", "maybe-ran-too", "again"], "ended"
    )


async def test_capability_routed_tasks_are_routed_again(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    await write_journal(path, ("accept", record("any-gpu", device=None, capabilities=("gpu",))))
    async with memory_lab(journal=path) as lab:
        lab.agent(devices=["cpu-box", "gpu-box"])
        lab.supervisor.add_device("cpu-box", "ws://agent/ws")
        lab.supervisor.add_device("gpu-box", "ws://agent/ws", capabilities=["gpu"])
        result = await (await lab.supervisor.task("any-gpu")).result()
        assert result.device_id == "gpu-box"


async def test_same_id_returns_the_same_task_before_and_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with memory_lab(journal=path) as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        first = await sup.submit("open", {"x": 1}, device_id="pc", task_id="once")
        again = await sup.submit("open", {"x": 1}, device_id="pc", task_id="once")
        assert again is first
        outcome = await first.result()
        # Ended and released: answered from the journal, not run again.
        later = await sup.submit("open", {"x": 1}, device_id="pc", task_id="once")
        assert await later.result() == outcome
        with pytest.raises(DuplicateTaskId, match="another task"):
            await sup.submit("close", device_id="pc", task_id="once")
        assert task_ids_received(agent) == ["once"]
    async with memory_lab(journal=path) as lab:
        agent = await lab.connected("pc")
        handle = await lab.supervisor.submit("open", {"x": 1}, device_id="pc", task_id="once")
        result = await handle.result()
        assert isinstance(result, ExecutionResult)
        assert result.task_id == "once"
        assert result.result == outcome.result
        assert task_ids_received(agent) == []
        with pytest.raises(UnknownTask):
            await lab.supervisor.task("never")


async def test_a_known_id_is_answered_after_its_device_is_gone(tmp_path: Path) -> None:
    async with memory_lab(journal=tmp_path / "j.sqlite3") as lab:
        await lab.connected("pc")
        sup = lab.supervisor
        outcome = await sup.run_task("open", device_id="pc", task_id="once")
        await sup.remove_device("pc")
        # The retained outcome, not UnknownDevice: a client retrying its submit learns
        # what became of the task.
        again = await sup.submit("open", device_id="pc", task_id="once")
        assert await again.result() == outcome
        with pytest.raises(DuplicateTaskId, match="another task"):
            await sup.submit("close", device_id="pc", task_id="once")


async def test_a_known_id_among_concurrent_new_ones_runs_once(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    async with memory_lab(journal=journal) as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        outcome = await sup.run_task("open", device_id="pc", task_id="old")
        handles: dict[str, Any] = {}

        async def submit(task_id: str) -> None:
            handles[task_id] = await sup.submit("open", device_id="pc", task_id=task_id)

        before = journal.stats.commits
        async with trio.open_nursery() as nursery:
            for task_id in ("new-1", "old", "new-2", "new-3"):
                nursery.start_soon(submit, task_id)
        # One commit carried them (the known one wrote nothing), and each got its answer.
        assert journal.stats.commits - before <= 2
        assert await handles["old"].result() == outcome
        for task_id in ("new-1", "new-2", "new-3"):
            assert (await handles[task_id].result()).ok
        assert sorted(task_ids_received(agent)) == ["new-1", "new-2", "new-3", "old"]
        assert rows(path) == dict.fromkeys(["old", "new-1", "new-2", "new-3"], "ended")


async def test_a_graceful_stop_keeps_queued_tasks_for_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    async with memory_lab(journal=path, shutdown_grace=0.1) as lab:
        await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        running = await sup.submit("long", device_id="pc", task_id="long")
        queued = await sup.submit("next", device_id="pc", task_id="next")
        assert queued.device_id == "pc"
    assert running.done and queued.done
    assert rows(path) == {"long": "sent", "next": "queued"}
    async with memory_lab(journal=path) as lab:
        agent = await lab.connected("pc")
        with pytest.raises(OutcomeUnknown):
            await (await lab.supervisor.task("long")).result()
        assert (await (await lab.supervisor.task("next")).result()).ok
        assert task_ids_received(agent) == ["next"]


async def test_without_a_journal_nothing_is_written(tmp_path: Path) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc")
        assert lab.supervisor.durable is None
        assert (await lab.supervisor.run_task("a", device_id="pc", task_id="t")).ok
        with pytest.raises(UnknownTask):
            await lab.supervisor.task("t")
    assert os.listdir(tmp_path) == []


async def test_a_closed_supervisor_refuses_a_submit_by_id_as_without_a_journal(
    tmp_path: Path,
) -> None:
    async with memory_lab(journal=tmp_path / "j.sqlite3") as lab:
        await lab.connected("pc")
        sup = lab.supervisor
        assert (await sup.run_task("a", device_id="pc", task_id="done")).ok
    # Not an AssertionError from a closed journal: the error a program handles.
    with pytest.raises(SupervisorClosed):
        await sup.submit("b", device_id="pc", task_id="new")
    with pytest.raises(SupervisorClosed):
        await sup.submit("a", device_id="pc", task_id="done")


async def test_a_task_to_an_idle_device_is_on_disk_as_sent_with_one_commit(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    async with memory_lab(journal=journal) as lab:
        await lab.connected("pc", task_duration=0.2)
        before = journal.stats.commits
        await lab.supervisor.submit("a", device_id="pc", task_id="t1")
        # Accepted and marked sent in one write, before the frame left.
        assert rows(path)["t1"] == "sent"
        assert journal.stats.commits == before + 1


async def test_racing_for_an_idle_device_the_loser_is_queued_again_on_disk(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    async with memory_lab(journal=path) as lab:
        agent = await lab.connected("pc", task_duration=0.5)
        handles = []

        async def submit(task_id: str) -> None:
            handles.append(await lab.supervisor.submit(task_id, device_id="pc", task_id=task_id))

        # Both see the device idle, and are accepted as sent in one commit; one gets it.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit, "first")
            nursery.start_soon(submit, "second")
        await trio.sleep(0.1)  # the lazy write that takes the loser's "sent" back
        states = rows(path)
        assert sorted(states.values()) == ["queued", "sent"]
        for handle in handles:
            assert (await handle.result()).ok
        winner = next(task_id for task_id, state in states.items() if state == "sent")
        loser = next(task_id for task_id, state in states.items() if state == "queued")
        assert task_ids_received(agent) == [winner, loser]


def submit_in_loops(nursery: trio.Nursery, sup: Supervisor, *, submitters: int, each: int) -> None:
    """Start ``submitters`` tasks, each submitting ``each`` tasks to "pc" one after another."""

    async def submitter(s: int) -> None:
        for i in range(each):
            await sup.submit("x", device_id="pc", task_id=f"t{s}-{i}")

    for s in range(submitters):
        nursery.start_soon(submitter, s)


@pytest.mark.parametrize(
    ("submitters", "each", "most"),
    [
        # Fifty submits at once, each on disk when it returns: far fewer commits.
        (50, 1, 5),
        # Twenty submitting in a loop: about one commit a round (eleven). The task that
        # committed for the others goes on to its next submit before they do, and must
        # still wait for their company (it used to commit its own alone: twenty commits).
        (20, 10, 14),
    ],
)
async def test_concurrent_submits_share_commits(
    tmp_path: Path, submitters: int, each: int, most: int
) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    async with memory_lab(journal=journal, shutdown_grace=0.1) as lab:
        await lab.connected("pc", task_duration=100.0)
        before = journal.stats.commits
        async with trio.open_nursery() as nursery:
            submit_in_loops(nursery, lab.supervisor, submitters=submitters, each=each)
        assert len(rows(tmp_path / "j.sqlite3")) == submitters * each
        assert journal.stats.commits - before <= most


async def test_a_write_nobody_waits_for_still_lands(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    await journal.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        await journal.accept(record("lazy")).wait()
        await trio.sleep(0.1)  # the writer is idle
        commit = journal.mark_sent("lazy")
        await trio.sleep(0.2)
        assert commit.done and commit.error is None
        assert rows(path) == {"lazy": "sent"}
        nursery.cancel_scope.cancel()
    await journal.aclose()


async def test_a_write_whose_waiter_is_cancelled_in_its_commit_still_lands(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # Virtual time: the two commits below are always "a moment" apart.
    path = tmp_path / "j.sqlite3"
    journal = SqliteJournal(path)
    await journal.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        await trio.sleep(0.1)  # the writer is idle
        await journal.accept(record("first")).wait()
        # Another task commits a moment later: its waiter yields once for company, and is
        # cancelled there, before committing. Its write is the writer's to make.
        commit = journal.accept(record("second"))

        async def cancelled_waiter() -> None:
            with trio.CancelScope() as scope:
                scope.cancel()
                await commit.wait()

        nursery.start_soon(cancelled_waiter)
        await trio.sleep(0.2)
        assert commit.done and commit.error is None
        assert rows(path) == {"first": "queued", "second": "queued"}
        nursery.cancel_scope.cancel()
    await journal.aclose()


async def test_the_wal_file_shrinks_back_after_a_burst(tmp_path: Path) -> None:
    # One burst (a recovery re-queueing, a flood of submissions in one group commit) makes
    # the WAL file large; SQLite reuses a WAL file from its start but never shrinks it, so
    # without a size limit an operator would find it at its peak for the process's life.
    path = tmp_path / "j.sqlite3"
    wal = Path(f"{path}-wal")
    journal = SqliteJournal(path)
    await journal.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        data = json.dumps({"blob": "x" * 2000})  # tasks with some data: a few MiB quickly
        burst = [journal.accept(record(f"b{i}")._replace(data_json=data)) for i in range(12_000)]
        await burst[-1].wait()
        assert all(commit.done and commit.error is None for commit in burst)
        peak = file_size(wal)
        assert peak > 2 * WAL_SIZE_LIMIT  # the burst made it large
        # Steady single commits: once a checkpoint has copied everything back, the next
        # commit starts the WAL over, and the file is cut back to the limit.
        for i in range(20_000):
            await journal.accept(record(f"t{i}")).wait()
            if file_size(wal) <= WAL_SIZE_LIMIT:
                break
            if i % 100 == 99:
                await trio.sleep(0.01)  # the checkpointer's thread takes its turn
        assert file_size(wal) <= WAL_SIZE_LIMIT, (peak, file_size(wal))
        nursery.cancel_scope.cancel()
    await journal.aclose()


async def test_the_wal_is_copied_back_and_stays_bounded_under_a_steady_load(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite3"
    wal = Path(f"{path}-wal")
    journal = SqliteJournal(path)
    await journal.open()
    size = path.stat().st_size
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        # One commit after another, with no pause for the checkpointer's thread: dozens of
        # checkpoints' worth of pages, as under a steady load.
        for i in range(6000):
            commit = journal.accept(record(f"t{i}"))
            await commit.wait()
        # The WAL file is reused once its frames are in the database: about SQLite's
        # checkpoint interval (1,000 pages of 4 KiB), not a frame per commit kept for ever.
        assert file_size(wal) < 12 * 2**20
        with trio.fail_after(10):
            # The checkpointer's thread says nothing when it is done: watch the file.
            while path.stat().st_size <= size:  # noqa: ASYNC110
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    await journal.aclose()


async def test_a_journaled_submit_is_a_checkpoint_as_without_a_journal(tmp_path: Path) -> None:
    # Cancellable and a schedule point, as Trio's own calls are: a lone caller's commit
    # is made at once, and must not let its loop of submits starve the other tasks.
    async with memory_lab(journal=tmp_path / "j.sqlite3", shutdown_grace=0.1) as lab:
        await lab.connected("pc", task_duration=100.0)
        for i in range(3):  # sent at once, then queued
            with trio.testing.assert_checkpoints():
                await lab.supervisor.submit("x", device_id="pc", task_id=f"t{i}")


async def test_a_crowd_held_back_by_a_checkpoint_shares_one_commit(tmp_path: Path) -> None:
    # While the checkpointer finishes a checkpoint, commits wait. Released, the first
    # waiter commits everyone's writes; the others must not each commit again whatever
    # was added since (one write each).
    journal = SqliteJournal(tmp_path / "j.sqlite3")
    async with memory_lab(journal=journal, shutdown_grace=0.1) as lab:
        await lab.connected("pc", task_duration=100.0)
        await lab.supervisor.submit("x", device_id="pc", task_id="running")
        held = journal._held = trio.Event()
        before = journal.stats.commits
        async with trio.open_nursery() as nursery:
            submit_in_loops(nursery, lab.supervisor, submitters=20, each=3)
            await trio.testing.wait_all_tasks_blocked()
            assert journal.stats.commits == before
            journal._held = None
            held.set()
        assert len(rows(tmp_path / "j.sqlite3")) == 61
        # A commit a round of the twenty, about: not twenty after the first.
        assert journal.stats.commits - before <= 6
