"""The command line, end to end on tiny inputs."""

import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()


def make_inputs(folder):
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(surface("metal", 48, seed=i)).save(folder / f"{i}.png")
    return folder


def test_methods_json():
    result = runner.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    names = {r["name"] for r in rows}
    assert {"draem", "cutpaste"} <= names
    assert all({"family", "level", "description", "source", "licence"} <= set(r) for r in rows)


def test_methods_markdown_has_a_row_per_method():
    import defectforge

    result = runner.invoke(app, ["methods", "--markdown"])
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("| method | family | level |")
    rows = {line.split("|")[1].strip().strip("`") for line in lines[2:]}
    assert rows == set(defectforge.list_methods())
    assert all(line.count("|") == 7 for line in lines)


def test_generate_preview_and_errors(tmp_path):
    src = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    result = runner.invoke(app, ["generate", str(src), str(out), "--method", "draem", "--count", "4", "--seed", "7",
                                 "--set", "opacity_range=[0.5, 1.0]", "-q"])
    assert result.exit_code == 0, result.output
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4
    params = [json.loads(x)["params"]["opacity"] for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert min(params) >= 0.5
    again = runner.invoke(app, ["generate", str(src), str(out), "--method", "draem", "--count", "4", "-q"])
    assert again.exit_code == 2 and "--resume" in again.output
    bad = runner.invoke(app, ["generate", str(src), str(tmp_path / "o2"), "--method", "draem", "--set", "opacity=1"])
    assert bad.exit_code == 2 and "opacity_range" in bad.output
    png = tmp_path / "p.png"
    result = runner.invoke(app, ["preview", str(src), str(png), "-m", "draem,cutpaste", "--count", "3", "--size", "48"])
    assert result.exit_code == 0, result.output
    grid = np.asarray(Image.open(png))
    assert grid.shape[0] == 7 * (48 + 4)  # normal row + 3 rows per method


def test_bench_json():
    result = runner.invoke(app, ["bench", "-m", "cutpaste", "--size", "64", "--batch", "4", "--min-time", "0.05",
                                 "--json", "--compare", "anomalib"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["method"] == "cutpaste" and rows[0]["images_per_second"] > 0
    assert {"ms_per_image", "threads"} <= set(rows[0])
    assert rows[1]["method"].startswith("anomalib")


def test_demo(tmp_path):
    result = runner.invoke(app, ["demo", str(tmp_path / "demo"), "--count", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo/preview.png").exists()
    assert len((tmp_path / "demo/datasets/draem/manifest.jsonl").read_text().splitlines()) == 3
    again = runner.invoke(app, ["demo", str(tmp_path / "demo"), "--count", "3"])
    assert again.exit_code == 0
    (tmp_path / "user").mkdir()
    (tmp_path / "user/file.txt").write_text("x")
    refused = runner.invoke(app, ["demo", str(tmp_path / "user")])
    assert refused.exit_code == 2
