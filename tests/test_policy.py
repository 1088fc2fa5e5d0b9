"""The restart policy, sans-IO: driven through decide/record/connected as a device drives it."""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from galaxy_actors._sansio._errors import ConfigurationError
from galaxy_actors._sansio._policy import (
    Decision,
    FailureReason,
    GiveUp,
    Jitter,
    Restart,
    RestartHistory,
    RestartPolicy,
)

R = FailureReason


class Device:
    """Drives a policy the way a device actor does: decide, then record, on each failure."""

    def __init__(self, policy: RestartPolicy, seed: int = 0) -> None:
        self.policy = policy
        self.history = RestartHistory()
        self.rng = random.Random(seed)

    def fail(self, now: float, reason: FailureReason = R.CONNECTION_CLOSED) -> Decision:
        decision = self.policy.decide(self.history, reason, now, self.rng)
        self.history = self.policy.record(self.history, decision, now)
        return decision

    def connected(self, now: float) -> None:
        self.history = self.policy.connected(self.history, now)

    def fail_until_give_up(self, start: float = 0.0, limit: int = 100) -> list[Decision]:
        decisions: list[Decision] = []
        now = start
        for _ in range(limit):
            decision = self.fail(now)
            decisions.append(decision)
            if isinstance(decision, GiveUp):
                return decisions
            now += decision.delay
        raise AssertionError("the policy never gave up")


def delays(decisions: Iterable[Decision]) -> list[float]:
    return [d.delay for d in decisions if isinstance(d, Restart)]


