"""``defectforge train ddpm|gan DATA OUT``: small generators trained from scratch on the user's images.

- ``ddpm``: a diffusers ``UNet2DModel`` trained with the epsilon objective of Ho et al. 2020
  (uniform timesteps, MSE on the noise, random horizontal flips as diffusers' unconditional
  training example) on normal images or patches (``on="normal"``, for ``realnet_sdas``) or on
  crops of the few-shot real defects (``on="defects"``, content for ``masked_diffusion``,
  Defect-Gen-style). AdamW, learning rate 1e-4 (diffusers' example).
- ``gan``: :mod:`defectforge.generative.gan` on defect crops + masks (Adam 2e-4, betas (0.5, 0.999): DCGAN).
- ``vqvae``: DSR's two-level VQ-VAE (:mod:`defectforge.generative.vqvae`) on normal images, MSE
  reconstruction + commitment, EMA codebooks, Adam 1e-3 (zalandoresearch/pytorch-vq-vae, whose
  quantiser DSR uses; DSR does not publish its ImageNet pretraining settings); ``patch`` px random
  crops of the ``size`` px images, new every step (the model is fully convolutional); dead codes
  restarted every 100 steps. Needs no optional extra: its checkpoint (``checkpoint.pt``) and model
  (``vqvae.pt``) are ``torch.save`` files read back with ``weights_only=True``.

Every run is seeded: step ``k``'s batch, timesteps, noise and augmentations come from a generator
keyed by ``(seed, k)`` (:func:`~defectforge.core.seeding.sample_rng`), so a run resumed from its
checkpoint ends with the same weights as an uninterrupted one. Checkpoints are one safetensors file
(``checkpoint.safetensors``: weights, EMA weights, optimiser state, the step; written atomically).
EMA weights use diffusers' ``EMAModel`` warm-up ``decay_k = min(decay, (1 + k) / (10 + k))``. A
progress bar shows loss and ETA; a preview grid is written every ``preview_every`` steps; the
``max_minutes`` budget stops the run after the step that crosses it (checkpointed, resumable).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..core.seeding import Stream, sample_rng
from ..core.validation import check_choice, check_range
from ..io.files import atomic_write_bytes, atomic_write_text

__all__ = ["TrainConfig", "train", "KINDS", "load_checkpoint_state"]

KINDS = ("ddpm", "gan", "vqvae")
CHECKPOINT = "checkpoint.safetensors"
VQVAE_CHECKPOINT = "checkpoint.pt"
#: Dead-code restarts of the VQ-VAE's codebooks: every 100 steps, codes whose EMA usage is below
#: 0.01 move onto random latents of the batch (not in DSR; see :mod:`defectforge.generative.vqvae`).
VQVAE_RESTART_EVERY, VQVAE_RESTART_THRESHOLD = 100, 0.01


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``OUT/train_config.json``)."""

    kind: str
    data: str
    out: str
    steps: int = 2000
    size: int = 64
    batch_size: int = 16
    lr: float | None = None
    seed: int = 0
    on: str | None = None
    width: str = "small"
    ema_decay: float = 0.999
    checkpoint_every: int = 100
    preview_every: int = 500
    max_minutes: float | None = None
    patch: int | None = None
    few_shot: str = "1/3"
    split_seed: int = 0
    num_train_timesteps: int = 1000
    device: str = "cpu"

    def checked(self) -> "TrainConfig":
        check_choice("kind", self.kind, KINDS)
        if self.on is None:
            self.on = "defects" if self.kind == "gan" else "normal"
        check_choice("on", self.on, ("normal", "defects"))
        if self.kind == "vqvae" and self.on != "normal":
            raise ValueError("the VQ-VAE trains on normal images: use --on normal (the default for vqvae)")
        if self.kind == "gan" and self.on != "defects":
            raise ValueError("the GAN trains on defect crops and masks: use --on defects (the default)")
        check_range("steps", self.steps, 1, 10 ** 8, integer=True)
        check_range("size", self.size, 8, 512, integer=True)
        check_range("batch_size", self.batch_size, 1, 4096, integer=True)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0)
        check_range("checkpoint_every", self.checkpoint_every, 1, 10 ** 8, integer=True)
        check_range("preview_every", self.preview_every, 0, 10 ** 8, integer=True)
        if self.max_minutes is not None:
            check_range("max_minutes", self.max_minutes, 0.0, 10 ** 6)
        from ..sources.defects import parse_few_shot

        self.few_shot = str(self.few_shot)
        parse_few_shot(self.few_shot)
        if self.lr is None:
            self.lr = {"ddpm": 1e-4, "gan": 2e-4, "vqvae": 1e-3}[self.kind]
        return self


