"""What a sample's record says about its files and its mask: the size and SHA-256 of the written
bytes, the mask's box, area and contrast, and the real defect it was made from."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

__all__ = ["file_record", "real_defect", "mask_box", "mask_contrast", "mask_fields"]


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)``, half-open, of the nonzero pixels of a 2-D ``mask``; ``None`` when empty.

    >>> m = np.zeros((4, 5), bool); m[1:3, 2] = True
    >>> mask_box(m)
    (2, 1, 3, 3)
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def mask_contrast(image: np.ndarray, source: np.ndarray, mask: np.ndarray,
                  box: tuple[int, int, int, int] | None = None) -> float:
    """Mean absolute change inside ``mask`` of an 8-bit ``(H, W, C)`` ``image`` against its
    ``source``, in [0, 1], rounded to 6 decimals; ``box``: the mask's :func:`mask_box`, when known.

    >>> a = np.zeros((4, 4, 1), np.uint8); b = a.copy(); b[:2] = 51
    >>> mask_contrast(b, a, np.ones((4, 4), bool))
    0.1
    """
    m = mask if mask.dtype == bool else mask.astype(bool)
    box = mask_box(m) if box is None else box
    if box is None or image.shape != source.shape:
        return 0.0
    # read from the defect's box only (a small defect costs little); the sum of the integer
    # changes is exact, so the mean is the one numpy takes over the masked pixels
    x0, y0, x1, y1 = box
    inside = m[y0:y1, x0:x1]
    a, b = image[y0:y1, x0:x1], source[y0:y1, x0:x1]
    if a.dtype == np.uint8 and b.dtype == np.uint8:
        diff = cv2.absdiff(a, b).reshape(a.shape)  # |a - b| exactly, without a widening copy
    else:
        diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    total = int(np.multiply(diff, inside[..., None], dtype=diff.dtype).sum(dtype=np.int64))
    return round(total / (int(np.count_nonzero(inside)) * diff.shape[2]) / 255.0, 6)


def mask_fields(image: np.ndarray, source: np.ndarray, mask: np.ndarray) -> dict:
    """The record's ``area_fraction``, ``bbox`` and ``contrast`` of a non-empty 2-D bool ``mask``.

    >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
    >>> mask_fields(np.full((4, 4, 1), 51, np.uint8), np.zeros((4, 4, 1), np.uint8), m)
    {'area_fraction': 0.25, 'bbox': [1, 1, 3, 3], 'contrast': 0.2}
    """
    box = mask_box(mask)
    return {"area_fraction": int(np.count_nonzero(mask)) / mask.size, "bbox": None if box is None else list(box),
            "contrast": mask_contrast(image, source, mask, box)}


def file_record(data: bytes) -> dict:
    """The size and SHA-256 of a written file's bytes (what ``--resume`` checks)."""
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def real_defect(params) -> dict:
    """The bank entry a sample was made from (type, entry key, source file); ``{}`` for other methods."""
    inner = params or {}
    for _ in range(3):
        if isinstance(inner.get("entry"), str) and "defect_type" in inner:
            found = {"type": inner["defect_type"], "entry": inner["entry"], "source": inner["entry"].rsplit("#", 1)[0]}
            if inner.get("mask_kind", "pixel") != "pixel":  # drawn from a box, not an outline
                found["mask_kind"] = inner["mask_kind"]
            return found
        defects = inner.get("defects")
        if not defects:
            break
        inner = defects[0].get("params", {})
    return {}
