"""Reading typed values out of a parsed TOML document, for `_config`.

Every check raises the error its owner's ``fail(key, problem)`` makes, with the key path
(``supervisor.heartbeat_interval``, ``devices[0].server_url``) and what is wrong. A TOML
boolean is never accepted as a number (Python's ``bool`` is an ``int``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._sansio._checks import int_problem, number_problem

__all__ = ["ValueReader", "describe", "join"]

#: Keys whose values never appear in a message.
SECRET_KEYS: Final = frozenset({"token"})
TYPE_NAMES: Final = {
    bool: "boolean",
    int: "integer",
    float: "float",
    str: "string",
    list: "array",
    dict: "table",
}


class ValueReader:
    """Typed getters over TOML tables; ``fail`` builds the error each check raises."""

    def __init__(self, fail: Callable[[str, str], Exception]) -> None:
        self.fail = fail

    def table(self, parent: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        """The sub-table ``key`` of ``parent`` (empty if absent)."""
        value = parent.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(join(path, key), f"expected a table, got {describe(value)}")
        return value

    def known_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        """Refuse any key of ``table`` not in ``allowed``, suggesting the closest."""
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                expected = ", ".join(allowed)
                raise self.fail(join(path, key), f"unknown key{hint}; expected one of {expected}")

    def typed(self, table: Mapping[str, Any], key: str, path: str, kinds: tuple[type, ...]) -> Any:
        """``table[key]``, which must be an instance of one of ``kinds``."""
        value = table[key]
        # TOML booleans are Python ints: never accept one where a number is expected.
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            wanted = "number" if kinds == (int, float) else TYPE_NAMES[kinds[0]]
            article = "an" if wanted[0] in "aeiou" else "a"
            # A secret's value is never shown, even a mistyped one: it may be the real one.
            got = type(value).__name__ if key in SECRET_KEYS else describe(value)
            raise self.fail(join(path, key), f"expected {article} {wanted}, got {got}")
        return value

    def string(self, table: Mapping[str, Any], key: str, path: str, default: str) -> str:
        """A string, or ``default`` when absent."""
        if key not in table:
            return default
        value: str = self.typed(table, key, path, (str,))
        return value

    def required_string(self, table: Mapping[str, Any], key: str, path: str) -> str:
        """A non-empty string that must be present."""
        if key not in table:
            raise self.fail(join(path, key), "missing (required)")
        value = self.string(table, key, path, "")
        if not value:
            raise self.fail(join(path, key), "must not be empty")
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        """A boolean, or ``default`` when absent."""
        if key not in table:
            return default
        value: bool = self.typed(table, key, path, (bool,))
        return value

    def choice(
        self, table: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...], default: str
    ) -> str:
        """One of ``choices``, or ``default`` when absent."""
        value = self.string(table, key, path, default)
        if value not in choices:
            raise self.fail(join(path, key), f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def integer(
        self, table: Mapping[str, Any], key: str, path: str, default: int | None, minimum: int
    ) -> int | None:
        """An integer >= ``minimum``, or ``default`` when absent."""
        if key not in table:
            return default
        value: int = self.typed(table, key, path, (int,))
        problem = int_problem(value, minimum=minimum)
        if problem is not None:
            raise self.fail(join(path, key), problem)
        return value

    def seconds(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        default: float,
        *,
        zero: bool = False,
    ) -> float:
        """A finite duration, > 0 (``>= 0`` with ``zero``), or ``default`` when absent."""
        if key not in table:
            return default
        value = self.typed(table, key, path, (int, float))
        problem = number_problem(value, allow_zero=zero)
        if problem is not None:
            raise self.fail(join(path, key), problem)
        return float(value)

    def optional_seconds(self, table: Mapping[str, Any], key: str, path: str) -> float | None:
        """A duration > 0, or None when absent."""
        return self.seconds(table, key, path, math.nan) if key in table else None

    def json_like(self, value: Any, path: str) -> None:
        """Refuse values JSON cannot carry (TOML dates and times)."""
        # Metadata travels in JSON (control endpoint, events): TOML dates and times do not.
        if isinstance(value, dict):
            for key, item in value.items():
                self.json_like(item, join(path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.json_like(item, f"{path}[{index}]")
        elif not isinstance(value, str | int | float | bool):
            raise self.fail(
                path, f"{describe(value)} is not supported here: use a string for dates and times"
            )


def join(path: str, key: str) -> str:
    """``path.key``, or ``key`` at the top level."""
    return f"{path}.{key}" if path else key


def describe(value: Any) -> str:
    """A value with its TOML type, for messages: ``string '30'``."""
    kind = TYPE_NAMES.get(type(value), type(value).__name__)
    return f"{kind} {value!r}"
