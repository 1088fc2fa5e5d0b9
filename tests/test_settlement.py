"""Every task that did not finish on its connection is settled by one rule, and a task's id
stays reserved while an agent may still be running it."""

from __future__ import annotations

import pytest
import trio
from lab import memory_lab, next_event

from galaxy_actors import Delivery, DeviceStatus, DuplicateTaskId, RestartPolicy, TaskCancelled
from galaxy_actors.events import ConnectionFailed


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


async def test_a_device_gone_from_its_server_keeps_its_backlog_until_it_returns(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Against the real server, the backlog was sent and refused ("Target device 'X' is not
    # connected") within milliseconds, every task lost, while the device stayed idle.
    async with memory_lab(policy=RestartPolicy(reconnect_delay=1.0, max_retries=10)) as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        with sup.subscribe() as events:
            agent.detach_device("pc")
            handles = [await sup.submit(f"t{i}", device_id="pc") for i in range(50)]
            failed = await next_event(events, lambda e: isinstance(e, ConnectionFailed))
            assert isinstance(failed, ConnectionFailed) and failed.reason == "device_offline"
            assert sup.snapshot("pc").status is not DeviceStatus.IDLE
            await trio.sleep(30.0)  # the server refuses to register it meanwhile
            assert not any(h.done for h in handles)
            assert sup.snapshot("pc").queue_depth == 50
            agent.attach_device("pc")
            results = [await h.result() for h in handles]
        assert all(r.ok for r in results)
        assert [r.task_id for r in results] == [h.task_id for h in handles]  # in order
        refused = [f for f in agent.received if f.message and f.message.type == "task"]
        assert len(refused) == 51  # the first was refused once, then all ran once


async def test_a_connect_during_a_disconnects_grace_connects_again_after_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Found by the invariant work: connect() saw the device busy and returned True at once,
    # and the disconnect under way then left the device disconnected.
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        running = await sup.submit("long", device_id="pc")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.disconnect, "pc")  # graceful: the task may finish
            await trio.sleep(1.0)
            assert await sup.connect("pc")
        assert (await running.result()).ok
        assert sup.snapshot("pc").status is DeviceStatus.IDLE
        assert trio.current_time() == pytest.approx(10.0)
        assert (await sup.run_task("after", device_id="pc")).ok
