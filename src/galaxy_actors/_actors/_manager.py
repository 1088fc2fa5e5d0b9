"""`DeviceManager`: the reference DeviceManager's API over a `Supervisor`.

The same method names, arguments and defaults as the Galaxy client's DeviceManager, so code
written against it ports by changing ``asyncio`` to ``trio`` and entering the manager with
``async with``. Where the reference loses information, this one keeps it (documented on
each method): `assign_task_to_device` returns the real result also when the task had to
queue, and every task ends with exactly one outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .._sansio._errors import DuplicateDevice, SupervisorClosed
from .._sansio._policy import RandomSource, RestartPolicy
from .._transports._transport import Connector
from ._registry import DeviceRegistry
from ._running import running
from ._settings import Settings, apply_overrides
from ._supervisor import Supervisor
from ._task import Delivery, ExecutionResult

if TYPE_CHECKING:
    import os

    from ._journal import Journal

__all__ = ["DeviceManager"]


class DeviceManager:
    """Manage device connections, heartbeats, task queues and reconnection.

    >>> async with DeviceManager(task_name="test_task") as manager:      # doctest: +SKIP
    ...     await manager.register_device("office_pc", "ws://10.0.0.5:5000/ws", "Windows",
    ...                                   capabilities=["office"])
    ...     result = await manager.assign_task_to_device(
    ...         "task_1", "office_pc", "Open Excel", {"file": "report.xlsx"})

    The first three arguments are the reference's (``task_name`` defaults to
    ``"test_task"`` as there). The keyword-only ones go beyond it: ``settings`` and
    ``**overrides`` are `open_supervisor`'s (`Settings`; ``max_concurrent_connections`` is
    the reference's ``PooledDeviceManager`` limit); ``policy``, when given, replaces the
    backoff built from ``reconnect_delay`` (the policy's own ``reconnect_delay`` then
    applies); ``connector``, ``rng`` and ``journal`` are `open_supervisor`'s.
    """

    def __init__(
        self,
        task_name: str | None = None,
        heartbeat_interval: float | None = None,
        reconnect_delay: float = 5.0,
        *,
        settings: Settings | None = None,
        policy: RestartPolicy | None = None,
        connector: Connector | None = None,
        rng: RandomSource | None = None,
        journal: Journal | str | os.PathLike[str] | None = None,
        # Not `SettingsOverrides`: it would repeat the two positional settings above.
        **overrides: Any,
    ) -> None:
        changes: dict[str, Any] = dict(overrides)
        if settings is None:
            changes.setdefault("task_name", "test_task")  # the reference's default
        # The reference's positional arguments win when given, as keyword arguments would.
        if task_name is not None:
            changes["task_name"] = task_name
        if heartbeat_interval is not None:
            changes["heartbeat_interval"] = heartbeat_interval
        checked = apply_overrides(settings, changes, "DeviceManager")
        self.task_name = checked.task_name
        self.heartbeat_interval = checked.heartbeat_interval
        self.reconnect_delay = reconnect_delay
        # RestartPolicy checks reconnect_delay even when a policy replaces it, so a bad
        # value is refused here rather than ignored.
        default_policy = RestartPolicy(reconnect_delay=reconnect_delay)
        self.policy = policy if policy is not None else default_policy
        # Built now, so a bad argument fails at construction as in the reference; it runs
        # from `async with`.
        self._built = Supervisor(
            checked, policy=self.policy, connector=connector, rng=rng, journal=journal
        )
        self._stack: contextlib.AsyncExitStack | None = None
        self._supervisor: Supervisor | None = None

    async def __aenter__(self) -> DeviceManager:
        if self._stack is not None:
            raise RuntimeError("this DeviceManager is already running")
        stack = contextlib.AsyncExitStack()
        self._supervisor = await stack.enter_async_context(running(self._built))
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        stack, self._stack = self._stack, None
        assert stack is not None
        try:
            return bool(await stack.__aexit__(exc_type, exc, tb))
        finally:
            self._supervisor = None

    @property
    def supervisor(self) -> Supervisor:
        """The supervisor behind the façade, for everything beyond the reference API."""
        if self._supervisor is None:
            raise SupervisorClosed(
                "DeviceManager is not running: use 'async with DeviceManager(...) as manager:'"
            )
        return self._supervisor

    @property
    def device_registry(self) -> DeviceRegistry:
        """The registry: ``device_registry.get_device(device_id)`` is the `AgentProfile`,
        live and mutable as in the reference (the native API gives `DeviceSnapshot`s)."""
        return self.supervisor._registry

    async def register_device(
        self,
        device_id: str,
        server_url: str,
        os: str,
        capabilities: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        max_retries: int = 5,
        auto_connect: bool = True,
    ) -> bool:
        """Register a device; with ``auto_connect``, connect it and wait for that first
        attempt (a failed attempt retries in the background per the policy).

        Returns False if ``device_id`` is already registered. An invalid ``server_url``
        raises `InvalidServerURL`; other bad arguments `ConfigurationError`.
        """
        supervisor = self.supervisor
        try:
            supervisor.add_device(
                device_id,
                server_url,
                os,
                capabilities=capabilities,
                metadata=metadata,
                max_retries=max_retries,
                connect=False,
            )
        except DuplicateDevice:
            return False
        if auto_connect:
            await supervisor.connect(device_id)
        return True

    async def connect_device(self, device_id: str, is_reconnection: bool = False) -> bool:
        """Connect now and wait for the outcome: True once the device is idle, False if the
        attempt failed (it then retries in the background per the policy).
        ``is_reconnection`` is accepted for compatibility; attempts are counted by the
        supervisor either way. Raises `UnknownDevice`."""
        del is_reconnection
        return await self.supervisor.connect(device_id)

    async def disconnect_device(self, device_id: str, *, force: bool = False) -> None:
        """Disconnect gracefully: queued tasks end with `TaskCancelled`, the running task may
        finish within ``disconnect_grace`` seconds (``force=True``: it is cancelled too),
        then the connection closes with a close frame. Raises `UnknownDevice`."""
        await self.supervisor.disconnect(device_id, force=force)

    # The reference's signature: ``timeout`` is the task's limit on the device, not a
    # bound on this call's own waiting.
    async def assign_task_to_device(
        self,
        task_id: str,
        device_id: str,
        task_description: str,
        task_data: Mapping[str, Any],
        timeout: float = 1000.0,
        *,
        delivery: Delivery | str = Delivery.AT_MOST_ONCE,
        priority: int = 0,
    ) -> ExecutionResult:
        """Run a task on a device and return its result: at once if the device is idle,
        after the tasks queued before it otherwise (the reference returns only
        ``{"status": "queued"}`` then; this waits for the real result).

        Raises a `TaskError`: `TaskTimeout` (no TASK_END within ``timeout``; the device
        reconnects, its queue kept), `DeviceDisconnected`, `TaskRejected`,
        `TaskCancelled`, `DeviceUnavailable`, `UnknownDevice`; and `DuplicateTaskId` if
        ``task_id`` is still live. Cancelling the call withdraws a queued task.
        """
        return await self.supervisor.run_task(
            task_description,
            task_data,
            device_id=device_id,
            task_id=task_id,
            task_timeout=timeout,
            delivery=delivery,
            priority=priority,
        )

    def get_connected_devices(self) -> list[str]:
        """Ids of devices with a live, registered connection."""
        return self.device_registry.get_connected_devices()

    def get_device_system_info(self, device_id: str) -> dict[str, Any] | None:
        """The system info the device's server reported at connection, if any."""
        profile = self.device_registry.require(device_id)
        return profile.system_info
