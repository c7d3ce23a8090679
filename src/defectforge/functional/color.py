"""Batched colour and intensity operations with per-sample parameters.

Images are float tensors ``(B, C, H, W)`` in ``[0, 1]`` with C = 1 or 3; every parameter is a
tensor with one value per sample (``(B,)``). The definitions follow torchvision, which the
reference implementations of CutPaste, anomalib and GLASS call. The uint8 imgaug/PIL ops of
DRAEM's texture augmentation live in :mod:`defectforge.functional.augment`.
"""

from __future__ import annotations

import torch

__all__ = [
    "to_gray", "rgb_to_hsv", "hsv_to_rgb", "adjust_brightness", "adjust_contrast",
    "adjust_saturation", "adjust_hue", "color_jitter", "color_jitter_matrix", "apply_color_matrix",
]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L") and torchvision.


def _per_sample(value, images: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if t.ndim == 0:
        t = t.expand(images.shape[0])
    if per_channel and t.ndim == 1:
        return t.view(-1, 1, 1, 1)
    return t.view(images.shape[0], -1, 1, 1)


def to_gray(images: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` (identity for one-channel images)."""
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return _LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b


def rgb_to_hsv(images: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """RGB to HSV, all channels in ``[0, 1]`` (hue as a fraction of a turn)."""
    r, g, b = images.unbind(1)
    maxc, _ = images.max(1)
    minc, _ = images.min(1)
    delta = maxc - minc
    sat = torch.where(maxc > 0, delta / (maxc + eps), torch.zeros_like(maxc))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    return torch.stack((hue, sat, maxc), 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`."""
    h, s, v = hsv.unbind(1)
    k = torch.stack(((5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0), 1)
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factor) -> torch.Tensor:
    """torchvision ``adjust_brightness``: ``x * factor``, clipped."""
    return (images * _per_sample(factor, images)).clamp_(0.0, 1.0)


def adjust_contrast(images: torch.Tensor, factor) -> torch.Tensor:
    """torchvision ``adjust_contrast``: blend with the mean grey level of each image."""
    mean = to_gray(images).mean((1, 2, 3), keepdim=True)
    f = _per_sample(factor, images)
    return (f * images + (1.0 - f) * mean).clamp_(0.0, 1.0)


def adjust_saturation(images: torch.Tensor, factor) -> torch.Tensor:
    """torchvision ``adjust_saturation``: blend with the grey image."""
    if images.shape[1] == 1:
        return images
    f = _per_sample(factor, images)
    return (f * images + (1.0 - f) * to_gray(images)).clamp_(0.0, 1.0)


def adjust_hue(images: torch.Tensor, shift) -> torch.Tensor:
    """torchvision ``adjust_hue``: rotate the HSV hue by ``shift`` turns (in ``[-0.5, 0.5]``)."""
    if images.shape[1] == 1:
        return images
    hsv = rgb_to_hsv(images)
    hsv[:, 0] = (hsv[:, 0] + _per_sample(shift, images)[:, :, 0, 0].view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(hsv)


def color_jitter(images: torch.Tensor, brightness, contrast, saturation, hue, order=(0, 1, 2, 3)) -> torch.Tensor:
    """torchvision ``ColorJitter`` with drawn factors, applied in ``order`` (0 brightness,
    1 contrast, 2 saturation, 3 hue), each step clipped as torchvision does."""
    ops = (lambda x: adjust_brightness(x, brightness), lambda x: adjust_contrast(x, contrast),
           lambda x: adjust_saturation(x, saturation), lambda x: adjust_hue(x, hue))
    for k in order:
        images = ops[k](images)
    return images


def color_jitter_matrix(brightness, contrast, saturation, hue, means=None) -> tuple[torch.Tensor, torch.Tensor]:
    """One affine colour map ``(B, 3, 3)``, ``(B, 3)`` for brightness, contrast, saturation, hue.

    Composes torchvision's jitter factors (brightness, then contrast about ``means``, the mean grey
    level of each patch, then saturation) with a hue rotation about the grey axis, so a whole
    jitter costs one 3x3 matrix product per pixel. It differs from torchvision's sequential ops by
    the intermediate clipping, and its hue rotation approximates the HSV hue shift.
    """
    b = brightness.shape[0]
    dev = brightness.device
    eye = torch.eye(3, device=dev).expand(b, 3, 3)
    luma = torch.tensor(_LUMA, device=dev).view(1, 1, 3).expand(b, 3, 3)
    m = brightness.view(-1, 1, 1) * eye
    offset = torch.zeros(b, 3, device=dev)
    if means is None:
        means = torch.full((b,), 0.5, device=dev)
    c = contrast.view(-1, 1, 1)
    m = c * m
    offset = contrast.view(-1, 1) * offset + ((1.0 - contrast) * means * brightness).view(-1, 1)
    s = saturation.view(-1, 1, 1)
    sat = s * eye + (1.0 - s) * luma
    m = sat @ m
    offset = (sat @ offset[..., None])[..., 0]
    theta = hue * 2.0 * torch.pi
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    k = torch.full((3, 3), 1.0 / 3.0, device=dev)
    skew = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], device=dev) / (3.0 ** 0.5)
    rot = cos * eye + (1.0 - cos) * k + sin * skew
    return rot @ m, (rot @ offset[..., None])[..., 0]


def apply_color_matrix(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Apply per-sample ``(3, 3)`` colour matrices and offsets to ``(B, 3, H, W)``, clipped to [0, 1]."""
    b, c, h, w = images.shape
    out = torch.baddbmm(offset[..., None], matrix, images.reshape(b, c, h * w))
    return out.view(b, c, h, w).clamp_(0.0, 1.0)
