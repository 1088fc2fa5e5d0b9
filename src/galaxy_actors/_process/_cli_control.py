"""The client subcommands of ``galaxy-actors``: they talk to a running supervisor's control
endpoint. ``submit``, ``status`` and ``watch``; and the operator's ``connect``,
``disconnect``, ``add``, ``remove``, ``cancel`` and ``reload``.

Each opens one connection, sends its request, prints the reply (``--json``: as it came) and
exits 0, 1 (the request failed, or the endpoint cannot be reached) or 2 (the endpoint
refused the request as a mistake). Ctrl-C ends ``watch`` (0); it interrupts anything else
(130), and ``submit`` then cancels the task it submitted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import trio

from .._sansio._errors import ConnectError, GalaxyActorsError, TransportClosed
from ._config import TOKEN_ENV
from ._control_client import (
    ControlClient,
    EventStream,
    StaleAddressFile,
    open_control_client,
    read_address_file,
)
from ._report import DeviceRow
from ._serve import watch_signals
from ._view import format_rows, summary_line

__all__ = [
    "CLIENT_COMMANDS",
    "PROG",
    "UsageError",
    "add_client_commands",
    "positive_float",
    "run_client_command",
    "until_signal",
]

PROG: Final = "galaxy-actors"
# Error types of a control reply that mean the request itself was wrong (exit 2).
_USAGE_ERRORS: Final = frozenset(
    {"BadRequest", "Unauthorized", "ConfigurationError", "ConfigError", "InvalidServerURL"}
)
# How long Ctrl-C on `submit` tries to cancel its task before leaving it be.
_CANCEL_TIMEOUT: Final = 3.0


class UsageError(Exception):
    """A mistake on the command line: message on stderr, exit 2."""


class _Unreachable(Exception):
    """The endpoint cannot be used (stale address file): message on stderr, exit 1."""


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _json_data(text: str) -> dict[str, Any]:
    # "@PATH" and "-" (stdin): data beyond the argument limit, or kept out of `ps`.
    source = "standard input" if text == "-" else text[1:] if text.startswith("@") else None
    if source is not None:
        try:
            text = sys.stdin.read() if text == "-" else Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc}") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_client_commands(sub: Any) -> None:
    """Add the client subcommands to ``sub`` (the parser's subparsers)."""
    client = argparse.ArgumentParser(add_help=False)
    where = client.add_mutually_exclusive_group()
    where.add_argument("--control", metavar="URL", help="endpoint URL, ws://127.0.0.1:PORT/")
    where.add_argument("--address-file", type=Path, help="the file `run` wrote the URL into")
    where.add_argument(
        "--cluster",
        metavar="URL|FILE",
        help="a cluster's Redis URL, or a node's TOML file (docs/cluster.md)",
    )
    client.add_argument(
        "--fleet", help="with --cluster: the fleet in that Redis (default: default)"
    )
    client.add_argument("--token", help=f"endpoint token (default: ${TOKEN_ENV}, else the file's)")
    client.add_argument("--json", action="store_true", help="print the raw JSON")

    submit = sub.add_parser("submit", parents=[client], help="run a task, print its outcome")
    target = submit.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID")
    target.add_argument("--capability", action="append", metavar="CAP", dest="capabilities")
    submit.add_argument("description")
    submit.add_argument(
        "--data", type=_json_data, help="task data: a JSON object, @FILE, or - (stdin)"
    )
    submit.add_argument("--timeout", type=positive_float, help="seconds on the device")
    submit.add_argument("--priority", type=int, help="lower runs sooner (default: 0)")
    submit.add_argument("--delivery", choices=("at_most_once", "at_least_once"))
    submit.add_argument("--task-id")

    sub.add_parser("status", parents=[client], help="list devices and their state")
    sub.add_parser("watch", parents=[client], help="print lifecycle events as they happen")

    def device_command(name: str, help: str, force: bool = False) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[client], help=help)
        parser.add_argument("device", metavar="DEVICE")
        if force:
            parser.add_argument("--force", action="store_true", help="do not wait for its task")
        return parser

    device_command("connect", "connect a device now (also one that gave up)")
    device_command("disconnect", "disconnect a device; it stays disconnected", force=True)
    device_command("remove", "disconnect a device and forget it", force=True)
    add = device_command("add", "add a device and connect it")
    add.add_argument("url", metavar="URL", help="its server_url, or - to read it from stdin")
    add.add_argument("--os", default="unknown")
    add.add_argument("--capability", action="append", metavar="CAP", dest="capabilities")
    add.add_argument("--max-retries", type=int)
    cancel = sub.add_parser("cancel", parents=[client], help="cancel a queued or running task")
    cancel.add_argument("task_id", metavar="TASK_ID")
    sub.add_parser("reload", parents=[client], help="apply the configuration file's devices")
    result = sub.add_parser(
        "result", parents=[client], help="a task's outcome by id (exit 3 while it is pending)"
    )
    result.add_argument("task_id", metavar="TASK_ID")
    result.add_argument("--wait", action="store_true", help="wait for the outcome")


