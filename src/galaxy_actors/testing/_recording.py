"""The scenario's recording: one log of everything at the supervisor's end of the wire, and
the Trio tasks spawned while the supervisor block runs.

The connector wraps the supervisor's and logs every attempt, frame and close in one sequence, so
"before" is exact even at one virtual instant; `_Scenario` builds the `Trace` from it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import attrs
import trio

from .._sansio._aip import decode_client, parse_server
from .._sansio._errors import ConnectError, ProtocolError
from .._transports._transport import Connector, Transport
from ._trace import WireRecord


class Wire:
    """The one log: connection attempts, frames both ways, closes, submissions."""

    def __init__(self) -> None:
        self.records: list[WireRecord] = []
        self._seq = itertools.count()
        self.connections: Counter[str] = Counter()

    def add(self, device_id: str, kind: str, **fields: Any) -> None:
        self.records.append(
            WireRecord(next(self._seq), trio.current_time(), device_id, kind, **fields)
        )

    def frame(self, device_id: str, kind: str, connection: int, raw: str | bytes) -> None:
        msg_type = session_id = None
        try:
            if kind == "sent":
                sent = decode_client(raw)
                msg_type, session_id = str(sent.type), sent.session_id
            else:
                # The Session's own decoding: the checks, without a ServerMessage.
                got, _, fields = parse_server(raw)
                msg_type, session_id = str(got), fields.get("session_id")
        except ProtocolError:
            pass
        self.add(device_id, kind, connection=connection, type=msg_type, session_id=session_id)


@attrs.define(eq=False)
class RecordingTransport:
    _inner: Transport
    _wire: Wire
    _device_id: str
    _connection: int
    _frame_safe: bool = attrs.field(default=False, init=False)

    def frame_safe_sends(self, send_timeout: float) -> bool:
        # As frame-safe as the transport under it, so scenarios run the path real ws://
        # connections take.
        inner = getattr(self._inner, "frame_safe_sends", None)
        self._frame_safe = bool(inner is not None and inner(send_timeout))
        return self._frame_safe

    async def send(self, frame: str) -> None:
        # Logged before it leaves: any answer is logged after it.
        wire = self._wire
        wire.frame(self._device_id, "sent", self._connection, frame)
        logged = wire.records[-1]
        try:
            await self._inner.send(frame)
        except trio.Cancelled:
            # A frame-safe send cancelled: nothing of the frame left, so it was not sent.
            if self._frame_safe and wire.records and wire.records[-1] is logged:
                wire.records.pop()
            raise

    async def receive(self) -> str | bytes:
        frame = await self._inner.receive()
        self._wire.frame(self._device_id, "received", self._connection, frame)
        return frame

    async def aclose(self) -> None:
        await self._inner.aclose()


@attrs.frozen
class RecordingConnector:
    _inner: Connector
    _wire: Wire
    _devices: Mapping[str, str]  # url -> device id
    #: Told of every attempt, by device (the progress guard counts them).
    _on_attempt: Callable[[str], None] = lambda _device_id: None

    @contextlib.asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        device_id = self._devices.get(url, url)
        wire = self._wire
        # Logged before the first checkpoint: at the very instant the device became CONNECTING.
        wire.add(device_id, "attempt")
        self._on_attempt(device_id)
        number = 0
        try:
            async with self._inner.open(url) as transport:
                wire.connections[device_id] += 1
                number = wire.connections[device_id]
                wire.add(device_id, "open", connection=number)
                yield RecordingTransport(transport, wire, device_id, number)
        except ConnectError as exc:
            if not number:
                wire.add(device_id, "refused", detail=str(exc))
            raise
        finally:
            if number:
                # After the inner block: the connection is closed by now.
                wire.add(device_id, "closed", connection=number)


class TaskWatch(trio.abc.Instrument):
    """Tasks spawned while the supervisor block runs, and which of them are still alive."""

    def __init__(self) -> None:
        self.recording = False
        self.alive: dict[trio.lowlevel.Task, None] = {}
        #: Every task spawned while recording, in order: what one call spawned is a slice.
        self.spawned: list[trio.lowlevel.Task] = []

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        if self.recording:
            self.alive[task] = None
            self.spawned.append(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.alive.pop(task, None)


def describe_task(task: trio.lowlevel.Task) -> str:
    nursery = task.parent_nursery
    parent = "nobody" if nursery is None else nursery.parent_task.name
    return f"{task.name!r} (a child of {parent!r})"


def descends_from(task: trio.lowlevel.Task, nurseries: Iterable[trio.Nursery]) -> bool:
    owners = set(map(id, nurseries))
    nursery = task.parent_nursery
    while nursery is not None:
        if id(nursery) in owners:
            return True
        nursery = nursery.parent_task.parent_nursery
    return False
