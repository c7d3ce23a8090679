"""Exports read back: COCO through pycocotools, YOLO-seg polygons rasterised back, anomalib's Folder arguments."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import torch
import yaml

import defectforge

from defectforge.io.images import read_image, write_image
from defectforge.pipelines.dataset_objects import component_polygon, mask_components
from defectforge.pipelines.export import SameImagesWarning, anomalib_folder_arguments, export
from defectforge.pipelines.generate import generate

#: Polygons are outer contours with holes bridged in: rasterised back they lose only one-pixel gaps
#: between strands of a component (measured per method in docs/reliability.md).
YOLO_MIN_IOU = 0.9
#: The documented bounds (docs/integrations.md, yolo-seg) for every method's masks: mean IoU per method, and the lowest any mask gets
#: (measured minimum over 64 masks per method at 128 px: 0.709, glass_las).
YOLO_MEAN_IOU, YOLO_FLOOR_IOU = 0.98, 0.70


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    normal = root / "normal"
    rng = np.random.default_rng(0)
    for i in range(4):
        write_image(normal / f"n{i}.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = root / "out"
    generate(normal, out, None, count=10, seed=3, mix="cutpaste:0.5,cutout:0.5", normal_ratio=0.3,
             progress=False)
    return root, normal, out


def _samples(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def _mask(out, sample):
    return read_image(out / sample["mask_path"], channels=1)[..., 0] > 127


def test_coco_reads_back_with_pycocotools(dataset, tmp_path):
    pytest.importorskip("pycocotools", reason="the COCO export needs the export extra (pycocotools)")
    from pycocotools.coco import COCO

    _, _, out = dataset
    summary = export(out, tmp_path / "coco", "coco")
    coco = COCO(str(tmp_path / "coco" / "annotations.json"))
    samples = _samples(out)
    assert len(coco.getImgIds()) == len(samples)
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(
        {s["method"] for s in samples if s["label"]})
    assert summary["annotations"] == len(coco.getAnnIds())
    normals = 0
    for s in samples:
        image_id = s["index"] + 1
        info = coco.loadImgs(image_id)[0]
        assert (out / info["file_name"]).exists()
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        if not s["label"]:
            normals += 1
            assert anns == []
            continue
        mask = _mask(out, s)
        assert len(anns) == len(mask_components(mask))
        union = np.zeros_like(mask)
        for a in anns:
            m = coco.annToMask(a).astype(bool)
            assert not (union & m).any()  # one annotation per connected component
            union |= m
            assert coco.loadCats(a["category_id"])[0]["name"] == s["method"]
        assert (union == mask).all()
    assert normals > 0


def test_yolo_seg_polygons_rasterise_back(dataset, tmp_path):
    _, _, out = dataset
    summary = export(out, tmp_path / "yolo", "yolo-seg", val_fraction=0.3, seed=1)
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    names = data["names"]
    assert set(names.values()) == {"cutpaste", "cutout"} and data["train"] == "images/train"
    assert summary["train"] + summary["val"] == 10 and summary["val"] == 3
    by_stem = {}
    for s in _samples(out):
        by_stem[s["image_path"].split("/")[1] + "_" + s["image_path"].split("/")[2][:-4]] = s
    seen = 0
    for split in ("train", "val"):
        for label_file in sorted((tmp_path / "yolo" / "labels" / split).glob("*.txt")):
            s = by_stem[label_file.stem]
            image = read_image(tmp_path / "yolo" / "images" / split / (label_file.stem + ".png"))
            assert (image == read_image(out / s["image_path"])).all()
            lines = label_file.read_text().splitlines()
            seen += 1
            if not s["label"]:
                assert lines == []
                continue
            mask = _mask(out, s)
            h, w = mask.shape
            drawn = np.zeros((h, w), np.uint8)
            for line in lines:
                values = line.split()
                assert names[int(values[0])] == s["method"]
                xy = np.array(values[1:], float).reshape(-1, 2)
                assert len(xy) >= 3 and (xy >= 0).all() and (xy <= 1).all()
                cv2.fillPoly(drawn, [np.round(xy * [w, h]).astype(np.int32)], 1)
            iou = (mask & (drawn > 0)).sum() / (mask | (drawn > 0)).sum()
            assert iou >= YOLO_MIN_IOU, (label_file, iou)
    assert seen == 10


def test_yolo_seg_loads_in_ultralytics(dataset, tmp_path):
    pytest.importorskip("ultralytics", reason="ultralytics is not installed (it needs torchvision)")
    from ultralytics.data.utils import check_det_dataset

    _, _, out = dataset
    export(out, tmp_path / "yolo", "yolo-seg")
    info = check_det_dataset(str(tmp_path / "yolo" / "data.yaml"))
    assert info["nc"] == 2


def test_polygon_of_thin_and_holed_components():
    pixel = np.zeros((8, 8), bool)
    pixel[3, 4] = True
    poly = component_polygon(pixel)
    drawn = np.zeros((8, 8), np.uint8)
    cv2.fillPoly(drawn, [poly.astype(np.int32)], 1)
    assert (drawn.astype(bool) == pixel).all()
    ring = np.zeros((12, 12), bool)
    ring[2:10, 2:10] = True
    ring[5:7, 5:7] = False
    drawn = np.zeros((12, 12), np.uint8)
    cv2.fillPoly(drawn, [component_polygon(ring).astype(np.int32)], 1)
    assert (drawn.astype(bool) == ring).all()                      # the hole stays empty (it was filled)


def test_polygon_keeps_several_holes_under_both_fill_rules():
    plate = np.zeros((40, 40), bool)
    plate[2:38, 2:38] = True
    for y, x in ((6, 6), (6, 25), (25, 12), (20, 28)):
        plate[y:y + 6, x:x + 5] = False
    plate[30, 30] = False                                         # a one-pixel hole
    polygon = component_polygon(plate).astype(np.int32)
    drawn = cv2.fillPoly(np.zeros((40, 40), np.uint8), [polygon], 1).astype(bool)
    assert (drawn == plate).all()
    from PIL import Image, ImageDraw                               # another rasteriser (even-odd)

    picture = Image.new("L", (40, 40), 0)
    ImageDraw.Draw(picture).polygon([tuple(p) for p in polygon.tolist()], fill=1, outline=1)
    assert (np.asarray(picture).astype(bool) == plate).all()


def _label_iou(mask: np.ndarray) -> float:
    """IoU of a mask and its YOLO-seg label lines (as written: normalised, 6 decimals) filled back."""
    h, w = mask.shape
    drawn = np.zeros((h, w), np.uint8)
    for component in mask_components(mask):
        xy = np.array([f"{v:.6f}" for v in (component_polygon(component) / [w, h]).reshape(-1)], float)
        cv2.fillPoly(drawn, [np.round(xy.reshape(-1, 2) * [w, h]).astype(np.int32)], 1)
    return float((mask & (drawn > 0)).sum() / (mask | (drawn > 0)).sum())


@pytest.mark.parametrize("name", [n for n in defectforge.list_methods(level="image")])
def test_yolo_polygons_of_every_method_rasterise_back_within_the_readme_bounds(name):
    from conftest import method_for_tests

    from defectforge.sources.procedural import surface

    for module in getattr(defectforge.method_info(name).cls, "requires", ()):
        pytest.importorskip(module)
    kinds = ["metal", "fabric", "wood", "tiles"]
    # 128 px, the smallest size docs/reliability.md measured (smaller masks lose relatively more);
    # methods sampling a model draw their masks as the others do, so two samples check their path
    count = 2 if getattr(defectforge.method_info(name).cls, "needs_model", False) else 8
    images = torch.from_numpy(np.stack([surface(kinds[i % 4], 128, seed=i) for i in range(count)]))
    out = method_for_tests(name, anomaly_probability=1.0)(images.permute(0, 3, 1, 2).contiguous(), seed=0)
    ious = [_label_iou(m) for m in (out.masks[:, 0] > 0.5).numpy() if m.any()]
    assert ious and min(ious) >= YOLO_FLOOR_IOU and np.mean(ious) >= YOLO_MEAN_IOU, (name, ious)


def test_real_defect_runs_export_their_defect_types_as_classes(tmp_path):
    from conftest import tiny_defect_bank

    pytest.importorskip("pycocotools")
    normal = tmp_path / "normal"
    rng = np.random.default_rng(1)
    for i in range(3):
        write_image(normal / f"n{i}.png", rng.integers(90, 160, (64, 64, 3), dtype=np.uint8))
    out = tmp_path / "run"
    generate(normal, out, "copy_paste", count=8, seed=0, defects=tiny_defect_bank().describe()["bank"], progress=False)
    samples = [s for s in _samples(out) if s["label"]]
    types = {s["defect"]["type"] for s in samples}
    assert types == {"blob", "scratch"}
    yolo = export(out, tmp_path / "yolo", "yolo-seg")                 # default: the types
    assert yolo["categories"] == sorted(types)
    names = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())["names"]
    for s in samples:
        stem = s["image_path"].split("/")[1] + "_" + s["image_path"].split("/")[2][:-4]
        label = next((tmp_path / "yolo" / "labels").glob(f"*/{stem}.txt")).read_text().split()
        assert names[int(label[0])] == s["defect"]["type"]
    coco = export(out, tmp_path / "coco", "coco", categories="type")
    data = json.loads((tmp_path / "coco" / "annotations.json").read_text())
    by_id = {c["id"]: c["name"] for c in data["categories"]}
    by_image = {s["index"] + 1: s["defect"]["type"] for s in samples}
    assert coco["categories"] == sorted(types)
    assert all(by_id[a["category_id"]] == by_image[a["image_id"]] for a in data["annotations"])
    assert export(out, tmp_path / "m", "yolo-seg", categories="method")["categories"] == ["copy_paste"]


def test_anomalib_arguments_and_warnings(dataset, tmp_path):
    root, normal, out = dataset
    other = root / "train_good"
    write_image(other / "t.png", np.zeros((64, 64, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = anomalib_folder_arguments(out, other)
    assert args["normal_dir"] == str(other.resolve())  # the real training normals
    assert args["normal_test_dir"] == "test/good"
    assert args["abnormal_dir"] == ["test/cutout", "test/cutpaste"]
    assert args["mask_dir"] == ["ground_truth/cutout", "ground_truth/cutpaste"]
    for d in args["abnormal_dir"] + args["mask_dir"] + [args["normal_test_dir"]]:
        assert (out / d).is_dir()
    with pytest.warns(SameImagesWarning, match="same images"):
        anomalib_folder_arguments(out, normal)
    summary = export(out, tmp_path / "anomalib", "anomalib", train_dir=other)
    config = yaml.safe_load((tmp_path / "anomalib" / "folder.yaml").read_text())
    assert config["data"]["class_path"] == "anomalib.data.Folder"
    assert config["data"]["init_args"] == summary["arguments"]
    compile((tmp_path / "anomalib" / "folder.py").read_text(), "folder.py", "exec")
    with pytest.raises(ValueError, match="--train-dir"):
        export(out, tmp_path / "x", "anomalib")


def test_export_cli(dataset, tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    _, normal, out = dataset
    result = CliRunner().invoke(app, ["export", str(out), "--format", "anomalib", "--train-dir", str(normal),
                                      "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert "normal_test_dir='test/good'" in result.output and "same images" in result.output
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "coco"])
    assert result.exit_code == 2 and "manifest.jsonl" in result.output
