"""User-drawn defect shapes: a folder of binary masks, placed per sample (scaled, rotated, positioned).

Used by :func:`defectforge.control` (``mask_bank=``) and by ``defectforge generate --mask-bank``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..core.validation import check_interval, check_range
from ..functional.paste import place_box, rotate_expand
from ..io.images import binary_mask, list_images, read_image

__all__ = ["MaskBank"]


class MaskBank:
    """A folder of user-drawn binary defect shapes (PNG or any image file, 0 = background).

    Each shape is cropped to its bounding box when loaded. A file that is not binary (more than
    two grey levels, unless ``mask_threshold`` is given) or holds no foreground raises an error
    naming the file. Files are read as every input is (:func:`~defectforge.io.images.read_image`).

    Parameters
    ----------
    folder : path
        Folder of mask images (searched recursively).
    scale_range : (float, float)
        Longer side of a placed shape as a fraction of the image's shorter side.
    rotation_range : (float, float)
        Rotation in degrees.
    mask_threshold : int or None
        Grey level (1-255) from which a pixel is shape, for near-binary masks (JPEG-compressed,
        anti-aliased; ``--mask-threshold``). ``None``: every file must be binary.
    """

    def __init__(self, folder: str | os.PathLike, scale_range=(0.1, 0.4), rotation_range=(0.0, 360.0),
                 mask_threshold: int | None = None):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"mask bank {self.folder} is not a folder; pass a folder of binary mask PNGs")
        files = list_images(self.folder)
        if not files:
            raise ValueError(f"mask bank {self.folder} holds no images; add binary PNG masks (0 background, 255 shape)")
        self.scale_range = check_interval("scale_range", scale_range, 1e-3, 1.0)
        self.rotation_range = check_interval("rotation_range", rotation_range, -360.0, 360.0)
        self.mask_threshold = None if mask_threshold is None else int(
            check_range("mask threshold (--mask-threshold)", mask_threshold, 1, 255, integer=True))
        self.files, self.shapes = [], []
        for f in files:
            m = binary_mask(read_image(f, channels=1)[..., 0], f, self.mask_threshold, what="mask bank file")
            if not m.any():
                raise ValueError(f"mask bank file {f} is empty (no shape pixel); remove it or draw the shape in white")
            ys, xs = np.nonzero(m)
            self.files.append(f)
            self.shapes.append(np.ascontiguousarray(m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]))
        self.identity = str(self.folder)

    def config(self) -> dict:
        """The constructor arguments (``MaskBank(**bank.config())`` reloads the same bank)."""
        config = {"folder": str(self.folder), "scale_range": list(self.scale_range),
                  "rotation_range": list(self.rotation_range)}
        if self.mask_threshold is not None:  # absent otherwise, so records of binary banks read as before
            config["mask_threshold"] = self.mask_threshold
        return config

    def __len__(self) -> int:
        return len(self.shapes)

    def sample(self, rng: np.random.Generator, height: int, width: int, region: np.ndarray | None) -> dict:
        """Draw a shape, its scale, rotation and position (centred on a region pixel)."""
        index = int(rng.integers(len(self)))
        scale = float(rng.uniform(*self.scale_range))
        angle = float(rng.uniform(*self.rotation_range))
        p = {"index": index, "scale": scale, "angle": angle}
        sh, sw = self._size(p, height, width)
        p["target"] = list(place_box(rng, height, width, min(sh, height), min(sw, width), region))
        return p

    def _scaled(self, p: dict, height: int, width: int) -> np.ndarray:
        shape = self.shapes[p["index"]]
        factor = p["scale"] * min(height, width) / max(shape.shape)
        h, w = max(1, int(round(shape.shape[0] * factor))), max(1, int(round(shape.shape[1] * factor)))
        scaled = cv2.resize(shape.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_NEAREST)
        if not scaled.any():
            scaled[h // 2, w // 2] = 255
        return scaled

    def _size(self, p: dict, height: int, width: int) -> tuple[int, int]:
        scaled = self._scaled(p, height, width)
        rotated, _ = rotate_expand(scaled[..., None], p["angle"])
        return rotated.shape[:2]

    def render(self, p: dict, height: int, width: int) -> np.ndarray:
        """The placed shape as an ``(height, width)`` bool mask."""
        rotated, _ = rotate_expand(self._scaled(p, height, width)[..., None], p["angle"])
        shape = rotated[..., 0] > 0
        ty, tx = p["target"]
        out = np.zeros((height, width), bool)
        hh, ww = min(shape.shape[0], height - ty), min(shape.shape[1], width - tx)
        out[ty:ty + hh, tx:tx + ww] = shape[:hh, :ww]
        return out
