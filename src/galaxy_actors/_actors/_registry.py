"""The device registry: the single source of truth for every device's profile and status.

`AgentProfile` keeps the reference DeviceManager's field names. Profiles are owned by the
registry and written only by the supervisor and the device actors; users read them (the
façade's ``manager.device_registry.get_device(id)`` returns the live profile, as the
reference does) or take a frozen `DeviceSnapshot` for events and status views.

The registry is a small interface in terms of device ids on purpose: a later version may
keep it elsewhere (several supervisor processes share a fleet by device id).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from .._sansio._errors import DuplicateDevice, UnknownDevice
from .._sansio._status import CONNECTED_STATUSES, DeviceStatus

__all__ = ["AgentProfile", "DeviceRegistry", "DeviceSnapshot"]


@attrs.define(eq=False)
class AgentProfile:
    """One device: what it is, where it is, and how it is doing.

    Times (``last_heartbeat``, ``next_retry_at``) are seconds on Trio's clock.
    ``last_heartbeat`` is when the connection last proved alive (any frame from the server,
    see docs/protocol.md); ``connection_attempts`` counts reconnection attempts since the
    last success.
    """

    device_id: str
    server_url: str
    os: str
    capabilities: list[str] = attrs.field(factory=list)
    metadata: dict[str, Any] = attrs.field(factory=dict)
    max_retries: int = 5
    status: DeviceStatus = DeviceStatus.DISCONNECTED
    connection_attempts: int = 0
    system_info: dict[str, Any] | None = None
    last_heartbeat: float | None = None
    current_task_id: str | None = None
    # Beyond the reference: enough to tell "FAILED, retry N of M in D s" from "gave up".
    next_retry_at: float | None = None
    gave_up: bool = False
    last_failure: str | None = None

    def snapshot(
        self, queue_depth: int = 0, queue_by_priority: Mapping[int, int] | None = None
    ) -> DeviceSnapshot:
        return DeviceSnapshot(
            device_id=self.device_id,
            status=self.status,
            os=self.os,
            capabilities=tuple(self.capabilities),
            connection_attempts=self.connection_attempts,
            max_retries=self.max_retries,
            last_heartbeat=self.last_heartbeat,
            current_task_id=self.current_task_id,
            next_retry_at=self.next_retry_at,
            gave_up=self.gave_up,
            last_failure=self.last_failure,
            queue_depth=queue_depth,
            queue_by_priority=dict(queue_by_priority or {}),
        )


@attrs.frozen
class DeviceSnapshot:
    """A device's state at one moment, safe to keep and pass around."""

    device_id: str
    status: DeviceStatus
    os: str
    capabilities: tuple[str, ...]
    connection_attempts: int
    max_retries: int
    last_heartbeat: float | None
    current_task_id: str | None
    next_retry_at: float | None
    gave_up: bool
    last_failure: str | None
    queue_depth: int
    # Queued tasks per priority (lower runs sooner), e.g. {0: 3, 5: 1}.
    queue_by_priority: Mapping[int, int] = attrs.field(factory=dict)


class DeviceRegistry:
    """Profiles by device id."""

    def __init__(self) -> None:
        self._profiles: dict[str, AgentProfile] = {}

    def add(self, profile: AgentProfile) -> None:
        if profile.device_id in self._profiles:
            raise DuplicateDevice(profile.device_id)
        self._profiles[profile.device_id] = profile

    def remove(self, device_id: str) -> AgentProfile:
        try:
            return self._profiles.pop(device_id)
        except KeyError:
            raise UnknownDevice(device_id) from None

    def get_device(self, device_id: str) -> AgentProfile | None:
        """The profile of ``device_id``, or None if it is not registered (as the reference)."""
        return self._profiles.get(device_id)

    def require(self, device_id: str) -> AgentProfile:
        """The profile of ``device_id``; raises `UnknownDevice`."""
        try:
            return self._profiles[device_id]
        except KeyError:
            raise UnknownDevice(device_id) from None

    def get_all_devices(self) -> Mapping[str, AgentProfile]:
        return dict(self._profiles)

    def get_connected_devices(self) -> list[str]:
        return [d for d, p in self._profiles.items() if p.status in CONNECTED_STATUSES]

    def is_device_registered(self, device_id: str) -> bool:
        return device_id in self._profiles

    def with_capabilities(self, required: Sequence[str]) -> list[AgentProfile]:
        need = set(required)
        return [p for p in self._profiles.values() if need.issubset(p.capabilities)]

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._profiles

    def __len__(self) -> int:
        return len(self._profiles)

    def __iter__(self) -> Iterator[AgentProfile]:
        return iter(list(self._profiles.values()))
