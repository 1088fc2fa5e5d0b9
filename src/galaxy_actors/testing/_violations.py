"""What an invariant check reports: the invariants by number, and one broken one.

Its own module so that every check (`_invariants`, `_restart_invariants`,
`_connection_invariants`) can report in it without importing the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

#: The invariants `check_invariants` proves, by number (those of the project's issue).
INVARIANTS: Final[Mapping[int, str]] = {
    1: "every submitted task ends with exactly one outcome",
    2: "delivery: at-most-once never sends a task twice; at-least-once ends each task once",
    3: "per device, tasks are sent in (priority, submission) order, one at a time",
    4: "the delay before each reconnection attempt is the policy's, to the virtual clock",
    5: "a device gives up exactly after max_retries failed attempts; success resets the count",
    6: "statuses change only along ALLOWED_TRANSITIONS",
    7: "nothing is left after the supervisor block exits",
    8: "a run without malformed frames or stale TASK_ENDs has no bad frame, and every "
    "task that ended with a result was acknowledged first",
    9: "a TASK_END is accepted only on the connection its task was last sent on",
    10: "after a disconnect every task of the device has its outcome within disconnect_grace "
    "(none if forced) plus the close (instant in memory); after a give-up, at that instant",
    11: "each device's actor task is a child of the supervisor's nursery, from its start "
    "to the block's end",
}


@attrs.frozen
class Violation:
    """One invariant broken: which one, on which device, and the evidence."""

    invariant: int
    device_id: str | None
    evidence: str

    def __str__(self) -> str:
        where = f" on device {self.device_id!r}" if self.device_id is not None else ""
        what = INVARIANTS[self.invariant]
        return f"invariant {self.invariant} ({what}) broken{where}: {self.evidence}"
