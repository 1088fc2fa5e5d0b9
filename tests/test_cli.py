"""The console command: end to end against a real `galaxy-actors run` process, the demo, the
agent, the client commands, logging and the status view.

End-to-end tests start ``python -m galaxy_actors run`` as a subprocess, pointed at simulated
agents served by the test on 127.0.0.1; every real-time wait is bounded by ``trio.fail_after``
and waits for behaviour by reading output, the event stream or the ``devices`` op.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from galaxy_actors import DeviceStatus, open_supervisor
from galaxy_actors._process._cli import main
from galaxy_actors._process._control_client import ControlClient, open_control_client
from galaxy_actors._process._demo import DemoSettings, run_demo
from galaxy_actors._process._logging import setup_logging
from galaxy_actors._process._view import choose_view, show_status
from galaxy_actors.errors import TransportClosed
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

TOKEN = "e2e-token"
CONTROL_LINE = re.compile(r"control endpoint: (ws://\S+)")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() installs a handler on the root logger; put things back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GALAXY_ACTORS_TOKEN", None)
    return env


def write_config(path: Path, devices: dict[str, str], *, grace: float = 3.0) -> Path:
    entries = "".join(
        f'[[devices]]\ndevice_id = "{device}"\nserver_url = "{url}"\n'
        f'capabilities = ["{device}-cap", "any"]\n'
        for device, url in devices.items()
    )
    path.write_text(
        "[supervisor]\nheartbeat_interval = 0.5\nheartbeat_timeout = 0.5\n"
        f"shutdown_grace = {grace}\nclose_timeout = 1.0\n"
        "[restart]\nreconnect_delay = 0.05\nmax_delay = 0.2\nmax_retries = 50\n"
        f'[control]\ntoken = "{TOKEN}"\naddress_file = "address.json"\n'
        '[logging]\nformat = "json"\n' + entries
    )
    return path


@attrs.define
class Running:
    """A ``galaxy-actors run`` subprocess and what it printed."""

    process: trio.Process
    stderr_path: Path
    url: str = ""
    stdout: bytearray = attrs.Factory(bytearray)

    async def read_stdout(self, pattern: re.Pattern[str]) -> re.Match[str]:
        assert self.process.stdout is not None
        while (match := pattern.search(self.stdout.decode())) is None:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"stdout ended: {self.stdout.decode()}")
            self.stdout += chunk
        return match

    async def read_all_stdout(self) -> str:
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some(65536):
            self.stdout += chunk
        return self.stdout.decode()

    @asynccontextmanager
    async def client(self) -> AsyncIterator[ControlClient]:
        async with open_control_client(self.url, TOKEN) as client:
            yield client


@asynccontextmanager
async def supervisor_process(config: Path) -> AsyncIterator[Running]:
    stderr_path = config.with_suffix(".stderr")
    command = [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "plain"]
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=child_env()
        )
        try:
            running = Running(process, stderr_path)
            running.url = (await running.read_stdout(CONTROL_LINE))[1]
            yield running
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                assert process.stdout is not None
                await process.stdout.aclose()


async def wait_rows(
    client: ControlClient, predicate: Callable[[dict[str, dict[str, Any]]], bool]
) -> dict[str, dict[str, Any]]:
    """Poll the devices op until ``predicate`` holds (bounded by the caller's fail_after)."""
    while True:
        rows = {r["device_id"]: r for r in await client.devices()}
        if predicate(rows):
            return rows
        await trio.sleep(0.02)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition of the test's own objects (bounded by the caller's fail_after)."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


async def next_event(
    events: AsyncIterator[dict[str, Any]], predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    async for event in events:
        if predicate(event):
            return event
    raise AssertionError("the event stream ended")


async def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "galaxy_actors", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=child_env(),
    )


# --------------------------------------------------------------------------- end to end


async def _submit_forever(client: ControlClient) -> None:
    while True:
        await client.submit("seen", device="pc")


