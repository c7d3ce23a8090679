"""``patchcore``: the synthesis-free baseline, nearest-neighbour patch distances to normal features.

Follows PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022;
amazon-science/patchcore-inspection, Apache-2.0) on the same frozen backbone as ``seghead``:
mid-level features aggregated over a 3x3 neighbourhood (``patchsize 3``), a memory bank of the
normal training patches reduced by greedy k-centre coreset selection on a random projection,
and the anomaly map = distance of each test patch to its nearest memory patch, upsampled and
smoothed with a Gaussian (sigma 4); image score = maximum of the map.

Differences, deliberate, for CPU cost: the coreset is selected from a random pool of at most
``max_pool`` patches (PatchCore uses all of them), projected to ``projection_dim`` dimensions
(PatchCore: 128), and its size is ``coreset_ratio`` (PatchCore: 1% to 10%; default 1%) of all
training patches. The seed draws the pool, the projection and the first centre.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from ..core.seeding import torch_generator
from .backbones import Backbone
from .base import DetectorBase
from .training import DETECTION_SIGMA, TrainingRecord, gaussian_smooth, scoring_features

__all__ = ["PatchCoreBaseline", "greedy_coreset"]


def greedy_coreset(points: torch.Tensor, n_select: int, seed: int = 0, projection_dim: int = 32) -> torch.Tensor:
    """Indices of ``n_select`` rows of ``points`` chosen by greedy k-centre (farthest-point)
    selection on a Gaussian random projection (Sener & Savarese, ICLR 2018; PatchCore)."""
    n, d = points.shape
    n_select = max(1, min(int(n_select), n))
    gen = torch_generator(seed)
    if projection_dim and projection_dim < d:
        projection = (torch.randn(d, projection_dim, generator=gen) / projection_dim ** 0.5).to(points.device)
        points = points @ projection
    first = int(torch.randint(n, (1,), generator=gen))
    chosen = torch.empty(n_select, dtype=torch.long, device=points.device)
    chosen[0] = first
    min_dist = ((points - points[first]) ** 2).sum(1)
    for k in range(1, n_select):
        nxt = int(torch.argmax(min_dist))
        chosen[k] = nxt
        torch.minimum(min_dist, ((points - points[nxt]) ** 2).sum(1), out=min_dist)
    return chosen


class PatchCoreBaseline(DetectorBase):
    """Nearest-neighbour patch distances to a coreset of normal features (no synthesis).

    Examples
    --------
    >>> import torch
    >>> from defectforge.detectors import load_backbone
    >>> det = PatchCoreBaseline(load_backbone("tiny"))
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> _ = det.fit(train, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "patchcore"
    kind = "baseline"
    uses_backbone_features = True
    width_option = None

    def __init__(self, backbone: Backbone, coreset_ratio: float = 0.01, max_pool: int = 200_000,
                 projection_dim: int = 32, neighbourhood: int = 3):
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        self.backbone = backbone
        self.coreset_ratio = float(coreset_ratio)
        self.max_pool = int(max_pool)
        self.projection_dim = int(projection_dim)
        self.neighbourhood = int(neighbourhood)
        self.memory: torch.Tensor | None = None
        self._memory_sq: tuple[torch.Tensor, torch.Tensor] | None = None  # (memory, its squared row norms)

    def _aggregate(self, features: torch.Tensor) -> torch.Tensor:
        k = self.neighbourhood
        x = features.float()
        return F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False) if k > 1 else x

    def _patches(self, features: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        return torch.cat([self._aggregate(features[s:s + chunk]).permute(0, 2, 3, 1).reshape(-1, features.shape[1])
                          for s in range(0, features.shape[0], chunk)])

    def fit(self, images: torch.Tensor, synthesizer=None, steps: int = 0, batch_size: int = 0, seed: int = 0,
            features: torch.Tensor | None = None, **_ignored) -> TrainingRecord:
        """Build the memory bank (``synthesizer``, ``steps`` and ``batch_size`` are not used)."""
        start = time.perf_counter()
        record = TrainingRecord()
        if features is None:
            features = self.backbone.extract(images)
            record.feature_seconds = time.perf_counter() - start
        patches = self._patches(features.to(self.backbone.device))
        n_select = max(1, int(round(self.coreset_ratio * patches.shape[0])))
        gen = torch_generator(seed)
        if patches.shape[0] > self.max_pool:
            pool = torch.randperm(patches.shape[0], generator=gen)[:self.max_pool].to(patches.device)
            patches = patches[pool]
        chosen = greedy_coreset(patches, n_select, seed, self.projection_dim) if n_select < patches.shape[0] \
            else torch.arange(patches.shape[0], device=patches.device)
        self.memory = patches[chosen].contiguous()
        record.seconds = time.perf_counter() - start
        return record

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None, chunk: int = 16) -> torch.Tensor:
        if self.memory is None:
            raise RuntimeError("call fit() before score_maps()")
        features, size = scoring_features(self.backbone, images, features, size)
        out = []
        for start in range(0, features.shape[0], chunk):
            x = self._aggregate(features[start:start + chunk].to(self.memory.device))
            dist, _ = self.nearest(x)
            out.append(F.interpolate(dist, size=(size, size), mode="bilinear", align_corners=False)[:, 0])
        return gaussian_smooth(torch.cat(out), DETECTION_SIGMA).cpu()

    @torch.no_grad()
    def nearest(self, aggregated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``(B, 1, h, w)`` of each aggregated patch to its nearest memory patch, and that
        patch's index ``(B, h, w)``."""
        b, c, h, w = aggregated.shape
        dist, index = self.nearest_rows(aggregated.permute(0, 2, 3, 1).reshape(-1, c))
        return dist.view(b, 1, h, w), index.view(b, h, w)

    @torch.no_grad()
    def nearest_rows(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance ``(n,)`` of each row of ``patches`` ``(n, C)`` to its nearest memory patch, and its index."""
        if self.memory is None:
            raise RuntimeError("call fit() before nearest()")
        if self._memory_sq is None or self._memory_sq[0] is not self.memory:  # the norms of this memory
            self._memory_sq = (self.memory, (self.memory ** 2).sum(1))
        # squared distances by the expansion |q|^2 - 2 q.m + |m|^2 (one matrix product)
        d2 = (patches ** 2).sum(1, keepdim=True) - 2 * patches @ self.memory.T + self._memory_sq[1]
        best = d2.min(1)
        return best.values.clamp_min(0).sqrt(), best.indices
