"""The method registry: ``create(name, **overrides)``, ``list_methods()`` and ``from_config``.

A method is a synthesizer class plus a preset of constructor defaults, so one class can serve
several named variants (``draem`` and ``draem_anomalib``) whose provenance the name states.

The registry is a leaf: it imports nothing above ``core``. Importing the ``defectforge`` package
imports the method packages, which register themselves (as timm's ``models/__init__`` does).
Composite synthesizers (``control``, ``mix``) register a config builder with
:func:`register_config_builder` so that :func:`from_config` rebuilds them too.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from .capabilities import capabilities_of
from .validation import check_choice, suggest

__all__ = ["MethodInfo", "register_method", "create", "list_methods", "method_info", "from_config",
           "register_config_builder", "resolved_arguments", "defines_preset", "FAMILIES", "LEVELS"]

#: Families of the survey "A Survey on Industrial Anomalies Synthesis" (arXiv 2502.16412), plus
#: ``real-defect``: methods that transplant a user's few real defects (Copy&Paste and its kin),
#: which the survey counts as the baseline of its generative family rather than a family.
FAMILIES = ("hand-crafted", "distribution-hypothesis", "generative", "diffusion", "real-defect")
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
            "capabilities": self.capabilities,
        }

    @property
    def capabilities(self) -> dict[str, Any]:
        """The class's declared capabilities (:data:`~defectforge.core.capabilities.CAPABILITIES`) plus the preset's ``cpu_bound``."""
        return capabilities_of(self.cls, self.cpu_bound)

    def missing_requirements(self) -> list[str]:
        """The optional modules this method needs that are not installed."""
        import importlib.util

        return [m for m in self.capabilities["requires"] if importlib.util.find_spec(m) is None]


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


def resolved_arguments(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` completed with the constructor defaults of ``cls`` (along ``**kwargs`` chains)."""
    full: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        has_var_kw = False
        for p in list(inspect.signature(init).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty:
                full.setdefault(p.name, p.default)
        if not has_var_kw:
            break
    full.update(kwargs)
    return full


def method_info(name: str) -> MethodInfo:
    """Registry entry of ``name`` (raises ``ValueError`` with suggestions when unknown)."""
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
    if family is not None:
        check_choice("family", family, FAMILIES)
    if level is not None:
        check_choice("level", level, LEVELS)
    return sorted(
        n for n, info in _REGISTRY.items()
        if (family is None or info.family == family) and (level is None or info.level == level)
    )


def defines_preset(info: MethodInfo, key: str) -> bool:
    """``key`` is set by the preset of ``info`` to another value than its class's constructor default.

    Such a value defines the preset (``cutpaste_3way``'s ``anomaly_probability`` of 2/3, whose
    normal samples are class 0 of its 3-way classifier), so no overlay may replace it.
    """
    if key not in info.defaults:
        return False
    class_default = resolved_arguments(info.cls, {}).get(key, inspect.Parameter.empty)
    return class_default is inspect.Parameter.empty or class_default != info.defaults[key]


def create(name: str, *, overlay: dict[str, Any] | None = None, **overrides: Any):
    """Build the synthesizer registered as ``name``; ``overrides`` replace preset defaults.

    ``overlay`` holds what a caller asks of every method where it may (a dataset asks
    ``anomaly_probability=1``, say): each value is applied only where the class takes the
    parameter, the caller did not override it and the preset does not define it
    (:func:`defines_preset`). What was applied is recorded in ``synth.overlay_applied``.

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
    applied: dict[str, Any] = {}
    if overlay:
        accepted = _accepted_kwargs(info.cls)
        applied = {k: v for k, v in overlay.items()
                   if k in accepted and k not in overrides and not defines_preset(info, k)}
    kwargs = {**info.defaults, **applied, **overrides}
    synth = info.cls(**kwargs)
    synth.method_name = name
    synth.cpu_bound = info.cpu_bound
    synth.method_kwargs = resolved_arguments(info.cls, kwargs)
    synth.overlay_applied = applied
    return synth


_CONFIG_BUILDERS: dict[str, Any] = {}


def register_config_builder(kind: str, build) -> None:
    """Let :func:`from_config` rebuild configs whose ``"method"`` is ``kind`` (``control``, ``mix``)."""
    _CONFIG_BUILDERS[kind] = build


def from_config(config: dict[str, Any]):
    """Rebuild a synthesizer from ``synth.config()`` (as albumentations' ``from_dict``).

    Works for every registered method and for the composites ``control`` and ``mix``.

    Examples
    --------
    >>> import defectforge
    >>> synth = defectforge.create("cutpaste_scar", color_jitter=0.2)
    >>> again = defectforge.from_config(synth.config())
    >>> again.config() == synth.config()
    True
    """
    if not isinstance(config, dict) or "method" not in config:
        raise ValueError("a synthesizer config is a mapping with a 'method' key, as synth.config() writes it; "
                         f"got {type(config).__name__}")
    kwargs = dict(config)
    kind = kwargs.pop("method")
    if kind in _CONFIG_BUILDERS:
        return _CONFIG_BUILDERS[kind](kwargs)
    return create(kind, **kwargs)
