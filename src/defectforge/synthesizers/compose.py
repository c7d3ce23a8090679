"""User control over any image-level method: defect count, area, user shapes, and mixtures.

:func:`control` wraps a method so that each sample gets ``defect_count`` defects (each one a
full draw of the method, applied one after the other), with a total area fraction inside
``area_range`` (samples outside it are redrawn, a bounded number of times), optionally shaped
by a :class:`MaskBank` of user-drawn binary masks (randomly scaled, rotated and placed on the
foreground). :func:`mix` draws, per sample, one of several methods with given probabilities.

Both are :class:`~defectforge.core.base.Synthesizer` objects: seeded per sample, replayable from
their params, batch-size independent.

Examples
--------
>>> import torch, defectforge
>>> synth = defectforge.control("cutpaste", defect_count=(2, 3), area_range=(0.01, 0.5))
>>> out = synth(torch.rand(2, 3, 64, 64), seed=0)
>>> [len(p["defects"]) in (2, 3) for p in out.params]
[True, True]
>>> both = defectforge.mix(["cutpaste", "draem"], [0.5, 0.5])
>>> sorted({p["method"] for p in both(torch.rand(8, 3, 64, 64), seed=0).params})
['cutpaste', 'draem']
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.base import ApplyResult, ImageShape, Synthesizer, apply_subset, confine_masks, confine_result
from ..core.registry import create, from_config, register_config_builder
from ..core.seeding import CHILD_DRAWS, CHILD_REDRAWS, child_rng, child_seed
from ..core.types import SynthesisContext, to_jsonable
from ..core.validation import check_interval, check_range
from ..sources.mask_bank import MaskBank

__all__ = ["ControlledSynthesizer", "MixtureSynthesizer", "control", "mix", "parse_mix", "recipe"]


def _as_synth(method) -> Synthesizer:
    if isinstance(method, Synthesizer):
        return method
    if isinstance(method, str):
        return create(method, anomaly_probability=1.0)
    raise TypeError(f"expected a method name or a Synthesizer, got {type(method).__name__}")


class ControlledSynthesizer(Synthesizer):
    """A method with a chosen defect count, total area range and, optionally, user shapes.

    Parameters
    ----------
    method : str or Synthesizer
        The method; a name is created with ``anomaly_probability=1``.
    defect_count : int or (int, int)
        Defects per sample, inclusive range (default 1).
    area_range : (float, float) or None
        Allowed total defect area as a fraction of the image; samples outside are redrawn.
    mask_bank : MaskBank, path or None
        User shapes. Methods that draw a free-form mask (glass_las, memseg, defectmaker) use the
        placed shape as their mask; the others place their defect inside it.
    anomaly_probability : float
        Share of anomalous samples.
    max_attempts : int
        Draws per sample before an out-of-range area is accepted (the closest draw is kept and
        ``params["area_fallback"]`` says so).
    """

    def __init__(self, method, defect_count=1, area_range=None, mask_bank=None,
                 anomaly_probability: float = 1.0, max_attempts: int = 20):
        super().__init__(anomaly_probability)
        self.inner = _as_synth(method)
        if isinstance(defect_count, (int, np.integer)):
            defect_count = (int(defect_count), int(defect_count))
        self.defect_count = check_interval("defect_count", defect_count, 1, 64, integer=True)
        self.area_range = None if area_range is None else check_interval("area_range", area_range, 0.0, 1.0)
        if mask_bank is not None and not isinstance(mask_bank, MaskBank):
            mask_bank = MaskBank(mask_bank)
        self.mask_bank = mask_bank
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        self.any_dtype = self.inner.any_dtype
        self.changes_outside_mask = self.inner.changes_outside_mask
        self.uses_donors = self.inner.uses_donors
        self.requires = self.inner.requires
        self.foreground_is_hint = self.inner.foreground_is_hint
        self.method_name = self.inner.method_name

    def children(self) -> tuple[Synthesizer, ...]:
        return (self.inner,)

    def config(self) -> dict[str, Any]:
        """``{"method": "control", "inner": <the method's config>, ...}``; :func:`defectforge.from_config` rebuilds it."""
        return to_jsonable({"method": "control", "inner": self.inner.config(), "defect_count": list(self.defect_count),
                            "area_range": None if self.area_range is None else list(self.area_range),
                            "mask_bank": None if self.mask_bank is None else self.mask_bank.config(),
                            "anomaly_probability": self.anomaly_probability, "max_attempts": self.max_attempts})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ControlledSynthesizer":
        kwargs = dict(config)
        inner = from_config(kwargs.pop("inner"))
        bank = kwargs.pop("mask_bank", None)
        if isinstance(bank, dict):
            bank = MaskBank(**bank)
        return cls(inner, mask_bank=bank, **kwargs)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        h, w = shape.height, shape.width
        n = int(rng.integers(self.defect_count[0], self.defect_count[1] + 1))
        p: dict[str, Any] = {"defects": []}
        for _ in range(n):
            seed = child_seed(rng)
            sub = child_rng(seed, CHILD_DRAWS)
            defect: dict[str, Any] = {"seed": seed}
            region = foreground
            if self.mask_bank is not None:
                for _try in range(20):  # a placed shape must touch the region
                    placed = self.mask_bank.sample(sub, h, w, foreground)
                    shape_mask = self.mask_bank.render(placed, h, w)
                    region = shape_mask if foreground is None else shape_mask & foreground
                    if region.any():
                        break
                else:  # the user's shape never met the foreground: it alone bounds the defect
                    region = shape_mask
                    defect["region_fallback"] = "the placed shape missed the foreground in 20 draws; it alone bounds the defect"
                defect["shape"] = placed
            defect["params"] = self.inner.sample_params(sub, shape, region)
            p["defects"].append(defect)
        return p

    def _shapes(self, params: list[dict], k: int, idx: list[int], h: int, w: int, device) -> torch.Tensor | None:
        """Defect ``k``'s placed shapes for the whole batch (empty for samples with fewer defects)."""
        if self.mask_bank is None:
            return None
        stack = np.zeros((len(params), h, w), bool)
        for i in idx:
            stack[i] = self.mask_bank.render(params[i]["defects"][k]["shape"], h, w)
        return torch.from_numpy(stack)[:, None].float().to(device)

    def _inner_apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs) -> ApplyResult:
        """The inner method's ``apply``; a user's shape bounds the defect even where the foreground
        is only a hint to the method (NSA places a patch that merely overlaps it)."""
        result = ApplyResult.of(self.inner.apply(images, params, context, rngs))
        if context.shapes is None or not self.inner.foreground_is_hint:
            return result
        extras = dict(result.extras)
        out, masks = confine_result(images, result.images, result.masks, context.foreground, extras)
        labels = result.labels.masked_fill(masks.flatten(1).amax(1) <= 0, 0)
        return ApplyResult(out, masks, labels, extras)

    def _run_defects(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, redraw: bool):
        """Apply each sample's defects one after the other; masks and labels are the union/maximum."""
        b, _, h, w = images.shape
        cur = images.clone()
        masks = torch.zeros((b, 1, h, w), device=images.device)
        labels = torch.zeros(b, dtype=torch.long, device=images.device)
        extras: dict[str, torch.Tensor] = {}
        fg = context.foreground
        for k in range(max((len(p["defects"]) for p in params), default=0)):
            idx = [i for i, p in enumerate(params) if len(p["defects"]) > k]
            inner = [p["defects"][k]["params"] if len(p["defects"]) > k else None for p in params]
            shapes = self._shapes(params, k, idx, h, w, images.device)
            region = shapes if fg is None else (fg if shapes is None else shapes * fg)
            missed = [i for i in idx if params[i]["defects"][k].get("region_fallback")]
            if missed:
                region = region.clone()
                region[missed] = 1.0 if shapes is None else shapes[missed]
            ctx = SynthesisContext(foreground=region, donors=context.donors, shapes=shapes)
            rngs = ([child_rng(p["defects"][k]["seed"], CHILD_REDRAWS) if len(p["defects"]) > k else None
                     for p in params] if redraw else None)
            step = (cur.clone(), torch.zeros_like(masks), torch.zeros_like(labels), {})
            out, m, lab, ext = apply_subset(self._inner_apply, cur, inner, ctx, rngs, idx, into=step)
            for i in idx:
                params[i]["defects"][k]["params"] = inner[i]
            cur = out
            masks = torch.maximum(masks, m)
            labels = torch.maximum(labels, lab)
            for key, value in ext.items():
                if key not in extras:  # the first defect's extras (inpainting targets...)
                    extras[key] = value
                elif key == "soft_mask":
                    extras[key] = torch.maximum(extras[key], value)
        return cur, masks, labels, extras

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        out, masks, labels, extras = self._run_defects(images, params, context, rngs is not None)
        if self.area_range is None or rngs is None:
            return out, masks, labels, extras
        lo, hi = self.area_range
        shape = ImageShape(images.shape[1:])
        fg_np = None if context.foreground is None else (context.foreground[:, 0] > 0.5).cpu().numpy()

        def miss(area: float) -> float:
            return max(lo - area, area - hi, 0.0)

        areas = masks.flatten(1).mean(1).tolist()
        for attempt in range(1, self.max_attempts):
            bad = [i for i, a in enumerate(areas) if miss(a) > 0]
            if not bad:
                break
            trial = []
            for i in bad:
                fresh = self.sample_params(rngs[i], shape, None if fg_np is None else fg_np[i])
                trial.append({"anomalous": True, **fresh, "attempts": attempt + 1})
            index = torch.tensor(bad, device=images.device)
            sub_ctx = context.select(index)
            t_out, t_masks, t_labels, t_extras = self._run_defects(images[index], trial, sub_ctx, True)
            t_areas = t_masks.flatten(1).mean(1).tolist()
            for j, i in enumerate(bad):
                if miss(t_areas[j]) < miss(areas[i]) or (miss(t_areas[j]) == miss(areas[i]) == 0):
                    params[i].clear()
                    params[i].update(trial[j])
                    out[i], masks[i], labels[i], areas[i] = t_out[j], t_masks[j], t_labels[j], t_areas[j]
                    for key, value in t_extras.items():
                        if key in extras:
                            extras[key][i] = value[j]
                else:
                    params[i]["attempts"] = attempt + 1
        for i, a in enumerate(areas):
            if miss(a) > 0:
                note = (f"defect area {a:.4f} of the image stays outside [{lo}, {hi}] after "
                        f"{self.max_attempts} draws; the closest draw is kept")
                params[i]["area_fallback"] = note
                warnings.warn(note, stacklevel=4)
        return out, masks, labels, extras


