"""Restart decisions: the policy asked, contained, floored, and published.

The restart policy is user code run in the failing device's task, inside the supervisor's
nursery, where an exception would take every device down: here it is contained. Sans-IO
apart from reading Trio's clock and logging: the decision is a synchronous call, since
deciding never waits.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .._sansio._policy import Decision, FailureReason, GiveUp, RandomSource, Restart, RestartFloor
from ._events import ConnectionFailed, EventHub, RestartScheduled, RestartsStopped

if TYPE_CHECKING:
    from ._device import DeviceActor

__all__ = ["decide_restart"]

logger = logging.getLogger("galaxy_actors.supervisor")


def decide_restart(
    actor: DeviceActor,
    reason: FailureReason,
    detail: str,
    *,
    rng: RandomSource,
    floor: RestartFloor,
    events: EventHub,
) -> Decision:
    """The decision for ``actor``, whose connection failed for ``reason``: restart after a
    delay, or give up. Publishes the failure and the decision.

    Never raises for the policy: the policy is user code, run in the failing device's
    task, inside the supervisor's nursery, where an exception would take every device
    down. A policy that raises, or answers something other than a `Restart` or a
    `GiveUp`, gives up this device (logged with the traceback); the others carry on.
    A restart's delay is then raised to ``floor`` if the device is in a hot loop.
    """
    now = trio.current_time()
    policy = actor.policy
    decision: Decision
    try:
        decision = policy.decide(actor.history, reason, now, rng)
        if not isinstance(decision, Restart | GiveUp):
            raise TypeError(
                f"it returned {decision!r} ({type(decision).__name__}), not a Restart or a GiveUp"
            )
        history = policy.record(actor.history, decision, now)
    except Exception as exc:
        logger.exception(
            "device %s: the restart policy failed after %s; giving this device up",
            actor.device_id,
            reason,
            extra={"device_id": actor.device_id, "reason": str(reason)},
        )
        decision = GiveUp(f"the restart policy raised {type(exc).__name__}: {exc}")
        history = actor.history
    asked = decision
    decision, actor.history = floor.apply(history, decision, now)
    if decision is not asked:
        logger.warning(
            "device %s: %d quick restarts in a row: waiting %g s, not %g s",
            actor.device_id,
            actor.history.quick_restarts,
            floor.delay,
            asked.delay if isinstance(asked, Restart) else 0.0,
            extra={"device_id": actor.device_id},
        )
    profile = actor.profile
    if events:
        events.publish(ConnectionFailed(actor.device_id, reason, detail, now))
    if isinstance(decision, GiveUp):
        logger.error(
            "device %s: giving up: %s",
            actor.device_id,
            decision.why,
            extra={"device_id": actor.device_id, "reason": str(reason)},
        )
        if events:
            events.publish(RestartsStopped(actor.device_id, decision.why, now))
    else:
        logger.info(
            "device %s: reconnecting in %g s (attempt %d/%d)",
            actor.device_id,
            decision.delay,
            actor.history.attempts,
            profile.max_retries,
            extra={
                "device_id": actor.device_id,
                "reason": str(reason),
                "attempt": actor.history.attempts,
            },
        )
        if events:
            events.publish(
                RestartScheduled(
                    actor.device_id,
                    actor.history.attempts,
                    profile.max_retries,
                    decision.delay,
                    now,
                )
            )
    return decision