async def test_run_end_to_end(tmp_path: Path) -> None:
    agent_a = SimulatedAgent(devices=["a"], task_duration=0.05)
    agent_b = SimulatedAgent(devices=["b"], task_duration=1.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as agents:
            urls = {
                "a": await agents.start(agent_a.serve_websocket),
                "b": await agents.start(agent_b.serve_websocket),
            }
            config = write_config(tmp_path / "fleet.toml", urls)
            address = tmp_path / "address.json"
            async with (
                supervisor_process(config) as proc,
                proc.client() as client,
                proc.client() as watcher,
            ):
                assert json.loads(address.read_text())["url"] == proc.url
                events = await watcher.watch()
                await wait_rows(client, lambda r: r["a"]["status"] == r["b"]["status"] == "idle")

                # Tasks through the endpoint, to a device and by capability.
                reply = await client.submit("hello", device="a", data={"n": 1})
                assert (reply["ok"], reply["outcome"], reply["device_id"]) == (
                    True,
                    "completed",
                    "a",
                )
                reply = await client.submit("by cap", capabilities=["a-cap"])
                assert reply["outcome"] == "completed" and reply["device_id"] == "a"
                # ...and through the console command.
                done = await cli(
                    "submit",
                    "--address-file",
                    str(address),
                    "--token",
                    TOKEN,
                    "--device",
                    "a",
                    "from the cli",
                )
                assert done.returncode == 0, done.stderr
                assert b"completed on a" in done.stdout
                failed = await cli(
                    "submit",
                    "--address-file",
                    str(address),
                    "--token",
                    TOKEN,
                    "--capability",
                    "a-cap",
                    "x",
                    "--data",
                    '{"sim_error": "broken"}',
                )
                assert failed.returncode == 1 and b"error: broken" in failed.stdout

                # The agent drops its connections: the device reconnects by itself.
                await agent_a.drop_connections()
                failure = await next_event(
                    events, lambda e: e["event"] == "ConnectionFailed" and e["device_id"] == "a"
                )
                assert failure["reason"] == "connection_closed"
                await next_event(
                    events,
                    lambda e: (
                        e["event"] == "StatusChanged"
                        and e["device_id"] == "a"
                        and e["new"] == "idle"
                    ),
                )
                rows = await wait_rows(client, lambda r: r["a"]["connections"] == 2)
                assert rows["a"]["failures"] == 1

                # SIGTERM with one task running on b and two queued behind it.
                replies: list[dict[str, Any]] = []

                async def submit_to_b(n: int) -> None:
                    async with proc.client() as own:
                        replies.append(await own.submit(f"long {n}", device="b"))

                async with trio.open_nursery() as submitters:
                    for n in range(3):
                        submitters.start_soon(submit_to_b, n)
                    await wait_rows(
                        client, lambda r: r["b"]["status"] == "busy" and r["b"]["queue_depth"] == 2
                    )
                    proc.process.send_signal(signal.SIGTERM)
                # No task lost: each submitter got its task's one outcome.
                assert sorted(r["outcome"] for r in replies) == [
                    "TaskCancelled",
                    "TaskCancelled",
                    "completed",
                ]
                assert await proc.process.wait() == 0
                stdout = await proc.read_all_stdout()
            # The supervisor closed both connections before it exited (the agents see them
            # end; they do not record close codes).
            await wait_until(lambda: agent_a.open_connections == agent_b.open_connections == 0)
            agents.cancel_scope.cancel()

    assert "stopped: 2 devices: 2 disconnected; tasks 4 done, 1 failed" in stdout
    assert not address.exists()
    records = [json.loads(line) for line in proc.stderr_path.read_text().splitlines()]
    assert all(set(r) >= {"time", "level", "logger", "device_id", "message"} for r in records)
    assert any(r["device_id"] == "a" and "disconnected" in r["message"] for r in records)
    assert any("SIGTERM: stopping" in r["message"] for r in records)


async def test_a_second_signal_forces_the_exit(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["slow"], task_duration=60.0)
    with trio.fail_after(20):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "slow.toml", {"slow": url}, grace=60.0)
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(client, lambda r: r["slow"]["status"] == "idle")

                async def submit() -> None:
                    async with proc.client() as own:
                        with pytest.raises(TransportClosed):  # the process is gone
                            await own.submit("forever", device="slow")

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(submit)
                    await wait_rows(client, lambda r: r["slow"]["status"] == "busy")
                    proc.process.send_signal(signal.SIGTERM)
                    # Shutting down: waiting up to 60 s for the running task.
                    reply = await client.request("devices")
                    while reply["accepting"]:
                        reply = await client.request("devices")
                    proc.process.send_signal(signal.SIGTERM)
                    with trio.fail_after(5):
                        assert await proc.process.wait() == 128 + signal.SIGTERM
            agents.cancel_scope.cancel()


