"""The journal across a real process death: ``galaxy-actors run``, SIGKILL, run again.

The agents run in the test process, so their record of received frames spans both
supervisor processes: an at-most-once task must never reach an agent twice.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import trio
from test_cli import TOKEN, cli, supervisor_process, wait_rows, write_config

from galaxy_actors._process._control_client import open_control_client
from galaxy_actors.testing import SimulatedAgent
from galaxy_actors.transport import ConnectError, TransportClosed

DEVICES = ("d0", "d1", "d2")
PER_DEVICE = 8


def journal_states(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT task_id, state FROM tasks"))
    finally:
        db.close()


def received(agents: dict[str, SimulatedAgent]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for agent in agents.values():
        for frame in agent.received:
            message = frame.message
            if message is not None and message.type == "task":
                task_id = (message.session_id or "").split("@", 1)[1]
                counts[task_id] = counts.get(task_id, 0) + 1
    return counts


async def until_accepted_and_running(
    journal: Path, agents: dict[str, SimulatedAgent], count: int
) -> None:
    # Polled: the journal is another process's file, and no event says it changed.
    while True:
        accepted = len(await trio.to_thread.run_sync(journal_states, journal))
        if accepted >= count and sum(received(agents).values()) >= 2 * len(DEVICES):
            return
        await trio.sleep(0.02)


async def _submit(url: str, task_id: str, device: str, delivery: str) -> None:
    # The reply never comes: the process is killed first. Accepted is what the journal says.
    with contextlib.suppress(TransportClosed, ConnectError):
        async with open_control_client(url, TOKEN) as client:
            await client.submit(task_id, device=device, task_id=task_id, delivery=delivery)


async def test_sigkill_loses_no_accepted_task_and_never_resends_at_most_once(
    tmp_path: Path,
) -> None:
    agents = {d: SimulatedAgent(devices=[d], task_duration=0.4) for d in DEVICES}
    tasks = {
        f"{d}-{i}": (d, "at_most_once" if i % 2 else "at_least_once")
        for d in DEVICES
        for i in range(PER_DEVICE)
    }
    journal = tmp_path / "fleet.journal.sqlite3"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            urls = {d: await nursery.start(agents[d].serve_websocket) for d in DEVICES}
            config = write_config(tmp_path / "fleet.toml", urls)
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(client, lambda r: all(r[d]["status"] == "idle" for d in DEVICES))
                async with trio.open_nursery() as submitters:
                    for task_id, (device, delivery) in tasks.items():
                        submitters.start_soon(_submit, proc.url, task_id, device, delivery)
                    # Every task accepted (on disk), some run, some on their device now.
                    await until_accepted_and_running(journal, agents, len(tasks))
                    proc.process.kill()
                    await proc.process.wait()
                    submitters.cancel_scope.cancel()
            before = await trio.to_thread.run_sync(journal_states, journal)
            assert set(before) == set(tasks)
            sent_before = {t for t, state in before.items() if state == "sent"}
            assert sent_before, "the kill came when no task was on a device"

            async with supervisor_process(config) as proc, proc.client() as client:
                outcomes: dict[str, dict[str, Any]] = {}
                for task_id in tasks:
                    outcomes[task_id] = await client.request("result", task_id=task_id, wait=True)
                shown = await cli(
                    "result",
                    "--address-file",
                    str(tmp_path / "address.json"),
                    "--token",
                    TOKEN,
                    next(iter(tasks)),
                )
                assert shown.returncode in (0, 1), shown.stderr
            nursery.cancel_scope.cancel()

    counts = received(agents)
    for task_id, (_device, delivery) in tasks.items():
        outcome = outcomes[task_id]["outcome"]
        if delivery == "at_most_once":
            assert counts.get(task_id, 0) <= 1, f"{task_id} reached its agent twice"
            if task_id in sent_before:
                assert outcome in ("OutcomeUnknown", "completed"), (task_id, outcome)
            else:
                assert outcome == "completed", (task_id, outcome)
        else:
            assert outcome == "completed", (task_id, outcome)
    # An at-least-once task on a device at the kill ran again.
    again = [t for t in sent_before if tasks[t][1] == "at_least_once" and before[t] == "sent"]
    assert all(counts[t] >= 1 for t in again)
    assert set(journal_states(journal).values()) == {"ended"}
