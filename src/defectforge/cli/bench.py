"""``defectforge bench``: in-process synthesis throughput per method on preloaded inputs."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np
import typer

from .common import fail, time_callable


def _inputs(size: int, batch: int):
    import torch

    from ..sources.procedural import SURFACE_KINDS, surface

    imgs = [surface(SURFACE_KINDS[i % len(SURFACE_KINDS)], size, seed=i) for i in range(min(batch, 8))]
    stack = np.stack([imgs[i % len(imgs)] for i in range(batch)])
    return torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()


def _load() -> float | None:
    """1-minute load average (None where the OS has none): the machine may be shared."""
    import os

    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _cpus() -> int:
    import os

    return os.cpu_count() or 1


def bench_method(name: str, batch_images, min_time: float = 2.0, max_iterations: int = 1000, bank=None) -> dict:
    """Throughput of registry method ``name`` on ``batch_images``, textures preloaded.

    The method runs with its preset's own anomaly probability (every preset is all-anomalous
    except ``cutpaste_3way``, whose class 0 is normal); ``anomalous_fraction`` is measured on the
    timed calls' labels, not assumed. Methods that place real defects get ``bank`` (a loaded
    :class:`~defectforge.sources.defects.DefectBank`).
    """
    from ..pipelines.build import build_synthesizer

    from ..core.registry import method_info
    from ..realdefect import needs_bank
    from ..sources.textures import TextureSource

    synth = build_synthesizer(name, {"bank": bank} if needs_bank(name) else None)
    textures = getattr(synth, "textures", None)
    if isinstance(textures, TextureSource):  # inputs preloaded: textures decoded/generated once, untimed
        textures.preload(*batch_images.shape[-2:], getattr(synth, "texture_resize", "stretch"))
    # methods that cut from other images get the batch itself as their donor pool
    donors = batch_images if synth.capabilities["uses_donors"] else None
    labelled = []

    def call(k):
        labelled.append((synth(batch_images, seed=k, donors=donors).labels > 0).float().mean().item())

    per_call, iterations = time_callable(call, min_time, max_iterations)
    b = batch_images.shape[0]
    return {"method": name, "images_per_second": b / per_call, "ms_per_image": per_call / b * 1e3,
            "iterations": iterations, "cpu_bound": method_info(name).cpu_bound,
            "anomalous_fraction": sum(labelled) / len(labelled)}


def _measured_masks(out, images) -> dict:
    """What a peer's output holds, measured on one call: ``masks`` is true only when it returned
    ``(images, masks)`` with one binary ``(B, 1, H, W)`` mask per input; ``anomalous_fraction`` is
    the share of samples whose mask is not empty."""
    b, _, h, w = images.shape
    masks = out[1] if isinstance(out, (tuple, list)) and len(out) == 2 else None
    if masks is None or tuple(masks.shape) != (b, 1, h, w):
        return {"masks": False}
    flat = masks.detach().float().flatten(1)
    binary = bool(((flat == 0) | (flat == 1)).all())
    return {"masks": binary, "anomalous_fraction": float((flat.amax(1) > 0).float().mean())}


def bench_anomalib(batch_images, min_time: float, max_iterations: int) -> dict:
    """anomalib's ``PerlinAnomalyGenerator`` (probability 1, no texture folder) on the same batch.

    The row says what was timed: ``masks`` and ``anomalous_fraction`` are measured on the
    generator's output for the batch (see :func:`_measured_masks`), not assumed.
    """
    name = "anomalib.PerlinAnomalyGenerator"
    try:
        import anomalib
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
    except Exception as exc:  # noqa: BLE001 - any import failure means "not comparable here"
        return {"method": name, "available": False, "reason": f"{type(exc).__name__}: {exc}"}
    generator = PerlinAnomalyGenerator(probability=1.0)
    x = batch_images.float() / 255.0
    checked = _measured_masks(generator(x), x)
    per_call, iterations = time_callable(lambda k: generator(x), min_time, max_iterations)
    b = x.shape[0]
    return {"method": name, "version": getattr(anomalib, "__version__", "unknown"), "images_per_second": b / per_call,
            "ms_per_image": per_call / b * 1e3, "iterations": iterations, **checked}


def parse_sizes(text: str) -> list[int]:
    """``"128,256"`` -> ``[128, 256]``; each size an integer in [8, 8192]."""
    sizes = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit() or not 8 <= int(item) <= 8192:
            raise typer.BadParameter(f"--size takes image sizes in [8, 8192], comma-separated (e.g. 128,256,512), "
                                     f"got {item!r}")
        sizes.append(int(item))
    if not sizes:
        raise typer.BadParameter("--size needs at least one size, e.g. --size 256")
    return sizes


def _row_line(row: dict) -> str:
    line = f"{row['method']:<22} {row['images_per_second']:9.1f} img/s  {row['ms_per_image']:7.3f} ms/img"
    if row.get("anomalous_fraction", 1.0) < 1.0:
        line += f"  ({100 * row['anomalous_fraction']:.0f}% of samples anomalous)"
    return line


def scaling_table(rows: list[dict], sizes: list[int]) -> list[str]:
    """Lines showing how each method's cost scales with the image size: ms per image and ns per
    pixel at every size (a cost proportional to the work keeps ns/px flat)."""
    lines = ["scaling: ms/img (ns/px) at " + ", ".join(f"{s}x{s}" for s in sizes)]
    for name in dict.fromkeys(r["method"] for r in rows if "ms_per_image" in r):
        cells = []
        for size in sizes:
            row = next((r for r in rows if r["method"] == name and r["size"] == size and "ms_per_image" in r), None)
            cells.append("-" if row is None else
                         f"{row['ms_per_image']:8.3f} ({row['ms_per_image'] * 1e6 / size ** 2:5.1f})")
        lines.append(f"{name:<22} " + "  ".join(f"{c:>16}" for c in cells))
    return lines


def bench_command(
    methods: Optional[list[str]] = typer.Option(None, "--methods", "-m",
                                                help="Methods (repeatable or comma-separated); default: every image-level method."),
    size: str = typer.Option("256", "--size", help="Image size; several comma-separated (128,256,512,1024) "
                                                   "also print how the cost scales with the size."),
    batch: int = typer.Option(32, "--batch", min=1, max=4096),
    threads: int = typer.Option(2, "--threads", min=1, max=256, help="torch and OpenCV threads."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
    min_time: float = typer.Option(2.0, "--min-time", min=0.0, max=3600.0, help="Seconds timed per method and size (after a warm-up call)."),
    compare: Optional[str] = typer.Option(None, "--compare", help="Also time a peer in the same run: 'anomalib'."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    defects: Optional[str] = typer.Option(None, "--defects", help="Real defects (MVTec category, labelme, COCO, "
                                          "YOLO-seg or mask folder; detected) for copy_paste / defect_transplant; "
                                          "without it they are skipped."),
    defects_format: Optional[str] = typer.Option(None, "--defects-format", help="Name the --defects format: labelme, "
                                                 "coco, yolo-seg, masks or mvtec [default: detected]."),
    few_shot: Optional[str] = typer.Option(None, "--few-shot", help="Only this part of each type's defects "
                                           "(1/3, a fraction or a count), as the few-shot protocol."),
    level: str = typer.Option("image", "--level", help="image, or feature: time the feature-level methods on a "
                                                       "(batch, channels, 32, 32) feature batch and their share of "
                                                       "a training step of their detector (dsr: on the bottom-encoder latents of a random VQ-VAE, "
                                                       "(batch, channels, 32, 32) = 128 px images)."),
    channels: int = typer.Option(128, "--channels", min=1, help="Feature channels for --level feature."),
    to_disk: bool = typer.Option(False, "--to-disk", is_flag=True, help="Time whole dataset runs instead: "
                                 "`generate` into a temporary folder (inputs read, workers started, PNGs "
                                 "encoded, hashed and written), samples/s end to end and after start-up "
                                 "[methods default: draem]."),
    input: Optional[str] = typer.Option(None, "--input", help="--to-disk: the folder of normal images [default: "
                                        "64 procedural surfaces of 320 px]."),
    count: Optional[int] = typer.Option(None, "--count", "-n", min=2, help="--to-disk: samples per timed run (a "
                                        "run of a quarter of them tells the start-up apart) [default: 800]."),
    workers: Optional[int] = typer.Option(None, "--workers", "-w", min=1, max=256, help="--to-disk: generate's "
                                          "--workers [default: 2, one per core of the 2-core machine the speed "
                                          "targets were set on]."),
):
    """Measure images per second for each method on preloaded inputs (--to-disk: of whole dataset runs)."""
    import cv2
    import torch

    import defectforge

    sizes = parse_sizes(size)
    if compare and compare != "anomalib":
        fail(f"--compare knows 'anomalib' only, got {compare!r}")
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    names = [m.strip() for item in (methods or []) for m in item.split(",") if m.strip()]
    if to_disk:
        _bench_to_disk(names or ["draem"], sizes, 800 if count is None else count, 2 if workers is None else workers,
                       input, as_json)
        return
    given = [name for name, value in (("--input", input), ("--count", count), ("--workers", workers)) if value is not None]
    if given:
        fail(f"{', '.join(given)} apply only with --to-disk; add it or drop them")
    if level != "image":
        _bench_features(level, names, batch, channels, device, min_time, as_json, threads)
        return
    from ..realdefect import needs_bank

    bank = None
    if defects is not None:
        from ..sources.defects import DefectBank

        try:
            bank = DefectBank.from_folder(defects, few_shot=few_shot, format=defects_format)
        except (OSError, ValueError) as exc:
            fail(f"--defects: {exc}")
    if not names:
        names = [n for n in defectforge.list_methods(level="image") if (bank is not None or not needs_bank(n))
                 and not defectforge.method_info(n).capabilities["needs_model"]]  # no trained model here
    elif bank is None and any(needs_bank(n) for n in names):
        fail(f"{', '.join(n for n in names if needs_bank(n))} place real defects: pass --defects "
             "CATEGORY_OR_FOLDER")
    rows = []
    # Poisson-blending methods are bound by per-sample CPU work: timed after the batched ones,
    # listed apart (they do not use an accelerator)
    names = ([n for n in names if not defectforge.method_info(n).cpu_bound]
             + [n for n in names if defectforge.method_info(n).cpu_bound])
    load_before = _load()
    if not as_json and load_before is not None:
        typer.echo(f"load average before: {load_before:.2f} (on {_cpus()} CPUs)")
    for side in sizes:
        x = _inputs(side, batch).to(device)
        if not as_json and len(sizes) > 1:
            typer.echo(f"-- {side}x{side}, batch {batch}")
        header_done = False
        for name in names:
            try:
                row = bench_method(name, x, min_time, bank=bank)
            except (ValueError, TypeError) as exc:
                fail(str(exc))
            row["size"] = side
            rows.append(row)
            if not as_json:
                if row["cpu_bound"] and not header_done:
                    typer.echo("CPU-bound (Poisson blending, per-sample OpenCV work):")
                    header_done = True
                typer.echo(_row_line(row))
        if compare:
            row = bench_anomalib(x, min_time, 1000)
            row["size"] = side
            rows.append(row)
            if not as_json:
                if row.get("available", True):
                    masks = "with masks" if row["masks"] else "NO masks returned"
                    typer.echo(f"{_row_line(row)}  (anomalib {row['version']}, same inputs, {masks})")
                    ours = {r["method"]: r for r in rows if r["size"] == side}
                    if "draem" in ours:
                        typer.echo(f"draem / anomalib speed-up: "
                                   f"{ours['draem']['images_per_second'] / row['images_per_second']:.1f}x")
                else:
                    typer.echo(f"anomalib not comparable here: {row['reason']}")
    if not as_json and len(sizes) > 1:
        for line in scaling_table(rows, sizes):
            typer.echo(line)
    load_after = _load()
    if not as_json and load_after is not None:
        typer.echo(f"load average after: {load_after:.2f}")
    for row in rows:
        row.update({"threads": threads, "batch": batch, "device": device,
                    "load_before": load_before, "load_after": load_after})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


def _bench_to_disk(names: list[str], sizes: list[int], count: int, workers: int, input: str | None,
                   as_json: bool) -> None:
    import tempfile
    from pathlib import Path

    from .bench_disk import demo_inputs, to_disk_line, to_disk_row

    load_before = _load()
    if not as_json and load_before is not None:
        typer.echo(f"load average before: {load_before:.2f} (on {_cpus()} CPUs)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="defectforge-inputs-") as tmp:
        folder = input if input is not None else demo_inputs(Path(tmp))
        for side in sizes:
            for name in names:
                try:
                    row = to_disk_row(folder, name, count, side, workers)
                except (RuntimeError, OSError) as exc:
                    fail(str(exc))
                rows.append(row)
                if not as_json:
                    typer.echo(to_disk_line(row))
    load_after = _load()
    if not as_json and len(sizes) > 1:
        typer.echo("(one worker's ms per sample after start-up)")
        for line in scaling_table(rows, sizes):
            typer.echo(line)
    if not as_json and load_after is not None:
        typer.echo(f"load average after: {load_after:.2f}")
    for row in rows:
        row.update(load_before=load_before, load_after=load_after, input=str(input or "procedural surfaces"))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))


def _bench_features(level: str, names: list[str], batch: int, channels: int, device: str, min_time: float,
                    as_json: bool, threads: int) -> None:
    import defectforge

    from .bench_feature import bench_feature_method, feature_row_line

    if level != "feature":
        fail(f"--level must be image or feature, got {level!r}")
    names = names or defectforge.list_methods(level="feature") + defectforge.list_methods(level="latent")
    load_before = _load()
    if not as_json and load_before is not None:
        typer.echo(f"load average before: {load_before:.2f} (on {_cpus()} CPUs); features ({batch}, {channels}, 32, 32)")
    rows = []
    for name in names:
        try:
            row = bench_feature_method(name, batch, channels, 32, device, min_time)
        except (ValueError, TypeError) as exc:
            fail(str(exc))
        row.update(threads=threads, device=device, load_before=load_before)
        rows.append(row)
        if not as_json:
            typer.echo(feature_row_line(row))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    elif _load() is not None:
        typer.echo(f"load average after: {_load():.2f}")
