import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ImageShape
from defectforge.core.seeding import sample_rng


def test_riad_hides_one_of_three_sets_of_grid_cells(surface_batch):
    out = defectforge.create("riad")(surface_batch, seed=0)
    assert torch.equal(out.extras["target"], surface_batch)
    for k, p in enumerate(out.params):
        cell = p["cell"]
        m = out.masks[k, 0]
        # constant on every cell of the grid
        cells = m[: 96 // cell * cell, : 96 // cell * cell].reshape(96 // cell, cell, 96 // cell, cell)
        assert torch.equal(cells.amax((1, 3)), cells.amin((1, 3)))
        assert (out.images[k][:, m > 0] == 0).all()
        assert 0.2 < m.mean() < 0.47  # a third of the cells
    synth = defectforge.create("riad")
    sizes = [synth.sample_params(sample_rng(1, i), ImageShape((3, 256, 256)))["cell"] for i in range(400)]
    assert set(sizes) == {2, 4, 8, 16} and all(70 < sizes.count(s) < 130 for s in (2, 4, 8, 16))


def test_riad_mean_fill_and_foreground(surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[..., :48, :] = 1
    out = defectforge.create("riad", fill="mean")(surface_batch, seed=1, foreground=fg)
    assert (out.masks * (1 - fg)).sum() == 0
    for k in range(4):
        m = out.masks[k, 0] > 0
        mean = surface_batch[k].double().mean((1, 2)).round().to(torch.uint8)
        assert m.any() and (out.images[k][:, m] == mean[:, None]).all()
        assert torch.equal(out.images[k][:, ~m], surface_batch[k][:, ~m])


def test_sami_hides_whole_slic_superpixels(surface_batch):
    slic = pytest.importorskip("skimage.segmentation").slic
    out = defectforge.create("sami")(surface_batch, seed=0)
    for k, p in enumerate(out.params):
        segments = slic(surface_batch[k].permute(1, 2, 0).numpy(), n_segments=100, compactness=10.0,
                        start_label=0, channel_axis=-1, slic_zero=True)
        m = out.masks[k, 0].numpy() > 0
        expected = np.isin(segments, p["hidden"])
        assert np.array_equal(m, expected)
        assert m.any()
        assert p["segments"] > 20  # SLICO keeps textured images in many superpixels
    share = sum(len(p["hidden"]) for p in out.params) / sum(p["segments"] for p in out.params)
    assert 0.15 < share < 0.5  # each superpixel hidden with probability 0.3
    assert torch.equal(out.extras["target"], surface_batch)


def test_sami_follows_grey_image_content():
    slic = pytest.importorskip("skimage.segmentation").slic
    import defectforge

    g = torch.Generator().manual_seed(0)
    img = (torch.rand(1, 1, 64, 64, generator=g) * 20).to(torch.uint8)
    img[..., 29:] += 180  # a vertical edge between two noisy flat halves
    out = defectforge.create("sami", hide_probability=0.5)(img, seed=0)
    rgb = np.repeat(img[0, 0].numpy()[..., None], 3, axis=2)
    segments = slic(rgb, n_segments=100, compactness=10.0, start_label=0, channel_axis=-1, slic_zero=True)
    assert np.array_equal(out.masks[0, 0].numpy() > 0, np.isin(segments, out.params[0]["hidden"]))
    # superpixels follow the edge (a square grid, as SLIC gives on grey images with compactness 10, would straddle it)
    left, right = set(np.unique(segments[:, :29])), set(np.unique(segments[:, 29:]))
    assert not left & right


def test_sami_segmentations_are_cached_by_image_content(surface_batch, monkeypatch):
    pytest.importorskip("skimage.segmentation")
    import pickle

    synth = defectforge.create("sami")
    first = synth(surface_batch, seed=0)
    calls = []
    real = synth._segments

    def counting(slic, source):
        calls.append(source.shape)
        return real(lambda *a, **k: pytest.fail("SLIC ran again on a cached image"), source)

    monkeypatch.setattr(synth, "_segments", counting)
    again = synth(surface_batch.clone(), seed=0)  # same pixels, new tensor: served from the cache
    assert len(calls) == 4
    assert torch.equal(again.masks, first.masks) and again.params == first.params
    monkeypatch.undo()
    copy = pickle.loads(pickle.dumps(synth))  # DataLoader workers get an empty cache
    assert len(copy._segment_cache) == 0
    assert torch.equal(copy(surface_batch, seed=0).masks, first.masks)
