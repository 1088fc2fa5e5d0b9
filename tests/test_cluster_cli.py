"""``submit``, ``result``, ``status`` and ``watch`` with ``--cluster``: what an operator types
and reads, against a real Redis (no node runs here: tasks stay queued; the process test,
tests/test_cluster_process.py, runs them).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from redis_server import RedisServer

from galaxy_actors._process._cli import main
from galaxy_actors._process._cli_cluster import cluster_target
from galaxy_actors._process._cli_control import UsageError
from galaxy_actors._process._config_cluster import REDIS_URL_ENV
from galaxy_actors.cluster import open_client


def define(url: str, fleet: str, *devices: str) -> None:
    async def body() -> None:
        async with open_client(url, fleet) as client:
            for device in devices:
                await client.define_device(device, "ws://127.0.0.1:9/ws", "Linux")

    trio.run(body)


def submit(url: str, fleet: str, device: str, task_id: str) -> None:
    async def body() -> None:
        async with open_client(url, fleet) as client:
            await client.submit("x", {}, device_id=device, task_id=task_id)

    trio.run(body)


def test_status_lists_the_fleet_and_who_owns_what(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    define(redis_server.url, "blue", "pc-1", "pc-2")
    assert main(["status", "--cluster", redis_server.url, "--fleet", "blue"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "0 live nodes (none); 2 devices, 2 without an owner"
    assert out[1:] == ["pc-1  -", "pc-2  -"]
    # Another fleet in the same Redis is another fleet.
    assert main(["status", "--cluster", redis_server.url, "--fleet", "red"]) == 0
    assert capsys.readouterr().out.startswith("0 live nodes (none); 0 devices")


def test_a_node_file_names_the_redis_and_the_fleet(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    define(redis_server.url, "blue", "pc-1")
    node = tmp_path / "node.toml"
    node.write_text(f'[cluster]\nredis_url = "{redis_server.url}"\nnode = "a"\nfleet = "blue"\n')
    assert main(["status", "--cluster", str(node), "--json"]) == 0
    assert '"pc-1": null' in capsys.readouterr().out


def test_result_of_a_queued_task_exits_3_and_an_unknown_one_1(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    define(redis_server.url, "default", "pc-1")
    submit(redis_server.url, "default", "pc-1", "t-1")
    assert main(["result", "--cluster", redis_server.url, "t-1"]) == 3
    assert capsys.readouterr().out == "task t-1: queued\n"
    assert main(["result", "--cluster", redis_server.url, "nope"]) == 1
    assert "UnknownTask: no task nope in the fleet" in capsys.readouterr().err


def test_an_unreachable_redis_exits_1_without_showing_its_password(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_server.stop()
    url = f"redis://:hunter2@127.0.0.1:{redis_server.port}/0"
    assert main(["status", "--cluster", url]) == 1
    err = capsys.readouterr().err
    assert "cannot be reached" in err
    assert "hunter2" not in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["connect", "--cluster", "redis://127.0.0.1", "pc-1"], "not on a cluster"),
        (["status", "--cluster", "http://127.0.0.1"], "scheme"),
        (["status", "--cluster", "missing.toml"], "no such file"),
        (["status", "--cluster", "redis://127.0.0.1", "--fleet", "a b"], "--fleet"),
        (["status", "--control", "ws://127.0.0.1:9/", "--fleet", "a"], "goes with --cluster"),
    ],
)
def test_usage_mistakes_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_the_target_may_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, "redis://:pw@10.0.0.5:6379/1")
    target = cluster_target("-", None)
    assert (target.redis_url, target.fleet) == ("redis://:pw@10.0.0.5:6379/1", "default")
    monkeypatch.delenv(REDIS_URL_ENV)
    with pytest.raises(UsageError, match=REDIS_URL_ENV):
        cluster_target("-", None)


def test_a_file_without_a_cluster_table_is_no_target(tmp_path: Path) -> None:
    path = tmp_path / "alone.toml"
    path.write_text('[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:9/ws"\n')
    with pytest.raises(UsageError, match=r"has no \[cluster\] table"):
        cluster_target(str(path), None)


@pytest.mark.parametrize("argv", [["status", "--cluster", "redis://127.0.0.1"], ["run", "NODE"]])
def test_without_the_cluster_extra_a_clear_error_and_exit_2(
    argv: list[str], tmp_path: Path
) -> None:
    node = tmp_path / "node.toml"
    node.write_text('[cluster]\nredis_url = "redis://127.0.0.1"\nnode = "a"\n')
    argv = [str(node) if a == "NODE" else a for a in argv]
    # coredis made unimportable, as on an installation without the extra.
    code = (
        "import sys; sys.modules['coredis'] = None\n"
        "from galaxy_actors._process._cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert b"cluster" in done.stderr
    assert b"Traceback" not in done.stderr
