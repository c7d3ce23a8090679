"""Reference detectors and `defectforge benchmark` on a tiny generated MVTec-shaped category
(tiny random backbone, a few steps; offline)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectforge.detectors import (BackboneMismatchError, BenchmarkConfig, DraemSegDetector, MVTecLayoutError,
                                   PatchCoreBaseline, SegHeadDetector, load_backbone, load_mvtec_category,
                                   run_benchmark)
from defectforge.detectors.backbones import EfficientNetLite0Trunk, MobileNetV2Trunk


def _texture(rng, size):
    base = rng.integers(90, 130)
    noise = rng.normal(0, 6, (size, size))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_category(root: Path, n_train=6, n_good=3, n_bad=3, size=48, seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("train/good", "test/good", "test/scratch", "ground_truth/scratch"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n_train):
        Image.fromarray(_texture(rng, size)).save(root / "train/good" / f"{i:03d}.png")
    for i in range(n_good):
        Image.fromarray(_texture(rng, size)).save(root / "test/good" / f"{i:03d}.png")
    for i in range(n_bad):
        img, mask = _texture(rng, size), np.zeros((size, size), np.uint8)
        y, x = rng.integers(4, size - 16, 2)
        img[y:y + 10, x:x + 10] = 250
        mask[y:y + 10, x:x + 10] = 255
        Image.fromarray(img).save(root / "test/scratch" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "ground_truth/scratch" / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def category(tmp_path):
    return make_category(tmp_path / "cat")


def test_load_category(category):
    data = load_mvtec_category(category, size=32)
    assert data.train.shape == (6, 3, 32, 32) and data.train.dtype == torch.uint8
    assert data.test.shape == (6, 3, 32, 32)
    assert data.test_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.test_masks[:3].sum() == 0 and all(data.test_masks[i].sum() > 0 for i in range(3, 6))
    assert data.defect_types == ["scratch"]


def test_layout_errors_name_the_path(tmp_path, category):
    with pytest.raises(MVTecLayoutError, match="train"):
        load_mvtec_category(tmp_path)  # not MVTec-shaped
    (category / "ground_truth/scratch/001_mask.png").unlink()
    with pytest.raises(MVTecLayoutError, match="001_mask"):
        load_mvtec_category(category)
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(category / "ground_truth/scratch/001_mask.png")
    with pytest.raises(MVTecLayoutError, match="does not match"):
        load_mvtec_category(category)


def test_backbone_weight_mismatch_names_path_and_architecture(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 3, 3)}, bad)
    with pytest.raises(BackboneMismatchError, match=r"other\.pth.*mobilenet_v2"):
        load_backbone("mobilenet_v2", bad)
    with pytest.raises(FileNotFoundError, match="efficientnet_lite0"):
        load_backbone("efficientnet_lite0", tmp_path / "missing.pth")
    with pytest.raises(BackboneMismatchError, match="TorchScript"):
        load_backbone("torchscript", bad)


@pytest.mark.parametrize("trunk, name", [(MobileNetV2Trunk, "mobilenet_v2"), (EfficientNetLite0Trunk, "efficientnet_lite0")])
def test_architectures_load_their_own_state_dicts(tmp_path, trunk, name):
    path = tmp_path / f"{name}.pth"
    state = trunk().state_dict()
    state["classifier.weight"] = torch.zeros(2, 2)  # extra keys (the classifier) are ignored
    torch.save(state, path)
    backbone = load_backbone(name, path)
    out = backbone(torch.zeros(1, 1, 64, 64, dtype=torch.uint8))
    assert out.shape == (1, trunk.channels, 8, 8)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_backbone(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=8, padding=1))
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), str(path))
    assert load_backbone("torchscript", path)(torch.zeros(2, 3, 64, 64)).shape == (2, 4, 8, 8)


def test_detectors_train_and_score(category):
    data = load_mvtec_category(category, size=32)
    backbone = load_backbone("tiny")
    for det in (SegHeadDetector(backbone, width=8), DraemSegDetector(width=2), PatchCoreBaseline(backbone)):
        record = det.fit(data.train, "cutpaste", steps=3, batch_size=4, seed=0)
        maps = det.score_maps(data.test, size=32)
        assert maps.shape == (6, 32, 32) and torch.isfinite(maps).all()
        if det.name != "patchcore":
            assert len(record.losses) == 3 and 0 <= record.synthesis_seconds <= record.seconds


def test_seghead_is_seeded(category):
    data = load_mvtec_category(category, size=32)
    backbone = load_backbone("tiny")
    maps = []
    for _ in range(2):
        det = SegHeadDetector(backbone, width=8)
        det.fit(data.train, "draem", steps=2, batch_size=4, seed=3)
        maps.append(det.score_maps(data.test))
    torch.testing.assert_close(maps[0], maps[1])


def test_benchmark_resumes_and_writes_leaderboard(category, tmp_path):
    out = tmp_path / "bench"
    cfg = BenchmarkConfig(backbone="tiny", size=32, steps=2, batch_size=4, width=8, checkpoint_every=1)
    board = run_benchmark(category, ["cutpaste", "draem"], [0, 1], out, cfg, log=lambda m: None)
    run_dir = Path(board["run_dir"])
    assert {r["method"] for r in board["rows"]} == {"patchcore", "cutpaste", "draem"}
    assert not board["missing"]
    for name in ("leaderboard.md", "leaderboard.json", "leaderboard.png", "score_maps.png", "score_maps/draem.png", "convergence.png"):
        assert (run_dir / name).is_file(), name
    row = next(r for r in board["rows"] if r["method"] == "draem")
    assert row["seeds"] == [0, 1] and 0 <= row["image_auroc"][0] <= 1
    assert "patchcore (no synthesis, baseline)" in (run_dir / "leaderboard.md").read_text()
    # resume: a finished run is kept, a deleted one is redone
    kept = run_dir / "cutpaste" / "seed0.json"
    before = kept.read_text()
    (run_dir / "draem" / "seed1.json").unlink()
    run_benchmark(category, ["cutpaste", "draem"], [0, 1], out, cfg, log=lambda m: None)
    assert kept.read_text() == before
    assert json.loads((run_dir / "draem" / "seed1.json").read_text())["seed"] == 1


def test_cli_benchmark_bad_input(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, ["benchmark", str(tmp_path), "--backbone", "tiny"])
    assert result.exit_code == 2 and "train" in result.output


def test_donor_methods_get_other_normal_images(category):
    from defectforge.detectors.training import DONOR_POOL, TrainingBatches

    data = load_mvtec_category(category, size=32)
    batches = TrainingBatches(data.train, "nsa", 4, seed=0)
    seen = {}
    synth = batches.synthesizer
    assert synth.uses_donors

    class Spy:
        uses_donors = synth.uses_donors

        def __call__(self, images, **kwargs):
            seen["donors"] = kwargs["context"].donors
            return synth(images, **kwargs)

    batches.synthesizer = Spy()
    _, index = batches.indices()
    images, masks = batches.synthesize(0, index)
    assert seen["donors"].shape == (DONOR_POOL, 3, 32, 32)
    # the donors are training images, the ones drawn for step 0 by the shared donor selection
    from defectforge.core.seeding import donor_indices

    picks = donor_indices(0, 0, data.train.shape[0], pool_size=DONOR_POOL)
    assert len(set(picks)) == DONOR_POOL and torch.equal(seen["donors"], data.train[picks])
    assert images.dtype == torch.uint8 and masks.shape == (2, 1, 32, 32)


def _imagenet_classifier(name):
    """The packaged ImageNet weights on our trunks, completed with their classifier layers."""
    import torch.nn.functional as F
    from torch import nn

    from defectforge.detectors.backbones import (_LITE_BN_EPS, _conv_bn_relu6, _SameConv2d,
                                                 default_weights_path)

    path = default_weights_path(name)
    if path is None:
        pytest.skip(f"ImageNet weights for {name} not installed")
    if name == "mobilenet_v2":
        class Full(MobileNetV2Trunk):
            SETTINGS = MobileNetV2Trunk.SETTINGS + ((6, 160, 3, 2), (6, 320, 1, 1))

            def __init__(self):
                super().__init__()
                self.features.append(_conv_bn_relu6(320, 1280, 1))
                self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

            def forward(self, x):
                return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    else:
        class Full(EfficientNetLite0Trunk):
            STAGES = EfficientNetLite0Trunk.STAGES + ((4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))

            def __init__(self):
                super().__init__()
                self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
                self._bn1 = nn.BatchNorm2d(1280, eps=_LITE_BN_EPS)
                self._fc = nn.Linear(1280, 1000)

            def forward(self, x):
                x = F.relu6(self._bn0(self._conv_stem(x)))
                for block in self._blocks:
                    x = block(x)
                x = F.relu6(self._bn1(self._conv_head(x)))
                return self._fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        mean, std = (0.498,) * 3, (0.502,) * 3
    model = Full()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval(), torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_backbone_architectures_classify_imagenet_images(name):
    """The hand-written architectures are the real ones: with their ImageNet weights they call
    scikit-image's coffee picture an espresso (ImageNet class 967)."""
    import torch.nn.functional as F

    data = pytest.importorskip("skimage.data")
    model, mean, std = _imagenet_classifier(name)
    image = torch.from_numpy(data.coffee()).permute(2, 0, 1).float()[None] / 255
    image = F.interpolate(image, size=224, mode="bilinear", antialias=True)
    with torch.no_grad():
        logits = model((image - mean) / std)
    assert 967 in logits.topk(3).indices[0].tolist()


