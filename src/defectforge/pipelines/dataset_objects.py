"""The samples of a generated dataset as the exports read them: the manifest and configuration,
each anomalous sample's category, and the objects of its mask (8-connected components, each one
polygon with its holes bridged in), shared by the COCO and YOLO-seg exports
(:mod:`defectforge.pipelines.export`) and the YOLO IoU benchmark."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..core.validation import check_choice

__all__ = ["read_manifest", "read_mask", "image_size_hw", "mask_components", "component_polygon", "CATEGORIES",
           "resolve_categories", "category_of", "category_names", "progress_over"]


def read_manifest(dataset: str | os.PathLike) -> tuple[list[dict], dict]:
    """The samples (in index order) and the run configuration of a generated dataset."""
    import yaml

    dataset = Path(dataset)
    manifest = dataset / "manifest.jsonl"
    if not manifest.exists():
        raise FileNotFoundError(f"{dataset} holds no manifest.jsonl: give the OUTPUT folder of "
                                "`defectforge generate` (a finished run; finish an interrupted one with generate --resume)")
    samples = [r for r in (json.loads(line) for line in manifest.read_text().splitlines() if line.strip())
               if "index" in r]
    config_path = dataset / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
    return samples, config or {}


def read_mask(path: Path) -> np.ndarray:
    """A written mask (0/255 PNG) as a boolean ``(H, W)`` array."""
    from ..io.images import read_image

    return read_image(path, channels=1)[..., 0] > 127


def image_size_hw(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header."""
    from ..io.images import image_size

    width, height = image_size(path)
    return height, width


def mask_components(mask: np.ndarray) -> list[np.ndarray]:
    """The 8-connected components of a boolean ``(H, W)`` mask, each as a boolean mask.

    Examples
    --------
    >>> m = np.zeros((6, 6), bool); m[0:2, 0:2] = True; m[4:6, 3:6] = True
    >>> [int(c.sum()) for c in mask_components(m)]
    [4, 6]
    """
    import cv2

    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return [labels == k for k in range(1, count)]


def component_polygon(component: np.ndarray) -> np.ndarray:
    """One component as a single polygon, ``(N, 2)`` pixel coordinates ``(x, y)``, ``N >= 3``, holes kept.

    The outer contour, with each hole joined to it by a zero-width bridge: the polygon walks from
    the outer contour to the hole's nearest vertex, around the hole (traced the other way round)
    and back along the same segment. YOLO-seg has one polygon per object and no holes; filled
    (``cv2.fillPoly``, as Ultralytics rasterises labels) this polygon leaves the holes empty under
    both the even-odd and the non-zero rule. Components too thin for a contour of three points (a
    pixel, a one-pixel line) become their bounding box's corners.

    Examples
    --------
    >>> c = np.zeros((5, 5), bool); c[1:4, 1:4] = True
    >>> component_polygon(c).tolist()
    [[1, 1], [1, 3], [3, 3], [3, 1]]
    >>> import cv2
    >>> ring = np.zeros((9, 9), bool); ring[1:8, 1:8] = True; ring[3:6, 3:6] = False
    >>> drawn = cv2.fillPoly(np.zeros((9, 9), np.uint8), [component_polygon(ring).astype(np.int32)], 1)
    >>> bool((drawn.astype(bool) == ring).all())
    True
    """
    import cv2

    contours, hierarchy = cv2.findContours(component.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outer_index = max((k for k in range(len(contours)) if hierarchy[0][k][3] < 0), key=lambda k: len(contours[k]))
    polygon = contours[outer_index][:, 0, :].astype(np.int64)
    if len(polygon) < 3:
        ys, xs = np.nonzero(component)
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.int64)
    holes = [contours[k][:, 0, :].astype(np.int64) for k in range(len(contours)) if hierarchy[0][k][3] == outer_index]
    for hole in holes:
        if len(hole) < 3:
            continue
        # nearest pair (polygon vertex, hole vertex): the bridge between them crosses no boundary
        distance = ((polygon[:, None, :] - hole[None, :, :]) ** 2).sum(-1)
        at, into = np.unravel_index(int(np.argmin(distance)), distance.shape)
        loop = np.concatenate([hole[into:], hole[:into + 1]])
        polygon = np.concatenate([polygon[:at + 1], loop, polygon[at:]])
    return polygon


#: ``auto``: the defect type for samples that have one (real-defect and GAN runs), else the method.
CATEGORIES = ("auto", "type", "method", "anomaly")


def resolve_categories(samples: list[dict], categories: str) -> str:
    """``auto`` becomes ``type`` when any sample records a defect type (a real-defect run), else ``method``."""
    check_choice("categories", categories, CATEGORIES)
    if categories != "auto":
        return categories
    return "type" if any(isinstance(s.get("defect"), dict) for s in samples) else "method"


def category_of(sample: dict, categories: str) -> str:
    """The class of an anomalous sample: ``anomaly``, its method, or its defect type (``type``; the
    method for samples without one, e.g. the hand-crafted members of a ``--mix``)."""
    if categories == "anomaly":
        return "anomaly"
    defect = sample.get("defect")
    if categories == "type" and isinstance(defect, dict) and defect.get("type"):
        return str(defect["type"])
    return sample["method"]


def category_names(samples: Iterable[dict], categories: str) -> list[str]:
    """The sorted category names of the anomalous samples with a mask (the export's classes)."""
    if categories == "anomaly":
        return ["anomaly"]
    return sorted({category_of(s, categories) for s in samples if s.get("label") and s.get("mask_path")})


def progress_over(items: list, enabled: bool, desc: str):
    """``items``, behind a tqdm progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="img")
