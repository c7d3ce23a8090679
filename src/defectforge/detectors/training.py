"""What the reference detectors share: the synthesizer of a run, seeded training batches,
the segmentation loss, score-map smoothing and the training record."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ..core.dtype import to_uint8
from ..core.seeding import DONOR_POOL, donor_indices, torch_generator
from ..core.types import SynthesisContext

__all__ = ["resolve_synthesizer", "TrainingBatches", "TrainingRecord", "focal_l1_loss", "gaussian_smooth",
           "DETECTION_SIGMA"]

#: Gaussian smoothing of upsampled score maps, sigma 4 px (PatchCore, Roth et al. CVPR 2022, and
#: anomalib's anomaly-map generators).
DETECTION_SIGMA = 4.0


def resolve_synthesizer(synthesizer):
    """A synthesizer object, or a registry name built for training: every synthesised sample
    anomalous and empty masks redrawn where the method allows (as ``defectforge generate``)."""
    if isinstance(synthesizer, str):
        from ..pipelines.build import build_synthesizer

        return build_synthesizer(synthesizer)
    if not callable(synthesizer):
        raise TypeError(f"synthesizer must be a registry name or a defectforge Synthesizer, got {type(synthesizer).__name__}")
    return synthesizer


@dataclass
class TrainingRecord:
    """Timings and the loss curve of one training run (seconds)."""

    steps: int = 0
    batch_size: int = 0
    seconds: float = 0.0
    synthesis_seconds: float = 0.0
    feature_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_seconds: float = 0.0  # spent in checkpoint evaluations, not counted as training
    #: The step whose weights were kept when a validation set chose the best checkpoint (else None).
    selected_step: int | None = None

    def optimise(self, loss: torch.Tensor, optimiser, step: int, evaluate=None, checkpoint_every: int = 0,
                 model=None, clip_norm: float | None = None) -> None:
        """One optimiser step on ``loss`` (recorded); every ``checkpoint_every`` steps but the last,
        ``evaluate(model)`` is recorded too, its time kept apart from the training time.
        ``optimiser`` may be a list (detectors with several optimised parts step them all);
        ``clip_norm`` clips the gradient norm of all their parameters together before the step."""
        optimisers = optimiser if isinstance(optimiser, (list, tuple)) else [optimiser]
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            params = [p for opt in optimisers for group in opt.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, float(clip_norm))
        for opt in optimisers:
            opt.step()
        self.losses.append(float(loss.detach()))
        if evaluate is not None and checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < self.steps:
            t = time.perf_counter()
            self.checkpoints.append({"step": step + 1, **evaluate(model)})
            self.checkpoint_seconds += time.perf_counter() - t

    def finish(self, start: float, synthesis_seconds: float) -> "TrainingRecord":
        """Close the run started at ``start`` (``time.perf_counter()``): training time without checkpoints."""
        self.synthesis_seconds = synthesis_seconds
        self.seconds = time.perf_counter() - start - self.checkpoint_seconds
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "batch_size": self.batch_size, "train_seconds": self.seconds,
                "synthesis_seconds": self.synthesis_seconds, "feature_seconds": self.feature_seconds,
                "synthesis_share": self.synthesis_seconds / self.seconds if self.seconds > 0 else float("nan"),
                "losses": self.losses, "checkpoints": self.checkpoints, "selected_step": self.selected_step}


class TrainingBatches:
    """Seeded training batches: half normal images, half synthetic anomalies.

    The image indices come from a generator seeded by ``seed``, and synthetic sample ``j`` of
    step ``s`` is sample ``s * batch_size + j`` of the synthesizer's run seeded with ``seed``, so
    a run is reproducible and every step sees new anomalies. Methods that cut from other normal
    images (``uses_donors``: NSA, DefectMaker) get a pool of :data:`DONOR_POOL` training images
    drawn by ``(seed, s)``.
    """

    def __init__(self, images: torch.Tensor, synthesizer, batch_size: int, seed: int, device=None):
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (half normal, half synthetic), got {batch_size}")
        self.images = images
        self.synthesizer = resolve_synthesizer(synthesizer)
        self.batch_size = int(batch_size)
        self.n_normal = self.batch_size // 2
        self.n_synthetic = self.batch_size - self.n_normal
        self.seed = int(seed)
        self.device = torch.device(device) if device is not None else images.device
        self._gen = torch_generator(self.seed)
        self.synthesis_seconds = 0.0

    def indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.images.shape[0]
        return (torch.randint(n, (self.n_normal,), generator=self._gen),
                torch.randint(n, (self.n_synthetic,), generator=self._gen))

    def synthesize(self, step: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images uint8, masks float (B, 1, H, W))`` of the synthetic half of step ``step``."""
        start = time.perf_counter()
        sample_ids = [step * self.batch_size + j for j in range(index.shape[0])]
        donors = None
        if self.synthesizer.uses_donors:  # one pool per step, shared by its samples
            picks = donor_indices(self.seed, step, self.images.shape[0], pool_size=DONOR_POOL)
            donors = self.images[torch.tensor(picks)].to(self.device)
        out = self.synthesizer(self.images[index].to(self.device), seed=self.seed, indices=sample_ids,
                               context=SynthesisContext(donors=donors))
        images = out.images
        images = to_uint8(images)
        masks = out.masks.float()
        if masks.ndim == 3:
            masks = masks[:, None]
        self.synthesis_seconds += time.perf_counter() - start
        return images, masks


def scoring_features(backbone, images: torch.Tensor | None, features: torch.Tensor | None,
                     size: int | None) -> tuple[torch.Tensor, int]:
    """The backbone features to score (given, or extracted from ``images``) and the map size
    (given, else the images' side, else the stride-8 feature grid's side x 8)."""
    if features is None:
        if images is None:
            raise ValueError("pass images or their features")
        features = backbone.extract(images)
    if size is None:
        size = images.shape[-1] if images is not None else features.shape[-1] * 8
    return features, size


def maps_from_cells(features: torch.Tensor, size: int, cells, chunk: int) -> torch.Tensor:
    """``(N, size, size)`` score maps: ``cells(features[chunk])`` -> ``(n, 1, h, w)`` scores per
    feature cell, in chunks of ``chunk`` maps, upsampled bilinearly to ``size`` and smoothed
    (sigma :data:`DETECTION_SIGMA`), as every detector of the benchmark scores."""
    out = []
    for start in range(0, features.shape[0], chunk):
        scores = cells(features[start:start + chunk]).float()
        out.append(F.interpolate(scores, size=(size, size), mode="bilinear", align_corners=False)[:, 0])
    return gaussian_smooth(torch.cat(out), DETECTION_SIGMA).cpu()


def focal_l1_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al., ICCV 2017, gamma 2) plus L1 between the probabilities and the
    (soft) target, the segmentation loss of SuperSimpleNet (Rolih et al., ICPR 2024)."""
    prob = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ((1 - p_t) ** gamma * bce).mean()
    return focal + (prob - target).abs().mean()


def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    radius = max(1, int(math.ceil(4 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_smooth(maps: torch.Tensor, sigma: float = DETECTION_SIGMA, chunk: int = 64) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, H, W)`` maps (reflect padding), in chunks."""
    if sigma <= 0:
        return maps
    kernel = _gaussian_kernel(sigma, maps.device)
    r = kernel.numel() // 2
    out = []
    for start in range(0, maps.shape[0], chunk):
        x = maps[start:start + chunk, None].float()
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), kernel.view(1, 1, -1, 1))
        out.append(x[:, 0])
    return torch.cat(out)
