"""galaxy_actors.cluster: several supervisor processes ("nodes") sharing one fleet through
Redis/Valkey Streams (needs the ``cluster`` extra: coredis).

Work in progress; the API so far (docs/cluster.md will describe the whole):

- `LeaseSettings(lease_ttl=15, renew_interval=3, margin=2)`: lease timing, validated; a
  dead node's devices are taken within ``takeover_bound`` (= lease_ttl + renew_interval).
- `rendezvous_owner(device_id, nodes)`: which live node should own a device.
- `FleetKeys(fleet)`: the key layout, every key tagged ``{fleet}`` (one Redis Cluster slot).
"""

from ._keys import FleetKeys as FleetKeys
from ._ownership import LeaseSettings as LeaseSettings
from ._ownership import rendezvous_owner as rendezvous_owner

__all__ = ["FleetKeys", "LeaseSettings", "rendezvous_owner"]
