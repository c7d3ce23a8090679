"""The method registry: ``create(name, **overrides)`` and ``list_methods()``.

A method is a synthesizer class plus a preset of constructor defaults, so one class can serve
several named variants (``draem`` and ``draem_anomalib``) whose provenance the name states.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .validation import check_choice, suggest

__all__ = ["MethodInfo", "register_method", "create", "list_methods", "method_info", "FAMILIES", "LEVELS"]

#: Families of the survey "A Survey on Industrial Anomalies Synthesis" (arXiv 2502.16412).
FAMILIES = ("hand-crafted", "distribution-hypothesis", "generative", "diffusion")
#: Where a method synthesises: in image pixels, in a feature map, or in a latent space.
LEVELS = ("image", "feature", "latent")


@dataclass(frozen=True)
class MethodInfo:
    """Registry entry of one named method."""

    name: str
    cls: type
    family: str
    level: str
    description: str
    source: str
    licence: str
    defaults: dict[str, Any] = field(default_factory=dict)
    #: Bound by per-sample CPU work that does not batch (Poisson blending): benchmarks list it apart.
    cpu_bound: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "level": self.level,
            "description": self.description,
            "source": self.source,
            "licence": self.licence,
            "class": f"{self.cls.__module__}.{self.cls.__qualname__}",
            "defaults": dict(self.defaults),
            "cpu_bound": self.cpu_bound,
        }


_REGISTRY: dict[str, MethodInfo] = {}


def register_method(name: str, *, family: str, level: str, description: str, source: str,
                    licence: str, defaults: dict[str, Any] | None = None, cpu_bound: bool = False):
    """Class decorator registering ``cls`` under ``name`` with preset ``defaults``.

    Stack it to register several presets of the same class.
    """
    check_choice("family", family, FAMILIES)
    check_choice("level", level, LEVELS)

    def decorator(cls):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        preset = dict(defaults or {})
        _check_kwargs(cls, preset, name)
        _REGISTRY[name] = MethodInfo(name, cls, family, level, description, source, licence, preset, cpu_bound)
        return cls

    return decorator


def _accepted_kwargs(cls) -> set[str] | None:
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        sig = inspect.signature(init)
        has_var_kw = False
        for p in list(sig.parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
        if not has_var_kw:
            break
    return names


def _check_kwargs(cls, kwargs: dict[str, Any], method: str) -> None:
    accepted = _accepted_kwargs(cls)
    for key in kwargs:
        if key not in accepted:
            raise TypeError(
                f"method {method!r} has no parameter {key!r}.{suggest(key, accepted)} "
                f"Parameters: {', '.join(sorted(accepted))}"
            )


def _ensure_loaded() -> None:
    # Importing the package registers the built-in methods.
    from .. import features, synthesizers  # noqa: F401


def method_info(name: str) -> MethodInfo:
    """Registry entry of ``name`` (raises ``ValueError`` with suggestions when unknown)."""
    _ensure_loaded()
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}.{suggest(name, _REGISTRY)} "
                         f"Known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_methods(family: str | None = None, level: str | None = None) -> list[str]:
    """Names of the registered methods, optionally filtered by family and level.

    Examples
    --------
    >>> import defectforge
    >>> "draem" in defectforge.list_methods(level="image")
    True
    """
    _ensure_loaded()
    if family is not None:
        check_choice("family", family, FAMILIES)
    if level is not None:
        check_choice("level", level, LEVELS)
    return sorted(
        n for n, info in _REGISTRY.items()
        if (family is None or info.family == family) and (level is None or info.level == level)
    )


def create(name: str, **overrides: Any):
    """Build the synthesizer registered as ``name``; ``overrides`` replace preset defaults.

    Examples
    --------
    >>> import torch, defectforge
    >>> synth = defectforge.create("cutpaste", anomaly_probability=1.0)
    >>> out = synth(torch.rand(2, 3, 64, 64), seed=0)
    >>> tuple(out.masks.shape)
    (2, 1, 64, 64)
    """
    info = method_info(name)
    _check_kwargs(info.cls, overrides, name)
    kwargs = {**info.defaults, **overrides}
    synth = info.cls(**kwargs)
    synth.method_name = name
    synth.method_kwargs = kwargs
    return synth
