"""Detectors trained on feature-level synthesis (tiny backbone, a few steps)."""

import json
from pathlib import Path

import pytest
import torch

from defectforge.detectors import BenchmarkConfig, load_backbone, load_mvtec_category, run_benchmark
from defectforge.detectors.registry import create_detector, list_detectors

from test_detectors import make_category


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    return make_category(tmp_path_factory.mktemp("cat") / "cat")


@pytest.fixture(scope="module")
def data(category):
    return load_mvtec_category(category, size=32)


@pytest.mark.parametrize("name", list_detectors(kind="feature"))
def test_feature_detector_trains_scores_and_is_seeded(name, data):
    backbone = load_backbone("tiny")
    features = backbone.extract(data.train)
    kwargs = {"las_pool": 4} if name == "glass" else {}
    maps = []
    for _ in range(2):
        det = create_detector(name, backbone, options=kwargs)
        record = det.fit(data.train, steps=3, batch_size=2, seed=5, features=features)
        assert len(record.losses) == 3 and all(torch.isfinite(torch.tensor(record.losses)))
        assert record.synthesis_seconds > 0 and record.seconds >= record.synthesis_seconds
        maps.append(det.score_maps(data.test[:3]))
    assert maps[0].shape == (3, 32, 32) and torch.isfinite(maps[0]).all()
    assert torch.equal(maps[0], maps[1]), "same seed, same detector"
    other = create_detector(name, backbone, options=kwargs)
    other.fit(data.train, steps=3, batch_size=2, seed=6, features=features)
    assert not torch.equal(other.score_maps(data.test[:3]), maps[0])


def test_feature_detector_refuses_image_methods(data):
    det = create_detector("simplenet", load_backbone("tiny"))
    with pytest.raises(ValueError, match="feature-level"):
        det.fit(data.train, "draem", steps=1, batch_size=2)


def test_simplenet_learns_to_separate_noised_features(data):
    """With noise well above the feature scale the discriminator must learn to separate (the loss can fail to drop)."""
    import defectforge

    backbone = load_backbone("tiny")
    det = create_detector("simplenet", backbone, width=32)
    record = det.fit(data.train, defectforge.create("simplenet", noise_std=1.0), steps=40, batch_size=4, seed=0,
                     features=backbone.extract(data.train))
    assert sum(record.losses[-5:]) / 5 < 0.75 * sum(record.losses[:5]) / 5  # 1.08 -> 0.64 measured


def test_benchmark_with_feature_detector(category, tmp_path):
    cfg = BenchmarkConfig(detector="simplenet", backbone="tiny", size=32, steps=2, batch_size=2)
    board = run_benchmark(category, None, [0], tmp_path / "bench", cfg, log=lambda m: None)
    assert {r["method"] for r in board["rows"]} == {"patchcore", "simplenet"}
    run_dir = Path(board["run_dir"])
    result = json.loads((run_dir / "simplenet" / "seed0.json").read_text())
    assert result["detector"] == "simplenet" and result["steps"] == 2
    with pytest.raises(ValueError, match="feature-level"):
        run_benchmark(category, ["draem"], [0], tmp_path / "bench", cfg, log=lambda m: None)
    with pytest.raises(ValueError, match="image-level"):
        run_benchmark(category, ["simplenet"], [0], tmp_path / "bench2",
                      BenchmarkConfig(backbone="tiny", size=32, steps=1, batch_size=2), log=lambda m: None)


def test_bench_level_feature_prints_share():
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, ["bench", "--level", "feature", "-m", "simplenet,pbas", "--batch", "2",
                                      "--channels", "8", "--min-time", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["method"] for r in rows] == ["simplenet", "pbas"]
    assert all(r["shape"] == [2, 8, 32, 32] and 0 < r["synthesis_share"] < 1 for r in rows)
    bad = CliRunner().invoke(app, ["bench", "--level", "feature", "-m", "draem", "--min-time", "0.01"])
    assert bad.exit_code == 2 and "image-level" in bad.output


