"""Labelled real defects through the commands: generate --defects, bench --defects, benchmark --few-shot, import."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app

_register_commands()
runner = CliRunner()
SIZE = 64


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def labelme_folder(root, per_type=6, goods=6, seed=0):
    """Parts with a hole or a scratch labelled in labelme JSONs, and good parts without a JSON."""
    g = np.random.default_rng(seed)
    for k in range(goods):
        _save(root / f"good{k:02d}.png", (100 + g.normal(0, 5, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8))
    for t in ("hole", "scratch"):
        for k in range(per_type):
            image = (100 + g.normal(0, 5, (SIZE, SIZE, 3))).clip(0, 255).astype(np.uint8)
            y, x = int(g.integers(12, SIZE - 24)), int(g.integers(12, SIZE - 24))
            h, w = (9, 7) if t == "hole" else (14, 3)
            image[y:y + h, x:x + w] = 40
            _save(root / f"{t}{k:02d}.png", image)
            points = [[x, y], [x + w - 1, y], [x + w - 1, y + h - 1], [x, y + h - 1]]
            (root / f"{t}{k:02d}.json").write_text(json.dumps({
                "imagePath": f"{t}{k:02d}.png", "imageHeight": SIZE, "imageWidth": SIZE,
                "shapes": [{"label": t, "points": points, "shape_type": "polygon"}]}))
    return root


def test_generate_and_bench_read_a_labelme_folder(tmp_path):
    defects = labelme_folder(tmp_path / "labelme")
    normal = tmp_path / "normal"
    for k in range(3):
        _save(normal / f"n{k}.png", np.full((SIZE, SIZE, 3), 110, np.uint8))
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(normal), str(out), "-m", "copy_paste", "--defects", str(defects),
                                 "--few-shot", "1/3", "-n", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    split = json.loads((out / "fewshot_split.json").read_text())
    assert sorted(split["train"]) == ["hole", "scratch"] and len(split["train"]["hole"]) == 2
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    used = {r["defect"]["source"] for r in lines if "defect" in r}
    assert used and used <= {f for v in split["train"].values() for f in v}
    config = (out / "config.yaml").read_text()
    assert "format: labelme" in config
    # the same folder named with its format gives the same files; a wrong format is refused in one line
    named = tmp_path / "named"
    result = runner.invoke(app, ["generate", str(normal), str(named), "-m", "copy_paste", "--defects", str(defects),
                                 "--defects-format", "labelme", "--few-shot", "1/3", "-n", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (named / "test").exists() and sorted(p.name for p in (named / "test").iterdir()) == \
        sorted(p.name for p in (out / "test").iterdir())
    result = runner.invoke(app, ["generate", str(normal), str(tmp_path / "bad"), "-m", "copy_paste", "--defects",
                                 str(defects), "--defects-format", "coco", "-n", "2", "--quiet"])
    assert result.exit_code == 2 and "no COCO JSON" in result.output and not (tmp_path / "bad").exists()
    result = runner.invoke(app, ["bench", "-m", "copy_paste", "--defects", str(defects), "--size", "64", "--batch", "2",
                                 "--min-time", "0", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output


def test_few_shot_benchmark_imports_a_labelme_folder(tmp_path):
    defects = labelme_folder(tmp_path / "labelme")
    bench = tmp_path / "bench"
    args = ["benchmark", str(defects), "--few-shot", "1/3", "--methods", "real_only,copy_paste", "--seeds", "0",
            "--backbone", "tiny", "--size", "32", "--steps", "2", "--batch", "4", "--width", "8", "--no-baseline",
            "--out", str(bench)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((bench / "data-labelme" / "import.json").read_text())
    assert record["format"] == "labelme" and record["split"]["train_good"] + record["split"]["test_good"] == 6
    split = json.loads((bench / "fewshot_split.json").read_text())
    assert sorted(split["train"]) == ["hole", "scratch"]
    # a second run reuses the import
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "using its import" in result.output


def test_box_labels_are_refused_by_pixel_metrics(tmp_path):
    src = tmp_path / "yolo"
    for k in range(4):
        _save(src / "images" / f"i{k}.png", np.full((SIZE, SIZE, 3), 100, np.uint8))
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "i0.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (src / "data.yaml").write_text("names: [dent]\n")
    result = runner.invoke(app, ["import", "yolo-seg", str(src), str(tmp_path / "cat")])
    assert result.exit_code == 0 and "boxes" in result.output
    result = runner.invoke(app, ["benchmark", str(tmp_path / "cat"), "--out", str(tmp_path / "b"), "--steps", "1"])
    assert result.exit_code == 2 and "--accept-box-masks" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate-detection", str(tmp_path / "scores"), "--ground-truth",
                                 str(tmp_path / "cat")])
    assert result.exit_code == 2 and "--accept-box-masks" in result.output


def test_samples_made_from_boxes_are_flagged_in_the_manifest(tmp_path):
    src = tmp_path / "yolo"
    for k in range(2):
        image = np.full((SIZE, SIZE, 3), 100, np.uint8)
        image[24:40, 24:40] = 30
        _save(src / "images" / f"i{k}.png", image)
    (src / "labels").mkdir(parents=True)
    (src / "labels" / "i0.txt").write_text("0 0.5 0.5 0.25 0.25\n")                  # a box
    (src / "labels" / "i1.txt").write_text("1 0.375 0.375 0.625 0.375 0.625 0.625\n")  # a polygon
    (src / "data.yaml").write_text("names: [dent, pit]\n")
    normal = tmp_path / "normal"
    _save(normal / "n.png", np.full((SIZE, SIZE, 3), 110, np.uint8))
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(normal), str(out), "-m", "copy_paste", "--defects", str(src),
                                 "-n", "8", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    kinds = {r["defect"]["type"]: r.get("mask_kind", "pixel") for r in lines if "defect" in r}
    assert kinds == {"dent": "box", "pit": "pixel"}
    assert all(r["defect"].get("mask_kind") == "box" for r in lines if r.get("defect", {}).get("type") == "dent")


def test_generator_training_crops_read_a_labelme_folder(tmp_path):
    from defectforge.generative.data import load_defect_crops

    crops = load_defect_crops(labelme_folder(tmp_path / "labelme"), 32, 3, "1/3")
    assert crops.types == ["hole", "scratch"] and crops.labels.tolist() == [0, 0, 1, 1]
    assert crops.images.shape == (4, 3, 32, 32) and (crops.masks.flatten(1).amax(1) == 1).all()
    assert sorted(crops.split["train"]) == ["hole", "scratch"]
