"""A pytest plugin that runs the test suite with experiment_dispatch.py's patches applied.

Evidence that the proposed changes keep every tested behaviour:

    PYTHONPATH=benchmarks .venv/bin/pytest -p pytest_patched -q

``GALAXY_PATCHES`` chooses the patches (default ``loop,codec``).
"""

from __future__ import annotations

import contextlib
import os

import pytest

_stack = contextlib.ExitStack()


def pytest_configure(config: pytest.Config) -> None:
    from experiment_dispatch import patched

    names = [n for n in os.environ.get("GALAXY_PATCHES", "loop,codec").split(",") if n]
    _stack.enter_context(patched(names))
    config.addinivalue_line("markers", f"patched: run with patches {names}")


def pytest_report_header(config: pytest.Config) -> str:
    names = os.environ.get("GALAXY_PATCHES", "loop,codec")
    return f"galaxy_actors patched for the experiment: {names}"


def pytest_unconfigure(config: pytest.Config) -> None:
    _stack.close()
