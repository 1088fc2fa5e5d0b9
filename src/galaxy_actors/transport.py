"""Connections to device agent servers: what a supervisor's ``connector=`` takes.

`WebSocketConnector` is the default (real ws:// and wss:// connections). `MemoryNetwork`
serves agents in memory for tests in virtual time; its ``connector()`` is a
`MemoryConnector`. To plug in another transport, implement `Connector` and `Transport`, and
raise `ConnectError` and `TransportClosed` as their docstrings say.
"""

from ._public import fixup_module_metadata
from ._sansio._errors import ConnectError as ConnectError
from ._sansio._errors import TransportClosed as TransportClosed
from ._sansio._errors import TransportError as TransportError
from ._transports._memory import MemoryConnector as MemoryConnector
from ._transports._memory import MemoryNetwork as MemoryNetwork
from ._transports._memory import MemoryServerConnection as MemoryServerConnection
from ._transports._transport import Connector as Connector
from ._transports._transport import FrameSafeTransport as FrameSafeTransport
from ._transports._transport import Transport as Transport
from ._transports._transport import WebSocketConnector as WebSocketConnector
from ._transports._transport import validate_server_url as validate_server_url

__all__ = [
    "ConnectError",
    "Connector",
    "FrameSafeTransport",
    "MemoryConnector",
    "MemoryNetwork",
    "MemoryServerConnection",
    "Transport",
    "TransportClosed",
    "TransportError",
    "WebSocketConnector",
    "validate_server_url",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
