"""An MVTec-AD category as a labelled set: ``test/<type>`` images with ``ground_truth/<type>`` masks.

The type (and few-shot group) of an image is its folder; ``train/good`` and ``test/good`` are
normal. Masks are not decoded when the category is read (a few-shot bank never opens a
test-split file); a defect image without a mask is skipped with a warning.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..images import list_images
from ..mvtec import defect_folders, mask_path
from ._common import AnnotatedImage, AnnotationSet, Region

__all__ = ["read_mvtec", "looks_like_mvtec"]


def looks_like_mvtec(root: Path) -> bool:
    """``True`` when ``root`` holds ``test/`` and ``ground_truth/`` (an MVTec-AD category)."""
    return (root / "test").is_dir() and (root / "ground_truth").is_dir()


def read_mvtec(root: str | Path) -> AnnotationSet:
    """Read an MVTec-AD category (see the module docstring)."""
    root = Path(root).expanduser()
    images = []
    for folder in defect_folders(root):
        for image in list_images(folder, recursive=False):
            mask = mask_path(root, folder.name, image)
            if mask is None:
                warnings.warn(f"{image}: no mask in {root / 'ground_truth' / folder.name}; skipped", stacklevel=2)
                continue
            images.append(AnnotatedImage(image.relative_to(root).as_posix(), image,
                                         [Region(folder.name, "mask", mask, str(mask))], None, str(mask),
                                         fixed_group=folder.name))
    for good in (root / "train" / "good", root / "test" / "good"):
        if good.is_dir():
            images += [AnnotatedImage(p.relative_to(root).as_posix(), p, source=str(p))
                       for p in list_images(good, recursive=False)]
    images.sort(key=lambda im: im.name)
    return AnnotationSet(root, "mvtec", images, [f.name for f in defect_folders(root)], str(root))
