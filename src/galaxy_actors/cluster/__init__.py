"""galaxy_actors.cluster: several supervisor processes ("nodes") sharing one fleet through
Redis/Valkey Streams, over coredis (the ``cluster`` extra).

The API:

- ``open_node(redis_url, NodeSettings(name, fleet="default", lease=LeaseSettings(...)),
  **open_supervisor_options)``: an async context manager running one node: an ordinary
  supervisor whose devices are the ones it holds leases for. Yields a `Node`
  (``node.supervisor``, ``node.served``: device ids connected here, ``node.ownership``).
  Raises `ClusterUnavailable` when Redis cannot be reached at start. Leaving the block
  normally releases its leases; an exception or cancellation leaves them to expire.
- ``open_client(redis_url, fleet="default")`` -> `ClusterClient`:
  ``define_device(device_id, url, os, capabilities=..., metadata=..., max_retries=...)``,
  ``remove_device(device_id)``, ``submit(description, data, device_id=... | capabilities=
  [...], task_id=None, task_timeout=1000, delivery="at_most_once", priority=0) -> task_id``
  (idempotent by task id; `DuplicateTaskId` for another request under a known id),
  ``outcome(task_id)`` (None until ended), ``state(task_id)`` (queued/sent/ended/None),
  ``result(task_id)`` (waits; returns the `ExecutionResult` or the `TaskError`),
  ``watch()`` (async iterator of `OutcomeEvent`), ``status()`` -> `ClusterStatus`
  (live nodes, each device's lease holder), ``watch_status(interval)`` (each change).
- `LeaseSettings(lease_ttl=15, renew_interval=3, margin=2)`: a dead node's devices are
  taken within ``takeover_bound`` = lease_ttl + renew_interval (plus a round trip).
- `rendezvous_owner(device_id, nodes)`, `FleetKeys(fleet)`: the spread and the key layout
  (every key tagged ``{fleet}``: one Redis Cluster slot per fleet).

Guarantees, and their limits (the modules' docstrings say more: `_ownership`, `_node`):

- A device is served by one node at a time: the fencing rule stops a node ``margin``
  seconds before its lease can expire (its own clock; ``margin`` covers clock drift and
  the close of the connections), writes are fenced by the lease epoch, and a node waits
  ``lease_ttl`` after (re)joining before it takes any lease, so even a Redis restarted
  empty cannot hand a device to two nodes. A new cluster therefore serves nothing for its
  first ``lease_ttl``.
- Tasks: marked ``sent`` in Redis before the frame leaves (an at-most-once task waits for
  that), outcome written with the acknowledgement in one script; after a failover a task
  never sent runs, an at-least-once one sent runs again, an at-most-once one sent ends
  `OutcomeUnknown`.
- Redis away: no new work, devices stay connected and finish what they hold, outcomes are
  written when Redis returns (``node.redis_ok`` tells); past ``lease_ttl - margin`` since
  the last renewal the fencing rule disconnects the devices. Tasks survive a Redis restart
  only if Redis persists its data (append-only file).
- One fleet's keys share one hash tag, so a fleet lives on one Redis Cluster shard; larger
  installations run several fleets.
"""

from .._public import fixup_module_metadata
from .._sansio._errors import ClusterUnavailable as ClusterUnavailable
from ._client import ClusterClient as ClusterClient
from ._client import ClusterStatus as ClusterStatus
from ._client import OutcomeEvent as OutcomeEvent
from ._client import open_client as open_client
from ._keys import FleetKeys as FleetKeys
from ._node import Node as Node
from ._node import NodeSettings as NodeSettings
from ._node import open_node as open_node
from ._ownership import LeaseSettings as LeaseSettings
from ._ownership import rendezvous_owner as rendezvous_owner

__all__ = [
    "ClusterClient",
    "ClusterStatus",
    "ClusterUnavailable",
    "FleetKeys",
    "LeaseSettings",
    "Node",
    "NodeSettings",
    "OutcomeEvent",
    "open_client",
    "open_node",
    "rendezvous_owner",
]

fixup_module_metadata(__name__, globals(), __all__)
del fixup_module_metadata
