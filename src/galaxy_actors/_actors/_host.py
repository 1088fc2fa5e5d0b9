"""What a supervisor gives its device actors, and nothing a user calls.

The `Supervisor` is the user's object; the actors need a few things from it that a user
must not reach: the event hub's ``publish``, the restart decision, the owner of a session
id. They get this private object instead (`_device.Owner` is its shape), so the
supervisor's public surface is only what users call.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from .._sansio._policy import Decision, FailureReason, RandomSource, RestartFloor
from ._events import EventHub
from ._restarts import decide_restart
from ._settings import Settings
from ._throttle import Throttled

if TYPE_CHECKING:
    from .._transports._transport import Connector
    from ._device import DeviceActor
    from ._task import TaskHandle

__all__ = ["ActorHost"]


#: Per-device warnings a server can trigger at will (bad frames): at most one line per
#: device and kind every this many seconds, with a count of the rest.
WARNING_INTERVAL = 10.0


@attrs.define(eq=False)
class ActorHost:
    """The supervisor as its device actors see it.

    ``live`` is the supervisor's own table of live tasks by id (shared, not copied): a
    session asks it who owns a session id."""

    settings: Settings
    connector: Connector
    rng: RandomSource
    live: dict[str, TaskHandle]
    #: Bounds concurrent handshakes (``max_concurrent_connections``; None: no bound).
    handshake_limiter: trio.CapacityLimiter | None = attrs.field(init=False)
    events: EventHub = attrs.field(init=False, factory=EventHub)
    warnings: Throttled = attrs.field(init=False)
    #: Keeps immediate restarts from becoming a hot loop (see `RestartFloor`).
    restart_floor: RestartFloor = attrs.field(init=False)
    _session_prefix: str = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        limit = self.settings.max_concurrent_connections
        self.handshake_limiter = None if limit is None else trio.CapacityLimiter(limit)
        self.warnings = Throttled(logging.getLogger("galaxy_actors.device"), WARNING_INTERVAL)
        self.restart_floor = RestartFloor()
        self._session_prefix = f"{self.settings.task_name}@"

    def decide(self, actor: DeviceActor, reason: FailureReason, detail: str) -> Decision:
        """Called by a failed device actor: restart after a delay, or give up
        (`decide_restart`: never raises for the policy, and applies ``restart_floor``)."""
        return decide_restart(
            actor, reason, detail, rng=self.rng, floor=self.restart_floor, events=self.events
        )

    def device_of_session(self, session_id: str) -> str | None:
        """The device running the live task whose session id this is, if any."""
        if not session_id.startswith(self._session_prefix):
            return None
        task = self.live.get(session_id[len(self._session_prefix) :])
        return None if task is None else task.device_id
