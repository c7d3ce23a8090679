"""Batched geometric warps with per-sample parameters."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..core.parallel import map_samples

__all__ = ["rotate", "rotation_matrices"]


def rotation_matrices(angles_deg: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 2, 3)`` ``affine_grid`` matrices rotating about the image centre by ``angles_deg``.

    Normalised coordinates are rescaled by the aspect ratio so the rotation is a true rotation in
    pixel space for non-square images.
    """
    theta = angles_deg.float() * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    aspect = width / height
    mat = torch.zeros(theta.shape[0], 2, 3, device=theta.device)
    mat[:, 0, 0] = cos
    mat[:, 0, 1] = -sin / aspect
    mat[:, 1, 0] = sin * aspect
    mat[:, 1, 1] = cos
    return mat


def rotate(images: torch.Tensor, angles_deg: torch.Tensor, mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """Rotate each image of ``(B, C, H, W)`` about its centre; uncovered pixels get ``fill``.

    Examples
    --------
    >>> x = torch.rand(2, 1, 32, 32)
    >>> torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-5)
    True
    """
    b, c, h, w = images.shape
    if images.device.type == "cpu" and images.dtype == torch.float32 and c in (1, 3):
        return _rotate_opencv(images, angles_deg, mode, fill)
    grid = F.affine_grid(rotation_matrices(angles_deg.to(images.device), h, w), [b, 1, h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if fill != 0.0:
        cover = F.grid_sample(torch.ones_like(images[:, :1]), grid, mode=mode, padding_mode="zeros", align_corners=False)
        out = out + fill * (1.0 - cover)
    return out


def _rotate_opencv(images: torch.Tensor, angles_deg: torch.Tensor, mode: str, fill: float) -> torch.Tensor:
    # On the CPU OpenCV's SIMD warp is ~20x faster than grid_sample; both rotate about the centre
    # of the pixel grid ((W-1)/2, (H-1)/2) with the same sign, so results agree to interpolation
    # rounding.
    b, c, h, w = images.shape
    flag = cv2.INTER_NEAREST if mode == "nearest" else cv2.INTER_LINEAR
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    out = torch.empty_like(images)
    src = images.permute(0, 2, 3, 1).contiguous().numpy() if c > 1 else images[:, 0].contiguous().numpy()
    dst = out.numpy()
    angles = angles_deg.detach().cpu().tolist()

    def warp(i: int) -> None:
        matrix = cv2.getRotationMatrix2D(centre, angles[i], 1.0)
        warped = cv2.warpAffine(src[i], matrix, (w, h), flags=flag, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(fill, fill, fill, fill))
        dst[i] = warped.transpose(2, 0, 1) if c > 1 else warped

    map_samples(warp, range(b))
    return out
