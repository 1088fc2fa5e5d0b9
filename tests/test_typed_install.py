"""A user's `mypy --strict` finds the package as installed by the README (editable included)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROGRAM = """\
import trio
import galaxy_actors


async def main() -> None:
    async with galaxy_actors.open_supervisor() as supervisor:
        handle: galaxy_actors.TaskHandle | None = None
        print(supervisor, handle)


trio.run(main)
"""


def test_mypy_strict_on_a_user_program_finds_the_package(tmp_path: Path) -> None:
    # Run from a folder outside the checkout, so mypy sees only what the install provides.
    program = tmp_path / "user_program.py"
    program.write_text(PROGRAM)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(program)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
