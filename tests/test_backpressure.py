"""A bound on each device's queue (``max_queue``): a submit waits for room, or raises
`QueueFull` with ``block=False``; either way no task is lost or half-made."""

from __future__ import annotations

import pytest
import trio
from lab import memory_lab

from galaxy_actors import (
    ConfigurationError,
    DeviceStatus,
    DeviceUnavailable,
    QueueFull,
    UnknownDevice,
    open_supervisor,
)


async def test_a_full_queue_refuses_at_once_without_blocking(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(max_queue=2) as lab:
        await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        running = await sup.submit("running", device_id="pc")
        queued = [await sup.submit(f"q{i}", device_id="pc") for i in range(2)]
        with pytest.raises(QueueFull) as caught:
            await sup.submit("one too many", device_id="pc", task_id="extra", block=False)
        assert caught.value.device_id == "pc" and caught.value.task_id == "extra"
        assert sup.snapshot("pc").queue_depth == 2
        # The refused task does not exist: its id is free.
        await running.result()
        again = await sup.submit("now there is room", device_id="pc", task_id="extra")
        for handle in [*queued, again]:
            assert (await handle.result()).ok


async def test_a_blocking_submit_waits_for_room_and_keeps_the_order(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(max_queue=1) as lab:
        await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        first = await sup.submit("first", device_id="pc")
        second = await sup.submit("second", device_id="pc")
        third = await sup.submit("third", device_id="pc")  # waits for "second" to start
        assert trio.current_time() == pytest.approx(10.0)
        assert sup.snapshot("pc").queue_depth == 1
        results = [await h.result() for h in (first, second, third)]
        assert [r.timings.ended_at for r in results] == pytest.approx([10.0, 20.0, 30.0])


async def test_a_submit_cancelled_while_waiting_for_room_leaves_no_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(max_queue=1) as lab:
        await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        await sup.submit("running", device_id="pc")
        await sup.submit("queued", device_id="pc")
        with trio.move_on_after(5.0) as scope:
            await sup.submit("gave up", device_id="pc", task_id="late")
        assert scope.cancelled_caught
        assert sup.snapshot("pc").queue_depth == 1
        assert (await sup.run_task("again", device_id="pc", task_id="late")).ok


async def test_a_device_removed_while_a_submit_waits_for_room_wakes_it_with_the_reason(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(max_queue=1) as lab:
        await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        await sup.submit("running", device_id="pc")
        await sup.submit("queued", device_id="pc")
        async with trio.open_nursery() as nursery:

            async def remove() -> None:
                await trio.sleep(1.0)
                await sup.remove_device("pc", force=True)

            nursery.start_soon(remove)
            # Woken when the removal ends the queue: the device takes no more tasks.
            with pytest.raises(DeviceUnavailable):
                await sup.submit("waiting", device_id="pc")
        with pytest.raises(UnknownDevice):
            await sup.submit("after", device_id="pc")


async def test_routing_by_capability_passes_over_a_full_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        sup = lab.supervisor
        lab.agent("ws://agent/ws", devices=["small", "big"], task_duration=10.0)
        sup.add_device("small", "ws://agent/ws", capabilities=["web"], max_queue=1)
        sup.add_device("big", "ws://agent/ws", capabilities=["web"])
        for device in ("small", "big"):
            await sup.wait_for_status(device, DeviceStatus.IDLE)
        await sup.submit("s-run", device_id="small")
        await sup.submit("s-queued", device_id="small")  # "small" is full now
        for i in range(2):
            await sup.submit(f"b{i}", device_id="big")
        # "small" has fewer tasks ahead (2 against 3), but no room.
        routed = await sup.submit("routed", capabilities=["web"], block=False)
        assert routed.device_id == "big"
        await sup.submit("b-queued-2", device_id="big")
        assert (await routed.result()).ok


async def test_max_queue_must_be_a_positive_int() -> None:
    with pytest.raises(ConfigurationError, match="max_queue"):
        async with open_supervisor(max_queue=0):
            pass
