"""The supervisor process's configuration: a TOML file in, validated frozen values out.

Rules of this file:
- Everything is checked here, before anything starts: a `Config` that loaded is one the
  process can run with. Every mistake is a `ConfigError` naming the file, the key path
  (``devices[2].server_url``) and what is wrong.
- Unknown keys are errors, with a suggestion when one is close: a typo must not silently
  leave a default in force.
- No I/O beyond reading the one file; the environment is passed in (for the control token).

The file's layout is documented, with a complete example, in ``docs/process.md``.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, cast

import attrs

from .._actors._settings import Settings
from .._sansio._errors import ConfigurationError
from .._sansio._policy import Jitter, RestartPolicy
from .._sansio._redact import redact
from .._transports._transport import (
    DEFAULT_WEBSOCKET,
    WEBSOCKET_CLIENTS,
    WebSocketClient,
    WebSocketConnector,
    validate_server_url,
)
from ._config_cluster import ClusterConfig, read_cluster
from ._config_journal import JournalConfig, read_journal
from ._config_values import ValueReader, describe

__all__ = [
    "TOKEN_ENV",
    "Config",
    "ConfigError",
    "ControlConfig",
    "DeviceConfig",
    "LoggingConfig",
    "MetricsConfig",
    "SupervisorConfig",
    "TLSConfig",
    "is_loopback",
    "load_config",
    "parse_config",
    "parse_listen",
]

#: Environment variable holding the control endpoint's token when the file has none.
TOKEN_ENV: Final = "GALAXY_ACTORS_TOKEN"
LOG_FORMATS: Final = ("text", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_MAX_FRAME_SIZE: Final = 16 * 1024 * 1024


class ConfigError(ConfigurationError):
    """A configuration file that cannot be used: says which file, which key, and why.

    ``key`` is a path into the file (``supervisor.heartbeat_interval``,
    ``devices[0].server_url``; devices count from 0), or "" for the file as a whole.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        # Masked: a problem may quote a URL, and a URL may carry a token (docs/process.md).
        problem = redact(problem)
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")
        self.file = file
        self.key = key
        self.problem = problem


@attrs.frozen
class DeviceConfig:
    """One ``[[devices]]`` table."""

    device_id: str
    server_url: str
    os: str = "unknown"
    capabilities: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    max_retries: int | None = None


@attrs.frozen
class TLSConfig:
    """The ``[tls]`` table: `WebSocketConnector`'s TLS options for ``wss://`` devices, with
    paths resolved against the configuration file's folder."""

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure_skip_verify: bool = False

    def connector_options(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False)


@attrs.frozen
class SupervisorConfig:
    """The ``[supervisor]`` and ``[restart]`` tables: everything `open_supervisor` takes.

    ``[supervisor]`` holds every `Settings` field, and the options of the connector."""

    # The library's defaults are the process's (its handshake bound of 64 included).
    settings: Settings = attrs.field(factory=Settings)
    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    max_frame_size: int = _MAX_FRAME_SIZE
    websocket: WebSocketClient = DEFAULT_WEBSOCKET
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    tls: TLSConfig = attrs.field(factory=TLSConfig)

    def supervisor_options(self) -> dict[str, Any]:
        """Keyword arguments for `open_supervisor`."""
        return {
            "settings": self.settings,
            "policy": self.policy,
            "connector": WebSocketConnector(
                connect_timeout=self.connect_timeout,
                close_timeout=self.close_timeout,
                max_frame_size=self.max_frame_size,
                websocket=self.websocket,
                **self.tls.connector_options(),
            ),
        }


