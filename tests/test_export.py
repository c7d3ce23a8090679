"""Exports read back: COCO through pycocotools, YOLO-seg polygons rasterised back, anomalib's Folder arguments."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
import yaml

from defectforge.io.images import read_image, write_image
from defectforge.pipelines.export import (SameImagesWarning, anomalib_folder_arguments, component_polygon, export,
                                          mask_components)
from defectforge.pipelines.generate import generate

#: Polygons are outer contours: rasterised back they lose a component's holes only.
YOLO_MIN_IOU = 0.9


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
    assert (drawn.astype(bool) | ring).sum() == 64 and (ring & drawn.astype(bool)).sum() == 60


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
