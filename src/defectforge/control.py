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

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .core.base import ImageShape, Synthesizer
from .core.registry import create
from .core.seeding import child_seed
from .core.types import SynthesisContext, to_jsonable
from .core.validation import check_interval, check_range
from .functional.paste import place_box, rotate_expand

__all__ = ["MaskBank", "ControlledSynthesizer", "MixtureSynthesizer", "control", "mix", "parse_mix"]


def _generator(seed: int, stream: int = 0) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=seed, counter=stream << 128))


class MaskBank:
    """A folder of user-drawn binary defect shapes (PNG or any image file, 0 = background).

    Each shape is cropped to its bounding box when loaded. A file that is not binary (grey
    levels other than two) or holds no foreground raises an error naming the file.

    Parameters
    ----------
    folder : path
        Folder of mask images (searched recursively).
    scale_range : (float, float)
        Longer side of a placed shape as a fraction of the image's shorter side.
    rotation_range : (float, float)
        Rotation in degrees.
    """

    def __init__(self, folder: str | os.PathLike, scale_range=(0.1, 0.4), rotation_range=(0.0, 360.0)):
        from .io.images import list_images, read_image

        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"mask bank {self.folder} is not a folder; pass a folder of binary mask PNGs")
        files = list_images(self.folder)
        if not files:
            raise ValueError(f"mask bank {self.folder} holds no images; add binary PNG masks (0 background, 255 shape)")
        self.scale_range = check_interval("scale_range", scale_range, 1e-3, 1.0)
        self.rotation_range = check_interval("rotation_range", rotation_range, -360.0, 360.0)
        self.files, self.shapes = [], []
        for f in files:
            m = read_image(f, channels=1)[..., 0]
            values = np.unique(m)
            if len(values) > 2 or (len(values) == 2 and values[0] != 0):
                raise ValueError(f"mask bank file {f} is not binary (it has grey levels {values[:6].tolist()}"
                                 f"{'...' if len(values) > 6 else ''}); save it with 0 for background and 255 "
                                 "for the shape only")
            if values.max() == 0:
                raise ValueError(f"mask bank file {f} is empty (no shape pixel); remove it or draw the shape in white")
            ys, xs = np.nonzero(m)
            self.files.append(f)
            self.shapes.append(np.ascontiguousarray(m[ys.min():ys.max() + 1, xs.min():xs.max() + 1] > 0))
        self.identity = str(self.folder)

    def __len__(self) -> int:
        return len(self.shapes)

    def sample(self, rng: np.random.Generator, height: int, width: int, region: np.ndarray | None) -> dict:
        """Draw a shape, its scale, rotation and position (centred on a region pixel)."""
        index = int(rng.integers(len(self)))
        scale = float(rng.uniform(*self.scale_range))
        angle = float(rng.uniform(*self.rotation_range))
        p = {"index": index, "scale": scale, "angle": angle}
        sh, sw = self._size(p, height, width)
        p["target"] = list(place_box(rng, height, width, min(sh, height), min(sw, width), region))
        return p

    def _scaled(self, p: dict, height: int, width: int) -> np.ndarray:
        shape = self.shapes[p["index"]]
        factor = p["scale"] * min(height, width) / max(shape.shape)
        h, w = max(1, int(round(shape.shape[0] * factor))), max(1, int(round(shape.shape[1] * factor)))
        scaled = cv2.resize(shape.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
        if not scaled.any():
            scaled[h // 2, w // 2] = 255
        return scaled

    def _size(self, p: dict, height: int, width: int) -> tuple[int, int]:
        scaled = self._scaled(p, height, width)
        rotated, _ = rotate_expand(scaled[..., None], p["angle"])
        return rotated.shape[:2]

    def render(self, p: dict, height: int, width: int) -> np.ndarray:
        """The placed shape as an ``(height, width)`` bool mask."""
        rotated, _ = rotate_expand(self._scaled(p, height, width)[..., None], p["angle"])
        shape = rotated[..., 0] > 0
        ty, tx = p["target"]
        out = np.zeros((height, width), bool)
        hh, ww = min(shape.shape[0], height - ty), min(shape.shape[1], width - tx)
        out[ty:ty + hh, tx:tx + ww] = shape[:hh, :ww]
        return out


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
        self.uses_donors = bool(getattr(self.inner, "uses_donors", False))
        self.method_name = self.inner.method_name

    def config(self) -> dict[str, Any]:
        return to_jsonable({"method": "control", "inner": self.inner.config(), "defect_count": list(self.defect_count),
                            "area_range": None if self.area_range is None else list(self.area_range),
                            "mask_bank": None if self.mask_bank is None else self.mask_bank.identity,
                            "anomaly_probability": self.anomaly_probability})

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        h, w = shape.height, shape.width
        n = int(rng.integers(self.defect_count[0], self.defect_count[1] + 1))
        p: dict[str, Any] = {"defects": []}
        if foreground is not None and not foreground.any():
            p["region_fallback"] = "empty foreground: defects were placed on the whole image"
            foreground = None
        for _ in range(n):
            seed = child_seed(rng)
            sub = _generator(seed)
            defect: dict[str, Any] = {"seed": seed}
            region = foreground
            if self.mask_bank is not None:
                for _try in range(20):  # a placed shape must touch the region
                    placed = self.mask_bank.sample(sub, h, w, foreground)
                    shape_mask = self.mask_bank.render(placed, h, w)
                    region = shape_mask if foreground is None else shape_mask & foreground
                    if region.any():
                        break
                defect["shape"] = placed
            defect["params"] = self.inner.sample_params(sub, shape, region)
            p["defects"].append(defect)
        return p

    def _shapes(self, params: list[dict], k: int, idx: list[int], h: int, w: int, device) -> torch.Tensor | None:
        if self.mask_bank is None:
            return None
        stack = np.stack([self.mask_bank.render(params[i]["defects"][k]["shape"], h, w) for i in idx])
        return torch.from_numpy(stack)[:, None].float().to(device)

    def _run_defects(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, redraw: bool):
        b, _, h, w = images.shape
        cur = images.clone()
        masks = torch.zeros((b, 1, h, w), device=images.device)
        labels = torch.zeros(b, dtype=torch.long, device=images.device)
        extras: dict[str, torch.Tensor] = {}
        fg = context.foreground
        if fg is not None:
            fallback = [i for i, p in enumerate(params) if p.get("region_fallback")]
            if fallback:
                fg = fg.clone()
                fg[fallback] = 1.0
        for k in range(max((len(p["defects"]) for p in params), default=0)):
            idx = [i for i, p in enumerate(params) if len(p["defects"]) > k]
            index = torch.tensor(idx, device=images.device)
            sub_params = [params[i]["defects"][k]["params"] for i in idx]
            shapes = self._shapes(params, k, idx, h, w, images.device)
            sub_fg = None if fg is None else fg[index]
            if shapes is not None:
                sub_fg = shapes if sub_fg is None else shapes * sub_fg
            ctx = SynthesisContext(foreground=sub_fg, donors=context.donors, shapes=shapes)
            rngs = [_generator(params[i]["defects"][k]["seed"], 1) for i in idx] if redraw else None
            result = self.inner.apply(cur[index], sub_params, ctx, rngs)
            out, m, lab = result[0], result[1], result[2]
            cur[index] = out
            masks[index] = torch.maximum(masks[index], m)
            labels[index] = torch.maximum(labels[index], lab.to(labels.dtype))
            for key, value in (result[3] if len(result) > 3 else {}).items():
                if key not in extras:
                    extras[key] = value.new_zeros((b, *value.shape[1:]))
                    extras[key][index] = value
                elif key == "soft_mask":
                    extras[key][index] = torch.maximum(extras[key][index], value)
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
        self.uses_donors = any(getattr(m, "uses_donors", False) for m in self.members)
        self.method_name = "mix"

    def config(self) -> dict[str, Any]:
        return to_jsonable({"method": "mix", "members": [m.config() for m in self.members],
                            "probabilities": self.probabilities, "anomaly_probability": self.anomaly_probability})

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        j = int(rng.choice(len(self.members), p=np.asarray(self.probabilities) / sum(self.probabilities)))
        return {"method": self.names[j], "params": self.members[j].sample_params(rng, shape, foreground)}

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, _, h, w = images.shape
        out = images.clone()
        masks = torch.zeros((b, 1, h, w), device=images.device)
        labels = torch.zeros(b, dtype=torch.long, device=images.device)
        extras: dict[str, torch.Tensor] = {}
        for j, member in enumerate(self.members):
            idx = [i for i, p in enumerate(params) if p["method"] == self.names[j]]
            if not idx:
                continue
            index = torch.tensor(idx, device=images.device)
            sub = [params[i]["params"] for i in idx]
            result = member.apply(images[index], sub, context.select(index),
                                  None if rngs is None else [rngs[i] for i in idx])
            out[index], masks[index], labels[index] = result[0].to(out.dtype), result[1], result[2].to(labels.dtype)
            for key, value in (result[3] if len(result) > 3 else {}).items():
                if key not in extras:
                    extras[key] = value.new_zeros((b, *value.shape[1:]))
                extras[key][index] = value
        return out, masks, labels, extras


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

    Examples
    --------
    >>> parse_mix("draem:0.25, cutpaste:0.75")
    (['draem', 'cutpaste'], [0.25, 0.75])
    """
    names, probs = [], []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
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
