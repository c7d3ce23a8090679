"""Argument checks with messages that say what was wrong and how to fix it.

A method's ``__init__`` declares each argument's bounds once, in its call to these checks. A
value outside them raises :class:`OutOfRange` or :class:`NotAChoice`, which carry the bounds or
choices as attributes, so :mod:`defectforge.core.schema` (and through it the web UI, the CLI's
``methods --params`` and the docs) reads them from the check itself, never from a message.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "OutOfRange",
    "NotAChoice",
    "check_probability",
    "check_range",
    "check_interval",
    "check_choice",
    "suggest",
]


def suggest(name: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for close matches of ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class OutOfRange(ValueError):
    """A number outside the interval its check accepts; the interval is in the attributes.

    Attributes
    ----------
    name : str
        The argument (``"opacity_range[0]"`` for an element of an interval argument).
    low, high : float or None
        The accepted bounds (``None``: unbounded).
    low_inclusive, high_inclusive : bool
        Whether each bound itself is accepted.
    """

    def __init__(self, message: str, name: str, low: float | None, high: float | None,
                 low_inclusive: bool = True, high_inclusive: bool = True):
        super().__init__(message)
        self.name, self.low, self.high = name, low, high
        self.low_inclusive, self.high_inclusive = low_inclusive, high_inclusive


class NotAChoice(ValueError):
    """A value that is not one of the choices its check accepts (``choices``, a tuple)."""

    def __init__(self, message: str, name: str, choices: Sequence):
        super().__init__(message)
        self.name, self.choices = name, tuple(choices)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None,
                *, integer: bool = False, low_inclusive: bool = True, high_inclusive: bool = True):
    """Check that ``value`` is a finite number in ``[low, high]`` and return it."""
    if not _is_number(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer and int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        lb = "[" if low_inclusive else "("
        hb = "]" if high_inclusive else ")"
        raise OutOfRange(
            f"{name}={value!r} is out of range; expected a value in "
            f"{lb}{'-inf' if low is None else low}, {'inf' if high is None else high}{hb}",
            name, low, high, low_inclusive, high_inclusive,
        )
    return int(value) if integer else value


def check_probability(name: str, value: Any) -> float:
    """Check a probability in ``[0, 1]``."""
    return float(check_range(name, value, 0.0, 1.0))


def check_interval(name: str, value: Any, low: float | None = None, high: float | None = None,
                   *, integer: bool = False) -> tuple:
    """Check an ``(a, b)`` interval with ``low <= a <= b <= high`` and return it as a tuple."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (min, max), got {value!r}")
    a = check_range(f"{name}[0]", value[0], low, high, integer=integer)
    b = check_range(f"{name}[1]", value[1], low, high, integer=integer)
    if a > b:
        raise ValueError(f"{name}={tuple(value)!r}: min must not exceed max")
    return (a, b)


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Check that ``value`` is one of ``choices`` and return it."""
    choices = list(choices)
    if value not in choices:
        raise NotAChoice(f"{name}={value!r} is not one of {choices}.{suggest(str(value), choices)}", name, choices)
    return value
