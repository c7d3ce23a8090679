"""Luma of ``(B, C, H, W)`` tensors (ITU-R 601-2, as PIL's ``convert("L")`` and torchvision).

The colour operations of the methods work on uint8 arrays with their sources' semantics:
see :mod:`defectforge.functional.uint8ops`.
"""

from __future__ import annotations

import torch

__all__ = ["to_gray"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L") and torchvision.


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` (identity for one-channel images).

    Examples
    --------
    >>> to_gray(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b
