"""Distribution tests of the DRAEM and CutPaste defaults against their sources' stated ranges."""

import math
from collections import Counter

import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ImageShape
from defectforge.core.seeding import sample_rng

SHAPE = ImageShape((3, 256, 256))


def draws(name, n=600, **kw):
    synth = defectforge.create(name, **kw)
    params, _ = synth.draw(99, range(n), SHAPE)
    return synth, params


def test_draem_defaults():
    synth, params = draws("draem")
    anomalous = [p for p in params if p["anomalous"]]
    assert 0.45 < len(anomalous) / len(params) < 0.55  # DRAEM trains with p = 0.5
    opacity = np.array([p["opacity"] for p in anomalous])
    assert opacity.min() >= 0.2 and opacity.max() <= 1.0 and abs(opacity.mean() - 0.6) < 0.03
    ops = [op for p in anomalous for op, _ in p["augment"]]
    assert all(len(p["augment"]) == 3 and len({o for o, _ in p["augment"]}) == 3 for p in anomalous)
    counts = Counter(ops)
    assert len(counts) == 10 and min(counts.values()) > 0.6 * len(ops) / 10
    gammas = [g for p in anomalous for o, a in p["augment"] if o == "gamma_contrast" for g in a["gamma"]]
    assert min(gammas) >= 0.5 and max(gammas) <= 2.0
    textures = [p["texture"] for p in anomalous]
    assert min(textures) >= 0 and max(textures) < len(synth.textures)


def test_draem_keep_normal_policy_labels_empty_masks_normal(surface_batch):
    synth = defectforge.create("draem", anomaly_probability=1.0)
    x = surface_batch.repeat(50, 1, 1, 1)
    out = synth(x, seed=1)
    empty = out.masks.flatten(1).amax(1) == 0
    assert empty.any(), "about 5% of DRAEM masks are empty; 200 samples should show some"
    assert (out.labels[empty] == 0).all()
    assert all(out.params[i]["empty_mask"] and not out.params[i]["anomalous"] for i in torch.nonzero(empty)[:, 0])
    assert torch.equal(out.images[empty], x[empty])


@pytest.mark.parametrize("name", ["destseg", "draem_anomalib"])
def test_policies_that_never_leave_a_sample_normal(name, surface_batch):
    synth = defectforge.create(name, anomaly_probability=1.0)
    out = synth(surface_batch.repeat(25, 1, 1, 1), seed=2)
    assert (out.labels == 1).all()


def test_retry_policy_records_attempts_and_replays(surface_batch):
    synth = defectforge.create("draem", anomaly_probability=1.0, empty_mask_policy="retry")
    x = surface_batch.repeat(25, 1, 1, 1)
    out = synth(x, seed=4)
    assert (out.labels == 1).all()
    assert any(p.get("attempts", 1) > 1 for p in out.params)
    assert torch.equal(synth.replay(x, out.params).images, out.images)


def test_destseg_has_no_texture_augmentation():
    _, params = draws("destseg", 50)
    assert all(p["augment"] == [] and p["anomalous"] for p in params)


def test_draem_anomalib_uses_noise_texture_and_its_ops():
    synth, params = draws("draem_anomalib", 200)
    assert synth.textures is None and all("texture" not in p for p in params if p["anomalous"])
    ops = {o for p in params if p["anomalous"] for o, _ in p["augment"]}
    assert {"contrast", "brightness", "posterize"} <= ops


def test_foreground_confines_draem(surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 20:70, 10:50] = 1
    synth = defectforge.create("draem", anomaly_probability=1.0, empty_mask_policy="retry")
    out = synth(surface_batch, seed=0, foreground=fg)
    assert not (out.masks * (1 - fg)).any()
    assert (out.labels == 1).all()


