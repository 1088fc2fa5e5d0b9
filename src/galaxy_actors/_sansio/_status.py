"""Device statuses and the one table of transitions between them.

Everything that decides whether a status change is allowed lives here. The device actor
consults `check_transition` on every change; the property tests and the docs read
`ALLOWED_TRANSITIONS`. The statuses are the reference DeviceManager's.

Theory of operation: a device starts DISCONNECTED. A connection attempt makes it CONNECTING;
a confirmed registration CONNECTED; the end of the connect sequence (device info stored)
IDLE. It is BUSY while a task is on the device, IDLE again when the task ends. Any failure
makes it FAILED, from which the supervisor either restarts it (CONNECTING again, after the
policy's delay) or gives up (it stays FAILED). An intentional disconnect, from any status,
makes it DISCONNECTED.
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import InvalidTransition


class DeviceStatus(enum.StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    IDLE = "idle"
    BUSY = "busy"
    FAILED = "failed"


_D = DeviceStatus
ALLOWED_TRANSITIONS: Final[dict[DeviceStatus, frozenset[DeviceStatus]]] = {
    _D.DISCONNECTED: frozenset({_D.CONNECTING}),
    _D.CONNECTING: frozenset({_D.CONNECTED, _D.FAILED, _D.DISCONNECTED}),
    _D.CONNECTED: frozenset({_D.IDLE, _D.FAILED, _D.DISCONNECTED}),
    _D.IDLE: frozenset({_D.BUSY, _D.FAILED, _D.DISCONNECTED}),
    _D.BUSY: frozenset({_D.IDLE, _D.FAILED, _D.DISCONNECTED}),
    _D.FAILED: frozenset({_D.CONNECTING, _D.DISCONNECTED}),
}

# Statuses in which a device holds a live, registered connection.
CONNECTED_STATUSES: Final = frozenset({_D.CONNECTED, _D.IDLE, _D.BUSY})


def check_transition(device_id: str, old: DeviceStatus, new: DeviceStatus) -> None:
    if new not in ALLOWED_TRANSITIONS[old]:
        raise InvalidTransition.of(device_id, old, new)
