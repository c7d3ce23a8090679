"""Random augmentation pipelines with recorded parameters ("k of n ops", as DRAEM's SomeOf).

An :class:`Op` draws its parameters for one sample (``sample``) and applies them to one
``(H, W, 3)`` uint8 image (``apply``), with the uint8 semantics of the libraries the reference
code calls (imgaug / PIL / torchvision; see :mod:`defectforge.functional.uint8ops`).
:func:`sample_pipeline` picks ``k`` ops without replacement, in the drawn order, and records
``[[name, params], ...]``; :func:`augment_uint8` replays a recorded pipeline on one image.

Texture augmentation runs on the CPU (the textures live there); masks and blending run on the
batch's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from . import uint8ops as u8

__all__ = ["Op", "sample_pipeline", "augment_uint8", "DRAEM_OPS", "ANOMALIB_OPS", "op_set"]


@dataclass(frozen=True)
class Op:
    """A named augmentation: ``sample(rng) -> dict`` and ``apply(image, params) -> image``.

    Per-channel point operations also give their lookup table, ``lut(params, hists) -> (C, 256)``
    (``hists``: the current image's histograms, for ops like equalize that need them), so that
    consecutive ones are fused into one table and the pixels are touched once.
    """

    name: str
    sample: Callable[[np.random.Generator], dict]
    apply: Callable[[np.ndarray, dict], np.ndarray]
    lut: Callable[[dict, Callable[[], np.ndarray]], np.ndarray] | None = None


def _u(rng: np.random.Generator, lo: float, hi: float, n: int | None = None):
    v = rng.uniform(lo, hi, n)
    return v.tolist() if n is not None else float(v)


_BRIGHTNESS_SPACES = tuple(u8.BRIGHTNESS_COLORSPACES)

# --- DRAEM's ten imgaug ops (VitjanZ/DRAEM data_loader.py; imgaug defaults where DRAEM passes none)
DRAEM_OPS: dict[str, Op] = {op.name: op for op in [
    # iaa.GammaContrast((0.5, 2.0), per_channel=True)
    Op("gamma_contrast", lambda r: {"gamma": _u(r, 0.5, 2.0, 3)}, lambda x, p: u8.gamma(x, p["gamma"]),
       lambda p, h: u8.gamma_lut(p["gamma"])),
    # iaa.MultiplyAndAddToBrightness(mul=(0.8, 1.2), add=(-30, 30)): mul continuous, add an integer
    # of [-30..30] (imgaug's Add draws from the discrete interval), in random order, on the
    # brightness channel of one of six colour spaces drawn per image (imgaug's defaults)
    Op("multiply_add_brightness",
       lambda r: {"mul": _u(r, 0.8, 1.2), "add": int(r.integers(-30, 31)), "add_first": bool(r.random() < 0.5),
                  "colorspace": _BRIGHTNESS_SPACES[int(r.integers(len(_BRIGHTNESS_SPACES)))]},
       lambda x, p: u8.multiply_add_brightness(x, p["mul"], p["add"], p["add_first"], p.get("colorspace", "YCrCb"))),
    # iaa.pillike.EnhanceSharpness(): factor U(0.0, 2.0) (imgaug default)
    Op("sharpness", lambda r: {"factor": _u(r, 0.0, 2.0)}, lambda x, p: u8.sharpness(x, p["factor"])),
    # iaa.AddToHueAndSaturation((-50, 50), per_channel=True): hue and saturation drawn apart
    Op("hue_saturation", lambda r: {"hue": _u(r, -50, 50), "saturation": _u(r, -50, 50)},
       lambda x, p: u8.add_hue_saturation(x, p["hue"], p["saturation"])),
    # iaa.Solarize(0.5, threshold=(32, 128)): applied with p = 0.5
    Op("solarize", lambda r: {"apply": bool(r.random() < 0.5), "threshold": _u(r, 32, 128)},
       lambda x, p: u8.solarize(x, p["threshold"]) if p["apply"] else x,
       lambda p, h: u8.solarize_lut(p["threshold"] if p["apply"] else 256)),
    # iaa.Posterize(): nb_bits U{1..8} (imgaug default)
    Op("posterize", lambda r: {"bits": int(r.integers(1, 9))}, lambda x, p: u8.posterize(x, p["bits"]),
       lambda p, h: u8.posterize_lut(p["bits"])),
    # iaa.Invert(): p = 1
    Op("invert", lambda r: {}, lambda x, p: u8.invert(x), lambda p, h: u8.INVERT_LUT),
    # iaa.pillike.Autocontrast(): cutoff U(0, 20) percent (imgaug default)
    Op("autocontrast", lambda r: {"cutoff": _u(r, 0.0, 20.0)}, lambda x, p: u8.autocontrast(x, p["cutoff"]),
       lambda p, h: u8.autocontrast_lut(h(), p["cutoff"])),
    # iaa.pillike.Equalize()
    Op("equalize", lambda r: {}, lambda x, p: u8.equalize(x), lambda p, h: u8.equalize_lut(h())),
    # iaa.Affine(rotate=(-45, 45)): bilinear, constant 0 fill
    Op("rotate", lambda r: {"angle": _u(r, -45, 45)}, lambda x, p: u8.rotate(x, p["angle"])),
]}

def _permute_channels(x: np.ndarray, permutation) -> np.ndarray:
    """Channel ``k`` of the result is channel ``permutation[k]`` of ``x`` (torchvision ``permute_channels``)."""
    if permutation is None or x.ndim == 2 or x.shape[2] != len(permutation) or list(permutation) == [0, 1, 2]:
        return x
    return np.ascontiguousarray(x[..., list(permutation)])


# --- anomalib 2.x PerlinAnomalyGenerator's torchvision ops (open-edge-platform/anomalib, Apache-2.0)
ANOMALIB_OPS: dict[str, Op] = {op.name: op for op in [
    # v2.ColorJitter(contrast=(0.5, 2.0))
    Op("contrast", lambda r: {"factor": _u(r, 0.5, 2.0)}, lambda x, p: u8.contrast(x, p["factor"])),
    # v2.RandomPhotometricDistort(brightness=(0.8, 1.2), p=1.0): contrast, saturation and hue are
    # identities, but with p=1 it also permutes the channels every time (torch.randperm(3))
    Op("brightness", lambda r: {"factor": _u(r, 0.8, 1.2), "permutation": [int(k) for k in r.permutation(3)]},
       lambda x, p: _permute_channels(u8.brightness(x, p["factor"]), p.get("permutation"))),
    # v2.RandomAdjustSharpness(sharpness_factor=2.0, p=1.0)
    Op("sharpness", lambda r: {"factor": 2.0}, lambda x, p: u8.sharpness(x, p["factor"])),
    # v2.ColorJitter(hue=[-50/360, 50/360], saturation=[0.5, 1.5]): in ColorJitter's random order
    Op("hue_saturation", lambda r: {"saturation": _u(r, 0.5, 1.5), "hue": _u(r, -50 / 360, 50 / 360),
                                    "saturation_first": bool(r.random() < 0.5)},
       lambda x, p: u8.hue(u8.saturation(x, p["saturation"]), p["hue"]) if p.get("saturation_first", True)
       else u8.saturation(u8.hue(x, p["hue"]), p["saturation"])),
    # v2.RandomSolarize(threshold=U(32, 128)/255, p=1.0); anomalib draws it once per generator,
    # here per sample, so it is recorded and seeded
    Op("solarize", lambda r: {"threshold": _u(r, 32, 128)}, lambda x, p: u8.solarize(x, p["threshold"]),
       lambda p, h: u8.solarize_lut(p["threshold"])),
    # v2.RandomPosterize(bits=4, p=1.0)
    Op("posterize", lambda r: {"bits": 4}, lambda x, p: u8.posterize(x, p["bits"]), lambda p, h: u8.posterize_lut(p["bits"])),
    # v2.RandomInvert(p=1.0)
    Op("invert", lambda r: {}, lambda x, p: u8.invert(x), lambda p, h: u8.INVERT_LUT),
    # v2.AutoAugment() (an ImageNet policy of 2 random ops) is not reproduced: autocontrast stands in
    Op("autocontrast", lambda r: {"cutoff": 0.0}, lambda x, p: u8.autocontrast(x, p["cutoff"]),
       lambda p, h: u8.autocontrast_lut(h(), p["cutoff"])),
    # v2.RandomEqualize(p=1.0)
    Op("equalize", lambda r: {}, lambda x, p: u8.equalize(x), lambda p, h: u8.equalize_lut(h())),
    # v2.RandomAffine(degrees=(-45, 45), bilinear, fill=0)
    Op("rotate", lambda r: {"angle": _u(r, -45, 45)}, lambda x, p: u8.rotate(x, p["angle"])),
]}

_OP_SETS: dict[str, dict[str, Op]] = {"draem": DRAEM_OPS, "anomalib": ANOMALIB_OPS}


def op_set(name: str) -> dict[str, Op]:
    """The named op set: ``"draem"`` or ``"anomalib"``."""
    if name not in _OP_SETS:
        raise ValueError(f"unknown augmentation set {name!r}; known: {sorted(_OP_SETS)}")
    return _OP_SETS[name]


def sample_pipeline(rng: np.random.Generator, ops: dict[str, Op], k: int) -> list[list]:
    """Pick ``k`` ops without replacement (in drawn order) and draw their parameters."""
    names = list(ops)
    if not 0 <= k <= len(names):
        raise ValueError(f"cannot pick {k} of {len(names)} augmentations")
    chosen = rng.choice(len(names), size=k, replace=False)
    return [[names[i], ops[names[i]].sample(rng)] for i in chosen]


def augment_uint8(image: np.ndarray, pipeline: Sequence, ops: dict[str, Op]) -> np.ndarray:
    """Run one recorded pipeline on an ``(H, W, 3)`` uint8 image.

    Runs of consecutive table ops are fused: their tables are composed (histogram ops see the
    histogram the pending table would produce), then applied in one pass. The result is the
    same, bit for bit, as applying the ops one after the other.
    """
    table = None  # pending composed lookup table, not yet applied to ``image``
    base_hists = None  # histograms of ``image`` (before ``table``)

    for name, params in pipeline:
        op = ops.get(name)
        if op is None:
            raise ValueError(f"unknown augmentation {name!r} in recorded params; known: {sorted(ops)}")
        if op.lut is None:
            if table is not None:
                image, table = u8.apply_lut(image, table), None
            image, base_hists = op.apply(image, params), None
            continue

        def current_hists(image=image, table=table):
            nonlocal base_hists
            if base_hists is None:
                base_hists = u8.histograms(image)
            return base_hists if table is None else u8.map_histograms(base_hists, table)

        step = op.lut(params, current_hists)
        table = step if table is None else u8.compose_luts(table, step)
    return image if table is None else u8.apply_lut(image, table)
