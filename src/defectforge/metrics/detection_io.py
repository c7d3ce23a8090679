"""Score any detector from files: score maps in a folder, ground truth from an MVTec AD category.

Layout. For every test image ``CATEGORY/test/<defect>/<stem>.<ext>`` the score map is
``SCORES/<defect>/<stem>.{npy,npz,tif,tiff,png}`` (``good`` included); its ground truth is
``CATEGORY/ground_truth/<defect>/<stem>_mask.png`` (all zeros for ``good``). Image scores come
from ``SCORES/image_scores.csv`` (lines ``<defect>/<stem>,<score>``) when present, otherwise
the maximum of each map (the usual choice of anomalib and the MVTec papers).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io.images import image_size, read_image
from ..io.mvtec import mask_path
from .detection import MVTEC_FPR_LIMIT, detection_metrics
from .features import IMAGE_EXTENSIONS

__all__ = ["DetectionSet", "load_score_map", "load_mask", "read_detection_folder", "detection_metrics_from_folders"]

SCORE_MAP_EXTENSIONS = (".npy", ".npz", ".tif", ".tiff", ".png")


def load_score_map(path: str | os.PathLike) -> np.ndarray:
    """A 2-D float32 score map from ``.npy``, ``.npz`` (its only array, or ``anomaly_map``),
    float TIFF or a grey PNG (raw values)."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path)
        elif suffix == ".npz":
            with np.load(path) as data:
                keys = list(data.keys())
                key = "anomaly_map" if "anomaly_map" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise ValueError(f"holds arrays {keys}; store one array or name it 'anomaly_map'")
                array = data[key]
        else:
            # a score map is data, not a picture: its raw values, not the viewer's reading of them
            with Image.open(path) as image:
                array = np.asarray(image)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read score map {path}: {exc}") from exc
    array = np.squeeze(np.asarray(array, dtype=np.float32))
    if array.ndim != 2:
        raise ValueError(f"score map {path} must be 2-D (H, W), got shape {array.shape}")
    return array


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """A ground-truth mask as bool: values >= 128 of 255 (MVTec masks are 0/255, JPEG-safe), read
    as its image is (:func:`~defectforge.io.images.read_image`: orientation, transparency)."""
    return read_image(path, channels=1)[..., 0] >= 128


@dataclass
class DetectionSet:
    """Everything the detection metrics need, read from folders."""

    names: list[str]
    image_scores: np.ndarray
    image_labels: np.ndarray
    maps: list[np.ndarray]
    masks: list[np.ndarray]


def _resize(score_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(score_map, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def read_detection_folder(scores_dir: str | os.PathLike, category_dir: str | os.PathLike, *,
                          resize_maps: bool = True) -> DetectionSet:
    """Read score maps and MVTec ground truth (see the module docstring for the layout).

    Parameters
    ----------
    resize_maps : bool
        Resize maps (bilinear) to the mask size when they differ; with ``False`` a size mismatch
        is an error.
    """
    scores_dir, category_dir = Path(scores_dir), Path(category_dir)
    test = category_dir / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{category_dir} is not an MVTec AD category (no test/ folder)")
    if not scores_dir.is_dir():
        raise FileNotFoundError(f"score folder {scores_dir} does not exist")
    csv_scores: dict[str, float] = {}
    csv_file = scores_dir / "image_scores.csv"
    if csv_file.is_file():
        with open(csv_file, newline="", encoding="utf-8") as stream:
            for number, row in enumerate(csv.reader(stream), start=1):
                if not row or row[0].strip().lower() in ("path", "name", "image"):
                    continue
                try:
                    csv_scores[row[0].strip()] = float(row[1])
                except (IndexError, ValueError) as exc:
                    raise ValueError(f"{csv_file} line {number}: expected '<defect>/<stem>,<score>'") from exc
    names, labels, scores, maps, masks = [], [], [], [], []
    for defect_dir in sorted(d for d in test.iterdir() if d.is_dir()):
        images = sorted(p for p in defect_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for image in images:
            name = f"{defect_dir.name}/{image.stem}"
            candidates = [scores_dir / defect_dir.name / f"{image.stem}{ext}" for ext in SCORE_MAP_EXTENSIONS]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise FileNotFoundError(f"no score map for {image}: expected {scores_dir / defect_dir.name / image.stem}"
                                        f"{{{','.join(SCORE_MAP_EXTENSIONS)}}}")
            score_map = load_score_map(found)
            mask_file = mask_path(category_dir, defect_dir.name, image) or \
                category_dir / "ground_truth" / defect_dir.name / f"{image.stem}_mask.png"
            if defect_dir.name == "good":
                width, height = image_size(image)
                mask = np.zeros((height, width), dtype=bool)
            elif mask_file.is_file():
                mask = load_mask(mask_file)
            else:
                raise FileNotFoundError(f"ground-truth mask {mask_file} for {image} does not exist")
            if score_map.shape != mask.shape:
                if not resize_maps:
                    raise ValueError(f"score map {found} is {score_map.shape} but the mask is {mask.shape}; "
                                     "resize it or allow resize_maps")
                score_map = _resize(score_map, mask.shape)
            names.append(name)
            labels.append(0 if defect_dir.name == "good" else 1)
            if csv_scores:
                if name not in csv_scores:
                    raise ValueError(f"{csv_file} has no score for {name}")
                scores.append(csv_scores[name])
            else:
                scores.append(float(score_map.max()))
            maps.append(score_map)
            masks.append(mask)
    if not names:
        raise FileNotFoundError(f"{test} holds no images")
    return DetectionSet(names, np.asarray(scores, dtype=np.float64), np.asarray(labels), maps, masks)


def detection_metrics_from_folders(scores_dir: str | os.PathLike, category_dir: str | os.PathLike, *,
                                   fpr_limit: float = MVTEC_FPR_LIMIT, resize_maps: bool = True) -> dict[str, Any]:
    """:func:`~defectforge.metrics.detection_metrics` of score maps in ``scores_dir`` against an
    MVTec AD category; adds ``n_images`` and ``n_anomalous``."""
    data = read_detection_folder(scores_dir, category_dir, resize_maps=resize_maps)
    out = detection_metrics(data.image_scores, data.image_labels, data.maps, data.masks, fpr_limit=fpr_limit)
    out["n_images"] = len(data.names)
    out["n_anomalous"] = int(data.image_labels.sum())
    return out
