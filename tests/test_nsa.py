import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ImageShape
from defectforge.core.seeding import sample_rng


def _flat_and_donor():
    img = torch.full((2, 3, 96, 96), 90, dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    donor = (torch.rand(1, 3, 96, 96, generator=g) * 60 + 170).to(torch.uint8)  # bright, textured
    return img, donor


@pytest.mark.parametrize("name", ["nsa", "nsa_mixed"])
def test_poisson_seams_have_no_hard_edge(name):
    img, donor = _flat_and_donor()
    synth = defectforge.create(name, patches_range=(1, 1))
    out = synth(img, seed=1, donors=donor)
    for k, p in enumerate(out.params):
        (patch,) = p["patches"]
        ty, tx = patch["target"]
        dh, dw = patch["placed_size"]
        o = out.images[k, 0].float()
        # rows just inside and just outside the top and bottom edges, where they are in the image
        jumps = []
        if ty > 0:
            jumps.append((o[ty + 1, tx + 1:tx + dw - 1] - o[ty - 1, tx + 1:tx + dw - 1]).abs().mean())
        if ty + dh < 96:
            jumps.append((o[ty + dh - 2, tx + 1:tx + dw - 1] - o[ty + dh, tx + 1:tx + dw - 1]).abs().mean())
        assert jumps and max(jumps) < 15  # a hard paste would jump by ~110 grey levels
        assert out.labels[k] == 1


def test_default_distributions():
    synth = defectforge.create("nsa")
    draws = [synth.sample_params(sample_rng(0, i), ImageShape((3, 256, 256))) for i in range(800)]
    counts = np.bincount([len(p["patches"]) for p in draws], minlength=5)
    assert counts[0] == 0 and all(150 < v < 250 for v in counts[1:])  # U{1..4}
    patches = [q for p in draws for q in p["patches"]]
    half = np.array([q["size"][0] / 512 for q in patches])  # half-width fraction (rows)
    assert half.min() >= 0.03 - 1 / 512 and half.max() <= 0.4 + 1 / 512
    assert abs(np.median(half) - (0.03 + 0.05 * 1.678)) < 0.015  # 0.03 + Gamma(2, 0.05), median 1.678*scale
    resize = np.array([q["resize"] for q in patches])
    assert resize.min() >= 0.7 and resize.max() <= 1.3 and abs(resize.mean() - 1.0) < 0.03


def test_soft_labels_are_logistic_of_the_change_inside_the_patches():
    img, donor = _flat_and_donor()
    out = defectforge.create("nsa")(img, seed=3, donors=donor)
    soft = out.extras["soft_mask"]
    assert soft.shape == out.masks.shape and 0 <= soft.min() and soft.max() <= 1
    delta = (out.images.float() - img.float()).abs().mean(1, keepdim=True)
    inside = soft > 0
    expected = 1 / (1 + torch.exp(-(delta - 24) / 12))
    assert torch.allclose(soft[inside], expected[inside], atol=1e-4)
    assert torch.equal(out.masks > 0, (delta > 1) & inside)


def test_placement_is_object_aware(surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 10:60, 20:70] = 1
    out = defectforge.create("nsa")(surface_batch, seed=2, foreground=fg)
    for k, p in enumerate(out.params):
        for q in p["patches"]:
            ty, tx = q["target"]
            dh, dw = q["placed_size"]
            assert fg[k, 0, ty:ty + dh, tx:tx + dw].mean() >= 0.25


def test_no_placement_is_a_recorded_soft_failure(surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 50:52, 50:52] = 1  # 4 px: no patch of >= 50 px has a quarter on it
    out = defectforge.create("nsa", max_failures=2)(surface_batch, seed=2, foreground=fg)
    assert out.labels.max() == 0 and out.masks.max() == 0
    assert all("no placement" in " ".join(p["failures"]) for p in out.params)
    assert torch.equal(out.images, surface_batch)


def test_donor_patches_replay(surface_batch):
    donors = surface_batch.flip(0)
    synth = defectforge.create("nsa")
    out = synth(surface_batch, seed=4, donors=donors)
    assert all("donor_index" in q for p in out.params for q in p["patches"])
    again = synth.replay(surface_batch, out.params, donors=donors)
    assert torch.equal(again.images, out.images) and torch.equal(again.extras["soft_mask"], out.extras["soft_mask"])
