"""Best-checkpoint selection without the test set (``defectforge benchmark --select-every N``).

The official SimpleNet, GLASS and PBAS keep the epoch with the best image + pixel AUROC *on the
test set* (UniAD: the best test pixel AUROC), and their published numbers include that choice.
The honest version scores the same criterion on a validation set that holds no test image:

- :data:`VALIDATION_NORMAL_SHARE` of the category's training normals (at least 2) is held out
  (:func:`split_normals`, seed 0: the same images for every seed and row);
- half of them stay normal, the other half get :data:`SELECTION_METHOD`'s image-level anomalies
  (:func:`~defectforge.detectors.feature_level.synthetic_validation_set`): anomalies of another
  kind than the feature-level ones the detector trains on;
- every row of the run folder, the baseline too, trains on the remaining normals only, so that
  the rows stay comparable; the held-out files are recorded in each run's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ...core.seeding import Stream, sample_rng
from ..backbones import Backbone
from ..data import MVTecCategory
from ..feature_level import synthetic_validation_set, validation_criterion
__all__ = ["VALIDATION_NORMAL_SHARE", "SELECTION_METHOD", "Selection", "split_normals", "held_out_selection"]

#: The share of the training normals held out as a validation set's good images, here and in the
#: few-shot validation protocol (:func:`~.fewshot.validation_subset`), whose validation set then
#: keeps the test set's proportions roughly (a third of the defects beside a sixth of the normals).
VALIDATION_NORMAL_SHARE = 1 / 6

#: The image-level method that makes the validation set's anomalies: DRAEM's Perlin-masked texture
#: anomalies, the most generic of the image-level methods (no donor images, no defect bank).
SELECTION_METHOD = "draem"


def split_normals(n: int, seed: int, share: float = VALIDATION_NORMAL_SHARE, minimum: int = 1):
    """``(held out, kept)``: sorted indices of ``n`` training normals, ``max(minimum, round(share * n))``
    of them held out, drawn by a permutation of ``(seed, 0)`` on
    :attr:`~defectforge.core.seeding.Stream.VALIDATION_NORMALS`."""
    n_val = max(int(minimum), int(round(share * n)))
    order = sample_rng(int(seed), 0, int(Stream.VALIDATION_NORMALS)).permutation(n)
    return sorted(int(i) for i in order[:n_val]), sorted(int(i) for i in order[n_val:])


@dataclass
class Selection:
    """How a run keeps its best checkpoint: the validation score, how often, and the record."""

    criterion: Callable[[Any], float]
    every: int
    record: dict[str, Any]


def held_out_selection(data: MVTecCategory, features: dict[str, torch.Tensor] | None, backbone: Backbone | None,
                       every: int, normal_share: float = VALIDATION_NORMAL_SHARE):
    """The training data without the held-out normals, and the :class:`Selection` scored on them.

    Returns
    -------
    (MVTecCategory, dict or None, Selection)
        ``data`` with fewer training images (the test split unchanged), its cached ``features``
        likewise, and the selection.
    """
    if every < 1:
        raise ValueError(f"select_every must be >= 1, got {every}")
    n = data.train.shape[0]
    held, kept = split_normals(n, 0, normal_share, minimum=2)
    if len(kept) < 2:
        raise ValueError(f"best-checkpoint selection holds out {len(held)} of the {n} training normals; too few are "
                         "left to train on")
    images, masks, labels = synthetic_validation_set(data.train[torch.tensor(held)], SELECTION_METHOD, seed=0)
    val_features = backbone.extract(images) if backbone is not None else None
    keep = torch.tensor(kept)
    train = MVTecCategory(root=data.root, size=data.size, train=data.train[keep], test=data.test,
                          test_masks=data.test_masks, test_labels=data.test_labels, test_names=data.test_names,
                          train_files=[data.train_files[i] for i in kept])
    train_features = None if features is None else {"train": features["train"][keep], "test": features["test"]}
    record = {"select_every": int(every), "criterion": "image AUROC + pixel AUROC", "method": SELECTION_METHOD,
              "held_out_normals": [Path(data.train_files[i]).name for i in held], "training_normals": len(kept),
              "validation_images": int(images.shape[0]), "validation_anomalous": int(labels.sum())}
    return train, train_features, Selection(validation_criterion(images, masks, labels, val_features), int(every),
                                            record)
