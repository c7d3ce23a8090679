"""Synthesis that adds to a user's real defects: the real_only source, combined training sources,
the grouped few-shot split, the validation protocol, the fusion detector and the summary over sets."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import defectforge
from defectforge.cli.main import _register_commands, app
from defectforge.sources.defects import DefectBank, FewShotSplit
from test_realdefect import make_category, normal_batch

_register_commands()


def _bank():
    """Two real defects: a dark rectangle at the top left (asymmetric, so every flip and turn shows)."""
    images, masks = [], []
    for k in range(2):
        image = np.full((40, 40, 3), 150, np.uint8)
        mask = np.zeros((40, 40), np.uint8)
        mask[4:12 + 2 * k, 6:26] = 255
        image[mask > 0] = 20
        images.append(image), masks.append(mask)
    return DefectBank.from_arrays(images, masks, ["rect", "rect"])


# --- real_only ---------------------------------------------------------------------------------

def test_real_only_draws_follow_their_distributions():
    synth = defectforge.create("real_only", bank=_bank())
    out = synth(torch.zeros(400, 3, 40, 40, dtype=torch.uint8), seed=3)
    p = out.params
    assert abs(np.mean([x["hflip"] for x in p]) - 0.5) < 0.08 and abs(np.mean([x["vflip"] for x in p]) - 0.5) < 0.08
    counts = np.bincount([x["rotation"] // 90 for x in p], minlength=4)
    assert counts.min() > 70  # uniform over 0, 90, 180, 270 (100 expected each)
    for key in ("scale", "brightness", "contrast"):
        values = np.array([x[key] for x in p])
        assert values.min() >= 0.9 and values.max() <= 1.1 and abs(values.mean() - 1.0) < 0.02
    assert {x["source"] for x in p} == {"array0", "array1"}


def test_real_only_mask_moves_with_its_image_and_replays():
    synth = defectforge.create("real_only", bank=_bank(), brightness_range=(1, 1), contrast_range=(1, 1))
    out = synth(torch.zeros(24, 3, 40, 40, dtype=torch.uint8), seed=0)
    dark = out.images[:, 0] < 85  # the defect is the only dark region, wherever the flips and turns put it
    masks = out.masks[:, 0] > 0
    agree = (dark == masks).float().mean(dim=(1, 2))
    assert agree.min() > 0.97 and (out.labels == 1).all()
    again = synth.replay(torch.zeros(24, 3, 40, 40, dtype=torch.uint8), out.params)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)
    plain = defectforge.create("real_only", bank=_bank(), augment=False)(torch.zeros(2, 3, 40, 40), seed=0)
    assert set(plain.params[0]) == {"anomalous", "defect_type", "source"}


def test_real_only_needs_whole_images_and_types():
    bank = _bank()
    with pytest.raises(ValueError, match="defect_types"):
        defectforge.create("real_only", bank=bank, defect_types=["hole"])
    bank.images = []
    with pytest.raises(ValueError, match="whole real defect images"):
        defectforge.create("real_only", bank=bank)


# --- mixtures ----------------------------------------------------------------------------------

def test_recipe_draws_each_slot_by_weight_from_seed_and_index():
    synth = defectforge.recipe("real_only:0.3+cutpaste:0.7", bank=_bank())
    images = normal_batch(n=40, size=40)
    whole = synth(images, seed=5, indices=range(100, 140))
    shares = np.mean([p["method"] == "real_only" for p in whole.params])
    assert 0.1 < shares < 0.5  # 0.3 expected of 40
    parts = [synth(images[k:k + 8], seed=5, indices=range(100 + k, 108 + k)) for k in range(0, 40, 8)]
    assert [p["method"] for r in parts for p in r.params] == [p["method"] for p in whole.params]
    assert torch.equal(torch.cat([r.images for r in parts]), whole.images)
    big = synth(normal_batch(n=400, size=40), seed=1)
    assert abs(np.mean([p["method"] == "real_only" for p in big.params]) - 0.3) < 0.06
    from conftest import tiny_defect_bank

    folder = defectforge.recipe("real_only:0.3+cutpaste:0.7", bank=tiny_defect_bank())
    assert defectforge.from_config(folder.config()).config() == folder.config()


def test_recipe_spelling():
    from defectforge.detectors.benchmark.recipes import is_mixture, row_folder, split_rows

    assert split_rows(["real_only , real_only:0.5 + glass_las:0.5", "real_only"]) == \
        ["real_only", "real_only:0.5+glass_las:0.5"]
    assert is_mixture("a+b") and is_mixture("a:1") and not is_mixture("draem")
    assert ":" not in row_folder("real_only:0.5+glass_las:0.5")
    with pytest.raises(ValueError, match="sum to 1"):
        defectforge.recipe("cutpaste:0.5+draem:0.6")
    with pytest.raises(ValueError, match="bank"):
        defectforge.recipe("real_only+cutpaste")
    stream = defectforge.stream("real_only+cutpaste", seed=0, bank=_bank())
    stream(normal_batch(n=4, size=40))
    assert stream.last_indices == [0, 1, 2, 3]


def test_generate_mix_with_real_defects(tmp_path):
    cat = make_category(tmp_path / "cat", per_type=6)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", str(cat), str(out), "--mix", "real_only:0.5+copy_paste:0.5",
                                      "--defects", str(cat), "--few-shot", "1/3", "-n", "12", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert {x["params"]["method"] for x in lines} == {"real_only", "copy_paste"}
    train = {f for v in json.loads((out / "fewshot_split.json").read_text())["train"].values() for f in v}
    assert {x["params"]["params"]["source"] for x in lines if x["params"]["method"] == "real_only"} <= train


# --- split, validation, benchmark ----------------------------------------------------------------

def test_grouped_split_keeps_groups_together_and_ungrouped_split_is_unchanged():
    files = {"pit": [f"test/pit/{g}_{k}.png" for g in "abcdef" for k in range(4)]}
    plain = FewShotSplit.make("r", files, "1/3", 0)
    assert FewShotSplit.make("r", files, "1/3", 0, group=None).train == plain.train
    for seed in range(5):
        split = FewShotSplit.make("r", files, "1/3", seed, group=r"/?([a-f])_\d")
        train_groups = {f.split("/")[-1][0] for f in split.train["pit"]}
        test_groups = {f.split("/")[-1][0] for f in split.test["pit"]}
        assert train_groups and test_groups and not train_groups & test_groups
        assert len(split.train["pit"]) == 8  # whole groups until 1/3 of 24
    with pytest.raises(ValueError, match="regular expression"):
        FewShotSplit.make("r", files, "1/3", 0, group="(")


def test_few_shot_benchmark_rows_validation_and_summary(tmp_path):
    from defectforge.detectors import BenchmarkConfig
    from defectforge.detectors.benchmark.fewshot import run_few_shot_benchmark

    cat = make_category(tmp_path / "cat", per_type=9)
    cfg = BenchmarkConfig(backbone="tiny", size=32, steps=2, batch_size=4, width=8)
    rows = ["real_only", "real_only:0.5+cutpaste:0.5"]
    result = run_few_shot_benchmark(cat, "1/3", rows, [0, 1], tmp_path / "bench", cfg, log=lambda m: None)
    assert set(result["runs"]) == {"patchcore", *rows}
    table = result["few_shot_table"]
    assert "real_only:0.5+cutpaste:0.5" in table and "pixel F1-max" in table
    # the validation protocol: the few-shot training defects split again, no test-split image used
    split = json.loads((tmp_path / "bench" / "fewshot_split.json").read_text())
    val = run_few_shot_benchmark(cat, "1/3", ["real_only"], [0], tmp_path / "bench", cfg, log=lambda m: None,
                                 validation=True)
    assert "-validation-" in val["run_dir"]
    record = json.loads(next((tmp_path / "bench").glob("validation_split-*.json")).read_text())
    fit = {f for v in record["fit_defects"].values() for f in v}
    checked = {f for v in record["validation_defects"].values() for f in v}
    assert fit and checked and not fit & checked
    assert fit | checked == {f for v in split["train"].values() for f in v}
    run = json.loads((tmp_path / "bench" / val["run_dir"].split("/")[-1] / "real_only" / "seed0.json").read_text())
    test_names = {f"{t}/{f.split('/')[-1][:-4]}" for t, v in split["test"].items() for f in v}
    assert run["examples"] and not set(run["examples"]) & test_names
    assert {x.name for x in defectforge.create("real_only", bank=DefectBank.from_folder(
        cat, split=FewShotSplit(str(cat), "v", 0, record["fit_defects"], {}))).sources} == fit


def test_benchmark_several_categories_writes_a_summary(tmp_path):
    cats = [make_category(tmp_path / name, per_type=6, seed=k) for k, name in enumerate(("one", "two"))]
    result = CliRunner().invoke(app, ["benchmark", *map(str, cats), "--few-shot", "1/3", "--backbone", "tiny",
                                      "--size", "32", "--steps", "2", "--batch", "4", "--width", "8", "--seeds", "0,1",
                                      "-m", "real_only,real_only+cutpaste", "--out", str(tmp_path / "b"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["sets"] == ["one", "two"] and summary["references"] == ["real_only", "patchcore"]
    row = next(r for r in summary["rows"] if r["method"] == "real_only+cutpaste")
    assert set(row["sets"]) == {"one", "two"} and "real_only/aupro" in row["wins"]
    assert "beats patchcore (AUPRO)" in (tmp_path / "b" / "summary.md").read_text()
    result = CliRunner().invoke(app, ["benchmark", str(cats[0]), "--validate"])
    assert result.exit_code == 2 and "--few-shot" in result.output


def test_summary_counts_wins_beyond_the_seed_spread():
    from defectforge.detectors.benchmark.summary import summarise

    def runs(*values):
        return [{"metrics": {"aupro": v, "pixel_ap": v}} for v in values]

    per_set = {"a": {"patchcore": runs(0.5, 0.52, 0.51), "real_only": runs(0.6, 0.6, 0.61),
                     "mix": runs(0.7, 0.71, 0.69)},
               "b": {"patchcore": runs(0.5, 0.5, 0.5), "real_only": runs(0.6, 0.65, 0.7),
                     "mix": runs(0.66, 0.66, 0.66)}}
    rows = {r["method"]: r for r in summarise(per_set)["rows"]}
    assert rows["mix"]["wins"]["patchcore/aupro"] == ["a", "b"]
    assert rows["mix"]["wins"]["real_only/aupro"] == ["a"]  # on b within real_only's spread (0.05)
    assert rows["mix"]["mean"]["aupro"] == pytest.approx((0.7 + 0.66) / 2)


# --- the fusion detector -------------------------------------------------------------------------

def test_fusion_is_the_sum_of_two_standardised_terms():
    from defectforge.detectors import FusionDetector, load_backbone

    backbone = load_backbone("tiny")
    train = normal_batch(n=8, size=32)
    det = FusionDetector(backbone, width=8, normal_sample=8)
    det.fit(train, "cutpaste", steps=2, batch_size=4, seed=0)
    features = backbone.extract(train)
    head, memory = det._terms(features, 32)
    fused = det.score_maps(features=features, size=32)
    z_head = (head - head.mean()) / head.std()
    z_memory = (memory - memory.mean()) / memory.std()
    assert torch.allclose(fused, z_head + z_memory, atol=1e-3)  # the stats are these 8 images' own
    alone = FusionDetector(backbone, width=8, normal_sample=8, patchcore_weight=0.0)
    alone.fit(train, "cutpaste", steps=2, batch_size=4, seed=0)
    assert torch.allclose(alone.score_maps(features=features, size=32), z_head, atol=1e-3)


def test_benchmark_several_categories_without_real_defects_compares_with_patchcore(tmp_path):
    cats = [make_category(tmp_path / name, per_type=3, seed=k) for k, name in enumerate(("one", "two"))]
    result = CliRunner().invoke(app, ["benchmark", *map(str, cats), "--backbone", "tiny", "--size", "32", "--steps", "2",
                                      "--batch", "4", "--width", "8", "--seeds", "0,1", "-m", "cutpaste,cutpaste+draem",
                                      "--out", str(tmp_path / "b"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["references"] == ["patchcore"]
    assert {r["method"] for r in summary["rows"]} == {"patchcore", "cutpaste", "cutpaste+draem"}
    run = json.loads((tmp_path / "b" / "one").glob("*/cutpaste+draem/seed1.json").__next__().read_text())
    assert run["method"] == "cutpaste+draem"
