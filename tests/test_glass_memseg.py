import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ImageShape
from defectforge.core.seeding import sample_rng
from defectforge.functional.perlin import perlin_masks
from defectforge.functional.paste import shuffle_tiles


def _draws(name, n=400, **kw):
    synth = defectforge.create(name, **kw)
    return [synth.sample_params(sample_rng(1, i), ImageShape((3, 64, 64))) for i in range(n)]


def test_glass_masks_are_union_intersection_or_first_of_two_perlin_masks(surface_batch):
    synth = defectforge.create("glass_las")
    out = synth(surface_batch, seed=4)
    for k, p in enumerate(out.params):
        a, _ = perlin_masks([p["perlin"]], 96, 96)
        b, _ = perlin_masks([p["perlin2"]], 96, 96)
        expected = {"union": torch.maximum(a, b), "intersection": torch.minimum(a, b), "single": a}[p["combine"]]
        assert torch.equal(out.masks[k:k + 1], expected)
        assert out.masks[k].sum() > 0  # redrawn until not empty


def test_glass_default_distributions():
    draws = _draws("glass_las")
    counts = {c: sum(p["combine"] == c for p in draws) for c in ("union", "intersection", "single")}
    assert all(90 < v < 180 for v in counts.values()), counts  # 1/3 each
    beta = np.array([p["beta"] for p in draws])
    assert beta.min() >= 0.2 and beta.max() <= 0.8
    assert abs(beta.mean() - 0.5) < 0.02 and 0.08 < beta.std() < 0.12  # N(0.5, 0.1), rarely clipped
    assert all(len(p["augment"]) == 3 and len({n for n, _ in p["augment"]}) == 3 for p in draws)
    names = {n for p in draws for n, _ in p["augment"]}
    assert len(names) == 9


@pytest.mark.parametrize("name", ["glass_las", "memseg"])
def test_defects_stay_inside_the_foreground(name, surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 20:70, 30:80] = 1
    out = defectforge.create(name)(surface_batch, seed=2, foreground=fg)
    assert out.labels.min() == 1
    assert (out.masks * (1 - fg)).sum() == 0
    changed = (out.images != surface_batch).any(1, keepdim=True)
    assert not (changed & (fg == 0)).any()


@pytest.mark.parametrize("name", ["glass_las", "memseg"])
def test_empty_foreground_is_a_recorded_fallback(name, surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    out = defectforge.create(name)(surface_batch, seed=2, foreground=fg)
    assert all("whole image" in p["region_fallback"] for p in out.params)
    assert out.labels.min() == 1


def test_shuffle_tiles_is_a_permutation_of_the_tiles():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    perm = np.random.default_rng(1).permutation(64)
    out = shuffle_tiles(img, 8, perm)
    for k, src in enumerate(perm):
        ty, tx, sy, sx = k // 8 * 8, k % 8 * 8, src // 8 * 8, src % 8 * 8
        assert np.array_equal(out[ty:ty + 8, tx:tx + 8], img[sy:sy + 8, sx:sx + 8])


def test_memseg_structure_anomaly_is_the_images_own_tiles_permuted():
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64), dtype=np.uint8))
    synth = defectforge.create("memseg", structure_probability=1.0, augmentations_per_sample=0, opacity_range=(1.0, 1.0))
    out = synth(img, seed=0)
    for k, p in enumerate(out.params):
        assert p["kind"] == "structure" and sorted(p["permutation"]) == list(range(64))
        own = img[k].permute(1, 2, 0).numpy()
        expected = torch.from_numpy(shuffle_tiles(own, 8, p["permutation"])).permute(2, 0, 1)
        m = out.masks[k, 0] > 0
        assert m.any() and torch.equal(out.images[k][:, m], expected[:, m])


def test_memseg_default_distributions():
    from scipy import stats

    draws = _draws("memseg", n=1000)
    structure = sum(p["kind"] == "structure" for p in draws)
    assert 440 < structure < 560  # 1/2
    opacity = np.array([p["opacity"] for p in draws])
    assert opacity.min() >= 0.15 and opacity.max() <= 1.0
    assert stats.kstest(opacity, "uniform", args=(0.15, 0.85)).pvalue > 1e-3  # U(0.15, 1)
    assert all(len(p["augment"]) == 3 for p in draws if p["kind"] == "structure")
