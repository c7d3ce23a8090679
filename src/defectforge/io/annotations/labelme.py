"""labelme folders: one JSON of shapes per image; images without a JSON are normal.

A labelme JSON (github.com/wkentaro/labelme, ``labelme/_label_file.py``) holds ``imagePath``
(relative to the JSON), ``imageHeight`` / ``imageWidth`` and ``shapes``, each with a ``label``
(the defect type), ``points`` (``[x, y]`` pixels) and a ``shape_type``. Polygons (at least 3
points), rectangles (2 corners; read as boxes, ``mask_kind: box``), circles (centre and a point
on the circle) and masks (labelme >= 5.5: a base64 PNG placed at the first point) are regions;
lines and points outline no area and are refused. Shapes are drawn as
labelme draws them (``_common``: PIL polygon with its outline).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..images import IMAGE_EXTENSIONS, list_images
from ._common import AnnotatedImage, AnnotationError, AnnotationSet, Region, relative_name

__all__ = ["read_labelme", "is_labelme_json"]

_AREAS = {"polygon": 3, "rectangle": 2, "circle": 2}


def is_labelme_json(path: Path) -> bool:
    """``True`` when ``path`` is a JSON object with a ``shapes`` list (labelme's)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("shapes"), list)


def _image_of(json_path: Path, data: dict) -> Path:
    declared = data.get("imagePath")
    if isinstance(declared, str) and declared:
        declared = declared.replace("\\", "/")
        # the path as written, else the same file name beside the JSON (a moved folder, a Windows path)
        candidates = [json_path.parent / declared, json_path.parent / declared.rsplit("/", 1)[-1]]
    else:  # no imagePath: the image of the same stem
        candidates = [json_path.with_suffix(ext) for ext in IMAGE_EXTENSIONS]
        candidates += [json_path.with_suffix(ext.upper()) for ext in IMAGE_EXTENSIONS]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    if isinstance(declared, str) and declared:
        raise AnnotationError(f"{json_path}: names the image {declared!r}, which is not there (nor beside the JSON); "
                              "put the image beside its JSON or fix imagePath")
    raise AnnotationError(f"{json_path}: has no imagePath and no image {json_path.stem}.* beside it; put the image "
                          "beside its JSON or set imagePath")


def _check_inside(points: np.ndarray, size: tuple[int, int] | None, where: str) -> None:
    if size is None:
        return
    h, w = size
    # pixel centres run 0..w-1; a click on the image's outer edge is at most half a pixel further
    outside = (points[:, 0] < -0.5) | (points[:, 0] > w - 0.5) | (points[:, 1] < -0.5) | (points[:, 1] > h - 0.5)
    if outside.any():
        x, y = points[int(np.argmax(outside))]
        raise AnnotationError(f"{where}: point ({x:g}, {y:g}) lies outside the {w}x{h} image; move it inside "
                              "(or fix imageWidth/imageHeight if they are wrong)")


def _mask_shape(shape: dict, where: str, size: tuple[int, int] | None) -> Region:
    """labelme's ``mask`` shape (labelme >= 5.5, from its AI tools): a base64 PNG of the region,
    its top-left pixel at the first point."""
    import base64
    import binascii
    import io

    from PIL import Image

    try:
        x0, y0 = (int(round(float(v))) for v in shape["points"][0])
        with Image.open(io.BytesIO(base64.b64decode(shape["mask"]))) as im:
            mask = np.asarray(im.convert("L")) > 0
    except (KeyError, TypeError, ValueError, IndexError, OSError, binascii.Error):
        raise AnnotationError(f"{where}: a mask shape needs points [[x, y], ...] and a base64 PNG mask; "
                              "fix or delete it") from None
    _check_inside(np.array([[x0, y0], [x0 + mask.shape[1] - 1, y0 + mask.shape[0] - 1]], np.float64), size, where)
    return Region(shape["label"], "placed", (x0, y0, mask), where, shape="mask")


def _regions(json_path: Path, data: dict, size: tuple[int, int] | None) -> list[Region]:
    regions = []
    for k, shape in enumerate(data["shapes"]):
        where = f"{json_path}: shape {k}" + (f" ({shape.get('label')!r})" if isinstance(shape, dict) else "")
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise AnnotationError(f"{where}: not a labelme shape (needs label, points, shape_type); fix or delete it")
        kind = shape.get("shape_type") or "polygon"
        if kind == "mask":
            regions.append(_mask_shape(shape, where, size))
            continue
        if kind not in _AREAS:
            raise AnnotationError(f"{where}: shape_type {kind!r} outlines no area; redraw it as a polygon "
                                  "(or a rectangle) or delete it")
        try:
            points = np.asarray(shape.get("points"), np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: points are not a list of [x, y] pairs; fix or delete the shape") from None
        if kind == "polygon" and len(points) < 3:
            raise AnnotationError(f"{where}: a polygon with {len(points)} point(s) (fewer than 3) outlines no area; "
                                  "add points or delete it")
        if kind != "polygon" and len(points) != 2:
            raise AnnotationError(f"{where}: a {kind} needs 2 points, it has {len(points)}; redraw it")
        if not np.isfinite(points).all():
            raise AnnotationError(f"{where}: a point is not a finite number; fix or delete the shape")
        _check_inside(points, size, where)
        regions.append(Region(shape["label"], "labelme", points, where, shape=kind))
    return regions


def read_labelme(root: str | Path) -> AnnotationSet:
    """Read a labelme folder (searched recursively): annotated images and, without a JSON, normal ones.

    Raises
    ------
    AnnotationError
        A JSON that is not labelme's, names a missing image, or holds a shape that outlines no area
        (fewer than 3 points, a line) or lies outside the image; two JSONs naming one image.
    """
    root = Path(root).expanduser()
    annotated: dict[Path, AnnotatedImage] = {}
    for json_path in sorted(root.rglob("*.json"), key=lambda p: p.as_posix()):
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise AnnotationError(f"{json_path}: not readable JSON ({exc}); fix it or move it out of {root}") from None
        if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
            raise AnnotationError(f"{json_path}: not a labelme file (no shapes list); move it out of {root}")
        image = _image_of(json_path, data).resolve()
        size = None
        if isinstance(data.get("imageHeight"), int) and isinstance(data.get("imageWidth"), int):
            size = (data["imageHeight"], data["imageWidth"])
        if image in annotated:
            raise AnnotationError(f"{json_path} and {annotated[image].source} both annotate {image}; merge them "
                                  "into one JSON")
        annotated[image] = AnnotatedImage(relative_name(image, root), image, _regions(json_path, data, size), size,
                                          str(json_path))
    images = list(annotated.values())
    for path in list_images(root, recursive=True, what="labelme folder"):
        if path.resolve() not in annotated:
            images.append(AnnotatedImage(relative_name(path, root), path.resolve(), source=str(path)))
    images.sort(key=lambda im: im.name)
    classes = sorted({r.defect_type for im in images for r in im.regions})
    return AnnotationSet(root, "labelme", images, classes, str(root))
