"""Instructions per sequential task, counted by callgrind: a figure the load of a shared
machine does not move.

Each side runs in its own process under ``valgrind --tool=callgrind`` (the agent runs in
another, uncounted): ours with each WebSocket client (`WebSocketConnector(websocket=...)`),
and the bare trio-websocket client of `bench_dispatch.py`. A side runs ``--small`` and then
``--large`` sequential tasks on one device in two processes; the difference of their totals
over the difference of tasks is its instructions per task, with start-up, imports and
registration cancelled out. Heartbeats are pushed out of the window (one an hour).

``.venv/bin/python benchmarks/bench_instructions.py`` takes about 5-10 minutes.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio
from _common import AgentProcess, exit_on_sigterm, print_table, quiet_logging, write_json
from bench_dispatch import bare_sequential, open_bares, ours_sequential

from galaxy_actors import DeviceManager
from galaxy_actors._transports._transport import WEBSOCKET_CLIENTS
from galaxy_actors.transport import WebSocketConnector

SIDES = [("bare", "trio-websocket"), *(("ours", client) for client in WEBSOCKET_CLIENTS)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", type=int, default=200, help="tasks of the short run")
    parser.add_argument("--large", type=int, default=1200, help="tasks of the long run")
    parser.add_argument("--name", default="instructions", help="results/<name>.json")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on one run")
    parser.add_argument("--side", choices=["ours", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--websocket", choices=WEBSOCKET_CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tasks", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def side_worker(args: argparse.Namespace) -> None:
    """The process callgrind counts: connect one device, run ``--tasks`` tasks."""
    if args.side == "ours":
        async with DeviceManager(
            task_name="count",
            heartbeat_interval=3600.0,
            connector=WebSocketConnector(websocket=args.websocket),
        ) as manager:
            if not await manager.register_device("d-0", args.url, "bench"):
                raise RuntimeError("could not register the device")
            await ours_sequential(manager, "d-0", "c", args.tasks)
        return
    async with trio.open_nursery() as nursery:
        (bare,) = await open_bares(args.url, 1, "count", nursery)
        await bare_sequential(bare, "c", args.tasks)
        nursery.cancel_scope.cancel()


def counted(args: argparse.Namespace, url: str, side: str, websocket: str, tasks: int) -> int:
    """Instructions of one whole run of a side (callgrind's total)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "callgrind.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--side",
            side,
            "--websocket",
            websocket,
            "--url",
            url,
            "--tasks",
            str(tasks),
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=args.timeout)
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no total in callgrind's output for {side}")
        return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_logging()
    if args.side:
        trio.run(side_worker, args)
        return 0
    exit_on_sigterm()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"parameters": vars(args), "per_task": {}}
    with AgentProcess() as agent:
        for side, websocket in SIDES:
            small = counted(args, agent.url, side, websocket, args.small)
            large = counted(args, agent.url, side, websocket, args.large)
            name = "bare" if side == "bare" else f"ours ({websocket})"
            results["per_task"][name] = (large - small) / (args.large - args.small)
            print(f"  {name}: {results['per_task'][name] / 1e6:.3f} M per task", flush=True)
    bare = results["per_task"]["bare"]
    print_table(
        f"Instructions per sequential task (callgrind, {args.large} - {args.small} tasks)",
        ["side", "M instructions", "ratio to bare"],
        [[name, f"{n / 1e6:.3f}", f"{n / bare:.2f}"] for name, n in results["per_task"].items()],
    )
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
