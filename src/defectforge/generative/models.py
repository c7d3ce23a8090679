"""Denoisers and schedulers for the diffusion samplers: build, save and load them (diffusers, local files only).

A *diffusion model* here is a diffusers ``UNet2DModel`` (predicting the noise) plus the noise
scheduler it was trained with, and, for a latent diffusion model, the auto-encoder whose latent
space the UNet denoises. Two folder layouts load:

- pixel space, diffusers' ``DDPMPipeline`` layout (what ``defectforge train ddpm`` writes): ``unet/``
  (``config.json`` + ``diffusion_pytorch_model.safetensors``) and ``scheduler/``
  (``scheduler_config.json``). A folder holding a bare UNet (``config.json`` at its top) loads too,
  with the standard DDPM schedule (1000 steps, linear betas 1e-4..0.02: Ho et al. 2020, diffusers'
  ``DDPMScheduler`` defaults);
- latent diffusion (Rombach et al., CVPR 2022), diffusers' ``LDMPipeline`` layout: ``vqvae/`` (a
  ``VQModel``, as CompVis' unconditional LDMs) or ``vae/`` (an ``AutoencoderKL``), a latent
  ``unet/`` whose input channels are the auto-encoder's latent channels, and ``scheduler/``. Images
  are encoded to ``z = scaling_factor * (E(x) - shift_factor)`` (the KL encoder's mode, so encoding
  is deterministic; a VQ encoder's pre-quantisation latents) and decoded by ``D(z / scaling_factor
  + shift_factor)`` (the VQ decoder quantises), as diffusers' ``LDMPipeline`` and Stable Diffusion
  pipelines do. Folders with a text encoder are text-conditioned pipelines: they are
  ``prompt_inpaint``'s models (:mod:`defectforge.generative.inpaint`), not these.

Loading never touches the network (``local_files_only=True``); a missing file is an error that
names it.

diffusers and safetensors are optional (``pip install defectforge[generative]``): they are
imported inside the functions that need them, so this module imports without them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import torch

__all__ = ["DiffusionModel", "require_diffusers", "tiny_unet", "tiny_latent_model", "build_unet",
           "load_diffusion_model", "resolve_model", "UNET_WIDTHS", "AUTOENCODER_FOLDERS"]

#: Sub-folder of a latent diffusion folder per auto-encoder class (diffusers' pipeline layouts:
#: ``LDMPipeline`` saves its ``VQModel`` as ``vqvae/``, Stable Diffusion its ``AutoencoderKL`` as ``vae/``).
AUTOENCODER_FOLDERS = {"VQModel": "vqvae", "AutoencoderKL": "vae"}

#: ``block_out_channels`` of the UNets ``defectforge train ddpm`` builds, by width name. ``small``
#: is sized for a 2-core CPU (0.8 M parameters); ``base`` is the layout of diffusers'
#: unconditional-training example scaled down (google/ddpm-cifar10-32 uses 128, 256, 256, 256).
UNET_WIDTHS = {"tiny": (8, 16), "small": (16, 32, 32, 64), "base": (64, 128, 128, 256)}


def require_diffusers():
    """Import diffusers, or raise an ImportError that says how to install it."""
    try:
        import diffusers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the generative methods need diffusers and safetensors: "
                          "pip install 'defectforge[generative]'") from exc
    return diffusers


class DiffusionModel:
    """A denoiser (diffusers ``UNet2DModel``) with its noise scheduler, in pixel or latent space.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        Predicts the noise (``prediction_type`` of the scheduler) of a batch in ``[-1, 1]`` (pixel
        space) or of scaled latents (latent space).
    scheduler : diffusers.DDPMScheduler or DDIMScheduler
        The training noise schedule; samplers make their own DDPM or DDIM scheduler from its config.
    identity : str
        What a synthesizer's ``config()`` records for this model (its folder, or a description).
    autoencoder : diffusers.VQModel or diffusers.AutoencoderKL, optional
        For a latent diffusion model: the auto-encoder of the UNet's latent space.

    Attributes
    ----------
    size, channels : int
        The images the model takes and makes (pixels): for a latent model the UNet's sample size x
        the auto-encoder's downsampling factor, and the auto-encoder's image channels.
    latent_size, latent_channels : int
        What the sampler denoises: the UNet's sample size and channels (equal to ``size``,
        ``channels`` for a pixel-space model).
    """

    def __init__(self, unet, scheduler, identity: str = "in-memory model", autoencoder=None):
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.identity = str(identity)
        self.autoencoder = None if autoencoder is None else autoencoder.eval()
        if self.autoencoder is not None:
            latent = int(self.autoencoder.config.latent_channels)
            if latent != int(unet.config.in_channels):
                raise ValueError(f"the UNet takes {unet.config.in_channels} channels but the auto-encoder's latents "
                                 f"have {latent}: they do not belong to the same latent diffusion model")

    @property
    def latent(self) -> bool:
        """Whether the UNet denoises an auto-encoder's latents (latent diffusion)."""
        return self.autoencoder is not None

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def latent_size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def downsampling(self) -> int:
        """Pixels per latent cell along a side (diffusers' ``vae_scale_factor``; 1 in pixel space)."""
        if self.autoencoder is None:
            return 1
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    @property
    def channels(self) -> int:
        return int(self.autoencoder.config.in_channels) if self.latent else self.latent_channels

    @property
    def size(self) -> int:
        return self.latent_size * self.downsampling

    def make_scheduler(self, kind: str):
        """A fresh scheduler of ``kind`` ("ddpm" or "ddim") with the training schedule's config."""
        from diffusers import DDIMScheduler, DDPMScheduler

        cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[kind]
        return cls.from_config(self.scheduler.config)

    def to(self, device) -> DiffusionModel:
        """Move the UNet (and auto-encoder) to ``device``; returns ``self``."""
        self.unet.to(device)
        if self.autoencoder is not None:
            self.autoencoder.to(device)
        return self

    def _scale(self) -> tuple[float, float]:
        config = self.autoencoder.config
        shift = getattr(config, "shift_factor", None)
        return float(getattr(config, "scaling_factor", 1.0) or 1.0), float(shift or 0.0)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_invariant: bool = True) -> torch.Tensor:
        """``(B, channels, size, size)`` images in ``[-1, 1]`` -> what the sampler denoises (identity in pixel space).

        ``batch_invariant`` encodes one image at a time, so a latent never depends on its batch.
        """
        if not self.latent:
            return images
        scale, shift = self._scale()
        parts = images.split(1) if batch_invariant else (images,)
        out = []
        for part in parts:
            enc = self.autoencoder.encode(part)
            z = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else enc.latents
            out.append((z - shift) * scale)
        return torch.cat(out, 0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_invariant: bool = True) -> torch.Tensor:
        """Inverse of :meth:`encode`: sampler output -> ``(B, channels, size, size)`` images in ``[-1, 1]`` (clamped)."""
        if not self.latent:
            return latents
        scale, shift = self._scale()
        parts = latents.split(1) if batch_invariant else (latents,)
        out = [self.autoencoder.decode(part / scale + shift).sample for part in parts]
        return torch.cat(out, 0).clamp(-1.0, 1.0)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``unet/`` and ``scheduler/`` (and ``vqvae/`` or ``vae/``) under ``folder`` (safetensors weights)."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        if self.autoencoder is not None:
            sub = AUTOENCODER_FOLDERS.get(type(self.autoencoder).__name__, "vae")
            self.autoencoder.save_pretrained(folder / sub, safe_serialization=True)

    def __repr__(self) -> str:
        kind = f", latent {self.latent_channels}x{self.latent_size}x{self.latent_size}" if self.latent else ""
        return f"DiffusionModel({self.identity!r}, size={self.size}, channels={self.channels}{kind})"


