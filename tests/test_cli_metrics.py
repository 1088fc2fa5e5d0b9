"""The operator's view of a running `galaxy-actors run`: ``/metrics`` scraped over HTTP and
parsed as Prometheus would, ``/healthz`` and ``/readyz``, wall times on ``watch``, and the
refusals (metrics without their extra, a port taken). Helpers are test_cli's; every wait is
bounded."""

from __future__ import annotations

import datetime
import re
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from test_cli import (
    Running,
    child_env,
    cli,
    next_event,
    supervisor_process,
    wait_rows,
    write_config,
)

from galaxy_actors._process._cli import main
from galaxy_actors.testing import SimulatedAgent

METRICS_LINE = re.compile(r"metrics endpoint: (http://\S+)/metrics")


async def http_get(base: str, path: str) -> tuple[int, str]:
    """GET ``base + path`` the plainest way: status and body."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


async def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, text = await http_get(base, "/metrics")
    assert status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def wait_ready(base: str, want: int) -> str:
    """Poll ``/readyz`` until it answers ``want``; its body."""
    while True:
        status, body = await http_get(base, "/readyz")
        if status == want:
            return body
        await trio.sleep(0.02)


async def test_run_serves_metrics_health_and_readiness(tmp_path: Path) -> None:
    # a and c refuse at first (nothing is ready), then accept; b refuses for good.
    good = SimulatedAgent(devices=["a", "c"], task_duration=0.2, refuse_connections=True)
    refusing = SimulatedAgent(devices=["b"], refuse_connections=True)
    with trio.fail_after(40):
        async with trio.open_nursery() as agents:
            url = await agents.start(good.serve_websocket)
            bad_url = await agents.start(refusing.serve_websocket)
            config = write_config(tmp_path / "fleet.toml", {"a": url, "b": bad_url, "c": url})
            with config.open("a") as file:
                file.write('[metrics]\nlisten = "127.0.0.1:0"\n')  # ready_share 0.5
            async with (
                supervisor_process(config) as proc,
                proc.client() as client,
                proc.client() as watcher,
            ):
                base = (await proc.read_stdout(METRICS_LINE))[1]
                events = await watcher.watch()
                assert await http_get(base, "/healthz") == (200, "ok\n")
                await wait_rows(client, lambda r: r["a"]["failures"] and r["c"]["failures"])
                body = await wait_ready(base, 503)
                assert body == "0 of 3 devices connected, 2 needed (ready_share 0.5)\n"

                good.refuse_connections = False
                await wait_rows(client, lambda r: r["a"]["status"] == r["c"]["status"] == "idle")
                assert await wait_ready(base, 200) == "ready\n"
                reply = await client.submit("hello", device="a")
                assert reply["outcome"] == "completed"
                found = await scrape(base)
                assert value(found, "galaxy_actors_devices", status="idle") == 2
                statuses = ("disconnected", "connecting", "connected", "idle", "busy", "failed")
                assert sum(value(found, "galaxy_actors_devices", status=s) for s in statuses) == 3
                assert value(found, "galaxy_actors_tasks_ended_total", outcome="completed") == 1
                assert value(found, "galaxy_actors_task_run_seconds_count") == 1
                assert value(found, "galaxy_actors_task_run_seconds_sum") >= 0.2
                # b's refusals, and a's and c's before they were let in.
                refused = value(
                    found, "galaxy_actors_connection_failures_total", reason="connect_failed"
                )
                assert refused >= 3
                assert value(found, "galaxy_actors_restarts_scheduled_total") >= refused - 1
                assert value(found, "galaxy_actors_queue_depth", device_id="b") == 0
                assert value(found, "process_open_fds") > 0  # the process's own metrics

                # One of the two down: below the share again.
                reply = await client.request("disconnect", device="a", force=True)
                assert reply["ok"], reply
                body = await wait_ready(base, 503)
                assert body == "1 of 3 devices connected, 2 needed (ready_share 0.5)\n"
                found = await scrape(base)
                assert value(found, "galaxy_actors_devices", status="disconnected") == 1

                # watch: when it happened, on the wall clock.
                event = await next_event(
                    events, lambda e: e["event"] == "StatusChanged" and e["new"] == "disconnected"
                )
                when = datetime.datetime.fromisoformat(event["wall_time"])
                now = datetime.datetime.now(datetime.UTC)
                assert when.utcoffset() == datetime.timedelta(0)
                assert abs((now - when).total_seconds()) < 5
                proc.process.terminate()
                assert await proc.process.wait() == 0
            agents.cancel_scope.cancel()


@asynccontextmanager
async def run_with(config: Path, *options: str) -> AsyncIterator[Running]:
    """``galaxy-actors run config *options``, up once its metrics endpoint is."""
    command = [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "none"]
    stderr_path = config.with_suffix(".stderr")
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*command, *options], stdout=subprocess.PIPE, stderr=stderr, env=child_env()
        )
        try:
            yield Running(process, stderr_path)
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                assert process.stdout is not None
                await process.stdout.aclose()


async def test_the_metrics_listen_flag_turns_metrics_on(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["a"])
    with trio.fail_after(30):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "flag.toml", {"a": url})
            async with run_with(config, "--metrics-listen", "127.0.0.1:0") as proc:
                base = (await proc.read_stdout(METRICS_LINE))[1]
                assert await wait_ready(base, 200) == "ready\n"
                assert (await http_get(base, "/nothing"))[0] == 404
                proc.process.terminate()
                assert await proc.process.wait() == 0
            agents.cancel_scope.cancel()


def test_metrics_without_the_extra_start_nothing_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if prometheus-client were not installed: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "galaxy_actors._process._metrics", raising=False)
    path = tmp_path / "m.toml"
    path.write_text('[metrics]\n[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n')
    assert main(["run", str(path), "--view", "none"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"galaxy-actors: {path}: metrics: galaxy_actors metrics need prometheus-client: "
        "pip install 'galaxy-actors[metrics]'\n"
    )


async def test_run_exits_1_when_the_metrics_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "taken.toml"
        path.write_text(
            f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
            '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n'
        )
        with trio.fail_after(30):  # a process that ignored [metrics] would run on
            done = await cli("run", str(path), "--view", "none")
    assert done.returncode == 1
    assert f"metrics endpoint: 127.0.0.1:{port}: [Errno 98]".encode() in done.stderr
