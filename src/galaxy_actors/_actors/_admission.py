"""What a submission must be before it becomes a task: argument checks and routing.

Plain code with no await and no clock: every task passes here, so the usual argument types
are recognised first, cheaply, and a wrong one is a `ConfigurationError` at the call site.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._sansio._checks import positive
from .._sansio._errors import ConfigurationError, DeviceUnavailable, QueueFull, UnknownDevice
from .._sansio._status import DeviceStatus
from .._transports._transport import validate_server_url
from ._task import Delivery

if TYPE_CHECKING:
    from ._device import DeviceActor

__all__ = ["check_device", "check_task", "choose_device", "route"]


def check_device(device_id: str, server_url: str, capabilities: Collection[str] | None) -> None:
    """A device's registration arguments, checked at the call site."""
    if not isinstance(device_id, str) or not device_id:
        raise ConfigurationError(f"device_id must be a non-empty string, got {device_id!r}")
    validate_server_url(server_url)
    if isinstance(capabilities, str):
        raise ConfigurationError("capabilities must be a collection of strings, not a str")


def check_task(
    description: str,
    data: Mapping[str, Any] | None,
    task_id: str | None,
    task_timeout: float,
    delivery: Delivery | str,
    priority: int,
) -> tuple[float, Delivery, str, str]:
    """The checked ``(task_timeout, delivery, task_id, data_json)`` of a submission; a new id
    when ``task_id`` is None. The data is encoded once, here, where an unserialisable
    value can still be refused."""
    if type(description) is not str and not isinstance(description, str):
        raise ConfigurationError(f"task description must be a string, got {description!r}")
    if type(task_timeout) is not float or not 0.0 < task_timeout < math.inf:
        task_timeout = positive("task_timeout", task_timeout)
    if type(priority) is not int and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"priority must be an int, got {priority!r}")
    if type(delivery) is not Delivery:
        try:
            delivery = Delivery(delivery)
        except ValueError:
            raise ConfigurationError(f"unknown delivery {delivery!r}") from None
    if task_id is None:
        task_id = uuid.uuid4().hex
    elif not isinstance(task_id, str) or not task_id:
        raise ConfigurationError(f"task_id must be a non-empty string, got {task_id!r}")
    try:
        data_json = json.dumps({} if data is None else data)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"task data is not JSON-serialisable: {exc}") from None
    return task_timeout, delivery, task_id, data_json


def choose_device(
    actors: Mapping[str, DeviceActor],
    device_id: str | None,
    capabilities: Collection[str] | None,
    priority: int,
    task_id: str,
) -> DeviceActor:
    """The device a task goes to: ``device_id``'s, or the best with ``capabilities``
    (`route`). Raises `UnknownDevice`, `DeviceUnavailable`, or `QueueFull` when the chosen
    device's queue is full."""
    if device_id is not None:
        actor = actors.get(device_id)
        if actor is None:
            raise UnknownDevice(device_id)
    else:
        actor = route(actors.values(), capabilities or (), priority, task_id)
    if actor.queue_full:
        raise QueueFull(
            f"device {actor.device_id!r} already has {actor.max_queue} queued tasks",
            task_id=task_id,
            device_id=actor.device_id,
        )
    return actor


def route(
    actors: Iterable[DeviceActor], capabilities: Collection[str], priority: int, task_id: str
) -> DeviceActor:
    """The best device with ``capabilities`` for a task of ``priority``: idle with nothing
    queued first, then connected before reconnecting, then the fewest tasks ahead of it. A
    device whose queue is full is chosen only if every candidate's is (`QueueFull` then
    names it, and a blocking submit waits for it)."""
    if isinstance(capabilities, str):
        raise ConfigurationError("capabilities must be a collection of strings, not a str")
    need = set(capabilities)
    best: DeviceActor | None = None
    best_key: tuple[int, int, int] | None = None
    for actor in actors:
        if not actor.accepting or not need.issubset(actor.profile.capabilities):
            continue
        status = actor.profile.status
        load = actor.load_before(priority)
        full = 1 if actor.queue_full else 0
        if status is DeviceStatus.IDLE and load == 0 and not full:
            return actor  # idle and nothing queued: nobody beats it
        rank = 1 if status in (DeviceStatus.IDLE, DeviceStatus.BUSY) else 2
        key = (full, rank, load)
        if best_key is None or key < best_key:
            best, best_key = actor, key
    if best is None:
        wanted = ", ".join(sorted(need)) or "(none)"
        raise DeviceUnavailable(
            f"no connected or reconnecting device has capabilities {wanted}",
            task_id=task_id,
            device_id=None,
        )
    return best
