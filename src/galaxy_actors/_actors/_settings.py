"""The supervisor's settings: one frozen value, checked once, at construction.

Rules of this file:
- `Settings` is the one place a supervisor setting is written down: its name, its default,
  its check and its meaning. `open_supervisor`, `Supervisor`, `DeviceManager`, the TOML
  ``[supervisor]`` table and the testing kit's `ScenarioSettings` all read their settings
  from it, so adding one is adding a field here (and its line in the docs).
- A wrong value is a `ConfigurationError` naming the setting where the value is made,
  never a surprise deep inside a device's loop.
- Settings are plain values. What the supervisor works *with* (the restart policy, the
  connector, the random source, the journal) is passed beside them.
"""

from __future__ import annotations

import difflib
from typing import Any, TypedDict

import attrs

from .._sansio._checks import int_field, non_negative_field, number_problem, positive_field
from .._sansio._errors import ConfigurationError

__all__ = ["Settings", "SettingsOverrides", "apply_overrides", "shutdown_bound"]


def _check_task_name(_instance: object, _attribute: attrs.Attribute[str], value: str) -> None:
    # Part of every client_id (``task_name@device_id``): an '@' would make it ambiguous.
    if not isinstance(value, str) or not value or "@" in value:
        raise ConfigurationError(f"task_name must be a non-empty string without '@', got {value!r}")


def _seconds(default: float, *, allow_zero: bool = False) -> Any:
    return attrs.field(
        default=default, validator=non_negative_field if allow_zero else positive_field
    )


def _limit(default: int | None) -> Any:
    return attrs.field(default=default, validator=int_field(1, allow_none=True))


@attrs.frozen(kw_only=True)
class Settings:
    """Every setting of one supervisor, checked.

    >>> settings = Settings(task_name="lab", heartbeat_interval=5.0)
    >>> attrs.evolve(settings, send_timeout=2.0).send_timeout
    2.0

    Attributes:
        task_name: this constellation's name; part of every frame's identity (no ``@``).
        heartbeat_interval: seconds between heartbeats.
        heartbeat_timeout: a connection with no frame within this long of a heartbeat is
            dead.
        registration_timeout: how long to wait for the answer to a registration.
        device_info_timeout: how long to wait for the device's system information.
        send_timeout: a frame that cannot be written within this long fails the connection.
        disconnect_grace: how long a running task may finish on a graceful disconnect
            (may be 0).
        shutdown_grace: the same when the supervisor's block is left (may be 0); the whole
            shutdown waits at most ``shutdown_grace + close_timeout + 1`` seconds.
        max_concurrent_connections: at most this many handshakes at once (None: no limit).
            64 by default: without a limit, thousands of handshakes at once on a loaded
            host time out and retry together (docs/performance.md, "Fleet").
        max_queue: at most this many queued tasks per device (None: no bound; a device's
            own ``max_queue`` overrides it). A submit to a full queue waits for room.
    """

    task_name: str = attrs.field(default="galaxy", validator=_check_task_name)
    heartbeat_interval: float = _seconds(30.0)
    heartbeat_timeout: float = _seconds(10.0)
    registration_timeout: float = _seconds(30.0)
    device_info_timeout: float = _seconds(10.0)
    send_timeout: float = _seconds(10.0)
    disconnect_grace: float = _seconds(30.0, allow_zero=True)
    shutdown_grace: float = _seconds(5.0, allow_zero=True)
    max_concurrent_connections: int | None = _limit(64)
    max_queue: int | None = _limit(None)

    def __attrs_post_init__(self) -> None:
        # Durations are floats whichever number was given (a TOML 30 is an int): settings
        # that compare equal print the same. The documented way to set a frozen field.
        for field in attrs.fields(Settings):
            value = getattr(self, field.name)
            if field.validator in (positive_field, non_negative_field):
                object.__setattr__(self, field.name, float(value))


class SettingsOverrides(TypedDict, total=False):
    """`Settings` fields as keyword arguments (``open_supervisor(heartbeat_interval=5)``),
    so that a type checker sees a misspelt one. `tests/test_settings.py` keeps it in step
    with `Settings`."""

    task_name: str
    heartbeat_interval: float
    heartbeat_timeout: float
    registration_timeout: float
    device_info_timeout: float
    send_timeout: float
    disconnect_grace: float
    shutdown_grace: float
    max_concurrent_connections: int | None
    max_queue: int | None


def apply_overrides(settings: Settings | None, overrides: dict[str, Any], where: str) -> Settings:
    """``settings`` (default: `Settings()`) with ``overrides`` applied and checked.

    An unknown name is a `TypeError`, as a misspelt keyword argument is, naming ``where``
    (the function called) and the closest setting; a bad value a `ConfigurationError`."""
    if settings is None:
        settings = Settings()
    elif not isinstance(settings, Settings):
        raise ConfigurationError(f"settings must be a Settings, got {type(settings).__name__}")
    if not overrides:
        return settings
    known = attrs.fields_dict(Settings)
    for name in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")
    return attrs.evolve(settings, **overrides)


# How long closing a connection may take when the connector does not say (no
# ``close_timeout``), and what the shutdown allows beyond grace and close for the rest of
# the unwinding. Together, the fixed 5 s the bound had before it read the connector's.
_UNKNOWN_CLOSE_TIME = 4.0
_SHUTDOWN_MARGIN = 1.0


def shutdown_bound(grace: float, connector: object) -> float:
    """The longest a shutdown waits for devices to disconnect: ``grace``, plus the
    connector's ``close_timeout`` attribute (an optional part of a `Connector`), plus a
    margin."""
    close = getattr(connector, "close_timeout", None)
    if isinstance(close, int | float) and number_problem(close, allow_zero=True) is None:
        return grace + close + _SHUTDOWN_MARGIN
    return grace + _UNKNOWN_CLOSE_TIME + _SHUTDOWN_MARGIN
