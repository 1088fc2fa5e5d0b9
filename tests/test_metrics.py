"""Observability in the library: the Prometheus collector in a user's own registry, in
virtual time on the in-memory network; the readiness rule; the ``[metrics]`` table; the
HTTP responder; the log fields; task timings on `TaskEnded`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from lab import memory_lab, next_event
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from galaxy_actors import DeviceStatus, RestartPolicy
from galaxy_actors._process._config import ConfigError, parse_config
from galaxy_actors._process._http import Response, open_http_listeners, serve_http
from galaxy_actors._process._logging import setup_logging
from galaxy_actors._process._metrics import unready
from galaxy_actors.events import BadFrame, RestartsStopped, TaskEnded
from galaxy_actors.metrics import SupervisorCollector, collecting


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the registry's text exposition, parsed back as a scraper would."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


async def test_a_users_registry_counts_what_the_fleet_did(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    policy = RestartPolicy(reconnect_delay=1.0, max_retries=2)
    async with memory_lab(policy=policy) as lab, collecting(lab.supervisor, registry):
        sup = lab.supervisor
        # Subscribed first: the give-up comes while the tasks run.
        with sup.subscribe() as give_ups:
            await lab.connected("pc", task_duration=2.0)
            await lab.connected("odd", url="ws://odd/ws", malformed_after_register=True)
            sup.add_device("gone", "ws://nobody/ws", "Linux")  # nothing listens: connect_failed
            first = await sup.submit("one", device_id="pc")
            second = await sup.submit("two", device_id="pc")  # waits for the first: 2 s
            third = await sup.submit("three", device_id="pc")
            assert sup.snapshot("pc").queue_depth == 2
            queued = samples(registry)
            assert value(queued, "galaxy_actors_queue_depth", device_id="pc") == 2
            assert value(queued, "galaxy_actors_devices", status="busy") == 1
            sup.cancel_task(third)  # withdrawn from the queue at once
            await first.result()
            await second.result()
            await next_event(give_ups, lambda e: isinstance(e, RestartsStopped))
            # Counting happens in the collector's task: let it take the last events.
            await trio.testing.wait_all_tasks_blocked()
            found = samples(registry)
            assert value(found, "galaxy_actors_devices", status="idle") == 2
            assert value(found, "galaxy_actors_devices", status="failed") == 1
            assert value(found, "galaxy_actors_devices", status="connecting") == 0
            assert value(found, "galaxy_actors_handshakes_in_flight") == 0
            assert value(found, "galaxy_actors_queue_depth", device_id="pc") == 0
            assert value(found, "galaxy_actors_tasks_ended_total", outcome="completed") == 2
            assert value(found, "galaxy_actors_tasks_ended_total", outcome="TaskCancelled") == 1
            # Every outcome is there from the start: a rate over it reads 0, not nothing.
            assert value(found, "galaxy_actors_tasks_ended_total", outcome="TaskTimeout") == 0
            assert value(found, "galaxy_actors_tasks_sent_total") == 2  # not the cancelled one
            assert (
                value(found, "galaxy_actors_connection_failures_total", reason="connect_failed")
                == 3
            )
            assert value(found, "galaxy_actors_restarts_scheduled_total") == 2
            assert value(found, "galaxy_actors_give_ups_total") == 1
            assert value(found, "galaxy_actors_bad_frames_total", kind="protocol_error") == 1
            # Queue waits: 0 s (the cancelled one), 0 s, and 2 s behind the first.
            assert value(found, "galaxy_actors_task_queue_wait_seconds_count") == 3
            assert value(found, "galaxy_actors_task_queue_wait_seconds_sum") == pytest.approx(2.0)
            assert value(found, "galaxy_actors_task_queue_wait_seconds_bucket", le="1.0") == 2
            assert value(found, "galaxy_actors_task_queue_wait_seconds_bucket", le="2.5") == 3
            # Run times: only the two that were sent, 2 s each.
            assert value(found, "galaxy_actors_task_run_seconds_count") == 2
            assert value(found, "galaxy_actors_task_run_seconds_sum") == pytest.approx(4.0)
            assert value(found, "galaxy_actors_task_run_seconds_bucket", le="1.0") == 0
            assert value(found, "galaxy_actors_task_run_seconds_bucket", le="+Inf") == 2
            assert value(found, "galaxy_actors_metrics_events_dropped_total") == 0
    # The block unregistered the collector: the user's registry is theirs again.
    assert generate_latest(registry) == b""


async def test_a_collector_that_falls_behind_counts_what_it_missed(autojump_clock: Any) -> None:
    registry = CollectorRegistry()
    async with memory_lab() as lab:
        sup = lab.supervisor
        collector = SupervisorCollector(sup, buffer=1)
        registry.register(collector)
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            for n in range(5):  # five DeviceAdded in one step: one fits
                sup.add_device(f"d{n}", "ws://nobody/ws", connect=False)
            found = samples(registry)
            nursery.cancel_scope.cancel()
    # One went to the waiting collector, one into its buffer (Trio hands an event straight
    # to a waiting receiver): at least three were dropped.
    assert value(found, "galaxy_actors_metrics_events_dropped_total") >= 3


async def test_task_ended_events_carry_the_tasks_timings(autojump_clock: Any) -> None:
    async with memory_lab() as lab:
        sup = lab.supervisor
        await lab.connected("pc", task_duration=3.0)
        with sup.subscribe() as events:
            handle = await sup.submit("x", device_id="pc")
            result = await handle.result()
            ended = [e for e in _drain(events) if isinstance(e, TaskEnded)]
    assert [(e.queued_for, e.ran_for) for e in ended] == [
        (result.timings.queued_for, result.timings.ran_for)
    ]
    assert ended[0].ran_for == pytest.approx(3.0)


def _drain(events: Any) -> Iterator[Any]:
    while True:
        try:
            yield events.receive_nowait()
        except trio.WouldBlock:
            return


async def test_readiness_needs_the_share_of_devices_connected(autojump_clock: Any) -> None:
    async with memory_lab() as lab:
        sup = lab.supervisor
        assert unready(sup, 0.5) is None  # an empty fleet waits for nothing
        await lab.connected("a")
        sup.add_device("b", "ws://nobody/ws", "Linux")
        sup.add_device("c", "ws://nobody/ws", "Linux")
        await sup.wait_for_status("c", DeviceStatus.FAILED)
        assert unready(sup, 0.3) is None  # 1 of 3 needed (0.3 * 3 is not quite 1)
        assert unready(sup, 0.5) == "1 of 3 devices connected, 2 needed (ready_share 0.5)"
        assert unready(sup, 0.0) is None


# --------------------------------------------------------------------------- configuration


def _config(metrics: str) -> str:
    return metrics + '\n[[devices]]\ndevice_id = "a"\nserver_url = "ws://h/ws"\n'


def test_the_metrics_table() -> None:
    assert parse_config(_config("")).metrics is None
    default = parse_config(_config("[metrics]")).metrics
    assert default is not None and (default.host, default.port, default.ready_share) == (
        "127.0.0.1",
        9464,
        0.5,
    )
    ipv6 = parse_config(_config('[metrics]\nlisten = "[::1]:0"\nready_share = 1')).metrics
    assert ipv6 is not None and (ipv6.host, ipv6.port, ipv6.ready_share) == ("::1", 0, 1.0)
    assert ipv6.listen == "[::1]:0"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('listen = "9464"', "metrics.listen: expected HOST:PORT"),
        ('listen = "h:99999"', "metrics.listen: the port must be an integer from 0 to 65535"),
        ('listen = "::1:9464"', "metrics.listen: write an IPv6 address in brackets"),
        ("ready_share = 1.5", "metrics.ready_share: must be a number from 0 to 1, got 1.5"),
        ("ready_share = true", "metrics.ready_share: expected a number, got boolean True"),
        ("lisen = 'x'", "metrics.lisen: unknown key (did you mean 'listen'?)"),
    ],
)
def test_a_wrong_metrics_table_is_refused(table: str, problem: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(_config(f"[metrics]\n{table}"), source="m.toml")
    assert str(error.value).startswith(f"m.toml: {problem}")


# --------------------------------------------------------------------------- HTTP responder


async def _http(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def test_the_http_responder_answers_get_and_head_only() -> None:
    def respond(path: str) -> Response:
        if path == "/boom":
            raise RuntimeError("a bug in a probe")
        return Response(200, f"you asked for {path}\n".encode())

    with trio.fail_after(10):
        listeners, url = await open_http_listeners("127.0.0.1", 0)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_http, listeners, respond)
            got = await _http(url, b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Content-Length: 17\r\n" in got and got.endswith(b"\r\n\r\nyou asked for /x\n")
            got = await _http(url, b"HEAD /x HTTP/1.1\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\n")
            got = await _http(url, b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 405 ")
            got = await _http(url, b"nonsense\r\n\r\n")
            assert got.startswith(b"HTTP/1.1 400 ")
            got = await _http(url, b"GET /boom HTTP/1.1\r\n\r\n")  # logged; still serving
            assert got.startswith(b"HTTP/1.1 500 ")
            assert (await _http(url, b"GET / HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
            nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------- logs


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    setup_logging("json", "info", stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_json_log_records_carry_reason_and_attempt(
    autojump_clock: Any, json_log: io.StringIO
) -> None:
    policy = RestartPolicy(reconnect_delay=1.0, max_retries=1)
    async with memory_lab(policy=policy) as lab:
        sup = lab.supervisor
        with sup.subscribe() as events:
            sup.add_device("gone", "ws://nobody/ws", "Linux")
            await next_event(events, lambda e: isinstance(e, RestartsStopped))
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    retry = next(r for r in records if "reconnecting" in r["message"])
    assert (retry["device_id"], retry["reason"], retry["attempt"]) == ("gone", "connect_failed", 1)
    lost = next(r for r in records if "disconnected" in r["message"])
    assert (lost["device_id"], lost["reason"]) == ("gone", "connect_failed")
    assert "task_id" not in lost  # no task timed out: no field
    gave_up = next(r for r in records if "giving up" in r["message"])
    assert gave_up["reason"] == "connect_failed"
    # A record about nothing in particular carries none of them.
    logging.getLogger("galaxy_actors.process").info("hello")
    last = json.loads(json_log.getvalue().splitlines()[-1])
    assert last["device_id"] is None and not {"task_id", "reason", "attempt"} & set(last)


async def test_json_log_names_the_task_that_timed_out(
    autojump_clock: Any, json_log: io.StringIO
) -> None:
    async with memory_lab() as lab:
        sup = lab.supervisor
        await lab.connected("pc", lose_task_end=True)
        handle = await sup.submit("x", device_id="pc", task_id="t-9", task_timeout=5.0)
        await handle.wait()
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    lost = next(r for r in records if "disconnected: task_timeout" in r["message"])
    assert (lost["device_id"], lost["reason"], lost["task_id"]) == ("pc", "task_timeout", "t-9")


async def test_json_log_of_a_bad_frame_names_its_kind_as_the_event_does(
    autojump_clock: Any, json_log: io.StringIO
) -> None:
    async with memory_lab() as lab:
        agent = await lab.connected("pc")
        with lab.supervisor.subscribe() as events:
            await agent.send_raw("not json")
            event = await next_event(events, lambda e: isinstance(e, BadFrame))
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    bad = next(r for r in records if "protocol_error" in r["message"])
    assert isinstance(event, BadFrame)
    assert (bad["device_id"], bad["kind"]) == ("pc", event.kind) == ("pc", "protocol_error")
    assert "reason" not in bad  # a bad frame ends no connection: it has no FailureReason
