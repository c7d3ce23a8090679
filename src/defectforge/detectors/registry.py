"""The reference detectors by name: ``{name: detector class}``, what each declares, and one way to build them.

In the style of timm's model registry: :func:`list_detectors` names them, :func:`detector_info`
says what one is without building it, :func:`create_detector` builds one from a name, a backbone,
a width and constructor options. Each detector is a class in its own module that follows the
:class:`~defectforge.detectors.base.Detector` protocol and declares its attributes there
(``name``, ``kind``, ``method``, ``uses_backbone_features``, ``width_option``); the rest is read
from its signatures, so nothing about a detector is written twice:

- its *options* (``--detector-option KEY=VALUE``) are the keyword arguments of its constructor
  (through ``**kwargs`` to its parents' constructors) except ``backbone``, ``vqvae`` and
  ``device``, which :func:`create_detector` passes itself;
- it *needs a backbone* (or a VQ-VAE) when its constructor takes one;
- it can *keep its best checkpoint* on a validation set when its ``fit`` takes ``select_every``.

Adding a detector: a module with its class, and one line in :data:`_BUILT_IN` below (or
:func:`register_detector` from your own code); ``tests/test_detector_registry.py`` then trains
and scores it like every other one.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .backbones import Backbone
from .base import KINDS, Detector
from .draem_seg import DraemSegDetector
from .dsr import DSRDetector
from .feature_level import GlassDetector, PBASDetector, SimpleNetDetector, SuperSimpleNetDetector, UniADDetector
from .fusion import FusionDetector
from .patchcore import PatchCoreBaseline
from .residual_seg import ResidualSegDetector
from .seghead import SegHeadDetector

__all__ = ["DetectorInfo", "register_detector", "detector_info", "list_detectors", "create_detector",
           "check_options"]

#: Constructor arguments :func:`create_detector` fills itself (never a ``--detector-option``).
RESERVED_ARGUMENTS = ("backbone", "vqvae", "device")


@dataclass(frozen=True)
class DetectorInfo:
    """What a registered detector is, without building it.

    Attributes
    ----------
    name, kind, method, uses_backbone_features, width_option
        Declared by the class (:mod:`.base`).
    cls : type
        The detector class (its constructor is the factory).
    options : Mapping[str, Any]
        Constructor option -> default (``--detector-option KEY=VALUE``).
    needs_backbone, needs_vqvae, takes_device : bool
        Whether its constructor takes a ``backbone``, a ``vqvae``, a ``device``.
    selects_checkpoints : bool
        Whether ``fit`` keeps the best checkpoint on a validation set (``validation``, ``select_every``).
    summary : str
        The first line of the class docstring.
    """

    name: str
    cls: type
    kind: str
    method: str | None
    uses_backbone_features: bool
    width_option: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    needs_backbone: bool = False
    needs_vqvae: bool = False
    takes_device: bool = False
    selects_checkpoints: bool = False
    summary: str = ""


_REGISTRY: dict[str, DetectorInfo] = {}


def _constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of ``cls``'s constructor, following ``**kwargs`` into its parents'."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        forwards = False
        for p in list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]:
            if p.kind is p.VAR_KEYWORD:
                forwards = True
            elif p.kind is not p.VAR_POSITIONAL:
                found.setdefault(p.name, p)
        if not forwards:
            break
    return found


def register_detector(cls: type) -> type:
    """Add the detector class ``cls`` under its declared ``name`` (usable as a class decorator).

    Raises
    ------
    ValueError
        A declared attribute is missing or invalid, or another class holds the name.
    """
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__} declares no name (class attribute `name`)")
    missing = [a for a in ("kind", "method", "uses_backbone_features", "width_option") if not hasattr(cls, a)]
    if missing or not all(callable(getattr(cls, m, None)) for m in ("fit", "score_maps", "image_scores")):
        raise ValueError(f"detector {name!r} does not follow the Detector protocol: it lacks "
                         f"{missing or 'fit / score_maps / image_scores'} (derive from detectors.base.DetectorBase)")
    if cls.kind not in KINDS:
        raise ValueError(f"detector {name!r}: kind must be one of {KINDS}, got {cls.kind!r}")
    if (cls.kind in ("feature", "latent")) != isinstance(cls.method, str):
        raise ValueError(f"detector {name!r}: a feature- or latent-level detector names the method it trains on "
                         f"(class attribute `method`), the others none; got kind {cls.kind!r}, method {cls.method!r}")
    known = _REGISTRY.get(name)
    if known is not None and known.cls is not cls:
        raise ValueError(f"detector {name!r} is already registered ({known.cls.__module__}.{known.cls.__qualname__})")
    params = _constructor_parameters(cls)
    options = {k: p.default for k, p in params.items() if k not in RESERVED_ARGUMENTS}
    if cls.width_option is not None and cls.width_option not in options:
        raise ValueError(f"detector {name!r}: width_option {cls.width_option!r} is not a constructor argument")
    _REGISTRY[name] = DetectorInfo(
        name=name, cls=cls, kind=cls.kind, method=cls.method, uses_backbone_features=bool(cls.uses_backbone_features),
        width_option=cls.width_option, options=MappingProxyType(options), needs_backbone="backbone" in params,
        needs_vqvae="vqvae" in params, takes_device="device" in params,
        selects_checkpoints="select_every" in inspect.signature(cls.fit).parameters,
        summary=(inspect.getdoc(cls) or "").split("\n")[0])
    return cls


def list_detectors(kind: str | None = None) -> list[str]:
    """Registered detector names (in registration order), optionally of one ``kind`` (:data:`~.base.KINDS`)."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [name for name, info in _REGISTRY.items() if kind is None or info.kind == kind]