class MixtureSynthesizer(Synthesizer):
    """Per sample, one of several methods drawn with given probabilities (see :func:`mix`)."""

    def __init__(self, methods: Sequence, probabilities: Sequence[float] | None = None,
                 anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        if not methods:
            raise ValueError("mix needs at least one method")
        self.members = [_as_synth(m) for m in methods]
        self.names = [m.method_name or type(m).__name__ for m in self.members]
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"mix lists a method twice: {self.names}")
        if probabilities is None:
            probabilities = [1.0 / len(methods)] * len(methods)
        if len(probabilities) != len(methods):
            raise ValueError(f"mix got {len(probabilities)} probabilities for {len(methods)} methods")
        probs = [float(check_range("mix probability", p, 0.0, None)) for p in probabilities]
        total = sum(probs)
        if not total > 0:
            raise ValueError("mix probabilities must not all be 0")
        if not math.isclose(total, 1.0, rel_tol=1e-6):
            raise ValueError(f"mix probabilities must sum to 1, got {total:g} ({probs})")
        self.probabilities = probs
        self.any_dtype = all(m.any_dtype for m in self.members)
        self.changes_outside_mask = any(m.changes_outside_mask for m in self.members)
        self.uses_donors = any(m.uses_donors for m in self.members)
        self.requires = tuple(sorted({r for m in self.members for r in m.requires}))
        # the base class then confines no mask; ``apply`` confines the members that rely on it
        self.foreground_is_hint = any(m.foreground_is_hint for m in self.members)
        self.method_name = "mix"

    def children(self) -> tuple[Synthesizer, ...]:
        return tuple(self.members)

    def config(self) -> dict[str, Any]:
        """``{"method": "mix", "members": [<configs>], ...}``; :func:`defectforge.from_config` rebuilds it."""
        return to_jsonable({"method": "mix", "members": [m.config() for m in self.members],
                            "probabilities": self.probabilities, "anomaly_probability": self.anomaly_probability})

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "MixtureSynthesizer":
        kwargs = dict(config)
        return cls([from_config(m) for m in kwargs.pop("members")], **kwargs)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        j = int(rng.choice(len(self.members), p=np.asarray(self.probabilities) / sum(self.probabilities)))
        return {"method": self.names[j], "params": self.members[j].sample_params(rng, shape, foreground)}

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, _, h, w = images.shape
        results = (images.clone(), torch.zeros((b, 1, h, w), device=images.device),
                   torch.zeros(b, dtype=torch.long, device=images.device), {})
        for j, member in enumerate(self.members):
            idx = [i for i, p in enumerate(params) if p["method"] == self.names[j]]
            inner = [p["params"] for p in params]
            apply = member.apply
            if self.foreground_is_hint and not member.foreground_is_hint and context.foreground is not None:
                apply = functools.partial(_apply_confined, member.apply)
            results = apply_subset(apply, images, inner, context, rngs, idx, into=results)
            for i in idx:
                params[i]["params"] = inner[i]
        return ApplyResult(*results)


