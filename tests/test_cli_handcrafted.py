"""CLI options of the hand-crafted family: foreground, mixtures, controls, preview of every method."""

import json

import cv2
import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.io.images import write_image
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()


def make_inputs(folder):
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(surface("wood", 48, seed=i)).save(folder / f"{i}.png")
    return folder


def test_generate_with_mix_foreground_and_controls(tmp_path):
    src = make_inputs(tmp_path / "in")
    bank = tmp_path / "bank"
    disc = np.zeros((20, 20), np.uint8)
    cv2.circle(disc, (10, 10), 8, 255, -1)
    write_image(bank / "disc.png", disc)
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(src), str(out), "--mix", "cutpaste:0.5,glass_las:0.5", "-n", "6",
                                 "--foreground", "otsu", "--defect-count", "1-2", "--area-range", "0.005,0.5",
                                 "--mask-bank", str(bank), "-q"])
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 6 and {r["method"] for r in records} <= {"cutpaste", "glass_las"}
    assert all(1 <= len(r["params"]["defects"]) <= 2 for r in records)


def test_generate_option_errors(tmp_path):
    src = make_inputs(tmp_path / "in")
    neither = runner.invoke(app, ["generate", str(src), str(tmp_path / "a"), "-n", "2"])
    assert neither.exit_code == 2 and "--mix" in neither.output
    bad = runner.invoke(app, ["generate", str(src), str(tmp_path / "b"), "-m", "memseg", "--defect-count", "x"])
    assert bad.exit_code != 0 and "defect-count" in bad.output
    bad = runner.invoke(app, ["generate", str(src), str(tmp_path / "c"), "-m", "memseg", "--foreground", "otsuu"])
    assert bad.exit_code == 2 and "otsu" in bad.output


def test_preview_all_methods_on_the_same_inputs(tmp_path):
    from defectforge.cli.common import available_image_methods

    src = make_inputs(tmp_path / "in")
    png = tmp_path / "all.png"
    result = runner.invoke(app, ["preview", str(src), str(png), "-m", "all", "--count", "2", "--size", "32",
                                 "--compact", "--foreground", "otsu"])
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(png))
    from defectforge.pipelines.preview import HEADER_HEIGHT

    assert grid.shape[0] == HEADER_HEIGHT + (1 + len(available_image_methods())) * (32 + 4)  # all but bank / model


def test_methods_needing_a_missing_package_are_left_out(monkeypatch):
    import importlib.util

    from defectforge.cli.common import available_image_methods

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    names = available_image_methods()
    assert "sami" not in names and "riad" in names


def test_bench_lists_cpu_bound_methods_apart():
    result = runner.invoke(app, ["bench", "-m", "nsa,defectmaker", "--size", "64", "--batch", "4", "--min-time", "0.05"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("CPU-bound"))
    assert lines.index(next(x for x in lines if x.startswith("defectmaker"))) < header
    assert lines.index(next(x for x in lines if x.startswith("nsa"))) > header
    rows = json.loads(runner.invoke(app, ["bench", "-m", "nsa", "--size", "64", "--batch", "2", "--min-time", "0.01",
                                          "--json"]).stdout)
    assert rows[0]["cpu_bound"] is True and "load_before" in rows[0]
