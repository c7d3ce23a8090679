"""The dataset generator: layout, manifest, determinism across workers, resume, bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectforge.pipelines import generate as gen
from defectforge.pipelines.generate import OutputExistsError, generate
from defectforge.pipelines.sample_writer import SampleWriter
from defectforge.io.images import ImageReadError, read_image
from defectforge.sources.procedural import surface

MAGNETIC_TILE = Path(os.environ.get("DEFECTFORGE_MAGNETIC_TILE", Path(__file__).parents[2] / "shared/data/magnetic_tile"))


@pytest.fixture
def normal_folder(tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles"]):
        Image.fromarray(surface(kind, 64, seed=i)).save(folder / f"{kind}.png")
    return folder


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(normal_folder, tmp_path):
    out = tmp_path / "out"
    summary = generate(normal_folder, out, "draem", count=12, seed=7, progress=False)
    assert summary["written"] == 12 and summary["anomalous"] == 12
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in lines] == list(range(12))
    for r in lines:
        assert {"index", "image_path", "mask_path", "label", "method", "seed", "source_image", "params",
                "area_fraction", "bbox"} <= set(r)
        assert r["label"] == 1 and r["method"] == "draem" and r["seed"] == 7
        image = read_image(out / r["image_path"])
        mask = np.asarray(Image.open(out / r["mask_path"]))
        assert image.shape[:2] == mask.shape == (64, 64)
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert r["mask_path"] == f"ground_truth/draem/{Path(r['image_path']).stem}_mask.png"
        assert abs(r["area_fraction"] - (mask > 0).mean()) < 1e-9
        x0, y0, x1, y1 = r["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert (normal_folder / r["source_image"]).exists()
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["generator"]["method"] == "draem" and config["synthesizer"]["method"] == "draem"
    assert not (out / ".records").exists()


def test_normal_ratio_and_sources_drawn_by_seed(normal_folder, tmp_path):
    generate(normal_folder, tmp_path / "a", "cutpaste", count=40, seed=1, normal_ratio=0.5, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "a/manifest.jsonl").read_text().splitlines()]
    normals = [r for r in lines if r["label"] == 0]
    assert 8 < len(normals) < 32
    assert all(r["image_path"].startswith("test/good/") and r["mask_path"] is None for r in normals)
    assert len({r["source_image"] for r in lines}) == 3


def test_workers_give_identical_files(normal_folder, tmp_path):
    generate(normal_folder, tmp_path / "one", "cutpaste_union", count=10, seed=3, progress=False)
    generate(normal_folder, tmp_path / "two", "cutpaste_union", count=10, seed=3, workers=2, progress=False)
    assert files(tmp_path / "one") == files(tmp_path / "two")


def test_resume_after_interruption_is_identical(normal_folder, tmp_path, monkeypatch):
    generate(normal_folder, tmp_path / "full", "draem", count=20, seed=5, batch_size=4, progress=False)
    original = SampleWriter.run
    calls = {"n": 0}

    def interrupted(self, indices):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, indices)

    monkeypatch.setattr(SampleWriter, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(normal_folder, tmp_path / "part", "draem", count=20, seed=5, batch_size=4, progress=False)
    monkeypatch.setattr(SampleWriter, "run", original)
    assert not (tmp_path / "part/manifest.jsonl").exists()
    with pytest.raises(OutputExistsError, match="--resume"):
        generate(normal_folder, tmp_path / "part", "draem", count=20, seed=5, batch_size=4, progress=False)
    # what a process killed inside an atomic write leaves (io.files.atomic_write's temporary name)
    (tmp_path / "part/test/draem/.000009.png.k3j2x1.tmp").write_bytes(b"")
    summary = generate(normal_folder, tmp_path / "part", "draem", count=20, seed=5, batch_size=4, resume=True,
                       progress=False)
    assert summary["resumed"] == 8
    assert files(tmp_path / "full") == files(tmp_path / "part")


def test_resume_refuses_a_different_run(normal_folder, tmp_path):
    generate(normal_folder, tmp_path / "o", "cutpaste", count=3, seed=1, progress=False)
    with pytest.raises(OutputExistsError, match="different run"):
        generate(normal_folder, tmp_path / "o", "cutpaste", count=3, seed=2, resume=True, progress=False)
    generate(normal_folder, tmp_path / "o", "cutpaste", count=3, seed=2, overwrite=True, progress=False)


def test_png_compression_changes_bytes_not_pixels_and_old_records_resume_as_level1(normal_folder, tmp_path):
    from defectforge.io.images import decode_png
    from defectforge.pipelines.run_config import GenerateConfig

    written = {}
    for compression in ("fast", "level1", "level9"):
        generate(normal_folder, tmp_path / compression, "draem", count=3, seed=1, png_compression=compression,
                 progress=False)
        written[compression] = files(tmp_path / compression)
    pngs = sorted(k for k in written["fast"] if k.endswith(".png"))
    assert pngs and all(k.startswith(("test/", "ground_truth/")) for k in pngs)
    for k in pngs:
        assert written["fast"][k] != written["level1"][k] != written["level9"][k]
        assert np.array_equal(decode_png(written["fast"][k]), decode_png(written["level1"][k]))
        assert np.array_equal(decode_png(written["fast"][k]), decode_png(written["level9"][k]))
    # a record written before the option existed was encoded at level 1: resuming it says so
    assert GenerateConfig.from_dict({"input": str(normal_folder), "method": "draem"}).png_compression == "level1"
    config = yaml.safe_load((tmp_path / "level1" / "config.yaml").read_text())
    del config["generator"]["png_compression"]
    (tmp_path / "level1" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    with pytest.raises(OutputExistsError, match="png_compression: 'level1' -> 'fast'"):
        generate(normal_folder, tmp_path / "level1", "draem", count=4, seed=1, resume=True, progress=False)
    summary = generate(normal_folder, tmp_path / "level1", "draem", count=4, seed=1, png_compression="level1",
                       resume=True, progress=False)
    assert summary["resumed"] == 3
    with pytest.raises(ValueError, match="png_compression"):
        generate(normal_folder, tmp_path / "bad", "draem", count=1, png_compression="zip", progress=False)


def test_pool_workers_take_the_procedural_textures_the_main_process_made(normal_folder, tmp_path, monkeypatch):
    from defectforge.io.inputs import load_normal_images
    from defectforge.pipelines.build import build_from_config, procedural_banks
    from defectforge.pipelines.run_config import GenerateConfig
    from defectforge.sources import textures as textures_module

    cfg = GenerateConfig(str(normal_folder), mix="draem:0.5,glass_las:0.5", count=4, seed=2)
    banks = procedural_banks(build_from_config(cfg))
    assert len(banks) == 2 and banks[0].key == banks[1].key
    made = {bank.key: bank.made() for bank in banks}
    assert len(made[banks[0].key]) == banks[0].count

    def not_again(*args):
        raise AssertionError("a worker made a texture the main process had made")

    monkeypatch.setattr(textures_module, "procedural_texture", not_again)
    images = load_normal_images(normal_folder)
    records = SampleWriter(cfg, str(tmp_path / "w"), images, textures=made).run([0, 1, 2, 3])
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    with pytest.raises(AssertionError, match="made a texture"):
        SampleWriter(cfg, str(tmp_path / "x"), images).run([0, 1, 2, 3])


def test_refuses_folder_with_user_files(normal_folder, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="other files"):
        generate(normal_folder, out, "cutpaste", count=2, progress=False)
    with pytest.raises(OutputExistsError, match="did not write"):
        generate(normal_folder, out, "cutpaste", count=2, overwrite=True, progress=False)
    assert (out / "notes.txt").read_text() == "keep me"


def test_mixed_modes_sizes_and_a_broken_file(tmp_path):
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    rgb = surface("wood", 80, seed=0)
    Image.fromarray(rgb).save(folder / "rgb.jpg")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb[:48, :64], np.full((48, 64), 200, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)).save(folder / "deep.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.warns(UserWarning, match="broken.png"):
        summary = generate(tmp_path / "in", tmp_path / "out", "cutpaste", count=16, seed=0, progress=False)
    assert summary["skipped_inputs"] == 1
    lines = [json.loads(x) for x in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    skipped = yaml.safe_load((tmp_path / "out/config.yaml").read_text())["inputs"]["skipped"]
    assert skipped[0]["skipped_input"] == "nested/broken.png" and "cannot read" in skipped[0]["reason"]
    assert all("index" in r for r in lines)  # one schema per manifest line: samples only
    from defectforge.metrics.synthesis import read_generated

    assert len(read_generated(tmp_path / "out")) == 16  # evaluate reads past the skipped-input line
    shapes = {read_image(tmp_path / "out" / r["image_path"]).shape for r in lines}
    assert (48, 64, 3) in shapes and any(s[2] == 1 for s in shapes)
    with pytest.warns(UserWarning):
        generate(tmp_path / "in", tmp_path / "sized", "draem", count=6, size=32, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "sized/manifest.jsonl").read_text().splitlines() if "index" in x]
    assert {read_image(tmp_path / "sized" / r["image_path"]).shape[:2] for r in lines} == {(32, 32)}


def test_sixteen_bit_is_scaled():
    arr = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "df16.png"
    path.write_bytes(buf.getvalue())
    img = read_image(path)
    assert img.dtype == np.uint8 and img.max() == 255 and img.min() == 0


def test_bad_inputs(tmp_path, normal_folder):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate(tmp_path / "missing", tmp_path / "o", "draem", count=1, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        generate(tmp_path / "empty", tmp_path / "o", "draem", count=1, progress=False)
    with pytest.raises(ValueError, match="holds no images"):
        generate(normal_folder, tmp_path / "o", "draem", count=1, textures=tmp_path / "empty", progress=False)
    with pytest.raises(ValueError, match="Did you mean"):
        generate(normal_folder, tmp_path / "o", "cutpast", count=1, progress=False)
    with pytest.raises(ValueError, match="count"):
        generate(normal_folder, tmp_path / "o", "draem", count=0, progress=False)
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny / "t.png")
    with pytest.raises(ValueError, match="smaller than the smallest"):
        generate(tiny, tmp_path / "o2", "draem", count=1, progress=False)


def test_unwritable_output_names_the_folder(normal_folder, tmp_path, monkeypatch):
    def deny(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    from defectforge.pipelines import output_folder

    monkeypatch.setattr(output_folder, "atomic_write_bytes", deny)  # config.yaml is the first file written
    with pytest.raises(PermissionError) as info:
        generate(normal_folder, tmp_path / "ro", "draem", count=1, progress=False)
    assert "ro/config.yaml" in gen.describe_os_error(info.value) and "--resume" in gen.describe_os_error(info.value)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="too many pixels"):
        read_image(tmp_path / "big.png")


def test_texture_folder_of_any_extension(normal_folder, tmp_path):
    tex = tmp_path / "dtd" / "images" / "banded"
    tex.mkdir(parents=True)
    Image.fromarray(surface("fabric", 40, seed=0)).save(tex / "a.jpg")
    Image.fromarray(surface("tiles", 50, seed=0)).save(tex / "b.bmp")
    generate(normal_folder, tmp_path / "o", "draem", count=6, textures=tmp_path / "dtd", progress=False)
    lines = [json.loads(x) for x in (tmp_path / "o/manifest.jsonl").read_text().splitlines()]
    assert {r["params"]["texture"] for r in lines} <= {0, 1}


@pytest.mark.skipif(not MAGNETIC_TILE.exists(), reason="magnetic_tile data not present")
def test_magnetic_tile_workers_identical(tmp_path):
    generate(MAGNETIC_TILE / "train/good", tmp_path / "a", "draem", count=16, seed=7, progress=False)
    generate(MAGNETIC_TILE / "train/good", tmp_path / "b", "draem", count=16, seed=7, workers=2, progress=False)
    assert files(tmp_path / "a") == files(tmp_path / "b")