class Fixed:
    """A random source that always answers the same number."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


# --------------------------------------------------------------------------- the reference


def test_defaults_are_the_reference_settings() -> None:
    policy = RestartPolicy()
    assert policy.reconnect_delay == 5.0
    assert policy.max_retries == 5
    assert policy.max_delay is None
    assert policy.jitter is Jitter.NONE
    assert policy.reset_after is None
    assert policy.intensity is None
    assert policy.per_reason is None


def test_defaults_reproduce_the_reference_backoff_and_give_up() -> None:
    decisions = Device(RestartPolicy()).fail_until_give_up()
    assert decisions[:5] == [Restart(5.0), Restart(10.0), Restart(20.0), Restart(40.0),
                             Restart(80.0)]  # fmt: skip
    assert len(decisions) == 6
    give_up = decisions[5]
    assert isinstance(give_up, GiveUp)
    assert "5" in give_up.why
    assert "retries" in give_up.why


def test_give_up_is_sticky_until_a_connection() -> None:
    device = Device(RestartPolicy())
    device.fail_until_give_up()
    assert device.history.attempts == 5
    assert isinstance(device.fail(1000.0), GiveUp)
    assert isinstance(device.fail(2000.0), GiveUp)


def test_backoff_formula_and_doctest_values() -> None:
    policy = RestartPolicy()
    assert [policy.backoff(n) for n in range(5)] == [5.0, 10.0, 20.0, 40.0, 80.0]
    assert RestartPolicy(reconnect_delay=0.5).backoff(3) == 4.0
    assert RestartPolicy(reconnect_delay=0).backoff(10) == 0.0


def test_decide_is_pure() -> None:
    policy = RestartPolicy()
    history = RestartHistory(attempts=2)
    first = policy.decide(history, R.HEARTBEAT_TIMEOUT, 10.0, random.Random(1))
    second = policy.decide(history, R.HEARTBEAT_TIMEOUT, 10.0, random.Random(1))
    assert first == second == Restart(20.0)
    assert history == RestartHistory(attempts=2)


def test_attempts_reset_after_a_successful_connection() -> None:
    device = Device(RestartPolicy())
    assert delays([device.fail(0.0), device.fail(5.0), device.fail(15.0)]) == [5, 10, 20]
    device.connected(35.0)
    assert device.history.attempts == 0
    # The very next failure starts the backoff again, however soon it comes.
    assert device.fail(35.5) == Restart(5.0)
    assert device.fail(40.5) == Restart(10.0)


def test_a_connection_after_give_up_makes_the_device_restartable_again() -> None:
    device = Device(RestartPolicy(max_retries=2))
    assert isinstance(device.fail_until_give_up()[-1], GiveUp)
    device.connected(500.0)
    assert device.fail(501.0) == Restart(5.0)


def test_per_device_max_retries_via_evolve() -> None:
    shared = RestartPolicy()
    strict = attrs.evolve(shared, max_retries=2)
    assert delays(Device(strict).fail_until_give_up()) == [5.0, 10.0]
    assert len(delays(Device(shared).fail_until_give_up())) == 5
    assert isinstance(Device(attrs.evolve(shared, max_retries=0)).fail(0.0), GiveUp)
    with pytest.raises(ConfigurationError):
        attrs.evolve(shared, max_retries=-1)


# --------------------------------------------------------------------------- reset_after


def test_reset_after_resets_only_if_the_connection_stayed_up_long_enough() -> None:
    policy = RestartPolicy(reset_after=60.0, max_retries=10)
    device = Device(policy)
    device.fail(0.0)
    device.fail(5.0)
    assert device.history.attempts == 2
    # Up for 30 s only: the count carries on.
    device.connected(100.0)
    assert policy.effective_attempts(device.history, 130.0) == 2
    assert device.fail(130.0) == Restart(20.0)
    # Up for exactly 60 s: reset.
    device.connected(200.0)
    assert policy.effective_attempts(device.history, 259.9) == 3
    assert policy.effective_attempts(device.history, 260.0) == 0
    assert device.fail(260.0) == Restart(5.0)
    assert device.history.attempts == 1


def test_reset_after_flapping_connection_still_gives_up() -> None:
    policy = RestartPolicy(reset_after=60.0, max_retries=3)
    device = Device(policy)
    now = 0.0
    decisions = []
    for _ in range(4):
        decision = device.fail(now)
        decisions.append(decision)
        if isinstance(decision, Restart):
            now += decision.delay
            device.connected(now)
            now += 1.0  # drops one second after every reconnection
    assert delays(decisions) == [5.0, 10.0, 20.0]
    assert isinstance(decisions[-1], GiveUp)


def test_reset_after_keeps_no_up_time_across_a_failure() -> None:
    policy = RestartPolicy(reset_after=60.0)
    device = Device(policy)
    device.connected(0.0)
    device.fail(10.0)
    # The connection that came up at 0 is gone: time since then does not reset anything.
    assert policy.effective_attempts(device.history, 1000.0) == 1


def test_reset_after_also_restarts_decorrelated_jitter_from_the_base() -> None:
    policy = RestartPolicy(
        reconnect_delay=1.0, jitter=Jitter.DECORRELATED, reset_after=60.0, max_retries=20
    )
    device = Device(policy)
    device.rng = Fixed(0.999)  # type: ignore[assignment]  # the top of each interval
    now = 0.0
    for _ in range(8):
        decision = device.fail(now)
        assert isinstance(decision, Restart)
        now += decision.delay
    device.connected(now)
    # Up for an hour: a fresh start, as after a reset with reset_after=None.
    fresh = Device(attrs.evolve(policy, reset_after=None))
    fresh.connected(0.0)
    expected_bounds = policy.delay_bounds(0, fresh.history.last_delay)
    assert expected_bounds == (1.0, 3.0)
    decision = device.fail(now + 3600.0)
    assert isinstance(decision, Restart)
    assert expected_bounds[0] <= decision.delay <= expected_bounds[1]


# --------------------------------------------------------------------------- max_delay


def test_max_delay_caps_every_delay() -> None:
    policy = RestartPolicy(max_delay=30.0, max_retries=8)
    assert delays(Device(policy).fail_until_give_up()) == [5, 10, 20, 30, 30, 30, 30, 30]


def test_max_delay_below_the_first_delay() -> None:
    policy = RestartPolicy(reconnect_delay=5.0, max_delay=1.0, max_retries=3)
    assert delays(Device(policy).fail_until_give_up()) == [1.0, 1.0, 1.0]


def test_max_delay_holds_for_a_long_lived_retry_forever_policy() -> None:
    policy = RestartPolicy(reconnect_delay=1.0, max_delay=30.0, max_retries=10_000)
    assert policy.backoff(2000) == 30.0
    decision = policy.decide(RestartHistory(attempts=2000), R.CONNECT_FAILED, 0.0, random.Random())
    assert decision == Restart(30.0)


# --------------------------------------------------------------------------- jitter


@pytest.mark.parametrize("jitter", list(Jitter))
@pytest.mark.parametrize("max_delay", [None, 25.0])
def test_jittered_delays_stay_within_bounds(jitter: Jitter, max_delay: float | None) -> None:
    policy = RestartPolicy(jitter=jitter, max_delay=max_delay, max_retries=8)
    rng = random.Random(1234)
    previous: float | None = None
    for attempt in range(8):
        for _ in range(50):
            low, high = policy.delay_bounds(attempt, previous)
            value = policy.delay(attempt, rng, previous)
            assert low <= value <= high
            if max_delay is not None:
                assert value <= max_delay
        previous = value


@pytest.mark.parametrize("jitter", list(Jitter))
def test_jitter_is_deterministic_for_the_same_seed(jitter: Jitter) -> None:
    policy = RestartPolicy(jitter=jitter, max_retries=10)
    first = Device(policy, seed=42).fail_until_give_up()
    again = Device(policy, seed=42).fail_until_give_up()
    assert first == again
    assert len(first) == 11


@pytest.mark.parametrize("jitter", [Jitter.FULL, Jitter.EQUAL, Jitter.DECORRELATED])
def test_jitter_spreads_a_fleet(jitter: Jitter) -> None:
    policy = RestartPolicy(jitter=jitter)
    first_delays = {Device(policy, seed=seed).fail(0.0) for seed in range(20)}
    assert len(first_delays) > 10


def test_full_jitter_is_uniform_in_zero_to_backoff() -> None:
    policy = RestartPolicy(jitter=Jitter.FULL)
    for attempt, d in enumerate([5.0, 10.0, 20.0, 40.0, 80.0]):
        assert policy.delay_bounds(attempt, None) == (0.0, d)
        assert policy.delay(attempt, Fixed(0.0)) == 0.0
        assert policy.delay(attempt, Fixed(0.5)) == d / 2
        assert d * 0.99 <= policy.delay(attempt, Fixed(0.999)) <= d


def test_equal_jitter_is_in_half_to_full_backoff() -> None:
    policy = RestartPolicy(jitter=Jitter.EQUAL)
    for attempt, d in enumerate([5.0, 10.0, 20.0, 40.0, 80.0]):
        assert policy.delay_bounds(attempt, None) == (d / 2, d)
        assert policy.delay(attempt, Fixed(0.0)) == d / 2
        assert d * 0.99 <= policy.delay(attempt, Fixed(0.999)) <= d


def test_decorrelated_jitter_is_in_base_to_three_times_previous_capped() -> None:
    policy = RestartPolicy(jitter=Jitter.DECORRELATED, reconnect_delay=2.0)
    assert policy.delay_bounds(0, None) == (2.0, 6.0)
    assert policy.delay_bounds(3, 10.0) == (2.0, 30.0)
    # A tiny previous delay never puts the top under the base.
    assert policy.delay_bounds(1, 0.1) == (2.0, 2.0)
    capped = attrs.evolve(policy, max_delay=20.0)
    assert capped.delay_bounds(3, 10.0) == (2.0, 20.0)
    assert capped.delay(3, Fixed(0.999), 10.0) <= 20.0


def test_decorrelated_jitter_follows_the_previous_delay() -> None:
    policy = RestartPolicy(jitter=Jitter.DECORRELATED, reconnect_delay=1.0, max_retries=30)
    device = Device(policy, seed=7)
    previous = None
    for _ in range(30):
        decision = device.fail(0.0)
        assert isinstance(decision, Restart)
        high = 3 * (previous if previous is not None else 1.0)
        assert 1.0 <= decision.delay <= max(1.0, high)
        previous = decision.delay
        assert device.history.last_delay == decision.delay


# --------------------------------------------------------------------------- intensity


def test_intensity_gives_up_after_r_restarts_within_t_seconds() -> None:
    policy = RestartPolicy(reconnect_delay=1.0, max_retries=100, intensity=(3, 60.0))
    device = Device(policy)
    assert delays([device.fail(0.0), device.fail(1.0), device.fail(3.0)]) == [1.0, 2.0, 4.0]
    decision = device.fail(7.0)
    assert isinstance(decision, GiveUp)
    assert "3 restarts within 60 s" in decision.why


def test_intensity_counts_restarts_across_successful_connections() -> None:
    # A flapping device reconnects fine every time, and still trips the limit.
    policy = RestartPolicy(reconnect_delay=1.0, intensity=(3, 60.0))
    device = Device(policy)
    for now in (0.0, 10.0, 20.0):
        assert device.fail(now) == Restart(1.0)
        device.connected(now + 1.0)
    decision = device.fail(30.0)
    assert isinstance(decision, GiveUp)
    assert "within 60 s" in decision.why


def test_intensity_forgets_restarts_outside_the_window() -> None:
    policy = RestartPolicy(reconnect_delay=1.0, intensity=(3, 60.0))
    device = Device(policy)
    for now in (0.0, 10.0, 20.0):
        assert isinstance(device.fail(now), Restart)
        device.connected(now + 1.0)
    # At 60 the restart at 0 is exactly one period old: outside the window.
    assert device.fail(60.0) == Restart(1.0)
    device.connected(61.0)
    # 10, 20 and 60 are within 60 s of 65.
    assert isinstance(device.fail(65.0), GiveUp)


def test_intensity_history_stays_bounded() -> None:
    policy = RestartPolicy(reconnect_delay=0.0, intensity=(5, 10.0))
    device = Device(policy)
    for i in range(200):
        assert isinstance(device.fail(i * 3.0), Restart)
        device.connected(i * 3.0)
    assert len(device.history.restart_times) <= 5


# --------------------------------------------------------------------------- per_reason hook


def reference_hook(reason: FailureReason, attempts: int) -> Decision | None:
    """The reference's _handle_device_disconnection override example."""
    if reason is FailureReason.HEARTBEAT_TIMEOUT:
        return Restart(0.0)
    if reason is FailureReason.PROTOCOL_ERROR:
        return GiveUp("protocol errors are not retried")
    return None


