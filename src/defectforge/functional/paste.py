"""Cutting, rotating and placing patches (CutPaste, its scar, and later shape-based methods)."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["rotated_size", "rotate_expand", "place_box"]


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
