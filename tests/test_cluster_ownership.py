"""The cluster's ownership rules (galaxy_actors.cluster._ownership), without Redis or Trio.

The property drives several nodes' `Ownership` through a model of Redis on virtual time:
each node's round (heartbeat, then renew / release / acquire) crosses the network with a
drawn latency, Redis applies it when it arrives and sets expiries on its own clock; nodes die
(their connections close), lose Redis for a while (they keep serving until their fencing
deadline), and Redis may restart empty. After every event it checks that no device is
connected by two nodes, and that a dead node's devices are connected again within the
stated bound.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from galaxy_actors.cluster._ownership import LeaseSettings, Ownership, rendezvous_owner

SETTINGS = LeaseSettings(lease_ttl=3.0, renew_interval=1.0, margin=0.5)


def test_rendezvous_spreads_devices_and_moves_only_the_leavers_share() -> None:
    devices = [f"d{i}" for i in range(600)]
    nodes = ["a", "b", "c"]
    before = {d: rendezvous_owner(d, nodes) for d in devices}
    counts = Counter(before.values())
    assert set(counts) == set(nodes)
    assert min(counts.values()) > 150  # about 200 each
    after = {d: rendezvous_owner(d, ["a", "b"]) for d in devices}
    moved = [d for d in devices if before[d] != after[d]]
    assert all(before[d] == "c" for d in moved)
    assert rendezvous_owner("d0", []) is None


def test_settings_refuse_a_node_that_would_fence_itself() -> None:
    with pytest.raises(ValueError, match="fence itself"):
        LeaseSettings(lease_ttl=3.0, renew_interval=2.5, margin=0.5)
    with pytest.raises(ValueError, match="margin"):
        LeaseSettings(margin=0)


def test_a_node_stops_serving_before_its_lease_can_expire() -> None:
    own = Ownership("a", SETTINGS)
    own.joined(0.0, fresh=True)
    assert own.plan(1.0, ["a"], ["d"]).acquire == ()  # the join wait
    assert own.plan(3.0, ["a"], ["d"]).acquire == ("d",)
    own.acquired("d", epoch=1, started_at=3.0)
    assert own.serves("d", 5.49)
    assert not own.serves("d", 5.5)  # 3.0 + ttl - margin: Redis expires it at 6.0 at best
    own.renewed("d", started_at=4.0, ok=True)
    assert own.deadline("d") == 6.5
    assert own.expired(6.4) == []
    assert own.expired(6.5) == ["d"]
    assert own.held == {}


def test_a_moving_device_is_drained_once_and_a_lost_lease_is_forgotten() -> None:
    own = Ownership("a", SETTINGS)
    own.joined(0.0, fresh=True)
    own.acquired("d", epoch=1, started_at=0.0)
    own.acquired("e", epoch=1, started_at=0.0)
    gone = [d for d in ("d", "e") if rendezvous_owner(d, ["a", "b"]) != "a"]
    plan = own.plan(1.0, ["a", "b"], ["d", "e"])
    assert set(plan.drain) == set(gone)
    assert own.plan(1.0, ["a", "b"], ["d", "e"]).drain == ()  # already draining
    own.renewed("d", 1.0, ok=False)
    assert "d" not in own.held


# ---------------------------------------------------------------- the simulation


@attrs.define
class Lease:
    holder: str
    epoch: int
    expires: float


@attrs.define
class RedisModel:
    leases: dict[str, Lease] = attrs.Factory(dict)
    epochs: Counter[str] = attrs.Factory(Counter)
    members: dict[str, float] = attrs.Factory(dict)

    def heartbeat(self, node: str, now: float, ttl: float) -> tuple[bool, list[str]]:
        fresh = self.members.get(node, -1.0) <= now
        self.members[node] = now + ttl
        return fresh, [n for n, until in self.members.items() if until > now]

    def lease(self, device: str, now: float) -> Lease | None:
        lease = self.leases.get(device)
        return lease if lease is not None and lease.expires > now else None

    def renew(self, node: str, device: str, epoch: int, now: float, ttl: float) -> bool:
        lease = self.lease(device, now)
        if lease is None or (lease.holder, lease.epoch) != (node, epoch):
            return False
        lease.expires = now + ttl
        return True

    def release(self, node: str, device: str, epoch: int, now: float) -> None:
        lease = self.lease(device, now)
        if lease is not None and (lease.holder, lease.epoch) == (node, epoch):
            del self.leases[device]

    def acquire(self, node: str, device: str, now: float, ttl: float) -> int | None:
        if self.lease(device, now) is not None:
            return None
        self.epochs[device] += 1
        self.leases[device] = Lease(node, self.epochs[device], now + ttl)
        return self.epochs[device]


@attrs.define
class SimNode:
    own: Ownership
    alive: bool = True
    connected: set[str] = attrs.Factory(set)


@attrs.frozen
class Scenario:
    nodes: int
    devices: int
    latency: float
    phases: tuple[float, ...]
    deaths: tuple[tuple[int, float], ...]
    outages: tuple[tuple[int | None, float, float], ...]  # node (None: all), start, length
    wipe_at: float | None


scenarios = st.builds(
    Scenario,
    nodes=st.integers(2, 4),
    devices=st.integers(1, 8),
    latency=st.sampled_from([0.0, 0.01, 0.05]),
    phases=st.lists(st.floats(0, 1), min_size=4, max_size=4).map(tuple),
    deaths=st.lists(st.tuples(st.integers(0, 3), st.floats(4, 30)), max_size=2).map(tuple),
    outages=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.floats(4, 30), st.floats(0.1, 6)),
        max_size=2,
    ).map(tuple),
    wipe_at=st.one_of(st.none(), st.floats(5, 30)),
)

END = 45.0


def _reachable(scenario: Scenario, node: int, t: float) -> bool:
    return not any(
        (who is None or who == node) and start <= t < start + length
        for who, start, length in scenario.outages
    )


def simulate(scenario: Scenario, ownership: type[Ownership] = Ownership) -> None:
    s = SETTINGS
    redis = RedisModel()
    nodes = [SimNode(ownership(f"n{i}", s)) for i in range(scenario.nodes)]
    devices = [f"dev{i}" for i in range(scenario.devices)]
    d = scenario.latency
    seq = itertools.count()
    events: list[tuple[float, int, int, str, tuple[object, ...]]] = []

    def push(t: float, kind: str, *args: object, first: bool = False) -> None:
        heapq.heappush(events, (t, 0 if first else 1, next(seq), kind, args))

    def fence(i: int, now: float) -> None:
        node = nodes[i]
        for device in node.own.expired(now):
            node.connected.discard(device)
        node.connected &= set(node.own.held)  # a lost lease was forgotten: disconnect it
        schedule_fence(i, now)

    scheduled: dict[int, float] = {}

    def schedule_fence(i: int, now: float) -> None:
        deadline = nodes[i].own.next_deadline()
        if now < deadline < float("inf") and scheduled.get(i) != deadline:
            scheduled[i] = deadline
            push(deadline, "fence", i, first=True)

    def connect(i: int, device: str, now: float) -> None:
        for j, other in enumerate(nodes):
            assert j == i or not (other.alive and device in other.connected), (
                f"{device} connected by n{i} and n{j} at {now}"
            )
        nodes[i].connected.add(device)

    for i in range(scenario.nodes):
        push(scenario.phases[i], "tick", i)
    for who, when in scenario.deaths:
        if who < scenario.nodes:
            push(when, "death", who)
    if scenario.wipe_at is not None:
        push(scenario.wipe_at, "wipe")
    deaths: list[tuple[float, set[str]]] = []
    connects: dict[str, list[float]] = {}

    while events:
        now, _, _, kind, args = heapq.heappop(events)
        if now > END:
            break
        if kind == "wipe":
            redis = RedisModel()
            continue
        i = args[0]
        assert isinstance(i, int)
        node = nodes[i]
        if not node.alive:
            continue
        if kind == "death":
            node.alive = False
            deaths.append((now, set(node.connected)))
            node.connected.clear()
            continue
        if kind == "fence":
            fence(i, now)
            continue
        if kind == "tick":
            push(now + s.renew_interval, "tick", i)
            push(now + d, "hb", i, now)
        elif kind == "hb":  # arrives at Redis
            sent = args[1]
            if not _reachable(scenario, i, now):
                continue  # the node learns nothing this round
            fresh, live = redis.heartbeat(node.own.node, now, s.lease_ttl)
            push(now + d, "plan", i, sent, fresh, tuple(live))
        elif kind == "plan":  # the reply is back: send the round
            sent, fresh, live = args[1], args[2], args[3]
            assert isinstance(sent, float) and isinstance(live, tuple)
            node.own.joined(sent, fresh=bool(fresh))
            plan = node.own.plan(now, live, devices)
            for device in plan.drain:
                node.connected.discard(device)  # disconnect first, release after
            epochs = {dev: node.own.held[dev].epoch for dev in plan.renew}
            push(now + d, "round", i, now, plan, epochs)
        elif kind == "round":  # arrives at Redis
            started, plan, epochs = args[1], args[2], args[3]
            assert isinstance(started, float) and isinstance(epochs, dict)
            if not _reachable(scenario, i, now):
                continue
            name = node.own.node
            renewed = {}
            for device, epoch in epochs.items():
                if device in plan.drain:  # type: ignore[attr-defined]
                    redis.release(name, device, epoch, now)
                else:
                    renewed[device] = redis.renew(name, device, epoch, now, s.lease_ttl)
            acquired = {
                device: redis.acquire(name, device, now, s.lease_ttl)
                for device in plan.acquire  # type: ignore[attr-defined]
            }
            push(now + d, "reply", i, started, plan, renewed, acquired)
        elif kind == "reply":
            started, plan, renewed, acquired = args[1], args[2], args[3], args[4]
            assert isinstance(started, float)
            assert isinstance(renewed, dict) and isinstance(acquired, dict)
            for device in plan.drain:  # type: ignore[attr-defined]
                node.own.released(device)
            for device, ok in renewed.items():
                node.own.renewed(device, started, ok)
            fence(i, now)
            for device, epoch in acquired.items():
                if epoch is not None:
                    node.own.acquired(device, epoch, started)
                    if node.own.serves(device, now):
                        connect(i, device, now)
                        connects.setdefault(device, []).append(now)
            schedule_fence(i, now)

    # The bound: a dead node's devices connected elsewhere within ttl + renew_interval and
    # two round trips, where nothing else disturbed that window.
    bound = s.takeover_bound + 8 * d + 1e-9
    for died, held in deaths:
        end = died + bound
        if end > END or not held or len(deaths) > 1:
            continue
        if scenario.wipe_at is not None and died - s.lease_ttl <= scenario.wipe_at <= end:
            continue
        if any(
            start < end and start + length > died - s.lease_ttl
            for _, start, length in scenario.outages
        ):
            continue
        for device in held:
            times = connects.get(device, [])
            assert any(died < t <= end for t in times), (
                f"{device} of a node dead at {died} not re-owned by {end}: {times}"
            )


@settings(max_examples=150, deadline=None)
@given(scenarios)
def test_property_one_owner_at_a_time_and_takeover_within_the_bound(scenario: Scenario) -> None:
    simulate(scenario)


class NoFencing(Ownership):
    """A node that serves for as long as it believes it holds the lease."""

    def serves(self, device_id: str, now: float) -> bool:
        return device_id in self.held

    def expired(self, now: float) -> list[str]:
        return []


def test_the_simulation_catches_a_node_that_ignores_the_fencing_rule() -> None:
    """The property is not vacuous: a node cut off from Redis that serves on past its
    deadline is still connected when another node takes its devices."""
    scenario = Scenario(2, 6, 0.01, (0.0, 0.5, 0, 0), (), ((0, 10.0, 8.0),), None)
    simulate(scenario)
    with pytest.raises(AssertionError, match="connected by"):
        simulate(scenario, NoFencing)


class SlowTakeover(Ownership):
    """A node that, after the fleet settled, waits far too long before taking a lease."""

    def may_acquire(self, now: float) -> bool:
        return super().may_acquire(now) and (now < 10 or now > 25)


def test_the_simulation_catches_a_takeover_slower_than_the_bound() -> None:
    scenario = Scenario(3, 8, 0.01, (0.0, 0.3, 0.6, 0.0), ((0, 12.0),), (), None)
    simulate(scenario)
    with pytest.raises(AssertionError, match="not re-owned"):
        simulate(scenario, SlowTakeover)
