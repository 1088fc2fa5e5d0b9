"""What both WebSocket clients share (`WebSocketTransport` over trio-websocket, and
`DirectTransport` over wsproto): close codes and the words a close is reported with, the
TLS handshake on a stream we own, and the words a failed opening is reported with.

Rules of this file:
- One wording for one ending, whichever client saw it: a user's logs and a test's
  assertions must not depend on the client chosen.
- No WebSocket library here: trio's streams and values only.
"""

from __future__ import annotations

import ssl

import trio

from .._sansio._errors import ConnectError, TransportClosed
from .._sansio._policy import FailureReason
from ._tls import describe_tls_error

__all__ = [
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INVALID_DATA",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "DEFAULT_MAX_FRAME_SIZE",
    "close_name",
    "closed_error",
    "opening_failure",
    "oversize_text",
    "start_tls",
    "tls_failure",
]

# Close codes of RFC 6455 that mean something to a session.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_ABNORMAL = 1006  # never sent: what a peer sees when the socket dies without a close
CLOSE_INVALID_DATA = 1007  # e.g. a text frame that is not UTF-8
CLOSE_MESSAGE_TOO_BIG = 1009
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024

_NAMES = {
    1000: "NORMAL_CLOSURE",
    1001: "GOING_AWAY",
    1002: "PROTOCOL_ERROR",
    1003: "UNSUPPORTED_DATA",
    1005: "NO_STATUS_RCVD",
    1006: "ABNORMAL_CLOSURE",
    1007: "INVALID_FRAME_PAYLOAD_DATA",
    1008: "POLICY_VIOLATION",
    1009: "MESSAGE_TOO_BIG",
    1010: "MANDATORY_EXT",
    1011: "INTERNAL_ERROR",
    1012: "SERVICE_RESTART",
    1013: "TRY_AGAIN_LATER",
    1015: "TLS_HANDSHAKE_FAILED",
}


def close_name(code: int) -> str:
    """RFC 6455's name for ``code`` (the names trio-websocket reports), or its range's."""
    name = _NAMES.get(code)
    if name is not None:
        return name
    if 1000 <= code <= 2999:
        return "RFC_RESERVED"
    if 3000 <= code <= 3999:
        return "IANA_RESERVED"
    if 4000 <= code <= 4999:
        return "PRIVATE_RESERVED"
    return "INVALID_CODE"


def closed_error(code: int, text: str | None, by_peer: bool | None) -> TransportClosed:
    """The `TransportClosed` for a close with ``code`` (and its reason ``text``), sent by
    the peer (True), by us (False), or by nobody: the socket died (None)."""
    who = {True: "by the peer", False: "by us", None: "without a close frame"}[by_peer]
    detail = f"code {code} {close_name(code)}" + (f": {text}" if text else "")
    return TransportClosed(f"connection closed {who} ({detail})", code, by_peer=by_peer)


def oversize_text(limit: int) -> str:
    """The reason sent with our 1009 (trio-websocket's words, so both clients say the same)."""
    return f"Exceeded maximum message size: {limit} bytes"


async def start_tls(
    tcp: trio.SocketStream, context: ssl.SSLContext, host: str
) -> trio.SSLStream[trio.SocketStream]:
    """The TLS handshake, done before any WebSocket byte: a failure is reported at once,
    in OpenSSL's words, not as a handshake that never ended."""
    tls = trio.SSLStream(tcp, context, server_hostname=host, https_compatible=True)
    try:
        await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        raise tls_failure(exc, "during the TLS handshake") from None
    return tls


def tls_failure(exc: trio.BrokenResourceError, when: str) -> ConnectError:
    """A broken stream while opening: a TLS error by name (``tls_failed``), else the peer
    closed or broke the connection (``handshake_failed``)."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError) and not isinstance(
        cause, ssl.SSLEOFError | ssl.SSLZeroReturnError
    ):
        return ConnectError(describe_tls_error(cause), reason=FailureReason.TLS_FAILED)
    how = "closed" if isinstance(cause, ssl.SSLError) or cause is None else f"broke ({cause})"
    return ConnectError(
        f"the peer {how} the connection {when}", reason=FailureReason.HANDSHAKE_FAILED
    )


def opening_failure(status_line: str, secure: bool) -> ConnectError:
    """The peer closed the connection before its answer to the opening handshake was
    complete; ``status_line`` is the first line of what it answered ("" if nothing)."""
    status = _status_of(status_line)
    if status is not None and status != 101:
        # Refused in words, then closed before the whole answer could be read.
        return ConnectError.rejected(status)
    detail = "the peer closed the connection during the opening handshake"
    if secure and not status_line:
        # What a server that requires a client certificate does under TLS 1.3 when it
        # gets none: the client's handshake has already succeeded by then.
        detail += " (after TLS; does the server require a client certificate?)"
    return ConnectError(detail, reason=FailureReason.HANDSHAKE_FAILED)


def _status_of(line: str) -> int | None:
    version, _, rest = line.partition(" ")
    code = rest[:3]
    if version.startswith("HTTP/") and code.isdigit():
        return int(code)
    return None
