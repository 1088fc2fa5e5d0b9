"""The journal's promise at every kill point: a supervisor killed after its k-th commit.

A Hypothesis property: draw a workload (devices, at-most-once and at-least-once tasks,
priorities, durations, submission times) and a kill point k; run it on the in-memory
transport, in virtual time, against a real SQLite file; kill the supervisor as its
journal is about to make commit k+1; start a new supervisor on what the disk held at that
instant, and check what a user relies on.

How the kill is made faithful to a process death (`DyingJournal`):

- the journal refuses the (k+1)-th commit *before* writing anything, and every write after
  it, whoever makes it (its writer task, or a waiter committing for everyone): the commits
  waiting on it never settle, as nobody in a dead process sees one;
- at that instant it copies the database and its WAL (what a killed process leaves on
  disk, WAL replay included) and the agents' records are cut there: frames a dead process
  cannot have sent are not counted;
- its `run` then raises `Killed`, which ends the supervisor's block; the second life
  starts on the copy, so nothing the dying one does can leak into it (the original is
  compared with the copy at the end: nothing was written after the kill point).

Virtual time stands still while the journal works in its thread (`SteadyJournal`): an
agent's task does not end, nor a task's timeout pass, "during" a disk write, and a kill
point means the same state from one run to the next.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lab import memory_lab

from galaxy_actors import Delivery, OutcomeUnknown, TaskHandle, UnknownTask
from galaxy_actors._actors._journal import Commit, decode_outcome
from galaxy_actors.journal import SqliteJournal
from galaxy_actors.testing import SimulatedAgent

DEVICES = ("d0", "d1", "d2")
# Far more than a workload takes (its tasks run for at most 2 s each, submitted within 3 s).
LIFE = 600.0


_T = TypeVar("_T")


class Killed(Exception):
    """The supervisor's process died here."""


class SteadyJournal(SqliteJournal):
    """A `SqliteJournal` during whose disk work virtual time stands still.

    MockClock(autojump_threshold=0) jumps to the next deadline as soon as every task waits,
    and a task waiting for a worker thread waits: a commit would take 1000 virtual seconds
    (a task's whole timeout) as readily as none. A task that checkpoints meanwhile keeps the
    clock where it is, as if the disk were instant."""

    async def _commit_pending(self, waiter: Commit | None = None) -> None:
        async with _clock_held():
            await super()._commit_pending(waiter)

    async def _in_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        # Opening, closing, checkpoints, compaction's reads: all the worker-thread work.
        async with _clock_held():
            return await super()._in_thread(fn, *args)


@contextlib.asynccontextmanager
async def _clock_held() -> AsyncIterator[None]:
    async def hold() -> None:
        while True:
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        yield
        nursery.cancel_scope.cancel()


class DyingJournal(SteadyJournal):
    """A `SqliteJournal` that dies when it is about to make its (k+1)-th commit."""

    def __init__(self, path: Path, kill_after: int, on_death: Callable[[], None]) -> None:
        super().__init__(path)
        self.kill_after = kill_after
        self.on_death = on_death
        self.dead = False
        # From the kill point on nothing is written, by whichever task asks for a commit
        # while the files are being copied.
        self.dying = False
        self.died = trio.Event()
        self.snapshot = path.with_name("at-the-kill.sqlite3")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(super().run)
            await self.died.wait()
            raise Killed

    async def _commit_pending(self, waiter: Commit | None = None) -> None:
        if not self.dying and self._pending and self.stats.commits >= self.kill_after:
            await self.kill()
        if self.dying:
            self._pending = []  # never written, never settled: the process is gone
            return
        await super()._commit_pending(waiter)

    async def kill(self) -> None:
        """Die now: copy what is on disk (no write is in progress: commits are made in the
        event loop's thread, and a checkpoint holds the limiter), cut the agents' records,
        and make `run` raise `Killed`."""
        if self.dying:
            return
        self.dying = True
        async with _clock_held():
            await trio.to_thread.run_sync(self._copy_files, limiter=self._thread)
        self.dead = True
        self.on_death()
        self.died.set()

    def _copy_files(self) -> None:
        shutil.copyfile(self.path, self.snapshot)
        wal = Path(f"{self.path}-wal")
        if wal.exists():
            shutil.copyfile(wal, f"{self.snapshot}-wal")


