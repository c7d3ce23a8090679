"""Batched 2-D Perlin (gradient) noise and the Perlin anomaly masks of DRAEM and its successors.

The lattice follows DRAEM's ``rand_perlin_2d_np`` (VitjanZ/DRAEM, MIT): ``res + 1`` random unit
gradients per axis, quintic fade ``6t^5 - 15t^4 + 10t^3``, output scaled by ``sqrt(2)``. Because
each pixel's value is a bilinear form in the lattice gradients, the field is computed as two
small matrix products per sample, ``Ro @ Gy @ Cw^T + Rw @ Gx @ Co^T`` (R: row weights, C: column
weights, o: weights times offsets), which is exact, works at any image size and batches with
different lattice resolutions per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..core.seeding import child_seed
from .geometry import rotate

__all__ = ["perlin_noise", "sample_perlin_params", "perlin_masks", "PERLIN_EXPONENT_RANGE"]

#: Lattice cells per axis are ``2**a``, ``a`` uniform in ``[0, 6)`` (DRAEM, anomalib, GLASS, MemSeg).
PERLIN_EXPONENT_RANGE = (0, 6)


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _axis_weights(length: int, res: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolation weights ``(B, length, size)`` and weights times offsets, for one axis."""
    device = res.device
    coord = torch.arange(length, device=device, dtype=torch.float32)[None, :] * (res[:, None].float() / length)
    cell = coord.floor().clamp_(max=(res[:, None] - 1).float())
    frac = coord - cell
    fade = _fade(frac)
    cell = cell.long()
    weights = torch.zeros(res.shape[0], length, size, device=device)
    offsets = torch.zeros_like(weights)
    weights.scatter_(2, cell[..., None], (1.0 - fade)[..., None])
    weights.scatter_(2, cell[..., None] + 1, fade[..., None])
    offsets.scatter_(2, cell[..., None], ((1.0 - fade) * frac)[..., None])
    offsets.scatter_(2, cell[..., None] + 1, (fade * (frac - 1.0))[..., None])
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
    batch = len(res)
    res_t = torch.tensor([[int(r[0]), int(r[1])] for r in res], dtype=torch.long).reshape(batch, 2)
    if (res_t < 1).any():
        raise ValueError(f"Perlin resolutions must be >= 1, got {res}")
    size = int(res_t.max()) + 1
    angles = np.zeros((batch, size, size), dtype=np.float32)
    for i, (r, seed) in enumerate(zip(res_t.tolist(), seeds)):
        angles[i, : r[0] + 1, : r[1] + 1] = 2 * math.pi * np.random.default_rng(int(seed)).random((r[0] + 1, r[1] + 1))
    angles_t = torch.from_numpy(angles).to(device)
    grad_rows, grad_cols = torch.cos(angles_t), torch.sin(angles_t)
    res_t = res_t.to(device)
    row_w, row_o = _axis_weights(height, res_t[:, 0], size)
    col_w, col_o = _axis_weights(width, res_t[:, 1], size)
    noise = torch.bmm(torch.bmm(row_o, grad_rows), col_w.transpose(1, 2))
    noise += torch.bmm(torch.bmm(row_w, grad_cols), col_o.transpose(1, 2))
    return noise.mul_(math.sqrt(2.0))


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
