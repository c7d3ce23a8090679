import json

import cv2
import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import ApplyResult
from defectforge.synthesizers.compose import parse_mix
from defectforge.sources.mask_bank import MaskBank
from defectforge.io.images import write_image


@pytest.fixture
def bank_dir(tmp_path):
    disc = np.zeros((40, 40), np.uint8)
    cv2.circle(disc, (20, 20), 15, 255, -1)
    ell = np.zeros((30, 30), np.uint8)
    ell[:, :8] = 255
    ell[-8:, :] = 255
    write_image(tmp_path / "disc.png", disc)
    write_image(tmp_path / "ell.png", ell)
    return tmp_path


def _common_checks(synth, images, **kw):
    out = synth(images, seed=7, **kw)
    assert set(torch.unique(out.masks).tolist()) <= {0.0, 1.0}
    if not synth.changes_outside_mask:
        changed = (out.images != images).any(1, keepdim=True)
        assert not (changed & (out.masks == 0)).any()
    again = synth.replay(images, out.params, **kw)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)
    part_kw = {k: v[2:4] if k == "foreground" else v for k, v in kw.items()}
    part = synth(images[2:4], seed=7, indices=[2, 3], **part_kw)
    assert torch.equal(part.images, out.images[2:4]) and part.params == out.params[2:4]
    assert json.loads(json.dumps(out.params)) == out.params
    return out


@pytest.mark.parametrize("name", ["cutpaste", "draem", "glass_las", "defectmaker", "nsa"])
def test_defect_count(name, surface_batch):
    synth = defectforge.control(name, defect_count=(2, 3))
    out = _common_checks(synth, surface_batch)
    assert all(len(p["defects"]) in (2, 3) for p in out.params)


def test_defect_count_distribution_and_union_of_masks(surface_batch):
    synth = defectforge.control("cutpaste", defect_count=(1, 3))
    from defectforge.core.base import ImageShape
    from defectforge.core.seeding import sample_rng

    counts = [len(synth.sample_params(sample_rng(0, i), ImageShape((3, 96, 96)))["defects"]) for i in range(600)]
    assert all(150 < counts.count(n) < 250 for n in (1, 2, 3))
    single = defectforge.control("cutpaste", defect_count=1)
    out = synth(surface_batch, seed=1)
    # each pass is the method itself: its mask is one of the union's parts
    for k, p in enumerate(out.params):
        area = sum(d["params"]["size"][0] * d["params"]["size"][1] for d in p["defects"])
        assert out.masks[k].sum() <= area
    assert single(surface_batch, seed=1).masks.sum() > 0


@pytest.mark.parametrize("name", ["cutpaste", "glass_las", "memseg"])
def test_area_range_is_met_or_explained(name, surface_batch):
    synth = defectforge.control(name, area_range=(0.03, 0.08))
    out = _common_checks(synth, surface_batch)
    areas = out.masks.flatten(1).mean(1).tolist()
    for a, p in zip(areas, out.params):
        assert 0.03 <= a <= 0.08 or "area_fallback" in p


def test_mask_bank_shapes_are_the_masks_of_free_form_methods(bank_dir, surface_batch):
    bank = MaskBank(bank_dir)
    synth = defectforge.control("glass_las", mask_bank=bank)
    out = _common_checks(synth, surface_batch)
    for k, p in enumerate(out.params):
        shape = bank.render(p["defects"][0]["shape"], 96, 96)
        assert np.array_equal(out.masks[k, 0].numpy() > 0, shape)


@pytest.mark.parametrize("name", ["cutpaste", "defectmaker", "memseg"])
def test_mask_bank_defects_stay_inside_shape_and_foreground(name, bank_dir, surface_batch):
    fg = torch.zeros(4, 1, 96, 96)
    fg[:, :, 10:90, 10:90] = 1
    synth = defectforge.control(name, mask_bank=bank_dir)
    out = _common_checks(synth, surface_batch, foreground=fg)
    bank = synth.mask_bank
    for k, p in enumerate(out.params):
        shape = torch.from_numpy(bank.render(p["defects"][0]["shape"], 96, 96))
        assert not ((out.masks[k, 0] > 0) & ~shape).any()
        assert (out.masks[k] * (1 - fg[k])).sum() == 0


