"""Rate-limited log lines: one line per key per interval, with a count of what was held back.

A hostile or broken peer can trigger the same warning thousands of times a second; the lines
must stay few while the counters that measure the trouble stay exact (they are kept by the
caller, not here). The next line logged for a key, or `flush` at the end, says how many
lines were held back since the last one.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import attrs
import trio

__all__ = ["Throttled"]


@attrs.define(eq=False)
class _Held:
    count: int
    level: int
    message: str
    extra: Mapping[str, Any] | None


@attrs.define(eq=False)
class Throttled:
    """Logs at most one line per key per ``interval`` seconds (Trio's clock)."""

    logger: logging.Logger
    interval: float
    _last: dict[Hashable, float] = attrs.field(init=False, factory=dict)
    _held: dict[Hashable, _Held] = attrs.field(init=False, factory=dict)

    def log(
        self,
        level: int,
        key: Hashable,
        message: str,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Log ``message`` unless a line for ``key`` went out less than ``interval``
        seconds ago; True if it was logged."""
        now = trio.current_time()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            held = self._held.get(key)
            if held is None:
                self._held[key] = _Held(1, level, message, extra)
            else:
                held.count += 1
                held.level, held.message, held.extra = level, message, extra
            return False
        self._last[key] = now
        held = self._held.pop(key, None)
        suffix = "" if held is None else self._more(held.count)
        self.logger.log(level, "%s%s", message, suffix, extra=extra)
        return True

    def warning(self, key: Hashable, message: str) -> bool:
        return self.log(logging.WARNING, key, message)

    def _more(self, count: int) -> str:
        return f" … and {count:,} more in the last {self.interval:g} s"

    def flush(self) -> None:
        """Log what is held back (at the end, so that no count is lost)."""
        for held in self._held.values():
            self.logger.log(
                held.level, "%s%s", held.message, self._more(held.count), extra=held.extra
            )
        self._held.clear()
