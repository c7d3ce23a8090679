"""``defectforge import FORMAT SRC OUT``: labelled real defects written as an MVTec-AD category."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import fail


def import_command(
    format: str = typer.Argument(..., help="labelme, coco, yolo-seg, masks, mvtec, or auto (detected)."),
    source: Path = typer.Argument(..., help="The labelled folder (a COCO JSON or its folder; a YOLO data.yaml or "
                                            "its folder)."),
    output: Path = typer.Argument(..., help="A new folder: the MVTec-AD category to write."),
    seed: int = typer.Option(0, "--seed", "-s", min=0, help="Seed of the train/test split of the normal images."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share of the normal images written to "
                                        "test/good (the rest: train/good)."),
    group: Optional[str] = typer.Option(None, "--group", help="Regular expression on the file names: images with the "
                                        "same match (its first group) stay on one side of the split, e.g. "
                                        "'part(\\d+)_' keeps part12_a.png and part12_b.png together."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="COCO: where file_name paths start "
                                              "[default: searched beside the JSON]."),
):
    """Write labelled defects (labelme, COCO, YOLO-seg, mask folders) as an MVTec-AD category.

    Defect images go to test/<type> with their masks in ground_truth/<type>; images without
    annotations are the normal images, split (seeded, recorded in OUT/import.json) into
    train/good and test/good.
    """
    from ..pipelines.importer import import_dataset

    try:
        record = import_dataset(source, output, None if format == "auto" else format, test_fraction=test_fraction,
                                seed=seed, group=group, image_root=image_root)
    except (ValueError, OSError) as exc:
        fail(str(exc))
    files = record["files"]
    defects: dict[str, int] = {}
    for name in files:
        if name.startswith("test/") and not name.startswith("test/good/"):
            defects[name.split("/")[1]] = defects.get(name.split("/")[1], 0) + 1
    split = record["split"]
    boxes = [t for t, kind in record["mask_kinds"].items() if kind != "pixel"]
    typer.echo(f"wrote {output} ({record['format']}): train/good {split['train_good']}, test/good "
               f"{split['test_good']}, " + ", ".join(f"test/{t} {n}" for t, n in sorted(defects.items()))
               + f"; record: {output / 'import.json'}")
    if boxes:
        typer.secho(f"warning: the masks of {', '.join(boxes)} are boxes (mask_kind: box); pixel metrics refuse "
                    "them unless given benchmark --accept-box-masks or evaluate-detection --accept-box-masks",
                    fg=typer.colors.YELLOW, err=True)
