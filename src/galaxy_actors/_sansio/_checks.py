"""The checks on numbers every argument, setting and configuration file shares.

One definition of "a finite number > 0" (and its friends), so that a duration refused by
`open_supervisor` is refused by the TOML file and the restart policy with the same words.
Sans-IO: values in, a problem or a `ConfigurationError` out.

Each check comes in the shapes its callers need: ``*_problem(value)`` says what is wrong
in words that follow a name (``must be a finite number > 0, got -1``) or None, for callers
that name the value their own way (the TOML reader's key paths); the plain functions raise
`ConfigurationError` naming the value; the ``*_field`` ones are attrs validators named by
the attribute.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from ._errors import ConfigurationError

__all__ = [
    "int_at_least",
    "int_field",
    "int_problem",
    "non_negative",
    "non_negative_field",
    "number_problem",
    "optional_int_at_least",
    "optional_positive_field",
    "positive",
    "positive_field",
]


def number_problem(value: object, *, allow_zero: bool = False) -> str | None:
    """What keeps ``value`` from being a finite number > 0 (>= 0 with ``allow_zero``), or
    None. A bool is not a number here (Python's ``bool`` is an ``int``)."""
    # The type first: comparing a str with 0 would raise TypeError, not say what is wrong.
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value >= 0 if allow_zero else value > 0)
        or not math.isfinite(value)
    ):
        bound = ">= 0" if allow_zero else "> 0"
        return f"must be a finite number {bound}, got {value!r}"
    return None


def int_problem(value: object, *, minimum: int, allow_none: bool = False) -> str | None:
    """What keeps ``value`` from being an int >= ``minimum`` (or None, with
    ``allow_none``), or None."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        return f"must be an int >= {minimum}{' or None' if allow_none else ''}, got {value!r}"
    return None


def positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0; else `ConfigurationError`."""
    problem = number_problem(value)
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}")
    return float(value)


def non_negative(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number >= 0; else `ConfigurationError`."""
    problem = number_problem(value, allow_zero=True)
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}")
    return float(value)


def int_at_least(name: str, value: int, minimum: int) -> int:
    """``value`` if it is an int >= ``minimum``; else `ConfigurationError`."""
    problem = int_problem(value, minimum=minimum)
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}")
    return value


def optional_int_at_least(name: str, value: int | None, minimum: int) -> int | None:
    """``value`` if it is None or an int >= ``minimum``; else `ConfigurationError`."""
    problem = int_problem(value, minimum=minimum, allow_none=True)
    if problem is not None:
        raise ConfigurationError(f"{name} {problem}")
    return value


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def positive_field(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a finite number > 0."""
    positive(attribute.name, value)


def non_negative_field(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: a finite number >= 0."""
    non_negative(attribute.name, value)


def optional_positive_field(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator: None, or a finite number > 0."""
    if value is not None:
        positive(attribute.name, value)


def int_field(minimum: int, *, allow_none: bool = False) -> _Validator:
    """attrs validator: an int >= ``minimum`` (or None, with ``allow_none``)."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        problem = int_problem(value, minimum=minimum, allow_none=allow_none)
        if problem is not None:
            raise ConfigurationError(f"{attribute.name} {problem}")

    return check
