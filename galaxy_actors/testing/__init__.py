"""What users need to test their own code against galaxy_actors.

`SimulatedAgent` is an AIP agent server with scripted faults, served on loopback or on an
in-memory `MemoryNetwork` for virtual-time tests.
"""

from .._transport import MemoryNetwork as MemoryNetwork
from ._agent import ReceivedFrame as ReceivedFrame
from ._agent import SimulatedAgent as SimulatedAgent
from ._agent import default_device_info as default_device_info

__all__ = ["MemoryNetwork", "ReceivedFrame", "SimulatedAgent", "default_device_info"]
