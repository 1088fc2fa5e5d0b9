"""The AIP wire codec: message classes, JSON encoding and decoding, frame builders.

Rules of this file:
- It is sans-IO: values in, values out. No Trio, no sockets, no clock (timestamps are
  passed in or taken from the wall clock only where a frame needs one).
- It knows the protocol (see ``docs/protocol.md``), not the actors: nothing here decides what
  a frame means for a device, only whether it is a valid frame and what it says.
- Decoding is tolerant where real servers are (explicit ``null`` on every optional field,
  unknown extra fields) and strict where a frame would be meaningless (not JSON, not an
  object, missing or unknown ``type``/``status``, a field of the wrong type): those raise
  `ProtocolError` carrying the raw text.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeAlias, TypeVar, cast

import attrs

from ._errors import ProtocolError

__all__ = [
    "ClientMessage",
    "ClientMessageType",
    "ClientType",
    "ServerMessage",
    "ServerMessageType",
    "WireStatus",
    "client_id_for",
    "decode_client",
    "decode_server",
    "encode_client",
    "encode_server",
    "session_id_for",
]


class ClientMessageType(enum.StrEnum):
    REGISTER = "register"
    HEARTBEAT = "heartbeat"
    TASK = "task"
    TASK_END = "task_end"
    COMMAND_RESULTS = "command_results"
    ERROR = "error"
    DEVICE_INFO_REQUEST = "device_info_request"
    DEVICE_INFO_RESPONSE = "device_info_response"


class ServerMessageType(enum.StrEnum):
    TASK = "task"
    HEARTBEAT = "heartbeat"
    TASK_END = "task_end"
    COMMAND = "command"
    ERROR = "error"
    DEVICE_INFO_REQUEST = "device_info_request"
    DEVICE_INFO_RESPONSE = "device_info_response"


class WireStatus(enum.StrEnum):
    """The ``status`` field, the same enum in both directions."""

    CONTINUE = "continue"
    COMPLETED = "completed"
    FAILED = "failed"
    OK = "ok"
    ERROR = "error"


class ClientType(enum.StrEnum):
    DEVICE = "device"
    CONSTELLATION = "constellation"


# The capabilities a constellation announces in REGISTER, as the reference client does.
CONSTELLATION_CAPABILITIES: Final = (
    "task_distribution",
    "session_management",
    "device_coordination",
)
PROTOCOL_VERSION: Final = "2.0"


def client_id_for(task_name: str, device_id: str) -> str:
    """The identity a constellation carries on every frame for one device."""
    return f"{task_name}@{device_id}"


def session_id_for(task_name: str, task_id: str) -> str:
    """The AIP ``session_id`` that correlates everything about one task."""
    return f"{task_name}@{task_id}"


def utc_timestamp() -> str:
    return datetime.now(UTC).isoformat()


@attrs.frozen
class ClientMessage:
    """A frame sent by a client (us) to an agent server."""

    type: ClientMessageType
    status: WireStatus
    client_type: ClientType | None = None
    session_id: str | None = None
    task_name: str | None = None
    client_id: str | None = None
    target_id: str | None = None
    request: str | None = None
    action_results: Any = None
    timestamp: str | None = None
    request_id: str | None = None
    prev_response_id: str | None = None
    error: str | None = None
    metadata: Mapping[str, Any] | None = None


@attrs.frozen
class ServerMessage:
    """A frame sent by an agent server to a client."""

    type: ServerMessageType
    status: WireStatus
    user_request: str | None = None
    agent_name: str | None = None
    process_name: str | None = None
    root_name: str | None = None
    actions: Any = None
    messages: Any = None
    error: str | None = None
    session_id: str | None = None
    task_name: str | None = None
    timestamp: str | None = None
    response_id: str | None = None
    result: Any = None


_CLIENT_FIELDS: Final = tuple(f.name for f in attrs.fields(ClientMessage))
_SERVER_FIELDS: Final = tuple(f.name for f in attrs.fields(ServerMessage))

# Fields whose value, when present and not null, must be a string / an object.
_CLIENT_STR_FIELDS: Final = frozenset(
    {
        "session_id",
        "task_name",
        "client_id",
        "target_id",
        "request",
        "timestamp",
        "request_id",
        "prev_response_id",
        "error",
    }
)
_SERVER_STR_FIELDS: Final = frozenset(
    {
        "user_request",
        "agent_name",
        "process_name",
        "root_name",
        "error",
        "session_id",
        "task_name",
        "timestamp",
        "response_id",
    }
)


def _load_object(text: str | bytes) -> dict[str, Any]:
    if not isinstance(text, str):
        raise ProtocolError("binary frame: AIP frames are UTF-8 text", text)
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}", text) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"frame is JSON {type(obj).__name__}, not an object", text)
    return obj


_E = TypeVar("_E", bound=enum.StrEnum)


# Members by wire value: a dict lookup per field instead of EnumMeta.__call__, which was a
# measurable part of decoding a frame on the dispatch path (benchmarks, docs/performance.md).
_MEMBERS: Final[dict[type[enum.StrEnum], dict[str, enum.StrEnum]]] = {
    enum_type: {m.value: m for m in enum_type}
    for enum_type in (ServerMessageType, ClientMessageType, WireStatus, ClientType)
}


def _enum_field(obj: Mapping[str, Any], name: str, enum_type: type[_E], raw: str) -> _E:
    value = obj.get(name)
    if value is None:
        raise ProtocolError(f"frame has no {name!r}", raw)
    try:
        return _MEMBERS[enum_type][value]  # type: ignore[return-value]
    except (KeyError, TypeError):  # TypeError: an unhashable value, e.g. a list
        raise ProtocolError(f"unknown {name} {value!r}", raw) from None


def _check_strings(obj: Mapping[str, Any], names: frozenset[str], raw: str) -> None:
    for name in names:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(
                f"field {name!r} must be a string or null, got {type(value).__name__}", raw
            )


_SERVER_TYPES: Final = cast(dict[str, ServerMessageType], _MEMBERS[ServerMessageType])
_STATUSES: Final = cast(dict[str, WireStatus], _MEMBERS[WireStatus])
_STR_OR_NULL: Final = frozenset({str, type(None)})
_SERVER_STR_FIELD_NAMES: Final = tuple(sorted(_SERVER_STR_FIELDS))
# Every field but type and status, in the order of ServerMessage's positional arguments.
assert _SERVER_FIELDS[:2] == ("type", "status")
_SERVER_OTHER_FIELDS: Final = _SERVER_FIELDS[2:]


# A server frame checked but not built into a `ServerMessage`: its type, its status and the
# decoded JSON object, whose string fields are strings or null (`parse_server`).
ServerFields: TypeAlias = tuple[ServerMessageType, WireStatus, dict[str, Any]]


def decode_server(text: str | bytes) -> ServerMessage:
    """Decode one frame from an agent server. Raises `ProtocolError` on an invalid frame."""
    return server_message(parse_server(text))


def server_message(fields: ServerFields) -> ServerMessage:
    """The `ServerMessage` of a frame `parse_server` checked."""
    type_, status, obj = fields
    return ServerMessage(type_, status, *map(obj.get, _SERVER_OTHER_FIELDS))


def parse_server(text: str | bytes) -> ServerFields:
    """`decode_server`'s checks, without building the `ServerMessage`. Raises
    `ProtocolError` on an invalid frame.

    Every frame a device sends passes here, twice per task, and a Session routes the two
    frames of a task from the object itself: building the frozen ServerMessage was a third
    of the cost of decoding (docs/performance.md). The happy path is written for speed
    (exact type checks, dict lookups, the per-field work done by C loops); anything unusual
    takes the general path, which says what is wrong."""
    if type(text) is str:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            obj = None
        if type(obj) is dict:
            get = obj.get
            try:
                type_ = _SERVER_TYPES.get(get("type"))  # type: ignore[arg-type]
                status = _STATUSES.get(get("status"))  # type: ignore[arg-type]
            except TypeError:  # an unhashable value, e.g. a list
                type_ = status = None
            if (
                type_ is not None
                and status is not None
                and _STR_OR_NULL.issuperset(map(type, map(get, _SERVER_STR_FIELD_NAMES)))
            ):
                return type_, status, obj
    return _parse_server_checked(text)


def _parse_server_checked(text: str | bytes) -> ServerFields:
    obj = _load_object(text)
    raw = text if isinstance(text, str) else ""
    type_ = _enum_field(obj, "type", ServerMessageType, raw)
    status = _enum_field(obj, "status", WireStatus, raw)
    _check_strings(obj, _SERVER_STR_FIELDS, raw)
    return type_, status, obj


def decode_client(text: str | bytes) -> ClientMessage:
    """Decode one frame from a client. Used by the simulated agent; same rules."""
    obj = _load_object(text)
    raw = text if isinstance(text, str) else ""
    type_ = _enum_field(obj, "type", ClientMessageType, raw)
    status = _enum_field(obj, "status", WireStatus, raw)
    client_type = obj.get("client_type")
    if client_type is not None:
        client_type = _enum_field(obj, "client_type", ClientType, raw)
    _check_strings(obj, _CLIENT_STR_FIELDS, raw)
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProtocolError("field 'metadata' must be an object or null", raw)
    return ClientMessage(
        type=type_,
        status=status,
        client_type=client_type,
        session_id=obj.get("session_id"),
        task_name=obj.get("task_name"),
        client_id=obj.get("client_id"),
        target_id=obj.get("target_id"),
        request=obj.get("request"),
        action_results=obj.get("action_results"),
        timestamp=obj.get("timestamp"),
        request_id=obj.get("request_id"),
        prev_response_id=obj.get("prev_response_id"),
        error=obj.get("error"),
        metadata=metadata,
    )


def _to_wire(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def encode_client(message: ClientMessage) -> str:
    """Encode a client frame. Unset (``None``) fields are left out, as clients do."""
    obj = {}
    for name in _CLIENT_FIELDS:
        value = getattr(message, name)
        if value is not None:
            obj[name] = _to_wire(value)
    return json.dumps(obj)


def encode_server(message: ServerMessage) -> str:
    """Encode a server frame with every optional field present, ``null`` when unset, as
    real agent servers do."""
    return json.dumps({name: _to_wire(getattr(message, name)) for name in _SERVER_FIELDS})


# --------------------------------------------------------------------------- frame builders
#
# The client frames galaxy_actors sends, built straight to text: they sit on the dispatch hot
# path, and building a dict once is cheaper than building a ClientMessage and walking it.
# The tests check that each one decodes to the ClientMessage it stands for.


class FrameBuilder:
    """Builds the frames one device's connection sends, with its identity on every one."""

    __slots__ = ("_client_id", "_device_id", "_now", "_task_name")

    def __init__(
        self, task_name: str, device_id: str, now: Callable[[], str] = utc_timestamp
    ) -> None:
        self._task_name = task_name
        self._device_id = device_id
        self._client_id = client_id_for(task_name, device_id)
        self._now = now

    def register(self) -> str:
        return json.dumps(
            {
                "type": "register",
                "status": "ok",
                "client_type": "constellation",
                "client_id": self._client_id,
                "target_id": self._device_id,
                "timestamp": self._now(),
                "metadata": {
                    "type": "constellation_client",
                    "task_name": self._task_name,
                    "targeted_device_id": self._device_id,
                    "capabilities": list(CONSTELLATION_CAPABILITIES),
                    "version": PROTOCOL_VERSION,
                },
            }
        )

    def heartbeat(self) -> str:
        return json.dumps(
            {
                "type": "heartbeat",
                "status": "ok",
                "client_type": "constellation",
                "client_id": self._client_id,
                "timestamp": self._now(),
                "metadata": {"device_id": self._device_id},
            }
        )

    def device_info_request(self, request_id: str) -> str:
        return json.dumps(
            {
                "type": "device_info_request",
                "status": "ok",
                "client_type": "constellation",
                "client_id": self._client_id,
                "target_id": self._device_id,
                "request_id": request_id,
                "timestamp": self._now(),
            }
        )

    def task(self, task_id: str, description: str, task_data_json: str) -> str:
        """A TASK frame. ``task_data_json`` is the task data already encoded (it is encoded
        once, at submission, where an unserialisable value can still be refused)."""
        head = json.dumps(
            {
                "type": "task",
                "status": "continue",
                "client_type": "constellation",
                "client_id": self._client_id,
                "target_id": self._device_id,
                "request": description,
                "task_name": f"galaxy/{self._task_name}/{task_id}",
                "session_id": session_id_for(self._task_name, task_id),
                "timestamp": self._now(),
            }
        )
        return f'{head[:-1]}, "metadata": {{"task_data": {task_data_json}}}}}'


def device_info_from(message: ServerMessage) -> dict[str, Any] | None:
    """The device's system info from a DEVICE_INFO_RESPONSE, or None when the server has
    none (``status: "error"``, or a ``result`` that holds only ``error``)."""
    if message.status is WireStatus.ERROR:
        return None
    result = message.result
    if not isinstance(result, dict) or not result:
        return None
    if set(result) == {"error"}:
        return None
    # Interned keys: a fleet stores one such dict per device, with the same dozen keys.
    return {sys.intern(k) if isinstance(k, str) else k: v for k, v in result.items()}
