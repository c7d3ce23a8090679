"""Cutting, rotating, placing and rearranging patches (CutPaste, its scar, DefectMaker, MemSeg)."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["rotated_size", "rotate_expand", "rotate_expand_within", "place_box", "sample_box", "shuffle_tiles"]


def rotated_size(height: int, width: int, angle: float) -> tuple[int, int]:
    """Canvas ``(h, w)`` of PIL's ``rotate(angle, expand=True)`` for a ``height x width`` patch.

    Examples
    --------
    >>> rotated_size(10, 20, 90)
    (20, 10)
    """
    a = math.radians(angle)
    cos, sin = abs(math.cos(a)), abs(math.sin(a))
    return int(math.ceil(height * cos + width * sin - 1e-6)), int(math.ceil(width * cos + height * sin - 1e-6))


def rotate_expand(patch: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate ``patch`` (h, w, C) uint8 by ``angle`` degrees on an expanded canvas.

    Nearest-neighbour, as PIL's ``rotate(expand=True)`` (its default resampling); returns the
    rotated patch ``(h', w', C)`` and its outline ``(h', w')`` bool (the rotated rectangle).
    """
    ph, pw = patch.shape[:2]
    rh, rw = rotated_size(ph, pw, angle)
    matrix = cv2.getRotationMatrix2D(((pw - 1) / 2.0, (ph - 1) / 2.0), angle, 1.0)
    matrix[0, 2] += (rw - pw) / 2.0
    matrix[1, 2] += (rh - ph) / 2.0
    rotated = cv2.warpAffine(patch, matrix, (rw, rh), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    outline = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), matrix, (rw, rh), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_CONSTANT) > 0
    if rotated.ndim == 2:
        rotated = rotated[..., None]
    return rotated, outline


def rotate_expand_within(patch: np.ndarray, angle: float, target, image_hw) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rotate_expand`, cropped where the rotated patch at ``target`` (top, left) leaves an
    image of size ``image_hw`` (H, W)."""
    rotated, outline = rotate_expand(patch, angle)
    ty, tx = target
    hh, ww = min(rotated.shape[0], image_hw[0] - ty), min(rotated.shape[1], image_hw[1] - tx)
    return rotated[:hh, :ww], outline[:hh, :ww]


def sample_box(rng: np.random.Generator, height: int, width: int, area_ratio_range: tuple[float, float],
               aspect_ratio: float, min_side: int = 1) -> tuple[int, int]:
    """Draw a box ``(h, w)``: area ``U(area_ratio_range)`` of the image, aspect ratio ``w / h``
    log-uniform in ``[aspect_ratio, 1/aspect_ratio]`` (CutPaste's rectangle; DefectMaker's box).

    Sides are rounded to the nearest pixel and kept in ``[min_side, image side]``.

    Examples
    --------
    >>> h, w = sample_box(np.random.default_rng(0), 256, 256, (0.02, 0.15), 0.3)
    >>> 0.01 < h * w / 256 ** 2 < 0.16
    True
    """
    area = rng.uniform(*area_ratio_range) * height * width
    log_ratio = math.log(aspect_ratio)
    aspect = math.exp(rng.uniform(log_ratio, -log_ratio))
    box_h = int(round(math.sqrt(area / aspect)))
    box_w = int(round(math.sqrt(area * aspect)))
    return min(max(box_h, min_side), height), min(max(box_w, min_side), width)


def shuffle_tiles(image: np.ndarray, grid: int, permutation) -> np.ndarray:
    """``image`` (H, W, C) with its ``grid x grid`` tiles rearranged: tile ``k`` of the output is
    tile ``permutation[k]`` of the input (row-major). Pixels beyond ``grid * (H // grid)`` rows or
    columns are kept (MemSeg's structure anomaly source).

    Examples
    --------
    >>> img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    >>> shuffle_tiles(img, 2, [3, 2, 1, 0])[..., 0]
    array([[10, 11,  8,  9],
           [14, 15, 12, 13],
           [ 2,  3,  0,  1],
           [ 6,  7,  4,  5]], dtype=uint8)
    """
    h, w, c = image.shape
    th, tw = h // grid, w // grid
    if th == 0 or tw == 0:
        return image
    body = image[:grid * th, :grid * tw].reshape(grid, th, grid, tw, c).transpose(0, 2, 1, 3, 4).reshape(grid * grid, th, tw, c)
    shuffled = body[np.asarray(permutation)].reshape(grid, grid, th, tw, c).transpose(0, 2, 1, 3, 4).reshape(grid * th, grid * tw, c)
    out = image.copy()
    out[:grid * th, :grid * tw] = shuffled
    return out


def place_box(rng: np.random.Generator, height: int, width: int, box_h: int, box_w: int,
              foreground: np.ndarray | None = None) -> tuple[int, int]:
    """Top-left corner of a ``box_h x box_w`` box inside an image.

    Uniform, ``int(U(0, H - h))`` as pytorch-cutpaste; with a ``foreground`` (H, W) bool region
    the box is centred on a uniformly drawn foreground pixel and shifted inside the image.
    """
    if foreground is not None and foreground.any():
        ys, xs = np.nonzero(foreground)
        k = int(rng.integers(len(ys)))
        y, x = int(ys[k]) - box_h // 2, int(xs[k]) - box_w // 2
        return min(max(y, 0), height - box_h), min(max(x, 0), width - box_w)
    return int(rng.uniform(0, height - box_h)), int(rng.uniform(0, width - box_w))
