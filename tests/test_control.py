"""The control endpoint, in process: real trio-websocket on 127.0.0.1 in front of a supervisor
whose devices are simulated agents on an in-memory network.

Real sockets rule out the autojump clock here, so every wait is bounded by
``trio.fail_after`` and nothing sleeps to wait for behaviour.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio_websocket

import galaxy_actors._process._control as control_module
from galaxy_actors import DeviceStatus, Supervisor, open_supervisor
from galaxy_actors._process._control import ControlServer, open_control_listeners
from galaxy_actors._process._control_client import (
    AddressFileInUse,
    ControlClient,
    StaleAddressFile,
    claim_address_file,
    open_control_client,
    read_address_file,
    write_address_file,
)
from galaxy_actors.errors import TransportClosed
from galaxy_actors.events import ConnectionFailed, DeviceAdded
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
    network: MemoryNetwork
    nursery: trio.Nursery

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
                yield Lab(sup, agent, server, url, network, nursery)
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
        # Nothing of an unauthenticated request comes back, not even its op or id.
        assert reply == {
            "op": None,
            "id": None,
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
        seen = [await anext(events) for _ in range(4)]
    assert [e["event"] for e in seen] == ["TaskSent", "StatusChanged", "TaskEnded", "StatusChanged"]
    assert seen[0]["task_id"] == "t1" and seen[0]["device_id"] == "pc"
    assert seen[1]["device_id"] == "pc" and (seen[1]["old"], seen[1]["new"]) == ("idle", "busy")
    assert seen[2]["task_id"] == "t1" and seen[2]["outcome"] == "completed"
    assert isinstance(seen[2]["at"], float)
    # Numbered by the supervisor: nothing was dropped, so the numbers follow each other.
    assert [e["seq"] for e in seen] == list(range(seen[0]["seq"], seen[0]["seq"] + 4))


async def test_a_watcher_that_falls_behind_is_told_how_much_it_missed() -> None:
    async with control_lab(watch_buffer=10) as lab, lab.raw() as ws:
        assert (await ask(ws, request(op="watch")))["ok"]
        # A burst within one scheduling step: the watcher cannot keep up, the hub never waits.
        for n in range(50):
            lab.supervisor._host.events.publish(DeviceAdded(f"burst-{n}", float(n)))
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
        lab.supervisor._host.events.close()  # what leaving the supervisor's block does
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
    path.parent.mkdir()
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


async def test_aclose_lets_a_watcher_see_every_event_up_to_the_last() -> None:
    # The race behind a flaky `watch` at SIGTERM: the last events of a shutdown sit in the
    # watcher's buffer when `aclose` runs, and must still reach the client before its stream
    # ends. A burst published in one scheduling step makes the race certain.
    received: list[dict[str, Any]] = []
    async with control_lab() as lab, lab.client() as watcher:
        events = await watcher.watch()
        for n in range(50):
            lab.supervisor._host.events.publish(DeviceAdded(f"burst-{n}", float(n)))
        lab.server.stop_accepting()
        await lab.supervisor.disconnect("pc")
        with trio.fail_after(LIMIT):
            await lab.server.aclose(grace=LIMIT)
            received = [event async for event in events]
    added = [e["device_id"] for e in received if e["event"] == "DeviceAdded"]
    assert added == [f"burst-{n}" for n in range(50)]
    assert received[-1]["event"] == "StatusChanged"
    assert (received[-1]["device_id"], received[-1]["new"]) == ("pc", "disconnected")


# --------------------------------------------------------------------------- hostile input


@pytest.mark.parametrize("token", [TOKEN, "wrong"])
async def test_a_deeply_nested_request_is_a_bad_request(token: str) -> None:
    async with control_lab() as lab, lab.raw() as ws:
        for depth in (100_000, control_module.MAX_DEPTH + 1):
            nested = "[" * depth + "1" + "]" * depth
            frame = '{"token": "' + token + '", "op": "devices", "id": ' + nested + "}"
            reply = await ask(ws, frame)
            assert reply["error"]["type"] == "BadRequest" and "nested" in reply["error"]["message"]
            assert reply["id"] is None
        # The connection, and the endpoint, carry on.
        assert (await ask(ws, request(op="devices")))["ok"]


async def test_refusals_are_logged_at_most_once_per_interval_per_kind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with control_lab() as lab, lab.raw() as ws:
        lab.server.refusal_log_interval = 3600.0
        for _ in range(20):
            await ask(ws, json.dumps({"op": "devices", "token": "wrong\nFORGED"}))
            await ask(ws, "{not json")
        lab.server.stop_accepting()
        await lab.server.aclose(grace=1.0)
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == [
        "control request refused: wrong token",
        "control request refused: not JSON",
        "control request refused: wrong token … and 19 more in the last 3600 s",
        "control request refused: not JSON … and 19 more in the last 3600 s",
    ]


# --------------------------------------------------------------------------- operator ops


async def test_disconnect_connect_remove_and_add_a_device() -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.request("disconnect", device="pc", force=True)
        assert reply == {"op": "disconnect", "id": None, "ok": True, "device_id": "pc"}
        assert lab.supervisor.snapshot("pc").status is DeviceStatus.DISCONNECTED
        reply = await client.request("connect", device="pc")
        assert reply["ok"] and reply["connected"] is True
        assert (await client.submit("x", device="pc"))["outcome"] == "completed"

        assert (await client.request("remove", device="mac"))["ok"]
        assert lab.supervisor.device_ids == ["pc"]
        reply = await client.request(
            "add", device="cam", url=AGENT_URL, os="Linux", capabilities=["camera"]
        )
        assert reply["ok"] and "cam" in lab.supervisor.device_ids
        with trio.fail_after(LIMIT):
            await lab.supervisor.wait_for_status("cam", DeviceStatus.IDLE)
        reply = await client.submit("photo", capabilities=["camera"])
        assert reply["device_id"] == "cam"


async def test_an_operator_brings_back_a_device_that_gave_up() -> None:
    async with control_lab() as lab, lab.client() as client:
        lab.supervisor.add_device("late", "ws://nobody/ws", max_retries=0)
        with trio.fail_after(LIMIT):
            while not lab.supervisor.snapshot("late").gave_up:
                await lab.supervisor.wait_for_status("late", DeviceStatus.FAILED)
                await trio.sleep(0.01)
        assert (await client.request("connect", device="late"))["connected"] is False
        # The agent comes up: the same op brings the device back, no restart needed.
        lab.agent.serve_memory(lab.network, "ws://nobody/ws", lab.nursery)
        assert (await client.request("connect", device="late"))["connected"] is True
        assert (await client.submit("x", device="late"))["outcome"] == "completed"


@pytest.mark.parametrize(
    ("op", "fields", "kind", "message"),
    [
        ("connect", {"device": "nope"}, "UnknownDevice", "no device 'nope'"),
        ("disconnect", {}, "BadRequest", "disconnect needs a 'device'"),
        ("remove", {"device": "pc", "force": 1}, "BadRequest", "'force' must be bool"),
        ("add", {"device": "pc", "url": AGENT_URL}, "DuplicateDevice", "already registered"),
        (
            "add",
            {"device": "x", "url": "http://h/?token=abc"},
            "InvalidServerURL",
            "'http://h/?token=***'",
        ),
        ("cancel", {"task_id": "nope"}, "UnknownTask", "no live task 'nope'"),
        ("reload", {}, "Unsupported", "cannot reload"),
    ],
)
async def test_operator_ops_refuse_what_they_cannot_do(
    op: str, fields: dict[str, Any], kind: str, message: str
) -> None:
    async with control_lab() as lab, lab.client() as client:
        reply = await client.request(op, **fields)
        assert reply["error"]["type"] == kind and message in reply["error"]["message"]
        assert "abc" not in json.dumps(reply)
        assert sorted(lab.supervisor.device_ids) == ["mac", "pc"]


async def test_cancel_withdraws_a_queued_task_and_ends_a_running_one() -> None:
    replies: dict[str, dict[str, Any]] = {}
    async with (
        control_lab(task_duration=30.0) as lab,
        lab.client() as client,
        lab.client() as first,
        lab.client() as second,
    ):

        async def submit(own: ControlClient, task_id: str) -> None:
            replies[task_id] = await own.submit("long", device="pc", task_id=task_id)

        with trio.fail_after(LIMIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit, first, "running")
                await lab.supervisor.wait_for_status("pc", DeviceStatus.BUSY)
                nursery.start_soon(submit, second, "queued")
                await until(lambda: lab.supervisor.snapshot("pc").queue_depth == 1)
                reply = await client.request("cancel", task_id="queued")
                assert reply["ok"] and reply["withdrawn"] is True
                reply = await client.request("cancel", task_id="running")
                assert reply["ok"] and reply["withdrawn"] is False
                # Both submitters get their outcome now, not when the 30 s task ends.
    assert {k: r["outcome"] for k, r in replies.items()} == {
        "queued": "TaskCancelled",
        "running": "TaskCancelled",
    }
    assert lab.agent.tasks_received == 1


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition (bounded by the caller's fail_after)."""
    while True:
        if predicate():
            return
        await trio.sleep(0.01)


