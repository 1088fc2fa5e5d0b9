"""The real server the cluster tests run on, reached from Trio through coredis."""

from __future__ import annotations

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