@attrs.frozen
class ControlConfig:
    """The ``[control]`` table. ``token`` is the file's, else ``$GALAXY_ACTORS_TOKEN``'s."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    address_file: Path | None = None


@attrs.frozen
class LoggingConfig:
    """The ``[logging]`` table."""

    format: str = "text"
    level: str = "info"


@attrs.frozen
class MetricsConfig:
    """The ``[metrics]`` table: where the HTTP endpoint serving ``/metrics``, ``/healthz``
    and ``/readyz`` listens, and the share of devices that must be connected for ``/readyz``
    to answer 200."""

    host: str = "127.0.0.1"
    port: int = 9464
    ready_share: float = 0.5

    @property
    def listen(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@attrs.frozen
class Config:
    """A whole, validated configuration file. ``metrics`` is None when the file has no
    ``[metrics]`` table (no metrics endpoint); ``cluster`` is None when it has no
    ``[cluster]`` table (the process supervises its devices alone)."""

    source: str
    devices: tuple[DeviceConfig, ...]
    supervisor: SupervisorConfig = attrs.field(factory=SupervisorConfig)
    control: ControlConfig = attrs.field(factory=ControlConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    metrics: MetricsConfig | None = None
    journal: JournalConfig = attrs.field(factory=JournalConfig)
    cluster: ClusterConfig | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for an IPv6 address) as ``(host, port)``; raises
    ValueError saying what is wrong. Port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, [{host}]:{port_text}")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"the port must be an integer from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> Config:
    """Read and validate the TOML file at ``path``; raises `ConfigError`.

    ``environ`` (default ``os.environ``) supplies ``GALAXY_ACTORS_TOKEN`` when the file sets
    no ``control.token``. A relative ``control.address_file``, or path in ``[tls]``, is
    relative to the file's folder.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(name, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(name, "", f"cannot read: {exc}") from None
    return parse_config(text, source=name, base_dir=Path(name).parent, environ=environ)


def parse_config(
    text: str,
    *,
    source: str = "<config>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate TOML ``text``; ``source`` names it in errors. See `load_config`."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"invalid TOML: {exc}") from None
    environ = os.environ if environ is None else environ
    return _Reader(source).config(document, base_dir or Path("."), environ)


_TOP_KEYS: Final = (
    "supervisor",
    "restart",
    "tls",
    "control",
    "logging",
    "metrics",
    "devices",
    "journal",
    "cluster",
)
_SETTINGS_KEYS: Final = tuple(attrs.fields_dict(Settings))
_CONNECTOR_KEYS: Final = ("connect_timeout", "close_timeout", "max_frame_size", "websocket")
_SUPERVISOR_KEYS: Final = _SETTINGS_KEYS + _CONNECTOR_KEYS
# The TOML types a `Settings` field accepts, by its annotation.
_TOML_KINDS: Final[dict[str, tuple[type, ...]]] = {
    "str": (str,),
    "float": (int, float),
    "int | None": (int,),
}
_TLS_KEYS: Final = tuple(attrs.fields_dict(TLSConfig))
_RESTART_KEYS: Final = tuple(n for n in attrs.fields_dict(RestartPolicy) if n != "per_reason")
_CONTROL_KEYS: Final = ("enabled", "host", "port", "token", "address_file")
_LOGGING_KEYS: Final = ("format", "level")
_METRICS_KEYS: Final = ("listen", "ready_share")
_DEVICE_KEYS: Final = ("device_id", "server_url", "os", "capabilities", "metadata", "max_retries")


