"""Poisson image editing (Perez, Gangnet & Blake, SIGGRAPH 2003) solved by sine transforms on a box.

:func:`poisson_blend` is a drop-in for :func:`~defectforge.functional.shapes.poisson_paste` (same
arguments and returns) with its own solver instead of OpenCV's ``seamlessClone``: the same
discretisation (the 5-point Laplacian on the pixel grid, Dirichlet boundary), solved directly by
a type-I discrete sine transform on the bounding box of the region plus a 1-pixel ring, so its
cost follows the region, not the image, and a grey image is solved as one channel (OpenCV solves
three). Methods whose reference code calls OpenCV (NSA, DefectMaker) keep ``poisson_paste``.

The guidance field follows the paper's discrete form (eq. 11-13): per pixel edge ``(p, q)`` the
source's difference ``f*_p - f*_q``, or with ``mixed`` the larger in magnitude of the source's
and the target's differences (mixed gradients: the target's texture shows through where it is
stronger than the source's). As in OpenCV's ``seamlessClone`` the source's guidance is used only
inside the region eroded by ``erode`` (3) pixels and the target's elsewhere, so the outer
``erode`` pixels of the region are a smooth transition (callers grow the region by a margin).
"""

from __future__ import annotations

import cv2
import numpy as np

from .shapes import MIN_POISSON_PIXELS

__all__ = ["poisson_blend"]

_KERNEL = np.ones((3, 3), np.uint8)
_EIGEN: dict[int, np.ndarray] = {}


def _eigen(n: int) -> np.ndarray:
    """Eigenvalues ``2 cos(pi k / (n + 1)) - 2`` (k = 1..n) of the 1-D Dirichlet Laplacian, cached."""
    e = _EIGEN.get(n)
    if e is None:
        e = _EIGEN[n] = (2.0 * np.cos(np.pi * np.arange(1, n + 1) / (n + 1)) - 2.0).astype(np.float32)
    return e


def _grow(lo: int, hi: int, offset: int, size: int) -> tuple[int, int]:
    """``[lo, hi)`` grown so its interior ``hi - lo - 2`` plus 1 is 11-smooth (a fast transform length),
    as far as ``offset + lo >= 0`` and ``offset + hi <= size`` allow."""
    from scipy import fft

    extra = fft.next_fast_len(hi - lo - 1, real=False) - (hi - lo - 1)
    before = min(extra // 2, offset + lo)
    after = min(extra - before, size - offset - hi)
    before = min(extra - after, offset + lo)
    return lo - before, hi + after


def poisson_blend(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, top: int, left: int,
                  mixed: bool = False, erode: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Blend ``patch`` into ``image`` inside ``mask`` by Poisson editing; see the module docstring.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, C)`` uint8, the target (its pixels around the box are the boundary values).
    patch : np.ndarray
        ``(h, w, C)`` uint8, the source, placed at ``(top, left)`` in ``image``.
    mask : np.ndarray
        ``(h, w)`` bool, the region to solve.
    top, left : int
    mixed : bool
        Mixed gradients (the larger of source's and target's per edge) instead of the source's.
    erode : int
        The source's guidance is used inside the region eroded by this many pixels (3, OpenCV's).

    Returns
    -------
    (np.ndarray, np.ndarray)
        The new ``(h, w, C)`` box (pixels outside the region unchanged) and the region actually
        solved ``(h, w)`` bool (the mask less any pixel on the image's border, which is boundary).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((32, 32, 1), 100, np.uint8)
    >>> patch = np.full((12, 12, 1), 100, np.uint8); patch[4:8, 4:8] = 200
    >>> mask = np.zeros((12, 12), bool); mask[1:11, 1:11] = True
    >>> new, keep = poisson_blend(image, patch, mask, 10, 10)
    >>> int(new[6, 6, 0]) > 150, int(new[0, 0, 0])
    (True, 100)
    """
    h, w = mask.shape
    H, W, C = image.shape
    box = image[top:top + h, left:left + w]
    # the region may not reach the image's border: those pixels are the boundary
    keep = mask.copy()
    if top == 0:
        keep[0] = False
    if left == 0:
        keep[:, 0] = False
    if top + h == H:
        keep[-1] = False
    if left + w == W:
        keep[:, -1] = False
    bx0, by0, bw, bh = cv2.boundingRect(keep.view(np.uint8))
    if bw == 0:
        return box.copy(), keep
    by1, bx1 = by0 + bh, bx0 + bw
    if cv2.countNonZero(keep[by0:by1, bx0:bx1].view(np.uint8)) < MIN_POISSON_PIXELS:
        # too few pixels for an interior: there is no seam to hide, paste them
        return np.where(keep[..., None], patch, box), keep
    # the solved rectangle: the region's box plus a ring of boundary pixels, grown (where the image
    # allows) to a size the sine transform does fast (box coordinates; < 0 or > h lie outside the box)
    y0, y1 = _grow(by0 - 1, by1 + 1, top, H)
    x0, x1 = _grow(bx0 - 1, bx1 + 1, left, W)
    dst = image[top + y0:top + y1, left + x0:left + x1].astype(np.float32)
    src = dst.copy()
    py0, px0 = max(y0, 0), max(x0, 0)
    py1, px1 = min(y1, h), min(x1, w)
    src[py0 - y0:py1 - y0, px0 - x0:px1 - x0] = patch[py0:py1, px0:px1]
    inner = np.zeros(dst.shape[:2], np.uint8)
    inner[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = keep[by0:by1, bx0:bx1]
    if erode:
        inner = cv2.erode(inner, _KERNEL, iterations=int(erode), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    use = inner.astype(bool)[..., None]
    # forward differences (edge p -> p + 1); dv = guidance - target's own difference, 0 outside `use`
    gx_s, gx_d = np.diff(src, axis=1), np.diff(dst, axis=1)
    gy_s, gy_d = np.diff(src, axis=0), np.diff(dst, axis=0)
    if mixed:
        gx_s = np.where(np.abs(gx_s) > np.abs(gx_d), gx_s, gx_d)
        gy_s = np.where(np.abs(gy_s) > np.abs(gy_d), gy_s, gy_d)
    dvx = np.where(use[:, :-1], gx_s - gx_d, np.float32(0))
    dvy = np.where(use[:-1], gy_s - gy_d, np.float32(0))
    # f = target + u, u = 0 on the ring: laplacian(u) = div(dv) on the interior pixels
    rhs = (dvx[1:-1, 1:] - dvx[1:-1, :-1]) + (dvy[1:, 1:-1] - dvy[:-1, 1:-1])
    from scipy import fft

    n, m = rhs.shape[:2]
    spectrum = fft.dstn(rhs, type=1, axes=(0, 1))
    spectrum /= (_eigen(n)[:, None] + _eigen(m)[None, :])[..., None]
    u = fft.idstn(spectrum, type=1, axes=(0, 1))
    solved = np.clip(np.rint(dst[1:-1, 1:-1] + u), 0, 255).astype(np.uint8)
    new = box.copy()
    region = new[by0:by1, bx0:bx1]
    solved = solved[by0 - y0 - 1:by1 - y0 - 1, bx0 - x0 - 1:bx1 - x0 - 1]
    np.copyto(region, solved, where=keep[by0:by1, bx0:bx1, None])
    return new, keep
