"""What a scenario tells the person whose test failed: the schedule as a timeline, the policy,
a bounded summary of what the library logged, and a line that plays it again.

Two routes to the same text. `InvariantViolation` and `ScenarioStalled` carry it in their
messages. Inside a Hypothesis example, `run_scenario` also gives it to `hypothesis.note`, which
prints it with the minimal failing example: so a failing assertion of the test's own reads the
same as one of the kit's.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Final

import attrs
import trio

from ._determinism import in_hypothesis_example
from ._trace import LogLine, Trace, _policy_repr

#: How many of the scenario's last log records a report shows (all are in ``trace.log``).
LOG_LINES_SHOWN: Final = 5
_LINE_WIDTH: Final = 160
_LEVELS: Final = logging.getLevelNamesMapping()


def scenario_report(trace: Trace) -> str:
    """The scenario's timeline, policy, log summary and ``replay:`` line."""
    lines = [
        f"scenario (seed={trace.seed}):",
        trace.schedule.describe(),
        f"policy: {_policy_repr(trace.policy)}",
    ]
    lines += log_summary(trace.log)
    lines.append(f"replay: {trace.replay()}")
    if trace.nondeterminism is not None:
        lines.append(
            f"replay may differ: scheduling was not deterministic because {trace.nondeterminism}"
        )
    return "\n".join(lines)


def log_summary(log: Sequence[LogLine]) -> list[str]:
    """A count by level and the last `LOG_LINES_SHOWN` distinct records: a failing scenario
    may have logged a warning per failure, and the failure must stay readable."""
    if not log:
        return []
    levels = Counter(line.level for line in log)
    counts = ", ".join(
        f"{n:,} {level}"
        for level, n in sorted(levels.items(), key=lambda item: -_LEVELS.get(item[0], 0))
    )
    # Runs of one message (a reconnection loop logs the same line each time) shown once.
    runs: list[tuple[LogLine, int]] = []
    for line in log:
        if runs and _same(runs[-1][0], line):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((line, 1))
    shown = runs[-LOG_LINES_SHOWN:]
    lines = [f"log: {len(log):,} record(s) ({counts}), all in trace.log; the last:"]
    for line, repeats in shown:
        text = str(line)
        if len(text) > _LINE_WIDTH:
            text = text[: _LINE_WIDTH - 3] + "..."
        lines.append(f"  {text}" + (f" (x{repeats:,})" if repeats > 1 else ""))
    return lines


def _same(a: LogLine, b: LogLine) -> bool:
    return (a.level, a.logger, a.message) == (b.level, b.logger, b.message)


def note_report(trace: Trace) -> Trace:
    """Inside a Hypothesis example, hand the report to `hypothesis.note` (printed only if the
    example fails) and mark the trace as noted; elsewhere, return it as it is."""
    if not in_hypothesis_example():
        return trace
    from hypothesis import note

    note(scenario_report(trace))
    return attrs.evolve(trace, noted=True)


class _Capture(logging.Handler):
    def __init__(self, started_at: float) -> None:
        super().__init__()
        self.started_at = started_at
        self.lines: list[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            at: float | None = trio.current_time() - self.started_at
        except RuntimeError:  # logged from outside Trio (another thread)
            at = None
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        self.lines.append(LogLine(at, record.levelname, record.name, message))


@contextlib.contextmanager
def capture_logs(started_at: float) -> Iterator[list[LogLine]]:
    """Collect the library's log records (``galaxy_actors`` and below) while the block runs,
    instead of passing them on to the root logger's handlers. Handlers attached to the
    library's own loggers still get them."""
    logger = logging.getLogger("galaxy_actors")
    handler = _Capture(started_at)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