def test_cutpaste_rectangle_distribution():
    _, params = draws("cutpaste", 800)
    area = np.array([p["size"][0] * p["size"][1] for p in params]) / (256 * 256)
    assert area.min() > 0.015 and area.max() < 0.16
    assert abs(area.mean() - 0.085) < 0.01  # U(0.02, 0.15)
    log_aspect = np.log([p["size"][1] / p["size"][0] for p in params])
    assert log_aspect.min() > math.log(0.3) - 0.1 and log_aspect.max() < math.log(1 / 0.3) + 0.1
    assert abs(log_aspect.mean()) < 0.1  # log-uniform, symmetric
    for p in params:
        (h, w), (sy, sx), (ty, tx) = p["size"], p["source"], p["target"]
        assert 0 <= sy <= 256 - h and 0 <= sx <= 256 - w and 0 <= ty <= 256 - h and 0 <= tx <= 256 - w


def test_cutpaste_scar_distribution():
    _, params = draws("cutpaste_scar", 800)
    h = np.array([p["size"][0] for p in params])
    w = np.array([p["size"][1] for p in params])
    angle = np.array([p["angle"] for p in params])
    assert 2 <= w.min() and w.max() <= 16 and abs(w.mean() - 9) < 0.6
    assert 10 <= h.min() and h.max() <= 25 and abs(h.mean() - 17.5) < 0.6
    assert -45 <= angle.min() and angle.max() <= 45


def test_scar_size_scales_with_image():
    synth = defectforge.create("cutpaste_scar")
    params, _ = synth.draw(0, range(300), ImageShape((3, 512, 512)))
    assert np.mean([p["size"][0] for p in params]) > 30


def test_union_and_3way_proportions():
    _, union = draws("cutpaste_union", 1000)
    kinds = Counter(p["kind"] for p in union)
    assert 0.45 < kinds["scar"] / 1000 < 0.55
    _, three = draws("cutpaste_3way", 1500)
    kinds = Counter(p.get("kind", "normal_image") for p in three)
    for k in ("normal_image", "normal", "scar"):
        assert 0.29 < kinds[k] / 1500 < 0.38


def test_3way_labels(surface_batch):
    synth = defectforge.create("cutpaste_3way")
    out = synth(surface_batch.repeat(5, 1, 1, 1), seed=0)
    for p, label in zip(out.params, out.labels.tolist()):
        expected = 0 if not p["anomalous"] else (2 if p["kind"] == "scar" else 1)
        assert label == expected


def test_cutpaste_patch_is_jittered_copy_of_source(surface_batch):
    synth = defectforge.create("cutpaste", color_jitter=0.0)
    out = synth(surface_batch, seed=8)
    for i, p in enumerate(out.params):
        (h, w), (sy, sx), (ty, tx) = p["size"], p["source"], p["target"]
        assert torch.equal(out.images[i, :, ty:ty + h, tx:tx + w], surface_batch[i, :, sy:sy + h, sx:sx + w])


def test_cutout_fills_one_colour(surface_batch):
    out = defectforge.create("cutout")(surface_batch, seed=0)
    for i, p in enumerate(out.params):
        (h, w), (ty, tx) = p["size"], p["target"]
        region = out.images[i, :, ty:ty + h, tx:tx + w].flatten(1)
        assert torch.equal(region[:, 0], torch.tensor(p["color"], dtype=torch.uint8))
        assert (region == region[:, :1]).all()


@pytest.mark.parametrize("kw", [{"empty_mask_policy": "retry"}, {"empty_mask_policy": "rescale", "dual_mask": True},
                                {"empty_mask_policy": "keep_normal"}])
def test_per_sample_masks_equal_the_batched_redraws(kw):
    # threshold 0.8 empties many masks, so the redraw loops run; both paths must draw alike
    synth = defectforge.create("draem", anomaly_probability=1.0, threshold=0.8, max_attempts=3, **kw)
    shape = ImageShape((3, 40, 56))
    batched_params, batched_rngs = synth.draw(3, range(48), shape, None)
    batched, noise = synth.masks(batched_params, 40, 56, "cpu", batched_rngs)
    params, rngs = synth.draw(3, range(48), shape, None)
    out = np.empty((40, 56), np.float32)
    for i, (p, rng) in enumerate(zip(params, rngs)):
        assert np.array_equal(synth.mask_sample(p, 40, 56, rng, out), batched[i, 0].numpy() > 0)
        assert np.array_equal(out, noise[i, 0].numpy())
    assert params == batched_params
    assert any(p.get("attempts", 1) > 1 for p in params) == (kw["empty_mask_policy"] != "keep_normal")
