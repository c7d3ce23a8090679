"""Detection metrics per defect type, shared by every benchmark run (plain and few-shot)."""

from __future__ import annotations

import torch

from ...metrics.detection import detection_metrics
from ..data import MVTecCategory

__all__ = ["FEW_SHOT_METRICS", "per_type_metrics"]

#: Metrics of the few-shot tables, overall and per defect type: the papers' pixel AP and F1-max
#: beside image AUROC, pixel AUROC and AUPRO.
FEW_SHOT_METRICS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro")


def per_type_metrics(scores: torch.Tensor, maps: torch.Tensor, data: MVTecCategory) -> dict[str, dict[str, float]]:
    """:data:`FEW_SHOT_METRICS` per defect type (good test images + that type's images)."""
    types = [n.split("/")[0] for n in data.test_names]
    good = [i for i, t in enumerate(types) if t == "good"]
    out = {}
    for t in sorted(set(types) - {"good"}):
        idx = good + [i for i, x in enumerate(types) if x == t]
        m = detection_metrics(scores[idx].numpy(), data.test_labels[idx].numpy(), maps[idx].numpy(),
                              data.test_masks[idx].numpy())
        out[t] = {k: m[k] for k in FEW_SHOT_METRICS}
    return out
