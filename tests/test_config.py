"""The supervisor process's TOML configuration: what loads, and every kind of mistake.

Each mistake must name the file, the key path and what is wrong, so a user can fix it
without reading the code; nothing may be silently ignored.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from galaxy_actors import ConfigurationError, Jitter, open_supervisor
from galaxy_actors._process._config import (
    TOKEN_ENV,
    Config,
    ConfigError,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "supervisor.toml"
DEVICE = '[[devices]]\ndevice_id = "pc"\nserver_url = "ws://127.0.0.1:9/ws"\n'


def parse(text: str, **environ: str) -> Config:
    return parse_config(text, source="test.toml", environ=environ)


def error_of(text: str, **environ: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, **environ)
    return info.value


# --------------------------------------------------------------------------- what loads


def test_the_shipped_example_loads_with_every_setting() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.source == str(EXAMPLE)
    assert [d.device_id for d in config.devices] == ["office_pc", "lab_mac"]
    office = config.devices[0]
    assert office.capabilities == ("office", "web")
    assert office.metadata == {"location": "office", "floor": 3}
    assert office.max_retries == 3
    assert config.devices[1].max_retries is None
    assert config.devices[1].server_url.endswith("?token=agent-api-key")
    policy = config.supervisor.policy
    assert policy.jitter is Jitter.EQUAL
    assert policy.intensity == (20, 3600.0)
    assert (policy.max_delay, policy.reset_after) == (60.0, 300.0)
    # Relative to the file's folder, not to the working directory.
    assert config.control.address_file == EXAMPLE.parent / "supervisor.address"
    assert config.control.token is None


def test_docs_show_the_shipped_example_verbatim() -> None:
    docs = (ROOT / "docs" / "process.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", docs, re.DOTALL)
    assert EXAMPLE.read_text(encoding="utf-8") in blocks


def test_a_file_with_only_devices_gets_the_defaults() -> None:
    config = parse(DEVICE)
    sup = config.supervisor
    settings = sup.settings
    assert (settings.heartbeat_interval, settings.heartbeat_timeout) == (30, 10)
    assert settings.shutdown_grace == 5
    assert sup.policy.reconnect_delay == 5.0 and sup.policy.max_retries == 5
    assert settings.max_concurrent_connections == 64 and settings.max_queue is None
    assert config.control.host == "127.0.0.1" and config.control.port == 0
    assert config.control.token is None and config.control.address_file is None
    assert (config.logging.format, config.logging.level) == ("text", "info")
    assert config.devices[0].os == "unknown"


def test_the_token_comes_from_the_environment_when_the_file_has_none() -> None:
    assert parse(DEVICE, **{TOKEN_ENV: "from-env"}).control.token == "from-env"
    text = f'[control]\ntoken = "from-file"\n{DEVICE}'
    assert parse(text, **{TOKEN_ENV: "from-env"}).control.token == "from-file"


def test_a_non_loopback_address_is_fine_with_a_token() -> None:
    text = f'[control]\nhost = "0.0.0.0"\ntoken = "s3cret"\n{DEVICE}'
    assert parse(text).control.host == "0.0.0.0"
    assert parse(f'[control]\nhost = "0.0.0.0"\n{DEVICE}', **{TOKEN_ENV: "t"}).control.token
    # ...and needs none when the endpoint is off.
    assert not parse(f'[control]\nenabled = false\nhost = "10.0.0.1"\n{DEVICE}').control.enabled


async def test_the_options_open_a_supervisor() -> None:
    config = parse(f"[restart]\nmax_delay = 2.0\n{DEVICE}")
    async with open_supervisor(**config.supervisor.supervisor_options()) as sup:
        assert sup.policy.max_delay == 2.0
        assert sup.settings.heartbeat_interval == 30.0


# --------------------------------------------------------------------------- mistakes


def test_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: no such file"


def test_invalid_toml_names_the_file_and_the_line() -> None:
    error = error_of(f"{DEVICE}\n[supervisor\nheartbeat_interval = 1\n")
    assert str(error).startswith("test.toml: invalid TOML:")
    assert "line 5" in str(error)


def test_an_unknown_key_is_refused_with_a_suggestion() -> None:
    error = error_of(f"[supervisor]\nheartbeat_intervall = 2\n{DEVICE}")
    assert error.key == "supervisor.heartbeat_intervall"
    assert "unknown key (did you mean 'heartbeat_interval'?)" in error.problem
    assert str(error).startswith("test.toml: supervisor.heartbeat_intervall: unknown key")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"[supervisr]\n{DEVICE}", "supervisr"),
        (f"[restart]\nretries = 3\n{DEVICE}", "restart.retries"),
        (
            f"[restart]\nintensity = {{ restarts = 2, periode = 1 }}\n{DEVICE}",
            "restart.intensity.periode",
        ),
        (f"[control]\nadress_file = 'x'\n{DEVICE}", "control.adress_file"),
        (f"[logging]\nformats = 'json'\n{DEVICE}", "logging.formats"),
        (f"{DEVICE}capabilites = ['web']\n", "devices[0].capabilites"),
    ],
)
def test_unknown_keys_anywhere(text: str, key: str) -> None:
    error = error_of(text)
    assert error.key == key
    assert error.problem.startswith("unknown key")


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            f'[supervisor]\nheartbeat_interval = "30"\n{DEVICE}',
            "supervisor.heartbeat_interval",
            "expected a number, got string '30'",
        ),
        (
            f"[supervisor]\nshutdown_grace = true\n{DEVICE}",
            "supervisor.shutdown_grace",
            "expected a number, got boolean True",
        ),
        (
            f"[restart]\nmax_retries = 2.5\n{DEVICE}",
            "restart.max_retries",
            "expected an integer, got float 2.5",
        ),
        (f"[control]\nport = '8080'\n{DEVICE}", "control.port", "expected an integer"),
        (f"[control]\nenabled = 1\n{DEVICE}", "control.enabled", "expected a boolean"),
        (f"supervisor = 3\n{DEVICE}", "supervisor", "expected a table, got integer 3"),
        (
            f"{DEVICE}capabilities = 'web'\n",
            "devices[0].capabilities",
            "expected an array of strings",
        ),
        (
            f"{DEVICE}capabilities = ['web', 3]\n",
            "devices[0].capabilities",
            "expected an array of strings",
        ),
        (f"{DEVICE}metadata = 'x'\n", "devices[0].metadata", "expected a table"),
        (
            f"{DEVICE}metadata = {{ when = 2024-01-01 }}\n",
            "devices[0].metadata.when",
            "use a string for dates and times",
        ),
        (f"{DEVICE}os = 10\n", "devices[0].os", "expected a string"),
        ('devices = "pc"\n', "devices", "expected an array of tables"),
        ("devices = [1]\n", "devices[0]", "expected a table, got integer 1"),
    ],
)
def test_wrong_types(text: str, key: str, problem: str) -> None:
    error = error_of(text)
    assert error.key == key
    assert problem in error.problem


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        (
            f"[restart]\nreconnect_delay = -1\n{DEVICE}",
            "restart.reconnect_delay",
            "must be a finite number >= 0, got -1",
        ),
        (
            f"[supervisor]\nheartbeat_interval = 0\n{DEVICE}",
            "supervisor.heartbeat_interval",
            "must be a finite number > 0, got 0",
        ),
        (
            f"[supervisor]\nheartbeat_timeout = inf\n{DEVICE}",
            "supervisor.heartbeat_timeout",
            "finite",
        ),
        (f"[restart]\nmax_delay = nan\n{DEVICE}", "restart.max_delay", "finite"),
        (
            f"[restart]\njitter = 'random'\n{DEVICE}",
            "restart.jitter",
            "must be one of none, full, equal, decorrelated; got 'random'",
        ),
        (f"[restart]\nmax_retries = -1\n{DEVICE}", "restart.max_retries", "must be an int >= 0"),
        (
            f"[restart]\nintensity = {{ restarts = 0, period = 60 }}\n{DEVICE}",
            "restart.intensity.restarts",
            "must be an int >= 1",
        ),
        (
            f"[restart]\nintensity = {{ restarts = 3 }}\n{DEVICE}",
            "restart.intensity",
            "needs both restarts and period",
        ),
        (f"[supervisor]\ntask_name = 'a@b'\n{DEVICE}", "supervisor.task_name", "without '@'"),
        (
            f"[supervisor]\nmax_concurrent_connections = 0\n{DEVICE}",
            "supervisor.max_concurrent_connections",
            "must be an int >= 1 or None, got 0",
        ),
        (f"[control]\nport = 70000\n{DEVICE}", "control.port", "from 0 to 65535"),
        (f"[control]\ntoken = ''\n{DEVICE}", "control.token", "must not be empty"),
        (f"[logging]\nlevel = 'verbose'\n{DEVICE}", "logging.level", "must be one of debug"),
        (f"[logging]\nformat = 'xml'\n{DEVICE}", "logging.format", "must be one of text, json"),
        (f"{DEVICE}max_retries = -2\n", "devices[0].max_retries", "must be an int >= 0"),
    ],
)
def test_bad_values(text: str, key: str, problem: str) -> None:
    error = error_of(text)
    assert error.key == key
    assert problem in error.problem


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/ws", "scheme must be ws:// or wss://"),
        ("ws:///ws", "no host"),
        ("ws://127.0.0.1:0/ws", "port 0"),
        ("ws://127.0.0.1:99999/ws", "invalid server_url"),
    ],
)
def test_a_bad_server_url_names_the_device_entry(url: str, why: str) -> None:
    devices = "".join(
        f'[[devices]]\ndevice_id = "d{i}"\nserver_url = "ws://127.0.0.1:9/ws"\n' for i in range(2)
    )
    error = error_of(f'{devices}[[devices]]\ndevice_id = "d2"\nserver_url = "{url}"\n')
    assert error.key == "devices[2].server_url"
    assert why in error.problem
    assert str(error).startswith("test.toml: devices[2].server_url: invalid server_url")


def test_a_duplicate_device_id_names_both_entries() -> None:
    other = '[[devices]]\ndevice_id = "lab"\nserver_url = "ws://127.0.0.1:8/ws"\n'
    error = error_of(DEVICE + other + DEVICE)
    assert error.key == "devices[2].device_id"
    assert error.problem == "duplicate device id 'pc' (also devices[0])"


@pytest.mark.parametrize("text", ["", "[supervisor]\n", "devices = []\n"])
def test_no_devices(text: str) -> None:
    error = error_of(text)
    assert error.key == "devices"
    assert "no devices" in error.problem


@pytest.mark.parametrize(
    ("entry", "key", "problem"),
    [
        ('server_url = "ws://127.0.0.1:9/ws"\n', "devices[0].device_id", "missing (required)"),
        ('device_id = "pc"\n', "devices[0].server_url", "missing (required)"),
        (
            'device_id = ""\nserver_url = "ws://127.0.0.1:9/ws"\n',
            "devices[0].device_id",
            "must not be empty",
        ),
    ],
)
def test_required_device_keys(entry: str, key: str, problem: str) -> None:
    error = error_of(f"[[devices]]\n{entry}")
    assert (error.key, error.problem) == (key, problem)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.org"])
def test_a_non_loopback_control_address_needs_a_token(host: str) -> None:
    error = error_of(f'[control]\nhost = "{host}"\n{DEVICE}')
    assert error.key == "control.token"
    assert "not a loopback address" in error.problem
    assert TOKEN_ENV in error.problem


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost"])
def test_loopback_control_addresses_need_no_token(host: str) -> None:
    assert parse(f'[control]\nhost = "{host}"\n{DEVICE}').control.token is None


def test_config_errors_are_configuration_errors(tmp_path: Path) -> None:
    error = error_of("")
    assert isinstance(error, ConfigurationError)
    assert isinstance(error, ValueError)
    assert (error.file, error.key) == ("test.toml", "devices")


def test_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"binary\.toml: cannot read"):
        load_config(path)
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"folder\.toml: cannot read"):
        load_config(folder)
    assert stat.S_ISDIR(folder.stat().st_mode)


def test_no_config_error_shows_a_secret() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            '[control]\ntoken = 12345\n[[devices]]\ndevice_id = "a"\nserver_url = "ws://h/"\n'
        )
    assert "12345" not in str(info.value) and "expected a string, got int" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_config('[[devices]]\ndevice_id = "a"\nserver_url = "ws://h:0/?token=hunter2"\n')
    assert str(info.value) == (
        "<config>: devices[0].server_url: invalid server_url 'ws://h:0/?token=***': port 0"
    )
