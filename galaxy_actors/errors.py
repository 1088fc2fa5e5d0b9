"""Every error galaxy_actors raises, all derived from `GalaxyActorsError`.

The most common ones are also at the top level (``galaxy_actors.TaskTimeout``).
"""

# The hierarchy and the reasons for its shape are documented once, in _errors.py; help()
# on this module shows them.
from . import _errors
from ._errors import AddressFileInUse as AddressFileInUse
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConnectError as ConnectError
from ._errors import DeviceDisconnected as DeviceDisconnected
from ._errors import DeviceUnavailable as DeviceUnavailable
from ._errors import DuplicateDevice as DuplicateDevice
from ._errors import DuplicateTaskId as DuplicateTaskId
from ._errors import GalaxyActorsError as GalaxyActorsError
from ._errors import InvalidServerURL as InvalidServerURL
from ._errors import InvalidTransition as InvalidTransition
from ._errors import JournalCorrupt as JournalCorrupt
from ._errors import JournalError as JournalError
from ._errors import JournalInUse as JournalInUse
from ._errors import JournalUnavailable as JournalUnavailable
from ._errors import JournalVersion as JournalVersion
from ._errors import LocalProtocolError as LocalProtocolError
from ._errors import OutcomeUnknown as OutcomeUnknown
from ._errors import ProtocolError as ProtocolError
from ._errors import QueueFull as QueueFull
from ._errors import StaleAddressFile as StaleAddressFile
from ._errors import SupervisorClosed as SupervisorClosed
from ._errors import TaskCancelled as TaskCancelled
from ._errors import TaskError as TaskError
from ._errors import TaskRejected as TaskRejected
from ._errors import TaskTimeout as TaskTimeout
from ._errors import TransportClosed as TransportClosed
from ._errors import TransportError as TransportError
from ._errors import UnknownDevice as UnknownDevice
from ._errors import UnknownTask as UnknownTask
from ._public import fixup_module_metadata

__all__ = [
    "AddressFileInUse",
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
