"""The simulated agent, seen from a plain client: frames exactly as docs/protocol.md shows them.

Behaviour over time runs in memory on the autojump clock; a few tests use real trio-websocket
sockets on 127.0.0.1, bounded with ``trio.fail_after``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trio_websocket
from trio.testing import MockClock, wait_all_tasks_blocked

from galaxy_actors._sansio._aip import ClientMessageType, FrameBuilder, ServerMessage
from galaxy_actors.testing._agent import SimulatedAgent, default_device_info
from galaxy_actors.transport import ConnectError, MemoryNetwork, Transport, TransportClosed

URL = "ws://agent-1/ws"
SERVER_FIELDS = tuple(f.name for f in attrs.fields(ServerMessage))
FRESH_UUID: Any = object()  # stands for "a fresh uuid4" in expected frames


def assert_frame(frame: dict[str, Any], **expected: Any) -> None:
    """``frame`` carries every server field; the named ones have the expected values and all
    others are explicit nulls, as real servers send them."""
    assert list(frame) == list(SERVER_FIELDS)
    for name in SERVER_FIELDS:
        want = expected.get(name)
        if want is FRESH_UUID:
            assert uuid.UUID(frame[name]).version == 4, name
        else:
            assert frame[name] == want, name


def error_frame(text: str) -> dict[str, Any]:
    return {"type": "error", "status": "error", "error": text}


async def receive(client: Transport) -> dict[str, Any]:
    frame = await client.receive()
    assert isinstance(frame, str)
    decoded: dict[str, Any] = json.loads(frame)
    return decoded


async def assert_silent(client: Transport, seconds: float = 60.0) -> None:
    with trio.move_on_after(seconds):
        frame = await client.receive()
        pytest.fail(f"unexpected frame {frame!r}")


def task(builder: FrameBuilder, task_id: str, request: str = "open notepad", **data: Any) -> str:
    return builder.task(task_id, request, json.dumps(data))


@attrs.define
class Memory:
    """An agent served on a fresh in-memory network."""

    agent: SimulatedAgent
    network: MemoryNetwork
    nursery: trio.Nursery

    @asynccontextmanager
    async def client(self, url: str = URL) -> AsyncIterator[Transport]:
        async with self.network.connector().open(url) as client:
            yield client

    @asynccontextmanager
    async def registered(
        self, task_name: str = "t", device: str = "dev-1"
    ) -> AsyncIterator[tuple[Transport, FrameBuilder]]:
        builder = FrameBuilder(task_name, device)
        async with self.client() as client:
            await client.send(builder.register())
            assert_frame(
                await receive(client), type="heartbeat", status="ok", response_id=FRESH_UUID
            )
            yield client, builder


def serve(nursery: trio.Nursery, **knobs: Any) -> Memory:
    knobs.setdefault("devices", ["dev-1"])
    agent = SimulatedAgent(**knobs)
    network = MemoryNetwork()
    agent.serve_memory(network, URL, nursery)
    return Memory(agent, network, nursery)


# --------------------------------------------------------------------------- registration


async def test_registration_is_confirmed_by_heartbeat_ok(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered():
        assert memory.agent.registrations == 1
        assert memory.agent.open_connections == 1


@pytest.mark.parametrize(
    ("knobs", "device", "text"),
    [
        ({"reject_registration": "not today"}, "dev-1", "not today"),
        ({}, "dev-9", "Target device 'dev-9' is not connected"),
    ],
)
async def test_rejected_registration_is_an_error_then_close_1000(
    nursery: trio.Nursery, autojump_clock: MockClock, knobs: dict[str, Any], device: str, text: str
) -> None:
    memory = serve(nursery, **knobs)
    async with memory.client() as client:
        await client.send(FrameBuilder("t", device).register())
        assert_frame(await receive(client), **error_frame(text))
        with pytest.raises(TransportClosed) as closed:
            await client.receive()
        assert closed.value.code == 1000
    assert memory.agent.registrations == 0


async def test_first_frame_must_be_register(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.client() as client:
        await client.send(FrameBuilder("t", "dev-1").heartbeat())
        assert_frame(
            await receive(client),
            **error_frame("First message must be a register message, got 'heartbeat'"),
        )
        with pytest.raises(TransportClosed):
            await client.receive()


async def test_duplicate_client_id_is_rejected_until_the_first_connection_is_gone(
    nursery: trio.Nursery,
    autojump_clock: MockClock,
) -> None:
    memory = serve(nursery)
    register = FrameBuilder("t", "dev-1").register()
    async with memory.registered(), memory.client() as second:
        await second.send(register)
        assert_frame(
            await receive(second),
            **error_frame(
                "client_id 't@dev-1' is already registered; duplicate registrations are not allowed"
            ),
        )
    async with memory.registered():
        assert memory.agent.registrations == 2


async def test_any_target_is_accepted_without_a_device_list(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, devices=None)
    async with memory.registered(device="anything"):
        pass


# --------------------------------------------------------------------------- identity


async def test_frames_with_another_identity_get_an_error_instead_of_the_answer(
    nursery: trio.Nursery,
    autojump_clock: MockClock,
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        # The reference client's heartbeat: no client_type, so "device" on the wire.
        await client.send(json.dumps({"type": "heartbeat", "status": "ok", "client_id": "t@dev-1"}))
        assert_frame(
            await receive(client),
            **error_frame("client_type does not match the registered connection"),
        )
        await client.send(FrameBuilder("other", "dev-1").task("1", "x", "{}"))
        assert_frame(
            await receive(client),
            **error_frame("client_id does not match the registered connection"),
        )
        await client.send(builder.heartbeat())
        assert_frame(await receive(client), type="heartbeat", status="ok", response_id=FRESH_UUID)


# --------------------------------------------------------------------------- heartbeat


async def test_each_heartbeat_gets_a_fresh_response_id(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        ids = set()
        for _ in range(3):
            await client.send(builder.heartbeat())
            answer = await receive(client)
            assert_frame(answer, type="heartbeat", status="ok", response_id=FRESH_UUID)
            ids.add(answer["response_id"])
        assert len(ids) == 3


async def test_silent_heartbeats_leave_other_answers_alone(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        memory.agent.answer_heartbeats = False
        await client.send(builder.heartbeat())
        await assert_silent(client)
        await client.send(builder.device_info_request("r1"))
        assert (await receive(client))["type"] == "device_info_response"
        memory.agent.answer_heartbeats = True
        await client.send(builder.heartbeat())
        assert (await receive(client))["type"] == "heartbeat"


# --------------------------------------------------------------------------- device info


async def test_device_info_echoes_request_id_with_the_default_info(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        await client.send(builder.device_info_request("req-7"))
        assert_frame(
            await receive(client),
            type="device_info_response",
            status="ok",
            response_id="req-7",
            result=default_device_info("dev-1"),
        )
    assert set(default_device_info("x")) == {
        "device_id", "platform", "os_version", "cpu_count", "memory_total_gb", "hostname",
        "ip_address", "supported_features", "platform_type", "schema_version",
        "custom_metadata",
    }  # fmt: skip


async def test_device_info_is_configurable_per_device(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, device_info={"dev-1": {"device_id": "dev-1", "platform": "linux"}})
    async with memory.registered() as (client, builder):
        await client.send(builder.device_info_request("r"))
        assert (await receive(client))["result"] == {"device_id": "dev-1", "platform": "linux"}


async def test_device_without_info_gets_the_not_found_shape(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, device_info={})
    async with memory.registered() as (client, builder):
        await client.send(builder.device_info_request("r"))
        assert_frame(
            await receive(client),
            type="device_info_response",
            status="ok",
            response_id="r",
            result={"error": "Device dev-1 not found or no system info available"},
        )


# --------------------------------------------------------------------------- tasks


async def test_task_is_acknowledged_then_ended_with_a_list_result(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, task_duration=2.5)
    async with memory.registered() as (client, builder):
        await client.send(task(builder, "42", "open notepad"))
        start = trio.current_time()
        assert_frame(await receive(client), type="heartbeat", status="ok", session_id="t@42")
        assert trio.current_time() == start
        assert_frame(
            await receive(client),
            type="task_end",
            status="completed",
            session_id="t@42",
            result=[{"request": "open notepad", "result": "done"}],
            response_id=FRESH_UUID,
        )
        assert trio.current_time() == start + 2.5
    assert memory.agent.tasks_received == 1


async def test_heartbeats_are_answered_while_a_task_runs(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, task_duration=10)
    async with memory.registered() as (client, builder):
        await client.send(task(builder, "1"))
        assert (await receive(client))["session_id"] == "t@1"
        await client.send(builder.heartbeat())
        answer = await receive(client)
        assert (answer["type"], answer["session_id"]) == ("heartbeat", None)
        assert (await receive(client))["type"] == "task_end"


async def test_task_data_overrides_duration_result_and_error(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, task_error="agent-wide failure")
    async with memory.registered() as (client, builder):
        start = trio.current_time()
        await client.send(
            task(builder, "1", "a", sim_duration=3, sim_result={"n": 1}, sim_error=None)
        )
        await client.send(task(builder, "2", "b", sim_error="boom"))
        await receive(client)
        await receive(client)
        failed = await receive(client)
        assert (failed["status"], failed["error"], failed["session_id"]) == (
            "failed",
            "boom",
            "t@2",
        )
        completed = await receive(client)
        assert trio.current_time() == start + 3
        assert_frame(
            completed,
            type="task_end",
            status="completed",
            session_id="t@1",
            result=[{"request": "a", "result": {"n": 1}}],
            response_id=FRESH_UUID,
        )


async def test_agent_wide_knobs_change_while_running(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        memory.agent.task_error = "disk full"
        memory.agent.task_result = [1, 2]
        await client.send(task(builder, "1", "x"))
        await receive(client)
        assert_frame(
            await receive(client),
            type="task_end",
            status="failed",
            session_id="t@1",
            result=[{"request": "x", "result": [1, 2]}],
            error="disk full",
            response_id=FRESH_UUID,
        )


@pytest.mark.parametrize("per_task", [True, False])
async def test_lost_task_end_is_acknowledged_and_never_ended(
    nursery: trio.Nursery, autojump_clock: MockClock, per_task: bool
) -> None:
    memory = serve(nursery, lose_task_end=not per_task)
    async with memory.registered() as (client, builder):
        data = {"sim_lose_end": True} if per_task else {}
        await client.send(task(builder, "1", **data))
        assert_frame(await receive(client), type="heartbeat", status="ok", session_id="t@1")
        await assert_silent(client, 3600)
        await client.send(builder.heartbeat())
        assert (await receive(client))["type"] == "heartbeat"


async def test_rejected_tasks_get_an_error_without_session_id(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, reject_tasks="Agent is busy")
    async with memory.registered() as (client, builder):
        await client.send(task(builder, "1"))
        assert_frame(await receive(client), **error_frame("Agent is busy"))
        memory.agent.reject_tasks = None
        await client.send(task(builder, "2"))
        assert (await receive(client))["session_id"] == "t@2"
    assert memory.agent.tasks_received == 2


async def test_invalid_task_requests_are_refused(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        frame = json.loads(task(builder, "1"))
        del frame["target_id"]
        await client.send(json.dumps(frame))
        assert_frame(
            await receive(client), **error_frame("Constellation task requests require target_id")
        )
        frame["target_id"] = "dev-9"
        await client.send(json.dumps(frame))
        assert_frame(await receive(client), **error_frame("Target device 'dev-9' is not connected"))
        await client.send(task(builder, "2", sim_duration="soon"))
        assert_frame(
            await receive(client),
            **error_frame("metadata.task_data.sim_duration must be a non-negative number"),
        )


async def test_live_session_id_is_owned_by_its_connection(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, devices=["dev-1", "dev-2"])
    async with (
        memory.registered("s", "dev-1") as (first, first_builder),
        memory.registered("s", "dev-2") as (second, second_builder),
    ):
        await first.send(task(first_builder, "1", sim_duration=5))
        assert (await receive(first))["session_id"] == "s@1"
        await second.send(task(second_builder, "1"))
        assert_frame(
            await receive(second), **error_frame("session_id 's@1' is owned by another client")
        )
        assert (await receive(first))["type"] == "task_end"
        await second.send(task(second_builder, "1"))
        assert (await receive(second))["session_id"] == "s@1"


# --------------------------------------------------------------------------- bad input


async def test_invalid_frames_are_recorded_and_answered_with_errors(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        for bad in ("{not json", b"\x00\x01", '{"type": "bogus", "status": "ok"}'):
            await client.send(bad)  # type: ignore[arg-type]
            answer = await receive(client)
            assert answer["type"] == "error"
            assert answer["error"].startswith("Invalid message: ")
        await client.send(
            json.dumps(
                {
                    "type": "task_end",
                    "status": "completed",
                    "client_type": "constellation",
                    "client_id": "t@dev-1",
                }
            )
        )
        assert_frame(await receive(client), **error_frame("Unsupported message type 'task_end'"))
        await client.send(builder.heartbeat())
        assert (await receive(client))["type"] == "heartbeat"
    records = memory.agent.received
    assert [r.raw for r in records[1:4]] == [
        "{not json",
        b"\x00\x01",
        '{"type": "bogus", "status": "ok"}',
    ]
    assert [r.message for r in records[1:4]] == [None, None, None]


async def test_received_frames_are_recorded_with_time_and_connection(
    nursery: trio.Nursery,
    autojump_clock: MockClock,
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        await trio.sleep(5)
        heartbeat = builder.heartbeat()
        await client.send(heartbeat)
        await receive(client)
    async with memory.registered():
        pass
    await wait_all_tasks_blocked()
    first, second, third = memory.agent.received
    assert (first.connection, second.connection, third.connection) == (1, 1, 2)
    assert second.at == first.at + 5
    assert second.raw == heartbeat
    assert second.message is not None and second.message.type is ClientMessageType.HEARTBEAT
    assert second.message.client_id == "t@dev-1"
    assert memory.agent.connections_accepted == 2
    assert memory.agent.open_connections == 0


# --------------------------------------------------------------------------- faults


async def test_reordered_replies_arrive_out_of_order_deterministically(
    nursery: trio.Nursery,
    autojump_clock: MockClock,
) -> None:
    async def order(seed: int) -> list[str]:
        memory = serve(nursery, reorder_replies=True, seed=seed)
        async with memory.registered() as (client, builder):
            for i in range(10):
                await client.send(builder.device_info_request(f"r{i}"))
            return [(await receive(client))["response_id"] for _ in range(10)]

    sent = [f"r{i}" for i in range(10)]
    first = await order(seed=7)
    assert sorted(first) == sorted(sent)
    assert first != sent
    assert await order(seed=7) == first


async def test_dropped_connection_is_closed_without_close_frame(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, _):
        await memory.agent.drop_connections()
        with pytest.raises(TransportClosed) as closed:
            await client.receive()
        assert closed.value.code == 1006
    await wait_all_tasks_blocked()
    assert memory.agent.open_connections == 0
    async with memory.registered():  # the client_id was released
        pass


async def test_drop_closes_every_connection_before_anyone_runs(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # A network failure takes every connection at once: the first client to see its
    # connection gone must find the others gone too (no reconnection in between).
    memory = serve(nursery, devices=["dev-1", "dev-2", "dev-3"])
    async with (
        memory.registered("a", "dev-1") as (first, _),
        memory.registered("b", "dev-2") as (second, builder_b),
        memory.registered("c", "dev-3") as (third, builder_c),
    ):
        still_open: list[str] = []

        async def first_to_notice() -> None:
            with pytest.raises(TransportClosed):
                await first.receive()
            for name, client, builder in (("b", second, builder_b), ("c", third, builder_c)):
                try:
                    await client.send(builder.heartbeat())
                    still_open.append(name)
                except TransportClosed:
                    pass

        async with trio.open_nursery() as watchers:
            watchers.start_soon(first_to_notice)
            await wait_all_tasks_blocked()
            await memory.agent.drop_connections()
        assert still_open == []


async def test_drop_after_frames_leaves_the_last_frame_unanswered(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, drop_after_frames=2)
    async with memory.registered() as (client, builder):
        await client.send(builder.heartbeat())
        with pytest.raises(TransportClosed) as closed:
            await client.receive()
        assert closed.value.code == 1006


async def test_send_raw_reaches_every_connection(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, devices=None)
    async with memory.registered(device="a") as (a, _), memory.registered(device="b") as (b, _):
        await memory.agent.send_raw('{"type": "nonsense"}')
        await memory.agent.send_raw(b"\xff")
        for client in (a, b):
            assert await client.receive() == '{"type": "nonsense"}'
            assert await client.receive() == b"\xff"


async def test_malformed_frame_right_after_registration(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, malformed_after_register=True)
    async with memory.registered() as (client, _):
        assert await client.receive() == "{not json"


async def test_refused_connections_leave_open_ones_alone(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery)
    async with memory.registered() as (client, builder):
        memory.agent.refuse_connections = True
        with pytest.raises(ConnectError, match="refused"):
            async with memory.client():
                pass
        await client.send(builder.heartbeat())
        assert (await receive(client))["type"] == "heartbeat"
    memory.agent.refuse_connections = False
    async with memory.registered():
        pass


async def test_token_is_required_in_the_query(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    memory = serve(nursery, token="s3cret")
    for url in (URL, URL + "?token=wrong"):
        with pytest.raises(ConnectError) as refused:
            async with memory.client(url):
                pass
        assert refused.value.status_code == 403
    async with memory.client(URL + "?token=s3cret") as client:
        await client.send(FrameBuilder("t", "dev-1").register())
        assert (await receive(client))["type"] == "heartbeat"


async def test_shutdown_closes_connections_with_going_away(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    agent = SimulatedAgent(devices=["dev-1"])
    network = MemoryNetwork()

    async def host(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as agent_nursery:
                agent.serve_memory(network, URL, agent_nursery)
                task_status.started(scope)
                await trio.sleep_forever()

    scope = await nursery.start(host)
    async with network.connector().open(URL) as client:
        await client.send(FrameBuilder("t", "dev-1").register())
        await client.receive()
        scope.cancel()
        with pytest.raises(TransportClosed) as closed:
            await client.receive()
        assert closed.value.code == 1001


# --------------------------------------------------------------------------- real sockets
#
# The client is trio-websocket over a TCP stream the test owns: trio-websocket's own client
# leaves its socket open when the server closes first or refuses the handshake, which
# `filterwarnings = error` turns into a failure of some later test.


def _resource(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port, parts.path + (f"?{parts.query}" if parts.query else "")


@asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    host, port, resource = _resource(url)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, host, resource)
            try:
                yield ws
            finally:
                with trio.move_on_after(1):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def handshake_refusal(url: str) -> int | None:
    """The HTTP status the handshake is refused with, or None when it is accepted."""
    host, port, resource = _resource(url)
    stream = await trio.open_tcp_stream(host, port)
    status = None
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(nursery, stream, host, resource)
            await ws.aclose()
            nursery.cancel_scope.cancel()
    except* trio_websocket.ConnectionRejected as group:
        status = getattr(group.exceptions[0], "status_code", None)
    finally:
        await stream.aclose()
    return status


async def start_websocket(nursery: trio.Nursery, agent: SimulatedAgent) -> str:
    url: str = await nursery.start(agent.serve_websocket)
    return url


async def test_websocket_round_trip(nursery: trio.Nursery) -> None:
    agent = SimulatedAgent(devices=["dev-1"], token="k")
    builder = FrameBuilder("t", "dev-1")
    with trio.fail_after(5):
        url = await start_websocket(nursery, agent)
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/ws")
        async with ws_client(url + "?token=k") as ws:
            await ws.send_message(builder.register())
            assert json.loads(await ws.get_message())["status"] == "ok"
            await ws.send_message(builder.heartbeat())
            assert json.loads(await ws.get_message())["type"] == "heartbeat"
            await ws.send_message(builder.device_info_request("r1"))
            assert json.loads(await ws.get_message())["response_id"] == "r1"
            await ws.send_message(task(builder, "1", "x"))
            assert_frame(
                json.loads(await ws.get_message()), type="heartbeat", status="ok", session_id="t@1"
            )
            assert_frame(
                json.loads(await ws.get_message()),
                type="task_end",
                status="completed",
                session_id="t@1",
                result=[{"request": "x", "result": "done"}],
                response_id=FRESH_UUID,
            )
    assert agent.tasks_received == 1


@pytest.mark.parametrize(
    ("knobs", "suffix", "status"),
    [
        ({"token": "k"}, "", 403),
        ({"token": "k"}, "?token=nope", 403),
        ({"token": "k"}, "?token=k", None),
        ({"refuse_connections": True}, "", 503),
        ({}, "/../other", 404),
    ],
)
async def test_websocket_handshake_refusals(
    nursery: trio.Nursery, knobs: dict[str, Any], suffix: str, status: int | None
) -> None:
    agent = SimulatedAgent(**knobs)
    with trio.fail_after(5):
        url = await start_websocket(nursery, agent)
        assert await handshake_refusal(url + suffix) == status
    assert agent.connections_accepted == (1 if status is None else 0)


async def test_websocket_rejected_registration_closes_with_1000(nursery: trio.Nursery) -> None:
    agent = SimulatedAgent(devices=["dev-1"], reject_registration="go away")
    with trio.fail_after(5):
        url = await start_websocket(nursery, agent)
        async with ws_client(url) as ws:
            await ws.send_message(FrameBuilder("t", "dev-1").register())
            assert_frame(json.loads(await ws.get_message()), **error_frame("go away"))
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1000


async def test_websocket_faults(nursery: trio.Nursery) -> None:
    agent = SimulatedAgent(devices=["dev-1"])
    with trio.fail_after(5):
        url = await start_websocket(nursery, agent)
        async with ws_client(url) as ws:
            await ws.send_message(FrameBuilder("t", "dev-1").register())
            await ws.get_message()
            await agent.send_raw(b"\x00binary")
            assert await ws.get_message() == b"\x00binary"
            await agent.drop_connections()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1006


async def test_websocket_shutdown_sends_going_away(nursery: trio.Nursery) -> None:
    agent = SimulatedAgent(devices=["dev-1"])

    async def host(task_status: trio.TaskStatus[tuple[str, trio.CancelScope]]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as agent_nursery:
                url = await start_websocket(agent_nursery, agent)
                task_status.started((url, scope))

    with trio.fail_after(5):
        url, scope = await nursery.start(host)
        async with ws_client(url) as ws:
            await ws.send_message(FrameBuilder("t", "dev-1").register())
            await ws.get_message()
            scope.cancel()
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1001


async def test_websocket_shutdown_is_bounded_by_silent_peers(nursery: trio.Nursery) -> None:
    agent = SimulatedAgent(devices=["dev-1"], close_timeout=0.2)
    stopped = trio.Event()

    async def host(task_status: trio.TaskStatus[tuple[str, trio.CancelScope]]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as agent_nursery:
                url = await start_websocket(agent_nursery, agent)
                task_status.started((url, scope))
        stopped.set()

    with trio.fail_after(5):
        url, scope = await nursery.start(host)
        host_name, port, _ = _resource(url)
        # A peer that never sends its HTTP request holds its handler until the deadline.
        silent = await trio.open_tcp_stream(host_name, port)
        async with ws_client(url) as ws:
            await ws.send_message(FrameBuilder("t", "dev-1").register())
            await ws.get_message()
            started = trio.current_time()
            scope.cancel()
            await stopped.wait()
        assert trio.current_time() - started < 1.0
        await silent.aclose()