def detector_info(name: str) -> DetectorInfo:
    """What detector ``name`` is; an unknown name raises ``ValueError`` with the closest names."""
    if name not in _REGISTRY:
        from ..core.validation import suggest

        raise ValueError(f"unknown detector {name!r}.{suggest(name, _REGISTRY)} Detectors: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def check_options(name: str, options: Mapping[str, Any] | None = None, width: int = 0) -> dict[str, Any]:
    """The constructor options of detector ``name`` for ``options`` and ``width`` (0: its default).

    Raises
    ------
    ValueError
        An option the detector does not take (the message lists those it takes, with their
        defaults), a width for a detector without one, or the width given twice.
    """
    info = detector_info(name)
    options = dict(options or {})
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in info.options.items()) or "none"
        raise ValueError(f"detector {name!r} has no option {', '.join(map(repr, unknown))}; its options "
                         f"(with their defaults): {valid}")
    if width:
        if info.width_option is None:
            raise ValueError(f"detector {name!r} has no width")
        if info.width_option in options:
            raise ValueError(f"the width of {name!r} is given twice: width {width} and option "
                             f"{info.width_option}={options[info.width_option]!r}")
        options[info.width_option] = int(width)
    return options


def create_detector(name: str, backbone: Backbone | None = None, width: int = 0, device: str = "cpu", vqvae=None,
                    options: Mapping[str, Any] | None = None) -> Detector:
    """A fresh, untrained detector by name.

    Parameters
    ----------
    name : str
        A registered detector (:func:`list_detectors`).
    backbone : Backbone, optional
        The frozen feature extractor of the detectors that take one (:func:`~.backbones.load_backbone`).
    width : int
        The detector's width (its ``width_option``; 0: its default).
    device : str
        Device of the detectors that take one (the others work on their backbone's).
    vqvae : TwoLevelVQVAE, optional
        The trained VQ-VAE of ``dsr``.
    options : mapping, optional
        Constructor options (``--detector-option KEY=VALUE``), checked by :func:`check_options`.

    Examples
    --------
    >>> from defectforge.detectors import create_detector, load_backbone
    >>> create_detector("pbas", load_backbone("tiny"), options={"bank": "moving"}).bank_kind
    'moving'
    """
    info = detector_info(name)
    kwargs = check_options(name, options, width)
    if info.needs_backbone:
        if backbone is None:
            raise ValueError(f"detector {name!r} needs a backbone (see load_backbone)")
        kwargs["backbone"] = backbone
    if info.needs_vqvae:
        kwargs["vqvae"] = vqvae
    if info.takes_device:
        kwargs["device"] = device
    return info.cls(**kwargs)


#: The built-in detectors, registered in this order (the order ``list_detectors`` gives): the
#: image-level ones, the feature-level ones, the latent-level one, the baseline.
_BUILT_IN = (SegHeadDetector, DraemSegDetector, ResidualSegDetector, FusionDetector, SimpleNetDetector,
             SuperSimpleNetDetector, GlassDetector, PBASDetector, UniADDetector, DSRDetector, PatchCoreBaseline)
for _cls in _BUILT_IN:
    register_detector(_cls)
