"""Prometheus metrics of a supervisor, and the process's ``/metrics``, ``/healthz`` and
``/readyz``.

Two kinds of numbers. What the fleet *is* (devices by status, queue depths, handshakes in
flight) is read from the supervisor when a registry collects, so it is never stale. What
*happened* (failures, restarts, give-ups, task outcomes and timings, bad frames) can only be
counted as it happens: `SupervisorCollector.run` reads the supervisor's events and counts
them. Its subscription is bounded like every other, so a collector that falls behind loses
events rather than slowing a device; the loss is itself a metric
(``galaxy_actors_metrics_events_dropped_total``), so an undercount never goes unnoticed.
Counting happens in the collector's own task, so a scrape may miss the events of the last
scheduling step: the counters lag by that much, never more.

Collect on Trio's thread (``generate_latest`` in a Trio task, as the process does):
reading the supervisor from another thread races with the actors that change it.

prometheus-client is an optional dependency (the ``metrics`` extra): importing this module
without it raises an ImportError that names the extra.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import trio

try:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        ProcessCollector,
        generate_latest,
    )
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "galaxy_actors metrics need prometheus-client: pip install 'galaxy-actors[metrics]'"
    ) from exc

from .._actors._events import (
    BadFrame,
    ConnectionFailed,
    Event,
    RestartScheduled,
    RestartsStopped,
    Subscription,
    TaskEnded,
    TaskSent,
)
from .._actors._supervisor import Supervisor
from .._sansio._reasons import BadFrameKind, FailureReason, TaskOutcome
from .._sansio._status import CONNECTED_STATUSES, DeviceStatus
from ._http import Response

__all__ = ["DURATION_BUCKETS", "MetricsEndpoint", "SupervisorCollector", "collecting", "unready"]

#: Upper bounds (seconds) of the queue-wait and run-time histograms' buckets: tasks last
#: from milliseconds (a click) to an hour (a long workflow).
DURATION_BUCKETS: Final = (
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
_PREFIX: Final = "galaxy_actors_"


class _Histogram:
    """Counts per bucket (not yet cumulative) and the sum of what was observed."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (``le``).
        self.counts[bisect.bisect_left(DURATION_BUCKETS, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative = list(itertools.accumulate(self.counts))
        bounds = [repr(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
        return HistogramMetricFamily(
            _PREFIX + name,
            documentation,
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=self.total,
        )


def _counter(name: str, documentation: str, label: str, counts: Mapping[str, int]) -> Metric:
    family = CounterMetricFamily(_PREFIX + name, documentation, labels=[label])
    for value, count in counts.items():
        family.add_metric([value], count)
    return family


class SupervisorCollector:
    """A prometheus-client collector of one supervisor's metrics (``galaxy_actors_*``,
    listed in docs/process.md, "Metrics and health").

    Register it in any `CollectorRegistry`. The gauges need nothing more; the counters and
    histograms count events from the moment `run` subscribes, so run it in a nursery of
    your own, or use `collecting`, which does both::

        registry = CollectorRegistry()
        async with open_supervisor() as supervisor, collecting(supervisor, registry):
            ...
            text = generate_latest(registry)  # from a Trio task

    ``buffer``: events the collector may fall behind before it drops some (and counts the
    drops in ``galaxy_actors_metrics_events_dropped_total``).
    """

    def __init__(self, supervisor: Supervisor, *, buffer: int = 10_000) -> None:
        self.supervisor = supervisor
        self._buffer = buffer
        self._subscription: Subscription | None = None
        # Every known label value from the start, so that a rate over a failure that has
        # not happened yet reads 0 instead of nothing.
        self._failures = dict.fromkeys(map(str, FailureReason), 0)
        self._bad_frames = dict.fromkeys(map(str, BadFrameKind), 0)
        self._outcomes = dict.fromkeys(map(str, TaskOutcome), 0)
        self._sent = 0
        self._restarts = 0
        self._give_ups = 0
        self._queue_wait = _Histogram()
        self._run_time = _Histogram()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Count the supervisor's events until its block ends (or this is cancelled).
        Started with ``nursery.start``, it is subscribed when the start returns."""
        with self.supervisor.subscribe(self._buffer) as events:
            self._subscription = events
            task_status.started()
            async for event in events:
                self.count(event)

    def count(self, event: Event) -> None:
        """Count one event (`run` calls it for each)."""
        if isinstance(event, TaskEnded):
            self._outcomes[event.outcome] = self._outcomes.get(event.outcome, 0) + 1
            if event.queued_for is not None:
                self._queue_wait.observe(event.queued_for)
            if event.ran_for is not None:
                self._run_time.observe(event.ran_for)
        elif isinstance(event, ConnectionFailed):
            self._failures[event.reason] = self._failures.get(event.reason, 0) + 1
        elif isinstance(event, TaskSent):
            self._sent += 1
        elif isinstance(event, RestartScheduled):
            self._restarts += 1
        elif isinstance(event, RestartsStopped):
            self._give_ups += 1
        elif isinstance(event, BadFrame):
            self._bad_frames[event.kind] = self._bad_frames.get(event.kind, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """The metrics now (prometheus-client's `Collector` protocol)."""
        snapshots = self.supervisor.snapshots()
        by_status = dict.fromkeys(DeviceStatus, 0)
        for snapshot in snapshots:
            by_status[snapshot.status] += 1
        devices = GaugeMetricFamily(_PREFIX + "devices", "Devices by status.", labels=["status"])
        for status, number in by_status.items():
            devices.add_metric([str(status)], number)
        yield devices
        yield GaugeMetricFamily(
            _PREFIX + "handshakes_in_flight",
            "Devices connecting: waiting for a handshake slot, or in their handshake.",
            value=by_status[DeviceStatus.CONNECTING],
        )
        depth = GaugeMetricFamily(
            _PREFIX + "queue_depth", "Tasks waiting in a device's queue.", labels=["device_id"]
        )
        for snapshot in snapshots:
            depth.add_metric([snapshot.device_id], snapshot.queue_depth)
        yield depth
        yield _counter(
            "connection_failures",
            "Connections (or attempts) that ended against our will, by reason.",
            "reason",
            self._failures,
        )
        yield CounterMetricFamily(
            _PREFIX + "restarts_scheduled",
            "Reconnection attempts the restart policy scheduled.",
            value=self._restarts,
        )
        yield CounterMetricFamily(
            _PREFIX + "give_ups",
            "Times a device was given up (no more reconnection attempts).",
            value=self._give_ups,
        )
        yield CounterMetricFamily(
            _PREFIX + "tasks_sent",
            "Tasks put on their device (a task that runs again counts again).",
            value=self._sent,
        )
        yield _counter(
            "tasks_ended",
            'Tasks by outcome: "completed", "failed" (the device said so) or the error class.',
            "outcome",
            self._outcomes,
        )
        yield self._queue_wait.family(
            "task_queue_wait_seconds", "Time tasks waited in a device's queue."
        )
        yield self._run_time.family(
            "task_run_seconds", "Time from sending a task to its end, for tasks that were sent."
        )
        yield _counter(
            "bad_frames", "Frames a server should not have sent, by kind.", "kind", self._bad_frames
        )
        subscription = self._subscription
        yield CounterMetricFamily(
            _PREFIX + "metrics_events_dropped",
            "Events this collector fell too far behind to count: its counters are short by "
            "this many.",
            value=0 if subscription is None else subscription.dropped,
        )
        yield CounterMetricFamily(
            _PREFIX + "events_dropped_after_close",
            "Events published after the supervisor's event hub closed (at shutdown).",
            value=self.supervisor.events_dropped_after_close,
        )


@asynccontextmanager
async def collecting(
    supervisor: Supervisor, registry: CollectorRegistry, *, buffer: int = 10_000
) -> AsyncIterator[SupervisorCollector]:
    """Register a running `SupervisorCollector` of ``supervisor`` in ``registry`` for the
    block; it is unregistered, and stops counting, when the block ends."""
    collector = SupervisorCollector(supervisor, buffer=buffer)
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.run)
        registry.register(collector)
        try:
            yield collector
        finally:
            registry.unregister(collector)
            nursery.cancel_scope.cancel()


def unready(supervisor: Supervisor, share: float) -> str | None:
    """Why the fleet is not ready, or None when at least ``share`` of its devices hold a
    registered connection (none needed for an empty fleet)."""
    snapshots = supervisor.snapshots()
    connected = sum(1 for s in snapshots if s.status in CONNECTED_STATUSES)
    # The epsilon keeps 0.3 * 10 (3.0000000000000004) from needing 4 devices.
    needed = math.ceil(share * len(snapshots) - 1e-9)
    if connected >= needed:
        return None
    return (
        f"{connected} of {len(snapshots)} devices connected, {needed} needed "
        f"(ready_share {share:g})"
    )


class MetricsEndpoint:
    """What the supervisor process answers on its metrics listener: ``/metrics`` (this
    supervisor's metrics and the process's own), ``/healthz`` (200 while the process runs)
    and ``/readyz`` (200 while the supervisor runs with ``ready_share`` of its devices
    connected; 503 and the reason otherwise)."""

    def __init__(self, ready_share: float) -> None:
        self.ready_share = ready_share
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files: process_*
        self.supervisor: Supervisor | None = None
        self.stopping = False

    async def observe(
        self,
        supervisor: Supervisor,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Collect ``supervisor``'s metrics; runs until its block ends."""
        collector = SupervisorCollector(supervisor)
        self.registry.register(collector)
        self.supervisor = supervisor
        await collector.run(task_status=task_status)

    def respond(self, path: str) -> Response:
        if path == "/metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        if path == "/healthz":
            return Response(200, b"ok\n")
        if path == "/readyz":
            why = self.unready()
            return Response(200, b"ready\n") if why is None else Response(503, f"{why}\n".encode())
        return Response(404, b"not found; try /metrics, /healthz or /readyz\n")

    def unready(self) -> str | None:
        if self.stopping:
            return "stopping"
        if self.supervisor is None:
            return "starting: the supervisor is not running yet"
        return unready(self.supervisor, self.ready_share)
