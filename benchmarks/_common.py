"""What every benchmark shares: the agent subprocess, the bare client, statistics, output.

Rules of this file:
- The agent always runs in another process (`AgentProcess`), so the side measured never
  shares its core with the server it talks to. Both sides of a comparison talk to the same
  agent process, one after the other.
- The baseline is `BareConnection`: plain trio-websocket sending the frames galaxy_actors
  sends, built with the same `FrameBuilder`, and nothing else.
- Every wait is bounded; every subprocess is killed on the way out, whatever happens.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import platform
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final

import trio
import trio_websocket

from galaxy_actors._sansio._aip import FrameBuilder, session_id_for

HERE: Final = Path(__file__).resolve().parent
RESULTS: Final = HERE / "results"
AGENT_SCRIPT: Final = HERE / "agent_server.py"
MAX_FRAME: Final = 16 * 1024 * 1024
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------- the process


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard limit; return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def rss_bytes() -> int:
    """Resident set size of this process now (not the peak), from /proc/self/statm."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


def cpu_seconds() -> float:
    """CPU time (user + system) this process used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def quiet_logging() -> None:
    """Keep galaxy_actors' per-device warnings (a storm logs thousands) off the terminal."""
    logging.getLogger("galaxy_actors").setLevel(logging.ERROR)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so `finally` blocks (killing the agent) still run."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --------------------------------------------------------------------------- the agent


