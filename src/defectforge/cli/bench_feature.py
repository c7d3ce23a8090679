"""``defectforge bench --level feature``: time each feature-level synthesizer on a ``(B, C, h, w)``
batch and its share of one training step of the detector that uses it."""

from __future__ import annotations

import time

#: The detector that trains on each feature-level method (presets share their method's detector).
DETECTOR_OF = {"simplenet": "simplenet", "simplenet_code": "simplenet", "supersimplenet": "supersimplenet",
               "supersimplenet_visa": "supersimplenet", "glass_gas": "glass", "pbas": "pbas",
               "uniad_jitter": "uniad"}


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
    from ..detectors.feature_level import make_feature_detector
    from .bench import time_callable

    info = defectforge.method_info(name)
    if info.level != "feature":
        raise ValueError(f"method {name!r} is {info.level}-level; --level feature times "
                         f"{', '.join(defectforge.list_methods(level='feature'))}")
    synth = defectforge.create(name)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, grid, grid, generator=gen).to(device)
    det_name = DETECTOR_OF.get(name)
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
        kwargs = {"las_pool": 0} if det_name == "glass" else {}
        det = make_feature_detector(det_name, load_backbone("tiny").to(device), device=device, **kwargs)
        pool = torch.randn(batch * 2, channels, grid, grid, generator=gen)
        det.fit(None, name, steps=1, batch_size=batch, seed=0, features=pool)  # warm-up
        start = time.perf_counter()
        record = det.fit(None, name, steps=train_steps, batch_size=batch, seed=0, features=pool)
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
