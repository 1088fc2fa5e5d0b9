"""End to end over real loopback sockets: trio-websocket client against SimulatedAgent.

Real time here (autojump would race real I/O), so every wait is bounded with fail_after and
the timings are short: these tests check the wire and the socket handling, while behaviour
over time is tested exactly on virtual time in test_device.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from galaxy_actors import (
    DeviceManager,
    DeviceStatus,
    RestartPolicy,
    ResultStatus,
    SupervisorClosed,
    TaskRejected,
    open_supervisor,
)
from galaxy_actors._transports._transport import WEBSOCKET_CLIENTS, WebSocketClient
from galaxy_actors.testing import SimulatedAgent, default_device_info
from galaxy_actors.transport import WebSocketConnector

LIMIT = 10  # seconds: generous on a loaded 2-core machine, and every test ends far sooner


@pytest.fixture(params=WEBSOCKET_CLIENTS)
def websocket(request: pytest.FixtureRequest) -> WebSocketClient:
    """Every test here runs against both WebSocket clients."""
    client: WebSocketClient = request.param
    return client


@asynccontextmanager
async def serving(**agent_options: Any) -> AsyncIterator[tuple[SimulatedAgent, str]]:
    agent = SimulatedAgent(**agent_options)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(agent.serve_websocket)
        yield agent, url
        nursery.cancel_scope.cancel()


async def test_device_manager_over_loopback_runs_tasks_and_returns_results(
    websocket: WebSocketClient,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["office_pc"], task_duration=0.05) as (agent, url),
            DeviceManager(
                task_name="e2e", connector=WebSocketConnector(websocket=websocket)
            ) as manager,
        ):
            assert await manager.register_device(
                "office_pc", url, "Windows", capabilities=["office"], metadata={"floor": 3}
            )
            profile = manager.device_registry.get_device("office_pc")
            assert profile is not None
            assert profile.status is DeviceStatus.IDLE
            assert profile.system_info == default_device_info("office_pc")
            assert manager.get_connected_devices() == ["office_pc"]
            results: list[Any] = []

            async def assign(i: int) -> None:
                results.append(
                    await manager.assign_task_to_device(
                        f"t{i}", "office_pc", f"step {i}", {"i": i}, timeout=5
                    )
                )

            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(assign, i)
            assert sorted(r.task_id for r in results) == ["t0", "t1", "t2"]
            assert all(r.status is ResultStatus.COMPLETED for r in results)
            assert {r.result[0]["request"] for r in results} == {"step 0", "step 1", "step 2"}
            sent = [f.message for f in agent.received if f.message and f.message.type == "task"]
            # Trio starts the three callers in no fixed order; each task went out once.
            assert sorted(m.session_id for m in sent) == [f"e2e@t{i}" for i in range(3)]
            assert all(m.client_id == "e2e@office_pc" for m in sent)
        # Left the block: the agent saw the connection closed.
        assert agent.open_connections == 0


async def test_refused_handshake_names_http_403_and_token_in_url_is_used_unchanged(
    websocket: WebSocketClient,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"], token="s3cret") as (_, url),
            open_supervisor(
                task_name="e2e", connector=WebSocketConnector(websocket=websocket)
            ) as sup,
        ):
            sup.add_device("denied", url, "Linux", connect=False)
            sup.add_device("allowed", url + "?token=s3cret", "Linux", connect=False)
            assert await sup.connect("denied") is False
            failure = sup.snapshot("denied").last_failure or ""
            assert failure.startswith("unauthorized") and "HTTP 403" in failure
            # The device id is "allowed" but the agent serves only "pc": rejected by
            # registration, after a successful handshake: the device is not on that server.
            assert await sup.connect("allowed") is False
            failure = sup.snapshot("allowed").last_failure or ""
            assert failure.startswith("device_offline")
            assert "Target device 'allowed' is not connected" in failure


async def test_connection_refused_is_connect_failed(websocket: WebSocketClient) -> None:
    with trio.fail_after(LIMIT):
        # Bind a port, then close it: nothing listens there any more.
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()
        async with open_supervisor(
            task_name="e2e", connector=WebSocketConnector(websocket=websocket)
        ) as sup:
            sup.add_device("pc", f"ws://127.0.0.1:{port}/ws", "Linux", connect=False)
            assert await sup.connect("pc") is False
            assert (sup.snapshot("pc").last_failure or "").startswith("connect_failed")


async def test_dropped_connection_reconnects_and_the_queue_survives(
    websocket: WebSocketClient,
) -> None:
    policy = RestartPolicy(reconnect_delay=0.05)
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"], task_duration=0.2) as (agent, url),
            open_supervisor(
                task_name="e2e", policy=policy, connector=WebSocketConnector(websocket=websocket)
            ) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc")
            running = await sup.submit("interrupted", device_id="pc")
            queued = await sup.submit("waits for the reconnect", device_id="pc")
            await agent.drop_connections()
            with pytest.raises(Exception) as caught:
                await running.result()
            assert type(caught.value).__name__ == "DeviceDisconnected"
            result = await queued.result()
            assert result.ok
            assert agent.registrations == 2
            assert sup.snapshot("pc").connection_attempts == 0


async def test_heartbeat_silence_is_detected_over_sockets(websocket: WebSocketClient) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"]) as (agent, url),
            open_supervisor(
                task_name="e2e",
                heartbeat_interval=0.1,
                heartbeat_timeout=0.1,
                policy=RestartPolicy(reconnect_delay=0.05),
                connector=WebSocketConnector(websocket=websocket),
            ) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc")
            with sup.subscribe() as events:
                agent.answer_heartbeats = False
                async for event in events:
                    if getattr(event, "reason", None) == "heartbeat_timeout":
                        break
                agent.answer_heartbeats = True
                await sup.wait_for_status("pc", DeviceStatus.IDLE)


async def test_refused_task_and_malformed_frames_over_sockets(websocket: WebSocketClient) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"], reject_tasks="no capacity") as (agent, url),
            open_supervisor(
                task_name="e2e", connector=WebSocketConnector(websocket=websocket)
            ) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc")
            with pytest.raises(TaskRejected, match="no capacity"):
                await sup.run_task("refused", device_id="pc")
            await agent.send_raw("{not json")
            agent.reject_tasks = None
            assert (await sup.run_task("fine", device_id="pc")).ok
            assert sup.stats("pc").protocol_errors == 1


async def test_oversized_frame_closes_with_1009_and_fails_the_session(
    websocket: WebSocketClient,
) -> None:
    connector = WebSocketConnector(max_frame_size=4096, websocket=websocket)
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"]) as (agent, url),
            open_supervisor(
                task_name="e2e", connector=connector, policy=RestartPolicy(reconnect_delay=0.05)
            ) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc")
            with sup.subscribe() as events:
                await agent.send_raw(
                    '{"type": "heartbeat", "status": "ok", "pad": "' + "x" * 10_000 + '"}'
                )
                async for event in events:
                    if getattr(event, "reason", None) is not None:
                        assert event.reason == "protocol_error"  # type: ignore[union-attr]
                        break
            await sup.wait_for_status("pc", DeviceStatus.IDLE)


async def test_closing_handshake_completes_after_a_rejected_registration(
    websocket: WebSocketClient,
) -> None:
    # With a 30 s close bound, a connect that returns within 5 s proves the close frames
    # were exchanged: our reader kept running while we closed. A real server forgets our
    # client_id only once it sees that close, so a retry is not refused as a duplicate.
    connector = WebSocketConnector(close_timeout=30, websocket=websocket)
    with trio.fail_after(5):
        async with (
            serving(devices=["pc"], reject_registration="server full") as (agent, url),
            open_supervisor(task_name="e2e", connector=connector) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc") is False
            assert sup.snapshot("pc").last_failure == "registration_rejected: server full"
            agent.reject_registration = None
            assert await sup.connect("pc") is True


async def test_connector_block_exceptions_come_out_unwrapped_and_close_is_quick(
    websocket: WebSocketClient,
) -> None:
    connector = WebSocketConnector(close_timeout=30, websocket=websocket)
    with trio.fail_after(5):
        async with serving(devices=["pc"]) as (agent, url):
            with pytest.raises(KeyError):
                async with connector.open(url):
                    raise KeyError("from the block")
            # Left from a cancelled scope: we must not wait the 30 s close bound for a reply
            # our (cancelled) reader could never read; fail_after(5) is the assertion.
            with trio.CancelScope() as scope:
                async with connector.open(url):
                    scope.cancel()
                    await trio.sleep(1)
            assert scope.cancelled_caught
            assert agent.connections_accepted == 2


async def test_stop_accepting_refuses_new_work_and_lets_submitted_tasks_finish(
    websocket: WebSocketClient,
) -> None:
    with trio.fail_after(LIMIT):
        async with (
            serving(devices=["pc"], task_duration=0.1) as (_, url),
            open_supervisor(
                task_name="e2e", connector=WebSocketConnector(websocket=websocket)
            ) as sup,
        ):
            sup.add_device("pc", url, "Linux", connect=False)
            assert await sup.connect("pc")
            running = await sup.submit("before", device_id="pc")
            sup.stop_accepting()
            assert not sup.accepting
            with pytest.raises(SupervisorClosed):
                await sup.submit("after", device_id="pc")
            with pytest.raises(SupervisorClosed):
                sup.add_device("late", url, "Linux")
            assert (await running.result()).ok
