"""The real server the cluster tests run on, reached from Trio through coredis."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import coredis
import trio
from redis_server import RedisServer


async def test_coredis_talks_to_the_real_server_from_trio(redis_server: RedisServer) -> None:
    client = coredis.Redis.from_url(redis_server.url, decode_responses=True)
    async with client:
        assert await client.set("k", "v", condition=coredis.PureToken.NX, px=10_000)
        assert not await client.set("k", "w", condition=coredis.PureToken.NX, px=10_000)
        assert await client.get("k") == "v"
        await client.xgroup_create("s", "g", "0", mkstream=True)
        entry = await client.xadd("s", {"n": "1"})
        read = await client.xreadgroup("g", "c", streams={"s": ">"}, count=10)
        assert read is not None and [e.identifier for e in read["s"]] == [entry]
        # A blocking read gives way to Trio's cancellation, and the client stays usable.
        with trio.move_on_after(0.2) as scope:
            await client.xreadgroup("g", "c", streams={"s": ">"}, block=5_000)
        assert scope.cancelled_caught
        assert await client.xack("s", "g", [entry]) == 1


def test_without_a_server_binary_the_cluster_tests_fail_saying_how_to_install_one(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "GALAXY_ACTORS_REDIS_SERVER": str(tmp_path / "no-such-server")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{Path(__file__)}::test_coredis_talks_to_the_real_server_from_trio",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stdout
    assert "1 error" in run.stdout and "skipped" not in run.stdout
    assert "apt-get install -y redis-server" in run.stdout
