"""``fusion``: a supervised head and the normal memory, each standardised on normal images, added.

Few real defects teach a segmentation head what defects look like; a PatchCore memory of the
normal patches knows what the normal surface looks like and needs no defect at all. Measured in
this library (``docs/benchmark.md``, few-shot protocol), each wins where the other loses: the head
trained on the real third (``real_only``) has the higher pixel AP, ``patchcore`` the higher AUPRO on
a textured surface with small defects. Combining an unsupervised normality score with a supervised
one is what SuperSimpleNet (Rolih et al., ICPR 2024) and PRN (Zhang et al., CVPR 2023) do inside one
network; here the two stay separate models and their scores are fused after the fact, the simplest
combination with no parameter fitted on anomalies:

``score = z(logit(head)) + patchcore_weight * z(patchcore distance)``

``z`` standardises a map by the mean and standard deviation of its values over ``normal_sample``
training images (seeded by the run's seed), so both terms are in units of their own spread on
normal surface; the head's probability is taken as a logit first, so a confident head and a far
patch add on the same scale. ``patchcore_weight`` 1 (equal weight) is the default: no choice tuned
on a test set. The head is ``seghead`` (:mod:`.seghead`: frozen backbone, focal + L1 loss, trained
on the run's training source: real defects, synthesis or a mixture) and the memory is
``patchcore``'s (:mod:`.patchcore`, same seed), both on the same cached features. The image score
is the fused map's maximum.

The statistics come from training images, which the head saw as normal and the memory was built
from, so both terms are a little lower there than on new normal images; the bias is of the same
kind for both and only the ratio of the two spreads matters for the ranking.
"""

from __future__ import annotations

import time

import torch

from ..core.seeding import torch_generator
from .backbones import Backbone
from .base import DetectorBase
from .patchcore import PatchCoreBaseline
from .seghead import SegHeadDetector
from .training import TrainingRecord, scoring_features

__all__ = ["FusionDetector"]


def _logit(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.logit(p.clamp(eps, 1 - eps))


class FusionDetector(DetectorBase):
    """``seghead`` + ``patchcore``, standardised on normal images and added (see the module docstring).

    Parameters
    ----------
    backbone : Backbone
        Frozen feature extractor shared by both parts.
    width, lr : int, float
        The head's (as :class:`~defectforge.detectors.seghead.SegHeadDetector`).
    patchcore_weight : float
        Weight of the standardised PatchCore distance (1: equal weight; 0: the head alone).
    normal_sample : int
        Training images whose maps set each term's mean and standard deviation.
    head_scale : str
        ``"logit"`` (default): the head's probability as a logit, so both terms spread alike;
        ``"probability"``: the probability itself, whose spread on normal images is tiny, so a
        confident head decides and the memory orders what the head leaves near zero.

    Examples
    --------
    >>> import torch
    >>> from defectforge.detectors import load_backbone
    >>> det = FusionDetector(load_backbone("tiny"))
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> record = det.fit(train, "cutpaste", steps=2, batch_size=4, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "fusion"
    kind = "image"
    uses_backbone_features = True

    def __init__(self, backbone: Backbone, width: int = 64, lr: float = 1e-3, patchcore_weight: float = 1.0,
                 normal_sample: int = 64, head_scale: str = "logit"):
        if head_scale not in ("logit", "probability"):
            raise ValueError(f"head_scale must be 'logit' or 'probability', got {head_scale!r}")
        self.head_scale = head_scale
        if not patchcore_weight >= 0:
            raise ValueError(f"patchcore_weight must be >= 0, got {patchcore_weight}")
        if normal_sample < 2:
            raise ValueError(f"normal_sample must be >= 2, got {normal_sample}")
        self.backbone = backbone
        self.head = SegHeadDetector(backbone, width, lr)
        self.memory = PatchCoreBaseline(backbone)
        self.patchcore_weight = float(patchcore_weight)
        self.normal_sample = int(normal_sample)
        self.stats: dict[str, tuple[float, float]] = {}

    def fit(self, images: torch.Tensor, synthesizer, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Train the head, build the memory, then measure both terms on ``normal_sample`` training images."""
        if features is None:
            features = self.backbone.extract(images)
        record = self.head.fit(images, synthesizer, steps, batch_size, seed, features, checkpoint_every, evaluate)
        start = time.perf_counter()
        self.memory.fit(images, seed=seed, features=features)
        pick = torch.randperm(features.shape[0], generator=torch_generator(seed))[:self.normal_sample]
        size = images.shape[-1]
        head, memory = self._terms(features[pick], size)
        self.stats = {"head": (float(head.mean()), float(head.std().clamp_min(1e-6))),
                      "memory": (float(memory.mean()), float(memory.std().clamp_min(1e-6)))}
        record.seconds += time.perf_counter() - start
        return record

    def _terms(self, features: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        head = self.head.score_maps(features=features, size=size)
        return (_logit(head) if self.head_scale == "logit" else head), self.memory.score_maps(features=features, size=size)

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 64) -> torch.Tensor:
        """``(N, size, size)`` fused maps (standardised units, not probabilities)."""
        if not self.stats:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        head, memory = self._terms(features, size)
        (mh, sh), (mm, sm) = self.stats["head"], self.stats["memory"]
        return (head - mh) / sh + self.patchcore_weight * (memory - mm) / sm