async def test_status_and_watch_commands(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["pc"])
    with trio.fail_after(20):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "one.toml", {"pc": url})
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(client, lambda r: r["pc"]["status"] == "idle")
                status = await cli("status", "--control", proc.url, "--token", TOKEN)
                assert status.returncode == 0, status.stderr
                lines = status.stdout.decode().splitlines()
                assert lines[0] == "1 devices: 1 idle; tasks 0 done, 0 failed"
                assert lines[1].split() == [
                    "DEVICE",
                    "STATUS",
                    "QUEUE",
                    "RETRIES",
                    "RETRY",
                    "IN",
                    "SEEN",
                    "DONE",
                    "FAILED",
                    "REASON",
                ]
                assert lines[2].split()[:4] == ["pc", "idle", "0", "0/50"]
                wrong = await cli("status", "--control", proc.url, "--token", "nope", "--json")
                assert wrong.returncode == 2
                assert json.loads(wrong.stdout)["error"]["type"] == "Unauthorized"
                # `watch` prints events until the supervisor stops.
                command = [sys.executable, "-m", "galaxy_actors", "watch", "--control", proc.url]
                watch = await trio.lowlevel.open_process(
                    [*command, "--token", TOKEN], stdout=subprocess.PIPE, env=child_env()
                )
                try:
                    assert watch.stdout is not None
                    printed = b""
                    async with trio.open_nursery() as nursery:
                        # Tasks until one shows in the watch: then it is surely subscribed.
                        nursery.start_soon(_submit_forever, client)
                        while b"TaskEnded" not in printed:
                            printed += await watch.stdout.receive_some(65536)
                        nursery.cancel_scope.cancel()
                    proc.process.send_signal(signal.SIGTERM)
                    while chunk := await watch.stdout.receive_some(65536):
                        printed += chunk
                    assert await watch.wait() == 0  # the stream ended with the supervisor
                finally:
                    if watch.returncode is None:
                        watch.kill()
                    with trio.CancelScope(shield=True):
                        await watch.wait()
                        assert watch.stdout is not None
                        await watch.stdout.aclose()
                assert re.search(rb"TaskEnded +pc +task_id=\w+ outcome=completed", printed)
                # From whatever it was at the signal (idle, still busy with the last task, or
                # reconnecting on a loaded machine): the supervisor disconnects it.
                assert re.search(rb"StatusChanged +pc +old=\w+ new=disconnected", printed)
            agents.cancel_scope.cancel()


async def test_the_agent_command_serves_a_simulated_agent() -> None:
    command = [
        sys.executable,
        "-m",
        "galaxy_actors",
        "agent",
        "--port",
        "0",
        "--device",
        "pc",
        "--token",
        "k",
        "--fault",
        "drop-every=30",
        "--task-duration",
        "0.01",
    ]
    with trio.fail_after(15):
        process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, env=child_env())
        try:
            assert process.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1024)
            url = line.decode().strip()
            assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/ws\?token=k", url)
            async with open_supervisor() as sup:
                sup.add_device("pc", url, connect=False)
                assert await sup.connect("pc")
                result = await sup.run_task("hi", device_id="pc")
                assert result.ok
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                assert process.stdout is not None
                await process.stdout.aclose()


# --------------------------------------------------------------------------- run: refusals


def test_run_with_a_bad_config_starts_nothing_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n'
        '[[devices]]\ndevice_id = "b"\nserver_url = "http://127.0.0.1:9/ws"\n'
    )
    assert main(["run", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"galaxy-actors: {path}: devices[1].server_url: invalid server_url "
        "'http://127.0.0.1:9/ws': scheme must be ws:// or wss://\n"
    )
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml: no such file" in capsys.readouterr().err


def test_run_exits_1_when_the_control_port_is_taken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "taken.toml"
        path.write_text(
            f"[control]\nport = {port}\n"
            '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n'
        )
        assert main(["run", str(path), "--view", "none"]) == 1
    assert f"control endpoint: 127.0.0.1:{port}: [Errno 98]" in capsys.readouterr().err


def test_run_exits_1_when_the_address_file_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("")
    path = tmp_path / "bad-address.toml"
    path.write_text(
        '[control]\naddress_file = "file/address.json"\n'
        '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n'
    )
    assert main(["run", str(path), "--view", "none"]) == 1
    err = capsys.readouterr().err
    assert f"control endpoint: {tmp_path / 'file' / 'address.json'}: not a directory" in err


def test_run_does_not_create_missing_folders_for_the_address_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(
        '[control]\naddress_file = "rnu/address.json"\n'
        '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws"\n'
    )
    assert main(["run", str(path), "--view", "none"]) == 1
    assert f"no such directory: {tmp_path / 'rnu'}" in capsys.readouterr().err
    assert not (tmp_path / "rnu").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "required"),
        (["demo", "--flaky", "1.5"], "from 0 to 1"),
        (["demo", "--duration", "-1"], "positive"),
        (["demo", "--devices", "0"], "at least 1"),
        (["agent", "--port", "0", "--fault", "explode"], "unknown fault 'explode'"),
        (["agent", "--port", "0", "--fault", "drop-every"], "unknown fault"),
        (["submit", "x"], "one of the arguments --device --capability is required"),
        (["submit", "--device", "a", "x", "--data", "[1]"], "must be a JSON object"),
        (["submit", "--device", "a", "x", "--data", "{"], "not JSON"),
        (["submit", "--device", "a", "x"], "--control URL or --address-file PATH"),
        (["status", "--control", "ws://127.0.0.1:9/"], "no token"),
        (["status", "--address-file", "/nonexistent/a.json", "--token", "t"], "cannot read"),
    ],
)
def test_usage_mistakes_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    monkeypatch.delenv("GALAXY_ACTORS_TOKEN", raising=False)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_endpoint_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        assert main(["status", "--control", f"ws://127.0.0.1:{port}/", "--token", "t"]) == 1
    assert f"control endpoint ws://127.0.0.1:{port}/: connection failed" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("run", "demo", "agent", "submit", "status", "watch"))


