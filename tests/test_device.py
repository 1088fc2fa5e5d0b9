"""Device actor and supervisor behaviour over time, on the autojump clock and in memory."""

from __future__ import annotations

import math

import pytest
import trio
import trio.lowlevel
import trio.testing
from lab import became, frames_of, memory_lab, next_event

from galaxy_actors import (
    ConfigurationError,
    Delivery,
    DeviceDisconnected,
    DeviceStatus,
    DeviceUnavailable,
    DuplicateDevice,
    DuplicateTaskId,
    RestartPolicy,
    ResultStatus,
    SupervisorClosed,
    TaskCancelled,
    TaskRejected,
    TaskTimeout,
    UnknownDevice,
)
from galaxy_actors._sansio._aip import ServerMessage, ServerMessageType, WireStatus, session_id_for
from galaxy_actors.aip import encode_server
from galaxy_actors.errors import InvalidServerURL
from galaxy_actors.events import ConnectionFailed, RestartsStopped, StatusChanged, TaskQueued
from galaxy_actors.testing import default_device_info

URL = "ws://agent/ws"


def drain(subscription: object) -> list[object]:
    events = []
    while True:
        try:
            events.append(subscription.receive_nowait())  # type: ignore[attr-defined]
        except trio.WouldBlock:
            return events


def status_changes(events: list[object]) -> list[tuple[float, DeviceStatus]]:
    return [(e.at, e.new) for e in events if isinstance(e, StatusChanged)]