def test_per_reason_hook_overrides_for_its_reasons_only() -> None:
    policy = RestartPolicy(per_reason=reference_hook)
    device = Device(policy)
    assert device.fail(0.0, R.HEARTBEAT_TIMEOUT) == Restart(0.0)
    assert device.fail(1.0, R.CONNECT_FAILED) == Restart(10.0)  # backoff, attempt 1
    assert device.fail(2.0, R.HEARTBEAT_TIMEOUT) == Restart(0.0)
    assert device.fail(3.0, R.CONNECTION_CLOSED) == Restart(40.0)  # attempt 3
    assert device.fail(4.0, R.PROTOCOL_ERROR) == GiveUp("protocol errors are not retried")


def test_per_reason_give_up_on_the_first_protocol_error() -> None:
    device = Device(RestartPolicy(per_reason=reference_hook))
    decision = device.fail(0.0, R.PROTOCOL_ERROR)
    assert decision == GiveUp("protocol errors are not retried")


def test_per_reason_hook_sees_the_attempt_count() -> None:
    seen: list[tuple[FailureReason, int]] = []

    def hook(reason: FailureReason, attempts: int) -> Decision | None:
        seen.append((reason, attempts))
        return None

    device = Device(RestartPolicy(per_reason=hook, reset_after=None))
    device.fail(0.0, R.CONNECT_FAILED)
    device.fail(1.0, R.TASK_TIMEOUT)
    device.connected(2.0)
    device.fail(3.0, R.HEARTBEAT_TIMEOUT)
    assert seen == [(R.CONNECT_FAILED, 0), (R.TASK_TIMEOUT, 1), (R.HEARTBEAT_TIMEOUT, 0)]