def _apply_confined(apply, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs) -> ApplyResult:
    """``apply`` with its masks cut to the region, for a mixture member that relies on the base rule.

    A mixture holding a member whose foreground is only a hint (NSA) declares the hint itself, so
    the base class confines no mask of the mixture; every other member's masks are confined here.
    """
    result = ApplyResult.of(apply(images, params, context, rngs))
    return result._replace(masks=confine_masks(result.masks, context.foreground))


def control(method, defect_count=1, area_range=None, mask_bank=None, anomaly_probability: float = 1.0,
            max_attempts: int = 20) -> ControlledSynthesizer:
    """Wrap ``method`` with a defect count, an area range and/or a mask bank (see :class:`ControlledSynthesizer`)."""
    return ControlledSynthesizer(method, defect_count, area_range, mask_bank, anomaly_probability, max_attempts)


def mix(methods: Sequence, probabilities: Sequence[float] | None = None,
        anomaly_probability: float = 1.0) -> MixtureSynthesizer:
    """A mixture of methods: each sample is made by one of ``methods``, drawn with ``probabilities``.

    ``methods`` are registry names or synthesizers; ``probabilities`` must sum to 1 (default equal).
    The drawn method is recorded in ``params[i]["method"]``.
    """
    return MixtureSynthesizer(methods, probabilities, anomaly_probability)


