"""galaxy_actors: keep fleets of remote device agents connected, healthy and busy.

An actor system on Trio: one actor task per device owns its connection, heartbeat and FIFO
mailbox; a supervisor applies the restart policy and routes tasks. Start with
`open_supervisor`, or with `DeviceManager`, the reference-compatible façade.
"""

from ._aip import (
    ClientMessage as ClientMessage,
)
from ._aip import (
    ClientMessageType as ClientMessageType,
)
from ._aip import (
    ClientType as ClientType,
)
from ._aip import (
    ServerMessage as ServerMessage,
)
from ._aip import (
    ServerMessageType as ServerMessageType,
)
from ._aip import (
    WireStatus as WireStatus,
)
from ._aip import (
    decode_client as decode_client,
)
from ._aip import (
    decode_server as decode_server,
)
from ._aip import (
    encode_client as encode_client,
)
from ._aip import (
    encode_server as encode_server,
)
from ._errors import (
    ConfigurationError as ConfigurationError,
)
from ._errors import (
    DeviceDisconnected as DeviceDisconnected,
)
from ._errors import (
    DeviceUnavailable as DeviceUnavailable,
)
from ._errors import (
    DuplicateDevice as DuplicateDevice,
)
from ._errors import (
    DuplicateTaskId as DuplicateTaskId,
)
from ._errors import (
    GalaxyActorsError as GalaxyActorsError,
)
from ._errors import (
    InvalidServerURL as InvalidServerURL,
)
from ._errors import (
    JournalCorrupt as JournalCorrupt,
)
from ._errors import (
    JournalError as JournalError,
)
from ._errors import (
    JournalInUse as JournalInUse,
)
from ._errors import (
    JournalUnavailable as JournalUnavailable,
)
from ._errors import (
    JournalVersion as JournalVersion,
)
from ._errors import (
    OutcomeUnknown as OutcomeUnknown,
)
from ._errors import (
    ProtocolError as ProtocolError,
)
from ._errors import (
    QueueFull as QueueFull,
)
from ._errors import (
    SupervisorClosed as SupervisorClosed,
)
from ._errors import (
    TaskCancelled as TaskCancelled,
)
from ._errors import (
    TaskError as TaskError,
)
from ._errors import (
    TaskRejected as TaskRejected,
)
from ._errors import (
    TaskTimeout as TaskTimeout,
)
from ._errors import (
    UnknownDevice as UnknownDevice,
)
from ._events import (
    BadFrame as BadFrame,
)
from ._events import (
    ConnectionFailed as ConnectionFailed,
)
from ._events import (
    DeviceAdded as DeviceAdded,
)
from ._events import (
    DeviceRemoved as DeviceRemoved,
)
from ._events import (
    Event as Event,
)
from ._events import (
    GaveUp as GaveUp,
)
from ._events import (
    RestartScheduled as RestartScheduled,
)
from ._events import (
    StatusChanged as StatusChanged,
)
from ._events import (
    Subscription as Subscription,
)
from ._events import (
    TaskEnded as TaskEnded,
)
from ._events import (
    TaskQueued as TaskQueued,
)
from ._journal import (
    Journal as Journal,
)
from ._journal_sqlite import (
    SqliteJournal as SqliteJournal,
)
from ._manager import (
    DeviceManager as DeviceManager,
)
from ._memory import (
    MemoryNetwork as MemoryNetwork,
)
from ._memory import (
    MemoryServerConnection as MemoryServerConnection,
)
from ._policy import (
    Decision as Decision,
)
from ._policy import (
    FailureReason as FailureReason,
)
from ._policy import (
    GiveUp as GiveUp,
)
from ._policy import (
    Jitter as Jitter,
)
from ._policy import (
    RandomSource as RandomSource,
)
from ._policy import (
    Restart as Restart,
)
from ._policy import (
    RestartHistory as RestartHistory,
)
from ._policy import (
    RestartPolicy as RestartPolicy,
)
from ._registry import (
    AgentProfile as AgentProfile,
)
from ._registry import (
    DeviceRegistry as DeviceRegistry,
)
from ._registry import (
    DeviceSnapshot as DeviceSnapshot,
)
from ._running import (
    open_supervisor as open_supervisor,
)
from ._status import (
    ALLOWED_TRANSITIONS as ALLOWED_TRANSITIONS,
)
from ._status import (
    DeviceStatus as DeviceStatus,
)
from ._status import (
    InvalidTransition as InvalidTransition,
)
from ._supervisor import (
    Supervisor as Supervisor,
)
from ._task import (
    Delivery as Delivery,
)
from ._task import (
    ExecutionResult as ExecutionResult,
)
from ._task import (
    ResultStatus as ResultStatus,
)
from ._task import (
    TaskHandle as TaskHandle,
)
from ._task import (
    TaskTimings as TaskTimings,
)
from ._transport import (
    ConnectFailed as ConnectFailed,
)
from ._transport import (
    Connector as Connector,
)
from ._transport import (
    Transport as Transport,
)
from ._transport import (
    TransportClosed as TransportClosed,
)
from ._transport import (
    WebSocketConnector as WebSocketConnector,
)
from ._transport import (
    validate_server_url as validate_server_url,
)
from ._workload import (
    DeviceStats as DeviceStats,
)

__version__ = "0.1.0"

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AgentProfile",
    "BadFrame",
    "ClientMessage",
    "ClientMessageType",
    "ClientType",
    "ConfigurationError",
    "ConnectFailed",
    "ConnectionFailed",
    "Connector",
    "Decision",
    "Delivery",
    "DeviceAdded",
    "DeviceDisconnected",
    "DeviceManager",
    "DeviceRegistry",
    "DeviceRemoved",
    "DeviceSnapshot",
    "DeviceStats",
    "DeviceStatus",
    "DeviceUnavailable",
    "DuplicateDevice",
    "DuplicateTaskId",
    "Event",
    "ExecutionResult",
    "FailureReason",
    "GalaxyActorsError",
    "GaveUp",
    "GiveUp",
    "InvalidServerURL",
    "InvalidTransition",
    "Jitter",
    "Journal",
    "JournalCorrupt",
    "JournalError",
    "JournalInUse",
    "JournalUnavailable",
    "JournalVersion",
    "MemoryNetwork",
    "MemoryServerConnection",
    "OutcomeUnknown",
    "ProtocolError",
    "QueueFull",
    "RandomSource",
    "Restart",
    "RestartHistory",
    "RestartPolicy",
    "RestartScheduled",
    "ResultStatus",
    "ServerMessage",
    "ServerMessageType",
    "SqliteJournal",
    "StatusChanged",
    "Subscription",
    "Supervisor",
    "SupervisorClosed",
    "TaskCancelled",
    "TaskEnded",
    "TaskError",
    "TaskHandle",
    "TaskQueued",
    "TaskRejected",
    "TaskTimeout",
    "TaskTimings",
    "Transport",
    "TransportClosed",
    "UnknownDevice",
    "WebSocketConnector",
    "WireStatus",
    "decode_client",
    "decode_server",
    "encode_client",
    "encode_server",
    "open_supervisor",
    "validate_server_url",
]
