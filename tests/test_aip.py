"""The AIP codec: round trips, the wire shape of each direction, invalid frames, and the frames
we send, checked against docs/protocol.md. Sans-IO: no Trio here."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_actors._sansio._aip import (
    ClientMessage,
    ClientMessageType,
    ClientType,
    FrameBuilder,
    ServerMessage,
    ServerMessageType,
    WireStatus,
    decode_client,
    decode_server,
    device_info_from,
    encode_client,
    encode_server,
)
from galaxy_actors._sansio._errors import ProtocolError

# The field lists as docs/protocol.md writes them (not read back from the classes under test).
CLIENT_FIELDS = (
    "type", "status", "client_type", "session_id", "task_name", "client_id", "target_id",
    "request", "action_results", "timestamp", "request_id", "prev_response_id", "error",
    "metadata",
)  # fmt: skip
SERVER_FIELDS = (
    "type", "status", "user_request", "agent_name", "process_name", "root_name", "actions",
    "messages", "error", "session_id", "task_name", "timestamp", "response_id", "result",
)  # fmt: skip
CLIENT_STR_FIELDS = (
    "session_id", "task_name", "client_id", "target_id", "request", "timestamp", "request_id",
    "prev_response_id", "error",
)  # fmt: skip
SERVER_STR_FIELDS = (
    "user_request", "agent_name", "process_name", "root_name", "error", "session_id",
    "task_name", "timestamp", "response_id",
)  # fmt: skip

TS = "2026-11-24T10:00:00+00:00"


# --------------------------------------------------------------------------- enums


def test_enums_carry_the_wire_values_of_aip_md() -> None:
    assert {m.value for m in ClientMessageType} == {
        "register", "heartbeat", "task", "task_end", "command_results", "error",
        "device_info_request", "device_info_response",
    }  # fmt: skip
    assert {m.value for m in ServerMessageType} == {
        "task", "heartbeat", "task_end", "command", "error", "device_info_request",
        "device_info_response",
    }  # fmt: skip
    assert {m.value for m in WireStatus} == {"continue", "completed", "failed", "ok", "error"}
    assert {m.value for m in ClientType} == {"device", "constellation"}


# --------------------------------------------------------------------------- client round trips

CLIENT_EXAMPLES: list[ClientMessage] = [
    ClientMessage(
        ClientMessageType.REGISTER,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@pc",
        target_id="pc",
        timestamp=TS,
        metadata={
            "type": "constellation_client",
            "task_name": "galaxy",
            "targeted_device_id": "pc",
            "capabilities": ["task_distribution", "session_management", "device_coordination"],
            "version": "2.0",
        },
    ),
    ClientMessage(
        ClientMessageType.HEARTBEAT,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@pc",
        timestamp=TS,
        metadata={"device_id": "pc"},
    ),
    ClientMessage(
        ClientMessageType.TASK,
        WireStatus.CONTINUE,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@pc",
        target_id="pc",
        request="Open Excel",
        task_name="galaxy/galaxy/t1",
        session_id="galaxy@t1",
        timestamp=TS,
        metadata={"task_data": {"file": "q3.xlsx", "sheets": [1, 2], "opt": None}},
    ),
    ClientMessage(
        ClientMessageType.TASK_END,
        WireStatus.COMPLETED,
        client_type=ClientType.DEVICE,
        session_id="galaxy@t1",
        client_id="pc",
        timestamp=TS,
    ),
    ClientMessage(
        ClientMessageType.TASK_END,
        WireStatus.FAILED,
        session_id="galaxy@t1",
        error="the device said no",
    ),
    ClientMessage(
        ClientMessageType.COMMAND_RESULTS,
        WireStatus.CONTINUE,
        client_type=ClientType.DEVICE,
        session_id="galaxy@t1",
        action_results=[{"action": "click", "ok": True}, {"action": "type", "ok": False}],
        prev_response_id="r-1",
    ),
    ClientMessage(ClientMessageType.ERROR, WireStatus.ERROR, error="something broke"),
    ClientMessage(
        ClientMessageType.DEVICE_INFO_REQUEST,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@pc",
        target_id="pc",
        request_id="req-1",
        timestamp=TS,
    ),
    ClientMessage(
        ClientMessageType.DEVICE_INFO_RESPONSE,
        WireStatus.OK,
        client_type=ClientType.DEVICE,
        request_id="req-1",
        metadata={"platform": "windows", "cpu_count": 8},
    ),
    # Every field set at once, and the bare minimum.
    ClientMessage(
        ClientMessageType.TASK,
        WireStatus.CONTINUE,
        client_type=ClientType.CONSTELLATION,
        session_id="s",
        task_name="tn",
        client_id="c",
        target_id="t",
        request="r",
        action_results={"a": [1, 2.5, "x", None, True]},
        timestamp=TS,
        request_id="rq",
        prev_response_id="pr",
        error="e",
        metadata={"k": {"nested": ["v"]}},
    ),
    ClientMessage(ClientMessageType.HEARTBEAT, WireStatus.OK),
]


def test_client_examples_cover_every_client_message_type() -> None:
    assert {m.type for m in CLIENT_EXAMPLES} == set(ClientMessageType)


@pytest.mark.parametrize("message", CLIENT_EXAMPLES, ids=lambda m: f"{m.type}-{m.status}")
def test_client_round_trip(message: ClientMessage) -> None:
    assert decode_client(encode_client(message)) == message


@pytest.mark.parametrize("message", CLIENT_EXAMPLES, ids=lambda m: f"{m.type}-{m.status}")
def test_encode_client_omits_unset_fields(message: ClientMessage) -> None:
    obj = json.loads(encode_client(message))
    set_fields = {name for name in CLIENT_FIELDS if getattr(message, name) is not None}
    assert set(obj) == set_fields
    assert obj["type"] == message.type.value
    assert obj["status"] == message.status.value
    assert None not in obj.values()


def test_encode_client_writes_enum_values_as_plain_strings() -> None:
    text = encode_client(CLIENT_EXAMPLES[0])
    obj = json.loads(text)
    assert obj["type"] == "register"
    assert obj["status"] == "ok"
    assert obj["client_type"] == "constellation"


def test_encode_client_of_a_bare_message_has_only_type_and_status() -> None:
    message = ClientMessage(ClientMessageType.HEARTBEAT, WireStatus.OK)
    assert json.loads(encode_client(message)) == {"type": "heartbeat", "status": "ok"}


def test_encode_client_keeps_falsy_values_that_are_not_null() -> None:
    message = ClientMessage(
        ClientMessageType.COMMAND_RESULTS,
        WireStatus.CONTINUE,
        request="",
        action_results=[],
        metadata={},
    )
    obj = json.loads(encode_client(message))
    assert obj == {
        "type": "command_results",
        "status": "continue",
        "request": "",
        "action_results": [],
        "metadata": {},
    }
    assert decode_client(encode_client(message)) == message


# --------------------------------------------------------------------------- server round trips

SERVER_EXAMPLES: list[ServerMessage] = [
    # Registration confirmed; heartbeat answer; task acknowledgement.
    ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK),
    ServerMessage(
        ServerMessageType.HEARTBEAT,
        WireStatus.OK,
        response_id="3f1c3a36-0d6e-4f9f-9c62-6b8f3b1f7a10",
    ),
    ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK, session_id="galaxy@t1"),
    ServerMessage(
        ServerMessageType.TASK_END,
        WireStatus.COMPLETED,
        session_id="galaxy@t1",
        result=[{"request": "Open Excel", "result": "done"}],
        response_id="r-2",
    ),
    ServerMessage(
        ServerMessageType.TASK_END,
        WireStatus.FAILED,
        session_id="galaxy@t1",
        result={"failure": "no excel"},
        error="Task was cancelled because target device disconnected",
    ),
    ServerMessage(ServerMessageType.TASK_END, WireStatus.COMPLETED, result=[]),
    ServerMessage(
        ServerMessageType.ERROR,
        WireStatus.ERROR,
        error="Target device 'pc' is not connected",
    ),
    ServerMessage(
        ServerMessageType.DEVICE_INFO_RESPONSE,
        WireStatus.OK,
        response_id="req-1",
        result={"device_id": "pc", "platform": "windows", "cpu_count": 8, "memory_total_gb": 15.5},
    ),
    ServerMessage(
        ServerMessageType.DEVICE_INFO_RESPONSE,
        WireStatus.OK,
        response_id="req-1",
        result={"error": "Device pc not found or no system info available"},
    ),
    ServerMessage(ServerMessageType.DEVICE_INFO_REQUEST, WireStatus.OK, response_id="x"),
    ServerMessage(
        ServerMessageType.COMMAND,
        WireStatus.CONTINUE,
        actions=[{"function": "click", "arguments": {"x": 1}}],
        messages=["thinking"],
        agent_name="HostAgent",
        process_name="excel.exe",
        root_name="Excel",
        session_id="s",
    ),
    ServerMessage(
        ServerMessageType.TASK,
        WireStatus.CONTINUE,
        user_request="do it",
        task_name="tn",
        timestamp=TS,
    ),
    # Every field set at once.
    ServerMessage(
        ServerMessageType.TASK_END,
        WireStatus.COMPLETED,
        user_request="u",
        agent_name="a",
        process_name="p",
        root_name="r",
        actions={"x": 1},
        messages=[1, "two"],
        error="e",
        session_id="s",
        task_name="t",
        timestamp=TS,
        response_id="rid",
        result={"deep": [{"er": None}]},
    ),
]


def test_server_examples_cover_every_server_message_type() -> None:
    assert {m.type for m in SERVER_EXAMPLES} == set(ServerMessageType)


@pytest.mark.parametrize("message", SERVER_EXAMPLES, ids=lambda m: f"{m.type}-{m.status}")
def test_server_round_trip(message: ServerMessage) -> None:
    assert decode_server(encode_server(message)) == message


@pytest.mark.parametrize("message", SERVER_EXAMPLES, ids=lambda m: f"{m.type}-{m.status}")
def test_encode_server_writes_every_optional_field_as_explicit_null(
    message: ServerMessage,
) -> None:
    obj = json.loads(encode_server(message))
    assert set(obj) == set(SERVER_FIELDS)
    for name in SERVER_FIELDS:
        value = getattr(message, name)
        if value is None:
            assert obj[name] is None, name
    assert obj["type"] == message.type.value
    assert obj["status"] == message.status.value


def test_encode_server_bare_message_is_all_nulls_but_type_and_status() -> None:
    obj = json.loads(encode_server(ServerMessage(ServerMessageType.HEARTBEAT, WireStatus.OK)))
    assert obj == {name: None for name in SERVER_FIELDS} | {"type": "heartbeat", "status": "ok"}


# --------------------------------------------------------------------------- tolerant decoding


def test_decode_server_accepts_a_real_server_frame_with_explicit_nulls() -> None:
    frame = {name: None for name in SERVER_FIELDS}
    frame |= {"type": "task_end", "status": "completed", "session_id": "g@t1", "result": []}
    message = decode_server(json.dumps(frame))
    assert message == ServerMessage(
        ServerMessageType.TASK_END, WireStatus.COMPLETED, session_id="g@t1", result=[]
    )


def test_decode_client_accepts_explicit_nulls() -> None:
    frame = {name: None for name in CLIENT_FIELDS} | {"type": "heartbeat", "status": "ok"}
    assert decode_client(json.dumps(frame)) == ClientMessage(
        ClientMessageType.HEARTBEAT, WireStatus.OK
    )


def test_decode_server_ignores_unknown_fields() -> None:
    text = json.dumps(
        {"type": "heartbeat", "status": "ok", "response_id": "r", "shiny_new_field": [1, {}]}
    )
    assert decode_server(text) == ServerMessage(
        ServerMessageType.HEARTBEAT, WireStatus.OK, response_id="r"
    )


def test_decode_client_ignores_unknown_fields() -> None:
    text = json.dumps(
        {"type": "register", "status": "ok", "client_type": "device", "extra": {"a": 1}}
    )
    assert decode_client(text) == ClientMessage(
        ClientMessageType.REGISTER, WireStatus.OK, client_type=ClientType.DEVICE
    )


def test_decode_client_leaves_absent_client_type_unset() -> None:
    message = decode_client('{"type": "heartbeat", "status": "ok"}')
    assert message.client_type is None


def test_decoded_enums_are_the_enum_members() -> None:
    message = decode_server('{"type": "task_end", "status": "failed"}')
    assert message.type is ServerMessageType.TASK_END
    assert message.status is WireStatus.FAILED
    client = decode_client('{"type": "task", "status": "continue", "client_type": "device"}')
    assert client.type is ClientMessageType.TASK
    assert client.status is WireStatus.CONTINUE
    assert client.client_type is ClientType.DEVICE


# --------------------------------------------------------------------------- invalid frames

INVALID_FOR_BOTH = {
    "not-json": "this is not json",
    "truncated-json": '{"type": "heartbeat", "status": ',
    "empty": "",
    "json-array": '[{"type": "heartbeat", "status": "ok"}]',
    "json-number": "42",
    "json-string": '"heartbeat"',
    "json-null": "null",
    "json-true": "true",
    "missing-type": '{"status": "ok"}',
    "null-type": '{"type": null, "status": "ok"}',
    "missing-status": '{"type": "heartbeat"}',
    "null-status": '{"type": "heartbeat", "status": null}',
    "unknown-type": '{"type": "gossip", "status": "ok"}',
    "unknown-status": '{"type": "heartbeat", "status": "fine"}',
    "status-not-a-string": '{"type": "heartbeat", "status": 1}',
    "type-not-a-string": '{"type": ["heartbeat"], "status": "ok"}',
    "type-wrong-case": '{"type": "HEARTBEAT", "status": "ok"}',
    "huge-int": '{"type": "heartbeat", "status": "ok", "x": ' + "1" * 5000 + "}",
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("text", INVALID_FOR_BOTH.values(), ids=INVALID_FOR_BOTH.keys())
def test_decode_server_rejects_invalid_frame_with_raw_text(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_server(text)
    assert info.value.raw == text


@pytest.mark.parametrize("text", INVALID_FOR_BOTH.values(), ids=INVALID_FOR_BOTH.keys())
def test_decode_client_rejects_invalid_frame_with_raw_text(text: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode_client(text)
    assert info.value.raw == text


def test_decode_server_rejects_client_only_type() -> None:
    text = '{"type": "register", "status": "ok"}'
    with pytest.raises(ProtocolError) as info:
        decode_server(text)
    assert info.value.raw == text


def test_decode_client_rejects_server_only_type() -> None:
    text = '{"type": "command", "status": "ok"}'
    with pytest.raises(ProtocolError) as info:
        decode_client(text)
    assert info.value.raw == text


@pytest.mark.parametrize("client_type", ["server", "Constellation", 5, True, [], {}])
def test_decode_client_rejects_unknown_client_type(client_type: Any) -> None:
    text = json.dumps({"type": "heartbeat", "status": "ok", "client_type": client_type})
    with pytest.raises(ProtocolError) as info:
        decode_client(text)
    assert info.value.raw == text


@pytest.mark.parametrize("bad", [5, 1.5, True, [], {"a": 1}])
@pytest.mark.parametrize("field", SERVER_STR_FIELDS)
def test_decode_server_rejects_string_field_of_wrong_type(field: str, bad: Any) -> None:
    text = json.dumps({"type": "task_end", "status": "completed", field: bad})
    with pytest.raises(ProtocolError) as info:
        decode_server(text)
    assert info.value.raw == text
    assert field in str(info.value)


@pytest.mark.parametrize("bad", [5, 1.5, True, [], {"a": 1}])
@pytest.mark.parametrize("field", CLIENT_STR_FIELDS)
def test_decode_client_rejects_string_field_of_wrong_type(field: str, bad: Any) -> None:
    text = json.dumps({"type": "task", "status": "continue", field: bad})
    with pytest.raises(ProtocolError) as info:
        decode_client(text)
    assert info.value.raw == text
    assert field in str(info.value)


@pytest.mark.parametrize("metadata", [[], "text", 5, True, [{"task_data": {}}]])
def test_decode_client_rejects_metadata_that_is_not_an_object(metadata: Any) -> None:
    text = json.dumps({"type": "task", "status": "continue", "metadata": metadata})
    with pytest.raises(ProtocolError) as info:
        decode_client(text)
    assert info.value.raw == text


@pytest.mark.parametrize(
    "data",
    [b'{"type": "heartbeat", "status": "ok"}', b"", b"\xff\xfe"],
    ids=["valid-json-bytes", "empty-bytes", "not-utf8"],
)
@pytest.mark.parametrize("decode", [decode_server, decode_client], ids=["server", "client"])
def test_binary_frames_are_protocol_errors_carrying_the_bytes(decode: Any, data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    assert info.value.raw == data


def test_server_fields_of_any_json_type_are_kept_as_received() -> None:
    # result, actions and messages are "any JSON": no type check applies to them.
    for value in [1, 2.5, "s", True, [1, [2]], {"a": {"b": None}}]:
        text = json.dumps(
            {"type": "task_end", "status": "ok", "result": value, "actions": value,
             "messages": value}
        )  # fmt: skip
        message = decode_server(text)
        assert message.result == value
        assert message.actions == value
        assert message.messages == value


# --------------------------------------------------------------------------- frame builders


def fixed_now() -> str:
    return TS


IDENTITY = {"client_type": "constellation", "client_id": "galaxy@office_pc"}


def builder() -> FrameBuilder:
    return FrameBuilder("galaxy", "office_pc", now=fixed_now)


def test_register_frame_is_exactly_as_aip_md_shows() -> None:
    text = builder().register()
    assert json.loads(text) == {
        "type": "register",
        "status": "ok",
        **IDENTITY,
        "target_id": "office_pc",
        "timestamp": TS,
        "metadata": {
            "type": "constellation_client",
            "task_name": "galaxy",
            "targeted_device_id": "office_pc",
            "capabilities": ["task_distribution", "session_management", "device_coordination"],
            "version": "2.0",
        },
    }
    assert decode_client(text) == ClientMessage(
        ClientMessageType.REGISTER,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@office_pc",
        target_id="office_pc",
        timestamp=TS,
        metadata={
            "type": "constellation_client",
            "task_name": "galaxy",
            "targeted_device_id": "office_pc",
            "capabilities": ["task_distribution", "session_management", "device_coordination"],
            "version": "2.0",
        },
    )


def test_heartbeat_frame_is_exactly_as_aip_md_shows() -> None:
    text = builder().heartbeat()
    assert json.loads(text) == {
        "type": "heartbeat",
        "status": "ok",
        **IDENTITY,
        "timestamp": TS,
        "metadata": {"device_id": "office_pc"},
    }
    assert decode_client(text) == ClientMessage(
        ClientMessageType.HEARTBEAT,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@office_pc",
        timestamp=TS,
        metadata={"device_id": "office_pc"},
    )


def test_device_info_request_frame_is_exactly_as_aip_md_shows() -> None:
    text = builder().device_info_request("req-42")
    assert json.loads(text) == {
        "type": "device_info_request",
        "status": "ok",
        **IDENTITY,
        "target_id": "office_pc",
        "request_id": "req-42",
        "timestamp": TS,
    }
    assert decode_client(text) == ClientMessage(
        ClientMessageType.DEVICE_INFO_REQUEST,
        WireStatus.OK,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@office_pc",
        target_id="office_pc",
        request_id="req-42",
        timestamp=TS,
    )


TASK_DATA_EXAMPLES = [
    {},
    {"file": "q3.xlsx", "sheets": [1, 2], "opts": {"ro": True, "pw": None}},
    {"text": 'quotes " and \\ backslashes }} and {{ braces', "unicode": "héllo ✓ 漢字"},
    [1, "two", None],
    None,
    "just a string",
]


@pytest.mark.parametrize("task_data", TASK_DATA_EXAMPLES)
def test_task_frame_is_exactly_as_aip_md_shows(task_data: Any) -> None:
    text = builder().task("t-7", "Open Excel and sum column B", json.dumps(task_data))
    assert json.loads(text) == {
        "type": "task",
        "status": "continue",
        **IDENTITY,
        "target_id": "office_pc",
        "request": "Open Excel and sum column B",
        "task_name": "galaxy/galaxy/t-7",
        "session_id": "galaxy@t-7",
        "timestamp": TS,
        "metadata": {"task_data": task_data},
    }
    assert decode_client(text) == ClientMessage(
        ClientMessageType.TASK,
        WireStatus.CONTINUE,
        client_type=ClientType.CONSTELLATION,
        client_id="galaxy@office_pc",
        target_id="office_pc",
        request="Open Excel and sum column B",
        task_name="galaxy/galaxy/t-7",
        session_id="galaxy@t-7",
        timestamp=TS,
        metadata={"task_data": task_data},
    )


def test_task_frame_survives_awkward_description_and_ids() -> None:
    description = 'say "hi" }\n\t\\ ✓'
    text = FrameBuilder("my task", "dev/1", now=fixed_now).task("id with space", description, "{}")
    message = decode_client(text)
    assert message.request == description
    assert message.client_id == "my task@dev/1"
    assert message.target_id == "dev/1"
    assert message.session_id == "my task@id with space"
    assert message.task_name == "galaxy/my task/id with space"
    assert message.metadata == {"task_data": {}}


def test_every_built_frame_carries_the_constellation_identity() -> None:
    b = FrameBuilder("fleet", "lab_mac", now=fixed_now)
    frames = [b.register(), b.heartbeat(), b.device_info_request("r"), b.task("t", "d", "{}")]
    for text in frames:
        message = decode_client(text)
        assert message.client_type is ClientType.CONSTELLATION
        assert message.client_id == "fleet@lab_mac"


@pytest.mark.parametrize("kind", ["register", "heartbeat", "device_info_request", "task"])
def test_built_frames_default_to_an_iso_8601_utc_timestamp_of_now(kind: str) -> None:
    b = FrameBuilder("galaxy", "pc")
    before = datetime.now(UTC)
    if kind == "device_info_request":
        text = b.device_info_request("r")
    elif kind == "task":
        text = b.task("t", "d", "{}")
    else:
        text = getattr(b, kind)()
    after = datetime.now(UTC)
    timestamp = decode_client(text).timestamp
    assert timestamp is not None
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.tzinfo is not None
    assert parsed.utcoffset() == timedelta(0)
    assert before <= parsed <= after


def test_builder_asks_the_clock_for_each_frame() -> None:
    ticks = iter(["2026-01-01T00:00:00+00:00", "2026-01-01T00:00:05+00:00"])
    b = FrameBuilder("galaxy", "pc", now=lambda: next(ticks))
    assert decode_client(b.heartbeat()).timestamp == "2026-01-01T00:00:00+00:00"
    assert decode_client(b.heartbeat()).timestamp == "2026-01-01T00:00:05+00:00"


# --------------------------------------------------------------------------- device_info_from


def info_response(result: Any, status: WireStatus = WireStatus.OK) -> ServerMessage:
    return decode_server(
        encode_server(
            ServerMessage(
                ServerMessageType.DEVICE_INFO_RESPONSE, status, response_id="r", result=result
            )
        )
    )


def test_device_info_from_returns_the_info_as_received() -> None:
    info = {
        "device_id": "pc",
        "platform": "windows",
        "os_version": "10.0.22631",
        "cpu_count": 8,
        "memory_total_gb": 31.7,
        "hostname": "PC",
        "ip_address": "10.0.0.2",
        "supported_features": ["gui", "excel"],
        "platform_type": "computer",
        "schema_version": "1.0",
        "custom_metadata": {"room": 4},
    }
    assert device_info_from(info_response(info)) == info


def test_device_info_from_not_found_shape_is_no_info() -> None:
    message = info_response({"error": "Device pc not found or no system info available"})
    assert device_info_from(message) is None


def test_device_info_from_status_error_is_no_info() -> None:
    assert device_info_from(info_response({"platform": "linux"}, WireStatus.ERROR)) is None
    assert device_info_from(info_response(None, WireStatus.ERROR)) is None


@pytest.mark.parametrize("result", [None, [], ["platform", "linux"], "linux", 5, True, {}])
def test_device_info_from_non_dict_or_empty_result_is_no_info(result: Any) -> None:
    assert device_info_from(info_response(result)) is None


def test_device_info_from_keeps_info_that_merely_has_an_error_key() -> None:
    # Only a result holding *only* "error" means "no info".
    info = {"platform": "linux", "error": "sensor read failed"}
    assert device_info_from(info_response(info)) == info


# --------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
optional_text = st.none() | st.text()

server_messages = st.builds(
    ServerMessage,
    type=st.sampled_from(ServerMessageType),
    status=st.sampled_from(WireStatus),
    user_request=optional_text,
    agent_name=optional_text,
    process_name=optional_text,
    root_name=optional_text,
    actions=json_values,
    messages=json_values,
    error=optional_text,
    session_id=optional_text,
    task_name=optional_text,
    timestamp=optional_text,
    response_id=optional_text,
    result=json_values,
)

client_messages = st.builds(
    ClientMessage,
    type=st.sampled_from(ClientMessageType),
    status=st.sampled_from(WireStatus),
    client_type=st.none() | st.sampled_from(ClientType),
    session_id=optional_text,
    task_name=optional_text,
    client_id=optional_text,
    target_id=optional_text,
    request=optional_text,
    action_results=json_values,
    timestamp=optional_text,
    request_id=optional_text,
    prev_response_id=optional_text,
    error=optional_text,
    metadata=st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=4),
)


@settings(max_examples=200)
@given(server_messages)
def test_property_server_round_trip(message: ServerMessage) -> None:
    text = encode_server(message)
    assert set(json.loads(text)) == set(SERVER_FIELDS)
    assert decode_server(text) == message


@settings(max_examples=200)
@given(client_messages)
def test_property_client_round_trip(message: ClientMessage) -> None:
    text = encode_client(message)
    assert None not in json.loads(text).values()
    assert decode_client(text) == message


# Texts that reach past the JSON parser: objects with plausible and implausible fields.
frame_like_objects = st.dictionaries(
    st.sampled_from([*SERVER_FIELDS, *CLIENT_FIELDS, "extra"]),
    st.sampled_from([m.value for m in ServerMessageType])
    | st.sampled_from([m.value for m in WireStatus])
    | json_values,
    max_size=8,
).map(json.dumps)
arbitrary_frames = st.text() | frame_like_objects | json_values.map(json.dumps)


@settings(max_examples=300)
@given(arbitrary_frames)
def test_property_decode_server_returns_a_message_or_raises_protocol_error(text: str) -> None:
    try:
        message = decode_server(text)
    except ProtocolError as exc:
        assert exc.raw == text
    else:
        assert isinstance(message, ServerMessage)
        assert isinstance(message.type, ServerMessageType)
        assert isinstance(message.status, WireStatus)
        for name in SERVER_STR_FIELDS:
            assert getattr(message, name) is None or isinstance(getattr(message, name), str)


@settings(max_examples=200)
@given(arbitrary_frames)
def test_property_decode_client_returns_a_message_or_raises_protocol_error(text: str) -> None:
    try:
        message = decode_client(text)
    except ProtocolError as exc:
        assert exc.raw == text
    else:
        assert isinstance(message, ClientMessage)
        assert message.metadata is None or isinstance(message.metadata, dict)