@attrs.frozen
class Job:
    task_id: str
    device: str
    delivery: Delivery
    priority: int
    duration: float
    at: float  # virtual seconds after the start


@st.composite
def workloads(draw: st.DrawFn) -> list[Job]:
    count = draw(st.integers(3, 12))
    return [
        Job(
            f"t{i}",
            # Mostly one device and one priority: queues form, and order shows.
            draw(st.sampled_from(["d0", "d0", "d0", "d1", "d2"])),
            draw(st.sampled_from(list(Delivery))),
            draw(st.sampled_from([0, 0, 0, -1, 1])),
            draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
            draw(st.sampled_from([0.0, 0.0, 0.25, 1.0, 3.0])),
        )
        for i in range(count)
    ]


@attrs.define
class FirstLife:
    """What the dying supervisor's callers and agents saw before the kill."""

    accepted: set[str] = attrs.Factory(set)
    outcomes: dict[str, Any] = attrs.Factory(dict)
    received: dict[str, list[str]] = attrs.Factory(dict)


def task_frames(agent: SimulatedAgent) -> list[str]:
    return [
        (f.message.session_id or "").split("@", 1)[1]
        for f in agent.received
        if f.message is not None and f.message.type == "task"
    ]


def journal_rows(path: Path) -> dict[str, tuple[int, str, str | None]]:
    db = sqlite3.connect(path)
    try:
        return {
            task_id: (seq, state, outcome)
            for seq, task_id, state, outcome in db.execute(
                "SELECT seq, task_id, state, outcome FROM tasks"
            )
        }
    finally:
        db.close()


async def first_life(path: Path, jobs: list[Job], kill_after: int) -> tuple[FirstLife, Path]:
    seen = FirstLife()
    agents: dict[str, SimulatedAgent] = {}

    def on_death() -> None:
        # Frames a dead process cannot have sent are not counted.
        seen.received = {d: task_frames(agent) for d, agent in agents.items()}

    journal = DyingJournal(path, kill_after, on_death)

    remaining = len(jobs)
    all_done = trio.Event()

    async def run(job: Job, sup: Any) -> None:
        nonlocal remaining
        await trio.sleep(job.at)
        if journal.dead:
            return  # a caller of a dead process does nothing more
        handle: TaskHandle = await sup.submit(
            job.task_id,
            {"sim_duration": job.duration},
            device_id=job.device,
            task_id=job.task_id,
            delivery=job.delivery,
            priority=job.priority,
        )
        if journal.dead:
            return
        seen.accepted.add(job.task_id)
        await handle.wait()
        if journal.dead:
            return  # an outcome of the dying supervisor's shutdown: nobody is left to see it
        seen.outcomes[job.task_id] = handle.outcome
        remaining -= 1
        if not remaining:
            all_done.set()

    try:
        async with memory_lab(journal=journal, shutdown_grace=0.1) as lab:
            for device in DEVICES:
                agents[device] = await lab.connected(device)
            # The callers run beside the supervisor (in the lab's nursery), as a program's
            # tasks would; the lab cancels them when the supervisor's block ends.
            for job in jobs:
                lab.nursery.start_soon(run, job, lab.supervisor)
            await all_done.wait()
            # The workload ended before commit k+1: the kill comes now.
            await journal.kill()
            await trio.sleep_forever()
    except* Killed:
        pass
    assert journal.dead
    return seen, journal.snapshot


