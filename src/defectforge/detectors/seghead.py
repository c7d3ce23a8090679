"""``seghead``: a frozen ImageNet backbone plus a small segmentation head trained on synthetic
anomalies.

In the spirit of SuperSimpleNet's supervised path (Rolih, Fučka, Skočaj, "SuperSimpleNet:
Unifying Unsupervised and Supervised Learning for Fast and Reliable Surface Defect Detection",
ICPR 2024; github.com/blaz-r/SuperSimpleNet): mid-level backbone features (stride 8 and 16,
upsampled and concatenated), a 1x1 feature adaptor, a few convolutions, one logit per feature
cell, trained with focal + L1 loss against the synthetic mask averaged onto the feature grid.
Differences, deliberate: the anomalies are synthesised in image space by the method under test
(SuperSimpleNet perturbs features), and there is no separate classification head: the image
score is the maximum of the smoothed map, so that every synthesis method is judged by the same
detector.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import Backbone
from .base import DetectorBase
from .training import TrainingBatches, TrainingRecord, focal_l1_loss, maps_from_cells, scoring_features

__all__ = ["SegHead", "SegHeadDetector"]


class SegHead(nn.Module):
    """1x1 adaptor, two 3x3 convolutions, a 1x1 logit (on standardised backbone features)."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, features):
        return self.net(features)


class SegHeadDetector(DetectorBase):
    """Frozen backbone + trainable :class:`SegHead`.

    Parameters
    ----------
    backbone : Backbone
        Frozen feature extractor (see :func:`~defectforge.detectors.load_backbone`).
    width : int
        Channels of the head (64).
    lr : float
        Adam learning rate (1e-3, SuperSimpleNet's ``lr`` for its heads is 2e-4 with 300 epochs;
        a larger rate converges within the few hundred steps of the benchmark, see docs/benchmark.md).

    Examples
    --------
    >>> import torch
    >>> from defectforge.detectors import load_backbone
    >>> det = SegHeadDetector(load_backbone("tiny"))
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> record = det.fit(train, "cutpaste", steps=2, batch_size=4, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "seghead"
    kind = "image"
    uses_backbone_features = True

    def __init__(self, backbone: Backbone, width: int = 64, lr: float = 1e-3):
        self.backbone = backbone
        self.width = int(width)
        self.lr = float(lr)
        self.head: SegHead | None = None
        self.mean = self.std = None

    def _standardise(self, features: torch.Tensor) -> torch.Tensor:
        return (features.to(self.mean.device).float() - self.mean) / self.std

    def fit(self, images: torch.Tensor, synthesizer, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Train the head for ``steps`` steps of ``batch_size`` (half normal, half synthetic).

        ``features`` are the backbone features of ``images`` when already computed (the
        normal half of each batch then costs no backbone pass). ``evaluate(detector)`` is called
        every ``checkpoint_every`` steps and its dict stored in the record's checkpoints.
        """
        start = time.perf_counter()
        record = TrainingRecord(steps=int(steps), batch_size=int(batch_size))
        if features is None:
            t = time.perf_counter()
            features = self.backbone.extract(images)
            record.feature_seconds += time.perf_counter() - t
        flat = features.float().transpose(0, 1).reshape(features.shape[1], -1)
        device = self.backbone.device
        self.mean = flat.mean(1).view(1, -1, 1, 1).to(device)
        self.std = flat.std(1).clamp_min(1e-6).view(1, -1, 1, 1).to(device)
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global state untouched
            torch.manual_seed(int(seed))
            self.head = self._make_head(self._input_channels(features.shape[1])).to(device)
        optimiser = torch.optim.Adam(self.head.parameters(), lr=self.lr)
        batches = TrainingBatches(images, synthesizer, batch_size, seed, device)
        grid = features.shape[-2:]
        for step in range(int(steps)):
            normal_idx, synth_idx = batches.indices()
            synth_images, masks = batches.synthesize(step, synth_idx)
            t = time.perf_counter()
            synth_features = self.backbone(synth_images)
            record.feature_seconds += time.perf_counter() - t
            x = torch.cat([features[normal_idx].to(device).float(), synth_features])
            target = torch.cat([torch.zeros(normal_idx.shape[0], 1, *grid, device=device),
                                F.adaptive_avg_pool2d(masks.to(device), grid)])
            self.head.train()
            loss = focal_l1_loss(self.head(self._train_input(x, torch.cat([normal_idx, synth_idx]))), target)
            record.optimise(loss, optimiser, step, evaluate, checkpoint_every, self)
        return record.finish(start, batches.synthesis_seconds)

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 64) -> torch.Tensor:
        """``(N, size, size)`` anomaly maps (probabilities, upsampled and smoothed)."""
        if self.head is None:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        self.head.eval()
        return maps_from_cells(features, size, lambda f: torch.sigmoid(self.head(self._head_input(f))), chunk)

    def _make_head(self, channels: int) -> nn.Module:
        """The trainable head for inputs of ``channels`` channels (drawn from the seeded generator)."""
        return SegHead(channels, self.width)

    def _input_channels(self, channels: int) -> int:
        """Channels the head takes for backbone features of ``channels`` channels."""
        return channels

    def _head_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the head sees of a batch of backbone features: the standardised features."""
        return self._standardise(features)

    def _train_input(self, features: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        """:meth:`_head_input` of a training batch whose rows were made from training images ``sources``."""
        return self._head_input(features)

