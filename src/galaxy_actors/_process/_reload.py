"""Applying a changed configuration file to a running supervisor: SIGHUP and the ``reload``
control op.

Rules of this file:
- The file is read and validated whole before anything changes: an invalid file changes
  nothing, and the configuration in force stays (the caller reports the `ConfigError`).
- Only ``[[devices]]`` apply at run time. A device the file adds is added; one it no longer
  lists is removed (gracefully: its running task gets ``disconnect_grace``); one whose table
  changed (url, os, capabilities, metadata, max_retries) is removed and added again, with a
  fresh connection and an empty queue. Every other device is left alone: its connection, its
  queue, its running task, even an operator's ``disconnect`` of it.
- Devices an operator added at run time (the ``add`` op) are not the file's: a reload leaves
  them be, unless the file now lists the same id (then the file's table wins).
- Other sections (``[supervisor]``, ``[restart]``, ``[control]``, ``[logging]``) take effect
  at the next start; a reload that finds them changed says so.
- One change to the fleet at a time: every change holds ``changes``, the lock the control
  endpoint's ``add`` and ``remove`` hold too.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import trio

from .._actors._supervisor import Supervisor
from .._sansio._errors import GalaxyActorsError, SupervisorClosed
from .._sansio._redact import redact
from ._config import Config, DeviceConfig, load_config

__all__ = ["Reloader"]

logger = logging.getLogger("galaxy_actors.process")


@attrs.define(eq=False)
class Reloader:
    """Re-reads ``config.source`` and applies its devices to ``supervisor``.

    ``config`` is the configuration the process started with; after each reload the file's
    devices as last applied (what the next reload compares against)."""

    config: Config
    changes: trio.Lock
    supervisor: Supervisor | None = None
    _started: Config = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._started = self.config

    async def reload(self) -> dict[str, Any]:
        """Apply the file as it is now; return what changed (the ``reload`` reply's
        fields). Raises `ConfigError` (nothing changed) or `SupervisorClosed`."""
        supervisor = self.supervisor
        if supervisor is None or not supervisor.accepting:
            raise SupervisorClosed("the supervisor is starting or shutting down: not reloading")
        async with self.changes:
            new = load_config(self.config.source)
            report = await _apply(supervisor, self.config.devices, new.devices)
            self.config = new
        report["restart_needed"] = [
            name
            for name in ("supervisor", "control", "logging")
            if getattr(new, name) != getattr(self._started, name)
        ]
        _log(new.source, report)
        return report


async def _apply(
    supervisor: Supervisor, old: tuple[DeviceConfig, ...], new: tuple[DeviceConfig, ...]
) -> dict[str, Any]:
    before = {device.device_id: device for device in old}
    after = {device.device_id: device for device in new}
    running = set(supervisor.device_ids)
    removed = [d for d in before if d not in after and d in running]
    replaced = [d for d in after if d in running and before.get(d) != after[d]]
    added = [d for d in after if d not in running]
    errors: dict[str, str] = {}

    async def remove(device_id: str) -> None:
        # Caught here: crossing the nursery it would arrive wrapped in a group.
        try:
            await supervisor.remove_device(device_id)
        except GalaxyActorsError as exc:
            errors[device_id] = redact(str(exc))

    # Removals in parallel: each may wait for a running task's grace.
    async with trio.open_nursery() as nursery:
        for device_id in (*removed, *replaced):
            nursery.start_soon(remove, device_id)
    for device_id in (*replaced, *added):
        if device_id in errors:
            continue
        device = after[device_id]
        try:
            supervisor.add_device(
                device.device_id,
                device.server_url,
                device.os,
                capabilities=device.capabilities,
                metadata=device.metadata,
                max_retries=device.max_retries,
            )
        except GalaxyActorsError as exc:
            errors[device_id] = redact(str(exc))
    return {
        "added": [d for d in added if d not in errors],
        "removed": [d for d in removed if d not in errors],
        "replaced": [d for d in replaced if d not in errors],
        "unchanged": len(after) - len(added) - len(replaced),
        "errors": errors,
    }


def _log(source: str, report: dict[str, Any]) -> None:
    changes = ", ".join(
        f"{kind} {' '.join(report[kind])}"
        for kind in ("added", "removed", "replaced")
        if report[kind]
    )
    logger.info(
        "reloaded %s: %s; %d unchanged", source, changes or "no device changed", report["unchanged"]
    )
    for device_id, error in report["errors"].items():
        logger.error("reload: device %s: %s", device_id, error, extra={"device_id": device_id})
    if report["restart_needed"]:
        logger.warning(
            "reload: changes to [%s] take effect at the next start",
            "], [".join(report["restart_needed"]),
        )