# --------------------------------------------------------------------------- demo


async def test_the_demo_loses_no_task_through_every_kind_of_fault(autojump_clock: Any) -> None:
    out = io.StringIO()
    settings = DemoSettings(devices=8, flaky=0.5, duration=60.0, seed=11)
    tally = await run_demo(settings, out=out, view="plain", network=MemoryNetwork())
    assert tally.lost == 0 and tally.submitted == tally.outcomes
    assert tally.submitted > 300 and tally.completed > 200 and tally.failed > 0
    assert set(tally.faults) == {"drop", "stall-heartbeats", "reject-registration", "outage"}
    assert tally.reconnections > 0 and tally.give_ups > 0
    assert {"connection_closed", "heartbeat_timeout", "registration_rejected"} <= set(
        tally.connection_failures
    )
    text = out.getvalue()
    assert "galaxy_actors demo: 8 devices" in text  # the plain status lines
    assert text.rstrip().endswith("nothing lost")


def test_the_demo_command_on_real_sockets(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--devices", "3", "--flaky", "0.34", "--duration", "1.5", "--seed", "3"]
    assert main([*argv, "--view", "plain", "--rate", "20"]) == 0
    out = capsys.readouterr().out
    assert "demo summary: 3 devices (1 flaky), 1.5 s, seed 3" in out
    submitted = int(re.search(r"tasks submitted\s+(\d+)", out)[1])  # type: ignore[index]
    assert submitted > 5
    assert out.rstrip().endswith("nothing lost")


# --------------------------------------------------------------------------- logs and view


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_log_record_carries_the_device_id(log_format: str) -> None:
    stream = io.StringIO()
    setup_logging(log_format, "info", stream)
    logging.getLogger("galaxy_actors.device").warning("lost", extra={"device_id": "pc"})
    logging.getLogger("galaxy_actors.process").info("hello")
    logging.getLogger("galaxy_actors.process").debug("not shown")
    first, second = stream.getvalue().splitlines()
    if log_format == "json":
        assert json.loads(first)["device_id"] == "pc" and json.loads(first)["level"] == "WARNING"
        assert json.loads(second)["device_id"] is None and json.loads(second)["message"] == "hello"
    else:
        assert "WARNING galaxy_actors.device [pc] lost" in first
        assert "INFO    galaxy_actors.process [-] hello" in second
    setup_logging(log_format, "info", stream)  # a second call replaces the first handler
    logging.getLogger("x").info("once")
    assert stream.getvalue().count("once") == 1


async def test_the_status_view_live_and_plain(autojump_clock: Any) -> None:
    assert choose_view("auto", io.StringIO()) == "plain"
    assert choose_view("none", io.StringIO()) == "none"
    network = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        SimulatedAgent().serve_memory(network, "ws://a/ws", nursery)
        async with open_supervisor(connector=network.connector()) as sup:
            sup.add_device("office_pc", "ws://a/ws")
            sup.add_device("lab_mac", "ws://nobody/ws")
            await sup.wait_for_status("office_pc", DeviceStatus.IDLE)
            outputs = {}
            for mode in ("live", "plain"):
                out = io.StringIO()
                with trio.move_on_after(6):
                    await show_status(sup, mode, out, footer=lambda rows: "FOOTER")
                outputs[mode] = out.getvalue()
        nursery.cancel_scope.cancel()
    for text in outputs.values():
        assert "office_pc" in text and "lab_mac" in text and "FOOTER" in text
    assert "failed" in outputs["plain"] and "connect_failed" in outputs["plain"]
    assert "RETRY IN" in outputs["live"]
