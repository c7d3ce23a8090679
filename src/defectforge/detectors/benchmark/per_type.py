"""Detection metrics per defect type, shared by every benchmark run (plain and few-shot)."""

from __future__ import annotations

import torch

from ...metrics.detection import detection_metrics
from ..data import MVTecCategory

__all__ = ["per_type_metrics"]


def per_type_metrics(scores: torch.Tensor, maps: torch.Tensor, data: MVTecCategory) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC and AUPRO per defect type (good test images + that type's images)."""
    types = [n.split("/")[0] for n in data.test_names]
    good = [i for i, t in enumerate(types) if t == "good"]
    out = {}
    for t in sorted(set(types) - {"good"}):
        idx = good + [i for i, x in enumerate(types) if x == t]
        m = detection_metrics(scores[idx].numpy(), data.test_labels[idx].numpy(), maps[idx].numpy(),
                              data.test_masks[idx].numpy())
        out[t] = {k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro")}
    return out
