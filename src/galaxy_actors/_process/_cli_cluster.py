"""The client subcommands against a cluster: ``submit``, ``result``, ``status`` and ``watch``
with ``--cluster URL|FILE``.

They talk to the cluster's Redis, not to a node: any node may own the device, and a task
submitted while its owner is down waits in the device's stream for the next owner. The
target is a Redis URL (``redis://host:6379/0``, with ``--fleet`` when the cluster uses
another than ``galaxy``), or a node's TOML file, whose ``[cluster]`` table names both.

Exit statuses as for the control endpoint's clients: 0 ok; 1 a task failed, or Redis
cannot be reached; 2 a usage mistake; 3 (``result``) the task has no outcome yet.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from .._sansio._errors import ConfigurationError, DuplicateTaskId
from .._sansio._redact import redact
from ..cluster import ClusterClient, ClusterUnavailable, open_client
from ._cli_control import PROG, UsageError, _print_outcome, until_signal
from ._config import ConfigError, load_config
from ._config_cluster import REDIS_URL_ENV, validate_node_name, validate_redis_url
from ._report import outcome_to_json

__all__ = [
    "CLUSTER_COMMANDS",
    "ClusterTarget",
    "cluster_target",
    "run_cluster_command",
    "status_lines",
]

#: The subcommands that work against a cluster.
CLUSTER_COMMANDS: Final = ("submit", "result", "status", "watch")
DEFAULT_FLEET: Final = "default"


@attrs.frozen
class ClusterTarget:
    """Where a cluster's client goes: its Redis and the fleet of its keys."""

    redis_url: str
    fleet: str = DEFAULT_FLEET


def cluster_target(text: str, fleet: str | None) -> ClusterTarget:
    """The target named by ``--cluster text`` (a Redis URL, a node's TOML file, or ``-`` for
    ``$GALAXY_ACTORS_REDIS_URL``) and ``--fleet``; raises `UsageError`."""
    if text == "-":
        text = os.environ.get(REDIS_URL_ENV, "")
        if not text:
            raise UsageError(f"--cluster -: ${REDIS_URL_ENV} is not set")
    if "://" in text:
        try:
            validate_redis_url(text)
        except ValueError as exc:
            raise UsageError(f"--cluster: {redact(str(exc))}") from None
        target = ClusterTarget(text)
    else:
        try:
            config = load_config(Path(text))
        except ConfigError as exc:
            raise UsageError(f"--cluster: {exc}") from None
        if config.cluster is None:
            raise UsageError(f"--cluster: {text} has no [cluster] table")
        cluster = config.cluster
        target = ClusterTarget(cluster.redis_url, cluster.fleet)
    if fleet is not None:
        try:
            validate_node_name(fleet)
        except ValueError as exc:
            raise UsageError(f"--fleet: {exc}") from None
        target = attrs.evolve(target, fleet=fleet)
    return target


def run_cluster_command(args: argparse.Namespace) -> int:
    """Run one client subcommand against the cluster ``args.cluster``; returns the exit
    status."""
    if args.command not in CLUSTER_COMMANDS:
        raise UsageError(
            f"{args.command} works on one supervisor's control endpoint, not on a cluster "
            f"(with --cluster: {', '.join(CLUSTER_COMMANDS)})"
        )
    target = cluster_target(args.cluster, args.fleet)
    if args.command == "submit" and args.task_id is None:
        args.task_id = uuid.uuid4().hex  # known beforehand: printed if interrupted
    command = _COMMANDS[args.command]

    async def talk(stop: trio.Event) -> int:
        status = 0
        async with trio.open_nursery() as nursery:

            async def converse() -> None:
                nonlocal status
                # Caught where raised: crossing a nursery would wrap them in a group.
                try:
                    async with open_client(target.redis_url, target.fleet) as client:
                        status = await command(args, client)
                except ClusterUnavailable as exc:
                    print(f"{PROG}: {redact(str(exc))}", file=sys.stderr)
                    status = 1
                except (ConfigurationError, DuplicateTaskId) as exc:
                    print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
                    status = 2
                nursery.cancel_scope.cancel()

            nursery.start_soon(converse)
            await stop.wait()
            # Interrupted: the way a watch ends; anything else did not finish.
            status = 0 if args.command == "watch" else 128 + signal.SIGINT
            if args.command == "submit":
                # No node is waiting on this client: the task stays in its stream.
                print(
                    f"task {args.task_id} stays queued: `{PROG} result --cluster ... "
                    f"{args.task_id}` reads its outcome",
                    file=sys.stderr,
                )
            nursery.cancel_scope.cancel()
        return status

    return trio.run(until_signal, talk)


async def _submit(args: argparse.Namespace, client: ClusterClient) -> int:
    options: dict[str, Any] = {
        name: value
        for name in ("timeout", "priority", "delivery")
        if (value := getattr(args, name)) is not None
    }
    task_id = await client.submit(
        args.description,
        args.data,
        device_id=args.device,
        capabilities=args.capabilities,
        task_id=args.task_id,
        **options,
    )
    return _print_outcome(args, outcome_to_json(await client.result(task_id)))


async def _result(args: argparse.Namespace, client: ClusterClient) -> int:
    if args.wait:
        return _print_outcome(args, outcome_to_json(await client.result(args.task_id)))
    outcome = await client.outcome(args.task_id)
    if outcome is not None:
        return _print_outcome(args, outcome_to_json(outcome))
    state = await client.state(args.task_id)
    if state is None:
        reply = {"ok": False, "task_id": args.task_id, "outcome": "UnknownTask"}
        reply["error"] = {
            "type": "UnknownTask",
            "message": f"no task {args.task_id} in the fleet (never submitted, or expired)",
        }
        return _print_outcome(args, reply)
    if args.json:
        print(
            json.dumps(
                {"ok": True, "task_id": args.task_id, "outcome": "pending", "state": state},
                indent=2,
            )
        )
    else:
        print(f"task {args.task_id}: {state}")
    return 3


async def _status(args: argparse.Namespace, client: ClusterClient) -> int:
    status = await client.status()
    if args.json:
        print(
            json.dumps(
                {"ok": True, "nodes": list(status.nodes), "owners": dict(status.owners)}, indent=2
            )
        )
        return 0
    for line in status_lines(status.nodes, status.owners):
        print(line)
    return 0


def status_lines(nodes: Sequence[str], owners: Mapping[str, str | None]) -> list[str]:
    """The plain ``status --cluster`` text: a summary line, then one line per device."""
    held = Counter(owner for owner in owners.values() if owner is not None)
    orphans = sum(1 for owner in owners.values() if owner is None)
    spread = ", ".join(f"{node} {held.get(node, 0)}" for node in nodes) or "none"
    summary = f"{len(nodes)} live nodes ({spread}); {len(owners)} devices"
    if orphans:
        summary += f", {orphans} without an owner"
    width = max((len(d) for d in owners), default=0)
    return [summary] + [
        f"{device:<{width}}  {owner or '-'}" for device, owner in sorted(owners.items())
    ]


async def _watch(args: argparse.Namespace, client: ClusterClient) -> int:
    async for event in client.watch():
        reply = outcome_to_json(event.outcome)
        if args.json:
            print(json.dumps(reply), flush=True)
        else:
            print(
                f"{reply['outcome']:<16} {event.device_id or '-':<16} task_id={event.task_id}",
                flush=True,
            )
    return 0


_COMMANDS: Final[dict[str, Callable[[argparse.Namespace, ClusterClient], Awaitable[int]]]] = {
    "submit": _submit,
    "result": _result,
    "status": _status,
    "watch": _watch,
}
