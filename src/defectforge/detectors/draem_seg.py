"""``draem_seg``: DRAEM's discriminative sub-network, trained from scratch on synthetic anomalies.

Follows the discriminative sub-network of DRAEM (Zavrtanik, Kristan, Skočaj, ICCV 2021;
VitjanZ/DRAEM ``model_unet.py``, MIT): a U-Net of six encoder blocks (two 3x3 conv + BN + ReLU,
widths w, 2w, 4w, 8w, 8w, 8w, max-pooling between) and a mirrored decoder with bilinear
upsampling and skip connections, trained with the focal loss (gamma 2); the image score is the
maximum of the map averaged over 21x21 windows (DRAEM's ``test_DRAEM.py``).

Differences, deliberate: no reconstructive sub-network (the input is the image alone, 3
channels, instead of image + reconstruction, 6), one logit instead of a 2-way softmax, and a
small default width (``w = 16`` instead of 64) so that it trains on a CPU.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from .base import DetectorBase
from .training import TrainingBatches, TrainingRecord, focal_l1_loss
from .unet import SegmentationUNet

__all__ = ["DraemDiscriminative", "DraemSegDetector"]

#: DRAEM's image-score window (``test_DRAEM.py``: avg_pool2d, 21, stride 1, padding 10).
DRAEM_SCORE_WINDOW = 21


def windowed_max_scores(maps: torch.Tensor, window: int = DRAEM_SCORE_WINDOW) -> torch.Tensor:
    """``(N,)`` image scores: the maximum of each ``(N, H, W)`` map after a ``window`` x ``window``
    mean filter (DRAEM's ``test_DRAEM.py`` and DSR's ``test_dsr.py``)."""
    return F.avg_pool2d(maps[:, None], window, stride=1, padding=window // 2).amax(dim=(1, 2, 3))


class DraemDiscriminative(SegmentationUNet):
    """DRAEM's discriminative U-Net with base width ``width`` and ``in_channels`` inputs: one logit."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        w = int(width)
        super().__init__(in_channels, 1, [w, 2 * w, 4 * w, 8 * w, 8 * w, 8 * w], nn.BatchNorm2d, interleave=True)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


class DraemSegDetector(DetectorBase):
    """DRAEM's discriminative sub-network alone, trained on normal + synthetic images.

    Examples
    --------
    >>> import torch
    >>> det = DraemSegDetector(width=2)
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> _ = det.fit(train, "cutpaste", steps=1, batch_size=2, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "draem_seg"
    kind = "image"
    uses_backbone_features = False

    def __init__(self, width: int = 16, lr: float = 1e-3, device: str | torch.device = "cpu"):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.width = int(width)
        self.lr = float(lr)
        self.device = torch.device(device)
        self.net: DraemDiscriminative | None = None

    def fit(self, images: torch.Tensor, synthesizer, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features=None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        start = time.perf_counter()
        record = TrainingRecord(steps=int(steps), batch_size=int(batch_size))
        if images.shape[-1] % 32 or images.shape[-2] % 32:
            raise ValueError(f"draem_seg needs image sides divisible by 32, got {tuple(images.shape[-2:])}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.net = DraemDiscriminative(3, self.width).to(self.device)
        optimiser = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        batches = TrainingBatches(images, synthesizer, batch_size, seed, self.device)
        for step in range(int(steps)):
            normal_idx, synth_idx = batches.indices()
            synth_images, masks = batches.synthesize(step, synth_idx)
            x = torch.cat([_normalise(images[normal_idx].to(self.device)), _normalise(synth_images)])
            target = torch.cat([torch.zeros(normal_idx.shape[0], 1, *x.shape[-2:], device=self.device), masks])
            self.net.train()
            loss = focal_l1_loss(self.net(x), target)
            record.optimise(loss, optimiser, step, evaluate, checkpoint_every, self)
        return record.finish(start, batches.synthesis_seconds)

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features=None, size: int | None = None,
                   chunk: int = 8) -> torch.Tensor:
        if self.net is None:
            raise RuntimeError("call fit() before score_maps()")
        if images is None:
            raise ValueError("draem_seg scores images (it has no backbone features)")
        self.net.eval()
        out = []
        for start in range(0, images.shape[0], chunk):
            prob = torch.sigmoid(self.net(_normalise(images[start:start + chunk].to(self.device))))
            if size is not None and prob.shape[-1] != size:
                prob = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False)
            out.append(prob[:, 0].cpu())
        return torch.cat(out)

    @staticmethod
    def image_scores(maps: torch.Tensor) -> torch.Tensor:
        """DRAEM's image score: the maximum of the 21x21 mean-filtered map."""
        return windowed_max_scores(maps)
