"""Preview grids: for each method, the normal inputs, the synthetic images, masks and overlays."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

__all__ = ["preview_grid", "overlay", "LAYOUTS"]

#: ``full``: normal | synthetic | mask | overlay rows; ``compact``: one outlined row per method;
#: ``side-by-side``: per method, each synthetic image beside its outlined copy.
LAYOUTS = ("full", "compact", "side-by-side")

_LABEL_WIDTH = 150
#: Height of the column-label strip on top of a grid given ``column_labels``.
HEADER_HEIGHT = 20


def overlay(image: np.ndarray, mask: np.ndarray, color=(255, 40, 40), alpha: float = 0.45,
            fill: bool = True, thickness: int = 1) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``mask`` (H, W) outlined, and tinted when ``fill``.

    Outlines alone (``fill=False``) leave the defect's own pixels visible inside the outline.

    Examples
    --------
    >>> img = np.zeros((8, 8, 3), np.uint8); m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
    >>> out = overlay(img, m, fill=False)
    >>> int((out[..., 0] > 0).sum()), int(out[3, 3, 0])          # the 12-pixel border only
    (12, 0)
    """
    out = np.ascontiguousarray(image, dtype=np.float32)
    m = mask.astype(bool)
    if fill:
        out[m] = (1 - alpha) * out[m] + alpha * np.array(color, np.float32)
    out = np.ascontiguousarray(out.astype(np.uint8))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, thickness)
    return out


def _label(text: str, height: int) -> np.ndarray:
    tile = np.full((height, _LABEL_WIDTH, 3), 255, np.uint8)
    lines = text.split("\n")
    for k, line in enumerate(lines):
        y = int(height / 2 + (k - (len(lines) - 1) / 2) * 18) + 5
        cv2.putText(tile, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return tile


def _header(labels: Sequence[str], widths: list[int]) -> np.ndarray:
    """A white strip naming each column (text cut to its column's width)."""
    strip = np.full((HEADER_HEIGHT, _LABEL_WIDTH + sum(widths), 3), 255, np.uint8)
    x = _LABEL_WIDTH
    for text, width in zip(labels, widths):
        text = str(text)
        while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)[0][0] > width - 4:
            text = text[:-1]
        cv2.putText(strip, text, (x + 3, HEADER_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (20, 20, 20), 1,
                    cv2.LINE_AA)
        x += width
    return strip


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def preview_grid(images: np.ndarray, methods: Sequence[str], seed: int = 0, rows: str = "full",
                 synthesizers: dict | None = None, foreground=None,
                 column_labels: Sequence[str] | None = None) -> np.ndarray:
    """A grid picture ``(H', W', 3)`` uint8.

    Parameters
    ----------
    images : np.ndarray
        ``(N, H, W, C)`` uint8 normal images (C = 1 or 3), one per column.
    methods : sequence of str
        Registry names; each gets its rows.
    rows : {"full", "compact", "side-by-side"}
        ``full``: normal | synthetic | mask | overlay for one method, and synthetic | mask | overlay
        per method after a shared normal row for several; ``compact``: one row per method, the
        synthetic images with their masks outlined (not filled, so the defect shows);
        ``side-by-side``: one row per method, each synthetic image beside its outlined copy.
    synthesizers : dict, optional
        Pre-built synthesizers by name (defaults to ``build_synthesizer(name)``).
    foreground : spec, optional
        Region of interest (see :func:`defectforge.sources.foreground.foreground_batch`). Methods
        that cut from other images use the other pictured images as donors.
    column_labels : sequence of str, optional
        One name per input image (its file name, say), written over its column
        (:data:`HEADER_HEIGHT` pixels); rows are always named at the left.
    """
    from ..core.validation import check_choice
    from ..sources.foreground import foreground_batch
    from .build import build_synthesizer

    check_choice("rows", rows, LAYOUTS)

    n, h, w, _ = images.shape
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    region = foreground_batch(batch, foreground) if foreground is not None else None
    strips = []
    pad = 2

    def strip(label: str, tiles: list[np.ndarray]) -> np.ndarray:
        body = np.concatenate([np.pad(_rgb(t), ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles], 1)
        return np.concatenate([_label(label, body.shape[0]), body], 1)

    if rows == "side-by-side":  # the normal image over each pair's left half
        strips.append(strip("normal", [np.concatenate([_rgb(im), np.full_like(_rgb(im), 255)], 1) for im in images]))
    else:
        strips.append(strip("normal", list(images)))
    if column_labels is not None:
        if len(column_labels) != n:
            raise ValueError(f"column_labels: {len(column_labels)} names for {n} images")
        widths = [(2 * w if rows == "side-by-side" else w) + 2 * pad for _ in range(n)]
        header = _header(column_labels, widths)
    for name in methods:
        synth = (synthesizers or {}).get(name) or build_synthesizer(name)
        out = synth(batch, seed=seed, foreground=region, donors=batch if n > 1 else None)
        synthetic = out.images.permute(0, 2, 3, 1).numpy()
        masks = (out.masks[:, 0] > 0.5).numpy()
        if rows == "compact":
            strips.append(strip(name, [overlay(_rgb(synthetic[i]), masks[i], fill=False) for i in range(n)]))
            continue
        if rows == "side-by-side":
            pairs = [np.concatenate([_rgb(synthetic[i]), overlay(_rgb(synthetic[i]), masks[i], fill=False)], 1)
                     for i in range(n)]
            strips.append(strip(f"{name}\nimage | outline", pairs))
            continue
        overlays = [overlay(_rgb(synthetic[i]), masks[i]) for i in range(n)]
        strips.append(strip(f"{name}\nsynthetic", list(synthetic)))
        strips.append(strip(f"{name}\nmask", [(m[..., None] * 255).astype(np.uint8) for m in masks]))
        strips.append(strip(f"{name}\noverlay", overlays))
    if column_labels is not None:
        strips.insert(0, header)
    return np.concatenate(strips, 0)