# --- checkpoints ------------------------------------------------------------------------------
def _flatten(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in state.items()}


def _opt_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            tensors[f"{prefix}.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, json.dumps(sd["param_groups"])


def _load_opt(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups)})


def _sub(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def save_checkpoint(path: Path, step: int, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], extra: dict[str, Any]) -> None:
    """One safetensors file with every module's and optimiser's state (atomic replace)."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    meta = {"step": str(step), "extra": json.dumps(extra)}
    for name, module in modules.items():
        tensors.update(_flatten(name, module.state_dict()))
    for name, opt in optimizers.items():
        t, groups = _opt_tensors(name, opt)
        tensors.update(t)
        meta[f"{name}.param_groups"] = groups
    # a temporary name of this write alone: two processes saving to one cache never share one
    atomic_write_bytes(path, save(tensors, metadata=meta))


def load_checkpoint_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a checkpoint written by :func:`train`."""
    from safetensors import safe_open

    tensors = {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return tensors, meta


def _restore(path: Path, modules, optimizers) -> int:
    tensors, meta = load_checkpoint_state(path)
    for name, module in modules.items():
        module.load_state_dict(_sub(name, tensors))
    for name, opt in optimizers.items():
        _load_opt(name, opt, tensors, meta[f"{name}.param_groups"])
    return int(meta["step"])


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    d = min(decay, (1 + step) / (10 + step))  # diffusers EMAModel warm-up
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(d).add_(pm.detach(), alpha=1 - d)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


def _step_generator(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    rng = sample_rng(seed, step, stream=Stream.SYNTHESIS)  # the step's own draws, keyed as a sample by (seed, step)
    g = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 63 - 1)))
    return rng, g


