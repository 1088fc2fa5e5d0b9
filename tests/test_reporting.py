"""What a device reports, and when: a failure is reported when it happens, not once its
dying connection has finished closing; the frames a device received are counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio
from lab import became, memory_lab, next_event

from galaxy_actors import ConnectionFailed, DeviceStatus, RestartPolicy, RestartScheduled
from galaxy_actors._transport import MemoryConnector, Transport

CLOSE = 2.0


@attrs.define(eq=False)
class SlowClose:
    """Closing takes ``CLOSE`` seconds, as a closing handshake with a silent peer does."""

    _inner: MemoryConnector

    @asynccontextmanager
    async def open(self, url: str) -> AsyncIterator[Transport]:
        try:
            async with self._inner.open(url) as transport:
                yield transport
        finally:
            with trio.CancelScope(shield=True):
                await trio.sleep(CLOSE)


async def test_a_heartbeat_timeout_is_reported_when_it_happens(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(
        wrap_connector=SlowClose,
        heartbeat_interval=5.0,
        heartbeat_timeout=3.0,
        policy=RestartPolicy(reconnect_delay=1.0),
    ) as lab:
        with lab.supervisor.subscribe() as events:
            agent = await lab.connected("pc")
            connected_at = trio.current_time()
            agent.answer_heartbeats = False
            failed = await next_event(events, lambda e: isinstance(e, ConnectionFailed))
            assert isinstance(failed, ConnectionFailed)
            assert failed.reason == "heartbeat_timeout"
            # Seen at the deadline, not CLOSE seconds later.
            assert failed.at == trio.current_time() == connected_at + 5.0 + 3.0
            restart = await next_event(events, lambda e: isinstance(e, RestartScheduled))
            assert isinstance(restart, RestartScheduled) and restart.at == failed.at
            agent.answer_heartbeats = True
            # The delay counts from the failure: the close (2 s) has eaten into it.
            await next_event(events, became("pc", DeviceStatus.CONNECTING))
            assert trio.current_time() == failed.at + max(restart.delay, CLOSE)


async def test_the_frames_a_device_received_are_counted(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc")
        before = lab.supervisor.stats("pc").frames_received
        assert before >= 2  # the registration's confirmation and the device info
        await lab.supervisor.run_task("t", device_id="pc")
        assert lab.supervisor.stats("pc").frames_received == before + 2  # ack and TASK_END