def build_unet(size: int, channels: int, width: str | tuple[int, ...] = "small", layers_per_block: int = 1):
    """A diffusers ``UNet2DModel`` for ``size`` px, ``channels`` channels (attention at the lowest level).

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("diffusers")
    >>> unet = build_unet(16, 1, "tiny")
    >>> unet.config.sample_size, unet.config.in_channels
    (16, 1)
    """
    require_diffusers()
    from diffusers import UNet2DModel

    blocks = UNET_WIDTHS[width] if isinstance(width, str) else tuple(int(c) for c in width)
    n = len(blocks)
    if size % (2 ** (n - 1)):
        raise ValueError(f"size={size} must be divisible by {2 ** (n - 1)} for a UNet of {n} levels")
    down = ["DownBlock2D"] * (n - 1) + (["AttnDownBlock2D"] if n > 2 else ["DownBlock2D"])
    up = (["AttnUpBlock2D"] if n > 2 else ["UpBlock2D"]) + ["UpBlock2D"] * (n - 1)
    groups = min(8, blocks[0])
    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                       layers_per_block=layers_per_block, block_out_channels=blocks,
                       down_block_types=tuple(down), up_block_types=tuple(up), norm_num_groups=groups)


def default_scheduler(num_train_timesteps: int = 1000, clip_sample: bool = True):
    """DDPM schedule of Ho et al. 2020: linear betas 1e-4..0.02 over 1000 steps, epsilon prediction.

    ``clip_sample`` clips the predicted ``x_0`` to ``[-1, 1]`` (right for pixels; latent models
    switch it off, as diffusers' LDM and Stable Diffusion schedulers do).
    """
    require_diffusers()
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         beta_start=1e-4, beta_end=0.02, prediction_type="epsilon", clip_sample=clip_sample)


