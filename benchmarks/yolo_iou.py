"""YOLO-seg polygons against their masks, per method: the IoU of each mask and its polygons filled back.

For every image-level method, COUNT samples (seed 0) on the built-in surfaces at SIZE px; each
mask's components become polygons as ``export --format yolo-seg`` writes them (normalised, 6
decimals) and are filled back with ``cv2.fillPoly`` (as Ultralytics rasterises labels). Printed
per method: the minimum and mean IoU with the outer contour only (the export before holes were
bridged) and with holes bridged (now). Methods that need real defects or a model get the tests'
tiny bank or tiny random model (their masks do not depend on the model).

    python benchmarks/yolo_iou.py 64 128
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import torch

import defectforge
from defectforge.pipelines.dataset_objects import component_polygon, mask_components
from defectforge.sources.procedural import surface

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import method_for_tests  # noqa: E402  (the tiny bank and models of the tests)


def outer_contour(component: np.ndarray) -> np.ndarray:
    """The export before holes were bridged: the outer contour only."""
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contour = max(contours, key=len)[:, 0, :]
    if len(contour) >= 3:
        return contour
    ys, xs = np.nonzero(component)
    return np.array([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]])


def iou(mask: np.ndarray, polygon_of) -> float:
    h, w = mask.shape
    drawn = np.zeros((h, w), np.uint8)
    for component in mask_components(mask):
        xy = np.round(polygon_of(component).astype(float) / [w, h], 6)      # what a label file holds
        cv2.fillPoly(drawn, [np.round(xy * [w, h]).astype(np.int32)], 1)
    return float((mask & (drawn > 0)).sum() / (mask | (drawn > 0)).sum())


def main() -> None:
    count, size = int(sys.argv[1]), int(sys.argv[2])
    kinds = ["metal", "fabric", "wood", "tiles"]
    images = torch.from_numpy(np.stack([surface(kinds[i % 4], size, seed=i) for i in range(count)]))
    images = images.permute(0, 3, 1, 2).contiguous()
    print("| method | masks | outer contour only: min / mean | holes bridged: min / mean |")
    print("|---|---|---|---|")
    for name in defectforge.list_methods(level="image"):
        masks = (method_for_tests(name, anomaly_probability=1.0)(images, seed=0).masks[:, 0] > 0.5).numpy()
        before = [iou(m, outer_contour) for m in masks if m.any()]
        after = [iou(m, component_polygon) for m in masks if m.any()]
        print(f"| {name} | {len(after)} | {min(before):.3f} / {np.mean(before):.3f} | "
              f"{min(after):.3f} / {np.mean(after):.3f} |", flush=True)


if __name__ == "__main__":
    main()