def test_wide_resnet50_2_loads_a_torchvision_state_dict_strictly(tmp_path):
    from defectforge.detectors import BackboneMismatchError
    from defectforge.detectors.backbones import WideResNet50Trunk

    torch.manual_seed(0)
    trunk = WideResNet50Trunk()
    state = trunk.state_dict()
    assert "layer4.2.conv3.weight" in state and state["layer1.0.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["fc.weight"].shape == (1000, 2048) and len(state) == 320  # torchvision's key count
    path = tmp_path / "wrn.pth"
    torch.save(state, path)
    net = load_backbone("wide_resnet50_2", path)
    out = net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    assert out.shape == (1, 1536, 8, 8)
    torch.testing.assert_close(net.trunk.layer3[0].conv1.weight, state["layer3.0.conv1.weight"])
    for broken in ({k: v for k, v in state.items() if k != "layer3.5.bn3.running_var"},
                   {**state, "layer2.0.conv2.weight": torch.zeros(64, 64, 3, 3)},
                   {**state, "extra.weight": torch.zeros(1)}):
        torch.save(broken, path)
        with pytest.raises(BackboneMismatchError, match="wide_resnet50_2"):
            load_backbone("wide_resnet50_2", path)
    with pytest.raises(FileNotFoundError, match="torchvision"):
        load_backbone("wide_resnet50_2")


@pytest.mark.parametrize("name,channels", [("efficientnet_lite1", 152), ("efficientnet_lite2", 168)])
def test_efficientnet_lite1_lite2_load_packaged_weights(name, channels):
    from defectforge.detectors.backbones import default_weights_path

    if default_weights_path(name) is None:
        pytest.skip(f"{name} weight package not installed")
    net = load_backbone(name)
    assert net.channels == channels
    assert net(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, channels, 8, 8)


def test_held_out_selection_uses_no_test_image(category, data, tmp_path):
    from defectforge.detectors.benchmark.selection import held_out_selection

    train, features, selection = held_out_selection(data, None, None, every=2)
    held = selection.record["held_out_normals"]
    assert len(held) == 2 and selection.record["training_normals"] == data.train.shape[0] - 2  # at least 2 held out
    assert not set(held) & {Path(f).name for f in train.train_files} and train.train.shape[0] == len(train.train_files)
    assert torch.equal(train.test, data.test) and train.test_names == data.test_names
    assert selection.record["validation_images"] == 2 and selection.record["validation_anomalous"] == 1
    again = held_out_selection(data, None, None, every=2)[2].record
    assert again == selection.record, "the same held-out normals every time (seed 0)"
    det = create_detector("simplenet", load_backbone("tiny"), width=8)
    det.fit(train.train, steps=1, batch_size=2, seed=0)
    assert 0 <= selection.criterion(det) <= 2  # image AUROC + pixel AUROC


def test_benchmark_select_every_keeps_the_best_checkpoint(category, tmp_path):
    """``--select-every``: every row trains without the held-out normals, the detector's checkpoints
    are scored on them, and both the choice and the held-out files are in each run's JSON."""
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    out = tmp_path / "bench"
    args = ["benchmark", str(category), "--detector", "simplenet", "--backbone", "tiny", "--size", "32", "--steps", "3",
            "--batch", "2", "--seeds", "0", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args + ["--select-every", "1"])
    assert result.exit_code == 0, result.output
    run_dir = next(out.glob("*-sel1"))
    run = json.loads((run_dir / "simplenet" / "seed0.json").read_text())
    baseline = json.loads((run_dir / "patchcore" / "seed0.json").read_text())
    assert run["config"]["select_every"] == 1 and run["selection"]["select_every"] == 1
    assert [c["step"] for c in run["checkpoints"]] == [1, 2, 3]
    best = max(run["checkpoints"], key=lambda c: c["validation"])["step"]
    assert run["selected_step"] == best and baseline["selection"] == run["selection"]
    assert len(run["selection"]["held_out_normals"]) == 2
    # seghead keeps no checkpoint; the few-shot protocol has its own validation set
    bad = CliRunner().invoke(app, args[:2] + ["--backbone", "tiny", "--select-every", "1", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "applies to simplenet" in bad.output
    bad = CliRunner().invoke(app, args + ["--select-every", "1", "--few-shot", "1/3"])
    assert bad.exit_code == 2 and "--validate" in bad.output


def test_cli_detector_option_reaches_uniad_and_names_valid_keys(category, tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.common import parse_overrides
    from defectforge.cli.main import _register_commands, app

    _register_commands()
    options = parse_overrides(["jitter_scale=matched"], "--detector-option")
    assert create_detector("uniad", load_backbone("tiny"), options=options).jitter_scale == "matched"
    out = tmp_path / "bench"
    args = ["benchmark", str(category), "--detector", "uniad", "--backbone", "tiny", "--size", "32", "--steps", "1",
            "--batch", "2", "--seeds", "0", "--threads", "1", "--no-baseline", "--out", str(out)]
    result = CliRunner().invoke(app, args + ["--detector-option", "jitter_scale=matched"])
    assert result.exit_code == 0, result.output
    run_dir = next(out.glob("uniad-*-jitter_scale=matched"))
    assert json.loads((run_dir / "uniad_jitter" / "seed0.json").read_text())["config"]["detector_options"] == options
    bad = CliRunner().invoke(app, args + ["--detector-option", "jitter=matched"])
    assert bad.exit_code == 2 and "no option 'jitter'" in bad.output and "jitter_scale=20.0" in bad.output


def test_cli_benchmark_help_names_every_detector():
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app
    from defectforge.detectors.benchmark import DETECTORS

    _register_commands()
    help_text = " ".join(CliRunner().invoke(app, ["benchmark", "--help"]).output.split())
    assert all(name in help_text for name in DETECTORS)
