"""``galaxy-actors run`` with a ``[cluster]`` table: one node of a cluster, until SIGINT or
SIGTERM.

Theory of operation. The node (`galaxy_actors.cluster.open_node`) is an ordinary supervisor
whose devices are the ones it holds leases for; this module runs it as a process: it adds the
file's ``[[devices]]`` to the fleet in Redis, shows the status of the devices this node
serves, serves ``/metrics`` with a ``[metrics]`` table, and stops on a signal.

Shutdown, on the first signal: the node's block is left normally, which disconnects its
devices gracefully and releases their leases at once, so that the other nodes take them at
their next renewal rather than when the leases expire; then the process exits 0. A second
signal exits at once (`watch_signals`), leaving the leases to expire as a crash would.

Exit statuses: 0 after a signal; 1 when Redis cannot be reached at start, or the metrics
endpoint cannot be bound (nothing started).
"""

from __future__ import annotations

import logging
import signal
import sys
from functools import partial
from typing import TYPE_CHECKING, TextIO

import trio

from .._sansio._redact import redact
from ..cluster import (
    ClusterClient,
    ClusterUnavailable,
    LeaseSettings,
    NodeSettings,
    open_node,
)
from ._config import Config, DeviceConfig
from ._http import open_http_listeners, serve_http
from ._report import device_rows
from ._serve import watch_signals
from ._view import show_status, summary_line

if TYPE_CHECKING:
    from ._config_cluster import ClusterConfig
    from ._metrics import MetricsEndpoint

__all__ = ["define_devices", "node_settings", "run_cluster_node"]

logger = logging.getLogger("galaxy_actors.process")


def node_settings(cluster: ClusterConfig) -> NodeSettings:
    """The library's settings for the node a ``[cluster]`` table describes."""
    return NodeSettings(
        name=cluster.node,
        fleet=cluster.fleet,
        lease=LeaseSettings(
            lease_ttl=cluster.lease_ttl,
            renew_interval=cluster.renew_interval,
            margin=cluster.fence_margin,
        ),
        retention=cluster.outcome_retention,
    )


async def define_devices(client: ClusterClient, devices: tuple[DeviceConfig, ...]) -> None:
    """Add (or update) the file's devices in the fleet: the fleet is defined in Redis, and
    every node's file may contribute to it."""
    for device in devices:
        await client.define_device(
            device.device_id,
            device.server_url,
            device.os,
            capabilities=device.capabilities,
            metadata=device.metadata,
            max_retries=device.max_retries,
        )


async def _ignore_sighup(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    # A node's devices are the fleet's, in Redis: there is no file to reload. The handler
    # is there so that a SIGHUP sent out of habit does not kill the node.
    if not hasattr(signal, "SIGHUP"):  # Windows
        task_status.started()
        return
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        task_status.started()
        async for _ in signals:
            logger.warning(
                "SIGHUP ignored: a cluster node reloads nothing; its devices are the fleet's "
                "in Redis (docs/cluster.md)"
            )


async def run_cluster_node(config: Config, *, view: str, out: TextIO) -> int:
    """Run the node ``config.cluster`` describes until the first SIGINT/SIGTERM; return the
    exit status (see the module's docstring)."""
    cluster = config.cluster
    assert cluster is not None
    settings = node_settings(cluster)
    stop = trio.Event()
    final = ""
    async with trio.open_nursery() as services:
        await services.start(watch_signals, stop)
        await services.start(_ignore_sighup)
        metrics: MetricsEndpoint | None = None
        try:
            if config.metrics is not None:
                # Imported here: prometheus-client is an optional extra, needed only then.
                from ._metrics import MetricsEndpoint

                try:
                    listeners, metrics_url = await open_http_listeners(
                        config.metrics.host, config.metrics.port
                    )
                except OSError as exc:
                    where = config.metrics.listen
                    print(f"{config.source}: metrics endpoint: {where}: {exc}", file=sys.stderr)
                    return 1
                metrics = MetricsEndpoint(config.metrics.ready_share)
                await services.start(partial(serve_http, listeners, metrics.respond))
                print(f"metrics endpoint: {metrics_url}/metrics", flush=True)
            options = config.supervisor.supervisor_options()
            try:
                async with open_node(cluster.redis_url, settings, **options) as node:
                    supervisor = node.supervisor
                    if metrics is not None:
                        await services.start(metrics.observe, supervisor)
                    await define_devices(ClusterClient(node.store), config.devices)
                    print(
                        f"cluster node {cluster.node}: fleet {cluster.fleet} at "
                        f"{redact(cluster.redis_url)}",
                        flush=True,
                    )
                    logger.info(
                        "node %s joined fleet %s (failover bound %g s)",
                        cluster.node,
                        cluster.fleet,
                        cluster.failover_bound,
                    )
                    services.start_soon(show_status, supervisor, view, out)
                    await stop.wait()
                    if metrics is not None:
                        metrics.stopping = True
                    logger.info("stopping: handing the devices back to the fleet")
                final = f"stopped: {summary_line(device_rows(supervisor))}"
            except ClusterUnavailable as exc:
                print(f"{config.source}: cluster: {redact(str(exc))}", file=sys.stderr)
                return 1
            logger.info("stopped cleanly")
        finally:
            services.cancel_scope.cancel()
    print(final, file=out, flush=True)
    return 0
