"""The docs hold: every link resolves, and every Python block is a program that runs or says
what it is (the conventions are in docs/index.md, "Reading the examples").

- A fenced ``python`` block right after a ``<!-- run: NAME -->`` line is a complete program. It
  runs here as ``python program.py`` runs it, in a process of its own (forked by
  tests/docs_runner.py), so an example that stops working fails the suite.
- A block whose first line is ``# fragment of FILE:NAME ...`` is a piece of that program (which
  must exist, and come earlier when it is in the same file); it must at least compile.
- A block whose first line is ``# reference (asyncio)...`` is the reference client's code, shown
  for comparison; it must compile too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)\n(?P<code>.*?)^(?P=indent)```[ ]*$", re.M | re.S
)
RUN = re.compile(r"<!-- run: (?P<name>[\w-]+) -->\s*$")
FRAGMENT = re.compile(r"# fragment of (?P<page>[\w.-]+\.md):(?P<name>[\w-]+)\b")
REFERENCE = re.compile(r"# reference \(asyncio\)")
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
MD_NAME = re.compile(r"(?<![\w/.-])(?P<name>[\w./-]*[\w-]+\.md)\b")


@attrs.frozen
class Block:
    page: str
    line: int
    kind: str  # "run", "fragment", "reference" or "unmarked"
    name: str  # the program's name ("page:name") for a run or a fragment
    code: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def python_blocks() -> list[Block]:
    found = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match["lang"] != "python":
                continue
            line = text.count("\n", 0, match.start()) + 1
            before = text[: match.start()].rstrip("\n").rpartition("\n")[2]
            code = textwrap.dedent(match["code"])
            first = code.partition("\n")[0]
            run, fragment = RUN.search(before), FRAGMENT.match(first)
            if run:
                kind, name = "run", f"{path.name}:{run['name']}"
            elif fragment:
                kind, name = "fragment", f"{fragment['page']}:{fragment['name']}"
            elif REFERENCE.match(first):
                kind, name = "reference", ""
            else:
                kind, name = "unmarked", ""
            found.append(Block(rel(path), line, kind, name, code))
    return found


def programs() -> list[Block]:
    return [b for b in python_blocks() if b.kind == "run"]


def test_every_python_block_is_a_program_a_fragment_of_one_or_the_references_code() -> None:
    assert [str(b) for b in python_blocks() if b.kind == "unmarked"] == []


def test_program_names_are_unique_and_the_porting_guide_has_its_three_patterns() -> None:
    names = [b.name for b in programs()]
    assert len(names) == len(set(names))
    assert {
        "porting.md:priorities",
        "porting.md:custom-reconnection",
        "porting.md:connection-pool",
    } <= set(names)


@pytest.mark.parametrize(
    "block", [b for b in python_blocks() if b.kind != "run"], ids=lambda b: str(b)
)
def test_a_fragment_names_a_program_above_it_and_compiles(block: Block) -> None:
    if block.kind == "fragment":
        program = next((b for b in programs() if b.name == block.name), None)
        assert program is not None, f"{block}: no program named {block.name}"
        if program.page == block.page:
            assert program.line < block.line, f"{block}: {block.name} comes after it"
    # Fragments are bodies of async functions: ``await`` and ``async with`` are allowed.
    compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


RunProgram = Callable[[Path, dict[str, str]], str | None]
PROGRAM_TIMEOUT = 120


@pytest.fixture(scope="module")
def run_program() -> Iterator[RunProgram]:
    """Runs a program file as ``python FILE`` would, in its folder, with ``env``; returns
    None when it exits 0, else how it ended. One runner process for the module: it forks
    each program from an interpreter that has already imported the library, instead of
    starting a new one and importing it again for each."""
    runner = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("docs_runner.py"))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert runner.stdin is not None and runner.stdout is not None
    requests, answers = runner.stdin, runner.stdout

    def run(program: Path, env: dict[str, str]) -> str | None:
        request = {"program": str(program), "cwd": str(program.parent), "env": env}
        requests.write(json.dumps({**request, "timeout": PROGRAM_TIMEOUT}) + "\n")
        requests.flush()
        answer = answers.readline()
        assert answer, f"the docs runner exited ({runner.wait()}) while running {program}"
        ended = json.loads(answer)
        if ended["timed_out"]:
            return f"still running after {PROGRAM_TIMEOUT} s"
        return None if ended["returncode"] == 0 else f"exit code {ended['returncode']}"

    try:
        yield run
    finally:
        requests.close()
        runner.wait(timeout=30)
        answers.close()


@pytest.mark.parametrize("block", programs(), ids=lambda b: b.name)
def test_a_program_in_the_docs_runs(
    block: Block, tmp_path: Path, request: pytest.FixtureRequest, run_program: RunProgram
) -> None:
    env = dict(os.environ)
    if "GALAXY_ACTORS_REDIS_URL" in block.code:  # the cluster's programs get a real server
        env["GALAXY_ACTORS_REDIS_URL"] = request.getfixturevalue("redis_server").url
    program = tmp_path / "program.py"
    program.write_text(block.code, encoding="utf-8")
    failure = run_program(program, env)
    stderr = (tmp_path / "stderr.txt").read_text(encoding="utf-8", errors="replace")
    assert failure is None, f"{block} ({block.name}) failed ({failure}):\n{stderr}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6} (.+)$", text, re.M):
        base = slug(match[1])
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def prose(path: Path) -> str:
    """The page without its code blocks and inline code."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def test_every_relative_link_resolves_to_a_file_and_a_heading() -> None:
    broken = []
    for path in PAGES:
        for match in LINK.finditer(prose(path)):
            target = match["target"]
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            resolved = (path.parent / file).resolve() if file else path
            if not resolved.exists():
                broken.append(f"{rel(path)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{rel(path)}: {target} (no such heading)")
    assert broken == []


def test_every_page_the_docs_name_is_in_the_repository() -> None:
    # A page named in the text ("see AIP.md") must be one a reader of the repository has.
    pages = {p.name for p in PAGES} | {"CHANGELOG.md"}
    missing = sorted(
        f"{rel(path)}: {m['name']}"
        for path in PAGES
        for m in MD_NAME.finditer(prose(path))
        if m["name"].rpartition("/")[2] not in pages
    )
    assert missing == []


def test_the_link_checker_sees_a_broken_link_and_a_missing_heading(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Asyncio → Trio\n\n```md\n# not a heading\n```\n")
    assert anchors(page) == {"title", "asyncio--trio"}
    assert [m["name"] for m in MD_NAME.finditer("see AIP.md, `ref/Manager-ref.md`.")] == [
        "AIP.md",
        "ref/Manager-ref.md",
    ]
    assert [m["target"] for m in LINK.finditer("[a](x.md#b) and ![i](../i.png)")] == [
        "x.md#b",
        "../i.png",
    ]
