import math

import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ImageShape
from defectforge.core.seeding import sample_rng
from defectforge.functional.shapes import bezier_outline, poisson_paste
from defectforge.synthesizers.defectmaker import LABELS


def test_bezier_outline_passes_through_its_points_and_is_closed():
    pts = np.random.default_rng(0).random((6, 2))
    outline = bezier_outline(pts, 0.3)
    starts = outline[::12]
    assert all(np.isclose(starts, p).all(1).any() for p in pts)
    assert np.linalg.norm(np.diff(outline, axis=0), axis=1).max() < 0.5  # no jump: a closed smooth curve


def test_default_distributions():
    synth = defectforge.create("defectmaker")
    draws = [synth.sample_params(sample_rng(2, i), ImageShape((3, 256, 256))) for i in range(1200)]
    shapes = {s: sum(p["shape"] == s for p in draws) for s in ("rect", "scar", "clump")}
    assert all(330 < v < 470 for v in shapes.values()), shapes  # 1/3 each
    cut = sum(p["fill"] == "cut" for p in draws)
    assert 520 < cut < 680  # 1/2
    assert {len(p["points"]) for p in draws} == {5, 6, 7}
    assert all(0.2 <= p["smoothness"] <= 0.5 for p in draws)
    blur = [p["blur"] for p in draws]
    assert set(blur) == {0, 3, 5} and 520 < blur.count(0) < 680
    rect_area = [p["size"][0] * p["size"][1] / 256 ** 2 for p in draws if p["shape"] == "rect"]
    assert 0.018 < min(rect_area) and max(rect_area) < 0.155
    assert all(0.5 <= p["weight"] <= 1 for p in draws if p["shape"] == "clump")
    assert all(p["weight"] == 1 for p in draws if p["shape"] != "clump")
    noise = [p["noise"] for p in draws if p["fill"] == "noise"]
    assert all(50 <= q["mean"] <= 200 and 0 <= q["fluctuation"] <= 50 for q in noise)
    assert {q["scale"] for q in noise} == {1, 2, 4} and {q["aspect"] for q in noise} == {1, 2, 4, 0.5, 0.25}
    scars = [p for p in draws if p["shape"] == "scar"]
    assert all(7 <= p["scar_size"][1] <= 21 and 15 <= p["scar_size"][0] <= 30 for p in scars)
    assert all(-45 <= p["angle"] <= 45 for p in scars)


def test_labels_are_the_six_shape_fill_classes(surface_batch):
    out = defectforge.create("defectmaker")(surface_batch.repeat(3, 1, 1, 1), seed=1)
    for p, label in zip(out.params, out.labels.tolist()):
        assert label == LABELS[(p["shape"], p["fill"])]
    assert sorted(LABELS.values()) == [1, 2, 3, 4, 5, 6]


def test_cut_fill_comes_from_the_donor_pool(surface_batch):
    donors = torch.full((2, 3, 96, 96), 77, dtype=torch.uint8)
    synth = defectforge.create("defectmaker", fills=["cut"], color_jitter=0.0, blur_probability=0.0,
                               shapes=["rect", "scar"])
    out = synth(surface_batch, seed=0, donors=donors)
    for k in range(4):
        m = out.masks[k, 0] > 0
        assert m.any() and (out.images[k][:, m] == 77).all()
        assert out.params[k]["donor_index"] in (0, 1)
    again = synth.replay(surface_batch, out.params, donors=donors)
    assert torch.equal(again.images, out.images)


@pytest.mark.parametrize("name", ["defectmaker", "defectmaker_poisson"])
def test_defects_stay_inside_the_foreground(name, surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 30:80, 10:60] = 1
    out = defectforge.create(name)(surface_batch, seed=5, foreground=fg)
    assert (out.masks * (1 - fg)).sum() == 0
    changed = (out.images != surface_batch).any(1, keepdim=True)
    assert not (changed & (fg == 0)).any()
    assert out.labels.min() >= 1


def test_poisson_paste_leaves_pixels_outside_the_mask_and_matches_gradients():
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 100, np.uint8)
    patch = np.full((20, 20, 3), 200, np.uint8)
    patch[:, 10:] = 220  # an internal edge the clone keeps
    mask = np.zeros((20, 20), bool)
    mask[3:17, 3:17] = True
    new, keep = poisson_paste(img, patch, mask, 20, 20)
    assert np.array_equal(keep, mask)
    assert (new[~mask] == 100).all()
    # the constant offset of the patch is removed (boundary matches the image), the edge is kept
    assert abs(int(new[10, 5, 0]) - 100) < 12
    assert int(new[10, 12, 0]) - int(new[10, 8, 0]) > 10
    del rng
