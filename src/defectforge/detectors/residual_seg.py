"""``residual_seg``: the ``seghead`` detector given, beside each feature, its residual to the nearest
normal patch of a PatchCore memory bank.

The image-level synthesis methods are judged by a detector trained on their anomalies. ``seghead``
sees the backbone features only, so it must learn what normal looks like from the synthetic
contrast alone; ``patchcore`` (no synthesis) knows the normal patches but learns nothing from
anomalies. This detector does both, after Prototypical Residual Networks (Zhang, Wu, Wang, Chen,
Jiang, "Prototypical Residual Networks for Anomaly Detection and Localization", CVPR 2023: a
segmentation network on the residuals between a patch's features and its nearest normal
prototypes, trained on synthetic anomalies) and DeSTSeg (Zhang, Li, Li, Huang, Shan, Chen, CVPR
2023: a segmentation network on a student-teacher discrepancy, trained on synthetic anomalies):

- the memory bank is ``patchcore``'s, built on the same training features with the same seed
  (3x3-aggregated patches, greedy coreset of 1%);
- the head (``seghead``'s: 1x1 adaptor, two 3x3 convolutions, a logit per cell; focal + L1 loss
  against the synthetic mask on the feature grid) takes ``[standardised features, standardised
  residual]``, the residual being the aggregated patch minus its nearest memory patch;
- everything else is ``seghead``'s: the batches (half normal, half the method's anomalies), the
  steps, the map (sigmoid, upsampled, Gaussian sigma 4) and the image score (its maximum).

Differences from PRN: one scale (the benchmark's stride-8 features) instead of its multi-scale
residuals, PatchCore's coreset patches as the prototypes instead of PRN's cluster centres, ``seghead``'s small head instead of PRN's attention and decoder, and no
real anomalies. So ``residual_seg`` trained with a method's anomalies against ``patchcore`` (the
same bank, no training) measures what that synthesis adds to a normality model.

Cost: the nearest-patch search is the expensive part (one matrix product with the memory per
patch), so the bank and the residuals of the training and test features are computed once and
kept for the process (keyed by the features and the seed: a benchmark's runs of one seed share
them). A synthetic training image's residuals are searched again only at the feature cells its
anomaly changed (any channel moved by more than :data:`CHANGE_TOLERANCE` standard deviations, and
their 3x3 aggregation neighbours); elsewhere its source image's cached residuals are used.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .patchcore import PatchCoreBaseline
from .seghead import SegHead, SegHeadDetector
from .training import TrainingRecord, maps_from_cells, scoring_features

__all__ = ["ResidualSegDetector", "CHANGE_TOLERANCE"]

#: A synthetic image's feature cell counts as changed by its anomaly when a channel differs from
#: the source image's cached feature by more than this many standard deviations (the cache is
#: float16, so unchanged cells differ by rounding, about 1e-3 of a deviation).
CHANGE_TOLERANCE = 0.02
#: Banks and residual tensors kept for the process (a benchmark needs the train and test residuals
#: of one seed at a time; the bank of that seed).
_CACHE: OrderedDict[tuple, torch.Tensor] = OrderedDict()
_CACHE_SIZE = 6


def _fingerprint(features: torch.Tensor) -> str:
    """A cheap content key of a feature tensor (its shape and a strided sample of its values)."""
    h = hashlib.sha1(str((tuple(features.shape), str(features.dtype))).encode())
    h.update(features[:, :, ::5, ::7].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _cached(key: tuple, make):
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    value = make()
    _CACHE[key] = value
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


class AnchoredHead(nn.Module):
    """``seghead``'s head whose logit is ``w * z + b + head(x)`` (``z``: the input's last channel);
    the head's last layer starts at zero, ``w`` at 1 and ``b`` at 0."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        self.net = SegHead(channels, width).net
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.weight = nn.Parameter(torch.ones(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs[:, :-1]) + self.weight * inputs[:, -1:] + self.bias


class ResidualSegDetector(SegHeadDetector):
    """``seghead`` on features and their residuals to a PatchCore memory bank (see the module docstring).

    Parameters
    ----------
    backbone : Backbone
        Frozen feature extractor.
    width, lr : int, float
        As :class:`~defectforge.detectors.seghead.SegHeadDetector`.
    coreset_ratio : float
        Share of the training patches kept in the memory bank (``patchcore``'s 1%).
    residual_sample : int
        Training images whose residuals set the residual's standardisation (per channel mean, std).
    with_features : bool
        Give the head the standardised features beside the residuals (PRN fuses both); ``False``:
        the residuals only.
    anchored : bool
        The head's logit is ``w * z + b + head(...)`` with ``z`` the standardised distance to the
        nearest memory patch (``patchcore``'s score), ``w = 1``, ``b = 0`` and the head's last layer
        zero at the start: training starts from ``patchcore``'s ranking (and may move far from it:
        docs/benchmark.md measures how far, step by step).

    Examples
    --------
    >>> import torch
    >>> from defectforge.detectors import load_backbone
    >>> det = ResidualSegDetector(load_backbone("tiny"))
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> record = det.fit(train, "cutpaste", steps=2, batch_size=4, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape), det.bank.memory.shape[0] >= 1
    ((2, 64, 64), True)
    """

    name = "residual_seg"

    def __init__(self, backbone: Backbone, width: int = 64, lr: float = 1e-3, coreset_ratio: float = 0.01,
                 residual_sample: int = 64, with_features: bool = True, anchored: bool = False):
        super().__init__(backbone, width, lr)
        self.with_features = bool(with_features)
        self.anchored = bool(anchored)
        self.distance_mean = self.distance_std = None
        if residual_sample < 1:
            raise ValueError(f"residual_sample must be >= 1, got {residual_sample}")
        self.bank = PatchCoreBaseline(backbone, coreset_ratio=coreset_ratio)
        self.residual_sample = int(residual_sample)
        self.residual_mean = self.residual_std = None
        self._bank_key: tuple | None = None
        self._train_features = self._train_residuals = None

    def fit(self, images: torch.Tensor, synthesizer, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Build the memory bank on the training features, then train the head as ``seghead`` does."""
        start = time.perf_counter()
        if features is None:
            features = self.backbone.extract(images)
        bank = self.bank
        self._bank_key = ("bank", _fingerprint(features), int(seed), bank.coreset_ratio, bank.max_pool,
                          bank.projection_dim, bank.neighbourhood, str(self.backbone.device))

        def build():
            bank.fit(images, seed=seed, features=features)
            return bank.memory

        bank.memory = _cached(self._bank_key, build)
        self._train_features = features
        self._train_residuals = self.residuals(features)
        flat = self._train_residuals[:self.residual_sample].float()
        flat = flat.transpose(0, 1).reshape(flat.shape[1], -1)
        device = self.backbone.device
        self.residual_mean = flat.mean(1).view(1, -1, 1, 1).to(device)
        self.residual_std = flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1).to(device)
        distances = flat.norm(dim=0)
        self.distance_mean, self.distance_std = float(distances.mean()), float(distances.std().clamp_min(1e-6))
        prepared = time.perf_counter() - start
        record = super().fit(images, synthesizer, steps, batch_size, seed, features, checkpoint_every, evaluate)
        record.seconds += prepared
        return record

    @torch.no_grad()
    def _residuals(self, features: torch.Tensor) -> torch.Tensor:
        """Aggregated patches minus their nearest memory patches, ``(B, C, h, w)`` float32."""
        aggregated = self.bank._aggregate(features.to(self.bank.memory.device))
        _, index = self.bank.nearest(aggregated)
        return aggregated - self.bank.memory[index].permute(0, 3, 1, 2)

    def residuals(self, features: torch.Tensor, chunk: int = 32) -> torch.Tensor:
        """:meth:`_residuals` of every image of ``features`` (float16, on the CPU), computed once per bank."""
        if self._bank_key is None:
            raise RuntimeError("call fit() before residuals()")
        return _cached(self._bank_key + ("residuals", _fingerprint(features)), lambda: torch.cat(
            [self._residuals(features[s:s + chunk]).half().cpu() for s in range(0, features.shape[0], chunk)]))

    def _input_channels(self, channels: int) -> int:
        return (2 * channels if self.with_features else channels) + int(self.anchored)

    def _make_head(self, channels: int) -> nn.Module:
        return AnchoredHead(channels - 1, self.width) if self.anchored else super()._make_head(channels)

    def _combine(self, features: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        raw = residuals.to(self.mean.device).float()
        residuals = (raw - self.residual_mean) / self.residual_std
        parts = [self._standardise(features), residuals] if self.with_features else [residuals]
        if self.anchored:  # the distance to the nearest memory patch, last channel
            parts.append((raw.norm(dim=1, keepdim=True) - self.distance_mean) / self.distance_std)
        return torch.cat(parts, 1)

    def _head_input(self, features: torch.Tensor) -> torch.Tensor:
        return self._combine(features, self._residuals(features))

    @torch.no_grad()
    def _train_input(self, features: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """Residuals of the sources' cache, searched again only where the batch's features changed."""
        device = features.device
        base = self._train_features[sources].to(device).float()
        residuals = self._train_residuals[sources].to(device).float()
        changed = (((features.float() - base).abs() / self.std).amax(1, keepdim=True) > CHANGE_TOLERANCE).float()
        k = self.bank.neighbourhood
        if k > 1:  # an aggregated patch changes when any cell of its neighbourhood does
            changed = F.max_pool2d(changed, k, stride=1, padding=k // 2)
        where = changed[:, 0] > 0
        if where.any():  # residuals is this call's own copy: overwrite its changed cells
            patches = self.bank._aggregate(features.float()).permute(0, 2, 3, 1)[where]
            _, index = self.bank.nearest_rows(patches)
            residuals.permute(0, 2, 3, 1)[where] = patches - self.bank.memory[index]
        return self._combine(features, residuals)

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 64) -> torch.Tensor:
        """``(N, size, size)`` anomaly maps (the head's probabilities, upsampled and smoothed)."""
        if self.head is None:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        residuals = self.residuals(features)
        self.head.eval()
        device = self.mean.device

        def cells(index):
            return torch.sigmoid(self.head(self._combine(features[index].to(device), residuals[index])))

        return maps_from_cells(torch.arange(features.shape[0]), size, cells, chunk)
