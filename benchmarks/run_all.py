"""Run every benchmark at sizes that fit about fifteen minutes on 2 cores (``make bench``).

Each benchmark runs in its own process, one after the other (they would disturb each
other's timings otherwise), prints its table, and writes ``benchmarks/results/<name>.json``;
the storm also draws ``benchmarks/results/storm.png``. This script bounds each one in time
and says at the end which ran, how long each took, and which failed.

What ``make bench`` runs, and what it leaves out to stay within its time:
- dispatch: 21 paired rounds of 500 sequential tasks, 6,000 tasks a side interleaved one by
  one, 15 throughput rounds, cProfile;
- fleet: 1,000 devices (15 paired rounds) and 3,000 devices (5 paired rounds, to fit the
  time), each round three sides: ours, ``bare-same`` (the same three exchanges: the 1.05
  target) and ``bare`` (connect + REGISTER only, reported beside it). Before its rounds, at
  each size, each bare baseline is calibrated: run twice at 64, 256, 1024 and unlimited
  concurrent handshakes, and given the fastest (printed; a run that has not finished
  within 30 s per 1,000 devices counts as failed: the bare client has no timeouts, and
  some of its exchanges hang). Ours uses open_supervisor's default
  ``max_concurrent_connections`` (None: no limit). 10,000 devices once, in the idle-CPU run
  at 30 s heartbeats (one paired round against bare-same at the concurrency calibrated at
  3,000); idle CPU at 1 s heartbeats with 1,000 devices (10,000 heartbeats a second do not
  fit this machine); tracemalloc at 500;
- storm: 1,000 and 5,000 devices, three jitter modes, and the bare floor;
- journal: 7 paired rounds of throughput (2,000 tasks, 200 submitters) and latency (300
  sequential tasks) with and without a journal, recovery of 100,000 queued tasks, file size
  over 8,000 tasks with retention (about 3 minutes).

The full-size fleet run (both baselines at 1,000 and 3,000, 15 paired rounds at 10,000, and
the idle runs; about 50 minutes here) is
``.venv/bin/python benchmarks/bench_fleet.py --sizes 1000,3000,10000 --rounds 15
--name fleet_full``. Expect a shared machine to stretch every figure of time.
``--quick`` runs everything small, to check that it all works (about 3 minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

FULL: dict[str, list[str]] = {
    "dispatch": ["bench_dispatch.py", "--profile"],
    "fleet": [
        "bench_fleet.py",
        "--sizes",
        "1000,3000",
        "--rounds",
        "15",
        "--rounds-large",
        "5",
        "--large-from",
        "3000",
        "--baselines",
        "same,register",
        "--idle",
        "10000:30,1000:1",
        "--tracemalloc-size",
        "500",
    ],
    "storm": ["bench_storm.py"],
    "journal": ["bench_journal.py"],
}

QUICK: dict[str, list[str]] = {
    "dispatch": [
        "bench_dispatch.py",
        "--rounds",
        "3",
        "--tasks",
        "200",
        "--throughput-rounds",
        "2",
        "--throughput-tasks",
        "1000",
        "--profile",
        "--profile-tasks",
        "500",
        "--interleaved",
        "1000",
        "--name",
        "quick_dispatch",
    ],
    "fleet": [
        "bench_fleet.py",
        "--sizes",
        "300",
        "--rounds",
        "2",
        "--calibrate-runs",
        "1",
        "--idle",
        "300:5,300:1",
        "--tracemalloc-size",
        "200",
        "--name",
        "quick_fleet",
    ],
    "storm": [
        "bench_storm.py",
        "--sizes",
        "300",
        "--reconnect-delay",
        "1",
        "--name",
        "quick_storm",
        "--plot",
        str(HERE / "results" / "quick_storm.png"),
    ],
    "journal": [
        "bench_journal.py",
        "--rounds",
        "2",
        "--tasks",
        "1000",
        "--latency-tasks",
        "100",
        "--floor-tasks",
        "300",
        "--recovery-tasks",
        "20000",
        "--recovery-rounds",
        "1",
        "--size-blocks",
        "3",
        "--name",
        "quick_journal",
    ],
}

# Generous bounds (the machine is shared: a busy neighbour can double a run's time); a
# benchmark still running after this long is killed and reported, and keeps the figures of
# the phases it finished in its JSON.
LIMITS = {"dispatch": 600.0, "fleet": 1500.0, "storm": 900.0, "journal": 480.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", default="dispatch,fleet,storm,journal", help="comma-separated subset to run"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    wanted = [name for name in args.only.split(",") if name]
    unknown = set(wanted) - set(plan)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")

    outcomes: list[tuple[str, str, float]] = []
    started = time.perf_counter()
    for name in wanted:
        command = [sys.executable, str(HERE / plan[name][0]), *plan[name][1:]]
        print(f"\n=== {name}: {' '.join(command[1:])}", flush=True)
        begin = time.perf_counter()
        proc = subprocess.Popen(command)
        try:
            code = proc.wait(timeout=LIMITS[name] * (0.5 if args.quick else 1.0))
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            proc.terminate()  # the benchmark kills its agent on SIGTERM
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            status = "killed: over its time limit"
        except BaseException:
            proc.terminate()
            proc.wait(timeout=15)
            raise
        outcomes.append((name, status, time.perf_counter() - begin))

    print("\n=== summary")
    for name, status, seconds in outcomes:
        print(f"  {name:<9} {status:<30} {seconds:6.0f} s")
    print(f"  {'total':<9} {'':<30} {time.perf_counter() - started:6.0f} s")
    return 0 if all(status == "ok" for _, status, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