def test_residual_seg_sees_features_and_their_residuals_to_patchcores_bank(category):
    from defectforge.detectors.registry import create_detector
    from defectforge.detectors.residual_seg import ResidualSegDetector

    data = load_mvtec_category(category, size=32)
    backbone = load_backbone("tiny")
    det = create_detector("residual_seg", backbone, width=8)
    assert isinstance(det, ResidualSegDetector)
    record = det.fit(data.train, "cutpaste", steps=3, batch_size=4, seed=1)
    assert len(record.losses) == 3
    # the bank is patchcore's: same features, same seed -> the same memory, so the same maps as patchcore
    features = backbone.extract(data.train)
    baseline = PatchCoreBaseline(backbone)
    baseline.fit(data.train, seed=1, features=features)
    assert torch.equal(det.bank.memory, baseline.memory)
    torch.testing.assert_close(det.bank.score_maps(data.test, size=32), baseline.score_maps(data.test, size=32))
    # the residual of a patch in the memory is zero; the head takes features and residuals
    c = features.shape[1]
    assert det.head.net[0].in_channels == 2 * c
    aggregated = det.bank._aggregate(features)
    residual = det._residuals(features)
    patches = aggregated.permute(0, 2, 3, 1).reshape(-1, c)
    in_memory = (torch.cdist(patches, det.bank.memory).min(1).values == 0).view(aggregated.shape[0], *aggregated.shape[2:])
    assert in_memory.any()
    assert residual.permute(0, 2, 3, 1)[in_memory].abs().max() == 0
    maps = det.score_maps(data.test, size=32)
    assert maps.shape == (6, 32, 32) and torch.isfinite(maps).all() and (maps >= 0).all() and (maps <= 1).all()
    # training inputs: the sources' cached residuals, searched again where the features changed,
    # equal the residuals searched from scratch (to the float16 cache's rounding)
    sources = torch.tensor([0, 2, 2])
    batch = features[sources].clone().float()
    batch[1, :, 1:3, 0:2] += 3 * det.std[0, :, :1, :1]  # an "anomaly" on image 2's features
    torch.testing.assert_close(det._train_input(batch, sources), det._head_input(batch), rtol=0, atol=2e-2)
    # seeded
    again = create_detector("residual_seg", backbone, width=8)
    again.fit(data.train, "cutpaste", steps=3, batch_size=4, seed=1)
    torch.testing.assert_close(again.score_maps(data.test, size=32), maps)


