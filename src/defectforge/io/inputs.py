"""Loading the normal images a dataset is made from: a folder or an MVTec-AD category."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .mvtec import is_mvtec_category
from .images import IMAGE_EXTENSIONS, ImageReadError, bit_depth_of, list_images, read_image_raw, to_uint8

__all__ = ["NormalImages", "load_normal_images", "resolve_input_folder", "is_run_folder", "MIN_IMAGE_SIZE"]

#: Smallest side accepted: below it no method's smallest defect fits.
MIN_IMAGE_SIZE = 16
#: Folder names that hold masks, never normal images (MVTec-AD's layout).
MASK_FOLDERS = ("ground_truth",)


@dataclass
class NormalImages:
    """Decoded normal images (each ``(H, W, C)`` uint8, C = 1 or 3), decoded once."""

    root: Path
    paths: list[Path]
    images: list[np.ndarray]
    skipped: list[dict] = field(default_factory=list)
    #: Bit depth 16-bit inputs were scaled by (8 when every input is 8-bit).
    bit_depth: int = 8

    def __len__(self) -> int:
        return len(self.images)

    def relative(self, i: int) -> str:
        return self.paths[i].relative_to(self.root).as_posix()


def is_run_folder(folder: Path) -> bool:
    """``folder`` holds a defectforge dataset (its config.yaml or manifest.jsonl)."""
    config = folder / "config.yaml"
    if config.is_file():
        try:
            head = config.read_text(encoding="utf-8", errors="replace")[:100000]
        except OSError:
            head = ""
        if "defectforge_version" in head:
            return True
    return (folder / "manifest.jsonl").is_file() and (folder / "test").is_dir()


def resolve_input_folder(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/train/good`` when ``path`` is an MVTec-AD category.

    A dataset root holding several categories is refused with their list; so is a folder that is
    itself a defectforge output.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input folder {path} does not exist; pass a folder of normal images "
                                "or an MVTec-AD category (with train/good)")
    if not path.is_dir():
        raise NotADirectoryError(f"input {path} is not a folder; pass a folder of normal images")
    if is_mvtec_category(path):
        return path / "train" / "good"
    try:
        categories = sorted(d.name for d in path.iterdir() if is_mvtec_category(d))
    except OSError:
        categories = []
    if categories:
        shown = ", ".join(categories[:8]) + (" ..." if len(categories) > 8 else "")
        raise ValueError(f"input {path} is a dataset root with {len(categories)} categories ({shown}); "
                         f"pass one category, e.g. {path / categories[0]}")
    if is_run_folder(path):
        raise ValueError(f"input {path} is the output of a defectforge run (synthetic anomalies, not normal "
                         "images); pass the folder of normal images it was made from")
    return path


def _normal_files(root: Path) -> tuple[list[Path], list[str]]:
    """Image files under ``root``, leaving out mask folders and defectforge outputs nested in it."""
    files = list_images(root, what="input folder")
    excluded: dict[str, str] = {}
    kept = []
    for f in files:
        rel = f.relative_to(root)
        parents = [root.joinpath(*rel.parts[:k]) for k in range(1, len(rel.parts))]
        reason = None
        for d in parents:
            if d.name in MASK_FOLDERS:
                reason = f"{d.relative_to(root).as_posix()}/ (ground-truth masks)"
                break
            if is_run_folder(d):
                reason = f"{d.relative_to(root).as_posix()}/ (a defectforge output)"
                break
        if reason is None:
            kept.append(f)
        else:
            excluded.setdefault(reason, reason)
    return kept, list(excluded)


def load_normal_images(path: str | os.PathLike, size: int | None = None, progress: bool = False,
                       bit_depth: int | str = "auto", max_pixels: int | None = None) -> NormalImages:
    """Read every image under ``path`` (recursively; ``train/good`` for an MVTec category).

    Unreadable, truncated and oversized files (``max_pixels``), and images too small to be a
    normal image (below :data:`MIN_IMAGE_SIZE` px a side, whatever ``size``), are skipped with a
    warning and listed in ``skipped``; mask folders (``ground_truth/``) and defectforge outputs nested in ``path``
    are not read. ``size`` resizes every image to ``size x size``; without it sizes are kept.
    16-bit images are scaled by ``bit_depth``: ``"auto"`` takes the smallest of 8, 10, 12, 14,
    16 bits holding the largest value of all 16-bit inputs (one scale for the whole set, so
    12-bit sensor data keeps its contrast and images keep their relative brightness).
    """
    root = resolve_input_folder(path)
    files, excluded = _normal_files(root)
    for reason in excluded:
        warnings.warn(f"not reading {reason} under {root} as normal images", stacklevel=2)
    if not files:
        raise ValueError(f"input folder {root} holds no images ({', '.join(IMAGE_EXTENSIONS)}; "
                         "searched recursively)")
    if size is not None and size < MIN_IMAGE_SIZE:
        raise ValueError(f"--size {size} is too small; use at least {MIN_IMAGE_SIZE} pixels")
    paths, raw, skipped = [], [], []
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(files, desc="reading inputs", unit="img", leave=False)

    def skip(f: Path, reason: str) -> None:
        warnings.warn(f"skipping {reason}", stacklevel=3)
        skipped.append({"skipped_input": f.relative_to(root).as_posix(), "reason": reason})

    for f in iterator:
        try:
            img = read_image_raw(f, max_pixels=max_pixels)
        except ImageReadError as exc:
            skip(f, str(exc))
            continue
        if min(img.shape[:2]) < MIN_IMAGE_SIZE:
            # a thumbnail or icon, not a picture of a part: --size would only blow it up
            skip(f, f"{f}: image is {img.shape[1]}x{img.shape[0]} px, smaller than the smallest defects "
                    f"({MIN_IMAGE_SIZE} px a side): too small to be a normal image, skipped with or without --size; "
                    "remove it from INPUT")
            continue
        paths.append(f)
        raw.append(img)
    if not raw:
        raise ValueError(f"no usable image in {root}; every file was skipped, e.g. {skipped[0]['reason']}")
    depth = bit_depth_of(raw) if bit_depth == "auto" else int(bit_depth)
    images = []
    for img in raw:
        img = to_uint8(img, depth)
        if size is not None and img.shape[:2] != (size, size):
            shrink = img.shape[0] > size or img.shape[1] > size
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if img.ndim == 2:
                img = img[..., None]
        images.append(np.ascontiguousarray(img))
    return NormalImages(root, paths, images, skipped, depth)
