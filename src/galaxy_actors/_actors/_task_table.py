"""What the journal's wiring (`_durable.Durability`) uses of its supervisor, as a protocol:
the supervisor satisfies it, and neither module imports the other."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ._task import Delivery, TaskHandle

if TYPE_CHECKING:
    from ._device import DeviceActor
    from ._session import Session

__all__ = ["TaskTable"]


class TaskTable(Protocol):
    """What `Durability` reads and changes of its supervisor (the `Supervisor` itself): its
    devices, the tasks it holds, and the nursery its actors run in. Declared here so that the
    two modules do not import each other."""

    @property
    def _actors(self) -> Mapping[str, DeviceActor]: ...
    @property
    def _live(self) -> dict[str, TaskHandle]: ...
    @property
    def _nursery(self) -> trio.Nursery | None: ...
    @property
    def device_ids(self) -> list[str]: ...

    def _require_open(self) -> trio.Nursery: ...
    def _admit(
        self,
        description: str,
        data: Mapping[str, Any] | None,
        device_id: str | None,
        capabilities: Collection[str] | None,
        task_id: str | None,
        task_timeout: float,
        delivery: Delivery | str,
        priority: int,
        *,
        accept: bool = True,
    ) -> tuple[TaskHandle, Session | None]: ...
    async def _send_now(self, session: Session, task: TaskHandle) -> None: ...
    def _forget(self, task: TaskHandle) -> None: ...
    async def remove_device(self, device_id: str, *, force: bool = False) -> None: ...
    def add_device(
        self,
        device_id: str,
        server_url: str,
        os: str = "unknown",
        *,
        capabilities: Collection[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        max_retries: int | None = None,
        connect: bool = True,
        max_queue: int | None = None,
    ) -> object: ...
