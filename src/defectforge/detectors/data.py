"""An MVTec-AD-shaped category, checked and loaded as uint8 tensors at one square size.

The layout and its checks are :mod:`defectforge.io.mvtec`'s; every problem is reported with the
paths involved before anything is trained.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io.images import read_image
from ..io.mvtec import MVTecLayoutError, check_mvtec_category

__all__ = ["MVTecCategory", "MVTecLayoutError", "check_mvtec_category", "load_mvtec_category"]


@dataclass
class MVTecCategory:
    """Images of one category resized to ``size x size``.

    Attributes
    ----------
    root : Path
    size : int
    train : torch.Tensor
        ``(N, 3, size, size)`` uint8 normal training images (grey images repeated to RGB).
    test : torch.Tensor
        ``(M, 3, size, size)`` uint8 test images.
    test_masks : torch.Tensor
        ``(M, size, size)`` bool ground truth (all False for ``good``).
    test_labels : torch.Tensor
        ``(M,)`` int64, 0 normal, 1 anomalous.
    test_names : list of str
        ``<defect>/<stem>`` of each test image.
    """

    root: Path
    size: int
    train: torch.Tensor
    test: torch.Tensor
    test_masks: torch.Tensor
    test_labels: torch.Tensor
    test_names: list[str] = field(default_factory=list)
    train_files: list[Path] = field(default_factory=list)

    @property
    def defect_types(self) -> list[str]:
        return sorted({n.split("/")[0] for n in self.test_names} - {"good"})


def _load_resized(path: Path, size: int) -> np.ndarray:
    import cv2

    image = read_image(path, channels=3)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _load_mask(path: Path | None, size: int) -> np.ndarray:
    import cv2

    if path is None:
        return np.zeros((size, size), dtype=bool)
    mask = read_image(path, channels=1)[..., 0]
    return cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST) >= 128


def load_mvtec_category(root: str | os.PathLike, size: int = 256, max_train: int | None = None) -> MVTecCategory:
    """Check and load an MVTec-AD category, every image resized to ``size x size``.

    Parameters
    ----------
    root : path-like
        The category folder (``train/``, ``test/``, ``ground_truth/``).
    size : int
        Square side the images and masks are resized to (area / nearest interpolation).
    max_train : int, optional
        Use only the first ``max_train`` training images (sorted by name).

    Raises
    ------
    MVTecLayoutError
        The folder is not MVTec-shaped, or masks are missing or do not match their images.
    """
    if not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32, got {size!r}")
    layout = check_mvtec_category(root)
    train_files = layout["train"][:max_train] if max_train else layout["train"]
    train = np.stack([_load_resized(p, size) for p in train_files])
    test = np.stack([_load_resized(p, size) for p, _, _ in layout["test"]])
    masks = np.stack([_load_mask(m, size) for _, _, m in layout["test"]])
    labels = np.array([0 if d == "good" else 1 for _, d, _ in layout["test"]], dtype=np.int64)
    names = [f"{d}/{p.stem}" for p, d, _ in layout["test"]]
    to_chw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return MVTecCategory(Path(root), size, to_chw(train), to_chw(test), torch.from_numpy(masks),
                         torch.from_numpy(labels), names, list(train_files))
