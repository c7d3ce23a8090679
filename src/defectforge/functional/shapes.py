"""Random closed shapes: smooth Bezier outlines through random points, rasterised to masks."""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["bezier_outline", "fill_outline", "rotate_points", "poisson_paste", "MIN_POISSON_PIXELS"]

#: Masks smaller than this are pasted, not Poisson-blended (the solver needs an interior).
MIN_POISSON_PIXELS = 16

_T = np.linspace(0.0, 1.0, 12, endpoint=False)
_BERNSTEIN = np.stack([(1 - _T) ** 3, 3 * (1 - _T) ** 2 * _T, 3 * (1 - _T) * _T ** 2, _T ** 3], 1)  # (12, 4)


def bezier_outline(points, smoothness: float) -> np.ndarray:
    """A closed curve through ``points`` (n, 2), as a polygon ``(12 n, 2)``.

    The points are visited in order of their angle around their mean; between two consecutive
    points runs a cubic Bezier segment whose control points lie along the curve's tangent (the
    direction from the previous to the next point) at ``smoothness`` times the segment's length,
    so the curve is smooth (C1) at every point. ``smoothness`` 0 gives the polygon itself.

    Examples
    --------
    >>> square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    >>> bezier_outline(square, 0.3).shape
    (48, 2)
    """
    p = np.asarray(points, dtype=np.float64)
    centre = p.mean(0)
    p = p[np.argsort(np.arctan2(p[:, 1] - centre[1], p[:, 0] - centre[0]))]
    prev, nxt = np.roll(p, 1, 0), np.roll(p, -1, 0)
    tangent = nxt - prev
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-12)
    length = np.linalg.norm(nxt - p, axis=1, keepdims=True)
    c1 = p + tangent * smoothness * length
    c2 = nxt - np.roll(tangent, -1, 0) * smoothness * length
    control = np.stack([p, c1, c2, nxt], 1)  # (n, 4, 2)
    return np.einsum("tk,nkd->ntd", _BERNSTEIN, control).reshape(-1, 2)


def rotate_points(points: np.ndarray, angle: float) -> np.ndarray:
    """``points`` (n, 2) in (x, y) rotated by ``angle`` degrees (counter-clockwise on screen)."""
    a = math.radians(angle)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return points @ rot


def fill_outline(outline: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise a closed outline, scaled to fill a ``height x width`` box, to a bool mask."""
    lo, hi = outline.min(0), outline.max(0)
    scaled = (outline - lo) / np.maximum(hi - lo, 1e-12) * np.array([width - 1, height - 1])
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(scaled * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


def poisson_paste(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, top: int, left: int,
                  mixed: bool = False) -> np.ndarray:
    """Poisson image editing (Perez et al. 2003) of ``patch`` into ``image`` inside ``mask``.

    ``image`` (H, W, C) uint8, ``patch`` (h, w, C) uint8 placed at ``(top, left)``, ``mask`` (h, w)
    bool. Uses OpenCV's ``seamlessClone`` (normal or mixed gradients); the patch is given a 1-pixel
    frame of the image around it so the mask never touches the source border, and only the masked
    pixels of the result are kept, so every other pixel is returned unchanged. Returns the new
    ``(h, w, C)`` box and where it was changed ``(h, w)`` bool (the mask less any pixel on the
    image's border, which the solver cannot change).
    """
    h, w = mask.shape
    H, W = image.shape[:2]
    gray = image.shape[2] == 1
    y0, x0, y1, x1 = max(top - 1, 0), max(left - 1, 0), min(top + h + 1, H), min(left + w + 1, W)
    src = image[y0:y1, x0:x1].copy()
    src[top - y0:top - y0 + h, left - x0:left - x0 + w] = patch
    m = np.zeros(src.shape[:2], np.uint8)
    m[top - y0:top - y0 + h, left - x0:left - x0 + w] = mask
    # the mask must not touch the source's border (OpenCV's solver needs a boundary ring)
    m[0, :] = 0
    m[-1, :] = 0
    m[:, 0] = 0
    m[:, -1] = 0
    box = image[top:top + h, left:left + w]
    keep = m[top - y0:top - y0 + h, left - x0:left - x0 + w].astype(bool)
    if keep.sum() < MIN_POISSON_PIXELS:
        # OpenCV's solver fails on a few isolated pixels; there is no seam to hide: paste them
        return np.where(keep[..., None], patch, box), keep
    ys, xs = np.nonzero(m)
    by, bx, bh, bw = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    centre = (int(x0 + bx + bw // 2), int(y0 + by + bh // 2))
    if gray:
        src3, dst3 = np.repeat(src, 3, 2), np.repeat(image, 3, 2)
    else:
        src3, dst3 = np.ascontiguousarray(src), np.ascontiguousarray(image)
    # OpenCV places the mask's bounding box centred at ``centre`` in the destination; clone only
    # the neighbourhood of the box so the solver works on a small image.
    ry0, rx0 = max(y0 - 2, 0), max(x0 - 2, 0)
    ry1, rx1 = min(y1 + 2, H), min(x1 + 2, W)
    local = np.ascontiguousarray(dst3[ry0:ry1, rx0:rx1])
    flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    try:
        cloned = cv2.seamlessClone(src3, local, m * 255, (centre[0] - rx0, centre[1] - ry0), flag)
    except cv2.error:  # OpenCV refuses some masks thinner than its solver's stencil: paste those
        return np.where(keep[..., None], patch, box), keep
    new = cloned[top - ry0:top - ry0 + h, left - rx0:left - rx0 + w]
    if gray:
        new = new[..., :1]
    return np.where(keep[..., None], new, box), keep