async def test_devices_and_events_never_show_a_url_token(monkeypatch: pytest.MonkeyPatch) -> None:
    leaky = "connect_failed: cannot reach ws://h/ws?token=hunter2"
    rows = control_module.device_rows

    def failing_rows(sup: Supervisor) -> list[Any]:
        return [attrs.evolve(row, last_failure=leaky) for row in rows(sup)]

    monkeypatch.setattr(control_module, "device_rows", failing_rows)
    async with control_lab() as lab, lab.client() as client, lab.client() as watcher:
        events = await watcher.watch()
        lab.supervisor._host.events.publish(ConnectionFailed("pc", "connect_failed", leaky, 1.0))
        event = await anext(events)
        devices = await client.devices()
    assert event["detail"] == "connect_failed: cannot reach ws://h/ws?token=***"
    assert devices[0]["last_failure"] == event["detail"]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process (until the system reuses it)
    return child.pid


def test_a_stale_address_file_is_named_as_such_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "addr.json"
    pid = dead_pid()
    path.write_text(json.dumps({"url": "ws://127.0.0.1:5/", "pid": pid}))
    with pytest.raises(StaleAddressFile) as info:
        read_address_file(path)
    assert str(info.value) == f"stale address file {path} (pid {pid} is not running)"
    assert claim_address_file(path, "ws://127.0.0.1:6/") == str(info.value)
    assert read_address_file(path) == ("ws://127.0.0.1:6/", None)


def test_the_address_file_of_a_running_supervisor_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "addr.json"
    other = {"url": "ws://127.0.0.1:5/", "pid": os.getppid()}  # a live process, not us
    path.write_text(json.dumps(other))
    with pytest.raises(AddressFileInUse, match=f"running supervisor \\(pid {os.getppid()}\\)"):
        claim_address_file(path, "ws://127.0.0.1:6/")
    assert json.loads(path.read_text()) == other