class _Reader(ValueReader):
    """Walks the parsed TOML document section by section."""

    def __init__(self, source: str) -> None:
        super().__init__(lambda key, problem: ConfigError(source, key, problem))
        self.source = source

    # ------------------------------------------------------------------ structure

    def config(self, doc: dict[str, Any], base_dir: Path, environ: Mapping[str, str]) -> Config:
        self.known_keys(doc, _TOP_KEYS, "")
        supervisor = self.supervisor(self.table(doc, "supervisor", ""))
        supervisor = attrs.evolve(
            supervisor,
            policy=self.policy(self.table(doc, "restart", "")),
            tls=self.tls(self.table(doc, "tls", ""), base_dir),
        )
        control = self.control(self.table(doc, "control", ""), base_dir, environ)
        logging_table = self.table(doc, "logging", "")
        self.known_keys(logging_table, _LOGGING_KEYS, "logging")
        log = LoggingConfig(
            format=self.choice(logging_table, "format", "logging", LOG_FORMATS, "text"),
            level=self.choice(logging_table, "level", "logging", LOG_LEVELS, "info"),
        )
        metrics = self.metrics(self.table(doc, "metrics", "")) if "metrics" in doc else None
        cluster = None
        if "cluster" in doc:
            # A node's journal is the cluster's Redis, and its fleet may already be there.
            if "journal" in doc:
                raise self.fail("journal", "not with [cluster]: the cluster journals in Redis")
            if control.enabled and "control" in doc:
                raise self.fail(
                    "control",
                    "not with [cluster]: a node's clients go through Redis (--cluster); "
                    "set enabled = false",
                )
            cluster = read_cluster(self, self.table(doc, "cluster", ""), environ)
            journal = JournalConfig()
        else:
            journal = read_journal(self, self.table(doc, "journal", ""), self.source)
        devices = self.devices(doc, required=cluster is None)
        return Config(self.source, devices, supervisor, control, log, metrics, journal, cluster)

    def supervisor(self, t: dict[str, Any]) -> SupervisorConfig:
        p = "supervisor"
        self.known_keys(t, _SUPERVISOR_KEYS, p)
        d = SupervisorConfig()
        return SupervisorConfig(
            settings=self.settings(t, p, d.settings),
            connect_timeout=self.seconds(t, "connect_timeout", p, d.connect_timeout),
            close_timeout=self.seconds(t, "close_timeout", p, d.close_timeout),
            max_frame_size=self.integer(t, "max_frame_size", p, d.max_frame_size, 1024)
            or d.max_frame_size,
            websocket=cast(
                WebSocketClient, self.choice(t, "websocket", p, WEBSOCKET_CLIENTS, d.websocket)
            ),
        )

    def settings(self, t: dict[str, Any], p: str, settings: Settings) -> Settings:
        """The `Settings` fields of table ``t``, over ``settings``: the TOML type checked
        here, the value by `Settings` itself, one key at a time so the error names it."""
        for field in attrs.fields(Settings):
            if field.name not in t:
                continue
            kinds = _TOML_KINDS[str(field.type)]
            value = self.typed(t, field.name, p, kinds)
            try:
                settings = attrs.evolve(settings, **{field.name: value})
            except ConfigurationError as exc:
                problem = str(exc).removeprefix(f"{field.name} ")
                raise self.fail(f"{p}.{field.name}", problem) from None
        return settings

    def policy(self, t: dict[str, Any]) -> RestartPolicy:
        p = "restart"
        self.known_keys(t, _RESTART_KEYS, p)
        d = RestartPolicy()
        intensity: tuple[int, float] | None = None
        if "intensity" in t:
            it = self.table(t, "intensity", p)
            self.known_keys(it, ("restarts", "period"), f"{p}.intensity")
            restarts = self.integer(it, "restarts", f"{p}.intensity", None, 1)
            period = self.optional_seconds(it, "period", f"{p}.intensity")
            if restarts is None or period is None:
                raise self.fail(f"{p}.intensity", "needs both restarts and period")
            intensity = (restarts, period)
        reconnect_delay = self.seconds(t, "reconnect_delay", p, d.reconnect_delay, zero=True)
        max_retries = self.integer(t, "max_retries", p, d.max_retries, 0)
        max_delay = self.optional_seconds(t, "max_delay", p)
        jitter = self.choice(t, "jitter", p, tuple(j.value for j in Jitter), d.jitter.value)
        reset_after = self.optional_seconds(t, "reset_after", p)
        try:
            return RestartPolicy(
                reconnect_delay=reconnect_delay,
                max_retries=d.max_retries if max_retries is None else max_retries,
                max_delay=max_delay,
                jitter=jitter,
                reset_after=reset_after,
                intensity=intensity,
            )
        except ConfigurationError as exc:  # a combination the policy refuses
            raise self.fail(p, str(exc)) from None

    def tls(self, t: dict[str, Any], base_dir: Path) -> TLSConfig:
        p = "tls"
        self.known_keys(t, _TLS_KEYS, p)
        paths: dict[str, Path | None] = {}
        for key in ("ca_file", "client_cert", "client_key"):
            value = self.string(t, key, p, "")
            if key in t and not value:
                raise self.fail(f"{p}.{key}", "must not be empty")
            paths[key] = (base_dir / value) if value else None
        tls = TLSConfig(
            **paths, insecure_skip_verify=self.boolean(t, "insecure_skip_verify", p, False)
        )
        try:
            # Loads the files now: a bad path or PEM is an error of the file, not of the
            # first connect.
            WebSocketConnector(**tls.connector_options())
        except ConfigurationError as exc:
            raise self.fail(p, str(exc)) from None
        return tls

    def control(
        self, t: dict[str, Any], base_dir: Path, environ: Mapping[str, str]
    ) -> ControlConfig:
        p = "control"
        self.known_keys(t, _CONTROL_KEYS, p)
        enabled = self.boolean(t, "enabled", p, True)
        host = self.string(t, "host", p, "127.0.0.1")
        if not host:
            raise self.fail(f"{p}.host", "must not be empty")
        port = self.integer(t, "port", p, 0, 0)
        if port is None or port > 65535:
            raise self.fail(f"{p}.port", f"must be an integer from 0 to 65535, got {port!r}")
        token: str | None = self.string(t, "token", p, "") or None
        if "token" in t and token is None:
            raise self.fail(f"{p}.token", "must not be empty (leave it out to use the env)")
        token = token or environ.get(TOKEN_ENV) or None
        if enabled and token is None and not is_loopback(host):
            raise self.fail(
                f"{p}.token",
                f"required when control.host ({host!r}) is not a loopback address: set it, "
                f"or ${TOKEN_ENV}",
            )
        address = self.string(t, "address_file", p, "")
        if "address_file" in t and not address:
            raise self.fail(f"{p}.address_file", "must not be empty")
        address_file = (base_dir / address) if address else None
        return ControlConfig(enabled, host, port, token, address_file)

    def metrics(self, t: dict[str, Any]) -> MetricsConfig:
        p = "metrics"
        self.known_keys(t, _METRICS_KEYS, p)
        d = MetricsConfig()
        host, port = d.host, d.port
        if "listen" in t:
            try:
                host, port = parse_listen(self.string(t, "listen", p, ""))
            except ValueError as exc:
                raise self.fail(f"{p}.listen", str(exc)) from None
        share = d.ready_share
        if "ready_share" in t:
            share = float(self.typed(t, "ready_share", p, (int, float)))
            if not 0 <= share <= 1:  # also refuses nan
                raise self.fail(f"{p}.ready_share", f"must be a number from 0 to 1, got {share:g}")
        return MetricsConfig(host, port, share)

    def devices(self, doc: dict[str, Any], *, required: bool = True) -> tuple[DeviceConfig, ...]:
        raw = doc.get("devices")
        if not required and raw is None:
            return ()
        if required and (raw is None or raw == []):
            raise self.fail("devices", "no devices: add at least one [[devices]] table")
        if not isinstance(raw, list):
            raise self.fail("devices", f"expected an array of tables, got {describe(raw)}")
        seen: dict[str, int] = {}
        devices = []
        for index, entry in enumerate(raw):
            p = f"devices[{index}]"
            if not isinstance(entry, dict):
                raise self.fail(p, f"expected a table, got {describe(entry)}")
            self.known_keys(entry, _DEVICE_KEYS, p)
            device_id = self.required_string(entry, "device_id", p)
            if device_id in seen:
                raise self.fail(
                    f"{p}.device_id",
                    f"duplicate device id {device_id!r} (also devices[{seen[device_id]}])",
                )
            seen[device_id] = index
            url = self.required_string(entry, "server_url", p)
            try:
                validate_server_url(url)
            except ConfigurationError as exc:
                raise self.fail(f"{p}.server_url", str(exc)) from None
            capabilities = entry.get("capabilities", [])
            if not isinstance(capabilities, list) or not all(
                isinstance(c, str) for c in capabilities
            ):
                raise self.fail(
                    f"{p}.capabilities",
                    f"expected an array of strings, got {describe(capabilities)}",
                )
            metadata = self.table(entry, "metadata", p)
            self.json_like(metadata, f"{p}.metadata")
            devices.append(
                DeviceConfig(
                    device_id=device_id,
                    server_url=url,
                    os=self.string(entry, "os", p, "unknown"),
                    capabilities=tuple(capabilities),
                    metadata=metadata,
                    max_retries=self.integer(entry, "max_retries", p, None, 0),
                )
            )
        return tuple(devices)