class AgentProcess:
    """A `SimulatedAgent` in a subprocess (``agent_server.py``), driven by lines on stdin.

    >>> with AgentProcess() as agent:              # doctest: +SKIP
    ...     url = agent.url
    ...     agent.command("drop")                  # abort every connection at once
    """

    def __init__(self, *, backlog: int = 4096, start_timeout: float = 30.0) -> None:
        self.backlog = backlog
        self.start_timeout = start_timeout
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def __enter__(self) -> AgentProcess:
        self._proc = subprocess.Popen(
            [sys.executable, str(AGENT_SCRIPT), "--backlog", str(self.backlog)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            line = self._read_line(self.start_timeout)
            if not line.startswith("ws://"):
                raise RuntimeError(f"agent did not print its URL: {line!r}")
            self.url = line
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def _read_line(self, timeout: float) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"agent silent for {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"agent exited (code {proc.poll()})")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode().strip()

    def command(self, line: str, timeout: float = 60.0) -> str:
        """Send one command line and return the agent's one-line answer."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()
        return self._read_line(timeout)

    def stats(self) -> dict[str, Any]:
        """The agent's counters: open_connections, connections_accepted, registrations,
        tasks_received, cpu (its process CPU seconds)."""
        answer: dict[str, Any] = json.loads(self.command("stats"))
        return answer

    def wait_quiet(self, timeout: float = 120.0) -> None:
        """Wait until the agent holds no connection (the previous side's are all gone)."""
        deadline = time.monotonic() + timeout
        while self.stats()["open_connections"] > 0:
            if time.monotonic() > deadline:
                raise TimeoutError(f"agent still holds connections after {timeout:g} s")
            time.sleep(0.1)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(b"quit\n")
                proc.stdin.flush()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(timeout=5)
        finally:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()


def run_worker(argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run ``python argv…`` (a benchmark in worker mode); return the JSON of its last line.
    The worker is killed if it outlives ``timeout``."""
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait(timeout=10)
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {argv[:3]} failed (exit {proc.returncode})")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --------------------------------------------------------------------------- the baseline


class BareConnection:
    """The baseline: one trio-websocket connection sending galaxy_actors' own frames, with
    nothing around it. Use as ``async with BareConnection.open(url, task_name, device_id)``."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, task_name: str, device_id: str
    ) -> None:
        self.ws = ws
        self.task_name = task_name
        self.frames = FrameBuilder(task_name, device_id)

    @staticmethod
    def open(url: str, connect_timeout: float = 10.0) -> Any:
        """The bare connection context (trio-websocket's own `open_websocket_url`), with the
        queue and frame limits galaxy_actors' `WebSocketConnector` uses."""
        return trio_websocket.open_websocket_url(
            url,
            message_queue_size=8,
            max_message_size=MAX_FRAME,
            connect_timeout=connect_timeout,
            disconnect_timeout=2.0,
        )

    async def register(self) -> None:
        """REGISTER, then read until the confirmation (heartbeat / ok)."""
        await self.ws.send_message(self.frames.register())
        while True:
            message = json.loads(await self.ws.get_message())
            if message.get("type") == "heartbeat" and message.get("status") == "ok":
                return
            if message.get("type") == "error":
                raise RuntimeError(f"bare registration refused: {message.get('error')}")

    async def fetch_device_info(self) -> dict[str, Any]:
        """What galaxy_actors does after REGISTER: a heartbeat and a device info request,
        back to back; read until the info response."""
        request_id = os.urandom(16).hex()
        await self.ws.send_message(self.frames.heartbeat())
        await self.ws.send_message(self.frames.device_info_request(request_id))
        while True:
            message = json.loads(await self.ws.get_message())
            if message.get("type") == "device_info_response":
                result: dict[str, Any] = message.get("result") or {}
                return result

    async def run_task(self, task_id: str, description: str, data: Any) -> dict[str, Any]:
        """Send a TASK frame and read until the task_end with its session_id."""
        session_id = session_id_for(self.task_name, task_id)
        await self.ws.send_message(self.frames.task(task_id, description, json.dumps(data)))
        while True:
            message: dict[str, Any] = json.loads(await self.ws.get_message())
            if message.get("type") == "task_end" and message.get("session_id") == session_id:
                return message

    async def idle(self, heartbeat_interval: float) -> None:
        """Hold the connection: drain it and send a heartbeat every ``heartbeat_interval``
        seconds (math.inf: never), in one task, as galaxy_actors' session loop does."""
        ws = self.ws
        next_beat = trio.current_time() + heartbeat_interval
        while True:
            with trio.move_on_at(next_beat):
                await ws.get_message()
                continue
            await ws.send_message(self.frames.heartbeat())
            next_beat += heartbeat_interval


class BareFleet:
    """N bare connections, one task each: connect + REGISTER (+ the heartbeat and device
    info exchange galaxy_actors does, with ``same=True``) holding one of ``limit`` handshake
    slots, then hold the connection (`BareConnection.idle`). A lost connection is opened
    again after ``retry_delay`` seconds. Attempt start times go to ``attempts``."""

    def __init__(
        self,
        url: str,
        tag: str,
        limit: int | None,
        *,
        same: bool = False,
        heartbeat: float = math.inf,
        retry_delay: float = 1.0,
    ) -> None:
        self.url = url
        self.tag = tag
        self.limiter = trio.CapacityLimiter(limit if limit else math.inf)
        self.same = same
        self.heartbeat = heartbeat
        self.retry_delay = retry_delay
        self.ready = 0
        self.failures = 0
        self.attempts: list[float] = []
        self.in_handshake = 0
        self.peak_handshakes = 0
        self._target = 0
        self._all_ready = trio.Event()

    async def hold(self, device_id: str) -> None:
        while True:
            limiter = self.limiter
            await limiter.acquire()
            held = True
            self.attempts.append(trio.current_time())
            self.in_handshake += 1
            self.peak_handshakes = max(self.peak_handshakes, self.in_handshake)
            try:
                async with BareConnection.open(self.url) as ws:
                    self.in_handshake -= 1
                    bare = BareConnection(ws, self.tag, device_id)
                    await bare.register()
                    limiter.release()
                    held = False
                    if self.same:
                        await bare.fetch_device_info()
                    self.ready += 1
                    if self.ready >= self._target:
                        self._all_ready.set()
                    await bare.idle(self.heartbeat)
            except Exception:
                self.failures += 1
            finally:
                if held:
                    self.in_handshake -= 1
                    limiter.release()
            await trio.sleep(self.retry_delay)

    def expect(self, more: int) -> None:
        """From now on, `wait_ready` waits for ``more`` more connections to be ready."""
        self._target = self.ready + more
        self._all_ready = trio.Event()
        if more <= 0:
            self._all_ready.set()

    async def wait_ready(self, within: float) -> int:
        """Wait (at most ``within`` s) for what `expect` asked; return how many are missing."""
        with trio.move_on_after(within):
            await self._all_ready.wait()
        return max(0, self._target - self.ready)

    async def connect(
        self, nursery: trio.Nursery, ids: Sequence[str], within: float
    ) -> dict[str, Any]:
        """Open one connection per id in ``nursery``; wait until all are ready."""
        self.expect(len(ids))
        failures = self.failures
        start, cpu0 = time.perf_counter(), cpu_seconds()
        for device_id in ids:
            nursery.start_soon(self.hold, device_id)
        missing = await self.wait_ready(within)
        return {
            "seconds": time.perf_counter() - start,
            "cpu_seconds": cpu_seconds() - cpu0,
            "failures": self.failures - failures,
            "not_ready": missing,
        }


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, p99, min and max of ``values``."""
    return {
        "n": float(len(values)),
        "median": percentile(values, 50),
        "q1": percentile(values, 25),
        "q3": percentile(values, 75),
        "p99": percentile(values, 99),
        "min": min(values) if values else math.nan,
        "max": max(values) if values else math.nan,
    }


def ratio_summary(ours: Sequence[float], bare: Sequence[float]) -> dict[str, Any]:
    """Per-round ratios ours/bare of paired rounds, and their median and quartiles."""
    ratios = [o / b for o, b in zip(ours, bare, strict=True) if b > 0]
    return {
        "ratios": ratios,
        "median": percentile(ratios, 50),
        "q1": percentile(ratios, 25),
        "q3": percentile(ratios, 75),
    }


def fmt_ratio(stats: dict[str, Any]) -> str:
    return f"{stats['median']:.3f} [{stats['q1']:.3f}-{stats['q3']:.3f}]"


def verdict(value: float, target: float, *, at_most: bool = True) -> str:
    """The verdict: met, or NOT met with by how much (the gap, and its share of the target)."""
    if math.isnan(value):
        return "n/a"
    ok = value <= target if at_most else value >= target
    if ok:
        return "met"
    gap = value - target if at_most else target - value
    word = "over" if at_most else "under"
    return f"NOT met: {gap:.3g} {word} ({gap / target:.1%})"


# --------------------------------------------------------------------------- output


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))
    sys.stdout.flush()


def environment() -> dict[str, Any]:
    import galaxy_actors

    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "trio": trio.__version__,
        "trio_websocket": trio_websocket.__version__,
        "galaxy_actors": galaxy_actors.__version__,
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "argv": sys.argv,
    }


def write_json(name: str, data: dict[str, Any], *, quiet: bool = False) -> Path:
    """Write ``results/<name>.json`` (benchmarks call it after each phase too, so that a run
    cut short keeps what it measured)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"environment": environment(), **data}, indent=2) + "\n")
    if not quiet:
        print(f"\nwrote {path.relative_to(HERE.parent)}")
    return path


def int_list(text: str) -> list[int]:
    """argparse type for "1000,3000,10000"."""
    return [int(part) for part in text.split(",") if part.strip()]
