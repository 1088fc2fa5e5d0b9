"""Where a fleet lives in Redis: every key of one fleet carries the hash tag ``{fleet}``.

Redis Cluster places a key by the part between braces, so all of a fleet's keys sit in one
slot and every script may touch any of them (a script's keys must share a slot). A fleet is
therefore the unit of sharding: a larger installation runs several fleets, one per shard's
worth of devices (docs/cluster.md).

The layout, for fleet ``F`` (``<id>`` is a device id, task id, capability or node name):

| key | type | holds |
| --- | --- | --- |
| ``ga:{F}:devices`` | hash | device id -> its definition (JSON) |
| ``ga:{F}:devices:version`` | string | a fresh token written with every change of the definitions |
| ``ga:{F}:nodes`` | sorted set | node name -> when its membership expires (server ms) |
| ``ga:{F}:incarnation`` | hash | node name -> how many times it joined |
| ``ga:{F}:lease:<id>`` | string, expiring | the device's owner, ``"<node> <epoch>"`` |
| ``ga:{F}:epochs`` | hash | device id -> its lease epoch (the fencing token) |
| ``ga:{F}:q:<id>`` | stream + group | the device's tasks |
| ``ga:{F}:cap:<name>`` | stream + group | tasks routed by one capability |
| ``ga:{F}:task:<id>`` | hash, expiring once ended | one task's record, state and outcome |
| ``ga:{F}:outcomes`` | stream, capped | every outcome as it is written |
"""

from __future__ import annotations

import attrs

__all__ = ["GROUP", "FleetKeys"]

#: The one consumer group on every task stream: the nodes.
GROUP = "nodes"


def _check(kind: str, value: str) -> str:
    # Braces would change the hash tag (and so the slot), spaces the lease's format.
    if not value or any(c in value for c in "{} \r\n"):
        raise ValueError(f"invalid {kind} {value!r}: empty, or contains braces or whitespace")
    return value


@attrs.frozen
class FleetKeys:
    """The key names of one fleet."""

    fleet: str = attrs.field(validator=lambda _, __, v: _check("fleet name", v))

    @property
    def _base(self) -> str:
        return f"ga:{{{self.fleet}}}"

    @property
    def devices(self) -> str:
        return f"{self._base}:devices"

    @property
    def devices_version(self) -> str:
        return f"{self._base}:devices:version"

    @property
    def nodes(self) -> str:
        return f"{self._base}:nodes"

    @property
    def incarnation(self) -> str:
        return f"{self._base}:incarnation"

    @property
    def epochs(self) -> str:
        return f"{self._base}:epochs"

    @property
    def outcomes(self) -> str:
        return f"{self._base}:outcomes"

    def lease(self, device_id: str) -> str:
        return f"{self._base}:lease:{_check('device id', device_id)}"

    def device_stream(self, device_id: str) -> str:
        return f"{self._base}:q:{_check('device id', device_id)}"

    def capability_stream(self, capability: str) -> str:
        return f"{self._base}:cap:{_check('capability', capability)}"

    def task(self, task_id: str) -> str:
        return f"{self._base}:task:{_check('task id', task_id)}"
