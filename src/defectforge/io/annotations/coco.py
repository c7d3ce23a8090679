"""COCO instance-segmentation JSON (CVAT, Label Studio, this library's ``export``): categories are defect types.

Format: cocodataset.org "Data format" (Lin et al., ECCV 2014). Each annotation's
``segmentation`` is a list of polygons ``[x1, y1, x2, y2, ...]``, an uncompressed RLE
(``counts`` a list, usual with ``iscrowd: 1``) or a compressed RLE (``counts`` a string); the
kind is read from the data, whatever ``iscrowd`` says. An annotation with no segmentation but a
``bbox`` is a box (``mask_kind: box``). Images listed without annotations are normal.

Image files: ``file_name`` is looked up under ``info.image_root`` (written by defectforge's
export), the JSON's folder, its parent, and an ``images/`` folder in either (CVAT's layout), in
that order; ``image_root`` overrides the search.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._common import AnnotatedImage, AnnotationError, AnnotationSet, Region, relative_name

__all__ = ["read_coco", "is_coco_json", "find_coco_json"]


def is_coco_json(path: Path) -> bool:
    """``True`` when ``path`` is a JSON object with ``images`` and ``annotations`` lists."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("images"), list) and isinstance(data.get("annotations"), list)


def find_coco_json(folder: Path) -> Path | None:
    """The one COCO JSON in ``folder`` or its ``annotations/`` folder (``None`` when there is none).

    Raises
    ------
    AnnotationError
        Several COCO files: the message asks for the file itself.
    """
    found = [p for sub in (folder, folder / "annotations") if sub.is_dir()
             for p in sorted(sub.glob("*.json")) if is_coco_json(p)]
    if len(found) > 1:
        raise AnnotationError(f"{folder} holds several COCO files ({', '.join(p.name for p in found)}); "
                              "give the one to read instead of the folder")
    return found[0] if found else None


def _image_roots(json_path: Path, data: dict, image_root) -> list[Path]:
    if image_root is not None:
        return [Path(image_root).expanduser()]
    roots = []
    info = data.get("info")
    if isinstance(info, dict) and isinstance(info.get("image_root"), str):
        roots.append(Path(info["image_root"]))
    here = json_path.parent
    roots += [here, here.parent, here / "images", here.parent / "images"]
    return roots


def _box(ann: dict, where: str, size: tuple[int, int]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        raise AnnotationError(f"{where}: has neither a segmentation nor a bbox [x, y, w, h]; "
                              "re-export it with masks or boxes") from None
    _check_inside(np.array([[x, y], [x + w, y + h]]), size, where)
    return x, y, x + w, y + h


def _check_inside(points: np.ndarray, size: tuple[int, int], where: str) -> None:
    h, w = size
    # COCO coordinates are corners: pixel x spans [x, x + 1), so the image is [0, w] x [0, h]
    outside = (points[:, 0] < 0) | (points[:, 0] > w) | (points[:, 1] < 0) | (points[:, 1] > h)
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise AnnotationError(f"{where}: point ({x:g}, {y:g}) lies outside the {w}x{h} image; move it inside "
                              "(or fix the image's width/height)")


def _region(ann: dict, where: str, name: str, size: tuple[int, int]) -> Region:
    seg = ann.get("segmentation")
    if seg is None or seg == [] or seg == {}:
        return Region(name, "box", _box(ann, where, size), where)
    if isinstance(seg, dict):
        if "size" in seg and [int(v) for v in seg["size"]] != list(size):
            raise AnnotationError(f"{where}: its RLE size {seg['size']} (h, w) differs from the image entry's "
                                  f"{list(size)}; re-export it at the image's size")
        return Region(name, "rle", seg, where)
    if not isinstance(seg, list):
        raise AnnotationError(f"{where}: segmentation is neither polygons nor an RLE; re-export it")
    polygons = []
    for k, poly in enumerate(seg):
        try:
            points = np.asarray(poly, np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: polygon {k} is not a flat list of x, y numbers; re-export it") from None
        if len(points) < 3:
            raise AnnotationError(f"{where}: polygon {k} has {len(points)} point(s) (fewer than 3) and outlines no "
                                  "area; redraw it or delete the annotation")
        _check_inside(points, size, where)
        polygons.append(points.reshape(-1).tolist())
    return Region(name, "coco-polygon", polygons, where)


def read_coco(path: str | Path, image_root=None) -> AnnotationSet:
    """Read a COCO JSON (or the folder holding one; see :func:`find_coco_json`).

    Raises
    ------
    AnnotationError
        Naming the JSON and the entry: an annotation of an image id that is not listed, an image
        file that is not found, an unknown category id, a polygon with fewer than 3 points or
        outside its image, two image entries with one file.
    """
    path = Path(path).expanduser()
    json_path = path if path.is_file() else find_coco_json(path)
    if json_path is None:
        raise AnnotationError(f"{path} holds no COCO JSON (an object with images and annotations lists)")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
        images_in, annotations = list(data["images"]), list(data["annotations"])
        categories = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise AnnotationError(f"{json_path}: not a readable COCO file ({exc}); it needs images, annotations "
                              "and categories lists") from None
    roots = _image_roots(json_path, data, image_root)
    entries: dict[int, AnnotatedImage] = {}
    files: dict[Path, int] = {}
    for k, entry in enumerate(images_in):
        where = f"{json_path}: image {entry.get('id', k) if isinstance(entry, dict) else k}"
        try:
            image_id, file_name = int(entry["id"]), str(entry["file_name"]).replace("\\", "/")
            size = (int(entry["height"]), int(entry["width"]))
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(f"{where}: an image entry needs id, file_name, height and width; fix it") from None
        found = next((r / file_name for r in roots if (r / file_name).is_file()), None)
        if found is None:
            raise AnnotationError(f"{where}: file {file_name!r} is not under {', '.join(str(r) for r in roots)}; "
                                  "put the images there (beside the JSON, or in images/ there) or import with --image-root")
        found = found.resolve()
        if found in files:
            raise AnnotationError(f"{where}: lists {found} again (image {files[found]} does too); "
                                  "keep one entry per file")
        files[found] = image_id
        root = next(r for r in roots if (r / file_name).is_file())
        entries[image_id] = AnnotatedImage(relative_name(found, root), found, [], size,
                                           f"{json_path}: image {image_id}")
    for k, ann in enumerate(annotations):
        where = f"{json_path}: annotation {ann.get('id', k) if isinstance(ann, dict) else k}"
        if not isinstance(ann, dict):
            raise AnnotationError(f"{where}: not an object; fix or delete it")
        image = entries.get(ann.get("image_id"))
        if image is None:
            raise AnnotationError(f"{where}: names image_id {ann.get('image_id')!r}, which the images list does "
                                  "not hold; add the image entry or delete the annotation")
        if ann.get("category_id") not in categories:
            raise AnnotationError(f"{where}: category_id {ann.get('category_id')!r} is not among the categories "
                                  f"{sorted(categories)}; add the category or fix the id")
        image.regions.append(_region(ann, where, categories[ann["category_id"]], image.size))
    images = sorted(entries.values(), key=lambda im: im.name)
    root = roots[0] if image_root is not None else json_path.parent
    return AnnotationSet(root, "coco", images, [categories[c] for c in sorted(categories)], str(json_path))