async def second_life(
    snapshot: Path, jobs: list[Job]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    outcomes: dict[str, Any] = {}
    async with memory_lab(journal=SteadyJournal(snapshot)) as lab:
        agents = {device: await lab.connected(device) for device in DEVICES}
        for job in jobs:
            try:
                handle = await lab.supervisor.task(job.task_id)
            except UnknownTask as exc:  # never accepted
                outcomes[job.task_id] = exc
                continue
            await handle.wait()
            outcomes[job.task_id] = handle.outcome
        received = {d: task_frames(agent) for d, agent in agents.items()}
    return outcomes, received


def check(
    jobs: list[Job],
    seen: FirstLife,
    at_kill: dict[str, tuple[int, str, str | None]],
    outcomes: dict[str, Any],
    again: dict[str, list[str]],
    final: dict[str, tuple[int, str, str | None]],
) -> None:
    by_id = {job.task_id: job for job in jobs}
    before = [t for frames in seen.received.values() for t in frames]
    after = [t for frames in again.values() for t in frames]
    # A submit that returned was on disk; a frame left only for a task on disk.
    assert seen.accepted <= set(at_kill)
    assert set(before) <= set(at_kill)
    # An outcome a caller saw is the one the journal keeps.
    for task_id, outcome in seen.outcomes.items():
        assert at_kill[task_id][1] == "ended", task_id
        assert outcomes[task_id] == outcome, task_id
    for task_id, job in by_id.items():
        if task_id not in at_kill:
            # Not accepted: it left no trace, and nothing ran it.
            assert task_id not in final and task_id not in after
            continue
        _, state, stored = at_kill[task_id]
        outcome = outcomes[task_id]
        # Every accepted task ends exactly once: by its journaled outcome, or after recovery.
        assert final[task_id][1] == "ended", task_id
        if state == "ended":
            assert stored is not None
            assert outcome == decode_outcome(task_id, stored), task_id
            assert final[task_id][2] == stored, task_id
            assert task_id not in after, f"{task_id} ended before the kill, and ran again"
        elif job.delivery is Delivery.AT_MOST_ONCE:
            assert before.count(task_id) + after.count(task_id) <= 1, f"{task_id} ran twice"
            if state == "sent":
                assert isinstance(outcome, OutcomeUnknown), task_id
                assert task_id not in after
            else:
                assert task_id not in before, f"{task_id} left before its 'sent' was on disk"
                assert after.count(task_id) == 1 and outcome.ok, task_id
        else:
            # At-least-once, on disk, no outcome: it runs (again, if it had been sent).
            assert after.count(task_id) == 1 and outcome.ok, task_id
    # Recovered tasks run in (priority, submission) order on each device, the one that was
    # on the device (sent, at-least-once) at the head of its priority.
    for device, frames in again.items():
        expected = sorted(
            (
                t
                for t, (_, state, _) in at_kill.items()
                if by_id[t].device == device
                and state != "ended"
                and not (state == "sent" and by_id[t].delivery is Delivery.AT_MOST_ONCE)
            ),
            key=lambda t: (by_id[t].priority, at_kill[t][1] != "sent", at_kill[t][0]),
        )
        assert frames == expected, device


# Each example is two supervisor lives on a real SQLite file: the suite runs a fixed set of
# 25 (CI derandomizes), `make soak` (GALAXY_ACTORS_SCENARIOS=10000) 1,250.
KILL_EXAMPLES = max(25, int(os.environ.get("GALAXY_ACTORS_SCENARIOS", "200")) // 8)


@settings(max_examples=KILL_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs=workloads(), kill_after=st.integers(0, 24))
def test_a_kill_after_any_commit_loses_nothing_and_runs_nothing_twice(
    tmp_path_factory: Any, jobs: list[Job], kill_after: int
) -> None:
    path = tmp_path_factory.mktemp("kill") / "j.sqlite3"
    by_delivery = {job.task_id: job.delivery.value for job in jobs}

    async def scenario() -> None:
        # Virtual seconds: a hang fails the example instead of running the clock forever.
        with trio.fail_after(LIFE):
            seen, snapshot = await first_life(path, jobs, kill_after)
        at_kill = journal_rows(snapshot)
        states = {(by_delivery[t], state) for t, (_, state, _) in at_kill.items()}
        for delivery, state in sorted(states):
            event(f"at the kill: {delivery} {state}")
        event("killed mid-workload" if len(seen.outcomes) < len(jobs) else "killed at the end")
        # The dying supervisor wrote nothing after the kill point.
        assert journal_rows(path) == at_kill
        with trio.fail_after(LIFE):
            outcomes, again = await second_life(snapshot, jobs)
        check(jobs, seen, at_kill, outcomes, again, journal_rows(snapshot))

    trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))