@pytest.mark.parametrize("policy", [RestartPolicy(), RestartPolicy(max_retries=100)])
def test_unauthorized_gives_up_at_once_by_default(policy: RestartPolicy) -> None:
    # A wrong token stays wrong: no retry storm against the server.
    decision = Device(policy).fail(0.0, R.UNAUTHORIZED)
    assert isinstance(decision, GiveUp) and "401/403" in decision.why
    # The other handshake failures back off as before.
    for reason in (R.TLS_FAILED, R.HANDSHAKE_FAILED, R.CONNECT_FAILED):
        assert Device(policy).fail(0.0, reason) == Restart(5.0)


def test_a_hook_can_retry_unauthorized() -> None:
    def retry_unauthorized(reason: FailureReason, attempts: int) -> Decision | None:
        if reason is R.UNAUTHORIZED and attempts < 2:
            return Restart(60.0)
        return None

    device = Device(RestartPolicy(per_reason=retry_unauthorized))
    assert device.fail(0.0, R.UNAUTHORIZED) == Restart(60.0)
    assert device.fail(60.0, R.UNAUTHORIZED) == Restart(60.0)
    assert isinstance(device.fail(120.0, R.UNAUTHORIZED), GiveUp)


def test_policies_with_different_hooks_compare_equal() -> None:
    # The hook is not part of the value (eq=False): settings compare, functions do not.
    assert RestartPolicy(per_reason=reference_hook) == RestartPolicy()


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "kwargs",
    [
        {"reconnect_delay": -1.0},
        {"reconnect_delay": math.nan},
        {"reconnect_delay": math.inf},
        {"max_retries": -1},
        {"max_retries": True},
        {"max_retries": 2.0},
        {"max_delay": 0},
        {"max_delay": -5.0},
        {"max_delay": math.nan},
        {"reset_after": 0},
        {"reset_after": math.nan},
        {"intensity": (0, 10.0)},
        {"intensity": (3, 0.0)},
        {"intensity": (3, math.inf)},
    ],
    ids=repr,
)
def test_invalid_settings_raise_configuration_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_configuration_error_is_a_value_error_for_ported_code() -> None:
    with pytest.raises(ValueError):
        RestartPolicy(reconnect_delay=-1.0)


