"""Real defects from the tools people label them with: one reader per format, and format detection.

Formats (:data:`FORMATS`): ``labelme`` (a folder of images and labelme JSONs), ``coco`` (a COCO
JSON, or the folder holding one: CVAT, Label Studio, this library's ``export``), ``yolo-seg``
(Ultralytics ``images/`` + ``labels/`` + ``data.yaml``), ``masks`` (images with mask files found
by name, palette PNGs as class maps) and ``mvtec`` (an MVTec-AD category). Each reader returns an
:class:`AnnotationSet`; its images without annotations are the set's normal images where the
format says so (labelme: no JSON; COCO: no annotation; YOLO: no or an empty label file; masks: no
or an all-zero mask; MVTec: ``good``). How each format's shapes become pixels: ``_common``.

Examples
--------
>>> import json, tempfile, pathlib
>>> from PIL import Image
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> Image.new("RGB", (32, 24)).save(root / "a.png")
>>> Image.new("RGB", (32, 24)).save(root / "b.png")
>>> shape = {"label": "scratch", "points": [[2, 3], [11, 3], [11, 8], [2, 8]], "shape_type": "polygon"}
>>> _ = (root / "a.json").write_text(json.dumps({"imagePath": "a.png", "imageHeight": 24, "imageWidth": 32,
...                                               "shapes": [shape]}))
>>> detect_format(root)
'labelme'
>>> labelled = read_annotations(root)
>>> [(im.name, im.types) for im in labelled.images]
[('a.png', ['scratch']), ('b.png', [])]
>>> int(labelled.images[0].type_masks(24, 32)["scratch"].sum())   # 10 x 6 pixel centres, outline included
60
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import COMBINED, AnnotatedImage, AnnotationError, AnnotationSet, Region, rle_decode
from .coco import find_coco_json, is_coco_json, read_coco
from .labelme import is_labelme_json, read_labelme
from .masks import MASK_SUFFIXES, find_mask_pairs, read_mask_labels, read_masks
from .mvtec import IMPORT_RECORD, box_mask_types, looks_like_mvtec, read_import_record, read_mvtec, require_pixel_masks
from .yolo import find_data_yaml, read_yolo_seg

__all__ = ["FORMATS", "AUTO", "detect_format", "read_annotations", "check_format", "AnnotationSet",
           "AnnotatedImage", "Region", "AnnotationError", "COMBINED", "rle_decode", "read_mask_labels",
           "IMPORT_RECORD", "read_import_record", "box_mask_types", "require_pixel_masks"]

#: The formats a labelled set may have (``--defects-format``, ``defectforge import FORMAT``).
FORMATS = ("labelme", "coco", "yolo-seg", "masks", "mvtec")
#: Detect the format from the folder or file.
AUTO = "auto"

_READERS = {"labelme": read_labelme, "coco": read_coco, "yolo-seg": read_yolo_seg, "masks": read_masks,
            "mvtec": read_mvtec}

_LAYOUTS = ("an MVTec-AD category (test/<type>, ground_truth/<type>), a COCO JSON (or its folder), a YOLO-seg "
            "folder (data.yaml, images/, labels/), a labelme folder (images + JSONs) or a mask folder (<stem>.png "
            "+ <stem>_mask.png or _gt, or images/ + masks/)")


def check_format(format: str | None) -> str:
    """``format`` if it is one of :data:`FORMATS` or ``auto`` (``None`` reads as ``auto``)."""
    fmt = AUTO if format is None else str(format).strip().lower()
    if fmt not in FORMATS + (AUTO,):
        raise ValueError(f"defects format {format!r} is not one of {', '.join(FORMATS)} (or auto)")
    return fmt


def _has_mask_pair(root: Path) -> bool:
    from ..images import list_images

    pairs, _ = find_mask_pairs(root) if (root / "images").is_dir() else ([], root)
    if any(mask is not None for _, mask, _ in pairs):
        return True
    return any(p.stem.endswith(MASK_SUFFIXES) for p in list_images(root, recursive=True))


def detect_format(path: str | os.PathLike) -> str:
    """The format of a labelled folder or file, by its layout (see the module docstring).

    Checked in this order: MVTec (``test/`` + ``ground_truth/``), labelme JSONs, a COCO JSON, a
    YOLO ``data.yaml`` with a ``labels/`` folder, mask files. Name the format where a folder fits two.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    AnnotationError
        No known layout (the message lists them).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"defects {path} does not exist; give {_LAYOUTS}")
    if path.is_file():
        if path.suffix.lower() == ".json":
            if is_coco_json(path):
                return "coco"
            if is_labelme_json(path):
                raise AnnotationError(f"{path} is one labelme JSON; give the folder holding the images and their JSONs")
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo-seg"
        raise AnnotationError(f"{path} is a file of no known annotation format; give {_LAYOUTS}")
    if looks_like_mvtec(path):
        return "mvtec"
    # labelme before COCO: a labelme folder holds many JSONs, and COCO's check would parse each
    if any(is_labelme_json(p) for p in sorted(path.rglob("*.json"))[:20]):
        return "labelme"
    if find_coco_json(path) is not None:
        return "coco"
    if find_data_yaml(path) is not None and any(p.is_dir() for p in path.rglob("labels")):
        return "yolo-seg"
    if _has_mask_pair(path):
        return "masks"
    raise AnnotationError(f"{path} holds no defect image with a mask or annotation in a known layout; give {_LAYOUTS} "
                          f"(or name the format: {', '.join(FORMATS)})")


def read_annotations(path: str | os.PathLike, format: str | None = None, image_root=None) -> AnnotationSet:
    """Read a labelled set in ``format`` (``None`` / ``"auto"``: :func:`detect_format`).

    ``image_root`` (COCO only): where the JSON's ``file_name`` paths start.
    """
    fmt = check_format(format)
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"defects {path} does not exist; give {_LAYOUTS}")
    if fmt == AUTO:
        fmt = detect_format(path)
    if image_root is not None and fmt != "coco":
        raise ValueError(f"an image root is for COCO files; {path} is read as {fmt}")
    if fmt == "coco":
        return read_coco(path, image_root)
    if path.is_file() and fmt != "yolo-seg":
        raise AnnotationError(f"{path} is a file; the {fmt} format is a folder")
    return _READERS[fmt](path)
