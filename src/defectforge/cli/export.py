"""``defectforge export DATASET --format coco | yolo-seg | anomalib``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from .common import fail


def export_command(
    dataset: Path = typer.Argument(..., help="A folder written by `defectforge generate` (with manifest.jsonl)."),
    format: str = typer.Option(..., "--format", "-f", help="coco | yolo-seg | anomalib."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write (default: DATASET-<format> beside DATASET)."),
    train_dir: Optional[Path] = typer.Option(None, "--train-dir",
                                             help="anomalib: the real normal training images (normal_dir)."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="yolo-seg: share of samples in the val split."),
    seed: int = typer.Option(0, "--seed", "-s", help="yolo-seg: seed of the train/val split."),
    categories: str = typer.Option("auto", "--categories",
                                   help="coco/yolo-seg classes: 'type' (the defect types of a real-defect run, "
                                        "copy_paste / defect_transplant / gan_transplant; other samples keep "
                                        "their method), 'method' (one class per method), 'anomaly' (one class), "
                                        "or 'auto' (type where the run recorded defect types, else method)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Export a generated dataset as COCO (RLE), YOLO segmentation or an anomalib Folder config."""
    import sys

    from ..pipelines.export import export

    target = output if output is not None else dataset.parent / f"{dataset.name}-{format}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = export(dataset, target, format, train_dir=train_dir, val_fraction=val_fraction, seed=seed,
                             categories=categories, progress=not quiet and sys.stderr.isatty())
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(str(exc))
    for w in caught:
        typer.secho(f"warning: {w.message}", fg=typer.colors.YELLOW, err=True)
    if format == "coco":
        typer.echo(f"wrote {summary['output']}: {summary['images']} images, {summary['annotations']} annotations, "
                   f"categories {', '.join(summary['categories'])} (image root: {dataset})")
    elif format == "yolo-seg":
        typer.echo(f"wrote {summary['output']}: {summary['train']} train / {summary['val']} val images, "
                   f"{summary['polygons']} polygons, classes {', '.join(summary['categories'])}")
    else:
        args = ", ".join(f"{k}={v!r}" for k, v in summary["arguments"].items())
        typer.echo(f"wrote {summary['output']} and folder.py:\n  Folder({args})")
