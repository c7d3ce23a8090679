"""A small conditional GAN of defect crops and their masks, trained with DiffAugment.

After DFMGAN (Duan et al., AAAI 2023: a generator of defect image + defect mask from a few real
defects) and DCDGANc (defect content generated apart, then blended into normal images), scaled
down to 64-128 px and a 2-core CPU. What differs from DFMGAN: no StyleGAN2 backbone pre-trained on
normal images and no defect-aware residual blocks (DFMGAN's code is under NVIDIA's non-commercial
licence; nothing of it is used); instead one DCGAN-style generator (Radford et al., ICLR 2016)
conditioned on the defect type, whose last layer outputs the image channels and one mask channel,
and a projection discriminator (Miyato & Koyama, ICLR 2018) with spectral normalisation (Miyato et
al., ICLR 2018) that sees image and mask together. Losses: the non-saturating logistic GAN loss
(Goodfellow et al. 2014; StyleGAN2-ADA and DFMGAN use it). Few-shot data: DiffAugment (Zhao et
al., NeurIPS 2020) with its low-shot policy ``color,translation,cutout`` applied to real and fake
batches in both updates; translation and cutout move the mask with the image.

The mask channel is a logit: ``tanh(logit)`` is compared with the real masks mapped to ``{-1, 1}``
during training, and a generated pixel is defect where ``logit > 0`` (``tanh > 0``, the midpoint).
Empty masks: the mask channel swings between covering most pixels and none while the
discriminator learns (about the first hundred steps), and DiffAugment's cutout, applied to the
mask too, erases small real defects from their masks, so the discriminator sees real samples
without a defect (such a GAN gave only empty masks after 300 steps); cutout cuts the image
channels only (see :func:`diff_augment`). A latent whose mask is still empty is redrawn
at synthesis (``gan_transplant``), and recorded.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

__all__ = ["DefectGenerator", "DefectDiscriminator", "diff_augment", "Z_DIM", "mask_of", "save_generator"]

#: Latent size (DCGAN uses 100; a power of two here).
Z_DIM = 128


class DefectGenerator(nn.Module):
    """``(z, type) -> (image in [-1, 1], mask logit)`` at ``size`` px (``size`` = 4 * 2**k)."""

    def __init__(self, size: int = 64, channels: int = 1, n_types: int = 1, width: int = 32):
        super().__init__()
        levels = (size // 4).bit_length() - 1
        if 4 * 2 ** levels != size:
            raise ValueError(f"size must be 4 x a power of two (32, 64, 128), got {size}")
        self.size, self.channels, self.n_types, self.width = size, channels, n_types, width
        c0 = width * 2 ** min(levels, 3)
        self.embed = nn.Embedding(n_types, 32)
        self.fc = nn.Linear(Z_DIM + 32, c0 * 16)
        blocks, c = [], c0
        for k in range(levels):
            c_out = max(width, c // 2) if k >= levels - 3 else c
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c_out, 3, padding=1),
                       nn.GroupNorm(min(8, c_out), c_out), nn.LeakyReLU(0.2)]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv2d(c, channels + 1, 3, padding=1)
        self.c0 = c0

    def forward(self, z: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(types)], 1)).view(len(z), self.c0, 4, 4)
        out = self.out(self.blocks(F.leaky_relu(h, 0.2)))
        return torch.cat([torch.tanh(out[:, :-1]), out[:, -1:]], 1)


def mask_of(generated: torch.Tensor) -> torch.Tensor:
    """``(B, 1, S, S)`` bool defect mask of a generator output: its mask logit ``> 0``.

    Examples
    --------
    >>> out = torch.zeros(1, 2, 2, 2); out[0, 1, 0, 0] = 3.0
    >>> mask_of(out)[0, 0].tolist()
    [[True, False], [False, False]]
    """
    return generated[:, -1:] > 0


def save_generator(path, generator: DefectGenerator, types: list[str], extents: dict[str, list], **extra) -> None:
    """Write a generator's weights (keys ``G_ema.*``) and what loading and placing it needs to one
    safetensors file (metadata ``extra``: kind, types, size, channels, width, crop extents per type)."""
    import json

    from safetensors.torch import save

    from ..io.files import atomic_write_bytes

    meta = {"kind": "gan", "types": list(types), "size": generator.size, "channels": generator.channels,
            "width": generator.width, "extents": extents, **extra}
    # a temporary name of this write alone: two processes saving to one cache never share one
    tensors = {f"G_ema.{k}": v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_write_bytes(path, save(tensors, metadata={"extra": json.dumps(meta)}))


class DefectDiscriminator(nn.Module):
    """Projection discriminator on ``(image, mask in [-1, 1])`` with spectral normalisation."""

    def __init__(self, size: int = 64, channels: int = 1, n_types: int = 1, width: int = 32):
        super().__init__()
        levels = (size // 4).bit_length() - 1
        layers, c = [], channels + 1
        for k in range(levels):
            c_out = width * 2 ** min(k, 3)
            layers += [spectral_norm(nn.Conv2d(c, c_out, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = c_out
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(c, 1))
        self.embed = spectral_norm(nn.Embedding(n_types, c))

    def forward(self, x: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum((2, 3))
        return self.linear(h)[:, 0] + (self.embed(types) * h).sum(1)


def diff_augment(x: torch.Tensor, image_channels: int, g: torch.Generator) -> torch.Tensor:
    """DiffAugment ``color,translation,cutout`` (Zhao et al. 2020 defaults) on ``(B, C+1, S, S)``.

    Colour (brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)) touches the
    image channels only; translation (up to 1/8 of the size, zero fill) moves the mask with the
    image; cutout (a square of half the size, zeros) cuts the image channels only: cut from the
    mask too, it erased small real defects (a blowhole covers a tenth of its crop) from their
    masks, showing the discriminator real samples without a defect, and the generator's masks
    drifted to empty. Differentiable; every random number
    from ``g``.
    """
    b, _, h, w = x.shape
    r = lambda *s: torch.rand(*s, generator=g).to(x.device)  # noqa: E731
    img, mask = x[:, :image_channels], x[:, image_channels:]
    img = img + (r(b, 1, 1, 1) - 0.5)
    if image_channels > 1:
        mean = img.mean(1, keepdim=True)
        img = (img - mean) * (r(b, 1, 1, 1) * 2) + mean
    mean = img.mean((1, 2, 3), keepdim=True)
    img = (img - mean) * (r(b, 1, 1, 1) + 0.5) + mean
    x = torch.cat([img, mask], 1)
    # translation: shift by up to 1/8 of the size, zero padding
    sy, sx = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
    ty = (r(b) * (2 * sy + 1)).long() - sy
    tx = (r(b) * (2 * sx + 1)).long() - sx
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    yy = (gy[None] + ty[:, None, None] + 1).clamp(0, h + 1)
    xx = (gx[None] + tx[:, None, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    bi = torch.arange(b, device=x.device)[:, None, None]
    x = padded.permute(0, 2, 3, 1)[bi, yy, xx].permute(0, 3, 1, 2)
    # cutout: a square of half the size set to 0
    ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    oy = (r(b) * (h + 1 - ch % 2)).long()
    ox = (r(b) * (w + 1 - cw % 2)).long()
    cy = (gy[None] - oy[:, None, None] + ch // 2)
    cx = (gx[None] - ox[:, None, None] + cw // 2)
    keep = ~((cy >= 0) & (cy < ch) & (cx >= 0) & (cx < cw))
    cut = torch.cat([keep[:, None].expand(-1, image_channels, -1, -1), torch.ones_like(keep[:, None])], 1)
    return x * cut.to(x.dtype)
