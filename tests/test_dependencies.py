"""What galaxy_actors may rely on from its dependencies: the versions the suite was run on
(pyproject.toml's ranges), and their public APIs only (docs/architecture.md, "Public APIs
of the dependencies only"). An upgrade outside a tested range, or a private attribute read
that creeps back, fails here rather than in a user's process."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME = [Requirement(text) for text in PROJECT["dependencies"]]
OPTIONAL = [
    Requirement(text) for group in PROJECT["optional-dependencies"].values() for text in group
]

# Private names of trio, trio-websocket and wsproto that this code base once reached for,
# and writing to a socket's file descriptor (no ws:// on Windows; SIGPIPE on POSIX).
FORBIDDEN = re.compile(
    r"\._wsproto|\._stream_lock|\._close_reason|\._abort_web_socket"
    r"|\btrio\._(?!_)|\btrio_websocket\._(?!_)|\bwsproto\._(?!_)|hypothesis\.internal|os\.write\("
)


def installed(requirement: Requirement) -> str | None:
    try:
        return importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_every_dependency_declares_the_last_release_it_was_tested_on() -> None:
    unbounded = [
        str(r)
        for r in RUNTIME + OPTIONAL
        if not any(spec.operator in ("<", "<=", "==", "~=") for spec in r.specifier)
    ]
    assert unbounded == []


def test_the_installed_dependencies_are_within_their_declared_ranges() -> None:
    outside = []
    for requirement in RUNTIME + OPTIONAL:
        version = installed(requirement)
        if version is None:
            assert requirement not in RUNTIME, f"{requirement.name} is not installed"
            continue  # an extra this environment does not have
        if not requirement.specifier.contains(version, prereleases=True):
            outside.append(f"{requirement.name} {version} (declared {requirement.specifier})")
    assert outside == [], "installed outside the tested range; run the suite, then widen it"


def test_the_runtime_dependencies_are_those_the_package_imports() -> None:
    # A dependency kept after its last import (wsproto, once) is a range nobody tests.
    imported = set()
    for path in (ROOT / "src" / "galaxy_actors").rglob("*.py"):
        for match in re.finditer(r"^\s*(?:from|import) (\w+)", path.read_text(), re.MULTILINE):
            imported.add(canonicalize_name(match.group(1)))
    assert {canonicalize_name(r.name) for r in RUNTIME} <= imported


@pytest.mark.parametrize("package", ["galaxy_actors", "benchmarks"])
def test_no_private_attribute_of_a_dependency_and_no_os_write(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
    assert found == []
