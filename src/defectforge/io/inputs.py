"""Loading the normal images a dataset is made from: a folder or an MVTec-AD category."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .images import ImageReadError, list_images, read_image

__all__ = ["NormalImages", "load_normal_images", "resolve_input_folder", "MIN_IMAGE_SIZE"]

#: Smallest side accepted: below it no method's smallest defect fits.
MIN_IMAGE_SIZE = 16


@dataclass
class NormalImages:
    """Decoded normal images (each ``(H, W, C)`` uint8, C = 1 or 3), decoded once."""

    root: Path
    paths: list[Path]
    images: list[np.ndarray]
    skipped: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def relative(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()


def resolve_input_folder(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/train/good`` when ``path`` is an MVTec-AD category."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input folder {path} does not exist; pass a folder of normal images "
                                "or an MVTec-AD category (with train/good)")
    if not path.is_dir():
        raise NotADirectoryError(f"input {path} is not a folder; pass a folder of normal images")
    mvtec = path / "train" / "good"
    return mvtec if mvtec.is_dir() else path


def load_normal_images(path: str | os.PathLike, size: int | None = None, progress: bool = False) -> NormalImages:
    """Read every image under ``path`` (recursively; ``train/good`` for an MVTec category).

    Unreadable or truncated files are skipped with a warning and listed in ``skipped``.
    ``size`` resizes every image to ``size x size``; without it sizes are kept.
    """
    root = resolve_input_folder(path)
    files = list_images(root)
    if not files:
        raise ValueError(f"input folder {root} holds no images (.png, .jpg, .jpeg, .bmp, .tif, .webp; "
                         "searched recursively)")
    if size is not None and size < MIN_IMAGE_SIZE:
        raise ValueError(f"--size {size} is too small; use at least {MIN_IMAGE_SIZE} pixels")
    paths, images, skipped = [], [], []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="reading inputs", unit="img", leave=False)
    for f in iterator:
        try:
            img = read_image(f)
        except ImageReadError as exc:
            warnings.warn(f"skipping {exc}", stacklevel=2)
            skipped.append({"skipped_input": f.relative_to(root).as_posix(), "reason": str(exc)})
            continue
        if size is not None and img.shape[:2] != (size, size):
            shrink = img.shape[0] > size or img.shape[1] > size
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if img.ndim == 2:
                img = img[..., None]
        if min(img.shape[:2]) < MIN_IMAGE_SIZE:
            raise ValueError(f"{f}: image is {img.shape[1]}x{img.shape[0]} px, smaller than the smallest "
                             f"defects ({MIN_IMAGE_SIZE} px); remove it or pass --size")
        paths.append(f)
        images.append(np.ascontiguousarray(img))
    if not images:
        raise ValueError(f"no readable image in {root}; every file failed to decode (see warnings)")
    return NormalImages(root, paths, images, skipped)