def tiny_unet(size: int = 16, channels: int = 3, seed: int = 0, num_train_timesteps: int = 1000) -> DiffusionModel:
    """A tiny random diffusion model (for tests and examples: about 20 k parameters, no files).

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("diffusers")
    >>> tiny_unet(16, 3)
    DiffusionModel('tiny random UNet (seed 0)', size=16, channels=3)
    """
    require_diffusers()
    state = torch.random.get_rng_state()
    try:  # initialise from a seed without leaving the global generator changed
        torch.manual_seed(seed)
        unet = build_unet(size, channels, "tiny")
    finally:
        torch.random.set_rng_state(state)
    return DiffusionModel(unet, default_scheduler(num_train_timesteps), f"tiny random UNet (seed {seed})")


def tiny_latent_model(size: int = 16, channels: int = 3, kind: str = "vq", seed: int = 0,
                      num_train_timesteps: int = 1000) -> DiffusionModel:
    """A tiny random latent diffusion model (for tests and examples; no files).

    A two-level auto-encoder (``kind="vq"``: diffusers' ``VQModel``, 3 latent channels and 32 codes,
    the ``LDMPipeline`` kind; ``"kl"``: ``AutoencoderKL``, 4 latent channels, Stable Diffusion's kind),
    so latents are ``size / 2`` px, and a tiny UNet on them.

    Examples
    --------
    >>> import pytest; _ = pytest.importorskip("diffusers")
    >>> tiny_latent_model(16, 3, "kl")
    DiffusionModel('tiny random latent model (kl, seed 0)', size=16, channels=3, latent 4x8x8)
    """
    require_diffusers()
    from diffusers import AutoencoderKL, VQModel

    if kind not in ("vq", "kl"):
        raise ValueError(f"kind must be 'vq' or 'kl', got {kind!r}")
    if size % 4:
        raise ValueError(f"size={size} must be divisible by 4 (latents are size/2 px, a two-level UNet halves them)")
    blocks = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8, sample_size=size,
                  in_channels=channels, out_channels=channels)
    state = torch.random.get_rng_state()
    try:  # initialise from a seed without leaving the global generator changed
        torch.manual_seed(seed)
        if kind == "vq":
            autoencoder = VQModel(latent_channels=3, num_vq_embeddings=32, **blocks)
        else:
            autoencoder = AutoencoderKL(latent_channels=4, **blocks)
        unet = build_unet(size // 2, int(autoencoder.config.latent_channels), "tiny")
    finally:
        torch.random.set_rng_state(state)
    return DiffusionModel(unet, default_scheduler(num_train_timesteps, clip_sample=False),
                          f"tiny random latent model ({kind}, seed {seed})", autoencoder)


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


def _weights(folder: Path, what: str) -> list[Path]:
    """The weight files of a diffusers model folder (safetensors or .bin); an error naming them if neither exists."""
    files = [folder / "diffusion_pytorch_model.safetensors", folder / "diffusion_pytorch_model.bin"]
    if not any(f.exists() for f in files):
        raise FileNotFoundError(f"{what}'s weights are missing: {files[0]} does not exist")
    return [f for f in files if f.exists()]


def _class_name(config: Path) -> str:
    import json

    try:
        return str(json.loads(config.read_text()).get("_class_name", ""))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config} is not a readable JSON model configuration: {exc}") from exc


_CACHE: dict[tuple, DiffusionModel] = {}
_CACHE_LOCK = threading.Lock()