def _grid(images: np.ndarray, cols: int = 8, column_labels=None, row_labels=None) -> np.ndarray:
    """Images in rows of ``cols``; with labels, a name over each column and left of each row."""
    import cv2

    n, h, w, c = images.shape
    rows = math.ceil(n / cols)
    top, left = (16 if column_labels else 0), (48 if row_labels else 0)
    grid = np.full((top + rows * (h + 2) + 2, left + cols * (w + 2) + 2, c), 255, np.uint8)
    for k in range(n):
        y, x = top + 2 + (k // cols) * (h + 2), left + 2 + (k % cols) * (w + 2)
        grid[y:y + h, x:x + w] = images[k]
    ink = (20,) * c
    for k, text in enumerate(column_labels or []):
        cv2.putText(grid, str(text)[: max(1, w // 6)], (left + 3 + k * (w + 2), 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    ink, 1, cv2.LINE_AA)
    for r, text in enumerate(row_labels or []):
        cv2.putText(grid, str(text)[:7], (2, top + 2 + r * (h + 2) + h // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.33,
                    ink, 1, cv2.LINE_AA)
    return grid


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# --- training ----------------------------------------------------------------------------------
def train(cfg: TrainConfig, progress: bool = True, resume: bool = False) -> dict[str, Any]:
    """Train (or resume) a run; returns the summary also written to ``OUT/train.json``."""
    cfg = cfg.checked()
    if cfg.kind != "vqvae":
        from .models import require_diffusers

        require_diffusers()
    out = Path(cfg.out)
    ckpt = out / (VQVAE_CHECKPOINT if cfg.kind == "vqvae" else CHECKPOINT)
    if ckpt.exists() and not resume:
        raise FileExistsError(f"{out} already holds a training run ({ckpt}); pass --resume to continue it "
                              "or choose another OUT")
    if resume and (out / "train_config.json").exists():
        before = json.loads((out / "train_config.json").read_text())
        changed = {k: (before.get(k), v) for k, v in asdict(cfg).items()
                   if k not in ("steps", "max_minutes", "checkpoint_every", "preview_every", "device", "out")
                   and before.get(k) != v}
        if changed:
            raise ValueError(f"--resume with different settings than the run in {out}: "
                             + ", ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items()))
    out.mkdir(parents=True, exist_ok=True)
    (out / "previews").mkdir(exist_ok=True)
    atomic_write_text(out / "train_config.json", json.dumps(asdict(cfg), indent=2))
    return {"ddpm": _train_ddpm, "gan": _train_gan, "vqvae": _train_vqvae}[cfg.kind](cfg, out, ckpt, progress)


def _first_channels(data: str) -> int:
    from ..io.images import list_images, read_image
    from ..io.mvtec import is_mvtec_category

    root = Path(data)
    folder = root / "train" / "good" if is_mvtec_category(root) else root
    return int(read_image(list_images(folder, what="training data folder")[0]).shape[2])


def _data(cfg: TrainConfig, out: Path):
    from .data import load_defect_crops, load_normal_images

    channels = _first_channels(cfg.data)
    if cfg.on == "normal":
        return SimpleNamespace(images=load_normal_images(cfg.data, cfg.size, channels, cfg.patch, seed=cfg.seed),
                               channels=channels)
    crops = load_defect_crops(cfg.data, cfg.size, channels, cfg.few_shot, cfg.split_seed)
    atomic_write_text(out / "split.json", json.dumps({**crops.split, "types": crops.types}, indent=2))
    crops.channels = channels
    return crops


class _Loop:
    """Progress bar, time budget, checkpoint and preview cadence shared by both trainers."""

    def __init__(self, cfg: TrainConfig, start: int, progress: bool):
        from tqdm.auto import tqdm

        self.cfg, self.t0 = cfg, time.monotonic()
        self.bar = tqdm(total=cfg.steps, initial=start, desc=f"train {cfg.kind}", unit="step",
                        disable=not progress, dynamic_ncols=True)
        self.losses: list[float] = []

    def tick(self, step: int, losses: dict[str, float]) -> bool:
        """Record step ``step`` (1-based); ``True`` when the time budget is spent."""
        self.losses.append(sum(losses.values()))
        self.bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        self.bar.update(1)
        return self.cfg.max_minutes is not None and time.monotonic() - self.t0 >= 60 * self.cfg.max_minutes

    def close(self):
        self.bar.close()
        return time.monotonic() - self.t0


def _summary(cfg, out: Path, start: int, step: int, seconds: float, losses: list[float], extra: dict) -> dict:
    summary = {"kind": cfg.kind, "on": cfg.on, "steps_done": step, "steps_requested": cfg.steps,
               "resumed_from": start, "seconds_this_run": round(seconds, 1),
               "seconds_per_step": round(seconds / max(1, step - start), 3),
               "stopped_by_budget": step < cfg.steps,
               "loss_last_100": float(np.mean(losses[-100:])) if losses else None, **extra}
    atomic_write_text(out / "train.json", json.dumps(summary, indent=2))
    return summary


def _train_ddpm(cfg: TrainConfig, out: Path, ckpt: Path, progress: bool) -> dict:
    import copy

    from ..io.images import write_image
    from .models import DiffusionModel, build_unet, default_scheduler
    from .sampler import diffusion_sample

    loaded = _data(cfg, out)
    images, channels = loaded.images, loaded.channels
    data = images.float().div(127.5).sub(1.0)
    torch.manual_seed(cfg.seed)  # the UNet's initial weights (diffusers draws them from torch's global generator)
    unet = build_unet(cfg.size, channels, cfg.width).to(cfg.device)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = default_scheduler(cfg.num_train_timesteps)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=1e-2)
    modules, opts = {"model": unet, "ema": ema}, {"opt": opt}
    start = _restore(ckpt, modules, opts) if ckpt.exists() else 0
    loop = _Loop(cfg, start, progress)
    step = start
    n = len(data)

    def finish():
        save_checkpoint(ckpt, step, modules, opts, {"kind": "ddpm"})
        DiffusionModel(ema, scheduler, str(out / "model")).save(out / "model")

    while step < cfg.steps:
        rng, g = _step_generator(cfg.seed, step)
        idx = torch.from_numpy(rng.integers(0, n, size=cfg.batch_size))
        x = data[idx]
        flip = torch.rand(len(x), generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x).to(cfg.device)
        noise = torch.randn(x.shape, generator=g).to(cfg.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x),), generator=g).to(cfg.device)
        pred = unet(scheduler.add_noise(x, noise, t), t).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(ema, unet, cfg.ema_decay, step)
        step += 1
        spent = loop.tick(step, {"loss": loss.item()})
        if step % cfg.checkpoint_every == 0:
            finish()
        if cfg.preview_every and step % cfg.preview_every == 0:
            gens = [torch.Generator().manual_seed(cfg.seed * 1000 + k) for k in range(8)]
            model = DiffusionModel(ema, scheduler)
            samples = diffusion_sample(model, gens, scheduler="ddim", num_inference_steps=50, batch_invariant=False)
            write_image(out / "previews" / f"step_{step:07d}.png", _grid(_to_uint8(samples)))
        if spent:
            break
    finish()
    seconds = loop.close()
    params = sum(p.numel() for p in unet.parameters())
    return _summary(cfg, out, start, step, seconds, loop.losses, {"parameters": params, "images": n,
                                                                   "model": str(out / "model")})


def _train_gan(cfg: TrainConfig, out: Path, ckpt: Path, progress: bool) -> dict:
    import copy

    from ..io.images import write_image
    from .gan import Z_DIM, DefectDiscriminator, DefectGenerator, diff_augment, mask_of, save_generator

    crops = _data(cfg, out)
    images, masks, labels, channels, types = crops.images, crops.masks, crops.labels, crops.channels, crops.types
    x_all = torch.cat([images.float().div(127.5).sub(1.0), masks * 2 - 1], 1)
    width = {"tiny": 8, "small": 32, "base": 64}[cfg.width]
    mask_fraction = round(float(masks.mean()), 4)
    torch.manual_seed(cfg.seed)
    G = DefectGenerator(cfg.size, channels, len(types), width).to(cfg.device)
    D = DefectDiscriminator(cfg.size, channels, len(types), width).to(cfg.device)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    modules, opts = {"G": G, "D": D, "G_ema": G_ema}, {"opt_g": opt_g, "opt_d": opt_d}
    start = _restore(ckpt, modules, opts) if ckpt.exists() else 0
    loop = _Loop(cfg, start, progress)
    step, n = start, len(x_all)
    # what a generated crop's placement needs: each training crop's side as a share of its image (per type)
    extents = {t: [[round(float(v), 4) for v in crops.extents[i]] for i in range(n) if int(labels[i]) == k]
               for k, t in enumerate(types)}
    meta = {"kind": "gan", "types": types, "size": cfg.size, "channels": channels, "width": width,
            "mask_fraction": mask_fraction, "extents": extents}

    def finish():
        save_checkpoint(ckpt, step, modules, opts, meta)
        save_generator(out / "model" / "generator.safetensors", G_ema, types, extents, mask_fraction=mask_fraction)

    while step < cfg.steps:
        rng, g = _step_generator(cfg.seed, step)
        idx = torch.from_numpy(rng.integers(0, n, size=cfg.batch_size))
        real, y = x_all[idx].to(cfg.device), labels[idx].to(cfg.device)
        flip = torch.rand(len(real), generator=g) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
        z = torch.randn(len(real), Z_DIM, generator=g).to(cfg.device)
        fake_raw = G(z, y)
        fake = torch.cat([fake_raw[:, :channels], torch.tanh(fake_raw[:, channels:])], 1)
        # discriminator: non-saturating logistic loss on DiffAugmented real and fake
        d_real = D(diff_augment(real, channels, g), y)
        d_fake = D(diff_augment(fake.detach(), channels, g), y)
        loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-D(diff_augment(fake, channels, g), y)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        _ema_update(G_ema, G, cfg.ema_decay, step)
        step += 1
        spent = loop.tick(step, {"d": loss_d.item(), "g": loss_g.item()})
        if step % cfg.checkpoint_every == 0:
            finish()
        if cfg.preview_every and step % cfg.preview_every == 0:
            with torch.no_grad():
                pg = torch.Generator().manual_seed(cfg.seed)
                zz = torch.randn(16, Z_DIM, generator=pg).to(cfg.device)
                yy = torch.arange(16, device=cfg.device) % len(types)
                s = G_ema(zz, yy)
                mask = (mask_of(s).float() * 2 - 1).expand(-1, channels, -1, -1)
                # columns cycle through the defect types; two rows of crops, then their masks
                write_image(out / "previews" / f"step_{step:07d}.png",
                            _grid(_to_uint8(torch.cat([s[:, :channels], mask], 0)),
                                  column_labels=[types[k % len(types)] for k in range(8)],
                                  row_labels=["crop", "crop", "mask", "mask"]))
        if spent:
            break
    finish()
    seconds = loop.close()
    return _summary(cfg, out, start, step, seconds, loop.losses,
                    {"types": types, "crops": n, "parameters": sum(p.numel() for p in G.parameters()),
                     "model": str(out / "model" / "generator.safetensors")})


def _train_vqvae(cfg: TrainConfig, out: Path, ckpt: Path, progress: bool) -> dict:
    from ..io.files import atomic_write_bytes
    from .data import load_normal_images
    from .vqvae import VQVAE_WIDTHS, TwoLevelVQVAE, save_vqvae

    channels = _first_channels(cfg.data)
    data = load_normal_images(cfg.data, cfg.size, channels)
    if cfg.width not in VQVAE_WIDTHS:
        raise ValueError(f"width must be one of {', '.join(VQVAE_WIDTHS)} for vqvae, got {cfg.width!r}")
    crop = min(cfg.patch or cfg.size, cfg.size)
    if crop % 8:
        raise ValueError(f"the VQ-VAE needs crops whose side is a multiple of 8 (bottom /4, top /8), got {crop}")
    torch.manual_seed(cfg.seed)
    model = TwoLevelVQVAE(**VQVAE_WIDTHS[cfg.width], channels=channels).to(cfg.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = int(state["step"])
    loop = _Loop(cfg, start, progress)
    step, n = start, len(data)
    meta = {"kind": "vqvae", "size": cfg.size, "crop": crop, "width": cfg.width, "data": str(cfg.data)}
    restarted = 0

    def finish():
        import io

        buffer = io.BytesIO()
        torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict()}, buffer)
        atomic_write_bytes(ckpt, buffer.getvalue())
        save_vqvae(model, out / "vqvae.pt", {**meta, "steps": step})

    model.train()
    while step < cfg.steps:
        rng, g = _step_generator(cfg.seed, step)
        idx = torch.from_numpy(rng.integers(0, n, size=cfg.batch_size))
        ys, xs = rng.integers(0, cfg.size - crop + 1, size=(2, cfg.batch_size))
        x = torch.stack([data[i, :, y:y + crop, x0:x0 + crop] for i, y, x0 in zip(idx.tolist(), ys, xs)])
        x = x.float().div(255.0).to(cfg.device)
        recon, commitment, latents = model(x)
        mse = F.mse_loss(recon, x)
        loss = mse + commitment
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % VQVAE_RESTART_EVERY == 0 and step < cfg.steps:
            restarted += model.vq_top.restart_dead_codes(latents["z_top"], VQVAE_RESTART_THRESHOLD, g)
            restarted += model.vq_bottom.restart_dead_codes(latents["z_bot"], VQVAE_RESTART_THRESHOLD, g)
        spent = loop.tick(step, {"mse": mse.item(), "commit": commitment.item()})
        if step % cfg.checkpoint_every == 0:
            finish()
        if spent:
            break
    finish()
    seconds = loop.close()
    used = {name: int((vq.ema_cluster_size >= VQVAE_RESTART_THRESHOLD).sum())
            for name, vq in (("top", model.vq_top), ("bottom", model.vq_bottom))}
    return _summary(cfg, out, start, step, seconds, loop.losses,
                    {"parameters": sum(p.numel() for p in model.parameters()), "images": n, "crop": crop,
                     "codes_in_use": used, "codes_restarted": restarted, "model": str(out / "vqvae.pt")})
