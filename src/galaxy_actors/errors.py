"""Every error galaxy_actors raises, all derived from `GalaxyActorsError`.

The most common ones are also at the top level (``galaxy_actors.TaskTimeout``).
"""

# The hierarchy and the reasons for its shape are documented once, in _sansio/_errors.py; help()
# on this module shows them.
from ._public import fixup_module_metadata
from ._sansio import _errors
from ._sansio._errors import AddressFileInUse as AddressFileInUse
from ._sansio._errors import ClusterUnavailable as ClusterUnavailable
from ._sansio._errors import ConfigurationError as ConfigurationError
from ._sansio._errors import ConnectError as ConnectError
from ._sansio._errors import DeviceDisconnected as DeviceDisconnected
from ._sansio._errors import DeviceUnavailable as DeviceUnavailable
from ._sansio._errors import DuplicateDevice as DuplicateDevice
from ._sansio._errors import DuplicateTaskId as DuplicateTaskId
from ._sansio._errors import GalaxyActorsError as GalaxyActorsError
from ._sansio._errors import InvalidServerURL as InvalidServerURL
from ._sansio._errors import InvalidTransition as InvalidTransition
from ._sansio._errors import JournalCorrupt as JournalCorrupt
from ._sansio._errors import JournalError as JournalError
from ._sansio._errors import JournalInUse as JournalInUse
from ._sansio._errors import JournalUnavailable as JournalUnavailable
from ._sansio._errors import JournalVersion as JournalVersion
from ._sansio._errors import LocalProtocolError as LocalProtocolError
from ._sansio._errors import OutcomeUnknown as OutcomeUnknown
from ._sansio._errors import ProtocolError as ProtocolError
from ._sansio._errors import QueueFull as QueueFull
from ._sansio._errors import StaleAddressFile as StaleAddressFile
from ._sansio._errors import SupervisorClosed as SupervisorClosed
from ._sansio._errors import TaskCancelled as TaskCancelled
from ._sansio._errors import TaskError as TaskError
from ._sansio._errors import TaskRejected as TaskRejected
from ._sansio._errors import TaskTimeout as TaskTimeout
from ._sansio._errors import TransportClosed as TransportClosed
from ._sansio._errors import TransportError as TransportError
from ._sansio._errors import UnknownDevice as UnknownDevice
from ._sansio._errors import UnknownTask as UnknownTask

__all__ = [
    "AddressFileInUse",
    "ClusterUnavailable",
    "ConfigurationError",
    "ConnectError",
    "DeviceDisconnected",
    "DeviceUnavailable",
    "DuplicateDevice",
    "DuplicateTaskId",
    "GalaxyActorsError",
    "InvalidServerURL",
    "InvalidTransition",
    "JournalCorrupt",
    "JournalError",
    "JournalInUse",
    "JournalUnavailable",
    "JournalVersion",
    "LocalProtocolError",
    "OutcomeUnknown",
    "ProtocolError",
    "QueueFull",
    "StaleAddressFile",
    "SupervisorClosed",
    "TaskCancelled",
    "TaskError",
    "TaskRejected",
    "TaskTimeout",
    "TransportClosed",
    "TransportError",
    "UnknownDevice",
    "UnknownTask",
]

__doc__ = _errors.__doc__
fixup_module_metadata(__name__, globals(), __all__)
del _errors, fixup_module_metadata
