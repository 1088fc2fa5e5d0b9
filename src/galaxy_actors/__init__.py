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
from ._actors._manager import DeviceManager as DeviceManager
from ._actors._registry import AgentProfile as AgentProfile
from ._actors._registry import DeviceRegistry as DeviceRegistry
from ._actors._registry import DeviceSnapshot as DeviceSnapshot
from ._actors._running import open_supervisor as open_supervisor
from ._actors._settings import Settings as Settings
from ._actors._settings import SettingsOverrides as SettingsOverrides
from ._actors._supervisor import Supervisor as Supervisor
from ._actors._task import Delivery as Delivery
from ._actors._task import ExecutionResult as ExecutionResult
from ._actors._task import ResultStatus as ResultStatus
from ._actors._task import TaskHandle as TaskHandle
from ._actors._task import TaskTimings as TaskTimings
from ._actors._workload import DeviceStats as DeviceStats
from ._public import fixup_module_metadata
from ._sansio._errors import ConfigurationError as ConfigurationError
from ._sansio._errors import DeviceDisconnected as DeviceDisconnected
from ._sansio._errors import DeviceUnavailable as DeviceUnavailable
from ._sansio._errors import DuplicateDevice as DuplicateDevice
from ._sansio._errors import DuplicateTaskId as DuplicateTaskId
from ._sansio._errors import GalaxyActorsError as GalaxyActorsError
from ._sansio._errors import OutcomeUnknown as OutcomeUnknown
from ._sansio._errors import QueueFull as QueueFull
from ._sansio._errors import SupervisorClosed as SupervisorClosed
from ._sansio._errors import TaskCancelled as TaskCancelled
from ._sansio._errors import TaskError as TaskError
from ._sansio._errors import TaskRejected as TaskRejected
from ._sansio._errors import TaskTimeout as TaskTimeout
from ._sansio._errors import UnknownDevice as UnknownDevice
from ._sansio._errors import UnknownTask as UnknownTask
from ._sansio._policy import Decision as Decision
from ._sansio._policy import GiveUp as GiveUp
from ._sansio._policy import Jitter as Jitter
from ._sansio._policy import RandomSource as RandomSource
from ._sansio._policy import Restart as Restart
from ._sansio._policy import RestartHistory as RestartHistory
from ._sansio._policy import RestartPolicy as RestartPolicy
from ._sansio._reasons import FailureReason as FailureReason
from ._sansio._status import ALLOWED_TRANSITIONS as ALLOWED_TRANSITIONS
from ._sansio._status import DeviceStatus as DeviceStatus

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