def test_unknown_jitter_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        RestartPolicy(jitter="sometimes")  # type: ignore[arg-type]


def test_jitter_accepts_its_wire_names() -> None:
    assert RestartPolicy(jitter="full").jitter is Jitter.FULL  # type: ignore[arg-type]


@pytest.mark.parametrize("delay", [-1.0, -1e-9, math.nan, math.inf])
def test_invalid_restart_delay_raises(delay: float) -> None:
    with pytest.raises(ConfigurationError):
        Restart(delay)


def test_zero_restart_delay_is_allowed() -> None:
    assert Restart(0).delay == 0


# --------------------------------------------------------------------------- state machine


class DeviceModel(RuleBasedStateMachine):
    """A device failing and connecting at random times, checked against a simple model of the
    reference: attempts count restarts since the last (long enough) connection."""

    @initialize(
        reconnect_delay=st.sampled_from([0.0, 0.5, 1.0, 5.0]),
        max_retries=st.integers(min_value=0, max_value=6),
        max_delay=st.none() | st.sampled_from([1.0, 7.5, 30.0]),
        reset_after=st.none() | st.sampled_from([1.0, 10.0, 60.0]),
        seed=st.integers(0, 2**16),
    )
    def setup(
        self,
        reconnect_delay: float,
        max_retries: int,
        max_delay: float | None,
        reset_after: float | None,
        seed: int,
    ) -> None:
        self.policy = RestartPolicy(
            reconnect_delay=reconnect_delay,
            max_retries=max_retries,
            max_delay=max_delay,
            reset_after=reset_after,
        )
        self.rng = random.Random(seed)
        self.history = RestartHistory()
        self.now = 0.0
        # The model.
        self.attempts = 0
        self.up_since: float | None = None
        self.consecutive_restarts = 0
        self.gave_up = False

    @precondition(lambda self: not self.gave_up)
    @rule(reason=st.sampled_from(FailureReason), dt=st.floats(0.0, 120.0))
    def fail(self, reason: FailureReason, dt: float) -> None:
        self.now += dt
        policy = self.policy
        if (
            policy.reset_after is not None
            and self.up_since is not None
            and self.now - self.up_since >= policy.reset_after
        ):
            self.attempts = 0
        self.up_since = None
        decision = policy.decide(self.history, reason, self.now, self.rng)
        self.history = policy.record(self.history, decision, self.now)
        if reason is FailureReason.UNAUTHORIZED or self.attempts == policy.max_retries:
            assert isinstance(decision, GiveUp), (self.attempts, decision)
            self.gave_up = True
        else:
            assert isinstance(decision, Restart), (self.attempts, decision)
            expected = policy.reconnect_delay * 2**self.attempts
            if policy.max_delay is not None:
                expected = min(expected, policy.max_delay)
            assert decision.delay == expected == policy.backoff(self.attempts)
            self.attempts += 1
            self.consecutive_restarts += 1
            # The restart takes its delay before anything else can happen.
            self.now += decision.delay

    @rule(dt=st.floats(0.0, 120.0))
    def connect(self, dt: float) -> None:
        self.now += dt
        self.history = self.policy.connected(self.history, self.now)
        self.up_since = self.now
        self.consecutive_restarts = 0
        self.gave_up = False
        if self.policy.reset_after is None:
            self.attempts = 0

    @invariant()
    def attempts_match_the_model(self) -> None:
        assert self.history.attempts == self.attempts
        assert self.policy.effective_attempts(self.history, self.now) == (
            0
            if self.policy.reset_after is not None
            and self.up_since is not None
            and self.now - self.up_since >= self.policy.reset_after
            else self.attempts
        )

    @invariant()
    def never_more_than_max_retries_restarts_without_a_connect(self) -> None:
        assert self.consecutive_restarts <= self.policy.max_retries
        assert self.attempts <= self.policy.max_retries

    @invariant()
    def reset_after_none_means_fresh_count_after_connect(self) -> None:
        if self.policy.reset_after is None and self.up_since is not None:
            assert self.history.attempts == 0


DeviceModel.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestDeviceModel = DeviceModel.TestCase
