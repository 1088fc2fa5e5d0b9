"""The client side of the control endpoint: `ControlClient`, and the address file.

`open_control_client` connects with the library's own `WebSocketConnector` (bounded
connect and close, the socket always released). `run` writes the address file once its
endpoint listens; ``submit``, ``status`` and ``watch`` read it to find the endpoint (and the
token, when `run` generated one). The protocol is described in ``_control.py`` and
``docs/process.md``.

An address file names the process that wrote it (``pid``). One whose process is gone (it
was killed, or the machine restarted) is stale: clients say so rather than fail to connect
to a port that may belong to someone else by now, and `run` replaces it. One whose process
still runs belongs to another supervisor: `run` refuses to take it over.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .._sansio._errors import AddressFileInUse, GalaxyActorsError, StaleAddressFile, TransportClosed
from .._transports._transport import Transport, WebSocketConnector

__all__ = [
    "AddressFileInUse",
    "ControlClient",
    "EventStream",
    "StaleAddressFile",
    "claim_address_file",
    "open_control_client",
    "pid_running",
    "read_address_file",
    "write_address_file",
]


def pid_running(pid: int) -> bool:
    """True if a process ``pid`` exists (or we cannot tell: then it may)."""
    if os.name == "nt":
        # os.kill(pid, 0) is not a probe there: signal 0 is CTRL_C_EVENT.
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


class ControlClient:
    """One connection to a control endpoint. Make one with `open_control_client`."""

    def __init__(self, transport: Transport, token: str) -> None:
        self._transport = transport
        self._token = token

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply (``reply["ok"]`` says if it was served).
        Raises `TransportClosed` if the connection closes first."""
        await self._transport.send(json.dumps({"token": self._token, "op": op, **fields}))
        return await self._receive()

    async def _receive(self) -> dict[str, Any]:
        frame = await self._transport.receive()
        reply: dict[str, Any] = json.loads(frame)
        return reply

    async def submit(self, description: str, **fields: Any) -> dict[str, Any]:
        """Submit a task (``device=`` or ``capabilities=``, ``data=``, ``timeout=``,
        ``priority=``, ``delivery=``, ``task_id=``) and wait for its outcome."""
        return await self.request("submit", description=description, **fields)

    async def devices(self) -> list[dict[str, Any]]:
        """The ``devices`` op's rows; raises `GalaxyActorsError` on an error reply."""
        reply = await self.request("devices")
        if not reply["ok"]:
            raise GalaxyActorsError(f"devices: {reply['error']['message']}")
        rows: list[dict[str, Any]] = reply["devices"]
        return rows

    async def watch(self) -> EventStream:
        """Subscribe, and return the events from then on; the iteration ends when the
        server ends the stream (the connection is then closed).

        >>> events = await client.watch()          # doctest: +SKIP
        >>> async for event in events: ...
        """
        reply = await self.request("watch")
        if not reply["ok"]:
            raise GalaxyActorsError(f"watch: {reply['error']['message']}")
        return EventStream(self)


class EventStream:
    """The events of a `ControlClient.watch`: ``async for event in stream``."""

    def __init__(self, client: ControlClient) -> None:
        self._client = client

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self._client._receive()
        except TransportClosed:  # the server ended the stream
            raise StopAsyncIteration from None


@contextlib.asynccontextmanager
async def open_control_client(
    url: str, token: str, *, connect_timeout: float = 5.0
) -> AsyncIterator[ControlClient]:
    """Connect to the control endpoint at ``url``; raises `ConnectError` if it cannot."""
    connector = WebSocketConnector(connect_timeout=connect_timeout, close_timeout=1.0)
    async with connector.open(url) as transport:
        yield ControlClient(transport, token)


def write_address_file(path: Path, url: str, token: str | None = None) -> None:
    """Write ``{"url", "pid"[, "token"]}`` atomically, readable by this user only (it may
    hold the token). The folder must exist: a missing one is more likely a typo than a
    wish, and creating it would leave the file where no client looks."""
    content: dict[str, Any] = {"url": url, "pid": os.getpid()}
    if token is not None:
        content["token"] = token
    if not path.parent.is_dir():
        why = "not a directory" if path.parent.exists() else "no such directory"
        raise FileNotFoundError(f"{why}: {path.parent}")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(content, file)
            file.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def claim_address_file(path: Path, url: str, token: str | None = None) -> str | None:
    """`write_address_file`, for the process that serves ``url``: a stale file is replaced
    (returns what it was, for the log), one of a running supervisor is not
    (`AddressFileInUse`)."""
    stale = None
    try:
        pid = _pid_of(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        pid = None  # no file, or not one of ours: written over as before
    if pid is not None and pid != os.getpid():
        if pid_running(pid):
            raise AddressFileInUse(path, pid)
        stale = str(StaleAddressFile(path, pid))
    write_address_file(path, url, token)
    return stale


def _pid_of(content: Any) -> int | None:
    pid = content.get("pid") if isinstance(content, dict) else None
    return pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else None


def read_address_file(path: Path) -> tuple[str, str | None]:
    """The URL in an address file, and the token if it holds one. Raises OSError,
    `StaleAddressFile` (its process is not running) or ValueError."""
    content = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(content, dict) or not isinstance(content.get("url"), str):
        raise ValueError(f"{path}: not an address file (no url)")
    pid = _pid_of(content)
    if pid is not None and not pid_running(pid):
        raise StaleAddressFile(path, pid)
    token = content.get("token")
    return content["url"], token if isinstance(token, str) else None
