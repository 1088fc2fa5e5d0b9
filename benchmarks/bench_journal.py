"""The task journal's cost: a supervisor with a journal against the same one without.

1. Throughput: ``--devices`` devices, ``--submitters`` concurrent callers submitting
   ``--tasks`` tasks in all (``submit``, then the outcome awaited after the last submit),
   with a fresh SQLite journal against none. Each round runs both sides, in alternating
   order, against the same agent process; a round's ratio is ours-with over ours-without.
   Target: median ratio of submits/s >= 0.8 (group commit: concurrent submits share a
   commit). Tasks/s to the last outcome (two or three writes a task: the accept, carrying
   the "sent" of a task that goes straight to an idle device, else a "sent" of its own, and
   the outcome) is shown beside it.
2. Latency: one device, sequential ``run_task`` round trips, with and without a journal.
   Target: median ratio of the per-round medians <= 1.10. Beside it, in the same rounds, the
   floor SQLite sets: the journal's two durable writes of an at-most-once task (its accept,
   carrying its "sent", before the frame leaves; its outcome before ``result()`` returns),
   made alone on a file of the journal's settings (``--floor-tasks``), added to the round
   trip without a journal: no journal built on those two commits can measure below it. And
   the same two writes timed where the journal makes them, in the rounds with it (between
   round trips SQLite's code and pages have left the CPU's caches, so a write costs more
   there than in a loop of writes alone).
3. Recovery: a journal holding ``--recovery-tasks`` queued tasks (100,000); the time from
   `open_supervisor` to every task queued on its device again (open, quick_check, load,
   re-queue). Target: < 5 s.
4. File size under a steady load with retention (``keep_count``): the database and its WAL
   after each block of tasks; bounded if it stops growing once retention applies.
5. ``--breakdown`` (not in ``make bench``): where the cost goes. Throughput (as in 1) and
   sequential ``run_task`` (1,000 a side) with no journal, with the journal's writes made
   no-ops (its machinery alone), with each commit one ``write()`` to a plain file of its
   records in JSON (`AppendJournal`: not a journal, nothing reads it back) and with SQLite,
   in alternating order: submits/s, latency, the process's CPU per task, and each SQLite
   write timed where it is made.

The agent runs in another process (``agent_server.py``) and answers at once: the hardest
case for a ratio. ``--task-ms N``: it takes N ms over each task of the latency runs, as an
agent doing work does.
``.venv/bin/python benchmarks/bench_journal.py --rounds 3 --tasks 1000`` is a quick look.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from _common import (
    AgentProcess,
    exit_on_sigterm,
    fmt_ratio,
    percentile,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    ratio_summary,
    summary,
    verdict,
    write_json,
)

from galaxy_actors import Supervisor, open_supervisor
from galaxy_actors._actors._journal import TaskRecord
from galaxy_actors._actors._journal_batch import ACCEPT, ENDED
from galaxy_actors._actors._journal_file import connect_checked, create
from galaxy_actors._actors._journal_sqlite import _CHECKPOINT_PAGES, _PAGES_PER_COMMIT
from galaxy_actors._actors._task import Delivery
from galaxy_actors.journal import SqliteJournal
from galaxy_actors.transport import WebSocketConnector

TARGET_THROUGHPUT = 0.8
TARGET_LATENCY = 1.10
TARGET_RECOVERY_S = 5.0
DATA: dict[str, Any] = {"file": "report.xlsx", "sheet": 1}
WARM_UP = 20  # run_task calls before a latency side's timed ones


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="paired rounds per figure")
    parser.add_argument("--devices", type=int, default=20, help="devices for throughput")
    parser.add_argument("--submitters", type=int, default=200, help="concurrent submitters")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per side per round")
    parser.add_argument("--latency-tasks", type=int, default=300, help="sequential, per side")
    parser.add_argument(
        "--task-ms",
        type=float,
        default=0.0,
        help="how long the agent takes over each task of the latency runs (default: answers "
        "at once, the hardest case for the target)",
    )
    parser.add_argument(
        "--floor-tasks", type=int, default=2000, help="SQLite-only write pairs, per round"
    )
    parser.add_argument("--recovery-tasks", type=int, default=100_000)
    parser.add_argument("--recovery-rounds", type=int, default=3)
    parser.add_argument("--size-blocks", type=int, default=8, help="blocks of the size run")
    parser.add_argument("--size-block-tasks", type=int, default=1000)
    parser.add_argument("--keep-count", type=int, default=1500, help="retention, size run")
    parser.add_argument(
        "--breakdown",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only the latency breakdown, this many rounds (1,000 tasks a side)",
    )
    parser.add_argument("--name", default="journal", help="results/<name>.json")
    return parser.parse_args(argv)


class TimedJournal(SqliteJournal):
    """`SqliteJournal` whose writes are timed where they are made (``writes``: seconds of
    wall time and, with ``cpu``, of this thread's CPU, each), or made no-ops (``noop``: the
    machinery alone, nothing reaches SQLite)."""

    def __init__(self, path: Path, *, noop: bool = False, cpu: bool = True) -> None:
        super().__init__(path, keep_count=10**9)
        self.noop = noop
        self.cpu = cpu
        self.writes: list[tuple[float, float]] = []

    def _write(self, batch: Any) -> str | None:
        if self.noop:
            return None
        cpu = time.thread_time if self.cpu else _zero
        wall, used = time.perf_counter(), cpu()
        try:
            return super()._write(batch)
        finally:
            self.writes.append((time.perf_counter() - wall, cpu() - used))


class AppendJournal(SqliteJournal):
    """The simplest durable write, in place of SQLite's: each commit is one ``write()`` of
    its records, each JSON and length-prefixed, to a plain file. Not a journal (nothing
    reads it back); it answers what the journal's targets would measure on a store whose
    commit costs about that, with the same machinery around it. Its JSON per record costs
    about what SQLite's row does in a batch: its submits/s say so."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, keep_count=10**9)
        self._log = path.with_name(path.name + ".log").open("ab", buffering=0)

    def _write(self, batch: Any) -> str | None:
        records = []
        for sql, params, _commit, _retry in batch:
            body = json.dumps([sql[:6], params], separators=(",", ":")).encode()
            records.append(len(body).to_bytes(4, "little") + body)
        self._log.write(b"".join(records))
        return None

    def _close(self) -> None:
        self._log.close()
        super()._close()


