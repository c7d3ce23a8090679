"""MemSeg's anomaly synthesis: Perlin mask x foreground, texture or structure anomalies.

Follows Yang et al., "MemSeg: A semi-supervised method for image surface defect detection using
differences and commonalities", Engineering Applications of AI 2023 (paper), and the unofficial
implementation TooTouch/MemSeg (MIT), ``data/dataset.py``, which the field uses for defaults.

A sample: a Perlin mask (lattice ``2**a x 2**b``, ``a, b ~ U{0..5}``, rotated ``U(-90, 90)``,
threshold 0.5) times the foreground (MemSeg: a per-product grey threshold, optionally inverted;
here any region given in the context, see :mod:`defectforge.sources.foreground`). The source is
either a texture (DTD in the paper; texture anomaly) or the image itself augmented by 3 of DRAEM's
10 ops, cut into an 8 x 8 grid whose tiles are shuffled (structure anomaly), with probability
1/2 each. It is blended with opacity ``f ~ U(0.15, 1)``:
``out = (1-m)*img + f*m*src + (1-f)*m*img``.

The structure source is made in uint8 (the ops are imgaug's uint8 ops); for a float batch it is
quantised to 1/255. When the image size is not a multiple of the grid, the tiles are
``H // 8 x W // 8`` pixels and the last rows / columns keep the augmented image unshuffled.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.registry import register_method
from ..core.types import SynthesisContext
from ..core.validation import check_interval, check_probability, check_range
from ..functional.augment import DRAEM_OPS, augment_uint8, sample_pipeline
from ..functional.paste import shuffle_tiles
from ..functional.perlin import PerlinMaskSpec
from ..sources.textures import resolve_textures
from ._common import masked_source_blend, to_uint8_hwc

__all__ = ["MemSegSynthesizer"]


class MemSegSynthesizer(Synthesizer):
    """MemSeg's texture and structure anomalies (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        MemSeg trains on synthetic anomalies only: 1.
    textures : str, path, TextureSource or None
        Texture-anomaly source: DTD in the paper; default the built-in bank.
    structure_probability : float
        Share of structure anomalies: 1/2 (texture or structure with equal chance, methods.md).
    grid_size : int
        Tiles per side of the structure source: 8 (TooTouch ``structure_grid_size``).
    opacity_range : (float, float)
        ``f ~ U(0.15, 1)`` (TooTouch ``transparency_range``).
    perlin_exponent_range, rotation_range, threshold
        Perlin mask as DRAEM: (0, 6), (-90, 90), 0.5 (TooTouch ``perlin_scale=6, min_perlin_scale=0``).
    augmentations_per_sample : int
        DRAEM ops applied to the structure source: 3 (TooTouch ``rand_augment``, SomeOf(3)).
    max_attempts : int
        Bound on redraws of an empty mask; a sample still empty stays normal (recorded).
    """

    any_dtype = True

    def __init__(self, anomaly_probability: float = 1.0, textures=None, structure_probability: float = 0.5,
                 grid_size: int = 8, opacity_range=(0.15, 1.0), perlin_exponent_range=(0, 6),
                 rotation_range=(-90.0, 90.0), threshold: float = 0.5, augmentations_per_sample: int = 3,
                 max_attempts: int = 100):
        super().__init__(anomaly_probability)
        self.structure_probability = check_probability("structure_probability", structure_probability)
        self.grid_size = check_range("grid_size", grid_size, 1, 256, integer=True)
        self.opacity_range = check_interval("opacity_range", opacity_range, 0.0, 1.0)
        self.perlin = PerlinMaskSpec.checked(perlin_exponent_range, rotation_range, threshold)
        self.perlin_exponent_range, self.rotation_range, self.threshold = (
            self.perlin.exponent_range, self.perlin.rotation_range, self.perlin.threshold)
        self.augmentations_per_sample = check_range("augmentations_per_sample", augmentations_per_sample,
                                                    0, len(DRAEM_OPS), integer=True)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        self.textures = resolve_textures(textures)

    def _draw_mask(self, rng, params: dict) -> None:
        params["perlin"] = self.perlin.sample(rng)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        self._draw_mask(rng, params)
        if rng.random() < self.structure_probability:
            params["kind"] = "structure"
            params["augment"] = sample_pipeline(rng, DRAEM_OPS, self.augmentations_per_sample)
            params["permutation"] = [int(k) for k in rng.permutation(self.grid_size ** 2)]
        else:
            params["kind"] = "texture"
            params["texture"] = int(rng.integers(len(self.textures)))
        params["opacity"] = float(rng.uniform(*self.opacity_range))
        return params

    def source(self, image: torch.Tensor, p: dict, height: int, width: int) -> np.ndarray:
        """The anomaly source ``(H, W, C)`` uint8 of one sample."""
        if p["kind"] == "texture":
            return self.textures.get_uint8(p["texture"], height, width)
        own = to_uint8_hwc(image)
        gray = own.shape[2] == 1
        src = np.repeat(own, 3, axis=2) if gray else own
        src = augment_uint8(src, p["augment"], DRAEM_OPS)
        src = shuffle_tiles(np.ascontiguousarray(src), self.grid_size, p["permutation"])
        return src

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        h, w = images.shape[-2:]
        return masked_source_blend(self, images, params, context, rngs,
                                   lambda q: self.perlin.mask(q["perlin"], h, w), self._draw_mask,
                                   lambda i, p: (self.source(images[i], p, h, w), p["opacity"]), "memseg")


register_method(
    "memseg", family="hand-crafted", level="image",
    description="Perlin x foreground; texture or the image's own shuffled 8x8 tiles (structure), opacity U(0.15,1)",
    source="Yang et al., EAAI 2023 (MemSeg); defaults as TooTouch/MemSeg", licence="MIT (TooTouch/MemSeg)",
    defaults={"anomaly_probability": 1.0},
)(MemSegSynthesizer)
