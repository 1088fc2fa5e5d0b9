"""The operator's side of `galaxy-actors run`, end to end against a real process: runtime
control subcommands, SIGHUP and ``reload``, Ctrl-C on ``submit``, stale address files and
secrets kept out of every output. Helpers are test_cli's; every wait is bounded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_cli import (
    TOKEN,
    child_env,
    cli,
    supervisor_process,
    wait_rows,
    wait_until,
    write_config,
)

from galaxy_actors._process._cli import main
from galaxy_actors.testing import SimulatedAgent


async def ctl(address: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await cli(*args, "--address-file", str(address), "--token", TOKEN)


async def test_operator_subcommands_change_the_running_fleet(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["a", "b", "c"], task_duration=0.0)
    with trio.fail_after(40):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "ops.toml", {"a": url, "b": url})
            address = tmp_path / "address.json"
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(client, lambda r: r["a"]["status"] == r["b"]["status"] == "idle")
                done = await ctl(address, "disconnect", "a", "--force")
                assert (done.returncode, done.stdout) == (0, b"a: disconnected\n")
                await wait_rows(client, lambda r: r["a"]["status"] == "disconnected")
                done = await ctl(address, "connect", "a")
                assert (done.returncode, done.stdout) == (0, b"a: connected\n")
                done = await ctl(address, "remove", "b")
                assert (done.returncode, done.stdout) == (0, b"b: removed\n")
                done = await ctl(address, "add", "c", url, "--os", "Linux", "--capability", "cam")
                assert (done.returncode, done.stdout) == (0, b"c: added\n")
                rows = await wait_rows(client, lambda r: r.get("c", {}).get("status") == "idle")
                assert set(rows) == {"a", "c"} and rows["c"]["capabilities"] == ["cam"]
                done = await ctl(address, "cancel", "no-such-task")
                assert done.returncode == 1 and b"UnknownTask: no live task" in done.stderr
                done = await ctl(address, "connect", "zz")
                assert done.returncode == 1 and b"UnknownDevice" in done.stderr
                proc.process.send_signal(signal.SIGTERM)
                assert await proc.process.wait() == 0
            agents.cancel_scope.cancel()


async def test_sighup_and_reload_apply_the_file_and_keep_the_rest(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["a", "b", "c", "d"])
    with trio.fail_after(40):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "fleet.toml", {"a": url, "b": url, "c": url})
            address = tmp_path / "address.json"
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(
                    client, lambda r: all(row["status"] == "idle" for row in r.values())
                )
                # b goes, c changes (os), d comes; a is untouched, connection and all.
                text = config.read_text()
                write_config(config, {"a": url, "c": url, "d": url})
                config.write_text(
                    config.read_text().replace('device_id = "c"', 'device_id = "c"\nos = "Linux"')
                )
                proc.process.send_signal(signal.SIGHUP)
                rows = await wait_rows(
                    client, lambda r: set(r) == {"a", "c", "d"} and r["d"]["status"] == "idle"
                )
                assert rows["a"]["connections"] == 1  # kept its connection
                assert rows["c"]["os"] == "Linux"
                # An invalid file is reported and changes nothing.
                config.write_text(text.replace("ws://", "http://?token=hunter2&x=ws://"))
                done = await ctl(address, "reload")
                assert done.returncode == 2
                assert b"ConfigError" in done.stderr and b"hunter2" not in done.stderr
                proc.process.send_signal(signal.SIGHUP)
                await wait_until(lambda: "force stays" in proc.stderr_path.read_text())
                # The reload op, back to the first file: b returns, d goes.
                config.write_text(text)
                done = await ctl(address, "reload")
                assert done.returncode == 0, done.stderr
                assert done.stdout.decode().startswith("reloaded: added b; removed d; replaced c")
                rows = await wait_rows(client, lambda r: set(r) == {"a", "b", "c"})
                assert rows["a"]["connections"] == 1
                proc.process.send_signal(signal.SIGTERM)
                assert await proc.process.wait() == 0  # a SIGHUP no longer kills it (129)
            agents.cancel_scope.cancel()
    log = proc.stderr_path.read_text()
    assert "SIGHUP: the configuration in force stays" in log and "hunter2" not in log
    assert not address.exists()


async def test_ctrl_c_on_submit_cancels_its_task(tmp_path: Path) -> None:
    agent = SimulatedAgent(devices=["slow"], task_duration=60.0)
    with trio.fail_after(30):
        async with trio.open_nursery() as agents:
            url = await agents.start(agent.serve_websocket)
            config = write_config(tmp_path / "slow.toml", {"slow": url})
            address = tmp_path / "address.json"
            data = tmp_path / "data.json"
            data.write_text(json.dumps({"blob": "x" * 200_000}))  # beyond one argument's limit
            async with supervisor_process(config) as proc, proc.client() as client:
                await wait_rows(client, lambda r: r["slow"]["status"] == "idle")
                command = [sys.executable, "-m", "galaxy_actors", "submit", "--device", "slow"]
                command += ["long", "--data", f"@{data}", "--task-id", "t-1"]
                command += ["--address-file", str(address), "--token", TOKEN]
                submit = await trio.lowlevel.open_process(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
                )
                try:
                    await wait_rows(client, lambda r: r["slow"]["current_task_id"] == "t-1")
                    submit.send_signal(signal.SIGINT)
                    assert await submit.wait() == 128 + signal.SIGINT
                    assert submit.stderr is not None
                    err = await submit.stderr.receive_some(65536)
                    assert b"cancelled task t-1" in err
                finally:
                    if submit.returncode is None:
                        submit.kill()
                    with trio.CancelScope(shield=True):
                        await submit.wait()
                        for stream in (submit.stdout, submit.stderr):
                            assert stream is not None
                            await stream.aclose()
                # The task has its outcome (cancelled), so it is no longer live.
                again = await ctl(address, "cancel", "t-1")
                assert b"no live task 't-1'" in again.stderr
                proc.process.send_signal(signal.SIGTERM)
                assert await proc.process.wait() == 0
            agents.cancel_scope.cancel()


async def test_a_generated_token_never_reaches_stdout_and_url_tokens_are_masked(
    tmp_path: Path,
) -> None:
    config = tmp_path / "secret.toml"
    config.write_text(
        "[restart]\nreconnect_delay = 0.05\nmax_retries = 0\n"
        '[[devices]]\ndevice_id = "a"\nserver_url = "ws://127.0.0.1:9/ws?token=hunter2"\n'
    )
    command = [sys.executable, "-m", "galaxy_actors", "run", str(config), "--view", "plain"]
    command += ["--log-level", "debug"]
    with trio.fail_after(20):
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env()
        )
        assert process.stdout is not None and process.stderr is not None
        out = b""
        while b"control endpoint" not in out:
            out += await process.stdout.receive_some(65536)
        await trio.sleep(0.5)  # the device fails and gives up: logged
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0
        while chunk := await process.stdout.receive_some(65536):
            out += chunk
        err = b""
        while chunk := await process.stderr.receive_some(65536):
            err += chunk
        await process.stdout.aclose()
        await process.stderr.aclose()
    assert b"token generated; not shown" in out
    assert b"hunter2" not in out + err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("galaxy-actors 0.")


def test_a_client_names_a_stale_address_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    address = tmp_path / "address.json"
    address.write_text(json.dumps({"url": "ws://127.0.0.1:9/", "pid": child.pid, "token": "t"}))
    assert main(["status", "--address-file", str(address)]) == 1
    err = capsys.readouterr().err
    assert f"stale address file {address} (pid {child.pid} is not running)" in err


def test_bad_urls_and_data_are_refused_with_the_secret_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[devices]]\ndevice_id = "a"\nserver_url = "http://h/ws?token=hunter2"\n')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'http://h/ws?token=***'" in err and "hunter2" not in err
    assert main(["submit", "--device", "a", "x", "--data", f"@{tmp_path / 'none'}"]) == 2
    assert "cannot read" in capsys.readouterr().err
