"""The programs in the docs run, and do what their text says (their asserts hold).

A fenced ``python`` block right after a ``<!-- run: NAME -->`` line is a complete program; it
is executed here as a script, so an example that stops working fails the suite.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"<!-- run: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)\n```", re.S)


def runnable_blocks() -> list[tuple[str, str]]:
    found = []
    for path in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(path.read_text(encoding="utf-8")):
            found.append((f"{path.name}:{match['name']}", match["code"]))
    return found


def test_the_porting_guide_has_its_three_patterns() -> None:
    names = {name for name, _ in runnable_blocks()}
    assert {
        "porting.md:priorities",
        "porting.md:custom-reconnection",
        "porting.md:connection-pool",
    } <= names


@pytest.mark.parametrize(("name", "code"), runnable_blocks(), ids=lambda v: str(v)[:40])
def test_doc_example_runs(name: str, code: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__main__"})
