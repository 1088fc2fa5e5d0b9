"""The ``galaxy-actors`` console command.

Subcommands: ``run`` (the supervisor process), ``demo``, ``agent`` (one simulated agent),
and the clients of a running supervisor's control endpoint (``_cli_control``): ``submit``,
``status``, ``watch``, ``connect``, ``disconnect``, ``add``, ``remove``, ``cancel``,
``reload``.
Exit statuses: 0 ok; 1 a task failed or a runtime error (endpoint unreachable, cannot
bind); 2 a usage or configuration mistake, with nothing started. The reference is
``docs/process.md``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from .. import __version__
from .._sansio._redact import RedactingFilter
from ._cli_control import (
    CLIENT_COMMANDS,
    PROG,
    UsageError,
    add_client_commands,
    positive_float,
    run_client_command,
    until_signal,
)
from ._config import ConfigError, MetricsConfig, load_config, parse_listen
from ._logging import setup_logging
from ._serve import run_supervisor_process
from ._view import VIEW_MODES, choose_view

if TYPE_CHECKING:
    from ..testing import SimulatedAgent

__all__ = ["build_parser", "main"]

# --------------------------------------------------------------------------- parser


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_FAULTS = {
    "drop-every": "drop every connection every S seconds",
    "stall-heartbeats": "never answer heartbeats",
    "reject-registration": "reject every registration with TEXT",
    "refuse-connections": "refuse every connection (HTTP 503)",
    "reject-tasks": "refuse every task with TEXT",
    "lose-task-end": "acknowledge tasks, never end them",
}


def _fault(text: str) -> tuple[str, str | None]:
    name, sep, value = text.partition("=")
    takes_value = name in ("drop-every", "reject-registration", "reject-tasks")
    if name not in _FAULTS or takes_value != bool(sep) or (takes_value and not value):
        choices = "drop-every=S, stall-heartbeats, reject-registration=TEXT, "
        choices += "refuse-connections, reject-tasks=TEXT, lose-task-end"
        raise argparse.ArgumentTypeError(f"unknown fault {text!r}; expected one of {choices}")
    if name == "drop-every":
        positive_float(value)
    return name, value if sep else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``galaxy-actors``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Supervise fleets of AIP device agents (docs/process.md)."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    logs = argparse.ArgumentParser(add_help=False)
    logs.add_argument(
        "--log-format", choices=("text", "json"), help="log records as (default: text)"
    )
    logs.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    view = argparse.ArgumentParser(add_help=False)
    view.add_argument(
        "--view",
        choices=VIEW_MODES,
        default="auto",
        help="status display: live table on a terminal, plain lines otherwise (default: auto)",
    )
    run = sub.add_parser("run", parents=[logs, view], help="supervise the devices of a TOML file")
    run.add_argument("config", type=Path, help="configuration file (docs/process.md)")
    run.add_argument(
        "--metrics-listen",
        type=_listen,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz here (overrides [metrics] listen)",
    )

    demo = sub.add_parser("demo", parents=[logs, view], help="a simulated fleet, some flaky")
    demo.add_argument("--devices", type=int, default=8, help="simulated agents (default: 8)")
    demo.add_argument("--flaky", type=_fraction, default=0.25, help="fraction that is flaky")
    demo.add_argument("--duration", type=positive_float, default=20.0, help="seconds to run")
    demo.add_argument("--seed", type=int, help="random seed, to repeat a run (default: random)")
    demo.add_argument("--rate", type=positive_float, default=8.0, help="tasks per second")

    agent = sub.add_parser("agent", parents=[logs], help="serve one simulated agent")
    agent.add_argument("--port", type=int, required=True, help="TCP port (0: any free port)")
    agent.add_argument("--host", default="127.0.0.1", help="address (default: 127.0.0.1)")
    agent.add_argument("--device", action="append", metavar="ID", help="served device id(s)")
    agent.add_argument("--token", help="require ?token=TOKEN on the handshake")
    agent.add_argument(
        "--fault",
        type=_fault,
        action="append",
        default=[],
        help="; ".join(f"{name}: {what}" for name, what in _FAULTS.items()),
    )
    agent.add_argument("--task-duration", type=float, default=0.0, help="seconds per task")

    add_client_commands(sub)
    return parser


# --------------------------------------------------------------------------- commands


def _logs(log_format: str, level: str) -> None:
    # Every record passes the handler: the one place that masks URLs in all of them.
    setup_logging(log_format, level).addFilter(RedactingFilter())


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.metrics_listen is not None:
        host, port = args.metrics_listen
        metrics = config.metrics or MetricsConfig()
        config = attrs.evolve(config, metrics=attrs.evolve(metrics, host=host, port=port))
    if config.metrics is not None:
        try:
            importlib.import_module("galaxy_actors._process._metrics")
        except ImportError as exc:  # checked before anything starts
            print(f"{PROG}: {config.source}: metrics: {exc}", file=sys.stderr)
            return 2
    _logs(args.log_format or config.logging.format, args.log_level or config.logging.level)
    view = choose_view(args.view, sys.stdout)
    if config.cluster is not None:
        try:
            # Imported here: coredis is the cluster extra's, needed by nodes only.
            from ._serve_cluster import run_cluster_node
        except ImportError as exc:  # checked before anything starts
            print(f"{PROG}: {config.source}: cluster: {exc}", file=sys.stderr)
            return 2
        return trio.run(partial(run_cluster_node, config, view=view, out=sys.stdout))
    return trio.run(partial(run_supervisor_process, config, view=view, out=sys.stdout))


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo brings in the simulated agent, which other commands never need.
    from ._demo import DemoSettings, run_demo

    if args.devices < 1:
        raise UsageError("--devices must be at least 1")
    _logs(args.log_format or "text", args.log_level or "warning")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    settings = DemoSettings(args.devices, args.flaky, args.duration, seed, args.rate)
    view = choose_view(args.view, sys.stdout)

    async def demo(stop: trio.Event) -> int:
        tally = await run_demo(settings, out=sys.stdout, view=view, stop=stop)
        return 0 if tally.lost == 0 else 1

    return trio.run(until_signal, demo)


def _cmd_agent(args: argparse.Namespace) -> int:
    from ..testing import SimulatedAgent

    _logs(args.log_format or "text", args.log_level or "info")
    faults = dict(args.fault)
    agent = SimulatedAgent(
        devices=args.device,
        token=args.token,
        task_duration=args.task_duration,
        answer_heartbeats="stall-heartbeats" not in faults,
        reject_registration=faults.get("reject-registration"),
        reject_tasks=faults.get("reject-tasks"),
        lose_task_end="lose-task-end" in faults,
        refuse_connections="refuse-connections" in faults,
        record_frames=False,
    )

    async def serve(stop: trio.Event) -> int:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(agent.serve_websocket, args.host, args.port)
            print(url + (f"?token={args.token}" if args.token else ""), flush=True)
            if "drop-every" in faults:
                nursery.start_soon(_drop_every, agent, float(faults["drop-every"] or 0))
            await stop.wait()
            nursery.cancel_scope.cancel()
        return 0

    return trio.run(until_signal, serve)


async def _drop_every(agent: SimulatedAgent, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        await agent.drop_connections()


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "demo": _cmd_demo,
    "agent": _cmd_agent,
    **dict.fromkeys(CLIENT_COMMANDS, run_client_command),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``galaxy-actors`` with ``argv`` (default: the process's arguments); return the
    exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error (argparse has printed it)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        if getattr(args, "fleet", None) is not None and args.cluster is None:
            raise UsageError("--fleet goes with --cluster")
        if getattr(args, "cluster", None) is not None:
            try:
                # Imported here: the cluster's client needs coredis, the others do not.
                from ._cli_cluster import run_cluster_command
            except ImportError as exc:
                raise UsageError(f"--cluster: {exc}") from None

            return run_cluster_command(args)
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
