"""``defectforge train ddpm|gan|vqvae DATA OUT``: train a small generator on your images (ddpm and gan need the
generative extra; vqvae, DSR's two-level VQ-VAE, needs none)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from .common import fail


def train_command(
    kind: str = typer.Argument(..., help="ddpm (diffusers UNet2DModel), gan (conditional GAN of defect crops + masks) or vqvae (DSR's two-level VQ-VAE, for the dsr method and detector)."),
    data: str = typer.Argument(..., help="Folder of normal images, or an MVTec-AD category (train/good; "
                               "test/<type> + ground_truth for --on defects); --on defects also reads labelme, "
                               "COCO, YOLO-seg and mask folders (detected)."),
    out: str = typer.Argument(..., help="Run folder: checkpoint.safetensors, model/, previews/, train.json."),
    on: Optional[str] = typer.Option(None, "--on", help="normal (default for ddpm and vqvae) or defects (few-shot crops "
                                     "of the real defects; default and only choice for gan)."),
    steps: int = typer.Option(2000, "--steps", help="Optimisation steps in total (a resumed run continues to it)."),
    size: int = typer.Option(64, "--size", help="Training resolution in px (64-128 advised; vqvae: the resolution it will encode, e.g. 128)."),
    batch_size: int = typer.Option(16, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default 1e-4 ddpm, 2e-4 gan, 1e-3 vqvae)."),
    seed: int = typer.Option(0, "--seed"),
    width: str = typer.Option("small", "--width", help="Network width: tiny, small or base (vqvae base = DSR's sizes, small = a CPU size)."),
    patch: Optional[int] = typer.Option(None, "--patch", help="vqvae: random square crops of this many px of the --size images, new every step; ddpm on normal images: random square patches "
                                        "of this many px (4 per image) instead of whole images."),
    few_shot: str = typer.Option("1/3", "--few-shot", help="Part of each defect type's images that trains: a "
                                 "fraction (1/3) or a count per type; the rest is held out. The split is "
                                 "benchmark --few-shot's for the same spec and --split-seed (split.json records it)."),
    split_seed: int = typer.Option(0, "--split-seed"),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every"),
    preview_every: int = typer.Option(500, "--preview-every", help="Write previews/step_N.png every N steps (0: never)."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop (checkpointed) once this "
                                                "much time is spent; --resume continues."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in OUT from its checkpoint."),
    device: str = typer.Option("cpu", "--device"),
):
    """Train a DDPM, a defect GAN or DSR's VQ-VAE from scratch, resumable (DDPM/GAN: EMA weights and previews)."""
    from ..generative.train import TrainConfig, train

    cfg = TrainConfig(kind=kind, data=data, out=out, steps=steps, size=size, batch_size=batch_size, lr=lr,
                      seed=seed, on=on, width=width, ema_decay=ema_decay, checkpoint_every=checkpoint_every,
                      preview_every=preview_every, max_minutes=max_minutes, patch=patch, few_shot=few_shot,
                      split_seed=split_seed, device=device)
    try:
        summary = train(cfg, resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, ImportError) as exc:
        fail(f"{exc}")
    typer.echo(json.dumps(summary, indent=2))