async def test_connect_sequence_follows_the_reference(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        agent = lab.agent(devices=["pc"])
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("pc", URL, "Windows", connect=False)
            assert sup.snapshot("pc").status is DeviceStatus.DISCONNECTED
            assert await sup.connect("pc") is True
            seen = drain(events)
        assert [new for _, new in status_changes(seen)] == [
            DeviceStatus.CONNECTING,
            DeviceStatus.CONNECTED,
            DeviceStatus.IDLE,
        ]
        frames = frames_of(agent)
        assert [f.type for f in frames[:3]] == ["register", "heartbeat", "device_info_request"]
        for frame in frames:
            assert frame.client_type == "constellation"
            assert frame.client_id == "lab@pc"
        assert frames[0].target_id == "pc"
        assert sup.system_info("pc") == default_device_info("pc")
        assert sup.snapshot("pc").last_heartbeat is not None


async def test_second_task_returns_its_own_result_after_the_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    from galaxy_actors import DeviceManager
    from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

    network = MemoryNetwork()
    agent = SimulatedAgent(devices=["office_pc"], task_duration=3.0)
    async with trio.open_nursery() as nursery:
        agent.serve_memory(network, URL, nursery)
        async with DeviceManager(task_name="test_task", connector=network.connector()) as manager:
            assert await manager.register_device(
                "office_pc", URL, "Windows", capabilities=["office"]
            )
            finished: dict[str, tuple[float, object]] = {}

            async def assign(task_id: str, description: str) -> None:
                result = await manager.assign_task_to_device(
                    task_id, "office_pc", description, {"n": task_id}
                )
                finished[task_id] = (trio.current_time(), result)

            async with trio.open_nursery() as tasks:
                tasks.start_soon(assign, "task_1", "Open Excel")
                await trio.sleep(1)
                tasks.start_soon(assign, "task_2", "Send email")
        nursery.cancel_scope.cancel()
    (t1, r1), (t2, r2) = finished["task_1"], finished["task_2"]
    assert (t1, t2) == (3.0, 6.0)
    assert r1.result == [{"request": "Open Excel", "result": "done"}]  # type: ignore[attr-defined]
    assert r2.result == [{"request": "Send email", "result": "done"}]  # type: ignore[attr-defined]
    assert r2.timings.queued_for == 2.0  # type: ignore[attr-defined]


async def test_five_queued_tasks_run_in_fifo_order(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        handles = [await sup.submit(f"task {i}", device_id="pc", task_id=f"t{i}") for i in range(5)]
        assert sup.snapshot("pc").queue_depth == 4
        ended = []
        for handle in handles:
            result = await handle.result()
            ended.append((result.task_id, result.timings.ended_at))
        assert ended == [(f"t{i}", float(i + 1)) for i in range(5)]
        sent = [f.session_id for f in frames_of(agent, "task")]
        assert sent == [session_id_for("lab", f"t{i}") for i in range(5)]


async def test_submit_is_a_checkpoint_whether_the_task_is_sent_or_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        # Cancelled: raises Cancelled, and no task exists, whether the device is idle (the
        # task would be sent at once) or busy (it would be queued).
        for busy in (False, True):
            running = await sup.submit("keeps the device busy", device_id="pc") if busy else None
            with trio.CancelScope() as scope:
                scope.cancel()
                await sup.submit("never", device_id="pc", task_id=f"never-{busy}")
            assert scope.cancelled_caught
            assert sup.snapshot("pc").queue_depth == 0
            if running is not None:
                assert (await running.result()).ok
        never = {session_id_for("lab", f"never-{busy}") for busy in (False, True)}
        assert never.isdisjoint(m.session_id for m in frames_of(agent, "task"))
        # Not cancelled: a schedule point too, for the task sent at once and the one queued.
        with trio.testing.assert_checkpoints():
            first = await sup.submit("sent at once", device_id="pc")
        with trio.testing.assert_checkpoints():
            second = await sup.submit("queued", device_id="pc")
        assert first.sent and not second.sent
        assert (await second.result()).ok


async def test_disconnect_cancels_queued_tasks_and_lets_the_running_one_finish(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=4.0)
        sup = lab.supervisor
        running = await sup.submit("long", device_id="pc")
        queued = [await sup.submit(f"q{i}", device_id="pc") for i in range(3)]
        await trio.sleep(1)
        await sup.disconnect("pc")
        assert trio.current_time() == 4.0  # waited for the running task, no longer
        assert (await running.result()).status is ResultStatus.COMPLETED
        for handle in queued:
            with pytest.raises(TaskCancelled):
                await handle.result()
        assert sup.snapshot("pc").status is DeviceStatus.DISCONNECTED
        assert agent.open_connections == 0
        assert len(frames_of(agent, "task")) == 1
        with pytest.raises(DeviceUnavailable):
            await sup.submit("after", device_id="pc")


async def test_forced_disconnect_cancels_the_running_task(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        await lab.connected("pc", task_duration=100.0)
        sup = lab.supervisor
        running = await sup.submit("long", device_id="pc")
        await trio.sleep(1)
        await sup.disconnect("pc", force=True)
        assert trio.current_time() == 1.0
        with pytest.raises(TaskCancelled):
            await running.result()


async def test_heartbeat_timeout_fails_then_reconnects_after_5_s_and_runs_the_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(heartbeat_interval=30.0, heartbeat_timeout=10.0) as lab:
        agent = lab.agent(devices=["pc"])
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("pc", URL, "Linux", connect=False)
            await sup.connect("pc")
            agent.answer_heartbeats = False
            await sup.wait_for_status("pc", DeviceStatus.FAILED)
            # The heartbeat at t=30 got no answer within 10 s.
            assert trio.current_time() == 40.0
            queued = await sup.submit("after the storm", device_id="pc")
            agent.answer_heartbeats = True
            result = await queued.result()
            seen = drain(events)
        failures = [e for e in seen if isinstance(e, ConnectionFailed)]
        assert [(f.reason, f.at) for f in failures] == [("heartbeat_timeout", 40.0)]
        reconnecting = [at for at, new in status_changes(seen) if new is DeviceStatus.CONNECTING]
        assert reconnecting == [0.0, 45.0]
        assert result.timings.sent_at == 45.0
        assert result.ok


async def test_gives_up_after_five_attempts_at_5_10_20_40_80_s(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = lab.agent(devices=["pc"])
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("pc", URL, "Linux", connect=False)
            await sup.connect("pc")
            agent.refuse_connections = True
            await agent.drop_connections()
            await trio.sleep(1)
            queued_while_failing = await sup.submit("never runs", device_id="pc")
            await trio.sleep(10_000)  # virtual: long after the last attempt
            seen = drain(events)
        attempts = [at for at, new in status_changes(seen) if new is DeviceStatus.CONNECTING]
        assert attempts == [0.0, 5.0, 15.0, 35.0, 75.0, 155.0]
        assert [(e.at, e.why) for e in seen if isinstance(e, RestartsStopped)] == [
            (155.0, "exceeded max retries (5)")
        ]
        profile = sup.snapshot("pc")
        assert profile.status is DeviceStatus.FAILED
        assert profile.connection_attempts == 5
        with pytest.raises(DeviceUnavailable, match="gave up"):
            await queued_while_failing.result()
        with pytest.raises(DeviceUnavailable):
            await sup.submit("too late", device_id="pc")


async def test_attempts_reset_after_a_successful_reconnection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = lab.agent(devices=["pc"])
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("pc", URL, "Linux", connect=False)
            await sup.connect("pc")
            agent.refuse_connections = True
            await agent.drop_connections()
            for _ in range(3):  # the drop, then attempts at t=5 and t=15 fail
                await next_event(events, became("pc", DeviceStatus.FAILED))
            assert sup.snapshot("pc").connection_attempts == 2
            agent.refuse_connections = False
            assert (await next_event(events, became("pc", DeviceStatus.IDLE))).at == 35.0
            assert sup.snapshot("pc").connection_attempts == 0
            await agent.drop_connections()
            reconnecting = await next_event(events, became("pc", DeviceStatus.CONNECTING))
            assert reconnecting.at == 40.0  # back to 5 s after the success


async def test_task_timeout_fails_the_task_reconnects_and_keeps_the_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        stuck = await sup.submit("stuck", {"sim_lose_end": True}, device_id="pc", task_timeout=10)
        later = [await sup.submit(f"later {i}", device_id="pc", task_id=f"l{i}") for i in range(2)]
        with pytest.raises(TaskTimeout):
            await stuck.result()
        assert trio.current_time() == 10.0
        assert sup.snapshot("pc").last_failure.startswith("task_timeout")  # type: ignore[union-attr]
        results = [await h.result() for h in later]
        assert [r.task_id for r in results] == ["l0", "l1"]
        assert results[0].timings.sent_at == 15.0  # reconnected after the 5 s backoff
        assert agent.registrations == 2


async def test_a_task_submitted_right_after_a_timeout_waits_for_the_reconnection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        with sup.subscribe() as events:
            with pytest.raises(TaskTimeout):
                await sup.run_task("stuck", {"sim_lose_end": True}, device_id="pc", task_timeout=10)
            # Woken by the timeout: the device is already failed, and a retry queues.
            assert sup.snapshot("pc").status is DeviceStatus.FAILED
            retry = await sup.run_task("retry", device_id="pc")
            seen = drain(events)
        assert retry.ok and retry.timings.sent_at == 15.0
        # BUSY -> FAILED directly: never IDLE on the dying connection.
        assert [new for _, new in status_changes(seen)][:3] == [
            DeviceStatus.BUSY,
            DeviceStatus.FAILED,
            DeviceStatus.CONNECTING,
        ]
        assert agent.registrations == 2


async def test_malformed_frames_from_one_device_leave_the_others_working(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        bad = lab.agent("ws://bad/ws", devices=["bad"])
        lab.agent("ws://good/ws", devices=["good"], task_duration=1.0)
        sup = lab.supervisor
        sup.add_device("bad", "ws://bad/ws", "Linux", connect=False)
        sup.add_device("good", "ws://good/ws", "Linux", connect=False)
        assert await sup.connect("bad") and await sup.connect("good")
        for frame in (
            "{not json",
            "[1, 2]",
            '{"type": "nonsense", "status": "ok"}',
            '{"type": "task_end", "status": "ok", "session_id": 7}',
        ):
            await bad.send_raw(frame)
        await trio.sleep(1)
        assert sup.stats("bad").protocol_errors == 4
        assert sup.snapshot("bad").status is DeviceStatus.IDLE  # text: dropped
        assert (await sup.run_task("still fine", device_id="bad")).ok
        await bad.send_raw(b"\x00binary")  # a binary frame fails the session
        await sup.wait_for_status("bad", DeviceStatus.FAILED)
        assert sup.snapshot("bad").last_failure.startswith("protocol_error")  # type: ignore[union-attr]
        assert (await sup.run_task("unaffected", device_id="good")).ok
        await sup.wait_for_status("bad", DeviceStatus.IDLE)


async def test_oversized_frame_is_a_protocol_error(autojump_clock: trio.abc.Clock) -> None:
    from galaxy_actors.testing import MemoryNetwork

    network = MemoryNetwork()
    # A connector with a small frame limit, as WebSocketConnector(max_frame_size=...).
    async with memory_lab(network=network, connector=network.connector(max_frame_size=1000)) as lab:
        agent = lab.agent(devices=["pc"])
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        await sup.connect("pc")
        await agent.send_raw('{"type": "heartbeat", "status": "ok", "x": "' + "a" * 2000 + '"}')
        await sup.wait_for_status("pc", DeviceStatus.FAILED)
        assert sup.snapshot("pc").last_failure.startswith("protocol_error")  # type: ignore[union-attr]


async def test_registration_rejection_is_a_retryable_failure_with_the_server_text(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = lab.agent(devices=["pc"], reject_registration="server full")
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        assert await sup.connect("pc") is False
        profile = sup.snapshot("pc")
        assert profile.last_failure == "registration_rejected: server full"
        assert profile.next_retry_at == 5.0
        agent.reject_registration = None
        await sup.wait_for_status("pc", DeviceStatus.IDLE)
        assert trio.current_time() == 5.0


async def test_unknown_target_device_is_rejected_with_the_servers_words(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        lab.agent(devices=["someone-else"])
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        assert await sup.connect("pc") is False
        assert "Target device 'pc' is not connected" in (sup.snapshot("pc").last_failure or "")


async def test_handshake_refused_without_token_names_the_http_status(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        lab.agent(devices=["pc"], token="s3cret")
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        sup.add_device("pc2", URL + "?token=s3cret", "Linux", connect=False)
        assert await sup.connect("pc") is False
        assert "HTTP 403" in (sup.snapshot("pc").last_failure or "")
        assert sup.snapshot("pc").last_failure.startswith("unauthorized")  # type: ignore[union-attr]


async def test_refused_task_fails_at_once_with_task_rejected(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        # (A refusal because the device is not attached to the server is another matter:
        # the task waits for the device, tests/test_settlement.py.)
        refusal = "session_id 'lab@x' is owned by another client"
        agent = await lab.connected("pc", reject_tasks=refusal)
        sup = lab.supervisor
        with pytest.raises(TaskRejected) as caught:
            await sup.run_task("refused", device_id="pc", task_timeout=500)
        assert caught.value.server_error == refusal
        assert trio.current_time() == 0.0
        agent.reject_tasks = None
        assert sup.snapshot("pc").status is DeviceStatus.IDLE
        assert (await sup.run_task("accepted", device_id="pc")).ok


async def test_in_flight_task_fails_with_device_disconnected_by_default(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        handle = await sup.submit("interrupted", device_id="pc")
        await trio.sleep(1)
        await agent.drop_connections()
        with pytest.raises(DeviceDisconnected) as caught:
            await handle.result()
        assert caught.value.reason == "connection_closed"
        await sup.wait_for_status("pc", DeviceStatus.IDLE)
        assert len(frames_of(agent, "task")) == 1  # never sent twice


async def test_at_least_once_task_is_sent_again_after_reconnection(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=10.0)
        sup = lab.supervisor
        first = await sup.submit(
            "again", device_id="pc", delivery=Delivery.AT_LEAST_ONCE, task_id="again"
        )
        second = await sup.submit("behind it", device_id="pc")
        await trio.sleep(1)
        with sup.subscribe() as events:
            await agent.drop_connections()
            requeued = await next_event(events, lambda e: isinstance(e, TaskQueued))
        assert (requeued.task_id, requeued.at) == ("again", 1.0)  # type: ignore[union-attr]
        result = await first.result()
        assert result.ok and result.timings.sent_at == 6.0  # re-sent after the 5 s backoff
        assert (await second.result()).timings.sent_at == 16.0  # still behind it
        assert [f.request for f in frames_of(agent, "task")] == ["again", "again", "behind it"]


async def test_task_end_for_another_devices_task_is_never_accepted(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        attacker = lab.agent("ws://a/ws", devices=["a"])
        lab.agent("ws://b/ws", devices=["b"], task_duration=5.0)
        sup = lab.supervisor
        sup.add_device("a", "ws://a/ws", "Linux", connect=False)
        sup.add_device("b", "ws://b/ws", "Linux", connect=False)
        await sup.connect("a")
        await sup.connect("b")
        victim = await sup.submit("real work", device_id="b", task_id="victim")
        forged = ServerMessage(
            ServerMessageType.TASK_END,
            WireStatus.COMPLETED,
            session_id=session_id_for("lab", "victim"),
            result="forged",
        )
        await attacker.send_raw(encode_server(forged))
        await trio.sleep(1)
        assert not victim.done
        assert sup.stats("a").cross_device_frames == 1
        result = await victim.result()
        assert result.result == [{"request": "real work", "result": "done"}]


async def test_task_end_for_an_unknown_task_is_logged_and_counted(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        await agent.send_raw(
            encode_server(
                ServerMessage(
                    ServerMessageType.TASK_END, WireStatus.COMPLETED, session_id="lab@nobody"
                )
            )
        )
        await trio.sleep(1)
        assert sup.stats("pc").unknown_task_frames == 1
        assert sup.snapshot("pc").status is DeviceStatus.IDLE
        assert any("unknown session 'lab@nobody'" in r.getMessage() for r in caplog.records)


async def test_cancelled_caller_withdraws_its_queued_task(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=5.0)
        sup = lab.supervisor
        first = await sup.submit("first", device_id="pc")
        with trio.move_on_after(1):
            await sup.run_task("withdrawn", device_id="pc", task_id="w")
        assert sup.snapshot("pc").queue_depth == 0
        await first.result()
        await trio.sleep(10)
        assert [f.request for f in frames_of(agent, "task")] == ["first"]
        # The id is free again once its task ended.
        assert (await sup.run_task("again", device_id="pc", task_id="w")).ok


async def test_call_site_errors_are_clear(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        lab.agent(devices=["pc"], task_duration=5.0)
        sup = lab.supervisor
        sup.add_device("pc", URL, "Linux", connect=False)
        with pytest.raises(DuplicateDevice):
            sup.add_device("pc", URL, "Linux")
        for url in ("http://agent/ws", "agent:5000", "ws://", "ws://host:99999/"):
            with pytest.raises(InvalidServerURL):
                sup.add_device("other", url, "Linux")
        with pytest.raises(UnknownDevice):
            await sup.submit("x", device_id="nobody")
        with pytest.raises(DeviceUnavailable):
            await sup.submit("x", device_id="pc")  # registered, never connected
        await sup.connect("pc")
        await sup.submit("x", device_id="pc", task_id="same")
        with pytest.raises(DuplicateTaskId):
            await sup.submit("y", device_id="pc", task_id="same")
        with pytest.raises(ConfigurationError):
            await sup.submit("x", {"f": object()}, device_id="pc")
        for timeout in (-1, 0, math.nan, math.inf, "5", None, True):
            with pytest.raises(ConfigurationError, match="task_timeout"):
                await sup.submit("x", device_id="pc", task_timeout=timeout)  # type: ignore[arg-type]
        for priority in (1.5, "1", True):
            with pytest.raises(ConfigurationError, match="priority"):
                await sup.submit("x", device_id="pc", priority=priority)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="delivery"):
            await sup.submit("x", device_id="pc", delivery="sometimes")
        with pytest.raises(ConfigurationError, match="description"):
            await sup.submit(42, device_id="pc")  # type: ignore[arg-type]
        with pytest.raises(DeviceUnavailable):
            await sup.submit("x", capabilities=["gpu"])
    with pytest.raises(SupervisorClosed):
        sup.add_device("late", URL, "Linux")


async def test_capability_routing_prefers_idle_then_shortest_queue(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        lab.agent(devices=None, task_duration=10.0)
        sup = lab.supervisor
        for name in ("a", "b", "c"):
            sup.add_device(
                name, URL, "Linux", capabilities=["web"] if name != "c" else [], connect=False
            )
            await sup.connect(name)
        h1 = await sup.submit("1", capabilities=["web"])
        h2 = await sup.submit("2", capabilities=["web"])
        h3 = await sup.submit("3", capabilities=["web"])
        h4 = await sup.submit("4", capabilities=["web"])
        h5 = await sup.submit("5", capabilities=["web"])
        assert [h.device_id for h in (h1, h2, h3, h4, h5)] == ["a", "b", "a", "b", "a"]


async def test_connection_limit_bounds_concurrent_handshakes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab(max_concurrent_connections=2) as lab:
        lab.network.handshake_delay = 1.0
        lab.agent(devices=None)
        sup = lab.supervisor
        for i in range(10):
            sup.add_device(f"d{i}", URL, "Linux")
        for i in range(10):
            await sup.wait_for_status(f"d{i}", DeviceStatus.IDLE)
        assert trio.current_time() == 5.0  # 10 handshakes of 1 s, two at a time


async def test_leaving_the_block_leaves_no_task_and_no_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    def all_tasks() -> set[trio.lowlevel.Task]:
        found: set[trio.lowlevel.Task] = set()
        stack = [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            found.add(task)
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return found

    from galaxy_actors import open_supervisor
    from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

    network = MemoryNetwork()
    agent = SimulatedAgent(devices=None, task_duration=100.0)
    async with trio.open_nursery() as nursery:
        agent.serve_memory(network, URL, nursery)
        before = all_tasks()
        async with open_supervisor(connector=network.connector(), shutdown_grace=2.0) as sup:
            for i in range(5):
                sup.add_device(f"d{i}", URL, "Linux")
            for i in range(5):
                await sup.wait_for_status(f"d{i}", DeviceStatus.IDLE)
            running = await sup.submit("long", device_id="d0")
            queued = await sup.submit("queued", device_id="d0")
            assert len(all_tasks()) > len(before)
        await trio.lowlevel.checkpoint()
        assert agent.open_connections == 0
        # The agent's own per-connection tasks are gone too, so equality holds.
        assert all_tasks() == before
        for handle in (running, queued):
            with pytest.raises(TaskCancelled):
                await handle.result()
        nursery.cancel_scope.cancel()


async def test_restart_policy_per_reason_hook(autojump_clock: trio.abc.Clock) -> None:
    from galaxy_actors import FailureReason, GiveUp, Restart

    def rule(reason: FailureReason, attempt: int) -> Restart | GiveUp | None:
        if reason is FailureReason.HEARTBEAT_TIMEOUT:
            return Restart(0.0)
        if reason is FailureReason.PROTOCOL_ERROR:
            return GiveUp("protocol mismatch")
        return None

    async with memory_lab(
        policy=RestartPolicy(per_reason=rule), heartbeat_interval=5.0, heartbeat_timeout=2.0
    ) as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        agent.answer_heartbeats = False
        await sup.wait_for_status("pc", DeviceStatus.FAILED)
        failed_at = trio.current_time()
        agent.answer_heartbeats = True
        await sup.wait_for_status("pc", DeviceStatus.IDLE)
        assert trio.current_time() == failed_at  # reconnected at once
        await agent.send_raw(b"binary")
        await sup.wait_for_status("pc", DeviceStatus.FAILED)
        await trio.sleep(1000)
        profile = sup.snapshot("pc")
        assert profile.gave_up and profile.status is DeviceStatus.FAILED


async def test_remove_device_forgets_it(autojump_clock: trio.abc.Clock) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        sup = lab.supervisor
        await sup.remove_device("pc")
        assert "pc" not in sup.device_ids
        assert agent.open_connections == 0
        await trio.testing.wait_all_tasks_blocked()
        # Its actor's task has ended: a removed device leaves nothing running.
        names = [t.name for t in _all_tasks(trio.lowlevel.current_root_task())]
        assert "device:pc" not in names
        with pytest.raises(UnknownDevice):
            await sup.submit("x", device_id="pc")
        sup.add_device("pc", URL, "Linux")  # the id can be used again
        await sup.wait_for_status("pc", DeviceStatus.IDLE)


def _all_tasks(task: trio.lowlevel.Task) -> list[trio.lowlevel.Task]:
    found = [task]
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            found += _all_tasks(child)
    return found


def test_device_manager_refuses_bad_arguments_at_construction() -> None:
    from galaxy_actors import DeviceManager

    with pytest.raises(ConfigurationError, match="heartbeat_interval"):
        DeviceManager(heartbeat_interval=-1)
    with pytest.raises(ConfigurationError, match="reconnect_delay"):
        DeviceManager(reconnect_delay=float("nan"))
    with pytest.raises(ConfigurationError, match="task_name"):
        DeviceManager(task_name="a@b")
    manager = DeviceManager()
    with pytest.raises(SupervisorClosed, match="async with"):
        manager.device_registry  # noqa: B018 - the property raises outside `async with`


async def test_priorities_order_the_queue_and_show_in_status_and_events(
    autojump_clock: trio.abc.Clock,
) -> None:
    from galaxy_actors.events import TaskQueued

    async with memory_lab() as lab:
        agent = await lab.connected("pc", task_duration=1.0)
        sup = lab.supervisor
        with sup.subscribe() as events:
            running = await sup.submit("running", device_id="pc", priority=9)
            plan = [("low-a", 5), ("urgent", 0), ("low-b", 5), ("normal", 1), ("urgent-2", 0)]
            handles = [
                await sup.submit(name, device_id="pc", priority=p, task_id=name) for name, p in plan
            ]
            snapshot = sup.snapshot("pc")
            assert snapshot.queue_depth == 5
            assert snapshot.queue_by_priority == {0: 2, 1: 1, 5: 2}
            queued = [e for e in drain(events) if isinstance(e, TaskQueued)]
        assert [e.task_id for e in queued] == [name for name, _ in plan]
        assert queued[-1].queue_by_priority == {0: 2, 1: 1, 5: 2}
        await running.result()
        for handle in handles:
            await handle.result()
        sent = [f.request for f in frames_of(agent, "task")]
        # A task already sent is never pre-empted; then (priority, submission order).
        assert sent == ["running", "urgent", "urgent-2", "normal", "low-a", "low-b"]


async def test_capability_routing_counts_only_the_tasks_that_would_run_first(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with memory_lab() as lab:
        lab.agent(devices=None, task_duration=10.0)
        sup = lab.supervisor
        for name in ("a", "b"):
            sup.add_device(name, URL, "Linux", capabilities=["web"], connect=False)
            await sup.connect(name)
        await sup.submit("busy a", device_id="a")
        await sup.submit("busy b", device_id="b")
        for i in range(3):  # a has three low-priority tasks waiting
            await sup.submit(f"low {i}", device_id="a", priority=9)
        await sup.submit("normal on b", device_id="b", priority=0)
        # For an urgent task, a's low-priority backlog does not count: a has 1 ahead of it
        # (the running task), b has 2. For a low-priority task, a has 4 ahead, b has 2.
        urgent = await sup.submit("urgent", capabilities=["web"], priority=0)
        assert urgent.device_id == "a"
        low = await sup.submit("low", capabilities=["web"], priority=9)
        assert low.device_id == "b"


async def test_device_manager_connection_pool_limits_concurrent_handshakes(
    autojump_clock: trio.abc.Clock,
) -> None:
    from galaxy_actors import DeviceManager
    from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

    network = MemoryNetwork(handshake_delay=1.0)
    agent = SimulatedAgent(devices=None)
    async with trio.open_nursery() as nursery:
        agent.serve_memory(network, URL, nursery)
        # The reference's PooledDeviceManager(max_concurrent_connections=5).
        async with DeviceManager(
            task_name="pool", max_concurrent_connections=5, connector=network.connector()
        ) as manager:
            with manager.supervisor.subscribe() as events:
                async with trio.open_nursery() as connecting:
                    for i in range(20):
                        await manager.register_device(f"d{i}", URL, "Linux", auto_connect=False)
                        connecting.start_soon(manager.connect_device, f"d{i}")
                seen = drain(events)
            connected_at = sorted(
                e.at
                for e in seen
                if isinstance(e, StatusChanged) and e.new is DeviceStatus.CONNECTED
            )
            # Handshakes take 1 s each: never more than five complete within any second.
            assert connected_at == [float(1 + i // 5) for i in range(20)]
        nursery.cancel_scope.cancel()
