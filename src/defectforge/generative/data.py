"""Training data of the small generators: normal images (or patches), and real-defect crops with masks.

- Normal: every image of a folder (or an MVTec-AD category's ``train/good``), resized to
  ``size x size`` (area interpolation), or ``patches`` random square crops of ``patch`` px per
  image (drawn from a generator seeded by ``seed``), resized to ``size``.
- Defects: per defect type of an MVTec-AD category (or any labelled folder
  :mod:`defectforge.io.annotations` reads), the few-shot split of the generative papers
  (DFMGAN, AnomalyDiffusion: one third of each type's anomalies trains the generator, the rest is
  held out): the split of :class:`~defectforge.sources.defects.FewShotSplit` (the one the
  real-defect methods and ``benchmark --few-shot`` use, so for the same spec and split seed a
  generator never sees a benchmark test image), written next to the run (``split.json``); each
  training image gives one square crop around the bounding box of its mask (side ``context`` x the
  box's longer side, at least ``min_crop`` px, kept inside the image), resized to ``size``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..io.images import list_images, read_image
from ..io.mvtec import is_mvtec_category

__all__ = ["load_normal_images", "load_defect_crops", "DefectCrops", "square_crop_box"]


def _resize(image: np.ndarray, size: int, interpolation=cv2.INTER_AREA) -> np.ndarray:
    out = cv2.resize(image, (size, size), interpolation=interpolation)
    return out[..., None] if out.ndim == 2 else out


def load_normal_images(data: str | os.PathLike, size: int, channels: int, patch: int | None = None,
                       patches: int = 4, seed: int = 0) -> torch.Tensor:
    """``(N, C, size, size)`` uint8: the normal images of ``data``, or random patches of them."""
    root = Path(data)
    folder = root / "train" / "good" if is_mvtec_category(root) else root
    files = list_images(folder, what="training data folder")
    if not files:
        raise ValueError(f"{folder} holds no images")
    rng = np.random.default_rng(seed)
    out = []
    for f in files:
        img = read_image(f, channels=channels)
        if patch is None:
            out.append(_resize(img, size))
            continue
        h, w = img.shape[:2]
        p = min(patch, h, w)
        for _ in range(patches):
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            out.append(_resize(img[y:y + p, x:x + p], size))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def square_crop_box(mask: np.ndarray, context: float = 1.5, min_crop: int = 32) -> tuple[int, int, int]:
    """``(y0, x0, side)`` of a square around the mask's bounding box, inside the image.

    Examples
    --------
    >>> m = np.zeros((100, 100), bool); m[40:50, 45:48] = True
    >>> square_crop_box(m, 2.0, 8)
    (35, 36, 20)
    """
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    side = int(min(max(math.ceil(context * max(bh, bw)), min_crop), h, w))
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    y0 = int(np.clip(round(cy - side / 2), 0, h - side))
    x0 = int(np.clip(round(cx - side / 2), 0, w - side))
    return y0, x0, side


@dataclass
class DefectCrops:
    """Defect crops: ``images`` ``(N, C, S, S)`` uint8, ``masks`` ``(N, 1, S, S)`` {0, 1} float, type per crop.

    ``extents`` ``(N, 2)``: each crop's side as a share of its source image's height and width (the
    size a generated crop of that type is given when placed on an image).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    types: list[str]
    split: dict = field(default_factory=dict)
    extents: torch.Tensor | None = None


def load_defect_crops(data: str | os.PathLike, size: int, channels: int, few_shot: str = "1/3",
                      split_seed: int = 0, context: float = 1.5, min_crop: int = 32) -> DefectCrops:
    """Crops of the few-shot training defects of a labelled set (see the module docstring).

    ``data``: an MVTec-AD category or any labelled folder :mod:`defectforge.io.annotations` reads
    (labelme, COCO, YOLO-seg, mask folders; the format detected), split as a
    :class:`~defectforge.sources.defects.DefectBank` of it is. ``few_shot``: a fraction (``"1/3"``)
    or a count per type, as :func:`~defectforge.sources.defects.parse_few_shot`.
    """
    from ..io.annotations import read_annotations
    from ..sources.defects import FewShotSplit

    root = Path(data)
    labelled = read_annotations(root)
    by_name = {im.name: im for im in labelled.defects}
    if not by_name:
        raise ValueError(f"{root} holds no defect image with a mask or annotation (read as {labelled.format}); "
                         "defect crops need real defects with masks")
    groups: dict[str, list[str]] = {}
    for name, im in by_name.items():
        groups.setdefault(im.group, []).append(name)
    split = FewShotSplit.make(root, groups, few_shot, split_seed)
    # an MVTec mask is read as before: grey above 127 (other formats: their own rule)
    mvtec_mask = (lambda path: (read_image(path, channels=1)[..., 0] > 127).astype(np.uint8)) \
        if labelled.format == "mvtec" else None
    types = sorted(split.train)
    images, masks, labels, extents = [], [], [], []
    for label, kind in enumerate(types):
        for rel in split.train[kind]:
            im = by_name[rel]
            img = read_image(im.path, channels=channels)
            drawn = im.type_masks(img.shape[0], img.shape[1], mvtec_mask, check_empty=labelled.format != "mvtec")
            mask = np.logical_or.reduce(list(drawn.values()))
            if not mask.any():
                continue
            y0, x0, side = square_crop_box(mask, context, min_crop)
            images.append(_resize(img[y0:y0 + side, x0:x0 + side], size))
            m = cv2.resize(mask[y0:y0 + side, x0:x0 + side].astype(np.uint8), (size, size),
                           interpolation=cv2.INTER_NEAREST)
            masks.append(m[None].astype(np.float32))
            labels.append(label)
            extents.append((side / mask.shape[0], side / mask.shape[1]))
    return DefectCrops(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                       torch.from_numpy(np.stack(masks)), torch.tensor(labels), types, split.as_dict(),
                       torch.tensor(extents, dtype=torch.float32))
