"""Batched 2-D Perlin (gradient) noise and the Perlin anomaly masks of DRAEM and its successors.

The lattice follows DRAEM's ``rand_perlin_2d_np`` (VitjanZ/DRAEM, MIT): ``res + 1`` random unit
gradients per axis, quintic fade ``6t^5 - 15t^4 + 10t^3``, output scaled by ``sqrt(2)``. Because
each pixel's value is a bilinear form in the lattice gradients, the field is computed as two
small matrix products per sample, ``Ro @ Gr @ Cw^T + Rw @ Gc @ Co^T`` (R: row weights, C: column
weights, o: weights times offsets, G: gradient components), which is exact, works at any image
size, and costs ~0.1 ms per 256x256 field; the weight matrices depend only on (size, res) and
are cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from ..core.parallel import map_samples
from ..core.seeding import child_seed
from ..core.validation import check_interval, check_range
from .geometry import rotate

__all__ = ["perlin_noise", "sample_perlin_params", "perlin_masks", "perlin_mask_sample", "PerlinMaskSpec",
           "PERLIN_EXPONENT_RANGE"]

#: Lattice cells per axis are ``2**a``, ``a`` uniform in ``[0, 6)`` (DRAEM, anomalib, GLASS, MemSeg).
PERLIN_EXPONENT_RANGE = (0, 6)


@lru_cache(maxsize=256)
def _axis_weights(length: int, res: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolation weights ``(length, res + 1)`` along one axis, and the weights times offsets.

    Pixel ``p`` sits at lattice coordinate ``p * res / length`` (DRAEM's grid); only its two
    neighbouring lattice lines get a weight, the quintic fade of its fractional position.
    """
    coord = np.arange(length, dtype=np.float64) * (res / length)
    cell = np.minimum(np.floor(coord), res - 1).astype(np.int64)
    frac = coord - cell
    fade = frac * frac * frac * (frac * (frac * 6.0 - 15.0) + 10.0)
    weights = np.zeros((length, res + 1), np.float32)
    offsets = np.zeros_like(weights)
    rows = np.arange(length)
    weights[rows, cell], weights[rows, cell + 1] = 1.0 - fade, fade
    offsets[rows, cell], offsets[rows, cell + 1] = (1.0 - fade) * frac, fade * (frac - 1.0)
    return weights, offsets


