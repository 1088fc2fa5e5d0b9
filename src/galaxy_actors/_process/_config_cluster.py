"""The ``[cluster]`` table of the process's configuration file.

With it, ``galaxy-actors run`` runs one node of a cluster: several processes sharing one
fleet through Redis (or Valkey) Streams, each device owned by one live node at a time under
a lease (``docs/cluster.md``). Without it the process supervises its devices alone.

Rules of this file, as for the other sections: everything is checked here, before anything
starts; a mistake names the key and what is wrong; a Redis URL's password never appears in
a message (`ConfigError` masks URLs).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from ._config_values import ValueReader

__all__ = [
    "CLUSTER_KEYS",
    "REDIS_URL_ENV",
    "ClusterConfig",
    "read_cluster",
    "validate_node_name",
    "validate_redis_url",
]

#: Environment variable holding the Redis URL when the file has none (it may carry a password).
REDIS_URL_ENV: Final = "GALAXY_ACTORS_REDIS_URL"
CLUSTER_KEYS: Final = (
    "redis_url",
    "node",
    "fleet",
    "lease_ttl",
    "renew_interval",
    "fence_margin",
    "outcome_retention",
)
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
# Names go into Redis keys and hash tags: braces would change which slot a key hashes to,
# and spaces or control characters make keys nobody can type in redis-cli.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@attrs.frozen
class ClusterConfig:
    """A validated ``[cluster]`` table.

    ``lease_ttl``: how long a device's lease lasts without renewal; a dead node's devices
    are owned again within ``lease_ttl + renew_interval``. ``renew_interval``: how often a
    live node renews its leases. ``fence_margin``: a node stops serving a device this long
    before its lease could expire in Redis (the fencing rule, docs/cluster.md), which covers
    the drift between its clock and Redis's. ``outcome_retention``: how long a task's
    outcome stays readable by id.
    """

    redis_url: str
    node: str
    fleet: str = "default"
    lease_ttl: float = 15.0
    renew_interval: float = 3.0
    fence_margin: float = 2.0
    outcome_retention: float = 86400.0

    @property
    def failover_bound(self) -> float:
        """Seconds within which a dead node's devices have a new owner."""
        return self.lease_ttl + self.renew_interval


def validate_redis_url(url: str) -> None:
    """Raise ValueError saying what is wrong with ``url`` as a Redis/Valkey address:
    ``redis://[:password@]host[:port][/db]``, ``rediss://`` (TLS) or ``unix:///path``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in REDIS_SCHEMES:
        schemes = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
        raise ValueError(f"the scheme must be one of {schemes}; got {url!r}")
    if parts.scheme == "unix":
        if not parts.path:
            raise ValueError(f"a unix:// URL needs a socket path, unix:///path; got {url!r}")
        return
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    if port == 0:
        raise ValueError(f"port 0 is not a server's port: {url!r}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"the path must be a database number (/0), got /{db}")


def validate_node_name(name: str) -> None:
    """Raise ValueError unless ``name`` can name a node or fleet in Redis keys."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"must be 1 to 64 letters, digits, '.', '_', ':' or '-', starting with a letter "
            f"or digit; got {name!r}"
        )


def read_cluster(
    reader: ValueReader, t: dict[str, Any], environ: Mapping[str, str]
) -> ClusterConfig:
    """Validate the ``[cluster]`` table ``t``; ``environ`` supplies ``$GALAXY_ACTORS_REDIS_URL``
    when the table has no ``redis_url``."""
    p = "cluster"
    reader.known_keys(t, CLUSTER_KEYS, p)
    d = ClusterConfig("", "")
    if "redis_url" in t:
        url = reader.string(t, "redis_url", p, "")
        if not url:
            raise reader.fail(
                f"{p}.redis_url", f"must not be empty (leave it out to use ${REDIS_URL_ENV})"
            )
    else:
        url = environ.get(REDIS_URL_ENV, "")
        if not url:
            raise reader.fail(f"{p}.redis_url", f"missing (required): set it, or ${REDIS_URL_ENV}")
    try:
        validate_redis_url(url)
    except ValueError as exc:
        raise reader.fail(f"{p}.redis_url", str(exc)) from None
    names: dict[str, str] = {}
    for key in ("node", "fleet"):
        value = (
            reader.required_string(t, key, p)
            if key == "node"
            else reader.string(t, key, p, d.fleet)
        )
        try:
            validate_node_name(value)
        except ValueError as exc:
            raise reader.fail(f"{p}.{key}", str(exc)) from None
        names[key] = value
    lease_ttl = reader.seconds(t, "lease_ttl", p, d.lease_ttl)
    # A short lease alone gets a renewal and a margin that fit in it.
    renew_interval = reader.seconds(t, "renew_interval", p, min(d.renew_interval, lease_ttl / 5))
    fence_margin = reader.seconds(t, "fence_margin", p, min(d.fence_margin, lease_ttl / 5))
    if renew_interval + fence_margin >= lease_ttl:
        raise reader.fail(
            p,
            f"renew_interval + fence_margin ({renew_interval:g} + {fence_margin:g} s) must be "
            f"less than lease_ttl ({lease_ttl:g} s): a live node would fence itself off its "
            f"own devices between two renewals",
        )
    return ClusterConfig(
        redis_url=url,
        node=names["node"],
        fleet=names["fleet"],
        lease_ttl=lease_ttl,
        renew_interval=renew_interval,
        fence_margin=fence_margin,
        outcome_retention=reader.seconds(t, "outcome_retention", p, d.outcome_retention),
    )
