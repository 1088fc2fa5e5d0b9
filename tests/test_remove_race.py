"""A task its caller sends straight to an idle device, racing the device's removal or
disconnect: the caller's send fails or stalls only after the actor has closed the
connection on purpose and moved on. That late failure belongs to a connection nobody runs
any more: it must not drive the device's statuses (it once raised `InvalidTransition:
disconnected -> failed` out of `submit`), and the task still gets exactly one outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from lab import Lab, memory_lab

from galaxy_actors import (
    DeviceDisconnected,
    DeviceStatus,
    Supervisor,
    TaskCancelled,
    UnknownDevice,
    UnknownTask,
)
from galaxy_actors.aip import (
    ClientMessageType,
    ServerMessage,
    ServerMessageType,
    WireStatus,
    decode_client,
    encode_server,
)
from galaxy_actors.testing import MemoryNetwork
from galaxy_actors.transport import MemoryConnector, MemoryServerConnection, Transport

URL = "ws://agent/ws"


@attrs.define(eq=False)
class Gate:
    """Holds the TASK frame of task ``held`` in its sender's ``send`` until ``release``:
    a slow link, or a peer that stopped reading. ``entered`` is set once the send waits."""

    held: str
    entered: trio.Event = attrs.field(factory=trio.Event)
    release: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class GatedTransport:
    inner: Transport
    gate: Gate
    frame_safe: bool

    def frame_safe_sends(self, send_timeout: float) -> bool:
        # Both ways a Session sends: unguarded, or (False) shielded and bounded by
        # send_timeout, which turns the held send into a `send stalled` failure.
        return self.frame_safe

    async def send(self, frame: str) -> None:
        if f'@{self.gate.held}"' in frame:
            self.gate.entered.set()
            await self.gate.release.wait()
        # Closed meanwhile by the Session's own close: raises TransportClosed, as a
        # socket closed under a pending write does.
        await self.inner.send(frame)

    async def receive(self) -> str | bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


@attrs.define(eq=False)
class GatedConnector:
    inner: MemoryConnector
    gate: Gate
    frame_safe: bool

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        async with self.inner.open(url) as transport:
            yield GatedTransport(transport, self.gate, self.frame_safe)


async def remove_forcefully(sup: Supervisor) -> None:
    await sup.remove_device("pc", force=True)


async def remove_gracefully(sup: Supervisor) -> None:
    await sup.remove_device("pc")


async def disconnect_forcefully(sup: Supervisor) -> None:
    await sup.disconnect("pc", force=True)


async def disconnect_gracefully(sup: Supervisor) -> None:
    await sup.disconnect("pc")


async def disconnect_and_reconnect(sup: Supervisor) -> None:
    # The stale send then fails under a *new* connection of the same device.
    await sup.disconnect("pc", force=True)
    assert await sup.connect("pc")


ENDINGS: dict[str, Callable[[Supervisor], Awaitable[None]]] = {
    "remove-force": remove_forcefully,
    "remove": remove_gracefully,
    "disconnect-force": disconnect_forcefully,
    "disconnect": disconnect_gracefully,
    "disconnect-force-reconnect": disconnect_and_reconnect,
}


@attrs.define
class Caller:
    """A submitter whose task goes straight to the idle device; what it got in the end."""

    how: str
    outcome: object = None
    done: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, sup: Supervisor) -> None:
        try:
            if self.how == "submit":
                handle = await sup.submit("held", device_id="pc", task_id="held")
                self.outcome = await handle.result()
            else:
                self.outcome = await sup.run_task("held", device_id="pc", task_id="held")
        except Exception as exc:  # what reached the caller, typed or not, is the verdict
            self.outcome = exc
        finally:
            self.done.set()


@asynccontextmanager
async def gated_lab(gate: Gate, *, frame_safe: bool, **options: Any) -> AsyncIterator[Lab]:
    def wrap(connector: MemoryConnector) -> GatedConnector:
        return GatedConnector(connector, gate, frame_safe)

    async with memory_lab(wrap_connector=wrap, **options) as lab:
        await lab.connected("pc", task_duration=1.0)
        yield lab


async def still_works(lab: Lab, ending: str) -> None:
    """The supervisor and the device (or a device of the same id) run tasks again."""
    sup = lab.supervisor
    if ending.startswith("remove"):
        with pytest.raises(UnknownDevice):
            sup.snapshot("pc")
        sup.add_device("pc", URL, "Linux", connect=False)
        assert await sup.connect("pc")
    elif not ending.endswith("reconnect"):
        assert sup.snapshot("pc").status is DeviceStatus.DISCONNECTED
        assert await sup.connect("pc")
    assert sup.snapshot("pc").status is DeviceStatus.IDLE
    assert (await sup.run_task("after", device_id="pc")).ok


@pytest.mark.parametrize("frame_safe", [True, False], ids=["frame-safe", "shielded"])
@pytest.mark.parametrize("how", ["submit", "run_task"])
@pytest.mark.parametrize("ending", list(ENDINGS))
async def test_a_direct_send_outlived_by_its_connection_ends_its_task_once(
    autojump_clock: trio.abc.Clock, ending: str, how: str, frame_safe: bool
) -> None:
    gate = Gate("held")
    async with gated_lab(gate, frame_safe=frame_safe) as lab:
        sup = lab.supervisor
        caller = Caller(how)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await gate.entered.wait()
            assert sup.snapshot("pc").status is DeviceStatus.BUSY
            await ENDINGS[ending](sup)
            gate.release.set()  # the send fails now, on the connection closed meanwhile
            with trio.fail_after(60):
                await caller.done.wait()
        if frame_safe or "force" in ending:
            # Closed on purpose under it: cancelled with the device, as the docs say.
            assert isinstance(caller.outcome, TaskCancelled), caller.outcome
            assert "disconnected before the task ended" in str(caller.outcome)
            if not ending.startswith("remove"):
                assert sup.stats("pc").failures == 0  # our close is not the device's failure
        else:
            # A shielded send is bounded by send_timeout (10 s), shorter than the grace
            # (30 s): the stall failed the connection first, during the disconnect.
            assert isinstance(caller.outcome, DeviceDisconnected), caller.outcome
            assert "send stalled for 10 s" in str(caller.outcome)
        await still_works(lab, ending)


@pytest.mark.parametrize("frame_safe", [True, False], ids=["frame-safe", "shielded"])
@pytest.mark.parametrize("ending", ["remove-force", "disconnect-force"])
async def test_a_direct_send_failing_during_the_close_ends_its_task_once(
    autojump_clock: trio.abc.Clock, ending: str, frame_safe: bool
) -> None:
    # The send fails while the ending is still under way rather than after it.
    gate = Gate("held")
    async with gated_lab(gate, frame_safe=frame_safe) as lab:
        sup = lab.supervisor
        caller = Caller("submit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await gate.entered.wait()
            nursery.start_soon(ENDINGS[ending], sup)
            await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
        assert isinstance(caller.outcome, TaskCancelled), caller.outcome
        await still_works(lab, ending)


@pytest.mark.parametrize("frame_safe", [True, False], ids=["frame-safe", "shielded"])
@pytest.mark.parametrize("ending", ["remove-force", "disconnect-force"])
async def test_a_task_cancelled_during_its_direct_send_then_removed_ends_once(
    autojump_clock: trio.abc.Clock, ending: str, frame_safe: bool
) -> None:
    gate = Gate("held")
    async with gated_lab(gate, frame_safe=frame_safe) as lab:
        sup = lab.supervisor
        caller = Caller("submit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await gate.entered.wait()
            assert not sup.cancel("held")  # it was on the device: it ends now, cancelled
            await ENDINGS[ending](sup)
            gate.release.set()
        assert isinstance(caller.outcome, TaskCancelled), caller.outcome
        assert "cancelled by the user" in str(caller.outcome)
        await still_works(lab, ending)


@pytest.mark.parametrize("ending", ["remove-force", "disconnect-force"])
async def test_a_caller_cancelled_during_its_direct_send_then_removed_leaves_no_trace(
    autojump_clock: trio.abc.Clock, ending: str
) -> None:
    gate = Gate("held")
    async with gated_lab(gate, frame_safe=True) as lab:
        sup = lab.supervisor
        caller = Caller("submit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await gate.entered.wait()
            await ENDINGS[ending](sup)
            nursery.cancel_scope.cancel()  # the caller gives up while its send is held
        assert caller.outcome is None  # `submit` raised Cancelled: no handle, no error
        with pytest.raises(UnknownTask):
            await sup.task("held")
        await still_works(lab, ending)


@pytest.mark.parametrize("ending", ["remove-force", "disconnect-force"])
async def test_a_journaled_direct_send_outlived_by_its_connection_ends_once(
    autojump_clock: trio.abc.Clock, tmp_path: Path, ending: str
) -> None:
    # The journal's submit path sends through the same `_send_now`; the outcome is stored.
    gate = Gate("held")
    async with gated_lab(gate, frame_safe=True, journal=tmp_path / "journal.sqlite") as lab:
        sup = lab.supervisor
        caller = Caller("submit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await gate.entered.wait()
            await ENDINGS[ending](sup)
            gate.release.set()
        assert isinstance(caller.outcome, TaskCancelled), caller.outcome
        stored = await sup.task("held")
        assert isinstance(stored.outcome, TaskCancelled)
        await still_works(lab, ending)


# ------------------------------------------------- the same race on the shipped transport


async def connect_then_stop_reading(connection: MemoryServerConnection) -> None:
    """A server that registers the device, answers its device-info request, then reads
    nothing more: over an unbuffered link the next frame waits in its sender's ``send``."""
    await connection.receive()  # REGISTER
    await connection.send(
        encode_server(ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK, response_id="r"))
    )
    while True:
        message = decode_client(await connection.receive())
        if message.type is ClientMessageType.DEVICE_INFO_REQUEST:
            break
    info = ServerMessage(
        ServerMessageType.DEVICE_INFO_RESPONSE,
        WireStatus.OK,
        response_id=message.request_id,
        result={"os": "Linux"},
    )
    await connection.send(encode_server(info))
    await trio.sleep_forever()


async def remove_during_a_stuck_direct_send(ending: str) -> object:
    network = MemoryNetwork(buffer=0)
    async with memory_lab(network=network, heartbeat_interval=1000.0) as lab:
        network.listen(URL, connect_then_stop_reading, lab.nursery)
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        assert await sup.connect("pc")
        caller = Caller("submit")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller.run, sup)
            await trio.testing.wait_all_tasks_blocked()  # its TASK frame waits for the peer
            assert sup.snapshot("pc").status is DeviceStatus.BUSY
            # Closing the connection wakes the stuck send and the actor in one batch; Trio
            # runs a batch in a random order, which the drawn seed fixes.
            await ENDINGS[ending](sup)
        return caller.outcome


@settings(max_examples=20, deadline=None)
@given(st.random_module(), st.sampled_from(["remove-force", "disconnect-force"]))
def test_a_stuck_direct_send_woken_by_the_close_ends_its_task_once(
    seed: object, ending: str
) -> None:
    # Trio's Hypothesis plugin registers its scheduler's Random; `random_module` seeds it,
    # so each example is one reproducible order of the tasks the close wakes together.
    outcome = trio.run(
        remove_during_a_stuck_direct_send,
        ending,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    assert isinstance(outcome, TaskCancelled), outcome