def load_diffusion_model(path: str | os.PathLike) -> DiffusionModel:
    """Load a diffusion model folder written by ``defectforge train ddpm`` or diffusers (local files only).

    ``path`` is a folder with ``unet/`` and ``scheduler/`` (``DDPMPipeline`` layout), or the
    ``model/`` folder inside a training run, or a folder with a bare UNet's ``config.json``, or a
    latent diffusion folder: ``vqvae/`` (``VQModel``) or ``vae/`` (``AutoencoderKL``) beside a latent
    ``unet/`` and ``scheduler/`` (``LDMPipeline`` layout). Folders with a ``text_encoder/`` are refused
    with a message: a Stable Diffusion inpainting folder is the model of ``prompt_inpaint``
    (:mod:`defectforge.generative.inpaint`).

    Examples
    --------
    >>> import pytest, tempfile; _ = pytest.importorskip("diffusers")
    >>> folder = tempfile.mkdtemp(); tiny_latent_model(16, 3, "vq").save(folder)
    >>> sorted(p.name for p in __import__("pathlib").Path(folder).iterdir())
    ['scheduler', 'unet', 'vqvae']
    >>> model = load_diffusion_model(folder)
    >>> model.latent, model.size, model.latent_size
    (True, 16, 8)
    """
    require_diffusers()
    import diffusers
    from diffusers import DDPMScheduler, UNet2DModel

    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"model folder {root} does not exist; pass a folder written by "
                                "'defectforge train ddpm' (OUT/model), a diffusers UNet2DModel folder or a "
                                "latent diffusion folder (vqvae/ or vae/, unet/, scheduler/)")
    if (root / "model" / "unet").is_dir():
        root = root / "model"
    if (root / "text_encoder").is_dir():
        raise ValueError(f"{root} holds a text_encoder/ (a text-conditioned pipeline); realnet_sdas and masked_diffusion "
                         "sample unconditional UNet2DModel folders (pixel or latent); a Stable Diffusion inpainting "
                         "folder is prompt_inpaint's model")
    encoders = [root / sub for sub in ("vqvae", "vae") if (root / sub).is_dir()]
    if len(encoders) > 1:
        raise ValueError(f"{root} holds both vqvae/ and vae/: keep the auto-encoder the UNet was trained on")
    unet_dir = root / "unet" if (root / "unet").is_dir() or encoders else root
    config = _need(unet_dir / "config.json", "the UNet's configuration is missing")
    unet_class = _class_name(config)
    if unet_class and unet_class != "UNet2DModel":
        raise ValueError(f"{config} is a {unet_class}; these samplers need an unconditional UNet2DModel "
                         "(a text-conditioned UNet belongs to a Stable Diffusion folder: prompt_inpaint)")
    files = [config, *_weights(unet_dir, "the UNet")]
    ae_class = None
    if encoders:
        ae_config = _need(encoders[0] / "config.json", "the auto-encoder's configuration is missing")
        ae_class = _class_name(ae_config) or {"vqvae": "VQModel", "vae": "AutoencoderKL"}[encoders[0].name]
        if ae_class not in AUTOENCODER_FOLDERS:
            raise ValueError(f"{ae_config} is a {ae_class}; latent diffusion folders need a VQModel (vqvae/) "
                             "or an AutoencoderKL (vae/)")
        files += [ae_config, *_weights(encoders[0], "the auto-encoder")]
    key = (str(root.resolve()), *(f.stat().st_mtime_ns for f in files))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
        sched_dir = root / "scheduler"
        if sched_dir.is_dir():
            _need(sched_dir / "scheduler_config.json", "the scheduler's configuration is missing")
            scheduler = DDPMScheduler.from_pretrained(sched_dir, local_files_only=True)
        elif encoders:
            raise FileNotFoundError(f"the scheduler is missing: {sched_dir} does not exist (a latent diffusion "
                                    "folder needs the schedule its UNet was trained with)")
        else:
            scheduler = default_scheduler()
        autoencoder = None
        if encoders:
            autoencoder = getattr(diffusers, ae_class).from_pretrained(encoders[0], local_files_only=True,
                                                                       low_cpu_mem_usage=False)
        model = DiffusionModel(unet, scheduler, str(root), autoencoder)
        _CACHE[key] = model
        return model


def resolve_model(model: Any) -> DiffusionModel:
    """A :class:`DiffusionModel` from a model, or a folder path (loaded once and cached)."""
    if isinstance(model, DiffusionModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_diffusion_model(model)
    raise TypeError(f"model must be a folder path or a DiffusionModel, got {type(model).__name__}; "
                    "train one with 'defectforge train ddpm DATA OUT' and pass OUT/model, or pass a "
                    "latent diffusion folder (vqvae/ or vae/, unet/, scheduler/)")
