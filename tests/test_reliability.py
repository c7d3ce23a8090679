"""Issue 9/10: a dataset tool that never loses data; each test failed before its fix.

Tests meet the problem where a user meets it: the ``defectforge`` CLI (typer's CliRunner) for
command-line problems, the library otherwise. All data is built in code.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def good(tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles", "fabric"]):
        Image.fromarray(surface(kind, 64, seed=i)).save(folder / f"{kind}.png")
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


# --- shared primitives (issue 10) ----------------------------------------------------------------

def test_redraw_streams_never_reuse_a_named_stream():
    from defectforge.core.seeding import MAX_RETRIES, Stream, retry_stream
    from defectforge.pipelines.generate import GenerateConfig
    from defectforge.pipelines.sample_writer import _attempt_seed

    dataset_streams = {Stream.SYNTHESIS, Stream.PLAN, Stream.DONORS}
    retries = [retry_stream(a) for a in range(1, MAX_RETRIES + 1)]
    assert len(set(retries)) == MAX_RETRIES and not set(retries) & dataset_streams
    # the first redraw's seed is not the donors' stream's first number (it was, with stream 1 + 1)
    from defectforge.core.seeding import MAX_SEED, sample_rng

    cfg = GenerateConfig(input="x", method="nsa", count=1, seed=3)
    donor_draw = int(sample_rng(3, 5, stream=Stream.DONORS).integers(0, MAX_SEED))
    assert _attempt_seed(cfg, 5, 1) != donor_draw
    assert _attempt_seed(cfg, 5, 2) == int(sample_rng(3, 5, stream=3).integers(0, MAX_SEED))  # unchanged


def test_evaluate_reads_every_image_generate_reads(tmp_path):
    from defectforge.io.images import IMAGE_EXTENSIONS
    from defectforge.io.inputs import load_normal_images
    from defectforge.metrics.synthesis import read_generated

    folder = tmp_path / "imgs"
    folder.mkdir()
    for ext in IMAGE_EXTENSIONS:
        Image.fromarray(surface("metal", 32, seed=1)).convert("L").save(folder / f"a{ext}")
    assert len(load_normal_images(folder).images) == len(IMAGE_EXTENSIONS)
    assert len(read_generated(folder)) == len(IMAGE_EXTENSIONS)  # .gif/.ppm/.pgm were ignored


def test_atomic_writer_leaves_nothing_on_failure(tmp_path):
    from defectforge.io.files import atomic_write

    target = tmp_path / "a.bin"
    atomic_write(target, b"old")

    def broken(stream):
        stream.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_dataset_overlay_keeps_the_preset_that_defines_a_method(good, tmp_path):
    # cutpaste_3way is 1/3 normal by definition; the overlay forced every sample anomalous, so
    # cutpaste_3way and cutpaste_union wrote the same images and masks
    for name in ("cutpaste_3way", "cutpaste_union"):
        r = cli("generate", good, tmp_path / name, "-m", name, "-n", "24", "-q")
        assert r.exit_code == 0, r.output
    three, union = manifest(tmp_path / "cutpaste_3way"), manifest(tmp_path / "cutpaste_union")
    assert all(r["label"] != 0 for r in union)
    normals = [r for r in three if r["label"] == 0]
    assert 3 <= len(normals) <= 15 and all(r["image_path"].startswith("test/good/") for r in normals)
    assert not any("failed" in r for r in three)
    assert tree(tmp_path / "cutpaste_3way" / "test") != tree(tmp_path / "cutpaste_union" / "test")


# --- 1. never delete what the tool did not write ------------------------------------------------

@pytest.fixture
def category(tmp_path):
    """A tiny MVTec-AD category: train/good, test/crack, ground_truth/crack."""
    root = tmp_path / "cat"
    for i, kind in enumerate(["metal", "wood", "tiles"]):
        (root / "train/good").mkdir(parents=True, exist_ok=True)
        Image.fromarray(surface(kind, 64, seed=i)).save(root / "train/good" / f"{i:03d}.png")
    (root / "test/crack").mkdir(parents=True)
    (root / "ground_truth/crack").mkdir(parents=True)
    Image.fromarray(surface("metal", 64, seed=9)).save(root / "test/crack/000.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "ground_truth/crack/000_mask.png")
    return root


def test_output_equal_to_inside_or_around_input_is_refused_and_nothing_deleted(category, tmp_path):
    before = tree(category)
    for out in (category, category / "synthetic", category / "train/good", tmp_path):
        for extra in ([], ["--overwrite"]):
            r = cli("generate", category, out, "-m", "cutpaste", "-n", "2", "-q", *extra)
            assert r.exit_code == 2 and "INPUT" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert tree(category) == before


def test_overwrite_never_deletes_user_files(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q").exit_code == 0
    (out / "test/cutpaste/my_notes.png").write_bytes(b"mine")
    (out / "test/other").mkdir()
    (out / "test/other/keep.txt").write_text("mine")
    before = tree(out)
    r = cli("generate", good, out, "-m", "draem", "-n", "4", "-q", "--overwrite")
    assert r.exit_code == 2 and "nothing deleted" in r.output and "my_notes.png" in r.output
    assert tree(out) == before
    # without the user's files, --overwrite replaces the run (also one killed before its manifest)
    (out / "test/cutpaste/my_notes.png").unlink()
    (out / "test/other/keep.txt").unlink()
    (out / "manifest.jsonl").unlink()
    assert cli("generate", good, out, "-m", "draem", "-n", "3", "-q", "--overwrite").exit_code == 0
    assert sorted(p for p in tree(out) if p.startswith("test/")) == [f"test/draem/{i:06d}.png" for i in range(3)]


def test_demo_rerun_keeps_user_files(tmp_path, monkeypatch):
    import defectforge.cli.synthesis as syn

    monkeypatch.setattr(syn, "DEMO_METHODS", ("cutpaste",))
    monkeypatch.setattr(syn, "available_image_methods", lambda: ["cutpaste"])
    out = tmp_path / "demo"
    assert cli("demo", out, "-n", "2").exit_code == 0
    mine = out / "datasets/cutpaste/test/cutpaste/labelled_by_me.png"
    mine.write_bytes(b"mine")
    r = cli("demo", out, "-n", "2")
    assert r.exit_code == 2 and "labelled_by_me.png" in r.output and mine.read_bytes() == b"mine"


# --- 2. resume and extend, checked ----------------------------------------------------------------

def test_resume_repairs_missing_and_damaged_files(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "draem", "-n", "6", "-q").exit_code == 0
    original = tree(out)
    records = manifest(out)
    (out / records[1]["image_path"]).unlink()
    mask = out / records[4]["mask_path"]
    mask.write_bytes(mask.read_bytes()[:-20] + b"\0" * 20)  # same size, other bytes
    # a changed file is the user's (issue 19, tests/test_outputs.py); --discard-edits makes it again
    r = cli("generate", good, out, "-m", "draem", "-n", "6", "-q", "--resume", "--discard-edits")
    assert r.exit_code == 0 and "repaired 2" in r.output, r.output
    assert tree(out) == original
    assert all(rec["image_file"]["sha256"] and rec["mask_file"]["bytes"] > 0 for rec in records)


def test_resume_with_a_larger_count_extends_the_run(good, tmp_path):
    assert cli("generate", good, tmp_path / "a", "-m", "cutpaste", "-n", "5", "-q").exit_code == 0
    r = cli("generate", good, tmp_path / "a", "-m", "cutpaste", "-n", "9", "-q", "--resume")
    assert r.exit_code == 0 and "resumed 5" in r.output, r.output
    assert cli("generate", good, tmp_path / "b", "-m", "cutpaste", "-n", "9", "-q").exit_code == 0
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    r = cli("generate", good, tmp_path / "a", "-m", "cutpaste", "-n", "3", "-q", "--resume")
    assert r.exit_code == 2 and "shrink" in r.output


def test_resume_refusal_names_the_fields_that_differ(good, tmp_path):
    assert cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "2", "-q").exit_code == 0
    r = cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "2", "-s", "4", "--set", "color_jitter=0.2",
            "-q", "--resume")
    assert r.exit_code == 2 and "generator.seed: 0 -> 4" in r.output and "color_jitter" in r.output, r.output


def test_a_run_failing_validation_writes_nothing(good, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(masks / "metal.png")  # the other images have none
    out = tmp_path / "out"
    r = cli("generate", good, out, "-m", "memseg", "-n", "2", "--foreground-masks", masks, "-q")
    assert r.exit_code == 2 and "no foreground mask" in r.output and not out.exists()
    r = cli("generate", good, out, "-m", "draem", "-n", "2", "--textures", tmp_path / "nope", "-q")
    assert r.exit_code == 2 and "--textures" in r.output and "input folder" not in r.output and not out.exists()


# --- 3. inputs that are not normal images ---------------------------------------------------------

def test_dataset_root_is_refused_with_its_categories(category, tmp_path):
    root = category.parent
    (root / "bottle/train/good").mkdir(parents=True)
    r = cli("generate", root, tmp_path / "elsewhere" / "o", "-m", "cutpaste", "-n", "1", "-q")
    assert r.exit_code == 2 and "bottle" in r.output and "cat" in r.output and "categories" in r.output


def test_runs_and_ground_truth_nested_in_input_are_not_read(good, tmp_path):
    from defectforge.io.inputs import load_normal_images

    assert cli("generate", good, tmp_path / "run", "-m", "cutpaste", "-n", "3", "-q").exit_code == 0
    (tmp_path / "run").rename(good / "old_run")
    (good / "ground_truth/crack").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(good / "ground_truth/crack/a_mask.png")
    with pytest.warns(UserWarning, match="old_run"):
        images = load_normal_images(good)
    assert len(images) == 4 and all("/" not in images.relative(i) for i in range(4))
    r = cli("generate", good / "old_run", tmp_path / "o", "-m", "cutpaste", "-n", "1", "-q")
    assert r.exit_code == 2 and "output of a defectforge run" in r.output


def test_twelve_bit_data_in_16_bit_png_keeps_its_contrast(tmp_path):
    folder = tmp_path / "deep"
    folder.mkdir()
    base = surface("metal", 64, seed=0)[..., 0].astype(np.uint16) * 16  # 12-bit data, max <= 4080
    for i in range(3):
        Image.fromarray(np.roll(base, 7 * i, axis=1)).save(folder / f"{i}.png")
    out = tmp_path / "o"
    assert cli("generate", folder, out, "-m", "cutpaste", "-n", "3", "-q", "--normal-ratio", "1").exit_code == 0
    img = np.asarray(Image.open(out / manifest(out)[0]["image_path"]))
    assert img.max() > 150  # divided by 65535 it was at most 16
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["inputs"]["bit_depth"] == 12
    out16 = tmp_path / "o16"
    assert cli("generate", folder, out16, "-m", "cutpaste", "-n", "2", "-q", "--output-bit-depth", "16").exit_code == 0
    deep = np.asarray(Image.open(out16 / manifest(out16)[0]["image_path"]))
    assert deep.dtype == np.uint16 and 2000 < deep.max() <= 4095
    r = cli("generate", folder, tmp_path / "o8", "-m", "cutpaste", "-n", "1", "-q", "--bit-depth", "9")
    assert r.exit_code == 2 and "--bit-depth" in r.output


def test_huge_and_tiny_images_are_skipped_or_allowed(good, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    Image.fromarray(surface("wood", 100, seed=3)).save(good / "huge.png")  # 10,000 px
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good / "tiny.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    for f in ("metal", "wood", "tiles", "fabric"):
        Image.fromarray(surface(f, 64, seed=1)[:60, :60]).save(good / f"{f}.png")  # 3,600 px
    out = tmp_path / "o"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q")
    assert r.exit_code == 0 and "skipped 2" in r.output, r.output
    import yaml

    reasons = " ".join(s["reason"] for s in yaml.safe_load((out / "config.yaml").read_text())["inputs"]["skipped"])
    assert "--max-pixels" in reasons and "smaller than the smallest" in reasons
    r = cli("generate", good, tmp_path / "o2", "-m", "cutpaste", "-n", "4", "-q", "--max-pixels", "20000")
    assert r.exit_code == 0 and "skipped 1" in r.output, r.output


# --- 4. one line per error ------------------------------------------------------------------------

def test_file_system_errors_are_one_line_naming_the_fix(good, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    r = cli("generate", good, tmp_path / "afile/sub", "-m", "cutpaste", "-n", "1", "-q")
    assert r.exit_code == 2 and "is a file" in r.output and "Errno" not in r.output
    import errno

    import defectforge.pipelines.sample_writer as writer  # where samples are written

    real = writer.atomic_write_bytes
    calls = {"n": 0}

    def disk_full(path, data):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(writer, "atomic_write_bytes", disk_full)
    out = tmp_path / "o"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "6", "-q")
    assert r.exit_code == 2 and "disk full" in r.output and "--resume" in r.output and "Errno" not in r.output
    assert len(r.output.strip().splitlines()) == 1
    monkeypatch.setattr(writer, "atomic_write_bytes", real)
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "6", "-q", "--resume")
    assert r.exit_code == 0 and "resumed" in r.output


def test_missing_optional_package_is_one_line_and_writes_nothing(good, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    out = tmp_path / "o"
    r = cli("generate", good, out, "-m", "sami", "-n", "1", "-q")
    assert r.exit_code == 2 and "defectforge[textures]" in r.output and not out.exists()
    r = cli("generate", good, out, "-m", "draem", "--textures", "skimage", "-n", "1", "-q")
    assert r.exit_code == 2 and "defectforge[textures]" in r.output and not out.exists()
    import defectforge.cli.synthesis as syn

    monkeypatch.setattr(syn, "available_image_methods", lambda: ["cutpaste"])
    r = cli("preview", good, tmp_path / "p.png", "-m", "all", "-n", "2", "--size", "32")
    assert r.exit_code == 0 and "left out sami" in r.output


def test_options_are_validated_and_flags_are_flags(good, tmp_path):
    r = cli("preview", good, tmp_path / "p.png", "-n", "0")
    assert r.exit_code == 2 and "--count" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli("generate", good, tmp_path / "o", "-m", "draem", "--set", "opacity_range")
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
    r = cli("generate", good, tmp_path / "o", "-m", "memseg", "--foreground-threshold", "0.5", "-q")
    assert r.exit_code == 2 and "--foreground-threshold applies only" in r.output and not (tmp_path / "o").exists()
    r = cli("preview", good, tmp_path / "p.png", "--foreground-invert")
    assert r.exit_code == 2 and "--foreground-invert applies only" in r.output
    r = cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "-3")
    assert r.exit_code == 2 and "--count" in r.output
    for args, option in ((["bench", "--batch", "0"], "--batch"), (["bench", "--min-time", "-1"], "--min-time"),
                         (["evaluate-detection", tmp_path, "--ground-truth", tmp_path, "--fpr-limit", "0"], "--fpr-limit"),
                         (["evaluate", tmp_path, "--real", tmp_path, "--seed", "-2"], "--seed"),
                         (["demo", tmp_path / "d", "-n", "0"], "--count")):
        r = cli(*args)
        assert r.exit_code == 2 and option in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    for command in ("generate", "preview", "benchmark", "evaluate"):
        assert "<bool>" not in cli(command, "--help").output


def test_warnings_print_one_line_without_source(good, tmp_path):
    import os
    import subprocess
    import sys

    (good / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    p = subprocess.run([sys.executable, "-m", "defectforge", "generate", str(good), str(tmp_path / "o"), "-m",
                        "cutpaste", "-n", "1", "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "warning: skipping" in p.stderr and "warnings.warn" not in p.stderr and ".py:" not in p.stderr


# --- 5. records that rebuild the run --------------------------------------------------------------

def test_config_yaml_rebuilds_the_run(good, tmp_path):
    a = tmp_path / "a"
    assert cli("generate", good, a, "-m", "glass_las", "-n", "5", "-s", "3", "--set", "beta_std=0.2",
               "--foreground", "otsu", "--normal-ratio", "0.2", "-q").exit_code == 0
    r = cli("generate", "--config", a / "config.yaml", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.output
    assert tree(a) == tree(tmp_path / "b")
    assert all("index" in rec for rec in manifest(a))
    import yaml

    recorded = yaml.safe_load((a / "config.yaml").read_text())["synthesizer"]
    assert {"perlin_exponent_range", "threshold", "max_attempts"} <= set(recorded)  # every default, not the preset's
    # a mixture wrapped by the count control rebuilds too
    c = tmp_path / "c"
    assert cli("generate", good, c, "--mix", "cutpaste:0.5,draem:0.5", "--defect-count", "1-2", "-n", "4",
               "-q").exit_code == 0
    r = cli("generate", "--config", c / "config.yaml", tmp_path / "d", "-q")
    assert r.exit_code == 0, r.output
    assert tree(c) == tree(tmp_path / "d")


# --- 6. invisible anomalies -----------------------------------------------------------------------

def test_contrast_is_recorded_and_min_contrast_redraws(good, tmp_path):
    from defectforge.io.images import read_image

    out = tmp_path / "o"
    assert cli("generate", good, out, "-m", "draem", "-n", "12", "-q").exit_code == 0
    records = manifest(out)
    for rec in records:
        image, mask = read_image(out / rec["image_path"]), read_image(out / rec["mask_path"])[..., 0] > 0
        source = read_image(good / rec["source_image"])
        diff = np.abs(image.astype(int) - source.astype(int))[mask].mean() / 255
        assert rec["contrast"] == pytest.approx(diff, abs=1e-6)
    threshold = sorted(r["contrast"] for r in records)[6]  # half the samples are below it
    strict = tmp_path / "strict"
    assert cli("generate", good, strict, "-m", "draem", "-n", "12", "-q", "--min-contrast", threshold).exit_code == 0
    again = manifest(strict)
    assert all(r["contrast"] >= threshold or "failed" in r for r in again)
    redrawn = [r for r in again if r.get("redrawn")]
    assert redrawn and all("contrast" in r["redrawn"] for r in redrawn)
    kept = [r for r in again if not r.get("attempt")]
    assert all(r["params"] == records[r["index"]]["params"] for r in kept)  # same stream, only redraws differ
