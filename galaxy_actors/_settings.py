"""The settings every device of one supervisor shares, checked once, at construction.

A wrong value is a `ConfigurationError` naming the setting where the supervisor is made,
never a surprise deep inside a device's loop.
"""

from __future__ import annotations

import math

import attrs

from ._errors import ConfigurationError

__all__ = ["ActorSettings", "check_connection_limit", "positive", "shutdown_bound"]


def positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (>= 0 with ``allow_zero``)."""
    # The type first: comparing a str with 0 would raise TypeError, not our error.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if allow_zero else value > 0)
        or not math.isfinite(value)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


@attrs.frozen
class ActorSettings:
    """Timing and identity settings shared by every device of one supervisor."""

    task_name: str
    heartbeat_interval: float
    heartbeat_timeout: float
    registration_timeout: float
    device_info_timeout: float
    send_timeout: float
    disconnect_grace: float

    @classmethod
    def checked(
        cls,
        *,
        task_name: str,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        registration_timeout: float,
        device_info_timeout: float,
        send_timeout: float,
        disconnect_grace: float,
    ) -> ActorSettings:
        """The settings, each checked: a ``task_name`` without ``@`` (it is part of every
        ``client_id``), finite positive times, a grace that may be 0."""
        if not isinstance(task_name, str) or not task_name or "@" in task_name:
            raise ConfigurationError(
                f"task_name must be a non-empty string without '@', got {task_name!r}"
            )
        return cls(
            task_name=task_name,
            heartbeat_interval=positive("heartbeat_interval", heartbeat_interval),
            heartbeat_timeout=positive("heartbeat_timeout", heartbeat_timeout),
            registration_timeout=positive("registration_timeout", registration_timeout),
            device_info_timeout=positive("device_info_timeout", device_info_timeout),
            send_timeout=positive("send_timeout", send_timeout),
            disconnect_grace=positive("disconnect_grace", disconnect_grace, allow_zero=True),
        )


def check_connection_limit(value: int | None) -> int | None:
    """``max_concurrent_connections``: an int >= 1, or None for no limit."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(
            f"max_concurrent_connections must be an int >= 1 or None, got {value!r}"
        )
    return value


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
    if (
        isinstance(close, bool)
        or not isinstance(close, int | float)
        or not (close >= 0 and math.isfinite(close))
    ):
        close = _UNKNOWN_CLOSE_TIME
    return grace + close + _SHUTDOWN_MARGIN
