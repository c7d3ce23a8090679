"""Denoisers and schedulers for the diffusion samplers: build, save and load them (diffusers, local files only).

A *diffusion model* here is a diffusers ``UNet2DModel`` (pixel space, predicting the noise) plus the
noise scheduler it was trained with, saved as a folder in the layout of diffusers' ``DDPMPipeline``:
``unet/`` (``config.json`` + ``diffusion_pytorch_model.safetensors``) and ``scheduler/``
(``scheduler_config.json``). A folder holding a bare UNet (``config.json`` at its top) loads too,
with the standard DDPM schedule (1000 steps, linear betas 1e-4..0.02: Ho et al. 2020, diffusers'
``DDPMScheduler`` defaults). Loading never touches the network (``local_files_only=True``); a
missing file is an error that names it.

diffusers and safetensors are optional (``pip install defectforge[generative]``): they are
imported inside the functions that need them, so this module imports without them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import torch

__all__ = ["DiffusionModel", "require_diffusers", "tiny_unet", "build_unet", "load_diffusion_model",
           "resolve_model", "UNET_WIDTHS"]

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
    """A pixel-space denoiser (diffusers ``UNet2DModel``) with its noise scheduler.

    Parameters
    ----------
    unet : diffusers.UNet2DModel
        Predicts the noise (``prediction_type`` of the scheduler) of a ``(B, C, S, S)`` batch in ``[-1, 1]``.
    scheduler : diffusers.DDPMScheduler or DDIMScheduler
        The training noise schedule; samplers make their own DDPM or DDIM scheduler from its config.
    identity : str
        What a synthesizer's ``config()`` records for this model (its folder, or a description).
    """

    def __init__(self, unet, scheduler, identity: str = "in-memory model"):
        self.unet = unet.eval()
        self.scheduler = scheduler
        self.identity = str(identity)

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def size(self) -> int:
        s = self.unet.config.sample_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    def make_scheduler(self, kind: str):
        """A fresh scheduler of ``kind`` ("ddpm" or "ddim") with the training schedule's config."""
        from diffusers import DDIMScheduler, DDPMScheduler

        cls = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}[kind]
        return cls.from_config(self.scheduler.config)

    def save(self, folder: str | os.PathLike) -> None:
        """Write ``unet/`` and ``scheduler/`` under ``folder`` (safetensors weights)."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")

    def __repr__(self) -> str:
        return f"DiffusionModel({self.identity!r}, size={self.size}, channels={self.channels})"


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


def default_scheduler(num_train_timesteps: int = 1000):
    """DDPM schedule of Ho et al. 2020: linear betas 1e-4..0.02 over 1000 steps, epsilon prediction."""
    require_diffusers()
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="linear",
                         beta_start=1e-4, beta_end=0.02, prediction_type="epsilon", clip_sample=True)


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


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    return path


_CACHE: dict[tuple, DiffusionModel] = {}
_CACHE_LOCK = threading.Lock()


def load_diffusion_model(path: str | os.PathLike) -> DiffusionModel:
    """Load a diffusion model folder written by ``defectforge train ddpm`` or diffusers (local files only).

    ``path`` is a folder with ``unet/`` and ``scheduler/`` (``DDPMPipeline`` layout), or the
    ``model/`` folder inside a training run, or a folder with a bare UNet's ``config.json``.
    Folders of latent or text-conditioned pipelines (``vae/``, ``text_encoder/``) are refused with a
    message: these samplers run pixel-space UNets; a Stable Diffusion inpainting folder is the model
    of ``prompt_inpaint`` (:mod:`defectforge.generative.inpaint`).
    """
    require_diffusers()
    from diffusers import DDPMScheduler, UNet2DModel

    root = Path(path).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"model folder {root} does not exist; pass a folder written by "
                                "'defectforge train ddpm' (OUT/model) or a diffusers UNet2DModel folder")
    if (root / "model" / "unet").is_dir():
        root = root / "model"
    for part in ("vae", "text_encoder"):
        if (root / part).is_dir():
            raise ValueError(f"{root} holds a {part}/ (a latent or text-conditioned pipeline); realnet_sdas and "
                             "masked_diffusion sample pixel-space UNet2DModel folders only (unet/ + scheduler/); "
                             "a Stable Diffusion inpainting folder is prompt_inpaint's model")
    unet_dir = root / "unet" if (root / "unet").is_dir() else root
    config = _need(unet_dir / "config.json", "the UNet's configuration is missing")
    weights = [unet_dir / "diffusion_pytorch_model.safetensors", unet_dir / "diffusion_pytorch_model.bin"]
    if not any(w.exists() for w in weights):
        raise FileNotFoundError(f"the UNet's weights are missing: {weights[0]} does not exist")
    key = (str(root.resolve()), config.stat().st_mtime_ns,
           max(w.stat().st_mtime_ns for w in weights if w.exists()))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True, low_cpu_mem_usage=False)
        sched_dir = root / "scheduler"
        if sched_dir.is_dir():
            _need(sched_dir / "scheduler_config.json", "the scheduler's configuration is missing")
            scheduler = DDPMScheduler.from_pretrained(sched_dir, local_files_only=True)
        else:
            scheduler = default_scheduler()
        model = DiffusionModel(unet, scheduler, str(root))
        _CACHE[key] = model
        return model


def resolve_model(model: Any) -> DiffusionModel:
    """A :class:`DiffusionModel` from a model, or a folder path (loaded once and cached)."""
    if isinstance(model, DiffusionModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_diffusion_model(model)
    raise TypeError(f"model must be a folder path or a DiffusionModel, got {type(model).__name__}; "
                    "train one with 'defectforge train ddpm DATA OUT' and pass OUT/model")
