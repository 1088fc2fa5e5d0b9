"""Experiment: what two changes the dispatch profile points to would gain, by monkeypatching.

Not part of ``make bench``. It measures, in one process against one agent process, three
sides in rotating order every round: the bare client, galaxy_actors as it is, and
galaxy_actors with the proposed changes applied by monkeypatching (nothing in the package
is edited):

- ``loop``: `Session._serve` keeps one receive cancel scope across frames and moves its
  deadline only when it changes, instead of entering a new ``trio.move_on_at`` scope for
  every frame in `Session._next_frame` (two scopes per task, 10-16 µs each here);
- ``codec``: `decode_server` with the enum lookups done through dicts (the values are
  checked the same way).

A patch of `Session._serve` applies to sessions started while it is in place, so the
patched devices connect while it is, and the unpatched ones before; both stay connected.
The figures: per-round median latency ratios (as bench_dispatch), and client CPU per task
with many tasks in flight.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio
from _common import (
    AgentProcess,
    cpu_seconds,
    exit_on_sigterm,
    fmt_ratio,
    percentile,
    print_table,
    quiet_logging,
    raise_nofile_limit,
    ratio_summary,
    write_json,
)
from bench_dispatch import DATA, DESCRIPTION, bare_sequential, open_bares, ours_throughput

import galaxy_actors._session as session_module
from galaxy_actors import DeviceManager, WebSocketConnector
from galaxy_actors._aip import (
    _SERVER_STR_FIELDS,
    ServerMessage,
    ServerMessageType,
    WireStatus,
)
from galaxy_actors._errors import ProtocolError
from galaxy_actors._policy import FailureReason
from galaxy_actors._session import Session
from galaxy_actors._transport import CLOSE_MESSAGE_TOO_BIG, TransportClosed

ORIGINAL_SERVE = Session._serve
# _session imports decode_server by name; the patch replaces that name in the module.
ORIGINAL_DECODE = session_module.decode_server  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the patches


async def serve_one_scope(self: Session) -> None:
    """`Session._serve` with one receive scope across frames (the proposed change)."""
    actor = self.actor
    mailbox = actor.mailbox
    profile = actor.profile
    transport = self.transport
    assert transport is not None
    while True:
        if self.in_flight is None:
            if self.stopping:
                return
            task = mailbox.pop()
            if task is not None:
                await self.send_task(task)
                continue
        await self._heartbeat_if_due()
        with trio.CancelScope(deadline=self._deadline()) as scope:
            self._recv_scope = scope
            while True:
                try:
                    raw = await transport.receive()
                except TransportClosed as exc:
                    self._recv_scope = None
                    reason = (
                        FailureReason.PROTOCOL_ERROR
                        if exc.code == CLOSE_MESSAGE_TOO_BIG
                        else FailureReason.CONNECTION_CLOSED
                    )
                    await self._abort(reason, str(exc))
                now = trio.current_time()
                self._hb_oldest = None
                profile.last_heartbeat = now
                try:
                    message = session_module.decode_server(raw)  # type: ignore[attr-defined]
                except ProtocolError as exc:
                    if isinstance(raw, bytes):
                        await self._abort(FailureReason.PROTOCOL_ERROR, str(exc))
                    actor.bad_frame("protocol_error", f"{exc}: {raw[:200]!r}")
                    continue
                self._route(message)
                if self.in_flight is None and (self.stopping or mailbox):
                    break  # dispatch the next task, or stop
                if now >= self._hb_next:
                    break  # a heartbeat is due
                deadline = self._deadline()
                if deadline != scope.deadline:
                    scope.deadline = deadline
        self._recv_scope = None
        if scope.cancelled_caught:
            now = trio.current_time()
            await self._check_timeouts(now)
            if now >= self.stop_deadline or (self.stopping and self.in_flight is None):
                task = self.in_flight
                if task is not None:
                    self.in_flight = None
                    actor.task_cancelled(task, "device disconnected before the task ended")
                return


_TYPES = {m.value: m for m in ServerMessageType}
_STATUSES = {m.value: m for m in WireStatus}


def decode_server_dicts(text: str | bytes) -> ServerMessage:
    """`decode_server` with dict lookups for the enums; anything unusual goes to the
    original, which raises the same errors."""
    if not isinstance(text, str):
        return ORIGINAL_DECODE(text)
    try:
        obj = json.loads(text)
        type_ = _TYPES[obj["type"]]
        status = _STATUSES[obj["status"]]
    except (ValueError, RecursionError, KeyError, TypeError):
        return ORIGINAL_DECODE(text)
    get = obj.get
    for name in _SERVER_STR_FIELDS:
        value = get(name)
        if value is not None and not isinstance(value, str):
            return ORIGINAL_DECODE(text)
    return ServerMessage(
        type=type_,
        status=status,
        user_request=get("user_request"),
        agent_name=get("agent_name"),
        process_name=get("process_name"),
        root_name=get("root_name"),
        actions=get("actions"),
        messages=get("messages"),
        error=get("error"),
        session_id=get("session_id"),
        task_name=get("task_name"),
        timestamp=get("timestamp"),
        response_id=get("response_id"),
        result=get("result"),
    )


@contextmanager
def patched(names: list[str]) -> Iterator[None]:
    if "loop" in names:
        Session._serve = serve_one_scope  # type: ignore[method-assign]
    if "codec" in names:
        session_module.decode_server = decode_server_dicts  # type: ignore[attr-defined]
    try:
        yield
    finally:
        Session._serve = ORIGINAL_SERVE  # type: ignore[method-assign]
        session_module.decode_server = ORIGINAL_DECODE  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- the run


async def sequential(manager: DeviceManager, device: str, tag: str, n: int) -> list[float]:
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        await manager.assign_task_to_device(f"{tag}-{i}", device, DESCRIPTION, DATA)
        latencies.append(time.perf_counter() - start)
    return latencies


async def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    patches: list[str] = args.patches
    n_tp = args.devices
    async with (
        DeviceManager(
            task_name="exp", connector=WebSocketConnector(), max_concurrent_connections=64
        ) as manager,
        trio.open_nursery() as nursery,
    ):
        plain = ["plain-0"] + [f"plain-t{k}" for k in range(n_tp)]
        fixed = ["fixed-0"] + [f"fixed-t{k}" for k in range(n_tp)]
        for device in plain:
            await manager.register_device(device, url, "bench")
        with patched(patches):
            for device in fixed:
                await manager.register_device(device, url, "bench")
        (bare,) = await open_bares(url, 1, "bare", nursery)

        def side(name: str, tag: str) -> Callable[[], Awaitable[list[float]]]:
            if name == "bare":
                return lambda: bare_sequential(bare, tag, args.tasks)
            device = "plain-0" if name == "ours" else "fixed-0"

            async def go() -> list[float]:
                if name == "ours":
                    return await sequential(manager, device, tag, args.tasks)
                with patched(patches):
                    return await sequential(manager, device, tag, args.tasks)

            return go

        medians: dict[str, list[float]] = {"bare": [], "ours": [], "patched": []}
        names = list(medians)
        for name in names:
            await side(name, f"warm-{name}")()
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]
            if r // 3 % 2:
                order.reverse()
            for name in order:
                medians[name].append(percentile(await side(name, f"r{r}-{name}")(), 50))
        cpu: dict[str, list[float]] = {"ours": [], "patched": []}
        per_caller = max(1, args.throughput_tasks // (n_tp * 4))
        total = n_tp * 4 * per_caller
        for r in range(args.rounds):
            for name in ("ours", "patched") if r % 2 == 0 else ("patched", "ours"):
                devices = plain[1:] if name == "ours" else fixed[1:]
                c0 = cpu_seconds()
                if name == "ours":
                    await ours_throughput(manager, devices, 4, per_caller, f"tp{r}{name}")
                else:
                    with patched(patches):
                        await ours_throughput(manager, devices, 4, per_caller, f"tp{r}{name}")
                cpu[name].append((cpu_seconds() - c0) / total * 1e6)
        nursery.cancel_scope.cancel()
    return {
        "patches": patches,
        "median_us": {k: [v * 1e6 for v in vals] for k, vals in medians.items()},
        "ours_vs_bare": ratio_summary(medians["ours"], medians["bare"]),
        "patched_vs_bare": ratio_summary(medians["patched"], medians["bare"]),
        "patched_vs_ours": ratio_summary(medians["patched"], medians["ours"]),
        "cpu_us_per_task": cpu,
        "cpu_patched_vs_ours": ratio_summary(cpu["patched"], cpu["ours"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", type=lambda t: t.split(","), default=["loop", "codec"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--throughput-tasks", type=int, default=2000)
    parser.add_argument("--name", default="experiment_dispatch")
    args = parser.parse_args(argv)
    quiet_logging()
    exit_on_sigterm()
    raise_nofile_limit()
    with AgentProcess() as agent:
        results = trio.run(run, args, agent.url)
    med = results["median_us"]
    print_table(
        f"Patches {','.join(args.patches)}: ratios of per-round medians, [quartiles]",
        ["comparison", "ratio", "medians (µs)"],
        [
            [
                "ours / bare",
                fmt_ratio(results["ours_vs_bare"]),
                f"{percentile(med['ours'], 50):.0f} / {percentile(med['bare'], 50):.0f}",
            ],
            [
                "patched / bare",
                fmt_ratio(results["patched_vs_bare"]),
                f"{percentile(med['patched'], 50):.0f} / {percentile(med['bare'], 50):.0f}",
            ],
            [
                "patched / ours",
                fmt_ratio(results["patched_vs_ours"]),
                f"{percentile(med['patched'], 50):.0f} / {percentile(med['ours'], 50):.0f}",
            ],
            [
                "CPU per task, patched / ours (throughput)",
                fmt_ratio(results["cpu_patched_vs_ours"]),
                f"{percentile(results['cpu_us_per_task']['patched'], 50):.0f} / "
                f"{percentile(results['cpu_us_per_task']['ours'], 50):.0f}",
            ],
        ],
    )
    write_json(args.name, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
