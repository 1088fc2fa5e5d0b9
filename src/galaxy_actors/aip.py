"""The AIP wire codec: the frames a constellation client and an agent server exchange.

Plain values and pure functions, no I/O: for tools that read or forge AIP frames (test
servers, log analysis). A supervisor user never needs them.
"""

from ._public import fixup_module_metadata
from ._sansio._aip import ClientMessage as ClientMessage
from ._sansio._aip import ClientMessageType as ClientMessageType
from ._sansio._aip import ClientType as ClientType
from ._sansio._aip import ServerMessage as ServerMessage
from ._sansio._aip import ServerMessageType as ServerMessageType
from ._sansio._aip import WireStatus as WireStatus
from ._sansio._aip import client_id_for as client_id_for
from ._sansio._aip import decode_client as decode_client
from ._sansio._aip import decode_server as decode_server
from ._sansio._aip import encode_client as encode_client
from ._sansio._aip import encode_server as encode_server
from ._sansio._aip import session_id_for as session_id_for
from ._sansio._errors import ProtocolError as ProtocolError

__all__ = [
    "ClientMessage",
    "ClientMessageType",
    "ClientType",
    "ProtocolError",
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

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
