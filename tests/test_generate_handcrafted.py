"""The generator with foreground, donors, mixtures and controls: same bytes for any worker count."""

import json

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from defectforge.pipelines.generate import generate
from defectforge.io.images import read_image, write_image
from defectforge.sources.procedural import surface


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def object_folder(tmp_path):
    """Bright textured discs on a dark background, and their masks."""
    folder, masks = tmp_path / "good", tmp_path / "fg"
    folder.mkdir()
    masks.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles", "fabric"]):
        tex = surface(kind, 64, seed=i)
        m = np.zeros((64, 64), np.uint8)
        cv2.circle(m, (32, 32), 20 + i, 255, -1)
        img = np.where(m[..., None] > 0, np.maximum(tex, 140), 10).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{kind}.png")
        write_image(masks / f"{kind}.png", m)
    return folder


def _manifest(out):
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method", ["nsa", "defectmaker"])
def test_donor_methods_are_identical_for_any_worker_count(method, object_folder, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(object_folder, a, method, count=6, seed=3, progress=False)
    generate(object_folder, b, method, count=6, seed=3, progress=False, workers=2)
    assert files(a) == files(b)
    for r in _manifest(a):
        assert len(r["donor_images"]) == 3 and r["source_image"] not in r["donor_images"]


def test_foreground_keeps_defects_on_the_object(object_folder, tmp_path):
    for option in [{"foreground": "otsu"}, {"foreground_masks": object_folder.parent / "fg"}]:
        out = tmp_path / str(len(option)) / next(iter(option))
        generate(object_folder, out, "glass_las", count=6, seed=1, progress=False, **option)
        for r in _manifest(out):
            mask = read_image(out / r["mask_path"])[..., 0] > 0
            source = read_image(object_folder / r["source_image"])[..., 0]
            assert mask.any() and (source[mask] > 100).all()
        config = yaml.safe_load((out / "config.yaml").read_text())
        assert config["generator"]["foreground"] == option.get("foreground")


def test_mix_writes_each_sample_under_its_method(object_folder, tmp_path):
    out = tmp_path / "mix"
    summary = generate(object_folder, out, None, count=12, seed=0, progress=False, mix="cutpaste:0.5,memseg:0.5")
    assert summary["anomalous"] == 12
    methods = {r["method"] for r in _manifest(out)}
    assert methods == {"cutpaste", "memseg"}
    for r in _manifest(out):
        assert r["image_path"].startswith(f"test/{r['method']}/")


def test_controls_are_recorded_and_resume_identically(object_folder, tmp_path, monkeypatch):
    bank = tmp_path / "bank"
    bank.mkdir()
    disc = np.zeros((30, 30), np.uint8)
    cv2.circle(disc, (15, 15), 12, 255, -1)
    write_image(bank / "disc.png", disc)
    kw = dict(count=8, seed=5, progress=False, defect_count=(1, 2), area_range=(0.01, 0.3), mask_bank=bank,
              foreground="otsu")
    full = tmp_path / "full"
    generate(object_folder, full, "memseg", **kw)
    config = yaml.safe_load((full / "config.yaml").read_text())
    assert config["generator"]["defect_count"] == [1, 2] and config["synthesizer"]["method"] == "control"
    for r in _manifest(full):
        assert 1 <= len(r["params"]["defects"]) <= 2
    # interrupted after a few samples, then resumed: the same files
    from defectforge.pipelines.sample_writer import SampleWriter

    part = tmp_path / "part"
    original = SampleWriter._write
    calls = {"n": 0}

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(SampleWriter, "_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(object_folder, part, "memseg", **kw)
    monkeypatch.setattr(SampleWriter, "_write", original)
    generate(object_folder, part, "memseg", resume=True, **kw)
    assert files(part) == files(full)


def test_bad_control_options(object_folder, tmp_path):
    with pytest.raises(ValueError, match="--set"):
        generate(object_folder, tmp_path / "x", None, count=2, mix="cutpaste,draem", overrides={"variant": "scar"},
                 progress=False)
    with pytest.raises(ValueError, match="threshold"):
        generate(object_folder, tmp_path / "y", "memseg", count=2, foreground="threshold", progress=False)


def test_magnetic_tile_handcrafted_methods(tmp_path):
    import os
    import shutil
    from pathlib import Path

    root = Path(os.environ.get("DEFECTFORGE_MAGNETIC_TILE",
                               Path(__file__).parents[2] / "shared/data/magnetic_tile"))
    good = root / "train" / "good"
    if not good.is_dir():
        pytest.skip("magnetic_tile data not present")
    subset = tmp_path / "mt"
    subset.mkdir()
    for f in sorted(good.iterdir())[:6]:
        shutil.copy(f, subset / f.name)
    for method in ["nsa", "glass_las"]:
        a, b = tmp_path / f"{method}_a", tmp_path / f"{method}_b"
        generate(subset, a, method, count=6, seed=0, size=64, foreground="otsu", progress=False)
        generate(subset, b, method, count=6, seed=0, size=64, foreground="otsu", progress=False, workers=2)
        assert files(a) == files(b)
        assert all(r["label"] >= 1 for r in _manifest(a))
