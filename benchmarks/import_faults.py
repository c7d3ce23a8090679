"""Try bad labelled inputs on ``defectforge import`` (and the commands that read a bank or score pixels).

Each fault builds a tiny labelled set in a temporary folder (labelme, COCO, YOLO-seg, a mask
folder), runs the command line in-process through typer's CliRunner, and records the exit code,
the ``error:`` line (or every line printed, joined by ⏎) and whether the output folder was
created. Prints the markdown table of ``docs/reliability.md``, "Labelled real defects".

    python benchmarks/import_faults.py > /tmp/import_faults.md
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app

_register_commands()
ROWS: list[tuple] = []
H, W = 48, 64


def image(path: Path, size=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size + (3,), 120, np.uint8)).save(path)


def labelme(root: Path, points, kind="polygon", size=(H, W), image_name="d.png") -> Path:
    image(root / "d.png")
    for k in range(3):
        image(root / f"good{k}.png")
    (root / "d.json").write_text(json.dumps({"imagePath": image_name, "imageHeight": size[0], "imageWidth": size[1],
                                             "shapes": [{"label": "crack", "points": points, "shape_type": kind}]}))
    return root


def coco(root: Path, annotation: dict, images=None, categories=None) -> Path:
    for k in range(3):
        image(root / f"good{k}.png")
    image(root / "d.png")
    listed = images or [{"id": 1, "file_name": "d.png", "height": H, "width": W}] + [
        {"id": 2 + k, "file_name": f"good{k}.png", "height": H, "width": W} for k in range(3)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "annotations.json").write_text(json.dumps({
        "images": listed, "annotations": [dict({"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0}, **annotation)],
        "categories": categories or [{"id": 1, "name": "crack"}]}))
    return root


def yolo(root: Path, line: str, label="d.txt") -> Path:
    image(root / "images" / "d.png")
    for k in range(3):
        image(root / "images" / f"good{k}.png")
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / label).write_text(line + "\n")
    (root / "data.yaml").write_text("names: [crack]\n")
    return root


def run(*args) -> tuple[int, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = CliRunner().invoke(app, [str(a) for a in args])
    lines = [x for x in result.output.splitlines() if x.strip()]
    error = next((x for x in lines if x.startswith("error:")), None)
    return result.exit_code, error if error else " ⏎ ".join(lines)


def fault(tmp: Path, kind: str, what: str, shown: str, make, command, out_name="out") -> None:
    case = tmp / f"case{len(ROWS) + 1}"
    src = make(case / "src")
    out = case / out_name
    code, seen = run(*command(src, out))
    seen = seen.replace(str(tmp), "…")[:260]
    written = "yes" if out.exists() else "no"
    ROWS.append((len(ROWS) + 1, kind, what, shown, code, seen, written))


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        imp = lambda fmt: (lambda src, out: ["import", fmt, src, out])  # noqa: E731
        fault(tmp, "labelme", "polygon point outside the image", "`import labelme src out`",
              lambda r: labelme(r, [[2, 2], [80, 2], [40, 30]]), imp("labelme"))
        fault(tmp, "labelme", "polygon with 2 points", "`import labelme src out`",
              lambda r: labelme(r, [[2, 2], [20, 20]]), imp("labelme"))
        fault(tmp, "labelme", "a line shape (no area)", "`import labelme src out`",
              lambda r: labelme(r, [[2, 2], [20, 20]], kind="line"), imp("labelme"))
        fault(tmp, "labelme", "JSON names a missing image", "`import labelme src out`",
              lambda r: labelme(r, [[2, 2], [20, 2], [10, 15]], image_name="gone.png"), imp("labelme"))
        fault(tmp, "labelme", "imageHeight/imageWidth disagree with the file", "`import labelme src out`",
              lambda r: labelme(r, [[2, 2], [20, 2], [10, 15]], size=(40, W)), imp("labelme"))

        def duplicate(r):
            labelme(r, [[2, 2], [20, 2], [10, 15]])
            image(r / "other" / "good0.png")
            return r
        fault(tmp, "labelme", "two images named good0.png in different folders", "`import labelme src out`",
              duplicate, imp("labelme"))
        fault(tmp, "coco", "unknown category id", "`import coco src out`",
              lambda r: coco(r, {"category_id": 7, "segmentation": {"size": [H, W], "counts": [10, 5, H * W - 15]}}),
              imp("coco"))
        fault(tmp, "coco", "annotation of an image id not listed", "`import coco src out`",
              lambda r: coco(r, {"image_id": 9, "segmentation": {"size": [H, W], "counts": [10, 5, H * W - 15]}}),
              imp("coco"))
        fault(tmp, "coco", "image file missing", "`import coco src out`",
              lambda r: coco(r, {"segmentation": {"size": [H, W], "counts": [10, 5, H * W - 15]}},
                             images=[{"id": 1, "file_name": "gone.png", "height": H, "width": W}]), imp("coco"))
        fault(tmp, "coco", "height/width disagree with the file", "`import coco src out`",
              lambda r: coco(r, {"segmentation": [[2, 2, 20, 2, 10, 15]]},
                             images=[{"id": 1, "file_name": "d.png", "height": 40, "width": W}] + [
                                 {"id": 2 + k, "file_name": f"good{k}.png", "height": H, "width": W}
                                 for k in range(3)]), imp("coco"))
        fault(tmp, "coco", "empty mask (RLE of zeros)", "`import coco src out`",
              lambda r: coco(r, {"segmentation": {"size": [H, W], "counts": [H * W]}}), imp("coco"))
        fault(tmp, "coco", "polygon with 2 points", "`import coco src out`",
              lambda r: coco(r, {"segmentation": [[2, 2, 20, 2]]}), imp("coco"))
        fault(tmp, "coco", "polygon outside the image", "`import coco src out`",
              lambda r: coco(r, {"segmentation": [[2, 2, 90, 2, 10, 15]]}), imp("coco"))
        fault(tmp, "yolo-seg", "class not in data.yaml", "`import yolo-seg src out`",
              lambda r: yolo(r, "3 0.1 0.1 0.3 0.1 0.2 0.3"), imp("yolo-seg"))
        fault(tmp, "yolo-seg", "polygon with 1 point (2 points would read as a box)", "`import yolo-seg src out`",
              lambda r: yolo(r, "0 0.1 0.1"), imp("yolo-seg"))
        fault(tmp, "yolo-seg", "coordinate above 1", "`import yolo-seg src out`",
              lambda r: yolo(r, "0 0.1 0.1 1.3 0.1 0.2 0.3"), imp("yolo-seg"))
        fault(tmp, "yolo-seg", "label file without an image", "`import yolo-seg src out`",
              lambda r: yolo(r, "0 0.1 0.1 0.3 0.1 0.2 0.3", label="gone.txt"), imp("yolo-seg"))

        def small_mask(r):
            image(r / "d.png")
            image(r / "good0.png")
            image(r / "good1.png")
            Image.fromarray(np.full((10, 10), 255, np.uint8)).save(r / "d_mask.png")
            return r
        fault(tmp, "masks", "mask of another size than its image", "`import masks src out`", small_mask, imp("masks"))
        fault(tmp, "any", "folder of plain images (no labels)", "`import auto src out`",
              lambda r: (image(r / "a.png"), r)[1], imp("auto"))
        fault(tmp, "any", "format named wrongly (labelme folder as coco)", "`import coco src out`",
              lambda r: labelme(r, [[2, 2], [20, 2], [10, 15]]), imp("coco"))
        fault(tmp, "any", "OUT inside SRC", "`import labelme src src/out`",
              lambda r: labelme(r, [[2, 2], [20, 2], [10, 15]]),
              lambda src, out: ["import", "labelme", src, src / "out"], out_name="src/out")
        fault(tmp, "bank", "generate --defects with a bad labelme file",
              "`generate good/ out -m copy_paste --defects src`",
              lambda r: labelme(r, [[2, 2], [20, 20]]),
              lambda src, out: ["generate", src, out, "-m", "copy_paste", "--defects", src, "-n", "2", "--quiet"])

        def boxes(r):
            return yolo(r, "0 0.5 0.5 0.25 0.25")

        def box_benchmark(src, out):
            run("import", "yolo-seg", src, src.parent / "cat")
            return ["benchmark", src.parent / "cat", "--out", out, "--steps", "1"]
        fault(tmp, "boxes", "benchmark on a category imported from boxes", "`benchmark cat --out out`", boxes,
              box_benchmark)
    print("| # | format | bad input | command | exit | what the user sees | OUT written |")
    print("|---|---|---|---|---|---|---|")
    for row in ROWS:
        print("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")


if __name__ == "__main__":
    main()
