"""Mask folders: each image's mask found by its name; palette PNGs whose indices are classes.

Two layouts are read (an MVTec-AD category is the ``mvtec`` format):

- pairs: ``<stem>.<ext>`` beside ``<stem>_mask.<ext>`` or ``<stem>_gt.<ext>`` (any image extension);
- twin folders: ``images/<sub>/<stem>.<ext>`` and ``masks/<sub>/<stem>.<ext>`` (the mask folder
  may also be called ``mask``, ``gt``, ``labels`` or ``annotations``; the mask's stem may carry the
  ``_mask`` / ``_gt`` suffix).

A mask's nonzero pixels are the defect, of the type named by the folder holding the image
(``<sub>``; ``defect`` at the top). A palette PNG (mode ``P``) is a class map: index 0 is
background, index ``k`` is class ``k``, named by line ``k`` of a ``classes.txt`` in the root or
the mask's folder (line 0 names the background) or ``class<k>``. An image without a mask, or
with an all-zero mask (KolektorSDD's way of marking good parts), is normal. Every mask is decoded
when the folder is read (its classes and emptiness decide the image's type); the images
themselves are read only when drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import IMAGE_EXTENSIONS, list_images
from ._common import AnnotatedImage, AnnotationError, AnnotationSet, Region, read_mask_labels, relative_name

__all__ = ["read_masks", "read_mask_labels", "MASK_SUFFIXES", "MASK_FOLDERS", "find_mask_pairs"]

#: Stem suffixes of a mask beside its image.
MASK_SUFFIXES = ("_mask", "_gt")
#: Names of the mask folder twinned with an ``images`` folder.
MASK_FOLDERS = ("masks", "mask", "gt", "labels", "annotations")


def _is_palette(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode == "P"
    except OSError:
        return False


def _mask_beside(image: Path) -> Path | None:
    for suffix in MASK_SUFFIXES:
        for ext in IMAGE_EXTENSIONS:
            for candidate in (image.with_name(f"{image.stem}{suffix}{ext}"),
                              image.with_name(f"{image.stem}{suffix}{ext.upper()}")):
                if candidate.is_file():
                    return candidate
    return None


def _mask_in(folder: Path, rel: Path) -> Path | None:
    for suffix in ("",) + MASK_SUFFIXES:
        for ext in IMAGE_EXTENSIONS:
            for candidate in (folder / rel.parent / f"{rel.stem}{suffix}{ext}",
                              folder / rel.parent / f"{rel.stem}{suffix}{ext.upper()}"):
                if candidate.is_file():
                    return candidate
    return None


def _twin_folders(root: Path) -> tuple[Path, Path] | None:
    if not (root / "images").is_dir():
        return None
    for name in MASK_FOLDERS:
        if (root / name).is_dir() and list_images(root / name, recursive=True):
            return root / "images", root / name
    return None


def find_mask_pairs(root: Path) -> tuple[list[tuple[Path, Path | None, str]], Path]:
    """``([(image, mask or None, folder type)], images folder)`` of a mask folder (see the module docstring)."""
    twins = _twin_folders(root)
    found = []
    if twins is not None:
        images_dir, masks_dir = twins
        for image in list_images(images_dir, recursive=True, what="images folder"):
            rel = image.relative_to(images_dir)
            kind = rel.parent.as_posix() if rel.parent.name else "defect"
            found.append((image, _mask_in(masks_dir, rel), kind))
        return found, images_dir
    images = list_images(root, recursive=True, what="mask folder")
    masks = {m for m in (_mask_beside(i) for i in images) if m is not None}
    for image in images:
        if image in masks:
            continue
        rel = image.relative_to(root)
        found.append((image, _mask_beside(image), rel.parent.as_posix() if rel.parent.name else "defect"))
    return found, root


def _class_names(root: Path, folder: Path) -> dict[int, str]:
    for place in (folder, root):
        path = place / "classes.txt"
        if path.is_file():
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            return {k: name for k, name in enumerate(lines) if k > 0 and name}
    return {}


def read_masks(root: str | Path) -> AnnotationSet:
    """Read a mask folder (see the module docstring).

    Raises
    ------
    AnnotationError
        A mask whose size differs from its image is reported when drawn; here: a palette index
        that ``classes.txt`` does not name, two images with one stem in the twin layout.
    """
    root = Path(root).expanduser()
    pairs, images_root = find_mask_pairs(root)
    images = []
    classes: set[str] = set()
    stems: dict[tuple[str, str], Path] = {}
    for image, mask, kind in pairs:
        key = (image.parent.as_posix(), image.stem)
        if key in stems:
            raise AnnotationError(f"{image} and {stems[key]} share the name {image.stem!r}, so one mask would "
                                  "serve both; rename one")
        stems[key] = image
        regions = []
        if mask is not None:
            labels = read_mask_labels(mask)
            if _is_palette(mask):
                names = _class_names(root, mask.parent)
                for value in (int(v) for v in np.unique(labels) if v):
                    if names and value not in names:
                        raise AnnotationError(f"{mask}: palette index {value} has no name in classes.txt "
                                              f"({sorted(names)}); add line {value} to classes.txt")
                    regions.append(Region(names.get(value, f"class{value}"), "mask", mask, str(mask), value=value))
            elif labels.any():
                regions.append(Region(kind, "mask", mask, str(mask)))
        classes.update(r.defect_type for r in regions)
        images.append(AnnotatedImage(relative_name(image, images_root), image.resolve(), regions, None,
                                     str(mask) if mask is not None else str(image)))
    images.sort(key=lambda im: im.name)
    return AnnotationSet(images_root, "masks", images, sorted(classes), str(root))
