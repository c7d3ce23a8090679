"""What every reference detector is: the :class:`Detector` protocol and the defaults of :class:`DetectorBase`.

A detector learns from normal images (plus, except the baseline, synthetic anomalies) and scores
images: ``fit`` trains it, ``score_maps`` gives one anomaly map per image, ``image_scores`` one
score per image from those maps. It declares, as class attributes, what the benchmark needs to
know without building it (read by :mod:`.registry`):

``name``
    Its registry name (``defectforge benchmark --detector NAME``).
``kind``
    What it trains on (:data:`KINDS`): ``"image"`` (image-level synthesis, any image method),
    ``"feature"`` (feature-level synthesis of its own ``method``), ``"latent"`` (latent-level
    synthesis of its own ``method``) or ``"baseline"`` (no synthesis at all).
``method``
    The registry method a ``"feature"`` or ``"latent"`` detector trains on by default; ``None``
    for the others.
``uses_backbone_features``
    Whether ``fit`` and ``score_maps`` take cached backbone features (``features=``), so the
    benchmark extracts them once per dataset.
``width_option``
    The constructor argument the benchmark's ``--width`` sets (``None``: no width).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

__all__ = ["KINDS", "Detector", "DetectorBase"]

#: What a detector trains on (see the module docstring).
KINDS = ("image", "feature", "latent", "baseline")


@runtime_checkable
class Detector(Protocol):
    """A reference detector (see the module docstring for the declared attributes)."""

    name: str
    kind: str
    method: str | None
    uses_backbone_features: bool
    width_option: str | None

    def fit(self, images: torch.Tensor, synthesizer=None, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features: torch.Tensor | None = None, checkpoint_every: int = 0, evaluate=None) -> Any:
        """Train on ``(N, C, H, W)`` uint8 normal ``images`` (and ``synthesizer``'s anomalies); returns
        a :class:`~defectforge.detectors.training.TrainingRecord`."""

    def score_maps(self, images: torch.Tensor | None = None, features: torch.Tensor | None = None,
                   size: int | None = None) -> torch.Tensor:
        """``(N, size, size)`` anomaly maps (higher = more anomalous)."""

    def image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        """``(N,)`` image scores of the maps of the last :meth:`score_maps` call."""


class DetectorBase:
    """Defaults of the :class:`Detector` protocol: no own synthesis method, ``--width`` sets the
    ``width`` argument, and the image score is the maximum of the map (PatchCore's, SimpleNet's;
    DRAEM and DSR override it with a windowed maximum)."""

    method: ClassVar[str | None] = None
    width_option: ClassVar[str | None] = "width"

    def image_scores(self, maps: torch.Tensor) -> torch.Tensor:
        """``(N,)`` the maximum of each ``(N, H, W)`` map."""
        return maps.amax(dim=(1, 2))
