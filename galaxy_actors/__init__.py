"""galaxy_actors: keep fleets of remote device agents connected, healthy and busy.

An actor system on Trio: one actor task per device owns its connection, heartbeat and FIFO
mailbox; a supervisor applies the restart policy and routes tasks. Start with
`open_supervisor`, or with `DeviceManager`, the reference-compatible façade.

This top level holds what a user of the supervisor needs. The rest lives in public
submodules: `galaxy_actors.events` (what ``subscribe()`` yields), `galaxy_actors.errors`
(every error), `galaxy_actors.transport` (connectors, the in-memory network),
`galaxy_actors.journal`, `galaxy_actors.aip` (the wire codec), `galaxy_actors.metrics` and
`galaxy_actors.testing`.
"""

from . import aip as aip
from . import errors as errors
from . import events as events
from . import journal as journal
from . import transport as transport
from ._errors import ConfigurationError as ConfigurationError
from ._errors import DeviceDisconnected as DeviceDisconnected
from ._errors import DeviceUnavailable as DeviceUnavailable
from ._errors import DuplicateDevice as DuplicateDevice
from ._errors import DuplicateTaskId as DuplicateTaskId
from ._errors import GalaxyActorsError as GalaxyActorsError
from ._errors import OutcomeUnknown as OutcomeUnknown
from ._errors import QueueFull as QueueFull
from ._errors import SupervisorClosed as SupervisorClosed
from ._errors import TaskCancelled as TaskCancelled
from ._errors import TaskError as TaskError
from ._errors import TaskRejected as TaskRejected
from ._errors import TaskTimeout as TaskTimeout
from ._errors import UnknownDevice as UnknownDevice
from ._errors import UnknownTask as UnknownTask
from ._manager import DeviceManager as DeviceManager
from ._policy import Decision as Decision
from ._policy import GiveUp as GiveUp
from ._policy import Jitter as Jitter
from ._policy import RandomSource as RandomSource
from ._policy import Restart as Restart
from ._policy import RestartHistory as RestartHistory
from ._policy import RestartPolicy as RestartPolicy
from ._public import fixup_module_metadata
from ._reasons import FailureReason as FailureReason
from ._registry import AgentProfile as AgentProfile
from ._registry import DeviceRegistry as DeviceRegistry
from ._registry import DeviceSnapshot as DeviceSnapshot
from ._running import open_supervisor as open_supervisor
from ._settings import Settings as Settings
from ._settings import SettingsOverrides as SettingsOverrides
from ._status import ALLOWED_TRANSITIONS as ALLOWED_TRANSITIONS
from ._status import DeviceStatus as DeviceStatus
from ._supervisor import Supervisor as Supervisor
from ._task import Delivery as Delivery
from ._task import ExecutionResult as ExecutionResult
from ._task import ResultStatus as ResultStatus
from ._task import TaskHandle as TaskHandle
from ._task import TaskTimings as TaskTimings
from ._workload import DeviceStats as DeviceStats

__version__ = "0.1.0"

__all__ = [
    "ALLOWED_TRANSITIONS",
    "AgentProfile",
    "ConfigurationError",
    "Decision",
    "Delivery",
    "DeviceDisconnected",
    "DeviceManager",
    "DeviceRegistry",
    "DeviceSnapshot",
    "DeviceStats",
    "DeviceStatus",
    "DeviceUnavailable",
    "DuplicateDevice",
    "DuplicateTaskId",
    "ExecutionResult",
    "FailureReason",
    "GalaxyActorsError",
    "GiveUp",
    "Jitter",
    "OutcomeUnknown",
    "QueueFull",
    "RandomSource",
    "Restart",
    "RestartHistory",
    "RestartPolicy",
    "ResultStatus",
    "Settings",
    "SettingsOverrides",
    "Supervisor",
    "SupervisorClosed",
    "TaskCancelled",
    "TaskError",
    "TaskHandle",
    "TaskRejected",
    "TaskTimeout",
    "TaskTimings",
    "UnknownDevice",
    "UnknownTask",
    "open_supervisor",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
