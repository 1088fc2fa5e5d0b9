"""What a well-formed control request is: the table of ops and their fields, and its checks.

Sans-IO: values in, `_RequestError` out; no socket, no supervisor, no Trio. The endpoint
(``_control.py``) parses each frame, checks its token, then validates it here before acting
on it; a `_RequestError` becomes the error reply (`_error_reply`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from .._sansio._redact import bounded

__all__ = ["MAX_DEPTH", "OPS"]

_ENVELOPE: Final = ("token", "op", "id")
# Each op's fields and their JSON types; `_REQUIRED` names the ones that must be present.
_FIELDS: Final[Mapping[str, Mapping[str, tuple[type, ...]]]] = {
    "submit": {
        "description": (str,),
        "device": (str, type(None)),
        "capabilities": (list, type(None)),
        "data": (dict, type(None)),
        "timeout": (int, float),
        "priority": (int,),
        "delivery": (str,),
        "task_id": (str, type(None)),
    },
    "devices": {},
    "watch": {},
    "connect": {"device": (str,)},
    "disconnect": {"device": (str,), "force": (bool,)},
    "add": {
        "device": (str,),
        "url": (str,),
        "os": (str,),
        "capabilities": (list,),
        "metadata": (dict,),
        "max_retries": (int,),
    },
    "remove": {"device": (str,), "force": (bool,)},
    "cancel": {"task_id": (str,)},
    "reload": {},
    "result": {"task_id": (str,), "wait": (bool,)},
}
_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    "submit": ("description",),
    "connect": ("device",),
    "disconnect": ("device",),
    "add": ("device", "url"),
    "remove": ("device",),
    "cancel": ("task_id",),
    "result": ("task_id",),
}
OPS: Final = tuple(_FIELDS)
#: Deeper JSON is refused: no request needs it, and parsing or echoing it costs a stack frame
#: per level (Python's json gives up with a RecursionError near 1000).
MAX_DEPTH: Final = 64


class _RequestError(Exception):
    """A request that gets an error reply: ``kind`` is the reply's ``error.type``."""

    def __init__(self, kind: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        self.extra = extra


def _check_fields(request: Mapping[str, Any]) -> None:
    """Check a request of a known op against the table: no unknown field, each of its JSON
    types, every required one present."""
    op = request["op"]
    fields = _FIELDS[op]
    for key, value in request.items():
        if key in _ENVELOPE:
            continue
        kinds = fields.get(key)
        if kinds is None:
            raise _RequestError("BadRequest", f"unknown field {bounded(key, 80)!r} for {op}")
        # JSON true/false are Python ints: never accept one for a number.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            shown = bounded(repr(value), 80)
            raise _RequestError("BadRequest", f"field {key!r} must be {names}, got {shown}")
    for key in _REQUIRED.get(op, ()):
        if key not in request:
            raise _RequestError("BadRequest", f"{op} needs a {key!r}")
    if not all(isinstance(c, str) for c in request.get("capabilities") or ()):
        raise _RequestError("BadRequest", "'capabilities' must be a list of strings")


def _error_reply(exc: _RequestError) -> dict[str, Any]:
    return {"ok": False, **exc.extra, "error": {"type": exc.kind, "message": str(exc)}}


def _depth_over(value: Any, limit: int) -> bool:
    # Iterative: the check must not itself need a stack as deep as the value.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False
