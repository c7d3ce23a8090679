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

from ..core.dtype import to_uint8

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
    foreground : str or spec, optional
        Region of interest estimated per image (``"otsu"``, ``"saliency"``, a
        :class:`~defectforge.sources.foreground.Threshold`...); defects stay inside it.
    donor_pool : int
        Methods that cut from other normal images (NSA, DefectMaker) get this many other items,
        drawn by the sample's seed (resized to the item's size when they differ).

    Examples
    --------
    >>> import torch
    >>> data = SyntheticAnomalyDataset([torch.rand(3, 32, 32) for _ in range(4)], "cutpaste", seed=0)
    >>> item = data[1]
    >>> sorted(item)
    ['image', 'index', 'label', 'mask', 'params']
    """

    def __init__(self, normal, synthesizer, seed: int = 0, foreground=None, donor_pool: int = 4):
        from ..core.registry import create
        from ..sources.foreground import parse_foreground

        self.normal = normal
        self.synthesizer = create(synthesizer) if isinstance(synthesizer, str) else synthesizer
        self.seed = int(seed)
        self.epoch = 0
        self.foreground = parse_foreground(foreground) if isinstance(foreground, str) else foreground
        self.donor_pool = int(donor_pool)

    def set_epoch(self, epoch: int) -> None:
        """Draw the anomalies of ``epoch`` (call it at the start of each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.normal)

    def _image(self, i: int) -> torch.Tensor:
        item = self.normal[i]
        return item["image"] if isinstance(item, dict) else item[0] if isinstance(item, (tuple, list)) else item

    def _donors(self, index: int, i: int, like: torch.Tensor) -> torch.Tensor | None:
        from ..core.seeding import donor_indices

        picks = donor_indices(self.seed, index, len(self), exclude=i, pool_size=self.donor_pool)
        if not picks or not self.synthesizer.uses_donors:
            return None
        donors = []
        for p in picks:
            d = self._image(p)
            if d.dtype == torch.uint8 and like.dtype != torch.uint8:
                d = d.float().div(255.0).to(like.dtype)
            elif like.dtype == torch.uint8 and d.dtype != torch.uint8:
                d = to_uint8(d)
            else:
                d = d.to(like.dtype)
            if d.shape[0] != like.shape[0]:
                d = d[:1] if like.shape[0] == 1 else d.expand(3, -1, -1)
            if d.shape[-2:] != like.shape[-2:]:
                d = torch.nn.functional.interpolate(d[None].float(), size=like.shape[-2:], mode="bilinear",
                                                    align_corners=False)[0].to(like.dtype)
            donors.append(d)
        return torch.stack(donors)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self._image(i)
        index = self.epoch * len(self) + int(i)
        foreground = None
        if self.foreground is not None:
            from ..sources.foreground import foreground_batch

            foreground = foreground_batch(image[None], self.foreground)
        out = self.synthesizer(image[None], seed=self.seed, indices=[index], foreground=foreground,
                               donors=self._donors(index, int(i), image))
        result = {"image": out.images[0], "mask": out.masks[0], "label": out.labels[0],
                  "index": index, "params": json.dumps(out.params[0], sort_keys=True)}
        for key, value in out.extras.items():  # soft masks, reconstruction targets
            result[key] = value[0]
        return result
