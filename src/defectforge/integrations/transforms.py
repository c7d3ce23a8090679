"""Synthesis inside the user's augmentation pipeline, one sample at a time.

- :class:`SynthesizeTransform`: a ``torch.nn.Module`` in the style of torchvision's v2
  transforms: a ``(C, H, W)`` tensor in, ``(image, mask, label)`` out; or a dict (``"image"``,
  optional ``"mask"`` and ``"index"``) in, the same dict with ``image``, ``mask``, ``label`` and
  ``params`` out, so it composes with ``torchvision.transforms.v2.Compose`` and dataset dicts.
- :class:`AlbumentationsSynthesis`: albumentations' calling convention:
  ``t(image=hwc_uint8, mask=None, index=i)`` returns a dict with ``image`` (H, W, C), ``mask``
  (H, W) uint8, ``label`` and ``params``.

Seeded per sample: the sample's index (``index=``, or the dict's ``"index"``) and the seed decide
the anomaly, as everywhere in defectforge. Without an index the transform numbers the calls of
its process itself (``call * num_workers + worker_id`` inside a DataLoader worker), which is
reproducible for a fixed ``num_workers``; pass the index to be independent of it.
A mask already in the input (a real defect, say) is united with the synthetic one.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

__all__ = ["SynthesizeTransform", "AlbumentationsSynthesis"]


class _PerSample:
    def __init__(self, synthesizer, seed: int = 0, **overrides):
        from ..core.registry import create
        from ..core.validation import check_range

        if isinstance(synthesizer, str):
            synthesizer = create(synthesizer, **overrides)
        elif overrides:
            raise TypeError("constructor arguments go with a method name, not a built synthesizer")
        self.synthesizer = synthesizer
        self.seed = int(check_range("seed", seed, 0, None, integer=True))
        self._calls = 0

    def _next_index(self) -> int:
        info = torch.utils.data.get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        index = self._calls * workers + worker
        self._calls += 1
        return index

    def synthesize(self, image: torch.Tensor, index: int | None):
        """``image`` (C, H, W) -> (image, mask (1, H, W), label, params) of sample ``index``."""
        if not torch.is_tensor(image) or image.dim() != 3:
            raise ValueError(f"image must be a (C, H, W) tensor, got {getattr(image, 'shape', type(image))}")
        index = self._next_index() if index is None else int(index)
        out = self.synthesizer(image[None], seed=self.seed, indices=[index])
        return out.images[0], out.masks[0], int(out.labels[0]), out.params[0]


def _unite(mask: torch.Tensor, given) -> torch.Tensor:
    if given is None:
        return mask
    given = torch.as_tensor(given).to(mask.device)
    if given.dim() == 2:
        given = given[None]
    return torch.maximum(mask, (given > 0).to(mask.dtype))


class SynthesizeTransform(torch.nn.Module):
    """A torchvision-v2-style transform adding one synthetic anomaly per sample.

    Parameters
    ----------
    synthesizer : Synthesizer or str
        A synthesizer or a registry name; ``**overrides`` are its constructor arguments.
    seed : int
        Run seed.

    Examples
    --------
    >>> import torch
    >>> t = SynthesizeTransform("cutpaste", seed=0)
    >>> image, mask, label = t(torch.rand(3, 64, 64))
    >>> tuple(mask.shape), label
    ((1, 64, 64), 1)
    >>> sample = t({"image": torch.rand(3, 64, 64), "index": 7})
    >>> sorted(sample)
    ['image', 'index', 'label', 'mask', 'params']
    """

    def __init__(self, synthesizer="draem", seed: int = 0, **overrides):
        super().__init__()
        self._impl = _PerSample(synthesizer, seed, **overrides)

    @property
    def synthesizer(self):
        return self._impl.synthesizer

    def forward(self, sample, index: int | None = None):
        if isinstance(sample, dict):
            image, mask, label, params = self._impl.synthesize(sample["image"], sample.get("index", index))
            out = dict(sample)
            out.update(image=image, mask=_unite(mask, sample.get("mask")), label=label,
                       params=json.dumps(params, sort_keys=True))
            return out
        image, mask, label, _ = self._impl.synthesize(sample, index)
        return image, mask, label


class AlbumentationsSynthesis:
    """albumentations' convention: ``t(image=..., mask=..., index=...)`` -> dict.

    Examples
    --------
    >>> import numpy as np
    >>> t = AlbumentationsSynthesis("cutpaste", seed=0)
    >>> out = t(image=np.zeros((64, 64, 3), np.uint8), index=3)
    >>> out["image"].shape, out["mask"].dtype, out["label"]
    ((64, 64, 3), dtype('uint8'), 1)
    """

    def __init__(self, synthesizer="draem", seed: int = 0, **overrides):
        self._impl = _PerSample(synthesizer, seed, **overrides)

    @property
    def synthesizer(self):
        return self._impl.synthesizer

    def __call__(self, *, image: np.ndarray, mask: np.ndarray | None = None, index: int | None = None,
                 **rest: Any) -> dict[str, Any]:
        array = np.asarray(image)
        if array.ndim == 2:
            array = array[..., None]
        if array.ndim != 3:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        out_image, out_mask, label, params = self._impl.synthesize(tensor, index)
        united = _unite(out_mask, None if mask is None else torch.from_numpy(np.asarray(mask)))
        result = dict(rest)
        picture = out_image.permute(1, 2, 0).numpy()
        result.update(image=picture[..., 0] if np.asarray(image).ndim == 2 else picture,
                      mask=(united[0] > 0.5).numpy().astype(np.uint8), label=label, params=params)
        return result
