"""Invariants 4 and 5: restart timing and give-ups, checked against the restart policy.

Unlike the other invariants, which read the trace alone, these two need a model of the
policy: `PolicyModel` is `RestartPolicy`'s documented behaviour written out a second time,
independently of `RestartPolicy.decide`, and `_check_restarts` replays each device's failures
through it, comparing every restart, give-up and connection attempt with what it says.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping

import attrs

from .._actors._events import (
    ConnectionFailed,
    RestartScheduled,
    RestartsStopped,
    StatusChanged,
)
from .._sansio._policy import (
    Decision,
    FailureReason,
    GiveUp,
    Jitter,
    RandomSource,
    Restart,
    RestartFloor,
    RestartPolicy,
)
from .._sansio._status import DeviceStatus
from ._trace import Trace, _event_text
from ._violations import Violation

# --------------------------------------------------------------------------- 4 and 5


@attrs.define
class PolicyModel:
    """What `RestartPolicy` promises, written out a second time, for one device.

    Fed the device's failures and successful connections in order, it says what each
    decision must be. It shares the random source of every other device's model, as the
    devices of one supervisor share its ``rng``. A policy that keeps these promises matches
    it exactly, jitter included, given the same seed.
    """

    policy: RestartPolicy
    rng: RandomSource
    max_retries: int
    attempts: int = 0
    last_delay: float | None = None
    up_since: float | None = None
    restart_times: list[float] = attrs.Factory(list)
    #: The interval the last jittered delay was drawn from.
    last_bounds: tuple[float, float] | None = None
    #: The supervisor's restart floor (`RestartFloor`, documented in its docstring): after
    #: ``immediate`` restarts in a row that each followed an attempt ending within
    #: ``floor`` seconds of its due start, a shorter delay is raised to ``floor``.
    floor: float = attrs.field(factory=lambda: RestartFloor().delay)
    immediate: int = attrs.field(factory=lambda: RestartFloor().immediate)
    quick_restarts: int = 0
    next_attempt_at: float | None = None

    def connected(self, now: float) -> None:
        """A connection came up (the device became IDLE) at ``now``."""
        if self.policy.reset_after is None:
            self.attempts, self.last_delay = 0, None
        self.up_since = now

    def failed(self, reason: FailureReason, now: float) -> Decision:
        """A connection or attempt failed at ``now``: the decision the policy must take."""
        policy = self.policy
        if (
            policy.reset_after is not None
            and self.up_since is not None
            and now - self.up_since >= policy.reset_after
        ):
            self.attempts, self.last_delay = 0, None
        self.up_since = None
        decision = self._decide(reason, now)
        if isinstance(decision, Restart):
            self.attempts += 1
            self.last_delay = decision.delay
            if policy.intensity is not None:
                period = policy.intensity[1]
                self.restart_times = [t for t in self.restart_times if now - t < period]
                self.restart_times.append(now)
        return decision

    def floored(self, decision: Decision, now: float) -> Decision:
        """``decision`` as the supervisor carries it out at ``now``: the policy's, with the
        restart floor applied (the policy alone knows no floor)."""
        if isinstance(decision, GiveUp):
            self.quick_restarts, self.next_attempt_at = 0, None
            return decision
        started = self.next_attempt_at
        quick = started is None or now - started < self.floor
        self.quick_restarts = self.quick_restarts + 1 if quick else 0
        if self.quick_restarts > self.immediate and decision.delay < self.floor:
            decision = Restart(self.floor)
        self.next_attempt_at = now + decision.delay
        return decision

    def _decide(self, reason: FailureReason, now: float) -> Decision:
        policy = self.policy
        if policy.per_reason is not None:
            override = policy.per_reason(reason, self.attempts)
            if override is not None:
                return override
        if reason is FailureReason.UNAUTHORIZED:
            # No backoff makes a refused token right: the default gives up at once.
            return GiveUp("the server refused our credentials (HTTP 401/403): not retrying")
        if self.attempts >= self.max_retries:
            return GiveUp(f"exceeded max retries ({self.max_retries})")
        if policy.intensity is not None:
            limit, period = policy.intensity
            if sum(1 for t in self.restart_times if now - t < period) >= limit:
                return GiveUp(f"more than {limit} restarts within {period:g} s")
        low, high = self.last_bounds = self.bounds()
        if low == high:
            return Restart(low)
        return Restart(low + (high - low) * self.rng.random())

    def bounds(self) -> tuple[float, float]:
        """The interval the next delay must fall in."""
        policy = self.policy
        base = policy.reconnect_delay * 2.0**self.attempts
        if policy.max_delay is not None:
            base = min(base, policy.max_delay)
        if policy.jitter is Jitter.NONE:
            return base, base
        if policy.jitter is Jitter.FULL:
            return 0.0, base
        if policy.jitter is Jitter.EQUAL:
            return base / 2, base
        low = policy.reconnect_delay
        previous = self.last_delay if self.last_delay is not None else low
        high = max(low, 3 * previous)
        if policy.max_delay is not None:
            low, high = min(low, policy.max_delay), min(high, policy.max_delay)
        return low, high


def _check_restarts(trace: Trace, policy: RestartPolicy) -> list[Violation]:
    found: list[Violation] = []
    rng = random.Random(trace.seed)
    models = {
        d.device_id: PolicyModel(
            policy, rng, policy.max_retries if d.max_retries is None else d.max_retries
        )
        for d in trace.schedule.devices
    }
    # The decision each failure is waiting for, per device: (failure, expected decision).
    pending: dict[str, tuple[ConnectionFailed, Decision]] = {}
    # A restart scheduled and not yet started, per device: (when, delay).
    scheduled: dict[str, RestartScheduled] = {}
    gave_up: dict[str, RestartsStopped] = {}
    opens: dict[str, list[float]] = defaultdict(list)
    connects: dict[str, list[float]] = defaultdict(list)  # the user's `Supervisor.connect`
    for record in trace.wire:
        if record.kind == "attempt":
            opens[record.device_id].append(record.at)
        elif record.kind == "connect":
            connects[record.device_id].append(record.at)

    for event in trace.events:
        device = getattr(event, "device_id", None)
        if device not in models:
            continue
        model = models[device]
        if device in pending and not isinstance(event, RestartScheduled | RestartsStopped):
            failure, _ = pending.pop(device)
            found.append(
                Violation(
                    5,
                    device,
                    f"the failure at t={failure.at:g} was followed by {_event_text(event)} "
                    "instead of a restart or a give-up",
                )
            )
        if isinstance(event, StatusChanged):
            if event.old is DeviceStatus.CONNECTED and event.new is DeviceStatus.IDLE:
                model.connected(event.at)  # the connect sequence completed
            elif event.new is DeviceStatus.CONNECTING:
                user = [c for c in connects[device] if c <= event.at]
                if device in gave_up and user and user[-1] >= gave_up[device].at:
                    # Connecting after a give-up starts the count afresh.
                    del gave_up[device]
                    models[device] = attrs.evolve(
                        model, attempts=0, last_delay=None, up_since=None, restart_times=[]
                    )
                found += _check_attempt(
                    event, scheduled.pop(device, None), gave_up, opens, user[-1:]
                )
            elif event.new is DeviceStatus.DISCONNECTED and device in scheduled:
                restart = scheduled.pop(device)
                if event.at > restart.at + restart.delay:
                    found.append(
                        Violation(
                            4,
                            device,
                            f"the restart due at t={restart.at + restart.delay:g} never "
                            f"happened before the shutdown at t={event.at:g}",
                        )
                    )
        elif isinstance(event, ConnectionFailed):
            try:
                reason = FailureReason(event.reason)
            except ValueError:
                found.append(Violation(5, device, f"unknown failure reason {event.reason!r}"))
                continue
            pending[device] = (event, model.floored(model.failed(reason, event.at), event.at))
        elif isinstance(event, RestartScheduled | RestartsStopped):
            if device not in pending:
                found.append(
                    Violation(5, device, f"{_event_text(event)} without a failure before it")
                )
                continue
            failure, expected = pending.pop(device)
            found += _compare_decision(failure, expected, event, model)
            if isinstance(event, RestartScheduled):
                scheduled[device] = event
            else:
                gave_up[device] = event
    for device, (failure, _) in pending.items():
        found.append(
            Violation(5, device, f"the failure at t={failure.at:g} got no restart or give-up")
        )
    return found


def _compare_decision(
    failure: ConnectionFailed,
    expected: Decision,
    got: RestartScheduled | RestartsStopped,
    model: PolicyModel,
) -> list[Violation]:
    device = failure.device_id
    attempts = model.attempts
    if isinstance(expected, GiveUp) and isinstance(got, RestartScheduled):
        return [
            Violation(
                5,
                device,
                f"after {attempts} failed reconnection attempt(s) (max_retries="
                f"{model.max_retries}) the failure at t={failure.at:g} ({failure.reason}) "
                f"should give up ({expected.why}), but restart attempt {got.attempt} was "
                f"scheduled in {got.delay:g} s",
            )
        ]
    if isinstance(expected, Restart) and isinstance(got, RestartsStopped):
        return [
            Violation(
                5,
                device,
                f"gave up at t={got.at:g} ({got.why}) after only {attempts - 1} failed "
                f"reconnection attempt(s); max_retries={model.max_retries}",
            )
        ]
    if not (isinstance(expected, Restart) and isinstance(got, RestartScheduled)):
        return []
    found = []
    if got.at != failure.at:
        found.append(
            Violation(4, device, f"restart decided at t={got.at:g}, failure at t={failure.at:g}")
        )
    if got.attempt != attempts or got.max_retries != model.max_retries:
        found.append(
            Violation(
                5,
                device,
                f"restart at t={got.at:g} announced as attempt {got.attempt} of "
                f"{got.max_retries}; the policy counts attempt {attempts} of "
                f"{model.max_retries}",
            )
        )
    if got.delay != expected.delay:
        low, high = model.last_bounds or (expected.delay, expected.delay)
        where = "outside" if not (low <= got.delay <= high) else "inside"
        found.append(
            Violation(
                4,
                device,
                f"restart attempt {got.attempt} after the failure at t={failure.at:g} waits "
                f"{got.delay!r} s; the policy says {expected.delay!r} s "
                f"({where} its bounds [{low!r}, {high!r}])",
            )
        )
    return found


def _check_attempt(
    event: StatusChanged,
    restart: RestartScheduled | None,
    gave_up: Mapping[str, RestartsStopped],
    opens: Mapping[str, list[float]],
    user_connect: list[float],
) -> list[Violation]:
    """A connection attempt started (``event``): was it due? ``user_connect`` holds the time
    of the user's last `Supervisor.connect` call before it, if any."""
    device = event.device_id
    found = []
    if device in gave_up:
        found.append(
            Violation(
                5,
                device,
                f"reconnected at t={event.at:g} after giving up at t={gave_up[device].at:g}",
            )
        )
    if restart is not None:
        due = restart.at + restart.delay
        cut_short = bool(user_connect) and restart.at <= user_connect[0] <= event.at < due
        if event.at != due and not cut_short:
            found.append(
                Violation(
                    4,
                    device,
                    f"restart attempt {restart.attempt} was scheduled at t={restart.at!r} "
                    f"with delay {restart.delay!r} s, due at t={due!r}, but started at "
                    f"t={event.at!r}",
                )
            )
    if event.at not in opens.get(device, ()):
        found.append(
            Violation(
                4, device, f"CONNECTING at t={event.at:g} without a connection attempt on the wire"
            )
        )
    return found
