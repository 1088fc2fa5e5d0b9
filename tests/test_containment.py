"""Containment: one device's trouble, a user hook's bug or a slow close stays where it
started. Each test here failed (crashed, hung or saw the wrong thing) before its fix."""

from __future__ import annotations

import trio
from lab import memory_lab

from galaxy_actors import (
    DeviceStatus,
    RestartPolicy,
)

BAD, GOOD = "ws://bad/ws", "ws://good/ws"

# ------------------------------------------------------------------ withdrawn tasks


async def test_callers_cancelled_during_an_outage_leave_nothing_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    policy = RestartPolicy(reconnect_delay=1000.0)
    async with memory_lab(policy=policy) as lab:
        sup = lab.supervisor
        sup.add_device("pc", "ws://nobody/ws")  # down, retrying in 1000 s
        await sup.wait_for_status("pc", DeviceStatus.FAILED)
        mailbox = sup._actor("pc").mailbox

        async def impatient(n: int) -> None:
            with trio.move_on_after(1.0 + n * 0.001):
                await sup.run_task(f"task {n}", device_id="pc")

        async with trio.open_nursery() as callers:
            for n in range(2000):
                callers.start_soon(impatient, n)
            await trio.sleep(0.5)
            assert len(mailbox) == 2000
        assert len(mailbox) == 0
        assert len(mailbox._heap) <= 1  # the withdrawn entries were let go
        await sup.disconnect("pc")
