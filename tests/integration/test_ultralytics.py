"""ultralytics for real: ``export --format yolo-seg`` trains, validates and predicts with YOLO-seg.

A model built from ``yolov8n-seg.yaml`` (random weights, nothing downloaded), one epoch at 64 px,
plots off, ultralytics' settings in a temporary folder and every connection off this machine refused.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from defectforge.pipelines.export import export
from defectforge.pipelines.generate import generate

from .conftest import require, write_surfaces

pytestmark = pytest.mark.integration


@pytest.fixture
def offline_ultralytics(tmp_path, monkeypatch, no_network):
    """ultralytics with its settings file in ``tmp_path`` and its online features off."""
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics-config"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_AUTOINSTALL", "false")  # never pip-install a missing requirement
    ultralytics = require("ultralytics")
    off = {"sync", "hub", "wandb", "tensorboard", "mlflow", "clearml", "comet", "dvc", "raytune"}
    ultralytics.settings.update({key: False for key in off if key in ultralytics.settings.defaults})
    ultralytics.settings.update({key: str(tmp_path / key) for key in ("datasets_dir", "weights_dir", "runs_dir")})
    return ultralytics


def test_yolo_seg_trains_validates_and_predicts_in_the_exported_classes(offline_ultralytics, tmp_path, no_network):
    write_surfaces(tmp_path / "normal", 8)
    generate(tmp_path / "normal", tmp_path / "synthetic", None, 24, mix="draem:0.5,cutpaste:0.5", normal_ratio=0.2,
             seed=0, progress=False)
    summary = export(tmp_path / "synthetic", tmp_path / "yolo", "yolo-seg", val_fraction=0.25, seed=0)
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "cutpaste", 1: "draem"} == dict(enumerate(summary["categories"]))
    exported_val = [line.split()[0] for f in sorted((tmp_path / "yolo" / "labels" / "val").glob("*.txt"))
                    for line in f.read_text().splitlines()]

    model = offline_ultralytics.YOLO("yolov8n-seg.yaml")
    model.train(data=str(tmp_path / "yolo" / "data.yaml"), epochs=1, imgsz=64, batch=4, workers=0, device="cpu",
                plots=False, project=str(tmp_path / "runs"), name="train", exist_ok=True, amp=False, val=True,
                verbose=False, seed=0, deterministic=True)
    # ultralytics read every exported polygon of the training split, in its class
    train_labels = model.trainer.train_loader.dataset.labels
    assert len(train_labels) == summary["train"]
    read = sorted(int(c) for label in train_labels for c in label["cls"].reshape(-1))
    exported_train = sorted(int(line.split()[0]) for f in (tmp_path / "yolo" / "labels" / "train").glob("*.txt")
                            for line in f.read_text().splitlines())
    assert read == exported_train and len(read) > 0
    assert sum(len(label["segments"]) for label in train_labels) == len(exported_train)

    metrics = model.val(data=str(tmp_path / "yolo" / "data.yaml"), imgsz=64, batch=4, workers=0, device="cpu",
                        plots=False, project=str(tmp_path / "runs"), name="val", exist_ok=True, verbose=False)
    # the validator counted the exported validation instances per class
    counts = np.bincount([int(c) for c in exported_val], minlength=2)
    assert metrics.nt_per_class.tolist() == counts.tolist()
    assert np.isfinite(metrics.seg.map) and np.isfinite(metrics.box.map)

    image = sorted((tmp_path / "yolo" / "images" / "val").glob("*.png"))[0]
    # an epoch from random weights finds nothing confidently: a low threshold shows the output's form
    result = model.predict(str(image), imgsz=64, conf=0.001, max_det=20, device="cpu", verbose=False,
                           save=False)[0]
    assert result.names == data["names"]
    assert len(result.boxes) > 0 and result.masks is not None
    classes = set(result.boxes.cls.int().tolist())
    assert classes <= set(data["names"])
    assert tuple(result.masks.orig_shape) == (64, 64) and len(result.masks.data) == len(result.boxes)
    assert not no_network