def _zero() -> float:
    return 0.0


def supervisor(journal: Path | SqliteJournal | None) -> Any:
    """The two sides differ by the journal only."""
    if isinstance(journal, Path):
        journal = SqliteJournal(journal, keep_count=10**9)
    return open_supervisor(task_name="bench", connector=WebSocketConnector(), journal=journal)


async def connect_all(sup: Supervisor, url: str, devices: int) -> None:
    for i in range(devices):
        sup.add_device(f"d-{i}", url, "Linux", connect=False)
    async with trio.open_nursery() as nursery:
        for i in range(devices):
            nursery.start_soon(sup.connect, f"d-{i}")


async def throughput_side(
    url: str, args: argparse.Namespace, journal: Path | SqliteJournal | None, tag: str
) -> tuple[float, float]:
    """(submits/s, tasks/s to the last outcome) of one side, one round."""
    async with supervisor(journal) as sup:
        await connect_all(sup, url, args.devices)
        per = args.tasks // args.submitters
        handles: list[Any] = []

        async def submitter(s: int) -> None:
            for i in range(per):
                handles.append(
                    await sup.submit(
                        "x", DATA, device_id=f"d-{(s + i) % args.devices}", task_id=f"{tag}-{s}-{i}"
                    )
                )

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for s in range(args.submitters):
                nursery.start_soon(submitter, s)
        submitted = time.perf_counter()
        for handle in handles:
            await handle.wait()
        ended = time.perf_counter()
    n = per * args.submitters
    return n / (submitted - start), n / (ended - start)


