"""YOLO segmentation folders (Ultralytics): ``images/...`` beside ``labels/...`` and a ``data.yaml``.

Layout (docs.ultralytics.com/datasets/segment): the label file of ``images/<sub>/<stem>.<ext>`` is
``labels/<sub>/<stem>.txt``, one object a line: ``class x1 y1 x2 y2 ...`` (a polygon, coordinates
divided by the image's width and height) or ``class cx cy w h`` (a detection box, read as a box,
``mask_kind: box``). Class names come from ``data.yaml``'s ``names`` (a list or ``{id: name}``).
An image without a label file, or with an empty one, is a background (normal) image.
Polygons are drawn with ``cv2.fillPoly`` on ``round(x * W), round(y * H)`` (``_common``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..images import list_images
from ._common import AnnotatedImage, AnnotationError, AnnotationSet, Region, relative_name

__all__ = ["read_yolo_seg", "find_data_yaml", "label_file"]


def find_data_yaml(folder: Path) -> Path | None:
    """``folder/data.yaml`` (or ``.yml``), else the one YAML in ``folder`` with ``names``."""
    import yaml

    for name in ("data.yaml", "data.yml"):
        if (folder / name).is_file():
            return folder / name
    found = []
    for p in sorted(folder.glob("*.y*ml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "names" in data:
            found.append(p)
    return found[0] if len(found) == 1 else None


def label_file(image: Path, root: Path) -> Path:
    """The label file of ``image``: its last ``images`` folder replaced by ``labels``, suffix ``.txt``."""
    rel = image.relative_to(root).parts
    if "images" in rel:
        k = len(rel) - 1 - rel[::-1].index("images")
        rel = rel[:k] + ("labels",) + rel[k + 1:]
    return (root.joinpath(*rel)).with_suffix(".txt")


def _names(yaml_path: Path) -> dict[int, str]:
    import yaml

    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
        names = data["names"]
        if isinstance(names, list):
            return {k: str(n) for k, n in enumerate(names)}
        return {int(k): str(n) for k, n in dict(names).items()}
    except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError) as exc:
        raise AnnotationError(f"{yaml_path}: no class names ({exc}); it needs names: a list, or "
                              "{0: crack, ...}") from None


def _regions(path: Path, names: dict[int, str]) -> list[Region]:
    regions = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            values = [float(v) for v in line.split()]
            cls = int(line.split()[0])
        except ValueError:
            raise AnnotationError(f"{where}: not 'class x1 y1 x2 y2 ...' numbers; fix or delete the line") from None
        if cls not in names:
            raise AnnotationError(f"{where}: class {cls} is not in data.yaml's names {sorted(names)}; add it or "
                                  "fix the class")
        coords = np.asarray(values[1:], np.float64)
        if not np.isfinite(coords).all():
            raise AnnotationError(f"{where}: a coordinate is not a finite number; fix or delete the line")
        if len(coords) == 4:
            cx, cy, w, h = coords
            points = np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]])
        elif len(coords) % 2 or len(coords) < 6:
            raise AnnotationError(f"{where}: {len(coords)} coordinates: a polygon needs at least 3 points (6 "
                                  "numbers, in x y pairs), a box 4; fix or delete the line")
        else:
            points = coords.reshape(-1, 2)
        outside = (points < -1e-6) | (points > 1 + 1e-6)
        if outside.any():
            x, y = points[int(np.argmax(outside.any(1)))]
            raise AnnotationError(f"{where}: point ({x:g}, {y:g}) lies outside the image (coordinates are divided "
                                  "by the width and height, so 0..1); fix the line")
        if len(coords) == 4:
            regions.append(Region(names[cls], "box", tuple(float(v) for v in points.reshape(-1)), where,
                                  shape="normalised"))
        else:
            regions.append(Region(names[cls], "yolo", [points], where))
    return regions


def read_yolo_seg(root: str | Path) -> AnnotationSet:
    """Read a YOLO segmentation folder (or its ``data.yaml``).

    Raises
    ------
    AnnotationError
        No ``data.yaml`` with names, a class not in names, a polygon of fewer than 3 points or
        outside 0..1, a label file without an image.
    """
    root = Path(root).expanduser()
    if root.is_file():
        yaml_path, root = root, root.parent
    else:
        yaml_path = find_data_yaml(root)
    if yaml_path is None:
        raise AnnotationError(f"{root} has no data.yaml with the class names; add one (names: [crack, scratch])")
    names = _names(yaml_path)
    images = []
    labels_seen = set()
    for path in list_images(root, recursive=True, what="YOLO folder"):
        label = label_file(path, root)
        regions = []
        if label.is_file():
            labels_seen.add(label.resolve())
            regions = _regions(label, names)
        images.append(AnnotatedImage(relative_name(path, root), path.resolve(), regions, None,
                                     str(label) if label.is_file() else str(path)))
    for label in sorted(root.rglob("*.txt")):
        if "labels" in label.relative_to(root).parts and label.resolve() not in labels_seen \
                and label.read_text(encoding="utf-8").strip():
            raise AnnotationError(f"{label}: labels an image that is not there (its images/ twin with any image "
                                  "extension); add the image or delete the label file")
    return AnnotationSet(root, "yolo-seg", images, [names[k] for k in sorted(names)], str(yaml_path))
