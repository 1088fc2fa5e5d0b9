"""What a device reports, and when: a failure is reported when it happens, not once its
dying connection has finished closing; the frames a device received are counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from lab import became, memory_lab, next_event

from galaxy_actors import DeviceStatus, RestartPolicy
from galaxy_actors.events import BadFrame, ConnectionFailed, RestartScheduled
from galaxy_actors.transport import MemoryConnector, Transport

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


async def test_a_flood_of_bad_frames_is_counted_exactly_and_logged_a_few_times(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # Measured on the earlier design: 10,000 junk frames a second became 10,000 WARNING
    # lines a second, and a newline in a server's text forged a whole log line.
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        caplog.clear()
        for _ in range(10_000):
            await agent.send_raw("junk\n2026-12-02 00:00:00 ERROR forged line")
        await trio.sleep(1.0)
        assert lab.supervisor.stats("pc").protocol_errors == 10_000
        lines = [r.getMessage() for r in caplog.records if "protocol_error" in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0]
        await trio.sleep(10.0)
        await agent.send_raw("junk")
        await trio.sleep(0.1)
        lines = [r.getMessage() for r in caplog.records if "protocol_error" in r.getMessage()]
        assert len(lines) == 2
        assert lines[1].endswith("… and 9,999 more in the last 10 s")
        assert lab.supervisor.snapshot("pc").status is DeviceStatus.IDLE


async def test_a_huge_error_text_from_a_server_is_bounded_in_logs_and_events(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        with lab.supervisor.subscribe() as events:
            huge = json.dumps({"type": "error", "status": "error", "error": "e" * 8_000_000})
            await agent.send_raw(huge)
            event = await next_event(events, lambda e: isinstance(e, BadFrame))
        assert isinstance(event, BadFrame) and len(event.detail) < 1_000
        assert max(len(r.getMessage()) for r in caplog.records) < 1_000
