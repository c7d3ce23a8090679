"""DSR's two-level VQ-VAE (the discrete latent model of Zavrtanik, Kristan and Skočaj, ECCV 2022).

Layout as VitjanZ/DSR_anomaly_detection (MIT) ``discrete_model.py`` (``DiscreteLatentModel``),
itself VQ-VAE-2 (Razavi et al., NeurIPS 2019) with the EMA quantiser of zalandoresearch/pytorch-vq-vae:

- bottom encoder: conv 4x4 stride 2 (``hidden // 2``), ReLU, conv 4x4 stride 2 (``hidden``), ReLU,
  conv 3x3, residual stack -> ``enc_b`` at 1/4 of the image;
- top encoder on ``enc_b``: conv 4x4 stride 2, ReLU, conv 3x3, ReLU, residual stack, 1x1 conv to
  ``embedding_dim`` -> ``z_top`` at 1/8, quantised with the top codebook ``K_lo``;
- ``upsample_t`` (transposed conv 4x4 stride 2) of the top quantised latents, concatenated with
  ``enc_b``, 1x1 conv -> ``z_bot`` at 1/4, quantised with the bottom codebook ``K_hi``;
- general appearance decoder on ``[upsample_t(q_top), q_bot]``: conv 3x3, residual stack, two
  transposed convs 4x4 stride 2 -> the image (values in [0, 1], no normalisation, as DSR).
- residual block: ReLU, conv 3x3 (``residual_hidden``, no bias), ReLU, conv 1x1 (no bias), added;
  the stack ends with a ReLU.
- quantiser: nearest code (squared Euclidean distance), codebooks updated by exponential moving
  averages (decay 0.99, Laplace smoothing epsilon 1e-5), commitment cost 0.25, straight-through
  gradient. Loss = MSE(image, reconstruction) + commitment terms of both levels.

Defaults (``train_dsr.py``, ``train_on_device``): ``num_hiddens=128``, ``num_residual_hiddens=64``,
``num_residual_layers=2``, ``embedding_dim=128``, ``num_embeddings=4096``, ``commitment_cost=0.25``,
``decay=0.99`` -- preset ``VQVAE_WIDTHS["base"]``.

Deliberate differences (DSR pretrains this model once on ImageNet; no such weights exist offline
here, so it is trained on the category's own normal images on a CPU, see
:func:`defectforge.generative.train.train` ``kind="vqvae"``):

- ``VQVAE_WIDTHS["small"]`` (the benchmark's default): hidden 64, residual hidden 32, embedding
  dimension 64, codebooks of 1024 codes (DSR: 128, 64, 128, 4096) -- about 16x fewer
  multiply-adds, and a codebook the few hundred images of a category can fill;
- dead-code restarts (not in DSR, whose ImageNet training uses its codebook): every
  ``restart_every`` training steps, codes whose EMA usage fell below ``restart_threshold`` are
  moved to random latents of the current batch (Dhariwal et al. 2020, Jukebox), so the codebook's
  nearest neighbours -- which DSR samples anomalies from -- are codes the data uses rather than
  untouched random initialisations.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["VectorQuantizerEMA", "TwoLevelVQVAE", "ResidualStack", "VQVAE_WIDTHS", "save_vqvae", "load_vqvae"]

#: Model sizes by name. ``base``: DSR's (``train_dsr.py``); ``small``: the CPU size of the
#: benchmark (module docstring); ``tiny``: tests.
VQVAE_WIDTHS: dict[str, dict[str, int]] = {
    "base": {"hidden": 128, "residual_hidden": 64, "residual_layers": 2, "embedding_dim": 128, "num_embeddings": 4096},
    "small": {"hidden": 64, "residual_hidden": 32, "residual_layers": 2, "embedding_dim": 64, "num_embeddings": 1024},
    "tiny": {"hidden": 16, "residual_hidden": 8, "residual_layers": 1, "embedding_dim": 8, "num_embeddings": 64},
}


class VectorQuantizerEMA(nn.Module):
    """Nearest-code quantiser with EMA codebook updates (zalandoresearch/pytorch-vq-vae, as DSR).

    The codebook is a buffer (``codebook``, ``(K, D)``), changed only by the EMA update in
    training mode, never by the optimiser.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, commitment_cost: float = 0.25, decay: float = 0.99,
                 epsilon: float = 1e-5):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.commitment_cost, self.decay, self.epsilon = float(commitment_cost), float(decay), float(epsilon)
        self.register_buffer("codebook", torch.randn(self.num_embeddings, self.embedding_dim))  # normal_(), as DSR
        self.register_buffer("ema_cluster_size", torch.zeros(self.num_embeddings))
        self.register_buffer("ema_w", self.codebook.clone())

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` index of the nearest code of each latent vector of ``z`` ``(B, D, h, w)``."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        # |c|^2 - 2 z.c: the squared distance less the row's own |z|^2, which does not change the argmin
        dist = torch.addmm(self.codebook.pow(2).sum(1), flat, self.codebook.T, alpha=-2.0)
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, D, h, w)`` code vectors of ``(B, h, w)`` indices."""
        return self.codebook[codes].permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(quantised with straight-through gradient, commitment loss, codes)``."""
        codes = self.codes(z)
        quantized = self.embed(codes)
        if self.training:
            flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
            onehot = F.one_hot(codes.reshape(-1), self.num_embeddings).to(flat.dtype)
            with torch.no_grad():
                self.ema_cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
                n = self.ema_cluster_size.sum()
                self.ema_cluster_size.copy_((self.ema_cluster_size + self.epsilon)
                                            / (n + self.num_embeddings * self.epsilon) * n)
                self.ema_w.mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
                self.codebook.copy_(self.ema_w / self.ema_cluster_size[:, None])
        loss = self.commitment_cost * F.mse_loss(quantized.detach(), z)
        return z + (quantized - z).detach(), loss, codes

    @torch.no_grad()
    def restart_dead_codes(self, z: torch.Tensor, threshold: float, generator: torch.Generator) -> int:
        """Move codes with EMA usage below ``threshold`` onto random latent vectors of ``z``; how many moved."""
        dead = (self.ema_cluster_size < threshold).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, self.embedding_dim)
        pick = torch.randint(flat.shape[0], (dead.numel(),), generator=generator).to(flat.device)
        self.codebook[dead] = flat[pick]
        self.ema_w[dead] = flat[pick]
        self.ema_cluster_size[dead] = 1.0
        return int(dead.numel())


class _Residual(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1, bias=False), nn.ReLU(),
                                   nn.Conv2d(hidden, channels, 1, bias=False))

    def forward(self, x):
        return x + self.block(x)


class ResidualStack(nn.Sequential):
    """Residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv, added) and a final ReLU, as DSR."""

    def __init__(self, channels: int, hidden: int, layers: int):
        super().__init__(*[_Residual(channels, hidden) for _ in range(layers)], nn.ReLU())


class TwoLevelVQVAE(nn.Module):
    """DSR's discrete latent model (module docstring): bottom codes at 1/4, top codes at 1/8.

    Parameters
    ----------
    hidden, residual_hidden, residual_layers : int
        Encoder/decoder width, residual block width and depth (DSR: 128, 64, 2).
    embedding_dim, num_embeddings : int
        Code dimension ``D`` and codebook size ``K`` of each level (DSR: 128, 4096).
    commitment_cost, decay : float
        Quantiser commitment cost and EMA decay (DSR: 0.25, 0.99).
    channels : int
        Image channels (3).

    Examples
    --------
    >>> import torch
    >>> vq = TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"])
    >>> x = torch.rand(2, 3, 32, 32)
    >>> enc = vq.encode_bottom(x)
    >>> q_top, q_bot, codes_top, codes_bot = vq.quantize(enc)
    >>> tuple(q_bot.shape), tuple(codes_top.shape), tuple(vq.decode(q_top, q_bot).shape)
    ((2, 8, 8, 8), (2, 4, 4), (2, 3, 32, 32))
    """

    def __init__(self, hidden: int = 128, residual_hidden: int = 64, residual_layers: int = 2,
                 embedding_dim: int = 128, num_embeddings: int = 4096, commitment_cost: float = 0.25,
                 decay: float = 0.99, channels: int = 3):
        super().__init__()
        self.settings = {"hidden": int(hidden), "residual_hidden": int(residual_hidden),
                         "residual_layers": int(residual_layers), "embedding_dim": int(embedding_dim),
                         "num_embeddings": int(num_embeddings), "commitment_cost": float(commitment_cost),
                         "decay": float(decay), "channels": int(channels)}
        h, rh, rl, d = int(hidden), int(residual_hidden), int(residual_layers), int(embedding_dim)
        self.encoder_bottom = nn.Sequential(nn.Conv2d(channels, h // 2, 4, 2, 1), nn.ReLU(), nn.Conv2d(h // 2, h, 4, 2, 1),
                                            nn.ReLU(), nn.Conv2d(h, h, 3, 1, 1), ResidualStack(h, rh, rl))
        self.encoder_top = nn.Sequential(nn.Conv2d(h, h, 4, 2, 1), nn.ReLU(), nn.Conv2d(h, h, 3, 1, 1), nn.ReLU(),
                                         ResidualStack(h, rh, rl))
        self.pre_vq_top = nn.Conv2d(h, d, 1)
        self.pre_vq_bottom = nn.Conv2d(h + d, d, 1)
        self.vq_top = VectorQuantizerEMA(num_embeddings, d, commitment_cost, decay)
        self.vq_bottom = VectorQuantizerEMA(num_embeddings, d, commitment_cost, decay)
        self.upsample_top = nn.ConvTranspose2d(d, d, 4, 2, 1)
        self.decoder = nn.Sequential(nn.Conv2d(2 * d, h, 3, 1, 1), ResidualStack(h, rh, rl),
                                     nn.ConvTranspose2d(h, h // 2, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(h // 2, channels, 4, 2, 1))

    # --- the pieces DSR's anomaly generation and detector use --------------------------------
    @property
    def stride(self) -> int:
        """Image pixels per bottom latent cell (4); the top grid is half the bottom grid."""
        return 4

    def encode_bottom(self, images: torch.Tensor) -> torch.Tensor:
        """``enc_b`` ``(B, hidden, H/4, W/4)`` of float images in [0, 1]."""
        return self.encoder_bottom(images)

    def top_latent(self, enc_b: torch.Tensor) -> torch.Tensor:
        """``z_top`` ``(B, D, H/8, W/8)``: the top level before quantisation (``F_lo``)."""
        return self.pre_vq_top(self.encoder_top(enc_b))

    def bottom_latent(self, enc_b: torch.Tensor, q_top: torch.Tensor) -> torch.Tensor:
        """``z_bot`` ``(B, D, H/4, W/4)`` from ``enc_b`` and the (possibly altered) top codes' vectors."""
        return self.pre_vq_bottom(torch.cat([enc_b, self.upsample_top(q_top)], dim=1))

    @property
    def codebook_top(self) -> torch.Tensor:
        return self.vq_top.codebook

    @property
    def codebook_bottom(self) -> torch.Tensor:
        return self.vq_bottom.codebook

    def quantize(self, enc_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q_top, q_bot, codes_top, codes_bot)`` of ``enc_b`` (no EMA update, no gradient path)."""
        codes_top = self.vq_top.codes(self.top_latent(enc_b))
        q_top = self.vq_top.embed(codes_top)
        codes_bot = self.vq_bottom.codes(self.bottom_latent(enc_b, q_top))
        return q_top, self.vq_bottom.embed(codes_bot), codes_top, codes_bot

    def decode(self, q_top: torch.Tensor, q_bot: torch.Tensor) -> torch.Tensor:
        """The general appearance decoder: an image from both levels' code vectors."""
        return self.decoder(torch.cat([self.upsample_top(q_top), q_bot], dim=1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(reconstruction, commitment loss of both levels, {"z_top", "z_bot"})`` (training path)."""
        enc_b = self.encode_bottom(images)
        z_top = self.top_latent(enc_b)
        q_top, loss_top, _ = self.vq_top(z_top)
        z_bot = self.bottom_latent(enc_b, q_top)
        q_bot, loss_bot, _ = self.vq_bottom(z_bot)
        return self.decode(q_top, q_bot), loss_top + loss_bot, {"z_top": z_top, "z_bot": z_bot}


def save_vqvae(model: TwoLevelVQVAE, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> None:
    """Write ``{"settings", "state", "extra"}`` with ``torch.save`` (atomic); :func:`load_vqvae` reads it."""
    import io

    from ..io.files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({"settings": dict(model.settings), "extra": dict(extra or {}),
                "state": {k: v.detach().cpu() for k, v in model.state_dict().items()}}, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_vqvae(path: str | os.PathLike, device: str | torch.device = "cpu") -> TwoLevelVQVAE:
    """A :class:`TwoLevelVQVAE` from a file written by :func:`save_vqvae`, loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no VQ-VAE at {path} (train one: defectforge train vqvae DATA OUT)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "settings" not in blob or "state" not in blob:
        raise ValueError(f"{path} is not a VQ-VAE file written by defectforge (save_vqvae)")
    model = TwoLevelVQVAE(**blob["settings"])
    model.load_state_dict(blob["state"])
    model.extra = blob.get("extra", {})
    return model.to(device).eval()