def perlin_noise(height: int, width: int, res: Sequence[tuple[int, int]], seeds: Sequence[int],
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Perlin noise fields ``(B, height, width)``, one per ``(res, seed)`` pair.

    Parameters
    ----------
    height, width : int
        Field size in pixels (any size; it need not be a multiple of the resolution).
    res : sequence of (int, int)
        Lattice cells along (rows, columns) for each field.
    seeds : sequence of int
        Seed of each field's gradient angles (uniform in ``[0, 2*pi)``).
    device : torch device, optional

    Returns
    -------
    torch.Tensor
        float32, values roughly in ``[-1, 1]``.

    Examples
    --------
    >>> noise = perlin_noise(64, 64, [(4, 2)], [0])
    >>> tuple(noise.shape)
    (1, 64, 64)
    """
    if len(res) != len(seeds):
        raise ValueError(f"got {len(res)} resolutions for {len(seeds)} seeds")
    for ry, rx in res:
        if int(ry) < 1 or int(rx) < 1:
            raise ValueError(f"Perlin resolutions must be >= 1, got {(ry, rx)}")
    out = np.empty((len(res), height, width), np.float32)
    map_samples(lambda i: _field(height, width, res[i], seeds[i], out=out[i]), range(len(res)))
    return torch.from_numpy(out).to(device)


def _field(height: int, width: int, res, seed: int, out: np.ndarray | None = None) -> np.ndarray:
    """One Perlin field ``(height, width)`` float32 (see :func:`perlin_noise`)."""
    ry, rx = int(res[0]), int(res[1])
    angles = 2 * math.pi * np.random.default_rng(int(seed)).random((ry + 1, rx + 1))
    grad_rows, grad_cols = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    row_w, row_o = _axis_weights(height, ry)
    col_w, col_o = _axis_weights(width, rx)
    # exact: each lattice term is separable, so the field is two chains of small products
    return np.multiply((row_o @ grad_rows) @ col_w.T + (row_w @ grad_cols) @ col_o.T, math.sqrt(2.0), out=out)


def sample_perlin_params(rng: np.random.Generator, exponent_range: tuple[int, int] = PERLIN_EXPONENT_RANGE,
                         rotation_range: tuple[float, float] = (-90.0, 90.0)) -> dict:
    """Draw one Perlin mask: lattice ``(2**a, 2**b)``, rotation angle, gradient seed.

    ``a`` and ``b`` are independent and uniform on ``[exponent_range[0], exponent_range[1])`` (upper
    bound exclusive, as in every reference implementation).
    """
    lo, hi = exponent_range
    a, b = rng.integers(lo, hi, size=2)
    return {
        "res": [int(2 ** a), int(2 ** b)],
        "angle": float(rng.uniform(*rotation_range)),
        "seed": child_seed(rng),
    }


def perlin_masks(params: Sequence[dict], height: int, width: int, threshold: float = 0.5,
                 rescale_empty: bool = False, device: torch.device | str | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary Perlin masks ``(B, 1, H, W)`` and the rotated noise they came from.

    The noise is rotated (bilinear, zero fill, as imgaug's ``Affine(rotate=...)`` in DRAEM) and
    thresholded: ``mask = noise > threshold``. With ``rescale_empty`` a field with no value above
    the threshold is first min-max rescaled to ``[-1, 1]`` (anomalib's policy).
    """
    if device is None or torch.device(device).type == "cpu":
        return _perlin_masks_cpu(params, height, width, threshold, rescale_empty)
    noise = perlin_noise(height, width, [p["res"] for p in params], [p["seed"] for p in params], device)
    if rescale_empty:
        flat = noise.flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        empty = hi <= threshold
        if empty.any():
            scaled = (noise - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None] * 2.0 - 1.0
            noise = torch.where(empty[:, None, None], scaled, noise)
    angles = torch.tensor([p["angle"] for p in params], dtype=torch.float32, device=noise.device)
    noise = rotate(noise[:, None], angles)
    masks = (noise > threshold).float()
    return masks, noise


def perlin_mask_sample(perlin: dict, height: int, width: int, threshold: float = 0.5,
                       rescale_empty: bool = False, noise_out: np.ndarray | None = None) -> np.ndarray:
    """One sample of :func:`perlin_masks` in numpy/OpenCV: the mask ``(H, W)`` bool.

    The same arithmetic as the batched path, for one sample, so it runs inside the per-sample
    thread pool without starting torch's intra-op threads (nested in the pool on a busy machine
    they made batch-wide masks several times slower). The rotated noise goes to ``noise_out``.
    """
    field = _field(height, width, perlin["res"], perlin["seed"])
    if rescale_empty:
        lo, hi = field.min(), field.max()
        if hi <= threshold:
            field = (field - lo) / max(hi - lo, np.float32(1e-12)) * 2.0 - 1.0
    angle = float(np.float32(perlin["angle"]))  # float32, as the batched path (and the GPU) rotates
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, 1.0)
    noise = cv2.warpAffine(field, matrix, (width, height), dst=noise_out, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return noise > threshold


def _perlin_masks_cpu(params, height, width, threshold, rescale_empty):
    noise = np.empty((len(params), 1, height, width), np.float32)
    masks = np.empty_like(noise)

    def one(i: int) -> None:
        masks[i, 0] = perlin_mask_sample(params[i], height, width, threshold, rescale_empty, noise_out=noise[i, 0])

    map_samples(one, range(len(params)))
    return torch.from_numpy(masks), torch.from_numpy(noise)


@dataclass(frozen=True)
class PerlinMaskSpec:
    """The Perlin mask of DRAEM, GLASS and MemSeg: how it is drawn and made.

    ``exponent_range`` (lattice ``2**a x 2**b``, ``a, b`` uniform, upper bound exclusive),
    ``rotation_range`` (degrees) and ``threshold``: ``(0, 6)``, ``(-90, 90)`` and 0.5 in DRAEM,
    anomalib, GLASS and MemSeg. :meth:`checked` validates them under the synthesizers' argument
    names (``perlin_exponent_range``, ``rotation_range``, ``threshold``).

    Examples
    --------
    >>> spec = PerlinMaskSpec.checked((0, 6), (-90.0, 90.0), 0.5)
    >>> params = spec.sample(np.random.default_rng(0))
    >>> spec.mask(params, 32, 48).shape
    (32, 48)
    """

    exponent_range: tuple[int, int] = PERLIN_EXPONENT_RANGE
    rotation_range: tuple[float, float] = (-90.0, 90.0)
    threshold: float = 0.5

    @classmethod
    def checked(cls, exponent_range, rotation_range, threshold) -> PerlinMaskSpec:
        """A spec from user arguments, with errors naming the synthesizer's argument."""
        exponent_range = check_interval("perlin_exponent_range", exponent_range, 0, 12, integer=True)
        if exponent_range[1] <= exponent_range[0]:
            raise ValueError(f"perlin_exponent_range={tuple(exponent_range)}: the upper bound is exclusive, "
                             "so it must exceed the lower bound")
        rotation_range = check_interval("rotation_range", rotation_range, -360, 360)
        threshold = float(check_range("threshold", threshold, -1.5, 1.5))
        return cls(exponent_range, rotation_range, threshold)

    def sample(self, rng: np.random.Generator) -> dict:
        """One mask's parameters (:func:`sample_perlin_params`)."""
        return sample_perlin_params(rng, self.exponent_range, self.rotation_range)

    def mask(self, perlin: dict, height: int, width: int, rescale_empty: bool = False,
             noise_out: np.ndarray | None = None) -> np.ndarray:
        """One mask ``(H, W)`` bool (:func:`perlin_mask_sample` at this threshold)."""
        return perlin_mask_sample(perlin, height, width, self.threshold, rescale_empty, noise_out)
