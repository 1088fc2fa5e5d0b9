"""Every task that did not finish on its connection is settled by one rule, and a task's id
stays reserved while an agent may still be running it."""

from __future__ import annotations

import pytest
import trio
from lab import memory_lab

from galaxy_actors import Delivery, DeviceStatus, DuplicateTaskId, TaskCancelled


async def test_an_at_least_once_task_cut_off_during_a_graceful_disconnect_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Measured on the earlier design: the task was requeued onto the disconnected device
    # and was still pending an hour later.
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        handle = await sup.submit("long", device_id="pc", delivery=Delivery.AT_LEAST_ONCE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.disconnect, "pc")  # graceful: 30 s for the task
            await trio.sleep(1.0)
            await agent.drop_connections()  # the connection dies within the grace
        with trio.fail_after(60):
            await handle.wait()
        with pytest.raises(TaskCancelled):
            await handle.result()
        assert sup.snapshot("pc").status is DeviceStatus.DISCONNECTED
        assert sup.snapshot("pc").queue_depth == 0


async def test_an_at_least_once_task_cut_off_by_a_failure_runs_again(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        handle = await sup.submit("again", device_id="pc", delivery=Delivery.AT_LEAST_ONCE)
        await trio.sleep(1.0)
        await agent.drop_connections()
        result = await handle.result()
        assert result.ok
        tasks = [f for f in agent.received if f.message and f.message.type == "task"]
        assert len(tasks) == 2


async def test_a_cancelled_task_keeps_its_id_until_the_agent_is_done_with_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        handle = await sup.submit("slow", device_id="pc", task_id="t")
        await trio.sleep(1.0)
        sup.cancel_task(handle)
        with pytest.raises(TaskCancelled):
            await handle.result()
        # The agent still runs "t": a second "t" would collide with it on a real server.
        with pytest.raises(DuplicateTaskId):
            await sup.submit("again", device_id="pc", task_id="t")
        await sup.wait_for_status("pc", DeviceStatus.IDLE)  # its TASK_END arrived
        assert trio.current_time() == pytest.approx(10.0)
        again = await sup.submit("again", device_id="pc", task_id="t")
        assert (await again.result()).ok


async def test_a_task_cut_off_with_its_connection_releases_its_id(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        handle = await sup.submit("slow", device_id="pc", task_id="t")
        sup.cancel_task(handle)
        await agent.drop_connections()
        await sup.wait_for_status("pc", DeviceStatus.IDLE)
        again = await sup.submit("again", device_id="pc", task_id="t")
        assert (await again.result()).ok
