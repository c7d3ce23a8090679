"""DSR: code replacement in a two-level VQ-VAE's latents (level ``latent``), its VQ-VAE and its detector.

The feature-level matrix of ``test_features.py`` calls methods on ``(B, C, h, w)`` features and
compares the output to the input; DSR's output lives in another space (code vectors of a
VQ-VAE), so its contracts (masks and labels, replay from JSON, batch-split independence,
config round trip) are checked here, on a tiny random VQ-VAE built in code."""

import json

import pytest
import torch

import defectforge
from defectforge.features.dsr import candidate_ranks, nearest_codes, replace_codes
from defectforge.generative.vqvae import VQVAE_WIDTHS, TwoLevelVQVAE, load_vqvae, save_vqvae

TINY = {**VQVAE_WIDTHS["tiny"], "num_embeddings": 200}  # K = 200: skip 10, n in [41, 199]


@pytest.fixture(scope="module")
def vq():
    torch.manual_seed(0)
    return TwoLevelVQVAE(**TINY).eval()


@pytest.fixture(scope="module")
def enc(vq):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        return vq.encode_bottom(torch.rand(8, 3, 64, 64, generator=g))  # bottom grid 16x16, top 8x8


def _ranks(z: torch.Tensor, codebook: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Distance rank (0 = nearest) of ``codes`` among the codebook, for every position."""
    rows = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    d = torch.cdist(rows.double(), codebook.double())
    chosen = d.gather(1, codes.reshape(-1, 1))
    return (d < chosen).sum(1).view(codes.shape)


def test_dsr_registered_as_latent_distribution_hypothesis():
    info = defectforge.method_info("dsr")
    assert info.level == "latent" and info.family == "distribution-hypothesis"
    assert "dsr" in defectforge.list_methods(level="latent") and "dsr" not in defectforge.list_methods(level="feature")


def test_candidate_ranks_follow_dsr():
    assert candidate_ranks(0.2, 4096) == (204, 820)
    assert candidate_ranks(1.0, 4096) == (204, 4095)   # min(int(s*K)+1, K-1)
    assert candidate_ranks(0.5, 200) == (10, 101)
    with pytest.raises(ValueError, match="no candidates"):
        candidate_ranks(0.01, 200)


def test_replacements_outside_the_nearest_5_percent_and_within_the_nearest_floor_sK_plus_1():
    g = torch.Generator().manual_seed(0)
    z, book = torch.randn(6, 8, 10, 10, generator=g), torch.randn(200, 8, generator=g)
    mask = (torch.rand(6, 1, 10, 10, generator=g) > 0.3).float()
    strengths = [0.2, 0.35, 0.5, 0.7, 0.9, 1.0]
    codes = replace_codes(z, book, mask, strengths, torch.rand(6, 10, 10, generator=g))
    ranks = _ranks(z, book, codes)
    inside = mask[:, 0] > 0
    for i, s in enumerate(strengths):
        skip, n = candidate_ranks(s, 200)
        assert (ranks[i][inside[i]] >= skip).all() and (ranks[i][inside[i]] < n).all()
        assert ranks[i][inside[i]].max() > n - 20      # the whole candidate range is reached
    assert (ranks[~inside] == 0).all()                  # outside: the nearest code, unchanged
    assert torch.equal(codes[~inside], nearest_codes(z, book)[~inside])


def test_dsr_synthesizer_ranks_per_level(vq, enc):
    out = defectforge.create("dsr")(enc, seed=3, vqvae=vq)
    x = out.extras
    with torch.no_grad():
        z_top = vq.top_latent(enc)
        z_bot_normal = vq.bottom_latent(enc, x["quantized_top_normal"])
        z_bot_both = vq.bottom_latent(enc, x["quantized_top"])
    seen = set()
    for i, p in enumerate(out.params):
        if not p.get("anomalous"):
            assert out.labels[i] == 0 and (out.masks[i] == 0).all()
            continue
        seen.add(p["levels"])
        for level, z, book, codes, mask, s in (
                ("top", z_top, vq.codebook_top, x["codes_top"], x["mask_top"], p["strength_top"]),
                ("bottom", z_bot_both if p["levels"] == "both" else z_bot_normal, vq.codebook_bottom,
                 x["codes_bottom"], x["mask_bottom"], p["strength_bottom"])):
            inside = mask[i, 0] > 0
            if p["levels"] not in (level, "both"):
                assert not inside.any()
                continue
            skip, n = candidate_ranks(s, 200)
            ranks = _ranks(z[i:i + 1], book, codes[i:i + 1])[0]
            assert inside.any() and (ranks[inside] >= skip).all() and (ranks[inside] < n).all()
            assert (ranks[~inside] == 0).all()
        if p["levels"] == "top":  # the bottom codes are the normal image's
            assert torch.equal(x["codes_bottom"][i], x["codes_bottom_normal"][i])
        if p["levels"] == "bottom":
            assert torch.equal(x["codes_top"][i], x["codes_top_normal"][i])
        # ground truth: the top mask (x2 to the bottom grid) when the top level is altered, else the bottom one
        expected = (x["mask_top"][i:i + 1].repeat_interleave(2, -1).repeat_interleave(2, -2)
                    if p["levels"] != "bottom" else x["mask_bottom"][i:i + 1])
        assert torch.equal(out.masks[i:i + 1], expected) and out.labels[i] == 1
    assert torch.equal(out.features, vq.codebook_bottom[x["codes_bottom"]].permute(0, 3, 1, 2))
    assert seen  # at least one altered sample in this batch


def test_half_the_masks_empty_and_levels_in_distribution():
    synth = defectforge.create("dsr")
    params = synth.draw(0, range(2000), None)
    empty = sum(p["empty"] for p in params) / len(params)
    both = sum(p["levels"] == "both" for p in params) / len(params)
    top = sum(p["levels"] == "top" for p in params) / len(params)
    assert abs(empty - 0.5) < 0.04 and abs(both - 0.5) < 0.04 and abs(top - 0.25) < 0.04
    strengths = torch.tensor([p["strength_top"] for p in params] + [p["strength_bottom"] for p in params])
    assert strengths.min() >= 0.2 and strengths.max() < 1.0 and abs(float(strengths.mean()) - 0.6) < 0.02


def test_emptied_masks_are_normal_samples(vq, enc):
    out = defectforge.create("dsr")(enc.repeat(4, 1, 1, 1), seed=0, indices=range(32), vqvae=vq)
    empty = torch.tensor([p["empty"] for p in out.params])
    assert empty.any() and (~empty).any()
    assert (out.labels[empty] == 0).all() and (out.masks[empty] == 0).all()
    assert torch.equal(out.extras["codes_bottom"][empty], out.extras["codes_bottom_normal"][empty])
    # non-empty Perlin masks at 0.5 can still miss a 64 px image; most do not
    assert out.labels[~empty].float().mean() > 0.6


def test_same_seed_index_same_output_on_any_batch_split(vq, enc):
    synth = defectforge.create("dsr")
    full = synth(enc, seed=11, vqvae=vq)
    for part in ([2, 3, 4], [7], [0, 5]):
        sub = synth(enc[part], seed=11, indices=part, vqvae=vq)
        assert torch.equal(full.features[part], sub.features)
        assert torch.equal(full.masks[part], sub.masks)
        for key in ("codes_top", "codes_bottom", "mask_top", "mask_bottom"):
            assert torch.equal(full.extras[key][part], sub.extras[key])
    other = synth(enc, seed=12, vqvae=vq)
    assert not torch.equal(other.extras["codes_bottom"], full.extras["codes_bottom"])


def test_replay_from_json_records_and_config_round_trip(vq, enc):
    synth = defectforge.create("dsr")
    out = synth(enc, seed=5, vqvae=vq)
    again = synth.replay(enc, json.loads(json.dumps(out.params)), vqvae=vq)
    assert torch.equal(again.features, out.features) and torch.equal(again.masks, out.masks)
    rebuilt = defectforge.from_config(synth.config())
    assert rebuilt.config() == synth.config()
    assert torch.equal(rebuilt(enc, seed=5, vqvae=vq).features, out.features)


def test_dsr_arguments_validated(vq, enc):
    synth = defectforge.create("dsr")
    with pytest.raises(ValueError, match="needs vqvae"):
        synth(enc)
    with pytest.raises(ValueError, match="even sides"):
        synth(enc[..., :15, :15], vqvae=vq)
    with pytest.raises(ValueError, match="strength_range"):
        defectforge.create("dsr", strength_range=(0.01, 1.0))


# --- the VQ-VAE --------------------------------------------------------------------------------


def _image_folder(tmp_path, n=6, size=32):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def test_vqvae_shapes_save_and_load_weights_only(tmp_path, vq):
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        recon, loss, lat = vq(x)
    assert recon.shape == x.shape and lat["z_top"].shape == (2, 8, 4, 4) and lat["z_bot"].shape == (2, 8, 8, 8)
    save_vqvae(vq, tmp_path / "vq.pt", {"note": "test"})
    back = load_vqvae(tmp_path / "vq.pt")
    assert back.settings == vq.settings and back.extra == {"note": "test"}
    for a, b in zip(vq.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
    torch.save({"not": "a vq-vae"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="save_vqvae"):
        load_vqvae(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="train vqvae"):
        load_vqvae(tmp_path / "missing.pt")


def test_vqvae_trains_checkpoints_and_resumes_to_the_same_weights(tmp_path):
    from defectforge.generative.train import TrainConfig, train

    data = _image_folder(tmp_path)

    def cfg(out, steps):
        return TrainConfig(kind="vqvae", data=str(data), out=str(tmp_path / out), steps=steps, size=32, patch=16,
                           batch_size=2, width="tiny", checkpoint_every=2, preview_every=0)

    full = train(cfg("full", 6), progress=False)
    assert full["steps_done"] == 6 and (tmp_path / "full" / "vqvae.pt").is_file()
    first = train(cfg("split", 4), progress=False)
    assert first["steps_done"] == 4
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg("split", 6), progress=False)
    rest = train(cfg("split", 6), progress=False, resume=True)
    assert rest["resumed_from"] == 4 and rest["steps_done"] == 6
    a, b = load_vqvae(tmp_path / "full" / "vqvae.pt"), load_vqvae(tmp_path / "split" / "vqvae.pt")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name
    first_state = load_vqvae(tmp_path / "full" / "vqvae.pt").state_dict()
    assert not torch.equal(first_state["decoder.0.weight"], TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"]).state_dict()["decoder.0.weight"])


def test_dead_codes_restart_onto_batch_latents():
    torch.manual_seed(0)
    model = TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"]).train()
    with torch.no_grad():
        _, _, lat = model(torch.rand(2, 3, 32, 32))
    moved = model.vq_bottom.restart_dead_codes(lat["z_bot"], 0.01, torch.Generator().manual_seed(0))
    assert 0 < moved < 64
    rows = lat["z_bot"].permute(0, 2, 3, 1).reshape(-1, 8)
    dead = (model.vq_bottom.ema_cluster_size == 1.0).nonzero().flatten()
    on_batch = (model.vq_bottom.codebook[dead][:, None, :] == rows[None]).all(-1).any(1)
    assert on_batch.all()  # each restarted code is now exactly one of the batch's latents


# --- the detector ------------------------------------------------------------------------------


def test_dsr_detector_trains_scores_and_is_seeded(vq):
    from defectforge.detectors.dsr import DSRDetector

    g = torch.Generator().manual_seed(0)
    train = (torch.rand(6, 3, 48, 48, generator=g) * 255).to(torch.uint8)
    test = (torch.rand(3, 3, 48, 48, generator=g) * 255).to(torch.uint8)
    maps = []
    for _ in range(2):
        det = DSRDetector(vq, resolution=64, width=2)
        record = det.fit(train, steps=3, batch_size=2, seed=5)
        assert len(record.losses) == 3 and all(torch.isfinite(torch.tensor(record.losses)))
        assert 0 < record.synthesis_seconds < record.seconds
        maps.append(det.score_maps(test, size=48))
    assert maps[0].shape == (3, 48, 48) and ((maps[0] >= 0) & (maps[0] <= 1)).all()
    assert torch.equal(maps[0], maps[1]), "same seed, same detector"
    assert det.image_scores(maps[0]).shape == (3,)
    other = DSRDetector(vq, resolution=64, width=2)
    other.fit(train, steps=3, batch_size=2, seed=6)
    assert not torch.equal(other.score_maps(test, size=48), maps[0])
    with pytest.raises(ValueError, match="latent-level"):
        DSRDetector(vq, resolution=64, width=2).fit(train, "simplenet", steps=1, batch_size=2)
    with pytest.raises(ValueError, match="VQ-VAE"):
        DSRDetector(None, resolution=64).fit(train, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="resolution"):
        DSRDetector(vq, resolution=48)


def test_benchmark_with_dsr_detector_caches_its_vqvae(tmp_path):
    from pathlib import Path

    from defectforge.detectors import BenchmarkConfig, run_benchmark

    from test_detectors import make_category

    category = make_category(tmp_path / "cat")
    cfg = BenchmarkConfig(detector="dsr", backbone="tiny", size=64, steps=2, batch_size=2, vqvae_steps=3,
                          vqvae_width="tiny")
    logs = []
    board = run_benchmark(category, None, [0], tmp_path / "bench", cfg, log=logs.append)
    assert {r["method"] for r in board["rows"]} == {"patchcore", "dsr"}
    result = json.loads((Path(board["run_dir"]) / "dsr" / "seed0.json").read_text())
    assert result["detector"] == "dsr" and result["steps"] == 2 and result["vqvae"]["steps"] == 3
    assert any("training the dsr detector's VQ-VAE" in m for m in logs)
    logs.clear()
    run_benchmark(category, None, [1], tmp_path / "bench", cfg, log=logs.append)  # the cached VQ-VAE
    assert not any("training the dsr" in m for m in logs)
    with pytest.raises(ValueError, match="latent-level"):
        run_benchmark(category, ["draem"], [0], tmp_path / "bench", cfg, log=lambda m: None)


def test_bench_level_feature_times_dsr():
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, ["bench", "--level", "feature", "-m", "dsr", "--batch", "2", "--channels", "8",
                                      "--min-time", "0.01", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["method"] == "dsr" and row["shape"] == [2, 8, 32, 32] and 0 < row["synthesis_share"] < 1


def test_draem_seg_and_dsr_share_one_segmentation_unet():
    import torch
    from torch import nn

    from defectforge.detectors.draem_seg import DraemDiscriminative
    from defectforge.detectors.dsr import AnomalyDetectionUNet
    from defectforge.detectors.unet import SegmentationUNet

    draem, dsr = DraemDiscriminative(3, 2), AnomalyDetectionUNet(6, 2)
    assert type(draem).__mro__[1] is SegmentationUNet and type(dsr).__mro__[1] is SegmentationUNet
    assert len(draem.encoder) == 6 and len(dsr.encoder) == 4
    assert isinstance(draem.encoder[0][1], nn.BatchNorm2d) and isinstance(dsr.encoder[0][1], nn.InstanceNorm2d)
    assert draem.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert dsr(torch.zeros(1, 6, 32, 32)).shape == (1, 2, 32, 32)
    # the creation order (DRAEM interleaved, DSR upsamplings first) decides the seeded weights
    torch.manual_seed(0)
    interleaved = SegmentationUNet(6, 2, [2, 4, 8, 8], nn.InstanceNorm2d, interleave=True)
    torch.manual_seed(0)
    grouped = SegmentationUNet(6, 2, [2, 4, 8, 8], nn.InstanceNorm2d, interleave=False)
    torch.manual_seed(0)
    assert torch.equal(AnomalyDetectionUNet(6, 2).decoder[0][0].weight, grouped.decoder[0][0].weight)
    assert not torch.equal(interleaved.decoder[0][0].weight, grouped.decoder[0][0].weight)
