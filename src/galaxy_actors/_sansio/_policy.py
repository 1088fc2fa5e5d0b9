"""The restart policy: when a failed device reconnects, and when it gives up.

Rules of this file:
- Sans-IO. The policy holds no clock, no I/O and no randomness of its own: the time and a
  random source are passed in, the history of a device's restarts is a value passed in and
  handed back. The device actor is the only place where decisions meet Trio's clock.
- Defaults reproduce the reference DeviceManager exactly: before reconnection attempt n
  (n = 0, 1, ...) wait ``reconnect_delay * 2**n`` (5, 10, 20, 40, 80 s), make at most
  ``max_retries`` attempts, and count from 0 again after a successful reconnection. One
  exception: ``unauthorized`` (HTTP 401/403) gives up at once, where the reference would
  retry a wrong token five times.
- Everything beyond the reference is off by default: a cap on the delay, jitter, resetting
  the count only after the connection stayed up ``reset_after`` seconds, an OTP-style
  intensity limit, and a per-reason hook.
- One guard is always on, outside the policy: `RestartFloor`, which the supervisor applies to
  every decision so that a policy answering ``Restart(0)`` for ever cannot spin a device in
  a hot reconnect loop. It never changes the default backoff (its delays are all above it).
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Callable
from typing import Protocol

import attrs

from ._checks import (
    int_field,
    int_problem,
    non_negative,
    non_negative_field,
    number_problem,
    optional_positive_field,
)
from ._errors import ConfigurationError
from ._reasons import FailureReason

__all__ = [
    "Decision",
    "FailureReason",
    "GiveUp",
    "Jitter",
    "RandomSource",
    "Restart",
    "RestartFloor",
    "RestartHistory",
    "RestartPolicy",
]


class Jitter(enum.StrEnum):
    NONE = "none"
    FULL = "full"  # uniform in [0, d]
    EQUAL = "equal"  # d/2 + uniform in [0, d/2]
    DECORRELATED = "decorrelated"  # uniform in [base, 3 * previous], capped


class RandomSource(Protocol):
    """Anything with ``random() -> float`` in [0, 1): `random.Random`, or a test's stub."""

    def random(self) -> float: ...


@attrs.frozen
class Restart:
    """Reconnect after ``delay`` seconds."""

    delay: float

    def __attrs_post_init__(self) -> None:
        non_negative("Restart delay", self.delay)


@attrs.frozen
class GiveUp:
    """Stop reconnecting; the device stays FAILED. ``why`` says so in words."""

    why: str


Decision = Restart | GiveUp

# A per-reason hook: given the failure reason and the number of reconnection attempts
# already made since the last success, return a Decision to override the default, or None
# to use the backoff. Example: restart at once after a heartbeat timeout, never after a
# protocol error.
ReasonHook = Callable[[FailureReason, int], Decision | None]


@attrs.frozen
class RestartHistory:
    """What the policy needs to remember about one device, as a value.

    ``attempts`` is the reference's ``connection_attempts``: reconnection attempts made since
    the last success (or the last reset). ``quick_restarts`` and ``next_attempt_at`` are
    `RestartFloor`'s: restarts in a row after attempts that ended almost at once, and when
    the attempt after the last restart was due to start.
    """

    attempts: int = 0
    restart_times: tuple[float, ...] = ()
    last_delay: float | None = None
    up_since: float | None = None
    quick_restarts: int = 0
    next_attempt_at: float | None = None


def _check_intensity(
    _instance: object,
    _attribute: attrs.Attribute[tuple[int, float] | None],
    value: tuple[int, float] | None,
) -> None:
    if value is None:
        return
    restarts, period = value
    if int_problem(restarts, minimum=1) or number_problem(period):
        raise ConfigurationError(
            f"intensity must be (restarts >= 1, period > 0 seconds), got {value!r}"
        )


def _to_jitter(value: Jitter | str) -> Jitter:
    try:
        return Jitter(value)
    except ValueError:
        choices = ", ".join(j.value for j in Jitter)
        raise ConfigurationError(f"jitter must be one of {choices}; got {value!r}") from None


