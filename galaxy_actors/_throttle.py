"""Rate-limited warnings: one line per kind per interval, with a count of what was held back.

A hostile or broken peer can make the same warning thousands of times a second; the lines
must stay few while the counters that measure the trouble stay exact (they are kept by the
caller, not here).
"""

from __future__ import annotations

import logging

import attrs
import trio

__all__ = ["Throttled"]


@attrs.define(eq=False)
class Throttled:
    """Logs a warning per kind at most once per ``interval`` seconds (Trio's clock); the
    next line logged for a kind says how many were held back since the last one."""

    logger: logging.Logger
    interval: float
    _last: dict[str, float] = attrs.field(init=False, factory=dict)
    _held: dict[str, int] = attrs.field(init=False, factory=dict)

    def warning(self, kind: str, message: str) -> None:
        now = trio.current_time()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        self.logger.warning("%s%s", message, f" … and {held} more" if held else "")

    def flush(self) -> None:
        """Log what is held back (at the end, so no count is lost)."""
        for kind, held in self._held.items():
            self.logger.warning("control request refused: %s … and %d more", kind, held)
        self._held.clear()
