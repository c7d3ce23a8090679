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
"""

from __future__ import annotations

import torch

from .backbones import Backbone
from .patchcore import PatchCoreBaseline
from .seghead import SegHeadDetector
from .training import TrainingRecord

__all__ = ["ResidualSegDetector"]


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
                 residual_sample: int = 64):
        super().__init__(backbone, width, lr)
        if residual_sample < 1:
            raise ValueError(f"residual_sample must be >= 1, got {residual_sample}")
        self.bank = PatchCoreBaseline(backbone, coreset_ratio=coreset_ratio)
        self.residual_sample = int(residual_sample)
        self.residual_mean = self.residual_std = None

    def fit(self, images: torch.Tensor, synthesizer, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Build the memory bank on the training features, then train the head as ``seghead`` does."""
        if features is None:
            features = self.backbone.extract(images)
        bank_record = self.bank.fit(images, seed=seed, features=features)
        residuals = self._residuals(features[:self.residual_sample].to(self.backbone.device))
        flat = residuals.transpose(0, 1).reshape(residuals.shape[1], -1)
        self.residual_mean = flat.mean(1).view(1, -1, 1, 1)
        self.residual_std = flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1)
        record = super().fit(images, synthesizer, steps, batch_size, seed, features, checkpoint_every, evaluate)
        record.seconds += bank_record.seconds
        return record

    @torch.no_grad()
    def _residuals(self, features: torch.Tensor) -> torch.Tensor:
        """Aggregated patches minus their nearest memory patches, ``(B, C, h, w)``."""
        aggregated = self.bank._aggregate(features.to(self.bank.memory.device))
        _, index = self.bank.nearest(aggregated)
        return aggregated - self.bank.memory[index].permute(0, 3, 1, 2)

    def _input_channels(self, channels: int) -> int:
        return 2 * channels

    def _head_input(self, features: torch.Tensor) -> torch.Tensor:
        residual = (self._residuals(features) - self.residual_mean) / self.residual_std
        return torch.cat([self._standardise(features), residual.to(self.mean.device)], 1)
