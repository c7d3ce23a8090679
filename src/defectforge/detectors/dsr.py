"""``dsr``: DSR's detector, trained on anomalies made in a VQ-VAE's latent space (``dsr`` method).

Zavrtanik, Kristan, Skočaj, ECCV 2022; VitjanZ/DSR_anomaly_detection (MIT): ``dsr_model.py``
(the sub-networks), ``train_dsr.py`` (``train_on_device``: losses and schedule) and ``test_dsr.py``
(scoring). On a frozen two-level VQ-VAE (:mod:`defectforge.generative.vqvae`; its decoder is DSR's
*general object appearance decoder*), three parts are trained:

- two *subspace restriction modules* (``SubspaceRestrictionModule``), one per level: an
  encoder of three blocks (two 3x3 convs + InstanceNorm + ReLU, widths w, 2w, 4w, max-pooling
  between) and a decoder of two bilinear up-samplings (conv + IN + ReLU, then a block), no skip
  connections, a 3x3 conv back to the code dimension; the output is re-quantised with the
  level's codebook (straight-through);
- the *object-specific appearance decoder* (``ImageReconstructionNetwork``): two blocks with
  max-pooling (widths w -> 2w, 2w -> 4w), a 1x1 conv, two transposed convs back to the bottom
  grid, a 3x3 conv, a residual stack and two transposed convs to the image;
- the *anomaly detection module* (``AnomalyDetectionModule``): a U-Net (four blocks w, 2w, 4w,
  4w, InstanceNorm, skip connections, bilinear up-sampling) on the concatenation of the
  object-specific and the general reconstructions, two output channels (softmax).

Loss (``train_dsr.py``): focal loss (gamma 2, on the softmax, DRAEM's ``FocalLoss``) of the map
against the ``dsr`` ground truth + MSE of each restriction module's output to the normal image's
code vectors + 10 x MSE of the object-specific reconstruction to the image; Adam, the learning
rate divided by 10 at 80% of the steps (``MultiStepLR([0.8 * epochs], gamma=0.1)``). The map is
the softmax's anomaly channel; the image score is the maximum of the map averaged over 21x21
windows (``test_dsr.py``).

Deliberate differences, for a 2-core CPU:

- the VQ-VAE is trained on the category's normal images (no ImageNet pretraining offline) at
  the ``small`` size of :data:`~defectforge.generative.vqvae.VQVAE_WIDTHS`;
- the whole model works at ``resolution`` px (default 128; DSR: 256) and the map is upsampled
  bilinearly to the benchmark's image size;
- widths: restriction modules w = 8 (DSR: the code dimension, 128), object decoder w = 8
  (DSR: 2 x 128 input channels widened to 512 and 1024), detection U-Net w = 8 (DSR: 64);
- learning rate 1e-3 (DSR: 2e-4) and a few hundred steps of 8 images (DSR: 100 epochs over
  8000 draws, batch 8), as the benchmark's other detectors;
- no third stage: DSR then trains an *upsampling module* on image-level (DRAEM-style) anomalies
  to sharpen the map; it is left out (its map is what DSR's image score uses anyway);
- the normal images are not rotated before encoding (DSR: +-90 degrees with probability 0.4).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from ..core.seeding import torch_generator
from ..generative.vqvae import ResidualStack, TwoLevelVQVAE
from .base import DetectorBase
from .draem_seg import windowed_max_scores
from .training import TrainingRecord
from .unet import SegmentationUNet, conv_block, up_block

__all__ = ["DSRDetector", "SubspaceRestriction", "ObjectDecoder", "AnomalyDetectionUNet", "dsr_focal_loss"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return conv_block(cin, cout, norm=nn.InstanceNorm2d)  # DSR's networks use instance norm


def _up(cin: int, cout: int) -> nn.Sequential:
    return up_block(cin, cout, norm=nn.InstanceNorm2d)


class SubspaceRestriction(nn.Module):
    """DSR's subspace restriction network on ``(B, D, h, w)`` code vectors (no skips); ``h, w`` % 4 == 0."""

    def __init__(self, dim: int, width: int = 16):
        super().__init__()
        w = int(width)
        self.encoder = nn.ModuleList([_block(dim, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.decoder = nn.Sequential(_up(4 * w, 2 * w), _block(2 * w, 2 * w), _up(2 * w, w), _block(w, w),
                                     nn.Conv2d(w, dim, 3, padding=1))

    def forward(self, x):
        for i, block in enumerate(self.encoder):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
        return self.decoder(x)


class ObjectDecoder(nn.Module):
    """DSR's object-specific appearance decoder: ``[up(q_top), q_bot]`` -> image (x4 the bottom grid)."""

    def __init__(self, in_channels: int, width: int, hidden: int, residual_hidden: int, residual_layers: int,
                 channels: int = 3):
        super().__init__()
        w = int(width)
        self.body = nn.Sequential(_block_pair(in_channels, w, 2 * w), nn.MaxPool2d(2), _block_pair(2 * w, 2 * w, 4 * w),
                                  nn.MaxPool2d(2), nn.Conv2d(4 * w, 2 * w, 1),
                                  nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
                                  nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1), nn.ReLU(),
                                  nn.Conv2d(2 * w, hidden, 3, padding=1), ResidualStack(hidden, residual_hidden, residual_layers),
                                  nn.ConvTranspose2d(hidden, hidden // 2, 4, 2, 1), nn.ReLU(),
                                  nn.ConvTranspose2d(hidden // 2, channels, 4, 2, 1))

    def forward(self, x):
        return self.body(x)


def _block_pair(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.InstanceNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.ReLU(inplace=True))


class AnomalyDetectionUNet(SegmentationUNet):
    """DSR's anomaly detection module: U-Net (w, 2w, 4w, 4w) on two stacked images -> 2 logits."""

    def __init__(self, in_channels: int = 6, width: int = 16):
        w = int(width)
        super().__init__(in_channels, 2, [w, 2 * w, 4 * w, 4 * w], nn.InstanceNorm2d, interleave=False)


def dsr_focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """DRAEM/DSR ``FocalLoss`` on 2-channel softmax ``prob`` and a ``(B, 1, H, W)`` binary ``target``:
    one-hot clamped to ``[smooth, 1 - smooth]``, ``pt = sum(onehot * prob) + smooth``, mean of ``-(1-pt)^gamma log pt``."""
    onehot = torch.cat([1 - target, target], dim=1).clamp(smooth, 1 - smooth)
    pt = (onehot * prob).sum(1) + smooth
    return (-(1 - pt) ** gamma * pt.log()).mean()


def _straight_through(vq, x: torch.Tensor) -> torch.Tensor:
    q = vq.embed(vq.codes(x))
    return x + (q - x).detach()


class DSRDetector(DetectorBase):
    """DSR's sub-networks on a frozen two-level VQ-VAE, trained with ``dsr`` latent anomalies.

    Parameters
    ----------
    vqvae : TwoLevelVQVAE
        The trained VQ-VAE (the benchmark trains one per dataset and caches it).
    resolution : int
        Side the images are resized to for the whole model (128; a multiple of 32, at least 64).
    width : int
        Width ``w`` of the restriction modules, the object decoder and the detection U-Net (8).
    lr : float
        Adam learning rate (1e-3), divided by 10 at 80% of the steps.

    Examples
    --------
    >>> import torch
    >>> from defectforge.generative.vqvae import TwoLevelVQVAE, VQVAE_WIDTHS
    >>> vq = TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"]).eval()
    >>> det = DSRDetector(vq, resolution=64, width=2)
    >>> train = (torch.rand(4, 3, 64, 64) * 255).to(torch.uint8)
    >>> _ = det.fit(train, steps=1, batch_size=2, seed=0)
    >>> tuple(det.score_maps(train[:2]).shape)
    (2, 64, 64)
    """

    name = "dsr"
    kind = "latent"
    method = "dsr"
    uses_backbone_features = False

    def __init__(self, vqvae: TwoLevelVQVAE | None = None, resolution: int = 128, width: int = 8, lr: float = 1e-3,
                 device: str | torch.device = "cpu"):
        if int(resolution) % 32 or int(resolution) < 64:
            raise ValueError(f"resolution must be a multiple of 32 and >= 64 (the top grid, 1/8, is pooled twice more "
                             f"by its restriction module), got {resolution}")
        if int(width) < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.vqvae = vqvae
        self.resolution, self.width, self.lr = int(resolution), int(width), float(lr)
        self.device = torch.device(device)
        self.modules: nn.ModuleDict | None = None
        self.synthesis_seconds = 0.0

    def _check_vqvae(self) -> TwoLevelVQVAE:
        if self.vqvae is None:
            raise ValueError("the dsr detector needs a trained VQ-VAE (DSRDetector(vqvae=...); `defectforge benchmark "
                             "--detector dsr` trains and caches one per dataset, `defectforge train vqvae` trains one)")
        vq = self.vqvae.to(self.device).eval()
        for p in vq.parameters():
            p.requires_grad_(False)
        return vq

    def _resize(self, images: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] at ``resolution``, with the VQ-VAE's channels (grey: the channel mean)."""
        x = images.float().div(255.0) if images.dtype == torch.uint8 else images.float()
        channels = self.vqvae.settings["channels"] if self.vqvae is not None else 3
        if x.shape[1] != channels:
            x = x.mean(1, keepdim=True) if channels == 1 else x[:, :1].expand(-1, channels, -1, -1)
        if x.shape[-1] != self.resolution or x.shape[-2] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False,
                              antialias=True)
        return x.clamp(0, 1)

    def build(self, vq: TwoLevelVQVAE) -> nn.ModuleDict:
        s = vq.settings
        d, w = s["embedding_dim"], self.width
        return nn.ModuleDict({
            "restrict_top": SubspaceRestriction(d, w), "restrict_bottom": SubspaceRestriction(d, w),
            "object_decoder": ObjectDecoder(2 * d, w, s["hidden"], s["residual_hidden"], s["residual_layers"],
                                            s["channels"]),
            "detection": AnomalyDetectionUNet(2 * s["channels"], w),
        })

    def _reconstruct(self, vq, q_top: torch.Tensor, q_bot: torch.Tensor):
        """Restriction modules and object decoder: ``(feat_top, feat_bot, object-specific image)``."""
        feat_top = self.modules["restrict_top"](q_top)
        feat_bot = self.modules["restrict_bottom"](q_bot)
        joined = torch.cat([vq.upsample_top(_straight_through(vq.vq_top, feat_top)),
                            _straight_through(vq.vq_bottom, feat_bot)], dim=1)
        return feat_top, feat_bot, self.modules["object_decoder"](joined)

    def fit(self, images: torch.Tensor, synthesizer=None, steps: int = 500, batch_size: int = 8, seed: int = 0,
            features=None, checkpoint_every: int = 0, evaluate=None) -> TrainingRecord:
        """Train for ``steps`` steps of ``batch_size`` normal images, each altered by ``dsr`` in latent space
        (half of them left normal by the method's empty masks)."""
        import defectforge

        start = time.perf_counter()
        record = TrainingRecord(steps=int(steps), batch_size=int(batch_size))
        vq = self._check_vqvae()
        synth = synthesizer or self.method
        if isinstance(synth, str):
            if defectforge.method_info(synth).level != "latent":
                raise ValueError(f"detector 'dsr' trains on latent-level methods; {synth!r} is "
                                 f"{defectforge.method_info(synth).level}-level (latent methods: "
                                 f"{', '.join(defectforge.list_methods(level='latent'))})")
            synth = defectforge.create(synth)
        data = torch.cat([self._resize(images[i:i + 64]).mul(255).round().to(torch.uint8)
                          for i in range(0, images.shape[0], 64)])
        self.synthesis_seconds = 0.0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.modules = self.build(vq).to(self.device)
        optimiser = torch.optim.Adam(self.modules.parameters(), lr=self.lr)
        milestone = int(0.8 * int(steps))
        gen = torch_generator(int(seed))
        for step in range(int(steps)):
            if step == milestone and step > 0:
                for group in optimiser.param_groups:
                    group["lr"] = self.lr * 0.1
            idx = torch.randint(data.shape[0], (int(batch_size),), generator=gen)
            x = data[idx].to(self.device).float().div(255.0)
            with torch.no_grad():
                enc_b = vq.encode_bottom(x)
                t = time.perf_counter()
                out = synth(enc_b, seed=int(seed), indices=[step * int(batch_size) + j for j in range(x.shape[0])],
                            vqvae=vq)
                self.synthesis_seconds += time.perf_counter() - t
                q_top, q_bot = out.extras["quantized_top"], out.features
                general = vq.decode(q_top, q_bot)
                target = F.interpolate(out.masks, scale_factor=vq.stride, mode="nearest")
            self.modules.train()
            feat_top, feat_bot, specific = self._reconstruct(vq, q_top, q_bot)
            prob = torch.softmax(self.modules["detection"](torch.cat([specific.detach(), general], dim=1)), dim=1)
            loss = (dsr_focal_loss(prob, target) + F.mse_loss(feat_bot, out.extras["quantized_bottom_normal"])
                    + F.mse_loss(feat_top, out.extras["quantized_top_normal"]) + 10 * F.mse_loss(specific, x))
            record.optimise(loss, optimiser, step, evaluate, checkpoint_every, self)
        return record.finish(start, self.synthesis_seconds)

    @torch.no_grad()
    def score_maps(self, images: torch.Tensor | None = None, features=None, size: int | None = None,
                   chunk: int = 16) -> torch.Tensor:
        """``(N, size, size)`` anomaly probabilities (softmax anomaly channel), upsampled bilinearly."""
        if self.modules is None:
            raise RuntimeError("call fit() before score_maps()")
        if images is None:
            raise ValueError("the dsr detector scores images (it has no backbone features)")
        vq = self._check_vqvae()
        size = int(size or images.shape[-1])
        self.modules.eval()
        out = []
        for start in range(0, images.shape[0], chunk):
            x = self._resize(images[start:start + chunk].to(self.device))
            q_top, q_bot, _, _ = vq.quantize(vq.encode_bottom(x))
            _, _, specific = self._reconstruct(vq, q_top, q_bot)
            general = vq.decode(q_top, q_bot)
            prob = torch.softmax(self.modules["detection"](torch.cat([specific, general], dim=1)), dim=1)[:, 1:]
            if prob.shape[-1] != size:
                prob = F.interpolate(prob, size=(size, size), mode="bilinear", align_corners=False)
            out.append(prob[:, 0].cpu())
        return torch.cat(out)

    @staticmethod
    def image_scores(maps: torch.Tensor) -> torch.Tensor:
        """DSR's image score: the maximum of the 21x21 mean-filtered map (``test_dsr.py``)."""
        return windowed_max_scores(maps)
