"""An MVTec-AD category as a labelled set: ``test/<type>`` images with ``ground_truth/<type>`` masks.

The type (and few-shot group) of an image is its folder; ``train/good`` and ``test/good`` are
normal. Masks are not decoded when the category is read (a few-shot bank never opens a
test-split file); a defect image without a mask is skipped with a warning. A category written by
``defectforge import`` records in ``import.json`` which masks are boxes; they stay boxes here.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..images import list_images
from ..mvtec import defect_folders, mask_path
from ._common import AnnotatedImage, AnnotationError, AnnotationSet, Region

__all__ = ["read_mvtec", "looks_like_mvtec", "IMPORT_RECORD", "read_import_record", "box_mask_types",
           "require_pixel_masks"]

#: The record ``defectforge import`` writes at the root of the category it makes.
IMPORT_RECORD = "import.json"


def read_import_record(root: str | Path) -> dict | None:
    """The ``import.json`` of a category written by ``defectforge import`` (``None``: there is none)."""
    path = Path(root) / IMPORT_RECORD
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{path}: not readable ({exc}); import the data again") from None
    return data if isinstance(data, dict) else None


def box_mask_types(root: str | Path) -> list[str]:
    """Defect types of a category whose masks are (partly) boxes, from its ``import.json``."""
    record = read_import_record(root) or {}
    return sorted(t for t, kind in (record.get("mask_kinds") or {}).items() if kind != "pixel")


def require_pixel_masks(root: str | Path, accept_boxes: bool = False) -> None:
    """Refuse a category whose masks are boxes for metrics that score pixels (unless ``accept_boxes``).

    Raises
    ------
    ValueError
        Naming the types, the record and the option that accepts them.
    """
    boxes = box_mask_types(root)
    if boxes and not accept_boxes:
        raise ValueError(f"{Path(root) / IMPORT_RECORD}: the masks of {', '.join(boxes)} are boxes around the "
                         "defects, not their outlines, so pixel AUROC and AUPRO would score the boxes; label "
                         "outlines, or pass --accept-box-masks to score them anyway")


def looks_like_mvtec(root: Path) -> bool:
    """``True`` when ``root`` holds ``test/`` and ``ground_truth/`` (an MVTec-AD category)."""
    return (root / "test").is_dir() and (root / "ground_truth").is_dir()


def read_mvtec(root: str | Path) -> AnnotationSet:
    """Read an MVTec-AD category (see the module docstring)."""
    root = Path(root).expanduser()
    imported = (read_import_record(root) or {}).get("files") or {}
    images = []
    for folder in defect_folders(root):
        for image in list_images(folder, recursive=False):
            mask = mask_path(root, folder.name, image)
            if mask is None:
                warnings.warn(f"{image}: no mask in {root / 'ground_truth' / folder.name}; skipped", stacklevel=2)
                continue
            recorded = imported.get(image.relative_to(root).as_posix())
            kind = "box" if isinstance(recorded, dict) and recorded.get("mask_kind") == "box" else "mask"
            images.append(AnnotatedImage(image.relative_to(root).as_posix(), image,
                                         [Region(folder.name, "mask", mask, str(mask), shape=kind)], None, str(mask),
                                         fixed_group=folder.name))
    for good in (root / "train" / "good", root / "test" / "good"):
        if good.is_dir():
            images += [AnnotatedImage(p.relative_to(root).as_posix(), p, source=str(p))
                       for p in list_images(good, recursive=False)]
    images.sort(key=lambda im: im.name)
    return AnnotationSet(root, "mvtec", images, [f.name for f in defect_folders(root)], str(root))
