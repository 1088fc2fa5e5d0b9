"""The sans-IO AIP engine, driven with plain values: no Trio, no clock, no transport."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from galaxy_actors import FailureReason
from galaxy_actors._sansio._aip import FrameBuilder, decode_client
from galaxy_actors._sansio._engine import (
    PHASE_TRANSITIONS,
    AIPConnection,
    BadFrameKind,
    BadInput,
    ConnectionDead,
    InfoReceived,
    LocalProtocolError,
    Phase,
    Registered,
    TaskAccepted,
    TaskEnded,
    TaskRefused,
)

HB_INTERVAL, HB_TIMEOUT, REG_TIMEOUT, INFO_TIMEOUT = 30.0, 10.0, 30.0, 10.0


def fixed_time() -> str:
    return "2026-12-02T00:00:00+00:00"


def engine(owner: dict[str, str] | None = None) -> AIPConnection:
    owners = owner or {}
    return AIPConnection(
        FrameBuilder("lab", "pc", now=fixed_time),
        task_name="lab",
        device_id="pc",
        heartbeat_interval=HB_INTERVAL,
        heartbeat_timeout=HB_TIMEOUT,
        registration_timeout=REG_TIMEOUT,
        device_info_timeout=INFO_TIMEOUT,
        session_owner=owners.get,
    )


def server(type_: str, status: str = "ok", **fields: Any) -> str:
    # As real servers send them: every optional field present, null when unset.
    frame: dict[str, Any] = dict.fromkeys(
        ("session_id", "error", "response_id", "result", "task_name", "timestamp")
    )
    frame.update(type=type_, status=status, **fields)
    return json.dumps(frame)


def serving(conn: AIPConnection | None = None) -> AIPConnection:
    """An engine through registration and device info, at t=0."""
    conn = conn or engine()
    conn.start(0.0)
    assert conn.receive(server("heartbeat"), 0.0) == Registered(0.0)
    heartbeat = conn.outgoing(0.0)
    assert heartbeat is not None and decode_client(heartbeat).type == "heartbeat"
    request = conn.outgoing(0.0)
    assert request is not None
    request_id = decode_client(request).request_id
    event = conn.receive(
        server("device_info_response", response_id=request_id, result={"os": "x"}), 0.0
    )
    assert event == InfoReceived({"os": "x"}, None, 0.0)
    assert conn.phase is Phase.SERVING
    return conn


# --------------------------------------------------------------------------- the phases


def test_the_phases_are_one_table_and_closed_is_final() -> None:
    assert set(PHASE_TRANSITIONS) == set(Phase)
    assert PHASE_TRANSITIONS[Phase.CLOSED] == frozenset()
    conn = engine()
    conn.close()
    assert conn.phase is Phase.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.start(0.0)
    assert conn.receive(server("heartbeat"), 1.0) is None  # nothing is interpreted any more


def test_register_is_the_first_frame_and_carries_the_identity() -> None:
    conn = engine()
    register = decode_client(conn.start(0.0))
    assert register.type == "register"
    assert register.client_type == "constellation"
    assert register.client_id == "lab@pc"
    assert conn.outgoing(0.0) is None  # nothing else before the confirmation
    assert conn.next_deadline() == REG_TIMEOUT


def test_a_rejected_registration_is_registration_rejected_with_the_servers_text() -> None:
    conn = engine()
    conn.start(0.0)
    text = "client_id 'lab@pc' is already registered; duplicate registrations are not allowed"
    event = conn.receive(server("error", "error", error=text), 0.5)
    assert event == ConnectionDead(FailureReason.REGISTRATION_REJECTED, text, 0.5)
    assert conn.phase is Phase.CLOSED
    # The close that follows does not replace the reason.
    assert conn.connection_lost(1000, "closed", 0.6) is event


def test_no_answer_to_register_within_the_timeout_is_connect_failed() -> None:
    conn = engine()
    conn.start(0.0)
    assert conn.check_deadlines(REG_TIMEOUT - 0.1) is None
    event = conn.check_deadlines(REG_TIMEOUT)
    assert isinstance(event, ConnectionDead) and event.reason is FailureReason.CONNECT_FAILED


def test_device_info_refused_or_late_leaves_no_info_and_serves() -> None:
    conn = engine()
    conn.start(0.0)
    conn.receive(server("heartbeat"), 0.0)
    conn.outgoing(0.0)
    conn.outgoing(0.0)
    event = conn.receive(server("error", "error", error="unauthorized"), 0.1)
    assert event == InfoReceived(None, "device info refused: unauthorized", 0.1)
    late = engine()
    late.start(0.0)
    late.receive(server("heartbeat"), 0.0)
    late.outgoing(0.0)
    late.outgoing(0.0)
    assert late.receive(server("heartbeat", response_id="x"), 5.0) is None  # alive
    event = late.check_deadlines(INFO_TIMEOUT)
    assert isinstance(event, InfoReceived) and event.info is None
    assert late.phase is Phase.SERVING


def test_the_servers_no_info_shape_is_no_info() -> None:
    conn = engine()
    conn.start(0.0)
    conn.receive(server("heartbeat"), 0.0)
    conn.outgoing(0.0)
    request_id = decode_client(conn.outgoing(0.0) or "").request_id
    event = conn.receive(
        server("device_info_response", response_id=request_id, result={"error": "not found"}),
        0.0,
    )
    assert isinstance(event, InfoReceived) and event.info is None


# --------------------------------------------------------------------------- tasks


def test_a_task_is_acknowledged_then_ended_by_its_session_id() -> None:
    conn = serving()
    frame = decode_client(conn.send_task("t1", "do it", '{"a": 1}', 100.0, 1.0))
    assert frame.session_id == "lab@t1" and frame.task_name == "galaxy/lab/t1"
    assert frame.metadata == {"task_data": {"a": 1}}
    assert not conn.can_send_task()
    with pytest.raises(LocalProtocolError):
        conn.send_task("t2", "no", "{}", 100.0, 1.0)
    assert conn.receive(server("heartbeat", session_id="lab@t1"), 1.1) == TaskAccepted("t1", 1.1)
    assert conn.receive(server("heartbeat", session_id="lab@t1"), 1.2) is None  # once
    end = conn.receive(server("task_end", "completed", session_id="lab@t1", result=[1]), 2.0)
    assert end == TaskEnded("t1", False, [1], None, 2.0)
    assert conn.can_send_task()


@pytest.mark.parametrize(
    ("status", "failed"), [("completed", False), ("failed", True), ("error", True)]
)
def test_a_task_end_status_maps_to_failed(status: str, failed: bool) -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 100.0, 1.0)
    event = conn.receive(server("task_end", status, session_id="lab@t1", error="boom"), 2.0)
    assert isinstance(event, TaskEnded) and event.failed is failed


def test_an_error_before_the_acknowledgement_refuses_the_task_not_the_connection() -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 100.0, 1.0)
    text = "session_id 'lab@t1' is owned by another client"
    event = conn.receive(server("error", "error", error=text), 1.1)
    assert event == TaskRefused("t1", text, 1.1)
    assert conn.phase is Phase.SERVING and conn.can_send_task()


def test_the_device_gone_from_its_server_is_device_offline_and_its_task_never_ran() -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 100.0, 1.0)
    event = conn.receive(server("error", "error", error="Target device 'pc' is not connected"), 1.1)
    assert event == ConnectionDead(
        FailureReason.DEVICE_OFFLINE, "Target device 'pc' is not connected", 1.1, None, "t1"
    )
    again = engine()
    again.start(2.0)
    event = again.receive(
        server("error", "error", error="Target device 'pc' is not connected"), 2.1
    )
    assert isinstance(event, ConnectionDead) and event.reason is FailureReason.DEVICE_OFFLINE


def test_an_error_after_the_acknowledgement_is_only_counted() -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 100.0, 1.0)
    conn.receive(server("heartbeat", session_id="lab@t1"), 1.1)
    event = conn.receive(server("error", "error", error="client_type mismatch"), 1.2)
    assert isinstance(event, BadInput) and event.kind is BadFrameKind.ERROR_FRAME
    assert conn.in_flight == "t1"


def test_a_task_end_for_another_devices_task_is_a_cross_device_event_never_accepted() -> None:
    conn = serving(engine(owner={"lab@theirs": "other-pc"}))
    conn.send_task("mine", "x", "{}", 100.0, 1.0)
    event = conn.receive(server("task_end", "completed", session_id="lab@theirs"), 1.5)
    assert isinstance(event, BadInput) and event.kind is BadFrameKind.CROSS_DEVICE
    assert "other-pc" in event.detail
    assert conn.in_flight == "mine"
    unknown = conn.receive(server("task_end", "completed", session_id="lab@nobody"), 1.6)
    assert isinstance(unknown, BadInput) and unknown.kind is BadFrameKind.UNKNOWN_TASK


def test_a_task_timeout_ends_the_connection_naming_the_task() -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 5.0, 1.0)
    assert conn.next_deadline() == 6.0
    event = conn.check_deadlines(6.0)
    assert isinstance(event, ConnectionDead)
    assert event.reason is FailureReason.TASK_TIMEOUT and event.timed_out_task == "t1"


def test_an_unsent_task_frees_the_connection() -> None:
    conn = serving()
    conn.send_task("t1", "x", "{}", 5.0, 1.0)
    conn.unsend_task("t1")
    assert conn.can_send_task() and conn.next_deadline() > 6.0


# --------------------------------------------------------------------------- liveness


def test_any_frame_within_the_timeout_of_a_heartbeat_keeps_the_connection_alive() -> None:
    conn = serving()  # first heartbeat at 0, answered by the device info at 0
    assert conn.next_deadline() == HB_INTERVAL
    heartbeat = conn.outgoing(HB_INTERVAL)
    assert heartbeat is not None and decode_client(heartbeat).type == "heartbeat"
    assert conn.next_deadline() == HB_INTERVAL + HB_TIMEOUT
    assert conn.receive(server("heartbeat", response_id="random"), HB_INTERVAL + 9.0) is None
    assert conn.check_deadlines(HB_INTERVAL + HB_TIMEOUT) is None


def test_silence_after_a_heartbeat_is_a_heartbeat_timeout_at_the_deadline() -> None:
    conn = serving()
    conn.outgoing(HB_INTERVAL)
    assert conn.check_deadlines(HB_INTERVAL + HB_TIMEOUT - 0.001) is None
    event = conn.check_deadlines(HB_INTERVAL + HB_TIMEOUT)
    assert isinstance(event, ConnectionDead)
    assert event.reason is FailureReason.HEARTBEAT_TIMEOUT


def test_the_oldest_unanswered_heartbeat_counts_when_the_interval_is_short() -> None:
    conn = AIPConnection(
        FrameBuilder("lab", "pc", now=fixed_time),
        task_name="lab",
        device_id="pc",
        heartbeat_interval=1.0,
        heartbeat_timeout=3.0,
        registration_timeout=30.0,
        device_info_timeout=10.0,
    )
    serving(conn)
    for t in (1.0, 2.0, 3.0):
        assert conn.outgoing(t) is not None
    event = conn.check_deadlines(4.0)  # the heartbeat of t=1 went unanswered for 3 s
    assert isinstance(event, ConnectionDead)
    assert event.reason is FailureReason.HEARTBEAT_TIMEOUT


# --------------------------------------------------------------------------- bad input


def test_a_bad_text_frame_is_dropped_bounded_and_escaped() -> None:
    conn = serving()
    hostile = "not json\nFORGED 2026 ERROR " + "x" * 10_000
    event = conn.receive(hostile, 1.0)
    assert isinstance(event, BadInput) and event.kind is BadFrameKind.PROTOCOL_ERROR
    assert "\n" not in event.detail and len(event.detail) < 600
    assert conn.phase is Phase.SERVING


def test_a_binary_frame_ends_the_connection_as_a_protocol_error() -> None:
    conn = serving()
    event = conn.receive(b"\x00binary", 1.0)
    assert isinstance(event, ConnectionDead) and event.reason is FailureReason.PROTOCOL_ERROR


def test_a_huge_error_text_from_the_server_is_bounded() -> None:
    conn = serving()
    event = conn.receive(server("error", "error", error="e" * 8_000_000 + "\nforged"), 1.0)
    assert isinstance(event, BadInput) and len(event.detail) < 300 and "\n" not in event.detail


def test_close_code_1009_is_a_protocol_error_others_a_closed_connection() -> None:
    assert serving().connection_lost(1009, "too big", 1.0).reason is FailureReason.PROTOCOL_ERROR
    assert serving().connection_lost(1000, "bye", 1.0).reason is FailureReason.CONNECTION_CLOSED


@pytest.mark.parametrize(
    ("code", "by_peer", "reason"),
    [
        # Our own limit: the server's frame was too big for us.
        (1009, False, FailureReason.PROTOCOL_ERROR),
        # The server's limit: *our* frame was too big for it. Not our protocol error.
        (1009, True, FailureReason.CONNECTION_CLOSED),
        # Text that is not UTF-8, or a broken frame: whoever found it.
        (1007, True, FailureReason.PROTOCOL_ERROR),
        (1007, False, FailureReason.PROTOCOL_ERROR),
        (1002, True, FailureReason.PROTOCOL_ERROR),
        (1000, True, FailureReason.CONNECTION_CLOSED),
        (1011, True, FailureReason.CONNECTION_CLOSED),
        (4000, True, FailureReason.CONNECTION_CLOSED),
        (1006, None, FailureReason.CONNECTION_CLOSED),
    ],
)
def test_close_codes_are_classified_by_who_sent_them(
    code: int, by_peer: bool | None, reason: FailureReason
) -> None:
    dead = serving().connection_lost(code, f"code {code}", 1.0, by_peer=by_peer)
    assert dead.reason is reason and dead.detail == f"code {code}"


# That the engine imports nothing of Trio is one of the layer rules: tests/test_layers.py.


# --------------------------------------------------------------------------- a state machine


class EngineMachine(RuleBasedStateMachine):
    """Random frames, sends and passing time: the engine's promises hold in every order."""

    def __init__(self) -> None:
        super().__init__()
        self.conn = engine(owner={"lab@other": "other-pc"})
        self.now = 0.0
        self.conn.start(self.now)
        self.sent: list[str] = []
        self.ended: list[str] = []
        self.deaths = 0
        self.dead: ConnectionDead | None = None
        self.counter = 0

    def _handle(self, event: object) -> None:
        if isinstance(event, TaskEnded | TaskRefused):
            assert event.task_id in self.sent and event.task_id not in self.ended
            self.ended.append(event.task_id)
        if isinstance(event, TaskAccepted):
            assert event.task_id == self.conn.in_flight
        if isinstance(event, ConnectionDead) and event is not self.conn.dead:
            raise AssertionError(f"{event} is not the connection's recorded end")
        if isinstance(event, ConnectionDead) and event is not self.dead:
            self.deaths += 1
            self.dead = event

    @rule(dt=st.floats(0.0, 50.0))
    def time_passes(self, dt: float) -> None:
        deadline = self.conn.next_deadline()
        self.now = min(self.now + dt, deadline) if deadline > self.now else self.now
        while (frame := self.conn.outgoing(self.now)) is not None:
            assert decode_client(frame).client_id == "lab@pc"
        self._handle(self.conn.check_deadlines(self.now))

    @rule(
        kind=st.sampled_from(
            ["heartbeat", "task_end", "error", "device_info_response", "command", "task"]
        ),
        status=st.sampled_from(["ok", "completed", "failed", "error", "continue"]),
        sid=st.sampled_from([None, "lab@other", "lab@nobody", "current"]),
    )
    def frame_arrives(self, kind: str, status: str, sid: str | None) -> None:
        if sid == "current":
            sid = None if self.conn.in_flight is None else f"lab@{self.conn.in_flight}"
        self._handle(self.conn.receive(server(kind, status, session_id=sid), self.now))

    @rule(raw=st.one_of(st.text(max_size=20), st.binary(max_size=5)))
    def junk_arrives(self, raw: str | bytes) -> None:
        self._handle(self.conn.receive(raw, self.now))

    @precondition(lambda self: self.conn.can_send_task())
    @rule(timeout=st.floats(0.1, 100.0))
    def send_task(self, timeout: float) -> None:
        self.counter += 1
        task_id = f"t{self.counter}"
        self.conn.send_task(task_id, "x", "{}", timeout, self.now)
        self.sent.append(task_id)

    @rule()
    def connection_closes(self) -> None:
        self._handle(self.conn.connection_lost(1006, "gone", self.now))

    @invariant()
    def promises(self) -> None:
        conn = self.conn
        assert self.deaths <= 1  # the connection's end is reported once
        assert (conn.phase is Phase.CLOSED) == (conn.dead is not None)
        if conn.in_flight is not None:
            assert conn.phase in (Phase.SERVING, Phase.CLOSED)
            assert conn.in_flight not in self.ended
        if conn.phase is not Phase.CLOSED:
            assert conn.next_deadline() >= self.now or conn.outgoing(self.now) is None


TestEngineMachine = EngineMachine.TestCase
TestEngineMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
