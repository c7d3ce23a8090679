"""generate --defects / --defect-types / --few-shot: per-type folders, the bank entry in the manifest, the split file."""

import json

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from test_realdefect import make_category

_register_commands()
runner = CliRunner()


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generate_transplant_few_shot_per_type_folders(tmp_path):
    cat = make_category(tmp_path / "cat", per_type=6)
    out = tmp_path / "out"
    args = ["generate", str(cat), str(out), "-m", "defect_transplant", "--defects", str(cat), "--few-shot", "1/3",
            "-n", "8", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    split = json.loads((out / "fewshot_split.json").read_text())
    train = {f for v in split["train"].values() for f in v}
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 8
    for line in lines:
        d = line["defect"]
        assert line["image_path"].startswith(f"test/{d['type']}/") and line["mask_path"].startswith(f"ground_truth/{d['type']}/")
        assert d["source"] in train and d["entry"] == line["params"]["entry"]
        mask = np.asarray(Image.open(out / line["mask_path"]))
        assert mask.any()
    # two workers write the same bytes; the split is reused from the output
    out2 = tmp_path / "out2"
    result = runner.invoke(app, args[:2] + [str(out2)] + args[3:] + ["--workers", "2"])
    assert result.exit_code == 0, result.output
    assert _files(out) == _files(out2)
    # --resume reuses the recorded split
    result = runner.invoke(app, args + ["--resume"])
    assert result.exit_code == 0, result.output


def test_generate_real_defect_errors(tmp_path):
    cat = make_category(tmp_path / "cat", per_type=3)
    result = runner.invoke(app, ["generate", str(cat), str(tmp_path / "o"), "-m", "copy_paste", "-n", "2", "--quiet"])
    assert result.exit_code == 2 and "--defects" in result.output
    result = runner.invoke(app, ["generate", str(cat), str(tmp_path / "o"), "-m", "draem", "--defects", str(cat),
                                 "-n", "2", "--quiet"])
    assert result.exit_code == 2 and "--defects" in result.output
    result = runner.invoke(app, ["generate", str(cat), str(tmp_path / "o"), "-m", "copy_paste", "--defects", str(cat),
                                 "--defect-types", "hloe", "-n", "2", "--quiet"])
    assert result.exit_code == 2 and "hole" in result.output
    result = runner.invoke(app, ["generate", str(cat), str(tmp_path / "o"), "-m", "copy_paste", "--defects", str(cat),
                                 "--defect-types", "hole", "-n", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "o" / "test").iterdir()} == {"hole"}


def test_few_shot_benchmark_protocol(tmp_path):
    """Train split feeds synthesis, the test set is the rest + good images; per-type metrics; real_only."""
    from defectforge.detectors import BenchmarkConfig
    from defectforge.detectors.benchmark.fewshot import run_few_shot_benchmark

    cat = make_category(tmp_path / "cat", per_type=6)
    cfg = BenchmarkConfig(backbone="tiny", size=32, steps=2, batch_size=4, width=8)
    result = run_few_shot_benchmark(cat, "1/3", ["real_only", "copy_paste", "defect_transplant", "cutpaste"], [0],
                                    tmp_path / "bench", cfg, log=lambda m: None)
    split = result["split"]
    run_dir = tmp_path / "bench" / result["run_dir"].split("/")[-1]
    assert json.loads((tmp_path / "bench" / "fewshot_split.json").read_text())["train"] == split["train"]
    for method in ("patchcore", "real_only", "copy_paste", "defect_transplant", "cutpaste"):
        run = json.loads((run_dir / method / "seed0.json").read_text())
        assert set(run["per_type"]) == {"hole", "scratch"}
        assert 0 <= run["per_type"]["hole"]["aupro"] <= 1
        # the test set: 1 good + the 4 held-out images of each type (2 per type fed synthesis)
        assert len(run["examples"]) >= 1
    assert "AUPRO hole" in (run_dir / "fewshot.md").read_text()
    board = json.loads((run_dir / "leaderboard.json").read_text())
    assert {r["method"] for r in board["rows"]} >= {"real_only", "copy_paste", "defect_transplant"}
    # the papers' metrics in the few-shot table, overall and per type
    table = (run_dir / "fewshot.md").read_text()
    assert "pixel AP" in table and "pixel F1-max" in table and "pixel AP hole" in table
    assert {"pixel_ap", "pixel_f1_max"} <= set(run["per_type"]["hole"])


def test_few_shot_test_set_excludes_training_defects(tmp_path):
    from defectforge.detectors.benchmark.fewshot import few_shot_subset
    from defectforge.detectors.data import load_mvtec_category
    from defectforge.sources.defects import DefectBank

    cat = make_category(tmp_path / "cat", per_type=6)
    bank = DefectBank.from_folder(cat, few_shot="1/3")
    data = load_mvtec_category(cat, size=32)
    test, keep, real = few_shot_subset(data, bank.split)
    train_names = {f"{t}/{f.split('/')[-1][:-4]}" for t, v in bank.split.train.items() for f in v}
    assert not train_names & set(test.test_names)
    assert {data.test_names[i] for i in real} == train_names
    assert len(keep) + len(real) == len(data.test_names) and "good/000" in test.test_names
