"""A tiny HTTP/1.1 responder on Trio, for the supervisor process's probes and metrics.

It answers ``GET`` and ``HEAD`` of a path with whatever ``respond(path)`` makes, one request
per connection (``Connection: close``), which is all that a Prometheus scraper, a load
balancer's health check or ``curl`` needs. It is not a web server: no keep-alive, no request
bodies, no chunking. prometheus-client's own server runs in a thread, reading the
supervisor's state from outside Trio's thread; this one answers on Trio's thread, between
two steps of the actors, so what it reads is never half-changed.

Every connection has ``request_timeout`` seconds to send its request and take the answer:
a client that connects and sends nothing holds its socket that long, no longer.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import Final

import attrs
import trio

__all__ = ["Response", "open_http_listeners", "serve_http"]

logger = logging.getLogger("galaxy_actors.process")

_MAX_HEAD: Final = 8192
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


async def open_http_listeners(host: str, port: int) -> tuple[list[trio.SocketListener], str]:
    """Bind ``host:port`` (port 0: a free one); return the listeners and the base URL with
    the port actually bound. Raises OSError."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return listeners, f"http://{shown}:{bound[1]}"


async def serve_http(
    listeners: list[trio.SocketListener],
    respond: Callable[[str], Response],
    *,
    request_timeout: float = 10.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on ``listeners`` until cancelled; ``respond(path)`` makes each
    answer (the path without its query string)."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(request_timeout):
                try:
                    await _answer(stream, respond)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the client went away: nothing to answer
                except OSError as exc:
                    if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                        raise

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handle, listeners)
        task_status.started()


async def _answer(stream: trio.SocketStream, respond: Callable[[str], Response]) -> None:
    head = bytearray()
    while b"\r\n\r\n" not in head and b"\n\n" not in head:
        if len(head) > _MAX_HEAD:
            await _send(stream, Response(431, b"request head too large\n"), head_only=False)
            return
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        head += chunk
    request_line = bytes(head).split(b"\n", 1)[0].decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        await _send(stream, Response(400, b"bad request line\n"), head_only=False)
        return
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        await _send(stream, Response(405, b"GET or HEAD only\n"), head_only=False)
        return
    path = target.split("?", 1)[0]
    try:
        response = respond(path)
    except Exception:
        # A bug in a probe or a collector must not end the server with it: say so and
        # keep answering the next scrape.
        logger.exception("HTTP %s %s failed", method, path)
        response = Response(500, b"internal error; see the log\n")
    await _send(stream, response, head_only=method == "HEAD")


async def _send(stream: trio.SocketStream, response: Response, *, head_only: bool) -> None:
    reason = _REASONS.get(response.status, "Internal Server Error")
    head = (
        f"HTTP/1.1 {response.status} {reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    await stream.send_all(head if head_only else head + response.body)
