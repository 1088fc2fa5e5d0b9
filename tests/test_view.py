"""What the status views show: the live table, the plain lines and ``status`` have the same
columns; the counts in one snapshot add up; the table numbers attempts as the log does."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

import pytest
import trio

from galaxy_actors import DeviceStatus, RestartPolicy, open_supervisor
from galaxy_actors._process._demo import DemoSettings, run_demo
from galaxy_actors._process._report import device_rows
from galaxy_actors._process._view import COLUMNS, format_rows, show_status
from galaxy_actors.events import RestartScheduled
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

SUMMARY = re.compile(r"tasks (?P<done>\d+) done, (?P<failed>\d+) failed")
FOOTER = re.compile(
    r"tasks: (?P<submitted>\d+) submitted = (?P<done>\d+) done \+ (?P<failed>\d+) failed "
    r"on a device \+ (?P<waiting>\d+) queued or running \+ (?P<ended>-?\d+) ended before"
)


def column_totals(block: list[str]) -> tuple[int, int]:
    """The DONE and FAILED columns of one plain snapshot, summed."""
    header = next(line for line in block if line.lstrip().startswith("DEVICE"))
    done_at, failed_at = header.index("DONE"), header.index("FAILED")
    rows = [line for line in block if line.startswith("  dev-")]
    done = sum(int(line[done_at:failed_at]) for line in rows)
    failed = sum(int(line[failed_at:].split()[0]) for line in rows)
    return done, failed


async def test_every_snapshot_of_the_demo_adds_up(autojump_clock: Any) -> None:
    # Flaky devices give every way a task can end: done, failed by the device, timed out,
    # cut off by a disconnection, refused because its device gave up.
    out = io.StringIO()
    settings = DemoSettings(devices=8, flaky=0.5, duration=60.0, seed=11)
    await run_demo(settings, out=out, view="plain", network=MemoryNetwork())
    snapshots = [
        block.splitlines() for block in re.split(r"\n(?=\[)", out.getvalue()) if "DEVICE" in block
    ]
    assert len(snapshots) >= 10
    for block in snapshots:
        summary = SUMMARY.search(block[0])
        footer = next(filter(None, map(FOOTER.search, block)), None)
        assert summary is not None and footer is not None, block
        done, failed = column_totals(block)
        # The title line, the table and the footer all say the same thing.
        assert (int(summary["done"]), int(summary["failed"])) == (done, failed), block
        assert (int(footer["done"]), int(footer["failed"])) == (done, failed), block
        assert int(footer["ended"]) >= 0 and int(footer["waiting"]) >= 0, block
        assert int(footer["submitted"]) == done + failed + int(footer["waiting"]) + int(
            footer["ended"]
        )
    # Some tasks did end before reaching a device (their device gave up).
    assert any(int(m["ended"]) > 0 for b in snapshots for m in map(FOOTER.search, b) if m)


async def test_the_table_numbers_attempts_as_the_log_does(
    autojump_clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="galaxy_actors")
    seen: list[tuple[str, str]] = []
    network = MemoryNetwork()
    policy = RestartPolicy(reconnect_delay=1.0, max_retries=3)
    async with open_supervisor(connector=network.connector(), policy=policy) as sup:
        with sup.subscribe() as events:
            sup.add_device("pc", "ws://nobody/ws")
            async for event in events:
                if isinstance(event, RestartScheduled):
                    # The supervisor's own status line while the retry waits.
                    row = device_rows(sup)[0]
                    cells = format_rows([row])[1].split()
                    seen.append((f"{event.attempt}/{event.max_retries}", cells[3]))
                    if event.attempt == 3:
                        break
    logged = [
        m[1]
        for r in caplog.records
        if (m := re.search(r"reconnecting in .* \(attempt (\d+/\d+)\)", r.getMessage()))
    ]
    assert logged == ["1/3", "2/3", "3/3"]
    assert seen == [(n, n) for n in logged]


async def test_live_plain_and_status_show_the_same_columns_with_the_reason(
    autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "120")  # the live view's terminal; at 80 the reason is cut
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        SimulatedAgent().serve_memory(network, "ws://a/ws", nursery)
        async with open_supervisor(connector=network.connector()) as sup:
            sup.add_device("office_pc", "ws://a/ws")
            sup.add_device("lab_mac", "ws://nobody/ws")
            await sup.wait_for_status("office_pc", DeviceStatus.IDLE)
            await sup.wait_for_status("lab_mac", DeviceStatus.FAILED)
            outputs = {}
            for mode in ("live", "plain"):
                out = io.StringIO()
                with trio.move_on_after(6):
                    await show_status(sup, mode, out)
                outputs[mode] = out.getvalue()
            status = format_rows(device_rows(sup))  # what `galaxy-actors status` prints
        nursery.cancel_scope.cancel()
    names = [name for name, _ in COLUMNS]
    assert names[-1] == "REASON"
    assert status[0].split() == " ".join(names).split()
    for text in (*outputs.values(), "\n".join(status)):
        header = next(line for line in text.splitlines() if "DEVICE" in line)
        assert header.split() == " ".join(names).split(), text
        failing = next(line for line in text.splitlines() if "lab_mac" in line)
        assert "connect_failed" in failing, text
