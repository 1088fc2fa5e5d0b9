"""Public names print with their public path.

A class defined in ``galaxy_actors._sansio._errors`` and exported as ``galaxy_actors.TaskTimeout``
should say so in reprs, tracebacks and docs: a user can neither import nor rely on the
private path. Every public module calls `fixup_module_metadata` on its ``__all__`` (trio
does the same). The package's top level claims its names first, so a class exported both
there and in a submodule prints as ``galaxy_actors.X``; otherwise the first public module
that exports a name claims it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["fixup_module_metadata", "is_private_path"]


def is_private_path(module: str) -> bool:
    """True if any part of the dotted ``module`` path starts with an underscore."""
    return any(part.startswith("_") for part in module.split("."))


def fixup_module_metadata(
    module_name: str, namespace: Mapping[str, object], names: Iterable[str]
) -> None:
    """Give each of ``names`` in ``namespace`` (a module's globals) the module path
    ``module_name`` if it still carries a private one of galaxy_actors."""
    for name in names:
        obj = namespace[name]
        if not (isinstance(obj, type) or callable(obj)):
            continue  # a constant or a type alias: it has no module of its own to show
        current = getattr(obj, "__module__", None)
        if not isinstance(current, str) or not current.startswith("galaxy_actors."):
            continue  # not ours, or claimed by the top level already
        if is_private_path(current) or module_name == "galaxy_actors":
            obj.__module__ = module_name
