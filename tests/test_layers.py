"""The package's layers, read from the source: each folder imports only from the floors below it.

    _sansio      the ground floor: wire codec, protocol engine, policy, statuses, errors (no Trio)
    _transports  connections: WebSocket, in-memory, TLS
    _actors      the device actors, sessions, supervisor, mailboxes, tasks, journal
    _process     the supervisor process: CLI, config, control endpoint, metrics, view, demo

The public modules at the top (`galaxy_actors`, `.aip`, `.transport`, `.testing`, ...) may import
any floor. A change that breaks a rule here is in the wrong folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

import galaxy_actors

PACKAGE = Path(galaxy_actors.__file__).resolve().parent
FLOORS = ["_sansio", "_transports", "_actors", "_process"]
# The process runs the demo on the testing kit's simulated agents, and cluster nodes.
BESIDE = ("galaxy_actors.testing", "galaxy_actors.cluster")
NO_IO = {"trio", "trio_websocket", "wsproto", "socket", "ssl", "sqlite3", "threading"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package, top-level names of outside packages) that `name` imports."""
    inside: set[str] = set()
    outside: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
                inside.add(target)
                inside.update(f"{target}.{alias.name}" for alias in node.names)
            elif node.module and node.module.split(".")[0] == "galaxy_actors":
                inside.add(node.module)
            elif node.module:
                outside.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                (inside if top == "galaxy_actors" else outside).add(alias.name)
    modules = _modules()
    return {m for m in inside if m in modules}, outside


def _floor(name: str) -> int | None:
    parts = name.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else None


def test_each_floor_imports_only_from_the_floors_below() -> None:
    wrong = []
    for name, path in _modules().items():
        floor = _floor(name)
        if floor is None:
            continue
        for target in _imports(name, path)[0]:
            other = _floor(target)
            if other is None and target != "galaxy_actors":
                if FLOORS[floor] == "_process" and target.startswith(BESIDE):
                    continue
                wrong.append(f"{name} imports the public module {target}")
            elif other is not None and other > floor:
                wrong.append(f"{name} ({FLOORS[floor]}) imports {target} ({FLOORS[other]})")
    assert not wrong, "\n".join(sorted(wrong))


def test_the_ground_floor_does_no_io() -> None:
    wrong = {
        name: sorted(_imports(name, path)[1] & NO_IO)
        for name, path in _modules().items()
        if _floor(name) == 0
    }
    assert not {k: v for k, v in wrong.items() if v}


def test_no_import_cycles() -> None:
    # TYPE_CHECKING imports count too: a cycle there is still two modules that know each other.
    modules = _modules()
    graph = {
        name: {t for t in _imports(name, path)[0] if t != name and not name.startswith(t + ".")}
        for name, path in modules.items()
        if not name.endswith("__init__") and path.name != "__init__.py"
    }
    graph = {k: {t for t in v if t in graph} for k, v in graph.items()}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
