"""Parameter schema of a registered method: kind, default, bounds and choices of every argument.

Read from the registry itself, so it never drifts from the code: the kinds and defaults come
from the resolved constructor arguments (preset defaults over class defaults), the bounds and
choices from the method's own argument checks, where they are declared once: asked with an
out-of-range value, a check raises :class:`~defectforge.core.validation.OutOfRange` or
:class:`~defectforge.core.validation.NotAChoice` carrying its interval or choices. The web UI
builds one widget per entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from .registry import create, method_info, resolved_arguments
from .validation import NotAChoice, OutOfRange

__all__ = ["ParameterSpec", "parameter_schema"]

#: Arguments that name files or objects rather than tunable values (the UI offers them as text).
_PROBE = 1e12


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
    for value in (make(_PROBE), make(-_PROBE)):
        try:
            create(method, **{name: value})
        except OutOfRange as exc:
            return (None if exc.low is None else float(exc.low)), (None if exc.high is None else float(exc.high))
        except Exception:  # noqa: BLE001 - a probe must never break the schema
            continue
    return None, None


def _choices(method: str, name: str) -> tuple | None:
    try:
        create(method, **{name: "\x00not-a-choice"})
    except NotAChoice as exc:
        return exc.choices
    except Exception:  # noqa: BLE001 - a probe must never break the schema
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
