"""Whether a scenario's Trio scheduling is reproducible, through public APIs only.

Trio runs each batch of ready tasks in a shuffled order. It ships a Hypothesis plugin (the
``hypothesis`` entry point in its package metadata) that runs when Hypothesis is imported: from
then on the shuffle starts from a fixed order, and its Random is registered with
`hypothesis.register_random`. Hypothesis documents what it does with a registered Random: it
seeds it to zero at the start of each example and restores it afterwards. So:

- inside a Hypothesis example, the scheduler is seeded once, when the example starts: the
  example replays exactly, and its first Trio run starts from the same state as any other;
- outside one, `call_seeded` runs the scenario inside a one-example Hypothesis test of its own,
  so every such run starts from that same state: the ``replay:`` line printed by a failing
  example reproduces the example's first scenario.

Without Hypothesis (or with its plugins disabled) nothing public makes the order reproducible:
the scenario still runs, and its `Trace` says why it may not replay.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INSTALL_HINT = "pip install 'galaxy-actors[testing]'"


@functools.cache
def _trio_ships_a_hypothesis_plugin() -> bool:
    # Package metadata, not Trio's internals: the entry point Hypothesis loads on import.
    for entry in importlib.metadata.entry_points(group="hypothesis"):
        dist = entry.dist
        if dist is not None and dist.name.lower() == "trio":
            return True
    return False


def scheduling_nondeterminism() -> str | None:
    """Why Trio's scheduling order may not be reproducible in this process; None when
    Hypothesis controls it (Hypothesis is imported as a side effect)."""
    if os.environ.get("HYPOTHESIS_NO_PLUGINS"):
        return "HYPOTHESIS_NO_PLUGINS is set, so Trio's Hypothesis plugin did not run"
    try:
        import hypothesis  # noqa: F401  (importing it runs Trio's plugin)
    except ImportError:
        return f"Hypothesis is not installed ({INSTALL_HINT})"
    if not _trio_ships_a_hypothesis_plugin():
        return "the installed Trio ships no Hypothesis plugin"
    return None


def in_hypothesis_example() -> bool:
    """True inside a Hypothesis example (``@given`` or a stateful test)."""
    try:
        from hypothesis import currently_in_test_context
    except ImportError:
        return False
    return currently_in_test_context()


def call_seeded(fn: Callable[[], T]) -> tuple[T, str | None]:
    """Call ``fn`` with Trio's scheduler seeded as a Hypothesis example seeds it; return its
    result and why the scheduling may not be reproducible (None when it is)."""
    why_not = scheduling_nondeterminism()
    if why_not is not None or in_hypothesis_example():
        # Inside an example Hypothesis seeded the scheduler when the example started, and a
        # nested @given is refused by its health check: run as we are.
        return fn(), why_not

    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import strategies as st

    results: list[T] = []
    errors: list[Exception] = []

    # One example, nothing stored, nothing printed: the test exists only for the seeding
    # Hypothesis does around each example (documented on `register_random`).
    @settings(
        max_examples=1,
        phases=[Phase.generate],
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=False,
        report_multiple_bugs=False,
        verbosity=Verbosity.quiet,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.just(None))
    def once(_: None) -> None:
        try:
            results.append(fn())
        except Exception as exc:
            # Raised below, outside Hypothesis, so it reads as the scenario's own error.
            errors.append(exc)

    once()
    if errors:
        raise errors[0]
    if len(results) != 1:  # pragma: no cover - Hypothesis ran the example more than once
        raise RuntimeError(f"expected one run of the scenario, got {len(results)}")
    return results[0], None
