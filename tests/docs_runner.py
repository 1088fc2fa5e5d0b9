"""Runs the docs' programs for tests/test_docs.py: one interpreter, one fork per program.

Started once per test module as ``python docs_runner.py``. It imports what most programs
import, then reads requests from stdin, one JSON line each (``{"program": PATH, "cwd": DIR,
"env": {...}, "timeout": SECONDS}``), and answers each with one JSON line (``{"returncode":
N, "timed_out": false}``). Each program runs in a child forked from this clean interpreter,
as ``python PATH`` would run it: ``__name__ == "__main__"``, its folder first on
``sys.path``, its own working directory, environment, stdout and stderr (``stdout.txt`` and
``stderr.txt`` in ``cwd``), and an interpreter exit that runs its atexit handlers and waits
for its threads. Forking saves the start and the imports of a new interpreter per program,
which cost more than most of the programs' own run; and a fork leaves nothing of one
program (logging handlers, metric registries, signal handlers) to the next.

Where ``os.fork`` does not exist, each program runs in a new interpreter instead.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

# What most of the programs import (each still imports them itself), imported once here.
PRELOADED = ("hypothesis", "trio.testing", "galaxy_actors.events", "galaxy_actors.testing")


def run_as_main(program: Path) -> NoReturn:
    """In the child: run ``program`` as the interpreter runs a script, then exit as it does
    (SystemExit unwinds to the top, so atexit handlers and thread joins happen)."""
    sys.argv = [str(program)]
    sys.path[0] = str(program.parent)
    try:
        runpy.run_path(str(program), run_name="__main__")
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    sys.exit(0)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run one program; return its exit code (negative: the signal that ended it) and
    whether it ran out of time."""
    program, cwd = Path(request["program"]), Path(request["cwd"])
    timeout = int(request["timeout"])
    if not hasattr(os, "fork"):
        with open(cwd / "stdout.txt", "wb") as out, open(cwd / "stderr.txt", "wb") as err:
            try:
                done = subprocess.run(
                    [sys.executable, str(program)],
                    cwd=cwd,
                    env=request["env"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                return {"returncode": None, "timed_out": True}
        return {"returncode": done.returncode, "timed_out": False}
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        # A program that hangs is ended by SIGALRM, which no program here handles.
        signal.alarm(timeout)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name, flags in [
            (0, os.devnull, os.O_RDONLY),
            (1, "stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            (2, "stderr.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        ]:
            opened = os.open(name, flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        run_as_main(program)
    _, status = os.waitpid(pid, 0)
    timed_out = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM
    return {"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}


def main() -> None:
    for name in PRELOADED:
        importlib.import_module(name)
    # The children share this interpreter's memory until they write to it. Without this, the
    # collector of each child visits every object it inherited when it exits, copying each
    # page, which took longer than most programs' own run; frozen objects it leaves alone.
    gc.freeze()
    # Answers go to a copy of stdout, so that nothing a program writes can reach them.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    for line in sys.stdin:
        answers.write(json.dumps(run(json.loads(line))) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
