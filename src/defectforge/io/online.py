"""Synthesis inside a ``torch.utils.data.Dataset``, for DataLoader workers.

Each item ``i`` of epoch ``e`` is synthesised as sample ``e * len(dataset) + i`` of the run seed,
so an epoch is reproducible whatever the number of workers or their order, and every epoch
draws new anomalies.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["SyntheticAnomalyDataset"]


class SyntheticAnomalyDataset(Dataset):
    """Wrap a dataset of normal images and add synthetic anomalies on the fly.

    Parameters
    ----------
    normal : Dataset or sequence
        Items are ``(C, H, W)`` tensors (uint8 or float in [0, 1]), or tuples/dicts whose first
        element / ``"image"`` entry is one.
    synthesizer : Synthesizer or str
        A synthesizer, or a registry name (built with its preset defaults).
    seed : int
        Run seed.

    Examples
    --------
    >>> import torch
    >>> data = SyntheticAnomalyDataset([torch.rand(3, 32, 32) for _ in range(4)], "cutpaste", seed=0)
    >>> item = data[1]
    >>> sorted(item)
    ['image', 'index', 'label', 'mask', 'params']
    """

    def __init__(self, normal, synthesizer, seed: int = 0):
        from ..core.registry import create

        self.normal = normal
        self.synthesizer = create(synthesizer) if isinstance(synthesizer, str) else synthesizer
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the anomalies of ``epoch`` (call it at the start of each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.normal)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.normal[i]
        image = item["image"] if isinstance(item, dict) else item[0] if isinstance(item, (tuple, list)) else item
        index = self.epoch * len(self) + int(i)
        out = self.synthesizer(image[None], seed=self.seed, indices=[index])
        return {"image": out.images[0], "mask": out.masks[0], "label": out.labels[0],
                "index": index, "params": json.dumps(out.params[0], sort_keys=True)}
