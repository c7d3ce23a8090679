"""GLASS-LAS: local anomaly synthesis at image level (two Perlin masks x foreground, textured).

Follows Chen et al., "A Unified Anomaly Synthesis Strategy with Gradient Ascent for Industrial
Anomaly Detection and Localization" (GLASS), ECCV 2024; implementation cqylunlun/GLASS (MIT),
``datasets/mvtec.py`` (``perlin_mask``, ``rand_augmenter``, ``__getitem__``).

A sample: two independent Perlin masks (lattice ``2**a x 2**b``, ``a, b ~ U{0..5}``, rotated
``U(-90, 90)``, threshold 0.5) combined as their union, their intersection or the first alone
(probability 1/3 each), times the foreground, redrawn until the result is not empty (GLASS loops
without bound; here at most ``max_attempts`` draws, then the sample stays normal, recorded). The
texture (a DTD-style folder, or the built-in bank) is augmented by 3 of GLASS's 9 ops drawn
without replacement and blended with ``beta ~ N(0.5, 0.1)`` clipped to ``[0.2, 0.8]``:
``out = img*(1-m) + (1-beta)*tex*m + beta*img*m``. Every sample is anomalous.

Texture preparation as GLASS's ``rand_augmenter``: the texture is resized by its shorter side
(torchvision ``Resize(int)``; for a non-square image, so that it covers the image), augmented,
then centre-cropped (``CenterCrop``), so the ops see the whole resized texture; the colour ops
have PIL's truncating semantics (torchvision on PIL images; :mod:`defectforge.functional.uint8ops`).

Known differences: the official code blends in ImageNet-normalised space, which is the same
affine blend; here it is done on pixel values. Pillow's bilinear resize is replaced by OpenCV's
area (shrinking) / bilinear (enlarging) interpolation; the hue shift uses OpenCV's HSV conversion
on Pillow's 256-step hue circle (~0.8 levels from Pillow on coloured pixels, see
:func:`~defectforge.functional.uint8ops.pil_hue`); autocontrast may differ from Pillow by one level.
GLASS's feature-level GAS branch is not image synthesis and is not part of this method.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.registry import register_method
from ..core.types import SynthesisContext
from ..core.validation import check_interval, check_range
from ..functional import uint8ops as u8
from ..functional.augment import Op, augment_uint8, sample_pipeline
from ..functional.perlin import PerlinMaskSpec
from ..sources.textures import center_crop, resolve_textures
from ._common import masked_source_blend

__all__ = ["GlassLASSynthesizer", "GLASS_OPS", "COMBINATIONS"]

#: How the two Perlin masks are combined, each with probability 1/3 (GLASS ``perlin_mask``).
COMBINATIONS = ("union", "intersection", "single")


def _saturation_hue(x: np.ndarray, p: dict) -> np.ndarray:
    # torchvision ColorJitter applies its enabled adjustments in a random order (on PIL images)
    if p["saturation_first"]:
        return u8.pil_hue(u8.pil_saturation(x, p["saturation"]), p["hue"])
    return u8.pil_saturation(u8.pil_hue(x, p["hue"]), p["saturation"])


def _u(rng, lo, hi):
    return float(rng.uniform(lo, hi))


# cqylunlun/GLASS datasets/mvtec.py rand_augmenter: torchvision ops on the PIL texture, 3 of 9
# without replacement; so the colour ops have PIL's truncating semantics (u8.pil_*).
GLASS_OPS: dict[str, Op] = {op.name: op for op in [
    # transforms.ColorJitter(contrast=(0.8, 1.2))
    Op("contrast", lambda r: {"factor": _u(r, 0.8, 1.2)}, lambda x, p: u8.pil_contrast(x, p["factor"])),
    # transforms.ColorJitter(brightness=(0.8, 1.2))
    Op("brightness", lambda r: {"factor": _u(r, 0.8, 1.2)}, lambda x, p: u8.pil_brightness(x, p["factor"]),
       lambda p, h: u8.pil_brightness_lut(p["factor"])),
    # transforms.ColorJitter(saturation=(0.8, 1.2), hue=(-0.2, 0.2))
    Op("saturation_hue", lambda r: {"saturation": _u(r, 0.8, 1.2), "hue": _u(r, -0.2, 0.2),
                                    "saturation_first": bool(r.random() < 0.5)}, _saturation_hue),
    # transforms.RandomHorizontalFlip(p=1) / RandomVerticalFlip(p=1) / RandomGrayscale(p=1)
    Op("hflip", lambda r: {}, lambda x, p: u8.hflip(x)),
    Op("vflip", lambda r: {}, lambda x, p: u8.vflip(x)),
    Op("grayscale", lambda r: {}, lambda x, p: u8.pil_grayscale(x)),
    # transforms.RandomAutocontrast(p=1) / RandomEqualize(p=1)
    Op("autocontrast", lambda r: {}, lambda x, p: u8.autocontrast(x, 0.0), lambda p, h: u8.autocontrast_lut(h(), 0.0)),
    Op("equalize", lambda r: {}, lambda x, p: u8.equalize(x), lambda p, h: u8.equalize_lut(h())),
    # transforms.RandomAffine(degrees=(-45, 45)): nearest neighbour, zero fill (torchvision defaults)
    Op("rotate", lambda r: {"angle": _u(r, -45, 45)}, lambda x, p: u8.rotate(x, p["angle"], cv2.INTER_NEAREST)),
]}


class GlassLASSynthesizer(Synthesizer):
    """GLASS's image-level anomalies (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        GLASS makes every training sample anomalous: 1.
    textures : str, path, TextureSource or None
        DTD-style folder (GLASS uses DTD), ``"procedural"``/``None`` for the built-in bank,
        ``"skimage"`` for scikit-image's bundled textures.
    perlin_exponent_range : (int, int)
        Lattice exponents, upper bound exclusive: (0, 6) in GLASS.
    rotation_range : (float, float)
        Noise rotation in degrees: (-90, 90) in GLASS.
    threshold : float
        Noise threshold: 0.5 in GLASS.
    beta_mean, beta_std, beta_range
        ``beta ~ N(0.5, 0.1)`` clipped to ``[0.2, 0.8]`` (GLASS); the texture's opacity is ``1 - beta``.
    augmentations_per_sample : int
        Texture ops per sample: 3 of 9 in GLASS.
    max_attempts : int
        Bound on mask redraws (GLASS redraws without bound).
    """

    any_dtype = True
    #: GLASS resizes a texture by its shorter side and centre-crops it after augmentation.
    texture_resize = "cover"

    def __init__(self, anomaly_probability: float = 1.0, textures=None, perlin_exponent_range=(0, 6),
                 rotation_range=(-90.0, 90.0), threshold: float = 0.5, beta_mean: float = 0.5,
                 beta_std: float = 0.1, beta_range=(0.2, 0.8), augmentations_per_sample: int = 3,
                 max_attempts: int = 100):
        super().__init__(anomaly_probability)
        self.perlin = PerlinMaskSpec.checked(perlin_exponent_range, rotation_range, threshold)
        self.perlin_exponent_range, self.rotation_range, self.threshold = (
            self.perlin.exponent_range, self.perlin.rotation_range, self.perlin.threshold)
        self.beta_mean = float(check_range("beta_mean", beta_mean, 0.0, 1.0))
        self.beta_std = float(check_range("beta_std", beta_std, 0.0, 1.0))
        self.beta_range = check_interval("beta_range", beta_range, 0.0, 1.0)
        self.augmentations_per_sample = check_range("augmentations_per_sample", augmentations_per_sample,
                                                    0, len(GLASS_OPS), integer=True)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        self.textures = resolve_textures(textures)

    def _draw_masks(self, rng: np.random.Generator, params: dict) -> None:
        params["perlin"] = self.perlin.sample(rng)
        params["perlin2"] = self.perlin.sample(rng)
        params["combine"] = COMBINATIONS[int(rng.integers(3))]

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        self._draw_masks(rng, params)
        params["texture"] = int(rng.integers(len(self.textures)))
        params["augment"] = sample_pipeline(rng, GLASS_OPS, self.augmentations_per_sample)
        beta = float(np.clip(rng.normal(self.beta_mean, self.beta_std), *self.beta_range))
        params["beta"] = beta
        return params

    def mask(self, p: dict, height: int, width: int) -> np.ndarray:
        """One sample's GLASS mask ``(H, W)`` bool (before the foreground)."""
        first = self.perlin.mask(p["perlin"], height, width)
        if p["combine"] == "single":
            return first
        second = self.perlin.mask(p["perlin2"], height, width)
        return first | second if p["combine"] == "union" else first & second

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        h, w = images.shape[-2:]

        def texture(i: int, p: dict):
            # GLASS: Resize(shorter side), the 3 ops, then CenterCrop: the ops see the whole resized
            # texture (its histogram, what rotates in from outside the crop)
            source = augment_uint8(self.textures.get_uint8(p["texture"], h, w, "cover"), p["augment"], GLASS_OPS)
            return np.ascontiguousarray(center_crop(source, h, w)), 1.0 - p["beta"]

        return masked_source_blend(self, images, params, context, rngs, lambda q: self.mask(q, h, w),
                                   self._draw_masks, texture, "glass_las")


register_method(
    "glass_las", family="hand-crafted", level="image",
    description="two Perlin masks (union/intersection/single) x foreground, texture with 3 of 9 ops, beta N(0.5,0.1)",
    source="Chen et al., ECCV 2024 (GLASS); cqylunlun/GLASS datasets/mvtec.py", licence="MIT",
    defaults={"anomaly_probability": 1.0},
)(GlassLASSynthesizer)
