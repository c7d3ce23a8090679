"""Procedural images made with numpy only: anomaly-source textures and normal demo surfaces.

Everything here is a pure function of ``(kind, size, seed)``, so the built-in texture bank and
the demo data are identical on every machine and need no download.
"""

from __future__ import annotations

import numpy as np

__all__ = ["value_noise", "procedural_texture", "TEXTURE_KINDS", "surface", "SURFACE_KINDS"]


def value_noise(rng: np.random.Generator, size: int, octaves: int = 5, base_cells: int = 4,
                persistence: float = 0.5) -> np.ndarray:
    """Multi-octave smooth value noise in ``[0, 1]``, shape ``(size, size)``."""
    import cv2

    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    cells = base_cells
    for _ in range(octaves):
        grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= persistence
        cells *= 2
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _palette(rng: np.random.Generator, n: int = 2) -> np.ndarray:
    return rng.random((n, 3)).astype(np.float32)


def _colorize(field: np.ndarray, colors: np.ndarray) -> np.ndarray:
    t = field[..., None]
    return (1.0 - t) * colors[0] + t * colors[1]


def _coords(size: int, angle: float):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return np.cos(angle) * x + np.sin(angle) * y, -np.sin(angle) * x + np.cos(angle) * y


def _noise_texture(rng, size):
    return _colorize(value_noise(rng, size, octaves=6, base_cells=int(rng.integers(2, 8))), _palette(rng))


def _stripes_texture(rng, size):
    u, _ = _coords(size, rng.uniform(0, np.pi))
    freq = rng.uniform(4, 30)
    wobble = value_noise(rng, size, 4, 3) * rng.uniform(0, 3)
    field = 0.5 + 0.5 * np.sin(2 * np.pi * (freq * u + wobble))
    return _colorize(field, _palette(rng))


def _cells_texture(rng, size):
    n = int(rng.integers(8, 64))
    pts = rng.random((n, 2)).astype(np.float32)
    colors = rng.random((n, 3)).astype(np.float32)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # the nearest and second-nearest squared distance of each pixel, one point at a time (the
    # values a sort over all n points gives, with the first point kept on ties, in a 1/n of its memory)
    first = np.full((size, size), np.inf, np.float32)
    second = first.copy()
    nearest = np.zeros((size, size), np.intp)
    for k in range(n):
        d = (x - pts[k, 0]) ** 2 + (y - pts[k, 1]) ** 2
        closer = d < first
        second = np.where(closer, first, np.minimum(second, d))
        np.copyto(first, d, where=closer)
        nearest[closer] = k
    img = colors[nearest]
    border = (np.sqrt(second) - np.sqrt(first)) < rng.uniform(0.005, 0.02)
    img[border] *= 0.3
    return img


def _marble_texture(rng, size):
    u, _ = _coords(size, rng.uniform(0, np.pi))
    turbulence = value_noise(rng, size, 6, 4)
    field = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(2, 8) * u + rng.uniform(2, 8) * turbulence))
    return _colorize(field ** rng.uniform(0.5, 2.0), _palette(rng))


def _checker_texture(rng, size):
    u, v = _coords(size, rng.uniform(0, np.pi))
    k = rng.uniform(3, 20)
    field = ((np.floor(u * k) + np.floor(v * k)) % 2).astype(np.float32)
    field = 0.8 * field + 0.2 * value_noise(rng, size, 5, 8)
    return _colorize(field, _palette(rng))


def _dots_texture(rng, size):
    k = rng.uniform(6, 24)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    fy, fx = (y * k) % 1 - 0.5, (x * k) % 1 - 0.5
    radius = rng.uniform(0.15, 0.45)
    field = (np.sqrt(fx ** 2 + fy ** 2) < radius).astype(np.float32)
    field = np.clip(field + 0.3 * value_noise(rng, size, 5, 6), 0, 1)
    return _colorize(field, _palette(rng))


_TEXTURES = {
    "noise": _noise_texture,
    "stripes": _stripes_texture,
    "cells": _cells_texture,
    "marble": _marble_texture,
    "checker": _checker_texture,
    "dots": _dots_texture,
}
TEXTURE_KINDS = tuple(_TEXTURES)