def test_anchored_residual_seg_starts_from_patchcores_distance(category):
    from defectforge.detectors.residual_seg import ResidualSegDetector

    data = load_mvtec_category(category, size=32)
    backbone = load_backbone("tiny")
    det = ResidualSegDetector(backbone, width=8, anchored=True)
    det.fit(data.train, "cutpaste", steps=0, batch_size=4, seed=0)
    features = backbone.extract(data.test)
    inputs = det._combine(features, det._residuals(features))
    distance, _ = det.bank.nearest(det.bank._aggregate(features))
    z = (distance - det.distance_mean) / det.distance_std
    torch.testing.assert_close(inputs[:, -1:], z)
    torch.testing.assert_close(det.head(inputs), z)  # untrained: the logit is patchcore's standardised distance
    det.fit(data.train, "cutpaste", steps=3, batch_size=4, seed=0)
    assert not torch.allclose(det.head(det._combine(features, det._residuals(features))), z)


def test_patchcore_refit_scores_with_the_new_memory(category):
    data = load_mvtec_category(category, size=32)
    backbone = load_backbone("tiny")
    refit = PatchCoreBaseline(backbone)
    refit.fit(data.train, seed=0)
    refit.score_maps(data.test, size=32)  # caches the first memory's norms
    refit.fit(data.train, seed=1)  # a new memory of the same size
    fresh = PatchCoreBaseline(backbone)
    fresh.fit(data.train, seed=1)
    torch.testing.assert_close(refit.score_maps(data.test, size=32), fresh.score_maps(data.test, size=32))


def test_detector_options_reach_feature_level_detectors():
    """``--detector-option`` passes constructor arguments to feature-level detectors too (the pbas
    bank ablation, glass's hypersphere mode); a wrong one is a clear error, not a silent default."""
    from defectforge.detectors.registry import create_detector

    backbone = load_backbone("tiny")
    assert create_detector("pbas", backbone, options={"bank": "moving"}).bank_kind == "moving"
    assert create_detector("pbas", backbone).bank_kind == "fixed"
    with pytest.raises(ValueError, match="bank"):
        create_detector("pbas", backbone, options={"bank": "sideways"})
    with pytest.raises(ValueError, match=r"no option 'no_such_option'.*jitter_scale=20\.0"):
        create_detector("uniad", backbone, options={"no_such_option": 1})
    with pytest.raises(ValueError, match="given twice"):
        create_detector("draem_seg", options={"width": 4}, width=8)
    assert create_detector("draem_seg", options={"width": 4}).width == 4