@attrs.frozen
class RestartPolicy:
    """When to reconnect a failed device. A plain value: share one among many devices.

    >>> policy = RestartPolicy()
    >>> [policy.backoff(n) for n in range(5)]
    [5.0, 10.0, 20.0, 40.0, 80.0]

    Arguments:
        reconnect_delay: delay before the first reconnection attempt; it doubles each time.
        max_retries: attempts before giving up (a device's own ``max_retries`` overrides it).
        max_delay: cap on any delay, None for no cap.
        jitter: spread the delays so a fleet does not reconnect in lock step.
        reset_after: None resets the attempt count on every successful reconnection (the
            reference); a number resets it only once a connection stayed up that long.
        intensity: ``(R, T)``: give up when R restarts already happened within T seconds.
        per_reason: a hook that may decide differently for some failure reasons. Its
            decision is final (no ``max_retries``, no intensity limit), with two guards
            the supervisor keeps: a hook that raises, or answers something other than a
            `Restart` or a `GiveUp`, gives up that device only (logged with the traceback);
            and `RestartFloor`: after 5 immediate restarts in a row (each after an attempt
            that ended within 0.25 s of starting), every restart waits at least 0.25 s,
            until an attempt lasts longer. ``Restart(0)`` after a heartbeat timeout stays
            immediate: that connection lived for seconds.

    By default ``unauthorized`` (HTTP 401/403 at the handshake) gives up at once, whatever
    ``max_retries``: retrying with the same wrong token only hammers the server, and no
    backoff makes it right. Every other reason backs off. A ``per_reason`` hook that answers
    for `FailureReason.UNAUTHORIZED` decides instead, e.g. to retry while a server's tokens
    are being rotated::

        def retry_unauthorized(reason, attempts):
            if reason is FailureReason.UNAUTHORIZED and attempts < 3:
                return Restart(60.0 * (attempts + 1))
            return None  # the default: unauthorized gives up, the rest back off

    .. warning:: A ``per_reason`` decision is final: it is not checked against
       ``max_retries`` or ``intensity``. A hook that returns ``Restart(0.0)`` for a failure
       that happens again at once (a rejected registration, a refused connection) reconnects
       in a tight loop: thousands of attempts a second against the server, and under a virtual
       clock time never moves on. Return a growing delay (``attempts`` counts the failed
       attempts), or ``None`` to fall through to the backoff and its ``max_retries``.
       ``reconnect_delay=0`` with a large ``max_retries`` does the same up to its limit.
       The supervisor's restart floor spaces such restarts (see above), and
       ``galaxy_actors.testing.run_scenario`` fails a scenario that makes no progress in
       virtual time with ``ScenarioStalled``.
    """

    reconnect_delay: float = attrs.field(default=5.0, validator=non_negative_field)
    max_retries: int = attrs.field(default=5, validator=int_field(0))
    max_delay: float | None = attrs.field(default=None, validator=optional_positive_field)
    jitter: Jitter = attrs.field(default=Jitter.NONE, converter=_to_jitter)
    reset_after: float | None = attrs.field(default=None, validator=optional_positive_field)
    intensity: tuple[int, float] | None = attrs.field(default=None, validator=_check_intensity)
    per_reason: ReasonHook | None = attrs.field(default=None, eq=False)

    def backoff(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` without jitter: the cap applied."""
        try:
            delay = self.reconnect_delay * 2.0**attempt
        except OverflowError:  # attempt >= 1024: a retry-for-ever policy, hours in
            delay = math.inf
        if self.max_delay is not None:
            return min(delay, self.max_delay)
        return delay if math.isfinite(delay) else sys.float_info.max

    def delay_bounds(self, attempt: int, previous: float | None) -> tuple[float, float]:
        """The closed interval the jittered delay of ``attempt`` falls in."""
        base = self.backoff(attempt)
        if self.jitter is Jitter.NONE:
            return base, base
        if self.jitter is Jitter.FULL:
            return 0.0, base
        if self.jitter is Jitter.EQUAL:
            return base / 2, base
        low = self.reconnect_delay
        high = max(low, 3 * (previous if previous is not None else low))
        if self.max_delay is not None:
            low, high = min(low, self.max_delay), min(high, self.max_delay)
        return low, high

    def delay(self, attempt: int, rng: RandomSource, previous: float | None = None) -> float:
        low, high = self.delay_bounds(attempt, previous)
        if low == high:
            return low
        return low + (high - low) * rng.random()

    def decide(
        self, history: RestartHistory, reason: FailureReason, now: float, rng: RandomSource
    ) -> Decision:
        """Decide after a failure. Pure: ``history`` is not changed (see `record`)."""
        history = self._as_of(history, now)
        attempts = history.attempts
        if self.per_reason is not None:
            override = self.per_reason(reason, attempts)
            if override is not None:
                return override
        if reason is FailureReason.UNAUTHORIZED:
            return GiveUp("the server refused our credentials (HTTP 401/403): not retrying")
        if attempts >= self.max_retries:
            return GiveUp(f"exceeded max retries ({self.max_retries})")
        if self.intensity is not None:
            limit, period = self.intensity
            recent = sum(1 for t in history.restart_times if now - t < period)
            if recent >= limit:
                return GiveUp(f"more than {limit} restarts within {period:g} s")
        return Restart(self.delay(attempts, rng, history.last_delay))

    def effective_attempts(self, history: RestartHistory, now: float) -> int:
        """The attempt count as of ``now``: zero if the last connection stayed up for
        ``reset_after`` seconds."""
        return self._as_of(history, now).attempts

    def _as_of(self, history: RestartHistory, now: float) -> RestartHistory:
        # A connection that stayed up long enough starts the backoff afresh: the count and
        # the decorrelated jitter's memory of the last delay alike.
        if (
            self.reset_after is not None
            and history.up_since is not None
            and now - history.up_since >= self.reset_after
        ):
            return attrs.evolve(history, attempts=0, last_delay=None)
        return history

    def record(self, history: RestartHistory, decision: Decision, now: float) -> RestartHistory:
        """The history after ``decision`` was taken at ``now`` (a failure)."""
        history = self._as_of(history, now)
        attempts = history.attempts
        if isinstance(decision, GiveUp):
            return attrs.evolve(history, attempts=attempts, up_since=None)
        times = history.restart_times
        if self.intensity is not None:
            period = self.intensity[1]
            times = (*(t for t in times if now - t < period), now)
        return attrs.evolve(
            history,
            attempts=attempts + 1,
            restart_times=times,
            last_delay=decision.delay,
            up_since=None,
        )

    def connected(self, history: RestartHistory, now: float) -> RestartHistory:
        """The history after a connection came up at ``now``."""
        if self.reset_after is None:
            return attrs.evolve(history, attempts=0, last_delay=None, up_since=now)
        return attrs.evolve(history, up_since=now)


@attrs.frozen
class RestartFloor:
    """The least a restart waits once a device restarts in a hot loop; the supervisor
    applies it to every decision, whichever policy took it.

    A policy may answer ``Restart(0)`` (at once), and a per-reason hook may do so for ever.
    After a connection that lived, that is what the user wants; after an attempt that was
    refused in a millisecond, it is a loop that reconnects as fast as the CPU allows and
    floods the logs and the server. The floor tells the two apart by how long the failed
    attempt lasted, not by the reason or the attempt count (a connection that registers and
    is closed at once resets the count every time):

    - an attempt is *quick* when it ended less than ``delay`` seconds after it was due to
      start (the first attempt, whose start the floor does not know, counts as quick);
    - the first ``immediate`` restarts in a row after quick attempts keep the policy's delay;
    - from the next one on, a delay under ``delay`` becomes ``delay``, until an attempt
      lasts ``delay`` seconds or more.

    So a device that keeps failing at once makes at most one attempt per ``delay`` seconds
    after a burst of ``immediate + 1``. Delays of ``delay`` or more are never changed: the
    default backoff (5 s and up) is untouched. Sans-IO like the policy: values in, values
    out; the state lives in `RestartHistory`.

    >>> floor = RestartFloor(delay=0.25, immediate=1)
    >>> history = RestartHistory()
    >>> first, history = floor.apply(history, Restart(0.0), now=0.0)
    >>> second, history = floor.apply(history, Restart(0.0), now=0.0)
    >>> first, second
    (Restart(delay=0.0), Restart(delay=0.25))
    """

    delay: float = attrs.field(default=0.25, validator=non_negative_field)
    immediate: int = attrs.field(default=5, validator=int_field(0))

    def apply(
        self, history: RestartHistory, decision: Decision, now: float
    ) -> tuple[Decision, RestartHistory]:
        """The decision to carry out at ``now`` and the history after it. ``history`` is
        the policy's history after `RestartPolicy.record` (which keeps the floor's fields)."""
        if isinstance(decision, GiveUp):
            return decision, attrs.evolve(history, quick_restarts=0, next_attempt_at=None)
        started = history.next_attempt_at
        quick = started is None or now - started < self.delay
        streak = history.quick_restarts + 1 if quick else 0
        if streak > self.immediate and decision.delay < self.delay:
            decision = Restart(self.delay)
        return decision, attrs.evolve(
            history, quick_restarts=streak, next_attempt_at=now + decision.delay
        )