async def latency_side(
    url: str,
    n: int,
    journal: Path | SqliteJournal | None,
    tag: str,
    cpu: list[float] | None = None,
    data: dict[str, Any] = DATA,
) -> list[float]:
    """Seconds of each of ``n`` sequential `run_task` of ``data``; ``cpu`` gets the
    process's CPU seconds per task over them."""
    async with supervisor(journal) as sup:
        await connect_all(sup, url, 1)
        for i in range(WARM_UP):
            await sup.run_task("x", data, device_id="d-0", task_id=f"{tag}-w{i}")
        times = []
        cpu_start = time.process_time()
        for i in range(n):
            start = time.perf_counter()
            await sup.run_task("x", data, device_id="d-0", task_id=f"{tag}-{i}")
            times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append((time.process_time() - cpu_start) / n)
    return times


_SIDES: tuple[tuple[str, str], ...] = (
    ("none", "no journal"),
    ("noop", "journal, writes made no-ops (its machinery)"),
    ("append", "journal, one write() to a plain file a commit"),
    ("sqlite", "journal, SQLite"),
)


def _breakdown_journal(side: str, path: Path) -> SqliteJournal | None:
    if side == "none":
        return None
    if side == "append":
        return AppendJournal(path)
    return TimedJournal(path, noop=side == "noop")


