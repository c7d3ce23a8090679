"""Pixel types: uint8 <-> float ``[0, 1]`` and luma, the one home of these conversions.

As scikit-image's ``util/dtype.py``: every module converts through these functions, in torch
(batches) and numpy (per-sample CPU work), so the rounding rule (round half to even after
scaling by 255, clamped) and the luma weights are the same everywhere. A grey image made from an
RGB one is rounded by the same rule whichever path made it (reading a file, converting a crop).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["LUMA_WEIGHTS", "LUMA_WEIGHTS_F32", "validate_images", "as_float_images", "restore_dtype", "to_uint8",
           "to_uint8_hwc", "luma", "float_array_to_uint8", "uint8_array_to_float", "luma_array",
           "luma_array_uint8"]

#: ITU-R 601-2 luma weights (R, G, B), as PIL's ``convert("L")`` and torchvision's ``rgb_to_grayscale``.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: The same weights as float32, the precision every numpy luma here is computed in.
LUMA_WEIGHTS_F32 = np.array(LUMA_WEIGHTS, np.float32)


def validate_images(images: torch.Tensor) -> None:
    """Check that ``images`` is a ``(B, C, H, W)`` uint8 or float tensor with C = 1 or 3."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]} "
                         "(drop the alpha channel of RGBA images first)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [0, 1], got {images.dtype}")


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a ``(B, C, H, W)`` batch (C = 1 or 3) and return it as float32 in ``[0, 1]``."""
    validate_images(images)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def restore_dtype(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Convert a float ``[0, 1]`` batch back to the dtype of ``like`` (in place where it can)."""
    if like.dtype == torch.uint8:
        return images.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return images.to(like.dtype)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """A float ``[0, 1]`` tensor as uint8 (scaled by 255, rounded, clamped); uint8 input is returned as is.

    Examples
    --------
    >>> to_uint8(torch.tensor([0.0, 0.5, 1.2])).tolist()
    [0, 128, 255]
    """
    if images.dtype == torch.uint8:
        return images
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """One ``(C, H, W)`` image (uint8 or float in [0, 1]) as a contiguous ``(H, W, C)`` uint8 array."""
    if image.dtype != torch.uint8:
        image = image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())


def luma(images: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of a ``(B, C, H, W)`` float batch (identity for one-channel images).

    Examples
    --------
    >>> luma(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA_WEIGHTS[0] * r + LUMA_WEIGHTS[1] * g + LUMA_WEIGHTS[2] * b


# --- numpy (per-sample CPU work) ---------------------------------------------------------------
def float_array_to_uint8(array: np.ndarray) -> np.ndarray:
    """A float ``[0, 1]`` array as uint8 by the rule of :func:`to_uint8` (scaled by 255, rounded half to even, clamped).

    Examples
    --------
    >>> float_array_to_uint8(np.array([0.0, 0.5, 1.2], np.float32)).tolist()
    [0, 128, 255]
    """
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)


def uint8_array_to_float(array: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A uint8 array as float ``[0, 1]`` of ``dtype`` (divided by 255 in that precision).

    Examples
    --------
    >>> uint8_array_to_float(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    dtype = np.dtype(dtype)
    return array.astype(dtype) / dtype.type(255.0)


def luma_array(rgb: np.ndarray) -> np.ndarray:
    """Float32 luma of an ``(..., 3)`` array (channels last), in its own scale.

    Examples
    --------
    >>> float(luma_array(np.array([255, 255, 255], np.uint8)))
    255.0
    """
    return rgb.astype(np.float32) @ LUMA_WEIGHTS_F32


def luma_array_uint8(rgb: np.ndarray) -> np.ndarray:
    """``(..., 3)`` uint8 -> ``(..., 1)`` uint8 grey, rounded half to even as every conversion here.

    Examples
    --------
    >>> luma_array_uint8(np.array([[0, 0, 250]], np.uint8)).tolist()  # luma 28.5
    [[28]]
    """
    return np.clip(np.rint(luma_array(rgb)), 0, 255).astype(np.uint8)[..., None]