def test_mask_bank_rejects_non_binary_and_empty_files(tmp_path):
    grey = np.zeros((10, 10), np.uint8)
    grey[2:5, 2:5] = 128
    grey[5:8, 5:8] = 255
    write_image(tmp_path / "bad.png", grey)
    with pytest.raises(ValueError, match="bad.png.*not binary"):
        MaskBank(tmp_path)
    (tmp_path / "bad.png").unlink()
    write_image(tmp_path / "blank.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="blank.png.*empty"):
        MaskBank(tmp_path)


def test_mix_frequencies_replay_and_errors(surface_batch):
    synth = defectforge.mix(["cutpaste", "glass_las", "nsa"], [0.2, 0.3, 0.5])
    from defectforge.core.base import ImageShape
    from defectforge.core.seeding import sample_rng

    drawn = [synth.sample_params(sample_rng(3, i), ImageShape((3, 96, 96)))["method"] for i in range(1000)]
    assert 150 < drawn.count("cutpaste") < 250 and 250 < drawn.count("glass_las") < 350
    out = _common_checks(synth, surface_batch.repeat(2, 1, 1, 1))
    assert out.labels.min() >= 1
    with pytest.raises(ValueError, match="sum to 1"):
        defectforge.mix(["cutpaste", "draem"], [0.5, 0.6])
    with pytest.raises(ValueError, match="unknown method"):
        defectforge.mix(["cutpaste", "dream"])
    assert parse_mix("a:0.5,b:0.5") == (["a", "b"], [0.5, 0.5])
    assert parse_mix("a,b") == (["a", "b"], [0.5, 0.5])
    with pytest.raises(ValueError, match="every method"):
        parse_mix("a:0.5,b")


def test_mix_of_controlled_members(surface_batch):
    synth = defectforge.mix([defectforge.control("cutpaste", defect_count=2), "draem"], [0.5, 0.5])
    _common_checks(synth, surface_batch)


class _WholeImageDefect(defectforge.Synthesizer):
    """Marks the whole image: it relies on the base class to cut its mask to the foreground."""

    method_name = "whole_image"

    def sample_params(self, rng, shape, foreground=None):
        return {"shade": float(rng.uniform(0.2, 0.8))}

    def apply(self, images, params, context, rngs):
        shades = torch.tensor([p["shade"] for p in params], dtype=images.dtype, device=images.device)
        out = images.clone()
        out[:] = shades[:, None, None, None]
        b, _, h, w = images.shape
        return ApplyResult(out, torch.ones((b, 1, h, w)), torch.ones(b, dtype=torch.long))


def test_mix_confines_members_that_rely_on_the_base_rule_beside_a_hint_member(surface_batch):
    # before: the NSA member (foreground only a hint) switched confinement off for every member
    foreground = torch.zeros((4, 1, 96, 96))
    foreground[:, :, 20:60, 10:50] = 1.0
    synth = defectforge.mix([_WholeImageDefect(), "nsa"], [0.5, 0.5])
    images = surface_batch
    drawn = set()
    for seed in range(4):
        out = synth(images, seed=seed, foreground=foreground)
        for i, p in enumerate(out.params):
            drawn.add(p["method"])
            if p["method"] == "whole_image":
                assert torch.equal(out.masks[i], foreground[i])
    assert drawn == {"whole_image", "nsa"}
    alone = _WholeImageDefect()(images, seed=0, foreground=foreground)
    assert torch.equal(alone.masks, foreground)


def test_skimage_textures_as_a_texture_source(surface_batch):
    pytest.importorskip("skimage")
    from defectforge.sources.textures import resolve_textures

    source = resolve_textures("skimage")
    assert len(source) == 3 and source.get([0, 2], 32, 48).shape == (2, 3, 32, 48)
    out = defectforge.create("glass_las", textures="skimage")(surface_batch, seed=0)
    assert out.labels.min() == 1 and all(p["texture"] in (0, 1, 2) for p in out.params)