async def until_signal(body: Callable[[trio.Event], Awaitable[int]]) -> int:
    """Run ``body(stop)``; the first SIGINT/SIGTERM sets ``stop``, a second exits at once."""
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, stop)
        status = await body(stop)
        nursery.cancel_scope.cancel()
    return status


def _endpoint(args: argparse.Namespace) -> tuple[str, str]:
    token = args.token or os.environ.get(TOKEN_ENV)
    url = args.control
    if url is None:
        if args.address_file is None:
            raise UsageError("say where the supervisor is: --control URL or --address-file PATH")
        try:
            url, file_token = read_address_file(args.address_file)
        except StaleAddressFile as exc:
            raise _Unreachable(f"{exc}: is the supervisor running?") from None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {args.address_file}: {exc}") from None
        token = token or file_token
    if not token:
        raise UsageError(f"no token: give --token or set ${TOKEN_ENV}")
    return url, token


def run_client_command(args: argparse.Namespace) -> int:
    """Run one client subcommand; returns the exit status."""
    try:
        url, token = _endpoint(args)
    except _Unreachable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.command == "submit" and args.task_id is None:
        args.task_id = uuid.uuid4().hex  # known beforehand: Ctrl-C can cancel it by id
    if args.command == "add" and args.url == "-":
        args.url = sys.stdin.readline().strip()
    command = _COMMANDS[args.command]

    async def talk(stop: trio.Event) -> int:
        status = 0
        async with trio.open_nursery() as nursery:

            async def converse() -> None:
                nonlocal status
                # Caught where raised: crossing a nursery would wrap them in a group.
                try:
                    async with open_control_client(url, token) as client:
                        try:
                            status = await command(args, client)
                        except TransportClosed as exc:
                            status = _unreachable(url, exc)
                except ConnectError as exc:
                    status = _unreachable(url, exc)
                nursery.cancel_scope.cancel()

            nursery.start_soon(converse)
            await stop.wait()
            # Interrupted: the way a watch ends; anything else did not finish.
            status = 0 if args.command == "watch" else 128 + signal.SIGINT
            nursery.cancel_scope.cancel()
        if stop.is_set() and args.command == "submit":
            await _cancel_submitted(url, token, args.task_id)
        return status

    return trio.run(until_signal, talk)


async def _cancel_submitted(url: str, token: str, task_id: str) -> None:
    """Withdraw the task an interrupted ``submit`` sent, on a connection of its own (the
    first one is busy waiting for the outcome)."""
    with trio.move_on_after(_CANCEL_TIMEOUT) as scope:
        try:
            async with open_control_client(url, token) as client:
                for _ in range(20):
                    reply = await client.request("cancel", task_id=task_id)
                    kind = (reply.get("error") or {}).get("type")
                    if kind != "UnknownTask":
                        break
                    # The submit may still be on its way to the supervisor: ask again.
                    await trio.sleep(0.05)
        except GalaxyActorsError as exc:
            print(f"{PROG}: could not cancel task {task_id}: {exc}", file=sys.stderr)
            return
    if scope.cancelled_caught:
        print(f"{PROG}: could not cancel task {task_id}: no answer", file=sys.stderr)
    elif reply.get("ok"):
        print(f"cancelled task {task_id}", file=sys.stderr)
    elif kind == "UnknownTask":
        print(f"task {task_id} is not live (it ended, or never arrived)", file=sys.stderr)
    else:
        print(f"{PROG}: could not cancel task {task_id}: {_error_text(reply)}", file=sys.stderr)


