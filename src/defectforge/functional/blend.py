"""Blending an anomaly source into images inside masks."""

from __future__ import annotations

import torch

__all__ = ["blend"]


def blend(images: torch.Tensor, source: torch.Tensor, masks: torch.Tensor, opacity: torch.Tensor | float) -> torch.Tensor:
    """``out = img*(1-m) + m*(opacity*src + (1-opacity)*img)``.

    This is DRAEM's ``msk*(1-beta)*tex + beta*img*msk + img*(1-msk)`` with ``opacity = 1-beta``;
    MemSeg, GLASS-LAS and anomalib use the same form. Pixels where ``m == 0`` are returned
    unchanged, bit for bit.

    Parameters
    ----------
    images, source : torch.Tensor
        ``(B, C, H, W)`` float.
    masks : torch.Tensor
        ``(B, 1, H, W)`` in ``[0, 1]``.
    opacity : torch.Tensor or float
        Per-sample opacity ``(B,)`` of the source, or one value.

    Examples
    --------
    >>> img, src = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    >>> m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    >>> blend(img, src, m, torch.tensor([0.5]))[0, 0]
    tensor([[0.5000, 0.0000],
            [0.0000, 0.0000]])
    """
    if not torch.is_tensor(opacity):
        opacity = torch.full((images.shape[0],), float(opacity), device=images.device)
    alpha = masks * opacity.to(images.device, images.dtype).view(-1, 1, 1, 1)
    return (source - images).mul_(alpha).add_(images)
