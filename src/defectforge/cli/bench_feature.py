"""``defectforge bench --level feature``: time each feature-level synthesizer on a ``(B, C, h, w)``
batch and its share of one training step of the detector that uses it; the latent-level ``dsr``
on ``(B, C, h, w)`` bottom-encoder latents of a random ``small``-size VQ-VAE with ``C`` hidden
channels (the latents of ``(4h, 4w)`` px images), its detector step on such images."""

from __future__ import annotations

import time

def bench_feature_method(name: str, batch: int = 32, channels: int = 128, grid: int = 32, device: str = "cpu",
                         min_time: float = 2.0, train_steps: int = 3) -> dict:
    """Seconds per synthesizer call on random ``(batch, channels, grid, grid)`` features, and the
    synthesis share of ``train_steps`` training steps of the method's detector on such batches.

    The synthesizer gets what the detector gives it: GLASS-GAS a fresh discriminator of the
    detector (eval mode), PBAS the batch's per-position centres. GLASS's image-level LAS branch
    is left out of the step (``las_pool=0``): it runs a backbone and is not feature synthesis.
    """
    import torch

    import defectforge

    from ..detectors.backbones import load_backbone
    from ..detectors.registry import create_detector
    from .common import time_callable

    info = defectforge.method_info(name)
    if info.level not in ("feature", "latent"):
        raise ValueError(f"method {name!r} is {info.level}-level; --level feature times "
                         f"{', '.join(defectforge.list_methods(level='feature') + defectforge.list_methods(level='latent'))}")
    if info.level == "latent":
        return _bench_dsr(name, batch, channels, grid, device, min_time, train_steps)
    synth = defectforge.create(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, grid, grid, generator=gen).to(device)
    det_name = info.capabilities["detector"]  # the detector that trains on this method
    context = {}
    if name == "glass_gas":
        from ..detectors.feature_level import _Discriminator

        context["discriminator"] = _Discriminator(channels, sigmoid=True).to(device).eval()
    if name == "pbas":
        context["centres"] = x.mean(0).flatten(1).T.contiguous()
    seconds, iterations = time_callable(lambda k: synth(x, seed=k, **context), min_time, 1000)
    row = {"method": name, "level": "feature", "batch": batch, "shape": [batch, channels, grid, grid],
           "seconds_per_batch": seconds, "maps_per_second": batch / seconds, "iterations": iterations,
           "detector": det_name}
    if det_name is not None and train_steps > 0:
        options = {"las_pool": 0} if det_name == "glass" else {}
        det = create_detector(det_name, load_backbone("tiny").to(device), device=device, options=options)
        pool = torch.randn(batch * 2, channels, grid, grid, generator=gen)
        det.fit(None, name, steps=1, batch_size=batch, seed=0, features=pool)  # warm-up
        start = time.perf_counter()
        record = det.fit(None, name, steps=train_steps, batch_size=batch, seed=0, features=pool)
        row.update(step_seconds=record.seconds / train_steps, synthesis_share=record.synthesis_seconds / record.seconds,
                   wall_seconds=time.perf_counter() - start)
    return row


def _bench_dsr(name: str, batch: int, channels: int, grid: int, device: str, min_time: float, train_steps: int) -> dict:
    """The ``dsr`` row: synthesis on ``enc_b`` latents ``(batch, channels, grid, grid)`` and the share of
    the dsr detector's training step at ``4 * grid`` px (the detector synthesises from its images)."""
    import torch

    import defectforge

    from ..detectors.registry import create_detector
    from ..generative.vqvae import VQVAE_WIDTHS, TwoLevelVQVAE
    from .common import time_callable

    gen = torch.Generator().manual_seed(0)
    settings = {**VQVAE_WIDTHS["small"], "hidden": channels, "residual_hidden": max(1, channels // 2)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vq = TwoLevelVQVAE(**settings).to(device).eval()
    synth = defectforge.create(name)
    x = torch.randn(batch, channels, grid, grid, generator=gen).to(device)
    seconds, iterations = time_callable(lambda k: synth(x, seed=k, vqvae=vq), min_time, 1000)
    row = {"method": name, "level": "latent", "batch": batch, "shape": [batch, channels, grid, grid],
           "seconds_per_batch": seconds, "maps_per_second": batch / seconds, "iterations": iterations,
           "detector": defectforge.method_info(name).capabilities["detector"], "vqvae": settings}
    if train_steps > 0:
        det = create_detector(row["detector"], device=device, vqvae=vq, options={"resolution": 4 * grid})
        images = (torch.rand(batch * 2, 3, 4 * grid, 4 * grid, generator=gen) * 255).to(torch.uint8)
        det.fit(images, name, steps=1, batch_size=batch, seed=0)  # warm-up
        start = time.perf_counter()
        record = det.fit(images, name, steps=train_steps, batch_size=batch, seed=0)
        row.update(step_seconds=record.seconds / train_steps, synthesis_share=record.synthesis_seconds / record.seconds,
                   wall_seconds=time.perf_counter() - start)
    return row


def feature_row_line(row: dict) -> str:
    line = (f"{row['method']:<22} {row['seconds_per_batch'] * 1000:9.1f} ms / batch  "
            f"{row['maps_per_second']:9.0f} maps/s")
    if "step_seconds" in row:
        line += (f"   {row['detector']} step {row['step_seconds'] * 1000:7.0f} ms, synthesis "
                 f"{100 * row['synthesis_share']:4.1f}%")
    return line
