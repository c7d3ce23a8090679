"""A drop-in for anomalib's DRAEM augmenter that draws from any defectforge method.

anomalib 2.x's ``Draem.training_step`` calls ``augmented_image, anomaly_mask = self.augmenter(images)``
on the float ``(B, C, H, W)`` training batch (anomalib's ``PerlinAnomalyGenerator`` by default).
:class:`AnomalibAugmenter` has that call signature::

    from anomalib.models import Draem
    from defectforge.integrations.anomalib import AnomalibAugmenter

    model = Draem(dtd_dir="/data/dtd")   # an existing folder: anomalib downloads DTD otherwise
    model.augmenter = AnomalibAugmenter("glass_las", seed=0)

It detaches the batch (synthesis is not differentiable), synthesises in float32 (half and bfloat16
batches are cast there and back), returns masks ``(B, 1, H, W)`` in the batch's dtype and device,
and takes new sample indices on every call (an :class:`~defectforge.pipelines.stream.AnomalyStream`),
offset by the distributed rank so that no two processes make the same sample. The position is a
buffer, so it is saved in (and restored from) the model's checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..pipelines.stream import AnomalyStream

__all__ = ["AnomalibAugmenter"]


class AnomalibAugmenter(torch.nn.Module):
    """``augmented, mask = augmenter(images)`` with any defectforge method (see the module docstring).

    Parameters
    ----------
    synthesizer : Synthesizer or str
        A synthesizer or a registry name. Names are built with ``anomaly_probability=1`` unless
        ``overrides`` say otherwise (anomalib's generator also makes every sample anomalous).
    seed : int
        Run seed; sample ``i`` depends on ``(seed, i)`` only.
    mean, std : sequence of float, optional
        When the batch is normalised (``(x - mean) / std``), the values used, so that the
        synthesis sees ``[0, 1]`` images; the result is normalised again.
    rank, world_size : int, optional
        Fixed share of the index space; by default ``torch.distributed``'s at each call.
    **overrides
        Constructor arguments of the method.

    Examples
    --------
    >>> import torch
    >>> aug = AnomalibAugmenter("cutpaste", seed=0)
    >>> images = torch.rand(2, 3, 64, 64, requires_grad=True)
    >>> augmented, mask = aug(images)
    >>> augmented.requires_grad, tuple(mask.shape), int(aug.position)
    (False, (2, 1, 64, 64), 2)
    >>> sorted(aug.state_dict())
    ['position']
    """

    def __init__(self, synthesizer="draem", seed: int = 0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, rank: int | None = None, world_size: int | None = None,
                 **overrides):
        super().__init__()
        if isinstance(synthesizer, str):
            from ..core.registry import create

            overrides.setdefault("anomaly_probability", 1.0)
            synthesizer = create(synthesizer, **overrides)
        elif overrides:
            raise TypeError("constructor arguments go with a method name, not a built synthesizer")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the batch's normalisation), or neither")
        self._stream = AnomalyStream(synthesizer, seed=seed, rank=rank, world_size=world_size)
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self._norm = None if mean is None else (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                                                 torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def synthesizer(self):
        return self._stream.synthesizer

    @property
    def last_indices(self) -> list[int]:
        """Global sample indices of the last call's batch."""
        return self._stream.last_indices

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_tensor(images) or images.dim() != 4:
            raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"anomalib passes float batches; got {images.dtype} (convert with images.float() / 255)")
        x = images.detach().to(torch.float32)
        if self._norm is not None:
            mean, std = (t.to(x.device) for t in self._norm)
            x = x * std + mean
        x = x.clamp(0.0, 1.0)
        self._stream.position = int(self.position)  # a loaded checkpoint sets the buffer
        out = self._stream(x)
        self.position.fill_(self._stream.position)
        augmented = out.images
        if self._norm is not None:
            augmented = (augmented - mean) / std
        return augmented.to(images.dtype), out.masks.to(device=images.device, dtype=images.dtype)
