"""Which node serves which device, and until when: the cluster's ownership rules, sans-IO.

Everything here is values in, values out: no Redis, no Trio, no clock. The node runtime
(`_node.py`) feeds it the live nodes, the fleet's devices, the results of its Redis calls and
the time on its own monotonic clock; a Hypothesis property (tests/test_cluster_ownership.py)
feeds it simulated ones, with lease expiry, node deaths and Redis outages on virtual time.

The rules:

- **Spread.** A device's owner is the live node with the highest rendezvous hash of
  (node, device): each node computes the same answer from the same membership, and a node
  joining or leaving moves only the devices it wins or held.
- **Lease.** A node serves a device only while it holds the device's lease in Redis: set if
  absent with an expiry of ``lease_ttl``, renewed every ``renew_interval`` by a script that
  checks the holder. Taking a lease increments the device's epoch, the fencing token.
- **Fencing rule.** A node serves a device only while its *own* monotonic clock says
  ``now < renewal_started + lease_ttl - margin``, where ``renewal_started`` is when it sent
  the last renewal (or acquisition) that succeeded. Redis set the expiry on receiving that
  request, so no earlier than ``renewal_started + lease_ttl``: the node stops, whatever Redis
  or the network is doing, ``margin`` seconds before any other node can take the lease
  (``margin`` covers the two clocks' drift). Writes carry the epoch and are refused by Redis
  once the lease is someone else's, so a node that was paused past its deadline cannot write.
- **Join wait.** A node acquires nothing until ``lease_ttl`` after it joined (or rejoined:
  its membership had vanished, as when Redis restarted empty). Any lease held before that
  moment is then past its holder's fencing deadline, so even a Redis that lost its data
  cannot hand one device to two nodes.
- **Drain.** A device that moves is first disconnected by its old owner, then released; the
  new owner's acquisition only succeeds after that (or after the lease expires), so no
  device is ever connected by two nodes at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

import attrs

__all__ = ["Held", "LeaseSettings", "Ownership", "Plan", "rendezvous_owner"]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, not {value!r}")


@attrs.frozen
class LeaseSettings:
    """Lease timing, in seconds. A healthy node renews every ``renew_interval``, well within
    ``lease_ttl - margin``; a dead node's devices are taken within ``lease_ttl +
    renew_interval`` (plus a Redis round trip) of its last renewal."""

    lease_ttl: float = attrs.field(default=15.0, validator=_positive)
    renew_interval: float = attrs.field(default=3.0, validator=_positive)
    margin: float = attrs.field(default=2.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.renew_interval + self.margin >= self.lease_ttl:
            raise ValueError(
                f"renew_interval + margin ({self.renew_interval} + {self.margin}) must be less "
                f"than lease_ttl ({self.lease_ttl}): a healthy node would fence itself"
            )

    @property
    def serve_budget(self) -> float:
        """How long after a renewal was sent its node may still serve the device."""
        return self.lease_ttl - self.margin

    @property
    def takeover_bound(self) -> float:
        """A dead node's devices are re-owned this long after its last renewal, at most
        (plus one Redis round trip)."""
        return self.lease_ttl + self.renew_interval


def _score(node: str, device_id: str) -> int:
    digest = hashlib.blake2b(f"{node}\0{device_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(device_id: str, nodes: Iterable[str]) -> str | None:
    """The node that should own ``device_id`` among ``nodes`` (None when there is none)."""
    best: tuple[int, str] | None = None
    for node in nodes:
        candidate = (_score(node, device_id), node)
        if best is None or candidate > best:
            best = candidate
    return None if best is None else best[1]


@attrs.define
class Held:
    """A lease this node holds: its epoch, when its last good renewal was sent, and whether
    the device is being handed over (disconnected, then released)."""

    epoch: int
    renewed_at: float
    draining: bool = False


@attrs.frozen
class Plan:
    """What one round does: leases to renew (all held), devices to drain (disconnect, then
    release), and devices to try to acquire."""

    renew: tuple[str, ...]
    drain: tuple[str, ...]
    acquire: tuple[str, ...]


@attrs.define(eq=False)
class Ownership:
    """One node's leases and the rules above. Times are the node's monotonic clock."""

    node: str
    settings: LeaseSettings = attrs.field(factory=LeaseSettings)
    held: dict[str, Held] = attrs.field(factory=dict)
    #: When the current membership began (None: not a member yet).
    member_since: float | None = None

    def joined(self, now: float, *, fresh: bool) -> None:
        """A heartbeat sent at ``now`` succeeded; ``fresh``: Redis did not know this node
        (first join, or its membership had expired or been lost): the join wait starts."""
        if fresh or self.member_since is None:
            self.member_since = now

    def may_acquire(self, now: float) -> bool:
        """Whether the join wait is over."""
        return self.member_since is not None and now >= self.member_since + self.settings.lease_ttl

    def serves(self, device_id: str, now: float) -> bool:
        """Whether the fencing rule lets this node serve ``device_id`` at ``now``."""
        held = self.held.get(device_id)
        return held is not None and now < held.renewed_at + self.settings.serve_budget

    def deadline(self, device_id: str) -> float:
        """When this node must have stopped serving ``device_id`` unless renewed."""
        return self.held[device_id].renewed_at + self.settings.serve_budget

    def next_deadline(self) -> float:
        """The earliest fencing deadline of the leases held (inf: none held)."""
        return min((self.deadline(d) for d in self.held), default=float("inf"))

    def expired(self, now: float) -> list[str]:
        """Devices whose fencing deadline has passed: forgotten here, and the caller must
        disconnect them at once (their lease may be another node's by now)."""
        gone = [d for d in self.held if not self.serves(d, now)]
        for device_id in gone:
            del self.held[device_id]
        return gone

    def plan(self, now: float, live_nodes: Collection[str], devices: Collection[str]) -> Plan:
        """The next round, from the membership and the fleet just read. This node counts
        as live (it has just said so). Devices to drain are marked as draining; nothing is
        acquired during the join wait."""
        nodes = set(live_nodes) | {self.node}
        drain: list[str] = []
        for device_id, held in self.held.items():
            wanted = device_id in devices and rendezvous_owner(device_id, nodes) == self.node
            if not wanted and not held.draining:
                held.draining = True
                drain.append(device_id)
        acquire = [
            d
            for d in sorted(devices)
            if d not in self.held and rendezvous_owner(d, nodes) == self.node
        ]
        if not self.may_acquire(now):
            acquire = []
        return Plan(tuple(self.held), tuple(drain), tuple(acquire))

    def renewed(self, device_id: str, started_at: float, ok: bool) -> None:
        """A renewal sent at ``started_at`` came back. Not ok: the lease is lost (expired,
        or taken): forget it, and the caller disconnects the device at once."""
        held = self.held.get(device_id)
        if held is None:
            return
        if ok:
            held.renewed_at = max(held.renewed_at, started_at)
        else:
            del self.held[device_id]

    def acquired(self, device_id: str, epoch: int, started_at: float) -> None:
        """An acquisition sent at ``started_at`` succeeded with ``epoch``."""
        self.held[device_id] = Held(epoch, started_at)

    def released(self, device_id: str) -> None:
        """The drained device's lease was released (or found gone)."""
        self.held.pop(device_id, None)
