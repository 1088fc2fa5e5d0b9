"""The supervisor process: run a validated `Config` until SIGINT or SIGTERM.

Theory of operation. Everything the process runs lives in one nursery, ``services``: the
signal watcher, the control endpoint and the status view. The supervisor's block sits inside
it, so that at shutdown the endpoint outlives the supervisor: it keeps answering while the
supervisor winds down, and sends every waiting client its task's outcome.

Shutdown, on the first signal: the endpoint stops accepting tasks; the supervisor's block is
left, which disconnects every device gracefully (queued tasks end with `TaskCancelled`,
running tasks get ``shutdown_grace`` seconds, sockets close with a close frame); then the
endpoint sends the outcomes still owed, closes its connections with close frames, and the
process exits 0. A second signal exits at once with 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM), whatever is still running.

With a ``[metrics]`` table, an HTTP listener serves ``/metrics``, ``/healthz`` and ``/readyz``
(`MetricsEndpoint`) from before the supervisor starts until the process exits: ``/healthz``
answers throughout, ``/readyz`` answers 503 while starting and stopping.

SIGHUP reloads the configuration file (`Reloader`): its devices are applied, an invalid file
is logged and changes nothing. Its handler is in place before anything starts, so a SIGHUP
never kills the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

import trio

from .._actors._running import open_supervisor
from .._actors._supervisor import Supervisor
from .._sansio._errors import JournalError, SupervisorClosed
from .._sansio._redact import redact
from ._config import Config, ConfigError
from ._control import ControlServer, open_control_listeners
from ._control_client import claim_address_file
from ._http import open_http_listeners, serve_http
from ._reload import Reloader
from ._report import device_rows
from ._view import show_status, summary_line

if TYPE_CHECKING:
    from ._metrics import MetricsEndpoint

__all__ = ["reload_on_sighup", "run_supervisor_process", "watch_signals"]

logger = logging.getLogger("galaxy_actors.process")


def _force_exit(code: int) -> None:
    # The graceful path is already running and is what a second signal overrides: leave now,
    # without unwinding (the shutdown is shielded, and may wait on peers).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def watch_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """On the first SIGINT or SIGTERM set ``stop``; on the second, exit the process at once
    with status 128 + the signal's number. Runs until cancelled; main thread only."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                logger.warning("%s: stopping; send it again to exit at once", name)
                stop.set()
            else:
                logger.error("%s again: exiting at once (status %d)", name, 128 + signum)
                _force_exit(128 + signum)


