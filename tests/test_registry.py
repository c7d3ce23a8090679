"""Properties every registered image-level method must have (parametrized over the registry)."""

import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.registry import FAMILIES, LEVELS

IMAGE_METHODS = defectforge.list_methods(level="image")


def test_registry_lists_the_foundation_methods():
    for name in ["draem", "draem_anomalib", "destseg", "cutpaste", "cutpaste_scar", "cutpaste_union",
                 "cutpaste_3way", "cutout"]:
        assert name in IMAGE_METHODS


@pytest.mark.parametrize("name", defectforge.list_methods())
def test_method_info_is_complete(name):
    info = defectforge.method_info(name)
    assert info.family in FAMILIES and info.level in LEVELS
    assert info.description and info.source and info.licence


def _synth(name):
    for module in getattr(defectforge.method_info(name).cls, "requires", ()):
        pytest.importorskip(module)  # optional dependency (e.g. scikit-image for sami)
    from conftest import method_for_tests  # methods that need a trained model get a tiny random one

    return method_for_tests(name, anomaly_probability=1.0)


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "float", "gray"])
def test_masks_binary_outside_unchanged_and_replay(name, dtype, surface_batch):
    images = surface_batch
    if dtype == "float":
        images = images.float() / 255.0
    elif dtype == "gray":
        images = images[:, :1].contiguous()
    synth = _synth(name)
    out = synth(images, seed=3)
    assert out.images.shape == images.shape and out.images.dtype == images.dtype
    assert out.masks.shape == (images.shape[0], 1, *images.shape[2:])
    assert set(torch.unique(out.masks).tolist()) <= {0.0, 1.0}
    anomalous = out.masks.flatten(1).amax(1) > 0
    assert torch.equal(out.labels > 0, anomalous), "labels must agree with the masks"
    if not getattr(synth, "changes_outside_mask", False):
        changed = (out.images != images).any(1, keepdim=True)
        assert not (changed & (out.masks == 0)).any(), "pixels outside the mask changed"
    again = synth.replay(images, out.params)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)
    assert torch.equal(again.labels, out.labels)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_sample_independent_of_batch_composition(name, surface_batch):
    synth = _synth(name)
    full = synth(surface_batch, seed=11)
    part = synth(surface_batch[2:], seed=11, indices=[2, 3])
    assert torch.equal(full.images[2:], part.images)
    assert torch.equal(full.masks[2:], part.masks)
    assert full.params[2:] == part.params


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_no_global_rng_touched(name, surface_batch):
    torch.manual_seed(123)
    np.random.seed(123)
    before = (torch.get_rng_state().clone(), np.random.get_state()[1].copy())
    _synth(name)(surface_batch, seed=0)
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_params_are_json(name, surface_batch):
    import json

    out = _synth(name)(surface_batch, seed=5)
    assert json.loads(json.dumps(out.params)) == out.params


def test_unknown_method_and_parameter_suggest():
    with pytest.raises(ValueError, match="Did you mean 'draem'"):
        defectforge.create("dream")
    with pytest.raises(TypeError, match="opacity_range"):
        defectforge.create("draem", opacity_rang=(0.1, 1))


def test_out_of_range_parameter():
    with pytest.raises(ValueError, match="anomaly_probability"):
        defectforge.create("draem", anomaly_probability=1.5)
    with pytest.raises(ValueError, match="opacity_range"):
        defectforge.create("draem", opacity_range=(0.5, 0.2))


def test_bad_images():
    synth = defectforge.create("cutpaste")
    with pytest.raises(ValueError, match="1 or 3 channels"):
        synth(torch.zeros(1, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        synth(torch.zeros(3, 32, 32))