def _unreachable(url: str, exc: Exception) -> int:
    print(f"{PROG}: control endpoint {url}: {exc}", file=sys.stderr)
    return 1


def _reply_status(reply: dict[str, Any]) -> int:
    if reply.get("ok"):
        return 0
    error = reply.get("error") or {}
    kind = error.get("type") if isinstance(error, dict) else None
    return 2 if kind in _USAGE_ERRORS else 1


def _error_text(reply: dict[str, Any]) -> str:
    return f"{reply['error']['type']}: {reply['error']['message']}"


async def _submit(args: argparse.Namespace, client: ControlClient) -> int:
    fields: dict[str, Any] = {}
    for name in ("device", "capabilities", "data", "timeout", "priority", "delivery", "task_id"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    return _print_outcome(args, await client.submit(args.description, **fields))


async def _result(args: argparse.Namespace, client: ControlClient) -> int:
    reply = await client.request("result", task_id=args.task_id, wait=args.wait)
    if reply.get("outcome") == "pending":
        if args.json:
            print(json.dumps(reply, indent=2))
        else:
            print(f"task {reply['task_id']}: {reply['state']} on {reply['device_id']}")
        return 3
    return _print_outcome(args, reply)


def _print_outcome(args: argparse.Namespace, reply: dict[str, Any]) -> int:
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
        print(_error_text(reply), file=sys.stderr)
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
        print(_error_text(reply), file=sys.stderr)
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
        print(_error_text(reply), file=sys.stderr)
        return _reply_status(reply)
    async for event in EventStream(client):
        print(json.dumps(event) if args.json else _event_line(event), flush=True)
    return 0


def _said(reply: dict[str, Any]) -> str:
    """The line an operator op prints when it succeeded."""
    op = reply["op"]
    if op == "connect":
        if reply["connected"]:
            return f"{reply['device_id']}: connected"
        return f"{reply['device_id']}: the attempt failed; it retries per the restart policy"
    if op == "cancel":
        how = "withdrawn before it ran" if reply["withdrawn"] else "it was running: no result"
        return f"cancelled task {reply['task_id']} ({how})"
    if op == "reload":
        parts = [
            f"{kind} {' '.join(reply[kind])}"
            for kind in ("added", "removed", "replaced")
            if reply[kind]
        ]
        lines = ["reloaded: " + "; ".join([*parts, f"{reply['unchanged']} unchanged"])]
        lines += [f"error: {device}: {text}" for device, text in reply["errors"].items()]
        if reply["restart_needed"]:
            sections = ", ".join(reply["restart_needed"])
            lines.append(f"changes to {sections} take effect at the next start")
        return "\n".join(lines)
    past = {"disconnect": "disconnected", "add": "added", "remove": "removed"}[op]
    return f"{reply['device_id']}: {past}"


async def _operate(args: argparse.Namespace, client: ControlClient) -> int:
    fields = {
        key: value
        for key in ("device", "url", "os", "capabilities", "max_retries", "task_id")
        if (value := getattr(args, key, None)) is not None
    }
    if getattr(args, "force", False):
        fields["force"] = True
    reply = await client.request(args.command, **fields)
    if args.json:
        print(json.dumps(reply, indent=2))
    elif reply.get("ok"):
        print(_said(reply))
    else:
        print(_error_text(reply), file=sys.stderr)
    status = _reply_status(reply)
    failed = reply.get("ok") and (reply.get("connected") is False or reply.get("errors"))
    return 1 if failed else status


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace, ControlClient], Awaitable[int]]]] = {
    "submit": _submit,
    "status": _status,
    "watch": _watch,
    "result": _result,
    **dict.fromkeys(("connect", "disconnect", "add", "remove", "cancel", "reload"), _operate),
}
#: The subcommands `run_client_command` runs.
CLIENT_COMMANDS: Final = tuple(_COMMANDS)
