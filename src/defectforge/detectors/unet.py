"""The segmentation U-Net of the reconstruction-based detectors (``draem_seg``, ``dsr``).

DRAEM's discriminative sub-network (VitjanZ/DRAEM ``model_unet.py``) and DSR's anomaly detection
module (VitjanZ/DSR ``dsr_model.py``) are the same network with other settings: encoder blocks of
two 3x3 conv + norm + ReLU with max-pooling between, a mirrored decoder of bilinear x2
upsampling + conv, skip connections by concatenation, and a 3x3 conv to the logits. DRAEM uses
widths ``w, 2w, 4w, 8w, 8w, 8w`` and batch norm, DSR ``w, 2w, 4w, 4w`` and instance norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SegmentationUNet", "conv_block", "up_block"]


def conv_block(cin: int, cout: int, norm=nn.BatchNorm2d) -> nn.Sequential:
    """Two 3x3 conv + norm + ReLU (the U-Net block of DRAEM's and DSR's networks; DSR: InstanceNorm)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True))


def up_block(cin: int, cout: int, norm=nn.BatchNorm2d) -> nn.Sequential:
    """Bilinear x2 upsampling, then 3x3 conv + norm + ReLU."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                         nn.Conv2d(cin, cout, 3, padding=1), norm(cout), nn.ReLU(inplace=True))


class SegmentationUNet(nn.Module):
    """U-Net ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` logits (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels : int
        Input channels (DRAEM's image: 3; DSR's two stacked images: 6) and logits (1; DSR: 2).
    widths : sequence of int
        Width of each encoder block; the decoder mirrors all but the deepest. ``H`` and ``W``
        must be divisible by ``2 ** (len(widths) - 1)``.
    norm : type
        ``nn.BatchNorm2d`` (DRAEM) or ``nn.InstanceNorm2d`` (DSR).
    interleave : bool
        Create each decoder level's upsampling and its block one after the other (DRAEM's
        order), or every upsampling first (DSR's). Seeded initial weights are drawn in creation
        order, so this keeps each detector's trained weights what they were.

    Examples
    --------
    >>> net = SegmentationUNet(3, 1, [4, 8, 8])
    >>> tuple(net(torch.zeros(1, 3, 16, 16)).shape)
    (1, 1, 16, 16)
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], norm=nn.BatchNorm2d,
                 interleave: bool = True):
        super().__init__()
        widths = [int(c) for c in widths]
        self.encoder = nn.ModuleList()
        cin = in_channels
        for c in widths:
            self.encoder.append(conv_block(cin, c, norm))
            cin = c
        levels = []  # (input width, skip width) of each decoder level, deepest first
        for skip in reversed(widths[:-1]):
            levels.append((cin, skip))
            cin = skip
        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        if interleave:
            for c, skip in levels:
                self.ups.append(up_block(c, skip, norm))
                self.decoder.append(conv_block(2 * skip, skip, norm))
        else:
            self.ups.extend(up_block(c, skip, norm) for c, skip in levels)
            self.decoder.extend(conv_block(2 * skip, skip, norm) for _, skip in levels)
        self.out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, block, skip in zip(self.ups, self.decoder, reversed(skips[:-1])):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.out(x)
