"""The control endpoint, in process: real trio-websocket on 127.0.0.1 in front of a supervisor
whose devices are simulated agents on an in-memory network.

Real sockets rule out the autojump clock here, so every wait is bounded by
``trio.fail_after`` and nothing sleeps to wait for behaviour.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

import galaxy_actors._control as control_module
from galaxy_actors import DeviceAdded, DeviceStatus, Supervisor, TransportClosed, open_supervisor
from galaxy_actors._control import ControlServer, open_control_listeners
from galaxy_actors._control_client import (
    ControlClient,
    open_control_client,
    read_address_file,
    write_address_file,
)
from galaxy_actors.testing import MemoryNetwork, SimulatedAgent

TOKEN = "s3cret"
AGENT_URL = "ws://agent/ws"
LIMIT = 5.0


@attrs.define
class Lab:
    supervisor: Supervisor
    agent: SimulatedAgent
    server: ControlServer
    url: str

    @asynccontextmanager
    async def client(self, token: str = TOKEN) -> AsyncIterator[ControlClient]:
        async with open_control_client(self.url, token) as client:
            yield client

    @asynccontextmanager
    async def raw(self) -> AsyncIterator[trio_websocket.WebSocketConnection]:
        async with trio_websocket.open_websocket_url(self.url) as ws:
            yield ws


@asynccontextmanager
async def control_lab(watch_buffer: int = 1000, **agent_options: Any) -> AsyncIterator[Lab]:
    """A supervisor with devices "pc" (capability web) and "mac" (capability camera), both
    connected, served by a control endpoint on 127.0.0.1."""
    with trio.fail_after(LIMIT * 2):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork()
            agent = SimulatedAgent(**agent_options)
            agent.serve_memory(network, AGENT_URL, nursery)
            async with open_supervisor(
                task_name="control", connector=network.connector(), shutdown_grace=0.0
            ) as sup:
                sup.add_device("pc", AGENT_URL, "Windows", capabilities=["web"])
                sup.add_device("mac", AGENT_URL, "macOS", capabilities=["camera"])
                assert await sup.connect("pc") and await sup.connect("mac")
                listeners, url = await open_control_listeners("127.0.0.1", 0)
                server = ControlServer(sup, TOKEN, watch_buffer=watch_buffer, close_timeout=1.0)
                await nursery.start(server.serve, listeners)
                yield Lab(sup, agent, server, url)
                server.stop_accepting()
            await server.aclose(grace=1.0)
            nursery.cancel_scope.cancel()


async def ask(ws: trio_websocket.WebSocketConnection, frame: str | bytes) -> dict[str, Any]:
    await ws.send_message(frame)
    reply: dict[str, Any] = json.loads(await ws.get_message())
    return reply


def request(**fields: Any) -> str:
    return json.dumps({"token": TOKEN, **fields})


# --------------------------------------------------------------------------- submit


async def test_submit_to_a_device_returns_its_result() -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.request("submit", id=7, description="Open Excel", device="pc")
    assert reply["ok"] and reply["op"] == "submit" and reply["id"] == 7
    assert reply["outcome"] == "completed" and reply["device_id"] == "pc"
    assert reply["result"] == [{"request": "Open Excel", "result": "done"}]
    assert reply["timings"]["queued_for"] >= 0 and reply["timings"]["ran_for"] >= 0


async def test_submit_by_capability_with_every_option() -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.submit(
            "Take a photo",
            capabilities=["camera"],
            data={"resolution": "4k"},
            timeout=30,
            priority=-1,
            delivery="at_least_once",
            task_id="photo-1",
        )
    assert (reply["ok"], reply["device_id"], reply["task_id"]) == (True, "mac", "photo-1")


async def test_a_failure_reported_by_the_device_is_a_failed_outcome() -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.submit("x", device="pc", data={"sim_error": "disk full"})
    assert reply["ok"] and reply["outcome"] == "failed" and reply["error"] == "disk full"


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"device": "nope"}, "UnknownDevice"),
        ({"capabilities": ["teleport"]}, "DeviceUnavailable"),
    ],
)
async def test_a_task_refused_at_once_names_its_error(fields: dict[str, Any], kind: str) -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.submit("x", **fields)
    assert not reply["ok"] and reply["outcome"] == kind and reply["error"]["type"] == kind
    assert reply["error"]["message"]


async def test_a_value_the_supervisor_refuses_is_a_configuration_error() -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.submit("x", device="pc", timeout=-1)
        assert (
            reply["error"]["type"] == "ConfigurationError"
            and "timeout" in reply["error"]["message"]
        )
        reply = await client.submit("x", device="pc", delivery="twice")
        assert reply["error"]["type"] == "ConfigurationError"


# --------------------------------------------------------------------------- auth and bad input


@pytest.mark.parametrize("token", [None, "", "wrong", 12])
async def test_a_request_without_the_token_is_refused_and_does_nothing(token: Any) -> None:
    async with control_lab() as lab, lab.raw() as ws:
        frame: dict[str, Any] = {"op": "submit", "description": "x", "device": "pc", "id": 1}
        if token is not None:
            frame["token"] = token
        reply = await ask(ws, json.dumps(frame))
        assert reply == {
            "op": "submit",
            "id": 1,
            "ok": False,
            "error": {"type": "Unauthorized", "message": "missing or wrong token"},
        }
        reply = await ask(ws, json.dumps({"op": "devices", "token": "nope"}))
        assert reply["error"]["type"] == "Unauthorized" and "devices" not in reply
        assert lab.agent.tasks_received == 0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        (b"\x00binary", "binary frame"),
        (request(op="reboot"), "unknown op 'reboot'"),
        (request(), "unknown op None"),
        (request(op="submit", device="pc"), "needs a 'description'"),
        (request(op="submit", description=3, device="pc"), "'description' must be str"),
        (request(op="submit", description="x", device=["pc"]), "'device' must be str or null"),
        (request(op="submit", description="x", device="pc", timeout="5"), "'timeout'"),
        (request(op="submit", description="x", device="pc", timeout=True), "'timeout'"),
        (request(op="submit", description="x", device="pc", priority=1.5), "'priority'"),
        (request(op="submit", description="x", device="pc", data=[1]), "'data' must be dict"),
        (request(op="submit", description="x", capabilities="web"), "'capabilities'"),
        (request(op="submit", description="x", capabilities=[1]), "list of strings"),
        (request(op="submit", description="x", devcie="pc"), "unknown field 'devcie'"),
        (request(op="submit", description="x", device="pc", capabilities=["web"]), "not both"),
        (request(op="devices", verbose=True), "unknown field 'verbose' for devices"),
        (request(op="watch", follow=True), "unknown field 'follow' for watch"),
    ],
)
async def test_malformed_requests_get_an_error_and_change_nothing(
    frame: str | bytes, message: str
) -> None:
    async with control_lab() as lab, lab.raw() as ws:
        reply = await ask(ws, frame)
        assert reply["ok"] is False and reply["error"]["type"] == "BadRequest"
        assert message in reply["error"]["message"]
        assert lab.agent.tasks_received == 0
        # The same connection, and the supervisor, carry on.
        reply = await ask(ws, request(op="submit", description="after", device="pc"))
        assert reply["outcome"] == "completed"
        assert lab.supervisor.snapshot("pc").status is DeviceStatus.IDLE


async def test_a_bug_in_the_endpoint_costs_one_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_sup: Supervisor) -> list[Any]:
        raise RuntimeError("boom")

    monkeypatch.setattr(control_module, "device_rows", broken)
    async with control_lab() as lab, lab.client() as client:
        reply = await client.request("devices")
        assert reply["error"] == {"type": "InternalError", "message": "RuntimeError('boom')"}
        assert (await client.submit("x", device="pc"))["outcome"] == "completed"


# --------------------------------------------------------------------------- devices and watch


async def test_devices_lists_status_queue_retries_and_task_counts() -> None:
    async with control_lab() as lab, lab.client() as client:
        await client.submit("ok", device="pc")
        await client.submit("bad", device="pc", data={"sim_error": "no"})
        reply = await client.request("devices", id="d")
    assert reply["ok"] and reply["accepting"] is True and reply["id"] == "d"
    pc = {row["device_id"]: row for row in reply["devices"]}["pc"]
    assert pc["status"] == "idle" and pc["os"] == "Windows" and pc["capabilities"] == ["web"]
    assert (pc["queue_depth"], pc["attempts"], pc["max_retries"]) == (0, 0, 5)
    assert (pc["tasks_done"], pc["tasks_failed"], pc["gave_up"]) == (1, 1, False)
    assert pc["next_retry_in"] is None and pc["last_heartbeat_age"] >= 0
    assert pc["connections"] == 1 and pc["failures"] == 0


async def test_watch_streams_events_as_json() -> None:
    async with control_lab() as lab, lab.client() as watcher, lab.client() as client:
        events = await watcher.watch()
        await client.submit("x", device="pc", task_id="t1")
        seen = [await anext(events) for _ in range(3)]
    assert [e["event"] for e in seen] == ["StatusChanged", "TaskEnded", "StatusChanged"]
    assert seen[0]["device_id"] == "pc" and (seen[0]["old"], seen[0]["new"]) == ("idle", "busy")
    assert seen[1]["task_id"] == "t1" and seen[1]["outcome"] == "completed"
    assert isinstance(seen[1]["at"], float)


async def test_a_watcher_that_falls_behind_is_told_how_much_it_missed() -> None:
    async with control_lab(watch_buffer=10) as lab, lab.raw() as ws:
        assert (await ask(ws, request(op="watch")))["ok"]
        # A burst within one scheduling step: the watcher cannot keep up, the hub never waits.
        for n in range(50):
            lab.supervisor.events.publish(DeviceAdded(f"burst-{n}", float(n)))
        dropped = json.loads(await ws.get_message())
        assert dropped["event"] == "Dropped"
        kept = [json.loads(await ws.get_message()) for _ in range(50 - dropped["count"])]
    # The first events were kept (the buffer, and the one handed to the waiting watcher),
    # the rest counted; the count comes first.
    assert 10 <= len(kept) <= 11
    assert [e["device_id"] for e in kept] == [f"burst-{n}" for n in range(len(kept))]


async def test_a_watcher_that_never_reads_does_not_slow_the_supervisor() -> None:
    async with control_lab(watch_buffer=5) as lab, lab.raw() as ws:
        await ask(ws, request(op="watch"))
        for n in range(200):  # ~600 events that nobody reads
            await lab.supervisor.run_task(f"task {n}", device_id="pc")
        assert lab.supervisor.stats("pc").tasks_completed == 200


async def test_the_watch_ends_when_the_supervisor_stops() -> None:
    async with control_lab() as lab, lab.client() as watcher:
        events = await watcher.watch()
        lab.supervisor.events.close()  # what leaving the supervisor's block does
        assert [event async for event in events] == []


async def test_connections_are_served_concurrently() -> None:
    async with (
        control_lab(task_duration=30.0) as lab,
        lab.client() as slow,
        lab.client() as other,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(partial(slow.submit, "long", device="pc"))
        with trio.fail_after(LIMIT):
            await lab.supervisor.wait_for_status("pc", DeviceStatus.BUSY)
            # The slow request waits for its task; the other connection is served meanwhile.
            rows = await other.devices()
        assert {r["device_id"]: r["status"] for r in rows}["pc"] == "busy"
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- shutdown


async def test_after_stop_accepting_submits_are_refused_and_the_rest_works() -> None:
    async with control_lab() as lab, lab.client() as client:
        lab.server.stop_accepting()
        reply = await client.submit("x", device="pc")
        assert reply["error"]["type"] == "ShuttingDown" and "outcome" not in reply
        assert (await client.request("devices"))["accepting"] is False
        assert lab.agent.tasks_received == 0


async def test_aclose_sends_owed_outcomes_then_closes_with_a_close_frame() -> None:
    replies: list[dict[str, Any]] = []
    async with control_lab(task_duration=0.3) as lab, lab.client() as client, lab.client() as idle:

        async def submit() -> None:
            replies.append(await client.submit("x", device="pc"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            with trio.fail_after(LIMIT):
                await lab.supervisor.wait_for_status("pc", DeviceStatus.BUSY)
                await lab.server.aclose(grace=LIMIT)
        assert [r["outcome"] for r in replies] == ["completed"]
        for connection in (client, idle):
            with pytest.raises(TransportClosed) as info:
                await connection.request("devices")
            assert "1001" in str(info.value)


# --------------------------------------------------------------------------- addresses


async def test_the_listener_url_names_the_bound_port() -> None:
    listeners, url = await open_control_listeners("127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    assert url == f"ws://127.0.0.1:{port}/"


def test_address_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "run" / "addr.json"
    write_address_file(path, "ws://127.0.0.1:5/", "tok")
    assert read_address_file(path) == ("ws://127.0.0.1:5/", "tok")
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    write_address_file(path, "ws://127.0.0.1:6/")
    assert read_address_file(path) == ("ws://127.0.0.1:6/", None)
    assert sorted(p.name for p in path.parent.iterdir()) == ["addr.json"]
    path.write_text("[]")
    with pytest.raises(ValueError, match="not an address file"):
        read_address_file(path)
