"""The command line, end to end on tiny inputs."""

import json

import numpy as np
import torch
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


def test_methods_params_lists_the_bounds_the_argument_checks_declare():
    result = runner.invoke(app, ["methods", "--params", "draem"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert "default [0.2, 1.0]  from 0 to 1 (each end)" in lines["opacity_range"]
    assert lines["augmentations"].endswith("one of draem, anomalib, none")
    assert "from 0 to 1" in lines["anomaly_probability"]
    as_json = json.loads(runner.invoke(app, ["methods", "--params", "draem", "--json"]).output)
    assert {p["name"] for p in as_json} == set(lines)
    unknown = runner.invoke(app, ["methods", "--params", "dream"])
    assert unknown.exit_code == 2 and "draem" in unknown.output


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
    from defectforge.pipelines.preview import HEADER_HEIGHT

    assert grid.shape[0] == HEADER_HEIGHT + 7 * (48 + 4)  # file names, normal row + 3 rows per method


def test_bench_json():
    result = runner.invoke(app, ["bench", "-m", "cutpaste", "--size", "64", "--batch", "4", "--min-time", "0.05",
                                 "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["method"] == "cutpaste" and rows[0]["images_per_second"] > 0
    assert {"ms_per_image", "threads"} <= set(rows[0]) and rows[0]["size"] == 64


def test_bench_measures_the_anomalous_share_instead_of_assuming_it():
    # cutpaste_3way's class 0 is normal (1/3 of samples): the row says so, cutpaste's row says 100%
    result = runner.invoke(app, ["bench", "-m", "cutpaste_3way,cutpaste", "--size", "64", "--batch", "48",
                                 "--min-time", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in json.loads(result.stdout)}
    assert 0.45 < rows["cutpaste_3way"]["anomalous_fraction"] < 0.85
    assert rows["cutpaste"]["anomalous_fraction"] == 1.0


def test_generate_refuses_feature_level_methods_by_name(tmp_path):
    import numpy as np
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "in" / "a.png")
    result = runner.invoke(app, ["generate", str(tmp_path / "in"), str(tmp_path / "out"), "-m", "simplenet", "-n", "1"])
    assert result.exit_code != 0
    assert "feature-level" in result.output and "--level image" in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def _fake_anomalib(monkeypatch, make_output):
    """Install a stand-in ``anomalib`` package whose generator returns ``make_output(x)``."""
    import sys
    import types

    calls = []

    class Generator:
        def __init__(self, probability):
            calls.append(probability)

        def __call__(self, x):
            return make_output(x)

    modules = {"anomalib": types.ModuleType("anomalib")}
    modules["anomalib"].__version__ = "0.0-test"
    for name in ["anomalib.data", "anomalib.data.utils", "anomalib.data.utils.generators"]:
        modules[name] = types.ModuleType(name)
    modules["anomalib.data.utils.generators.perlin"] = types.ModuleType("perlin")
    modules["anomalib.data.utils.generators.perlin"].PerlinAnomalyGenerator = Generator
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_bench_compare_reports_what_the_peer_returned(monkeypatch):
    from defectforge.cli.bench import bench_anomalib

    x = torch.randint(0, 256, (4, 3, 16, 24), dtype=torch.uint8)

    def half_masked(images):  # masks for the first half of the batch only
        masks = torch.zeros(images.shape[0], 1, *images.shape[2:])
        masks[: images.shape[0] // 2, :, 2:5, 3:7] = 1
        return images, masks

    calls = _fake_anomalib(monkeypatch, half_masked)
    row = bench_anomalib(x, 0.01, 3)
    assert calls == [1.0] and row["version"] == "0.0-test" and row["images_per_second"] > 0
    assert row["masks"] is True and row["anomalous_fraction"] == 0.5

    _fake_anomalib(monkeypatch, lambda images: images)  # images only: no masks were timed
    assert bench_anomalib(x, 0.01, 3)["masks"] is False
    _fake_anomalib(monkeypatch, lambda images: (images, torch.rand(images.shape[0], 1, 16, 24)))  # not binary
    assert bench_anomalib(x, 0.01, 3)["masks"] is False

    monkeypatch.setitem(__import__("sys").modules, "anomalib", None)  # not installed
    row = bench_anomalib(x, 0.01, 3)
    assert row["available"] is False and "anomalib" in row["reason"]


def test_bench_compare_line_says_whether_masks_came_back(monkeypatch):
    _fake_anomalib(monkeypatch, lambda images: images)
    result = runner.invoke(app, ["bench", "-m", "cutpaste", "--size", "32", "--batch", "2", "--min-time", "0.01",
                                 "--compare", "anomalib"])
    assert result.exit_code == 0, result.output
    assert "NO masks returned" in result.output and "0.0-test" in result.output


def test_bench_sizes_print_the_scaling():
    result = runner.invoke(app, ["bench", "-m", "cutout,draem", "--size", "32,64", "--batch", "2",
                                 "--min-time", "0.01"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("scaling:"))
    assert "32x32, 64x64" in lines[start]
    table = {line.split()[0]: line.split() for line in lines[start + 1:start + 3]}
    assert set(table) == {"cutout", "draem"} and len(table["draem"]) == 5  # name + 2 x (ms, ns/px)
    rows = json.loads(runner.invoke(app, ["bench", "-m", "cutout", "--size", "32,48", "--batch", "2",
                                          "--min-time", "0.01", "--json"]).stdout)
    assert [r["size"] for r in rows] == [32, 48]
    bad = runner.invoke(app, ["bench", "-m", "cutout", "--size", "32,x"])
    assert bad.exit_code == 2 and "--size" in bad.output


def test_bench_to_disk_times_whole_runs(tmp_path):
    folder = make_inputs(tmp_path / "in")
    result = runner.invoke(app, ["bench", "--to-disk", "-m", "cutout", "--size", "32", "-n", "8", "--workers", "1",
                                 "--input", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)[0]
    assert (row["method"], row["size"], row["count"], row["quarter_count"], row["workers"]) == ("cutout", 32, 8, 2, 1)
    assert row["samples_per_second"] == 8 / row["seconds"] and row["input"] == str(folder)
    text = runner.invoke(app, ["bench", "--to-disk", "--size", "32", "-n", "4", "--workers", "1"])
    assert text.exit_code == 0, text.output
    assert "draem 32 px, --workers 1: 4 samples in" in text.output and "samples/s end to end" in text.output
    misuse = runner.invoke(app, ["bench", "-m", "cutout", "--workers", "2"])
    assert misuse.exit_code == 2 and "--workers apply only with --to-disk" in misuse.output


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
