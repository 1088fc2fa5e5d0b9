"""The ``[cluster]`` table: what a node's configuration loads, and every kind of mistake.

A node with a wrong lease setting could lose its devices to another node while it still
serves them, so such a file is refused before anything starts, saying which key and why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from galaxy_actors._process._config import Config, ConfigError, load_config, parse_config
from galaxy_actors._process._config_cluster import REDIS_URL_ENV

DEVICE = '[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:9/ws"\n'
CLUSTER = '[cluster]\nredis_url = "redis://127.0.0.1:6379/0"\nnode = "node-a"\n'


def parse(text: str, **environ: str) -> Config:
    return parse_config(text, source="node.toml", environ=environ)


def error_of(text: str, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, **environ)
    return info.value


def test_a_minimal_cluster_table_loads_with_its_defaults() -> None:
    config = parse(CLUSTER + DEVICE)
    cluster = config.cluster
    assert cluster is not None
    assert (cluster.redis_url, cluster.node, cluster.fleet) == (
        "redis://127.0.0.1:6379/0",
        "node-a",
        "default",
    )
    assert cluster.renew_interval + cluster.fence_margin < cluster.lease_ttl
    assert cluster.failover_bound == cluster.lease_ttl + cluster.renew_interval


def test_without_a_cluster_table_the_process_runs_alone() -> None:
    assert parse(DEVICE).cluster is None


def test_every_setting_is_read() -> None:
    text = (
        '[cluster]\nredis_url = "rediss://:pw@redis.example:6380/2"\nnode = "eu-1.a"\n'
        'fleet = "fleet_b"\nlease_ttl = 2\nrenew_interval = 0.5\nfence_margin = 0.25\n'
        "outcome_retention = 600\n"
    )
    cluster = parse(text).cluster
    assert cluster is not None
    assert (cluster.node, cluster.fleet) == ("eu-1.a", "fleet_b")
    assert (cluster.lease_ttl, cluster.renew_interval, cluster.fence_margin) == (2, 0.5, 0.25)
    assert cluster.outcome_retention == 600
    assert cluster.failover_bound == 2.5


def test_a_short_lease_gets_a_renewal_interval_that_fits_it() -> None:
    cluster = parse(CLUSTER + "lease_ttl = 1.5\n").cluster
    assert cluster is not None
    assert (cluster.renew_interval, cluster.fence_margin) == (0.3, 0.3)


def test_a_node_needs_no_devices_of_its_own_the_fleet_is_in_redis() -> None:
    assert parse(CLUSTER).devices == ()


def test_a_node_journals_in_redis_not_in_a_local_file(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(CLUSTER + DEVICE)
    assert load_config(path, environ={}).journal.path is None
    error = error_of(CLUSTER + "[journal]\nenabled = true\n" + DEVICE)
    assert error.key == "journal"
    assert "Redis" in error.problem


def test_a_node_serves_no_control_endpoint() -> None:
    assert parse(CLUSTER + "[control]\nenabled = false\n").cluster is not None
    error = error_of(CLUSTER + '[control]\nhost = "127.0.0.1"\n')
    assert error.key == "control"
    assert "--cluster" in error.problem


def test_the_redis_url_may_come_from_the_environment() -> None:
    text = '[cluster]\nnode = "n1"\n'
    cluster = parse(text, **{REDIS_URL_ENV: "redis://:s3cret@10.0.0.5:6379"}).cluster
    assert cluster is not None
    assert cluster.redis_url == "redis://:s3cret@10.0.0.5:6379"
    error = error_of(text)
    assert error.key == "cluster.redis_url"
    assert REDIS_URL_ENV in error.problem


@pytest.mark.parametrize(
    ("line", "key", "words"),
    [
        ('redis_url = "http://127.0.0.1:6379"', "cluster.redis_url", "scheme"),
        ('redis_url = "redis://:6379"', "cluster.redis_url", "no host"),
        ('redis_url = "redis://127.0.0.1:99999"', "cluster.redis_url", "not a valid URL"),
        ('redis_url = "redis://127.0.0.1:0"', "cluster.redis_url", "port 0"),
        ('redis_url = "redis://127.0.0.1/zero"', "cluster.redis_url", "database number"),
        ('redis_url = "unix://"', "cluster.redis_url", "socket path"),
        ('redis_url = ""', "cluster.redis_url", "must not be empty"),
        ("lease_ttl = 0", "cluster.lease_ttl", "> 0"),
        ('lease_ttl = "10"', "cluster.lease_ttl", "expected a number"),
        ("lease_ttl = 4\nrenew_interval = 3.5", "cluster", "fence itself"),
        ("fence_margin = -1", "cluster.fence_margin", "> 0"),
        ('fleet = "a{b}"', "cluster.fleet", "letters, digits"),
        ("lease_tl = 3", "cluster.lease_tl", "did you mean 'lease_ttl'"),
    ],
)
def test_a_mistake_names_its_key(line: str, key: str, words: str) -> None:
    text = "[cluster]\n" + "\n".join(
        entry
        for entry in ('redis_url = "redis://127.0.0.1:6379/0"', 'node = "node-a"', line)
        if not (line.startswith("redis_url") and entry.startswith("redis_url =")) or entry == line
    )
    error = error_of(text + "\n")
    assert error.key == key
    assert words in error.problem
    assert str(error).startswith(f"node.toml: {key}: ")


@pytest.mark.parametrize("node", ["", "node a", "{node}", "x" * 65, "-lead"])
def test_a_node_name_that_cannot_sit_in_a_redis_key_is_refused(node: str) -> None:
    error = error_of(f'[cluster]\nredis_url = "redis://127.0.0.1"\nnode = "{node}"\n')
    assert error.key == "cluster.node"


def test_a_missing_node_name_is_refused() -> None:
    error = error_of('[cluster]\nredis_url = "redis://127.0.0.1"\n')
    assert (error.key, error.problem) == ("cluster.node", "missing (required)")


def test_a_redis_password_never_appears_in_an_error() -> None:
    error = error_of('[cluster]\nredis_url = "redis://:hunter2@127.0.0.1/x"\nnode = "a"\n')
    assert "hunter2" not in str(error)
    error = error_of('[cluster]\nredis_url = "http://:hunter2@127.0.0.1"\nnode = "a"\n')
    assert "hunter2" not in str(error)