def parse_mix(text: str) -> tuple[list[str], list[float]]:
    """``"draem:0.5,cutpaste:0.5"`` -> names and probabilities (``"a,b"`` means equal shares).

    Members are separated by ``,`` or ``+`` (``"real_only:0.5+defect_transplant:0.5"``, the
    benchmark's spelling of one combined training source, where ``,`` separates rows).

    Examples
    --------
    >>> parse_mix("draem:0.25, cutpaste:0.75")
    (['draem', 'cutpaste'], [0.25, 0.75])
    >>> parse_mix("real_only+glass_las")
    (['real_only', 'glass_las'], [0.5, 0.5])
    """
    names, probs = [], []
    for item in [t.strip() for t in text.replace("+", ",").split(",") if t.strip()]:
        name, _, weight = item.partition(":")
        names.append(name.strip())
        try:
            probs.append(float(weight) if weight else float("nan"))
        except ValueError:
            raise ValueError(f"--mix entry {item!r}: the probability after ':' must be a number") from None
    if not names:
        raise ValueError("--mix needs entries like 'draem:0.5,cutpaste:0.5'")
    if all(math.isnan(p) for p in probs):
        probs = [1.0 / len(names)] * len(names)
    elif any(math.isnan(p) for p in probs):
        raise ValueError("--mix: give a probability for every method or for none")
    return names, probs


def recipe(spec: str, bank=None, **options) -> Synthesizer:
    """The synthesizer of a mixture spec (``"real_only:0.5+defect_transplant:0.3+glass_las:0.2"``).

    One name gives that method; several give :func:`mix` of them, each sample's member drawn by
    its weight from ``(seed, index)`` and recorded in ``params[i]["method"]``. Members that place
    real defects (``real_only``, ``copy_paste``, ``defect_transplant``) get ``bank``; ``options``
    are ``{member: {parameter: value}}``.

    Examples
    --------
    >>> import torch
    >>> synth = recipe("cutpaste:0.25+draem:0.75")
    >>> sorted({p["method"] for p in synth(torch.rand(8, 3, 64, 64), seed=0).params})
    ['cutpaste', 'draem']
    """
    from ..core.registry import method_info

    names, probs = parse_mix(spec)

    def one(name: str) -> Synthesizer:
        kwargs = {"anomaly_probability": 1.0, **options.get(name, {})}
        if method_info(name).capabilities["needs_bank"]:
            if bank is None:
                raise ValueError(f"{name} places real defects: give bank=DefectBank.from_folder(...)")
            kwargs.setdefault("bank", bank)
        return create(name, **kwargs)

    unknown = sorted(set(options) - set(names))
    if unknown:
        raise ValueError(f"options for {unknown}, which the recipe {spec!r} does not name")
    return one(names[0]) if len(names) == 1 else mix([one(n) for n in names], probs)


register_config_builder("control", ControlledSynthesizer.from_config)
register_config_builder("mix", MixtureSynthesizer.from_config)
