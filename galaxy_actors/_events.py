"""Lifecycle events, and the hub that publishes them to subscribers.

Publishing never blocks a device actor: each subscriber has a bounded buffer, and an event
that does not fit is dropped for that subscriber and counted in its ``dropped``. With no
subscriber, publishing costs one truth test.

The hub closes when the supervisor's block ends, and every subscription's stream ends with
it. A device still unwinding after that (a close slower than the shutdown's bound) may
publish more: those events are dropped and counted in ``dropped_after_close``, never raised,
since raising would turn one device's late status change into a crash of the whole block.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import attrs
import trio

from ._status import DeviceStatus

__all__ = [
    "BadFrame",
    "ConnectionFailed",
    "DeviceAdded",
    "DeviceRemoved",
    "Event",
    "GaveUp",
    "RestartScheduled",
    "StatusChanged",
    "Subscription",
    "TaskEnded",
    "TaskQueued",
]


@attrs.frozen
class StatusChanged:
    device_id: str
    old: DeviceStatus
    new: DeviceStatus
    at: float


@attrs.frozen
class ConnectionFailed:
    """A connection (or connection attempt) ended against our will."""

    device_id: str
    reason: str
    detail: str
    at: float


@attrs.frozen
class RestartScheduled:
    """Reconnection attempt ``attempt`` (1-based) of ``max_retries`` at ``at + delay``."""

    device_id: str
    attempt: int
    max_retries: int
    delay: float
    at: float


@attrs.frozen
class GaveUp:
    device_id: str
    why: str
    at: float


@attrs.frozen
class TaskEnded:
    """A task's one outcome: ``outcome`` is "completed", "failed" or the error class name.
    ``queued_for`` and ``ran_for`` are its `TaskTimings`' (seconds; ``ran_for`` None if it
    was never sent), or None from a publisher that does not know them."""

    task_id: str
    device_id: str | None
    outcome: str
    detail: str | None
    at: float
    queued_for: float | None = None
    ran_for: float | None = None


@attrs.frozen
class TaskQueued:
    """A task waits in a device's queue (the device was busy or not connected).
    ``queue_by_priority`` is the queue after it joined: tasks per priority."""

    task_id: str
    device_id: str
    priority: int
    queue_by_priority: Mapping[int, int]
    at: float


@attrs.frozen
class BadFrame:
    """A frame a device's server should not have sent; ``kind`` says how it was bad:
    protocol_error, unexpected, error_frame, unknown_task, cross_device."""

    device_id: str
    kind: str
    detail: str
    at: float


@attrs.frozen
class DeviceAdded:
    device_id: str
    at: float


@attrs.frozen
class DeviceRemoved:
    device_id: str
    at: float


Event = (
    StatusChanged
    | ConnectionFailed
    | RestartScheduled
    | GaveUp
    | TaskQueued
    | TaskEnded
    | BadFrame
    | DeviceAdded
    | DeviceRemoved
)


@attrs.define(eq=False)
class Subscription:
    """A stream of events: ``async for event in subscription``."""

    _receive: trio.MemoryReceiveChannel[Event]
    dropped: int = 0

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        return await self._receive.receive()

    def receive_nowait(self) -> Event:
        return self._receive.receive_nowait()


class EventHub:
    def __init__(self) -> None:
        self._subscribers: dict[trio.MemorySendChannel[Event], Subscription] = {}
        self._closed = False
        #: Events published after `close`, while someone was still subscribed.
        self.dropped_after_close = 0

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        if self._closed:
            self.dropped_after_close += 1
            return
        for send, subscription in self._subscribers.items():
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                subscription.dropped += 1

    @contextmanager
    def subscribe(self, buffer: float = 1000) -> Iterator[Subscription]:
        if buffer != math.inf and buffer < 1:
            raise ValueError("buffer must be >= 1")
        send, receive = trio.open_memory_channel[Event](buffer)
        subscription = Subscription(receive)
        if self._closed:
            send.close()  # nothing more will come: the stream is over already
        self._subscribers[send] = subscription
        try:
            yield subscription
        finally:
            del self._subscribers[send]
            send.close()

    def close(self) -> None:
        """End every subscription's stream; later events are dropped (and counted)."""
        self._closed = True
        for send in self._subscribers:
            send.close()
