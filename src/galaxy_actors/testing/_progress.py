"""The progress guard: a scenario that stops moving in virtual time fails instead of hanging.

On ``MockClock(autojump_threshold=0)`` time moves on only when every task waits. Code that
never waits for time, such as a restart policy whose hook returns ``Restart(0.0)`` after every
failure, reconnects at one virtual instant for ever: the scenario's virtual-time guard never
fires, and the run hangs in real time. The guard counts connection attempts per device, and
scheduler steps, at one instant; past a limit it cancels the supervisor's block, and the
scenario raises `ScenarioStalled` with the schedule.
"""

from __future__ import annotations

import math
from collections import Counter

import trio

from ._report import scenario_report
from ._trace import Trace

# Steps counted between two readings of the clock: reading it on every step would cost a
# few per cent of a scenario's time; a limit reached a thousand steps late costs nothing.
_CLOCK_EVERY = 1024


class ScenarioStalled(AssertionError):
    """A scenario made no progress in virtual time (more connection attempts or scheduler
    steps at one instant than its `ScenarioSettings` allow). ``trace`` is what it did until
    it was stopped; the message ends with the scenario and a line that plays it again."""

    def __init__(self, what: str, trace: Trace) -> None:
        self.what = what
        self.trace = trace
        super().__init__(
            f"the scenario made no progress in virtual time: {what}\n{scenario_report(trace)}"
        )


class ProgressGuard(trio.abc.Instrument):
    """Counts attempts (told by the recording connector) and task steps at one instant;
    cancels ``scope`` once either passes its limit. ``stalled`` then says what happened."""

    def __init__(self, max_attempts: int, max_steps: int, started_at: float) -> None:
        self.max_attempts = max_attempts
        self.max_steps = max_steps
        self.started_at = started_at
        self.scope: trio.CancelScope | None = None
        self.stalled: str | None = None
        self._attempts_at = math.nan
        self._attempts: Counter[str] = Counter()
        self._steps = 0
        self._steps_at = math.nan
        self._steps_since = 0

    def attempt(self, device_id: str) -> None:
        now = trio.current_time()
        if now != self._attempts_at:
            self._attempts_at = now
            self._attempts.clear()
        self._attempts[device_id] += 1
        count = self._attempts[device_id]
        if count > self.max_attempts:
            self._stall(
                f"{count:,} connection attempts by {device_id!r} at "
                f"t={now - self.started_at:g} (a restart delay of zero, again and again?)"
            )

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._steps += 1
        if self._steps % _CLOCK_EVERY:
            return
        now = trio.current_time()
        if now != self._steps_at:
            self._steps_at = now
            self._steps_since = self._steps
        elif self._steps - self._steps_since > self.max_steps:
            self._stall(
                f"more than {self.max_steps:,} scheduler steps at t={now - self.started_at:g}"
                f" (the last one in task {task.name!r})"
            )

    def _stall(self, what: str) -> None:
        if self.stalled is not None:
            return
        self.stalled = what
        if self.scope is not None:
            # Through the run loop: a scope is not cancelled from inside an instrument's hook.
            trio.lowlevel.current_trio_token().run_sync_soon(self.scope.cancel)