async def breakdown(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Throughput and latency with no journal, a no-op one, an append-only file and
    SQLite, in alternating order."""
    sides = [side for side, _ in _SIDES]
    sub: dict[str, list[float]] = {side: [] for side in sides}
    lat: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    writes: list[tuple[float, float]] = []
    for r in range(args.breakdown):
        for side in sides if r % 2 == 0 else sides[::-1]:
            journal = _breakdown_journal(side, work / f"bd-tp-{side}-{r}.sqlite3")
            submits, _ = await throughput_side(args.agent_url, args, journal, f"t{side}{r}")
            sub[side].append(submits)
            journal = _breakdown_journal(side, work / f"bd-{side}-{r}.sqlite3")
            times = await latency_side(args.agent_url, 1000, journal, f"{side}{r}", cpu[side])
            lat[side].append(percentile(times, 50))
            if isinstance(journal, TimedJournal):
                writes.extend(journal.writes)
        print(
            "  round {}/{}: submits/s {}; latency {} µs; CPU per task {} µs ({})".format(
                r + 1,
                args.breakdown,
                " / ".join(f"{sub[side][-1]:.0f}" for side in sides),
                " / ".join(f"{lat[side][-1] * 1e6:.0f}" for side in sides),
                " / ".join(f"{cpu[side][-1] * 1e6:.0f}" for side in sides),
                " / ".join(sides),
            ),
            flush=True,
        )
    return {
        "submits_per_s": {side: summary(sub[side]) for side in sides},
        "submit_ratio": {side: ratio_summary(sub[side], sub["none"]) for side in sides[1:]},
        "latency_us": {side: summary([t * 1e6 for t in lat[side]]) for side in sides},
        "latency_ratio": {side: ratio_summary(lat[side], lat["none"]) for side in sides[1:]},
        "cpu_us": {side: summary([c * 1e6 for c in cpu[side]]) for side in sides},
        "write_wall_us": summary([w * 1e6 for w, _ in writes]),
        "write_cpu_us": summary([c * 1e6 for _, c in writes]),
    }


def report_breakdown(results: dict[str, Any]) -> None:
    sub, lat, cpu = results["submits_per_s"], results["latency_us"], results["cpu_us"]
    rows = []
    for side, name in _SIDES:
        baseline = side == "none"
        rows.append(
            [
                name,
                f"{sub[side]['median']:.0f}",
                "1" if baseline else fmt_ratio(results["submit_ratio"][side]),
                f"{lat[side]['median']:.0f}",
                "1" if baseline else fmt_ratio(results["latency_ratio"][side]),
                f"{cpu[side]['median']:.0f}",
                "" if baseline else f"+{cpu[side]['median'] - cpu['none']['median']:.0f}",
            ]
        )
    print_table(
        "Where the journal's cost goes (ratio: median [quartiles] of rounds, against none)",
        ["journal", "submits/s", "ratio", "latency µs", "ratio", "CPU µs/task", "added"],
        rows,
    )
    wall, cpu_w = results["write_wall_us"], results["write_cpu_us"]
    print(
        f"one SQLite write where it is made: {wall['median']:.0f} µs wall, "
        f"{cpu_w['median']:.0f} µs CPU of its thread (median of {wall['n']:.0f})"
    )


def sqlite_floor(path: Path, n: int) -> float:
    """Median seconds of the two writes an at-most-once `run_task` commits (its accept as
    sent, then its outcome), each its own transaction, as the journal makes them for a lone
    caller: SQLite and the sqlite3 module alone, on a fresh file with the journal's schema
    and settings (WAL, synchronous=NORMAL), checkpointed as often as the journal does."""
    create(path)
    db = connect_checked(path, "normal", autocheckpoint=False)
    outcome = '{"status": "completed", "result": {"ok": true}, "error": null}'
    clock = time.perf_counter
    # As often as the journal checkpoints: every _CHECKPOINT_PAGES counted pages, which it
    # counts as _PAGES_PER_COMMIT for a commit of one write; two commits a pair.
    pairs_per_checkpoint = _CHECKPOINT_PAGES // _PAGES_PER_COMMIT // 2
    pairs = []
    try:
        for i in range(n):
            start = clock()
            row = (f"f-{i}", "x", '{"file": "report.xlsx", "sheet": 1}', "d-0", "[]")
            db.execute(ACCEPT, (*row, 1000.0, "at_most_once", 0, "sent"))
            db.execute(ENDED, (outcome, time.time(), f"f-{i}"))
            pairs.append(clock() - start)
            if i % pairs_per_checkpoint == pairs_per_checkpoint - 1:  # off this path
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as exc:
        raise SystemExit(f"SQLite floor: {exc}") from None
    finally:
        db.close()
    return percentile(pairs[n // 10 :], 50)


async def paired(args: argparse.Namespace, url: str, work: Path) -> dict[str, Any]:
    sub = {"with": [], "without": []}  # type: dict[str, list[float]]
    done = {"with": [], "without": []}  # type: dict[str, list[float]]
    lat = {"with": [], "without": []}  # type: dict[str, list[float]]
    lat_all = {"with": [], "without": []}  # type: dict[str, list[float]]
    floor: list[float] = []  # seconds of SQLite's two writes, a round's median
    in_situ: list[float] = []  # the same, timed where the journal makes them
    latency_data = {**DATA, "sim_duration": args.task_ms / 1000} if args.task_ms else DATA
    for r in range(args.rounds):
        # Alternate which side goes first, so a drift of the machine favours neither.
        for side in ("with", "without") if r % 2 == 0 else ("without", "with"):
            journal = work / f"tp-{r}.sqlite3" if side == "with" else None
            s, d = await throughput_side(args.agent_url, args, journal, f"{side}{r}")
            sub[side].append(s)
            done[side].append(d)
            timed = None
            if side == "with":
                timed = TimedJournal(work / f"lat-{r}.sqlite3", cpu=False)
            times = await latency_side(
                args.agent_url, args.latency_tasks, timed, f"{side}{r}", data=latency_data
            )
            lat[side].append(percentile(times, 50))
            lat_all[side].extend(times)
            if timed is not None:
                # Two writes a task (its accept as sent, its outcome), warm-up's left out.
                write_times = [w for w, _ in timed.writes[2 * WARM_UP :]]
                in_situ.append(2 * percentile(write_times, 50))
        floor.append(sqlite_floor(work / f"floor-{r}.sqlite3", args.floor_tasks))
        print(
            f"  round {r + 1}/{args.rounds}: submits/s {sub['with'][-1]:.0f} with, "
            f"{sub['without'][-1]:.0f} without; latency {lat['with'][-1] * 1e6:.0f} / "
            f"{lat['without'][-1] * 1e6:.0f} µs; SQLite's two writes {floor[-1] * 1e6:.0f} µs "
            f"alone, {in_situ[-1] * 1e6:.0f} µs in place",
            flush=True,
        )
    return {
        "submits_per_s": {k: summary(v) for k, v in sub.items()},
        "submit_ratio": ratio_summary(sub["with"], sub["without"]),
        "tasks_per_s": {k: summary(v) for k, v in done.items()},
        "tasks_ratio": ratio_summary(done["with"], done["without"]),
        "latency_us": {k: summary([t * 1e6 for t in v]) for k, v in lat_all.items()},
        "latency_ratio": ratio_summary(lat["with"], lat["without"]),
        "sqlite_writes_us": summary([f * 1e6 for f in floor]),
        "latency_floor_ratio": ratio_summary(
            [w + f for w, f in zip(lat["without"], floor, strict=True)], lat["without"]
        ),
        "sqlite_writes_in_place_us": summary([f * 1e6 for f in in_situ]),
        "latency_in_place_floor_ratio": ratio_summary(
            [w + f for w, f in zip(lat["without"], in_situ, strict=True)], lat["without"]
        ),
    }


async def fill_journal(path: Path, n: int) -> None:
    """``n`` queued tasks, as a supervisor would have accepted them, in blocks of commits."""
    journal = SqliteJournal(path)
    await journal.open()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        for start in range(0, n, 5000):
            commits = [
                journal.accept(
                    TaskRecord(
                        f"q-{i}",
                        "x",
                        '{"file": "report.xlsx"}',
                        "d-0",
                        (),
                        1000.0,
                        Delivery.AT_LEAST_ONCE,
                        i % 3,
                    )
                )
                for i in range(start, min(n, start + 5000))
            ]
            for commit in commits:
                await commit.wait()
        nursery.cancel_scope.cancel()
    await journal.aclose()


async def recovery(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / "recovery.sqlite3"
    await fill_journal(path, args.recovery_tasks)
    seconds = []
    for _ in range(args.recovery_rounds):
        start = time.perf_counter()
        async with open_supervisor(journal=path, shutdown_grace=0.0) as sup:
            sup.add_device("d-0", "ws://127.0.0.1:9/ws", "Linux", connect=False)
            queued = sup.snapshot("d-0").queue_depth
            seconds.append(time.perf_counter() - start)
        # A graceful stop keeps queued work: the next round recovers the same tasks.
    return {
        "tasks": args.recovery_tasks,
        "queued": queued,
        "seconds": summary(seconds),
        "file_bytes": path.stat().st_size,
    }


def file_sizes(path: Path) -> tuple[int, int]:
    wal = Path(f"{path}-wal")
    return path.stat().st_size, wal.stat().st_size if wal.exists() else 0


async def size_growth(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / "size.sqlite3"
    journal = SqliteJournal(path, keep_count=args.keep_count, compact_every=500)
    rows = []
    async with open_supervisor(connector=WebSocketConnector(), journal=journal) as sup:
        await connect_all(sup, args.agent_url, args.devices)
        done = 0
        for block in range(args.size_blocks):
            async with trio.open_nursery() as nursery:
                for s in range(args.submitters):

                    async def caller(s: int = s, block: int = block) -> None:
                        for i in range(args.size_block_tasks // args.submitters):
                            await sup.run_task(
                                "x",
                                DATA,
                                device_id=f"d-{s % args.devices}",
                                task_id=f"s{block}-{s}-{i}",
                            )

                    nursery.start_soon(caller)
            done += args.size_block_tasks
            db, wal = file_sizes(path)
            rows.append({"tasks": done, "db_bytes": db, "wal_bytes": wal})
    return {"keep_count": args.keep_count, "blocks": rows}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if k != "agent_url"}}
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as tmp:
        work = Path(tmp)
        if args.breakdown:
            print("latency breakdown", flush=True)
            results["breakdown"] = await breakdown(args, work)
            return results
        print("throughput and latency, paired rounds", flush=True)
        results.update(await paired(args, args.agent_url, work))
        write_json(args.name, results, quiet=True)
        print("recovery", flush=True)
        results["recovery"] = await recovery(args, work)
        write_json(args.name, results, quiet=True)
        print("file size under a steady load", flush=True)
        results["size"] = await size_growth(args, work)
    return results


def report(results: dict[str, Any]) -> None:
    sub, done, lat = results["submits_per_s"], results["tasks_per_s"], results["latency_us"]
    rec = results["recovery"]
    rows = [
        [
            "submits/s",
            f"{sub['with']['median']:.0f}",
            f"{sub['without']['median']:.0f}",
            fmt_ratio(results["submit_ratio"]),
            f">= {TARGET_THROUGHPUT}",
            _verdict(results["submit_ratio"]["median"], TARGET_THROUGHPUT, at_most=False),
        ],
        [
            "tasks/s to the last outcome",
            f"{done['with']['median']:.0f}",
            f"{done['without']['median']:.0f}",
            fmt_ratio(results["tasks_ratio"]),
            "",
            "",
        ],
        [
            "run_task latency median (µs)" + _task_ms(results),
            f"{lat['with']['median']:.0f}",
            f"{lat['without']['median']:.0f}",
            fmt_ratio(results["latency_ratio"]),
            f"<= {TARGET_LATENCY}",
            _verdict(results["latency_ratio"]["median"], TARGET_LATENCY),
        ],
        _floor_row(results, "alone", "sqlite_writes_us", "latency_floor_ratio"),
        _floor_row(
            results, "where made", "sqlite_writes_in_place_us", "latency_in_place_floor_ratio"
        ),
        [
            f"recovery of {rec['tasks']:,} queued (s)",
            f"{rec['seconds']['median']:.2f}",
            "",
            "",
            f"< {TARGET_RECOVERY_S}",
            _verdict(rec["seconds"]["median"], TARGET_RECOVERY_S),
        ],
    ]
    print_table(
        "Journal: with a journal vs without (ratio: median [quartiles] of paired rounds)",
        ["figure", "with", "without", "ratio with/without", "target", "verdict"],
        rows,
    )
    size = results["size"]
    print_table(
        f"File size under a steady load, keep_count={size['keep_count']}",
        ["tasks run", "database (KiB)", "WAL (KiB)"],
        [
            [f"{b['tasks']:,}", f"{b['db_bytes'] / 1024:.0f}", f"{b['wal_bytes'] / 1024:.0f}"]
            for b in size["blocks"]
        ],
    )


def _task_ms(results: dict[str, Any]) -> str:
    ms = results["args"].get("task_ms", 0.0)
    return f", tasks of {ms:g} ms" if ms else ""


def _floor_row(results: dict[str, Any], how: str, writes: str, ratio: str) -> list[str]:
    """The report's row of a latency floor: the round trip without a journal plus SQLite's
    two writes, timed ``how``."""
    without = results["latency_us"]["without"]["median"]
    above = results[ratio]["median"] > TARGET_LATENCY
    return [
        f"  floor: without + SQLite's two writes {how} (µs)",
        f"{without + results[writes]['median']:.0f}",
        f"{without:.0f}",
        fmt_ratio(results[ratio]),
        "",
        "above the target: not reachable on SQLite" if above else "",
    ]


def _verdict(value: float, target: float, *, at_most: bool = True) -> str:
    """`verdict`, and by how much a missed target is missed."""
    said = verdict(value, target, at_most=at_most)
    if said == "NOT met":
        said += f" (by {abs(value - target) / target:.0%})"
    return said


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    exit_on_sigterm()
    raise_nofile_limit()
    with AgentProcess() as agent:
        args.agent_url = agent.url
        results = trio.run(run, args)
    if args.breakdown:
        report_breakdown(results["breakdown"])
    else:
        report(results)
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
