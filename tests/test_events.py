"""Typed, numbered events: what a subscriber of ``Supervisor.subscribe()`` receives."""

from __future__ import annotations

import json
import math

import attrs
import pytest
import trio
from lab import memory_lab, next_event

from galaxy_actors import TaskTimeout
from galaxy_actors import errors as errors_module
from galaxy_actors import events as events_module
from galaxy_actors._actors._events import EventHub
from galaxy_actors._process._report import event_to_json
from galaxy_actors.errors import TaskCancelled, TaskError
from galaxy_actors.events import (
    BadFrame,
    BadFrameKind,
    ConnectionFailed,
    DeviceAdded,
    FailureReason,
    RestartScheduled,
    TaskEnded,
    TaskOutcome,
    TaskSent,
)

EVENT_CLASSES = [
    getattr(events_module, name)
    for name in events_module.__all__
    if attrs.has(getattr(events_module, name)) and name != "Subscription"
]


def test_a_subscriber_that_fell_behind_sees_the_gap_in_the_numbers() -> None:
    hub = EventHub()
    with hub.subscribe(buffer=2) as slow, hub.subscribe(buffer=math.inf) as fast:
        for n in range(5):
            hub.publish(DeviceAdded(f"d{n}", float(n)))
        got = [slow.receive_nowait().seq, slow.receive_nowait().seq]
        hub.publish(DeviceAdded("d5", 5.0))
        got.append(slow.receive_nowait().seq)
        assert got == [1, 2, 6]
        assert slow.dropped == 3 == got[2] - got[1] - 1
        assert [fast.receive_nowait().seq for _ in range(6)] == [1, 2, 3, 4, 5, 6]
        assert fast.dropped == 0


def test_the_number_is_not_part_of_what_happened() -> None:
    assert attrs.evolve(DeviceAdded("a", 0.0), seq=7) == DeviceAdded("a", 0.0)
    assert "seq=7" in repr(attrs.evolve(DeviceAdded("a", 0.0), seq=7))


def test_every_event_has_a_docstring_and_a_number() -> None:
    assert len(EVENT_CLASSES) == 10
    for cls in EVENT_CLASSES:
        assert cls.__doc__ and cls.__doc__.strip(), cls
        assert "seq" in attrs.fields_dict(cls), cls


def test_every_task_error_names_its_own_outcome() -> None:
    for name in errors_module.__all__:
        cls = getattr(errors_module, name)
        if issubclass(cls, TaskError):
            assert TaskOutcome.of_error(cls.__new__(cls)) == name
    assert TaskOutcome.of_error(ValueError()) is TaskOutcome.ERROR


def test_one_constructor_makes_the_cancelled_message() -> None:
    error = TaskCancelled.withdrawn("t1", "pc", "cancelled by the user")
    assert str(error) == "task 't1' cancelled: cancelled by the user"
    assert (error.task_id, error.device_id) == ("t1", "pc")


async def test_a_task_is_sent_then_ends_with_a_typed_outcome(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=2.0)
        with lab.supervisor.subscribe() as events:
            handle = await lab.supervisor.submit("x", device_id="pc", task_id="t1")
            sent = await next_event(events, lambda e: isinstance(e, TaskSent))
            ended = await next_event(events, lambda e: isinstance(e, TaskEnded))
        assert isinstance(sent, TaskSent) and (sent.task_id, sent.device_id) == ("t1", "pc")
        assert sent.at == (await handle.result()).timings.sent_at
        assert isinstance(ended, TaskEnded) and ended.outcome is TaskOutcome.COMPLETED
        assert ended.at - sent.at == 2.0 and ended.seq > sent.seq
        # The JSON of the watch stream and the JSON log keep the plain text.
        assert json.loads(json.dumps(event_to_json(ended)))["outcome"] == "completed"


async def test_a_timed_out_task_ends_with_the_timeout_outcome(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=100.0)
        with lab.supervisor.subscribe() as events:
            handle = await lab.supervisor.submit("x", device_id="pc", task_timeout=5.0)
            ended = await next_event(events, lambda e: isinstance(e, TaskEnded))
        assert isinstance(ended, TaskEnded) and ended.outcome is TaskOutcome.TIMED_OUT
        with pytest.raises(TaskTimeout):
            await handle.result()


async def test_a_failed_connection_carries_its_reason_as_an_enum(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        with lab.supervisor.subscribe() as events:
            lab.supervisor.add_device("pc", "ws://nobody/ws", "Linux")
            failed = await next_event(events, lambda e: isinstance(e, ConnectionFailed))
            scheduled = await next_event(events, lambda e: isinstance(e, RestartScheduled))
        assert isinstance(failed, ConnectionFailed)
        assert failed.reason is FailureReason.CONNECT_FAILED
        assert scheduled.seq > failed.seq


async def test_a_bad_frame_carries_its_kind_as_an_enum(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        with lab.supervisor.subscribe() as events:
            await agent.send_raw("not json")
            bad = await next_event(events, lambda e: isinstance(e, BadFrame))
        assert isinstance(bad, BadFrame) and bad.kind is BadFrameKind.PROTOCOL_ERROR
