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
    from defectforge.pipelines.generate import GenerateConfig, _attempt_seed

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
