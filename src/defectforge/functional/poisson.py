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


def _grow(lo: int, hi: int, offset: int, size: int, free: str | None = None) -> tuple[int, int]:
    """``[lo, hi)`` grown so its transform is fast, as far as ``offset + lo >= 0`` and ``offset + hi <= size`` allow.

    Dirichlet at both ends (``free=None``): the interior ``hi - lo - 2`` plus 1 is made 11-smooth.
    A free (mirrored) end, ``"start"`` or ``"end"``: the mirrored length ``2 (hi - lo) - 1`` has
    interior plus 1 ``2 (hi - lo - 1)``, so ``hi - lo - 1`` is made 11-smooth, growing the other end.
    """
    from scipy import fft

    n = hi - lo - 1
    extra = fft.next_fast_len(n, real=False) - n
    if free == "start":
        return lo, hi + min(extra, size - offset - hi)
    if free == "end":
        return lo - min(extra, offset + lo), hi
    before = min(extra // 2, offset + lo)
    after = min(extra - before, size - offset - hi)
    before = min(extra - after, offset + lo)
    return lo - before, hi + after


def _mirror(a: np.ndarray, axis: int, free: str | None) -> np.ndarray:
    """``a`` extended by its whole-sample mirror image at its ``free`` end along ``axis`` (a zero
    normal derivative there: the solution of a symmetric problem is symmetric)."""
    if free is None:
        return a
    n = a.shape[axis]
    if free == "start":
        return np.concatenate([np.flip(np.take(a, range(1, n), axis), axis), a], axis)
    return np.concatenate([a, np.flip(np.take(a, range(0, n - 1), axis), axis)], axis)


def _unknowns(div: np.ndarray, free_y: str | None, free_x: str | None) -> tuple[slice, slice]:
    """The unknown rows and columns of the rectangle (all but the ring; a free side has no ring)."""
    ny, nx = div.shape[:2]
    rows, cols = slice(1, ny - 1), slice(1, nx - 1)
    if free_y == "start":
        rows = slice(0, ny - 1)
    elif free_y == "end":
        rows = slice(1, ny)
    if free_x == "start":
        cols = slice(0, nx - 1)
    elif free_x == "end":
        cols = slice(1, nx)
    return rows, cols


def _free_end(lo_on_border: bool, hi_on_border: bool) -> str | None:
    # both ends on the border: the end stays a boundary (one Dirichlet end keeps the solution unique)
    return "start" if lo_on_border else "end" if hi_on_border else None


def poisson_blend(image: np.ndarray, patch: np.ndarray, mask: np.ndarray, top: int, left: int,
                  mixed: bool = False, erode: int = 3, free_border: bool = False,
                  guide: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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
    guide : np.ndarray, optional
        ``(h, w)`` bool: where the source's guidance applies (inside the region), instead of the region
        eroded by ``erode`` pixels; the rest of the region follows the target's gradients, a seamless
        transition to the boundary.
    free_border : bool
        Where the region reaches the image's border, solve those pixels too with a zero normal
        derivative there (Neumann: the image is mirrored), instead of keeping them as boundary
        values. A region on one side of an axis only: on both, that axis's far side stays boundary.
        For a defect cut off by its own image's edge placed at the target's edge: with the edge as
        boundary the target's values there would pull the whole defect to the target's level.

    Returns
    -------
    (np.ndarray, np.ndarray)
        The new ``(h, w, C)`` box (pixels outside the region unchanged) and the region actually
        solved ``(h, w)`` bool (the mask less any pixel on the image's border that is boundary).

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
    keep = mask.copy()
    free_y = free_x = None
    if free_border:
        free_y = _free_end(top == 0 and keep[0].any(), top + h == H and keep[-1].any())
        free_x = _free_end(left == 0 and keep[:, 0].any(), left + w == W and keep[:, -1].any())
    # the region may not reach the image's border (except on a free side): those pixels are boundary
    if top == 0 and free_y != "start":
        keep[0] = False
    if left == 0 and free_x != "start":
        keep[:, 0] = False
    if top + h == H and free_y != "end":
        keep[-1] = False
    if left + w == W and free_x != "end":
        keep[:, -1] = False
    bx0, by0, bw, bh = cv2.boundingRect(keep.view(np.uint8))
    if bw == 0:
        return box.copy(), keep
    by1, bx1 = by0 + bh, bx0 + bw
    if cv2.countNonZero(keep[by0:by1, bx0:bx1].view(np.uint8)) < MIN_POISSON_PIXELS:
        # too few pixels for an interior: there is no seam to hide, paste them
        return np.where(keep[..., None], patch, box), keep
    # the solved rectangle: the region's box plus a ring of boundary pixels (none on a free side),
    # grown (where the image allows) to a size the sine transform does fast (box coordinates;
    # < 0 or > h lie outside the box)
    y0, y1 = _grow(by0 - (free_y != "start"), by1 + (free_y != "end"), top, H, free_y)
    x0, x1 = _grow(bx0 - (free_x != "start"), bx1 + (free_x != "end"), left, W, free_x)
    dst = image[top + y0:top + y1, left + x0:left + x1].astype(np.float32)
    ny, nx = dst.shape[:2]
    inner = np.zeros((ny, nx), np.uint8)
    inner[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] = keep[by0:by1, bx0:bx1]
    if guide is not None:
        inner[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] &= guide[by0:by1, bx0:bx1]
    elif erode:
        # the rectangle's ring is outside the region (0); on a free side the image's own border is no
        # edge of the region: replicating the border erodes as if the region continued there
        inner = cv2.erode(inner, _KERNEL, iterations=int(erode), borderType=cv2.BORDER_REPLICATE)
    gx0, gy0, gw, gh = cv2.boundingRect(inner)
    new = box.copy()
    if gw == 0:  # no guidance from the source: the solution is the target itself
        return new, keep
    # the guided edges (p, p + 1), p in the guided set, all lie in the guided box plus one pixel
    gx1, gy1 = min(gx0 + gw + 1, nx), min(gy0 + gh + 1, ny)
    d = dst[gy0:gy1, gx0:gx1]
    s = d.copy()
    # the source over the part of this box that the patch covers (rectangle -> box coordinates)
    sy0, sx0 = max(gy0 + y0, 0), max(gx0 + x0, 0)
    sy1, sx1 = min(gy1 + y0, h), min(gx1 + x0, w)
    s[sy0 - y0 - gy0:sy1 - y0 - gy0, sx0 - x0 - gx0:sx1 - x0 - gx0] = patch[sy0:sy1, sx0:sx1]
    use = inner[gy0:gy1, gx0:gx1].astype(bool)[..., None]
    # dv = guidance - target's own difference, on guided edges only (mixed: where the source's is larger)
    dvx, dvy = np.diff(s, axis=1), np.diff(s, axis=0)
    tx, ty = np.diff(d, axis=1), np.diff(d, axis=0)
    dvx -= tx
    dvy -= ty
    if mixed:
        dvx[np.abs(dvx + tx) <= np.abs(tx)] = 0
        dvy[np.abs(dvy + ty) <= np.abs(ty)] = 0
    dvx *= use[:, :-1]
    dvy *= use[:-1]
    # f = target + u: laplacian(u) = div(dv) at the unknown pixels, u = 0 on the ring
    div = np.zeros((ny, nx, C), np.float32)
    div[gy0:gy1, gx0:gx1 - 1] += dvx
    div[gy0:gy1, gx0 + 1:gx1] -= dvx
    div[gy0:gy1 - 1, gx0:gx1] += dvy
    div[gy0 + 1:gy1, gx0:gx1] -= dvy
    # a free side's pixels have a mirrored neighbour whose edge carries the opposite difference: the
    # side's own term counts twice (the mirrored problem is then exactly symmetric: zero derivative)
    if free_y == "start" and gy0 == 0:
        div[0, gx0:gx1] += dvy[0]
    elif free_y == "end" and gy1 == ny:
        div[ny - 1, gx0:gx1] -= dvy[-1]
    if free_x == "start" and gx0 == 0:
        div[gy0:gy1, 0] += dvx[:, 0]
    elif free_x == "end" and gx1 == nx:
        div[gy0:gy1, nx - 1] -= dvx[:, -1]
    rows, cols = _unknowns(div, free_y, free_x)
    from scipy import fft

    rhs = _mirror(_mirror(div[rows, cols], 0, free_y), 1, free_x)
    n, m = rhs.shape[:2]
    spectrum = fft.dstn(rhs, type=1, axes=(0, 1))
    spectrum /= (_eigen(n)[:, None] + _eigen(m)[None, :])[..., None]
    u = fft.idstn(spectrum, type=1, axes=(0, 1))
    # back from the mirrored problem: the unknowns' own part
    uy = n - (rows.stop - rows.start) if free_y == "start" else 0
    ux = m - (cols.stop - cols.start) if free_x == "start" else 0
    u = u[uy:uy + rows.stop - rows.start, ux:ux + cols.stop - cols.start]
    ry, rx = by0 - y0 - rows.start, bx0 - x0 - cols.start  # the region's box in the unknowns
    solved = dst[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0] + u[ry:ry + by1 - by0, rx:rx + bx1 - bx0]
    solved = np.clip(np.rint(solved), 0, 255).astype(np.uint8)
    np.copyto(new[by0:by1, bx0:bx1], solved, where=keep[by0:by1, bx0:bx1, None])
    return new, keep
