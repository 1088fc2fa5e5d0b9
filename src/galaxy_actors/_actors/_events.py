"""Lifecycle events, and the hub that publishes them to subscribers.

Every event is a frozen value with the ids it is about, ``at`` (Trio's clock when it
happened) and ``seq``: its number in the supervisor's stream. The hub numbers the events it
publishes 1, 2, 3, ... and publishes only while someone subscribes, so every subscriber sees
the numbers follow each other unless it fell behind: a gap of n between two events it
received is exactly n events dropped for it (also counted in its ``dropped``).

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

from .._sansio._reasons import BadFrameKind, FailureReason, TaskOutcome
from .._sansio._status import DeviceStatus

__all__ = [
    "BadFrame",
    "ConnectionFailed",
    "DeviceAdded",
    "DeviceRemoved",
    "Event",
    "RestartScheduled",
    "RestartsStopped",
    "StatusChanged",
    "Subscription",
    "TaskEnded",
    "TaskQueued",
    "TaskSent",
]


def _seq() -> int:
    """The ``seq`` field that ends every event: publishers leave it 0, the hub sets it.
    It is the event's place in a stream, not part of what happened: two events equal
    in everything else compare equal (a test can expect ``DeviceAdded("a", 0.0)``)."""
    return attrs.field(default=0, kw_only=True, eq=False)


@attrs.frozen
class StatusChanged:
    """Device ``device_id`` went from status ``old`` to ``new`` (see `ALLOWED_TRANSITIONS`)."""

    device_id: str
    old: DeviceStatus
    new: DeviceStatus
    at: float
    seq: int = _seq()


@attrs.frozen
class ConnectionFailed:
    """A connection (or connection attempt) of ``device_id`` ended against our will, for
    ``reason``; ``detail`` is the human-readable rest (server text bounded and escaped).
    A `RestartScheduled` or a `RestartsStopped` follows."""

    device_id: str
    reason: FailureReason
    detail: str
    at: float
    seq: int = _seq()


@attrs.frozen
class RestartScheduled:
    """Reconnection attempt ``attempt`` (1-based) of ``max_retries`` at ``at + delay``."""

    device_id: str
    attempt: int
    max_retries: int
    delay: float
    at: float
    seq: int = _seq()


@attrs.frozen
class RestartsStopped:
    """The supervisor stopped reconnecting ``device_id``: the restart policy decided
    `GiveUp`, for the reason ``why``. The device stays FAILED until it is connected again
    by hand (``connect``) or removed."""

    device_id: str
    why: str
    at: float
    seq: int = _seq()


@attrs.frozen
class TaskQueued:
    """A task waits in a device's queue (the device was busy or not connected).
    ``queue_by_priority`` is the queue after it joined: tasks per priority."""

    task_id: str
    device_id: str
    priority: int
    queue_by_priority: Mapping[int, int]
    at: float
    seq: int = _seq()


@attrs.frozen
class TaskSent:
    """A task went on its device: its frame is handed to the connection, and the device is
    BUSY with it. If that send is cancelled before any of the frame left, the task either
    joins the queue again (a `TaskQueued` follows) or is withdrawn (a `TaskEnded`)."""

    task_id: str
    device_id: str
    at: float
    seq: int = _seq()


@attrs.frozen
class TaskEnded:
    """A task's one outcome: `TaskOutcome.COMPLETED` or `TaskOutcome.FAILED` (the device's
    verdict), or the `TaskError` its ``result()`` raises. ``detail`` is the device's error
    text or the error's message. ``queued_for`` and ``ran_for`` are its `TaskTimings`'
    (seconds; ``ran_for`` None if it was never sent), or None from a publisher that does
    not know them."""

    task_id: str
    device_id: str | None
    outcome: TaskOutcome
    detail: str | None
    at: float
    queued_for: float | None = None
    ran_for: float | None = None
    seq: int = _seq()


@attrs.frozen
class BadFrame:
    """A frame a device's server should not have sent; ``kind`` says how it was bad. The
    frame is dropped and the connection carries on (a binary frame also fails it)."""

    device_id: str
    kind: BadFrameKind
    detail: str
    at: float
    seq: int = _seq()


@attrs.frozen
class DeviceAdded:
    """``device_id`` was registered with the supervisor (it connects next)."""

    device_id: str
    at: float
    seq: int = _seq()


@attrs.frozen
class DeviceRemoved:
    """``device_id`` was removed from the supervisor; its queued tasks ended before."""

    device_id: str
    at: float
    seq: int = _seq()


Event = (
    StatusChanged
    | ConnectionFailed
    | RestartScheduled
    | RestartsStopped
    | TaskQueued
    | TaskSent
    | TaskEnded
    | BadFrame
    | DeviceAdded
    | DeviceRemoved
)
"""Any of the events a `Subscription` yields."""


@attrs.define(eq=False)
class Subscription:
    """A stream of events: ``async for event in subscription``.

    ``dropped`` counts the events that did not fit in its buffer; each also shows as a gap
    in the ``seq`` numbers of the events received."""

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
        """The next event; raises ``trio.EndOfChannel`` once the supervisor has closed."""
        return await self._receive.receive()

    def receive_nowait(self) -> Event:
        """The next event if one is waiting, else raises ``trio.WouldBlock``."""
        return self._receive.receive_nowait()


class EventHub:
    """Numbers and publishes a supervisor's events to its subscribers."""

    def __init__(self) -> None:
        self._subscribers: dict[trio.MemorySendChannel[Event], Subscription] = {}
        self._closed = False
        self._seq = 0
        #: Events published after `close`, while someone was still subscribed.
        self.dropped_after_close = 0

    def __bool__(self) -> bool:
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        """Give ``event`` the next number and offer it to every subscriber."""
        if self._closed:
            self.dropped_after_close += 1
            return
        if not self._subscribers:
            return  # unnumbered: no subscriber could see a gap
        self._seq += 1
        # Numbered in place: every publisher makes the event for this one call, so nobody
        # else holds it yet, and ``seq`` takes no part in equality or hashing. A copy
        # (`attrs.evolve`) would cost more than building the event, on every event.
        object.__setattr__(event, "seq", self._seq)
        for send, subscription in self._subscribers.items():
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                subscription.dropped += 1

    @contextmanager
    def subscribe(self, buffer: float = 1000) -> Iterator[Subscription]:
        """A new stream of the events published from now on, ``buffer`` of them waiting
        at most."""
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
