"""The ``galaxy-actors`` console command.

Subcommands: ``run`` (the supervisor process), ``demo``, ``agent`` (one simulated agent),
and ``submit``, ``status``, ``watch`` (clients of a running supervisor's control endpoint).
Exit statuses: 0 ok; 1 a task failed or a runtime error (endpoint unreachable, cannot
bind); 2 a usage or configuration mistake, with nothing started. The reference is
``docs/process.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ._config import TOKEN_ENV, ConfigError, load_config
from ._control_client import ControlClient, EventStream, open_control_client, read_address_file
from ._logging import setup_logging
from ._process import run_supervisor_process, watch_signals
from ._report import DeviceRow
from ._transport import ConnectFailed, TransportClosed
from ._view import VIEW_MODES, choose_view, format_rows, summary_line

if TYPE_CHECKING:
    from .testing import SimulatedAgent

__all__ = ["build_parser", "main"]

PROG = "galaxy-actors"
# Error types of a control reply that mean the request itself was wrong (exit 2).
_USAGE_ERRORS = frozenset({"BadRequest", "Unauthorized", "ConfigurationError"})


class UsageError(Exception):
    """A mistake on the command line: message on stderr, exit 2."""


# --------------------------------------------------------------------------- parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


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
        _positive_float(value)
    return name, value if sep else None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``galaxy-actors``."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Supervise fleets of AIP device agents (docs/process.md)."
    )
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
    client = argparse.ArgumentParser(add_help=False)
    where = client.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="URL", help="endpoint URL, ws://127.0.0.1:PORT/")
    where.add_argument("--address-file", type=Path, help="the file `run` wrote the URL into")
    client.add_argument("--token", help=f"endpoint token (default: ${TOKEN_ENV}, else the file's)")
    client.add_argument("--json", action="store_true", help="print the raw JSON")

    run = sub.add_parser("run", parents=[logs, view], help="supervise the devices of a TOML file")
    run.add_argument("config", type=Path, help="configuration file (docs/process.md)")

    demo = sub.add_parser("demo", parents=[logs, view], help="a simulated fleet, some flaky")
    demo.add_argument("--devices", type=int, default=8, help="simulated agents (default: 8)")
    demo.add_argument("--flaky", type=_fraction, default=0.25, help="fraction that is flaky")
    demo.add_argument("--duration", type=_positive_float, default=20.0, help="seconds to run")
    demo.add_argument("--seed", type=int, help="random seed, to repeat a run (default: random)")
    demo.add_argument("--rate", type=_positive_float, default=8.0, help="tasks per second")

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

    submit = sub.add_parser("submit", parents=[client], help="run a task, print its outcome")
    target = submit.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID")
    target.add_argument("--capability", action="append", metavar="CAP", dest="capabilities")
    submit.add_argument("description")
    submit.add_argument("--data", type=_json_object, help="task data, a JSON object")
    submit.add_argument("--timeout", type=_positive_float, help="seconds on the device")
    submit.add_argument("--priority", type=int, help="lower runs sooner (default: 0)")
    submit.add_argument("--delivery", choices=("at_most_once", "at_least_once"))
    submit.add_argument("--task-id")

    sub.add_parser("status", parents=[client], help="list devices and their state")
    sub.add_parser("watch", parents=[client], help="print lifecycle events as they happen")
    return parser


# --------------------------------------------------------------------------- commands


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_format or config.logging.format, args.log_level or config.logging.level)
    view = choose_view(args.view, sys.stdout)
    return trio.run(partial(run_supervisor_process, config, view=view, out=sys.stdout))


def _cmd_demo(args: argparse.Namespace) -> int:
    # Imported here: the demo brings in the simulated agent, which other commands never need.
    from ._demo import DemoSettings, run_demo

    if args.devices < 1:
        raise UsageError("--devices must be at least 1")
    setup_logging(args.log_format or "text", args.log_level or "warning")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    settings = DemoSettings(args.devices, args.flaky, args.duration, seed, args.rate)
    view = choose_view(args.view, sys.stdout)

    async def demo(stop: trio.Event) -> int:
        tally = await run_demo(settings, out=sys.stdout, view=view, stop=stop)
        return 0 if tally.lost == 0 else 1

    return trio.run(_until_signal, demo)


async def _until_signal(body: Callable[[trio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)``; the first SIGINT/SIGTERM sets ``stop``, a second exits at once."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, stop)
        status = await body(stop)
        nursery.cancel_scope.cancel()
    return status


def _cmd_agent(args: argparse.Namespace) -> int:
    from .testing import SimulatedAgent

    setup_logging(args.log_format or "text", args.log_level or "info")
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

    return trio.run(_until_signal, serve)


async def _drop_every(agent: SimulatedAgent, seconds: float) -> None:
    while True:
        await trio.sleep(seconds)
        await agent.drop_connections()


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    token = args.token or os.environ.get(TOKEN_ENV)
    url = args.control
    if url is None:
        if args.address_file is None:
            raise UsageError("say where the supervisor is: --control URL or --address-file PATH")
        try:
            url, file_token = read_address_file(args.address_file)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {args.address_file}: {exc}") from None
        token = token or file_token
    if not token:
        raise UsageError(f"no token: give --token or set ${TOKEN_ENV}")
    return url, token


def _cmd_client(args: argparse.Namespace) -> int:
    url, token = _endpoint(args)
    command: Callable[[ControlClient], Awaitable[int]] = {
        "submit": partial(_submit, args),
        "status": partial(_status, args),
        "watch": partial(_watch, args),
    }[args.command]

    async def talk(stop: trio.Event) -> int:
        status = 0
        async with trio.open_nursery() as nursery:

            async def converse() -> None:
                nonlocal status
                # Caught where raised: crossing a nursery would wrap them in a group.
                try:
                    async with open_control_client(url, token) as client:
                        try:
                            status = await command(client)
                        except TransportClosed as exc:
                            status = _unreachable(url, exc)
                except ConnectFailed as exc:
                    status = _unreachable(url, exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(converse)
            await stop.wait()
            # Interrupted: the way a watch ends; anything else did not finish.
            status = 0 if args.command == "watch" else 128 + signal.SIGINT
            nursery.cancel_scope.cancel()
        return status

    return trio.run(_until_signal, talk)


def _unreachable(url: str, exc: Exception) -> int:
    print(f"{PROG}: control endpoint {url}: {exc}", file=sys.stderr)
    return 1


def _reply_status(reply: dict[str, Any]) -> int:
    if reply.get("ok"):
        return 0
    error = reply.get("error") or {}
    kind = error.get("type") if isinstance(error, dict) else None
    return 2 if kind in _USAGE_ERRORS else 1


async def _submit(args: argparse.Namespace, client: ControlClient) -> int:
    fields: dict[str, Any] = {}
    for name, key in (
        ("device", "device"),
        ("capabilities", "capabilities"),
        ("data", "data"),
        ("timeout", "timeout"),
        ("priority", "priority"),
        ("delivery", "delivery"),
        ("task_id", "task_id"),
    ):
        value = getattr(args, name)
        if value is not None:
            fields[key] = value
    reply = await client.submit(args.description, **fields)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        timings = reply["timings"]
        ran = timings["ran_for"]
        print(
            f"{reply['outcome']} on {reply['device_id']} (task {reply['task_id']}, queued "
            f"{timings['queued_for']:.2f} s, ran {ran if ran is None else round(ran, 2)} s)"
        )
        if reply.get("error"):
            print(f"error: {reply['error']}")
        print(json.dumps(reply["result"], indent=2))
    else:
        print(f"{reply['error']['type']}: {reply['error']['message']}", file=sys.stderr)
    status = _reply_status(reply)
    return 1 if status == 0 and reply.get("outcome") != "completed" else status


async def _status(args: argparse.Namespace, client: ControlClient) -> int:
    reply = await client.request("devices")
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        rows = [DeviceRow.from_json(row) for row in reply["devices"]]
        print(summary_line(rows) + ("" if reply.get("accepting", True) else " (shutting down)"))
        print("\n".join(format_rows(rows)))
    else:
        print(f"{reply['error']['type']}: {reply['error']['message']}", file=sys.stderr)
    return _reply_status(reply)


def _event_line(event: dict[str, Any]) -> str:
    details = " ".join(
        f"{key}={value}"
        for key, value in event.items()
        if key not in ("event", "device_id", "at") and value is not None
    )
    return f"{event.get('event', '?'):<16} {event.get('device_id') or '-':<16} {details}"


async def _watch(args: argparse.Namespace, client: ControlClient) -> int:
    reply = await client.request("watch")
    if not reply.get("ok"):
        print(f"{reply['error']['type']}: {reply['error']['message']}", file=sys.stderr)
        return _reply_status(reply)
    async for event in EventStream(client):
        print(json.dumps(event) if args.json else _event_line(event), flush=True)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "demo": _cmd_demo,
    "agent": _cmd_agent,
    "submit": _cmd_client,
    "status": _cmd_client,
    "watch": _cmd_client,
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
        return _COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the signal handlers were in place
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
