"""Parameter schema of a registered method: kind, default, bounds and choices of every argument.

Read from the registry itself, so it never drifts from the code: the kinds and defaults come
from the resolved constructor arguments (preset defaults over class defaults), the bounds and
choices from the method's own argument validation, asked with out-of-range values (the
messages of :mod:`defectforge.core.validation` state the accepted interval or choices). The web
UI builds one widget per entry.
"""

from __future__ import annotations

import ast
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from .registry import create, method_info, resolved_arguments

__all__ = ["ParameterSpec", "parameter_schema"]

#: Arguments that name files or objects rather than tunable values (the UI offers them as text).
_PROBE = 1e12
_INTERVAL = re.compile(r"expected a value in ([\[(])([^,\s]+), ([^\]\)\s]+)([\])])")
_CHOICES = re.compile(r"is not one of (\[.*?\])")


@dataclass(frozen=True)
class ParameterSpec:
    """One constructor argument of a method.

    ``kind`` is ``"bool"``, ``"int"``, ``"float"``, ``"choice"`` (one of ``choices``), ``"range"``
    (a ``(min, max)`` pair of ints when ``integer``, else floats) or ``"value"`` (anything else:
    sequences, paths, ``None``; edited as YAML text). ``low``/``high`` are the accepted bounds
    where the method validates them (inclusive unless ``*_open``), else ``None``.
    """

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    integer: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bounds(method: str, name: str, make) -> tuple[float | None, float | None]:
    """The interval the method accepts for ``name``: rejected extreme values state it."""
    low = high = None
    for value in (make(_PROBE), make(-_PROBE)):
        try:
            create(method, **{name: value})
        except (ValueError, TypeError) as exc:
            match = _INTERVAL.search(str(exc))
            if match:
                lo, hi = match.group(2), match.group(3)
                low = None if lo == "-inf" else float(lo)
                high = None if hi == "inf" else float(hi)
                return low, high
        except Exception:  # noqa: BLE001 - a probe must never break the schema
            continue
    return low, high


def _choices(method: str, name: str) -> tuple | None:
    try:
        create(method, **{name: "\x00not-a-choice"})
    except (ValueError, TypeError) as exc:
        match = _CHOICES.search(str(exc))
        if match:
            try:
                return tuple(ast.literal_eval(match.group(1)))
            except (ValueError, SyntaxError):
                return None
    except Exception:  # noqa: BLE001
        return None
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@lru_cache(maxsize=None)
def _schema(method: str) -> tuple[ParameterSpec, ...]:
    info = method_info(method)
    specs = []
    for name, default in resolved_arguments(info.cls, info.defaults).items():
        if isinstance(default, bool):
            specs.append(ParameterSpec(name, "bool", default))
        elif _number(default):
            integer = isinstance(default, int)
            low, high = _bounds(method, name, lambda v: int(v) if integer else float(v))
            specs.append(ParameterSpec(name, "int" if integer else "float", default, low, high, integer=integer))
        elif isinstance(default, str):
            choices = _choices(method, name)
            specs.append(ParameterSpec(name, "choice" if choices else "value", default, choices=choices))
        elif (isinstance(default, (tuple, list)) and len(default) == 2 and all(_number(v) for v in default)
              and name.endswith(("_range", "_bounds"))):
            integer = all(isinstance(v, int) for v in default)
            low, _ = _bounds(method, name, lambda v: (int(-abs(v)) if integer else -abs(v), default[1]))
            _, high = _bounds(method, name, lambda v: (default[0], int(abs(v)) if integer else abs(v)))
            specs.append(ParameterSpec(name, "range", list(default), low, high, integer=integer))
        else:
            specs.append(ParameterSpec(name, "value", list(default) if isinstance(default, tuple) else default))
    return tuple(specs)


def parameter_schema(method: str) -> list[ParameterSpec]:
    """Every constructor argument of ``method`` with its kind, default, bounds and choices.

    Examples
    --------
    >>> import defectforge
    >>> spec = {s.name: s for s in parameter_schema("draem")}
    >>> spec["opacity_range"].kind, spec["opacity_range"].default, spec["opacity_range"].low, spec["opacity_range"].high
    ('range', [0.2, 1.0], 0.0, 1.0)
    >>> spec["augmentations"].choices
    ('draem', 'anomalib', 'none')
    >>> spec["anomaly_probability"].high
    1.0
    """
    return list(_schema(method))
