"""Preview grids: for each method, the normal inputs, the synthetic images, masks and overlays."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

__all__ = ["preview_grid", "overlay"]

_LABEL_WIDTH = 150


def overlay(image: np.ndarray, mask: np.ndarray, color=(255, 40, 40), alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``mask`` (H, W) tinted and outlined."""
    out = np.ascontiguousarray(image, dtype=np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array(color, np.float32)
    out = np.ascontiguousarray(out.astype(np.uint8))
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def _label(text: str, height: int) -> np.ndarray:
    tile = np.full((height, _LABEL_WIDTH, 3), 255, np.uint8)
    lines = text.split("\n")
    for k, line in enumerate(lines):
        y = int(height / 2 + (k - (len(lines) - 1) / 2) * 18) + 5
        cv2.putText(tile, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (20, 20, 20), 1, cv2.LINE_AA)
    return tile


def _rgb(img: np.ndarray) -> np.ndarray:
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img


def preview_grid(images: np.ndarray, methods: Sequence[str], seed: int = 0, rows: str = "full",
                 synthesizers: dict | None = None, foreground=None) -> np.ndarray:
    """A grid picture ``(H', W', 3)`` uint8.

    Parameters
    ----------
    images : np.ndarray
        ``(N, H, W, C)`` uint8 normal images (C = 1 or 3), one per column.
    methods : sequence of str
        Registry names; each gets its rows.
    rows : {"full", "compact"}
        ``full``: normal | synthetic | mask | overlay for one method, and synthetic | mask | overlay
        per method after a shared normal row for several; ``compact``: one overlay row per method.
    synthesizers : dict, optional
        Pre-built synthesizers by name (defaults to ``build_synthesizer(name)``).
    foreground : spec, optional
        Region of interest (see :func:`defectforge.sources.foreground.foreground_batch`). Methods
        that cut from other images use the other pictured images as donors.
    """
    from ..sources.foreground import foreground_batch
    from .generate import build_synthesizer

    n, h, w, _ = images.shape
    batch = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    region = foreground_batch(batch, foreground) if foreground is not None else None
    strips = []
    pad = 2

    def strip(label: str, tiles: list[np.ndarray]) -> np.ndarray:
        body = np.concatenate([np.pad(_rgb(t), ((pad, pad), (pad, pad), (0, 0)), constant_values=255) for t in tiles], 1)
        return np.concatenate([_label(label, body.shape[0]), body], 1)

    strips.append(strip("normal", list(images)))
    for name in methods:
        synth = (synthesizers or {}).get(name) or build_synthesizer(name)
        out = synth(batch, seed=seed, foreground=region, donors=batch if n > 1 else None)
        synthetic = out.images.permute(0, 2, 3, 1).numpy()
        masks = (out.masks[:, 0] > 0.5).numpy()
        overlays = [overlay(_rgb(synthetic[i]), masks[i]) for i in range(n)]
        if rows == "compact":
            strips.append(strip(name, overlays))
            continue
        strips.append(strip(f"{name}\nsynthetic", list(synthetic)))
        strips.append(strip(f"{name}\nmask", [(m[..., None] * 255).astype(np.uint8) for m in masks]))
        strips.append(strip(f"{name}\noverlay", overlays))
    return np.concatenate(strips, 0)