async def reload_on_sighup(
    reloader: Reloader, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Reload the configuration on every SIGHUP (a no-op where there is no SIGHUP)."""
    if not hasattr(signal, "SIGHUP"):  # Windows
        task_status.started()
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            try:
                await reloader.reload()
            except ConfigError as exc:
                logger.error("SIGHUP: the configuration in force stays: %s", redact(str(exc)))
            except SupervisorClosed as exc:
                logger.warning("SIGHUP ignored: %s", exc)


class _RedactingWriter:
    """The plain status view's output, with URLs masked: a failure's text may quote one."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> int:
        return self._out.write(redact(text))

    def flush(self) -> None:
        self._out.flush()


def _add_devices(supervisor: Supervisor, config: Config) -> None:
    for device in config.devices:
        supervisor.add_device(
            device.device_id,
            device.server_url,
            device.os,
            capabilities=device.capabilities,
            metadata=device.metadata,
            max_retries=device.max_retries,
        )


def _announce(url: str, generated_token: str | None, address_file: Path | None) -> None:
    if generated_token is None:
        where = ""
    elif address_file is not None:
        where = f" (token generated, in {address_file})"
    else:
        # Never on stdout, nor in the logs: both are kept and shipped. A person at a
        # terminal can read it there; anyone else configures a token or an address file.
        where = " (token generated; not shown: set control.token or control.address_file)"
        if sys.stderr.isatty():
            print(f"control token: {generated_token}", file=sys.stderr, flush=True)
            where = " (token generated: shown on the terminal)"
    print(f"control endpoint: {url}{where}", flush=True)
    logger.info("control endpoint listening on %s", url)


async def run_supervisor_process(config: Config, *, view: str, out: TextIO) -> int:
    """Supervise ``config``'s devices until the first SIGINT/SIGTERM, then shut down
    cleanly. ``view`` is a resolved view mode (``live``, ``plain``, ``none``). Returns the
    exit status: 0, or 1 when the control or metrics endpoint cannot be bound (nothing
    started). With ``config.metrics``, prometheus-client must be installed."""
    control_config = config.control
    address_file = control_config.address_file
    grace = config.supervisor.settings.shutdown_grace
    stop = trio.Event()
    final = ""
    changes = trio.Lock()
    reloader = Reloader(config, changes)
    journal = config.journal.open()
    if journal is not None:
        try:
            # Before anything starts: a corrupt or busy journal is a clear error, exit 2.
            await journal.open()
        except JournalError as exc:
            print(f"{config.source}: {exc}", file=sys.stderr)
            return 2
        logger.info("journal: %s", journal.path)
    async with trio.open_nursery() as services:
        await services.start(watch_signals, stop)
        await services.start(reload_on_sighup, reloader)
        listeners: list[trio.SocketListener] = []
        url = ""
        # With no token configured (allowed on loopback only) the endpoint still needs one.
        generated = None if control_config.token else secrets.token_urlsafe(24)
        token = control_config.token or generated or ""
        wrote_address = False
        control: ControlServer | None = None
        metrics_listeners: list[trio.SocketListener] = []
        metrics: MetricsEndpoint | None = None
        try:
            if control_config.enabled:
                # Bound, and the address written, before anything starts: a failure here
                # leaves nothing half-started. Clients that connect early wait in the backlog.
                where = f"{control_config.host}:{control_config.port}"
                try:
                    listeners, url = await open_control_listeners(
                        control_config.host, control_config.port
                    )
                    where = str(address_file)
                    if address_file is not None:
                        stale = claim_address_file(address_file, url, generated)
                        wrote_address = True
                        if stale is not None:
                            logger.warning("replaced %s", stale)
                except OSError as exc:
                    print(f"{config.source}: control endpoint: {where}: {exc}", file=sys.stderr)
                    if journal is not None:
                        await journal.aclose()
                    return 1
            if config.metrics is not None:
                # Imported here: prometheus-client is an optional extra, needed only then.
                from ._metrics import MetricsEndpoint

                listen = config.metrics.listen
                try:
                    metrics_listeners, metrics_url = await open_http_listeners(
                        config.metrics.host, config.metrics.port
                    )
                except OSError as exc:
                    print(f"{config.source}: metrics endpoint: {listen}: {exc}", file=sys.stderr)
                    return 1
                metrics = MetricsEndpoint(config.metrics.ready_share)
                # Up before the supervisor: /healthz answers, /readyz says "starting".
                await services.start(partial(serve_http, metrics_listeners, metrics.respond))
                metrics_listeners = []  # served: closed by the server
                print(f"metrics endpoint: {metrics_url}/metrics", flush=True)
                logger.info("metrics endpoint listening on %s/metrics", metrics_url)
            options = config.supervisor.supervisor_options()
            async with open_supervisor(**options, journal=journal) as supervisor:
                if metrics is not None:
                    # Subscribed before the first device: every failure is counted.
                    await services.start(metrics.observe, supervisor)
                _add_devices(supervisor, config)
                if supervisor.durable is not None:
                    await supervisor.durable.restore_devices()
                reloader.supervisor = supervisor
                logger.info("supervising %d devices", len(config.devices))
                if listeners:
                    control = ControlServer(supervisor, token, reloader.reload, changes)
                    await services.start(control.serve, listeners)
                    listeners = []  # served: closed by the server
                    _announce(url, generated, address_file)
                shown = out if view != "plain" else cast(TextIO, _RedactingWriter(out))
                services.start_soon(show_status, supervisor, view, shown)
                await stop.wait()
                if metrics is not None:
                    metrics.stopping = True
                logger.info("stopping: no new tasks; running tasks have %g s to finish", grace)
                if control is not None:
                    control.stop_accepting()
            # Every task has its outcome now; the endpoint sends the ones still owed.
            if control is not None:
                await control.aclose(grace=5.0)
            final = f"stopped: {summary_line(device_rows(supervisor))}"
            logger.info("stopped cleanly")
        finally:
            for listener in listeners + metrics_listeners:
                await listener.aclose()
            if wrote_address and address_file is not None:
                with contextlib.suppress(OSError):
                    address_file.unlink()
            services.cancel_scope.cancel()
    # After the nursery: the live view has let go of the terminal.
    print(final, file=out, flush=True)
    return 0