def procedural_texture(index: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """Texture number ``index`` of the built-in bank: ``(size, size, 3)`` uint8.

    Kinds cycle through :data:`TEXTURE_KINDS`; the rest is drawn from ``(seed, index)``.

    Examples
    --------
    >>> procedural_texture(0, 32).shape
    (32, 32, 3)
    """
    rng = np.random.default_rng([seed, index, 0x7E47])
    kind = TEXTURE_KINDS[index % len(TEXTURE_KINDS)]
    img = _TEXTURES[kind](rng, size)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# --- normal surfaces for the demo -----------------------------------------------------------

def _metal(rng, size):
    import cv2

    streaks = rng.normal(0, 1, (size, size)).astype(np.float32)
    streaks = cv2.GaussianBlur(streaks, (0, 0), sigmaX=size / 6, sigmaY=0.7)
    streaks = (streaks - streaks.mean()) / (streaks.std() + 1e-6)
    shade = value_noise(rng, size, 2, 2)
    g = 0.55 + 0.05 * streaks + 0.12 * (shade - 0.5)
    return np.repeat(g[..., None], 3, -1) * np.array([1.0, 1.0, 1.03], np.float32)


def _fabric(rng, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = size / rng.uniform(28, 36)
    warp = 0.5 + 0.5 * np.sin(2 * np.pi * x / period)
    weft = 0.5 + 0.5 * np.sin(2 * np.pi * y / period)
    over = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(np.float32)
    field = over * warp + (1 - over) * weft
    field = 0.7 * field + 0.3 * value_noise(rng, size, 4, 16)
    base = np.array([0.25, 0.33, 0.55], np.float32) * (0.95 + 0.1 * rng.random())
    return base * (0.6 + 0.6 * field[..., None])


def _wood(rng, size):
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cx, cy = rng.uniform(-0.5, 1.5), rng.uniform(-2.0, -1.0)
    r = np.sqrt((x - cx) ** 2 + ((y - cy) * 0.25) ** 2)
    rings = 0.5 + 0.5 * np.sin(2 * np.pi * (r * 18 + 1.5 * value_noise(rng, size, 4, 3)))
    grain = value_noise(rng, size, 5, 24)
    field = 0.75 * rings + 0.25 * grain
    light, dark = np.array([0.80, 0.60, 0.38], np.float32), np.array([0.55, 0.35, 0.18], np.float32)
    return _colorize(field, np.stack([dark, light]))


def _tiles(rng, size):
    n = 4
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gx, gy = (x * n) % 1, (y * n) % 1
    grout = (np.minimum(np.minimum(gx, 1 - gx), np.minimum(gy, 1 - gy)) < 0.035).astype(np.float32)
    tile_id = (np.floor(x * n) * n + np.floor(y * n)).astype(int)
    tint = 0.9 + 0.06 * rng.random(n * n)[tile_id]
    speckle = value_noise(rng, size, 5, 32)
    tile = np.array([0.85, 0.84, 0.80], np.float32) * (tint + 0.05 * (speckle - 0.5))[..., None]
    return tile * (1 - grout[..., None]) + grout[..., None] * np.array([0.45, 0.43, 0.40], np.float32)


_SURFACES = {"metal": _metal, "fabric": _fabric, "wood": _wood, "tiles": _tiles}
SURFACE_KINDS = tuple(_SURFACES)


def surface(kind: str, size: int = 256, seed: int = 0) -> np.ndarray:
    """A defect-free surface image ``(size, size, 3)`` uint8 of ``kind`` (metal, fabric, wood, tiles).

    Different seeds give different instances of the same product, as a folder of good parts.

    Examples
    --------
    >>> surface("tiles", 64, seed=1).dtype
    dtype('uint8')
    """
    if kind not in _SURFACES:
        raise ValueError(f"unknown surface {kind!r}; choose one of {SURFACE_KINDS}")
    rng = np.random.default_rng([seed, SURFACE_KINDS.index(kind), 0x5AFE])
    img = _SURFACES[kind](rng, size)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
