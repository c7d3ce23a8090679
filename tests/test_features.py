"""Feature-level synthesizers (distribution-hypothesis family): a matrix over the registry plus
the property each method promises."""

import json

import pytest
import torch

import defectforge
from defectforge.features import CentreBank, nearest_centres

FEATURE_METHODS = defectforge.list_methods(level="feature")
C, H, W = 16, 8, 8


def _features(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, C, H, W, generator=g)


def _discriminator():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(C, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1),
                               torch.nn.Sigmoid()).eval()


def _context(f):
    return {"discriminator": _discriminator(), "centres": f.mean(0).flatten(1).T.contiguous()}


def _create(name):
    # batch-coupled methods (PBAS's batch radius) are checked for split independence per sample
    overrides = {"radius": "sample"} if name == "pbas" else {}
    return defectforge.create(name, **overrides)


def test_feature_methods_registered_with_family_and_level():
    expected = {"simplenet", "simplenet_code", "supersimplenet", "supersimplenet_visa", "uniad_jitter", "glass_gas",
                "pbas"}
    assert expected <= set(defectforge.list_methods(level="feature"))
    for name in expected:
        info = defectforge.method_info(name)
        assert info.family == "distribution-hypothesis"
        assert not set(defectforge.list_methods(level="image")) & expected


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_masks_labels_outside_and_replay(name):
    f = _features()
    ctx = _context(f)
    synth = _create(name)
    out = synth(f, seed=3, **ctx)
    assert out.features.shape == f.shape and out.masks.shape == (f.shape[0], 1, H, W)
    assert set(torch.unique(out.masks).tolist()) <= {0.0, 1.0}
    assert torch.equal(out.labels > 0, out.masks.flatten(1).amax(1) > 0)
    changed = (out.features != f).any(1, keepdim=True)
    assert not (changed & (out.masks == 0)).any(), "features outside the mask changed"
    assert changed.any()
    json.dumps(out.params)  # records are plain JSON
    again = synth.replay(f, json.loads(json.dumps(out.params)), **ctx)
    assert torch.equal(again.features, out.features) and torch.equal(again.masks, out.masks)


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_sample_independent_of_batch_split(name):
    f = _features()
    ctx = _context(f)
    synth = _create(name)
    assert not synth.batch_coupled
    full = synth(f, seed=11, **ctx)
    part = synth(f[2:5], seed=11, indices=[2, 3, 4], **ctx)
    if name == "glass_gas":  # the discriminator's matmuls sum in a batch-size dependent order
        torch.testing.assert_close(full.features[2:5], part.features, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(full.features[2:5], part.features)
    assert torch.equal(full.masks[2:5], part.masks)
    other_seed = synth(f, seed=12, **ctx)
    if name != "pbas":  # PBAS draws nothing: deterministic given the centres
        assert not torch.equal(other_seed.features, full.features)


def test_simplenet_noise_statistics_and_mix_noise():
    f = torch.zeros(16, 32, 16, 16)
    for name, sigma in (("simplenet", 0.015), ("simplenet_code", 0.05)):
        noise = defectforge.create(name)(f, seed=0).features
        assert abs(float(noise.mean())) < 0.02 * sigma
        assert abs(float(noise.std()) / sigma - 1) < 0.01
    mixed = defectforge.create("simplenet", mix_noise=3)(f, seed=0).features
    # rows draw sigma * 1.1**k, k uniform on {0, 1, 2}: variance is the mean of the three
    expected = 0.015 * ((1 + 1.1 ** 2 + 1.1 ** 4) / 3) ** 0.5
    assert abs(float(mixed.std()) / expected - 1) < 0.01
    with pytest.raises(ValueError, match="mix_noise"):
        defectforge.create("simplenet", mix_noise=0)


def test_supersimplenet_noise_only_inside_mask_half_empty_and_union():
    f = torch.zeros(200, 4, 16, 16)
    synth = defectforge.create("supersimplenet")
    out = synth(f, seed=0)
    empty = torch.tensor([p.get("empty", False) for p in out.params])
    assert 0.4 < float(empty.float().mean()) < 0.6          # half of the masks emptied
    assert (out.masks[empty] == 0).all() and (out.labels[empty] == 0).all()
    inside = out.features[(out.masks > 0).expand_as(f)]
    assert ((out.features != 0) <= (out.masks > 0)).all()  # noise only inside the mask
    assert abs(float(inside.std()) / 0.015 - 1) < 0.03
    visa = defectforge.create("supersimplenet_visa")(f, seed=0)
    assert visa.masks.mean() < out.masks.mean()               # threshold 0.6 > 0.2
    old = torch.zeros(200, 1, 16, 16)
    old[:, :, :4] = 1
    with_old = synth(f, seed=0, masks=old)
    assert (with_old.masks >= old).all()                      # ground truth = old OR noise
    assert (with_old.features[:, :, :4] == 0).all()          # no noise on already anomalous cells
    assert (with_old.labels == 1).all()


def test_uniad_jitter_scale():
    f = torch.full((8, 10, 6, 6), 2.0)   # |f|_2 = 2 * sqrt(10) per position
    out = defectforge.create("uniad_jitter")(f, seed=0)
    expected = 2 * 10 ** 0.5 / 10 * 20
    assert abs(float((out.features - f).std()) / expected - 1) < 0.05
    keep = defectforge.create("uniad_jitter", anomaly_probability=0.0)(f, seed=0)
    assert torch.equal(keep.features, f) and (keep.labels == 0).all()


@pytest.mark.parametrize("mode", ["manifold", "hypersphere"])
def test_gas_offsets_in_shell_after_projection(mode):
    f = _features(4)
    ctx = _context(f)
    synth = defectforge.create("glass_gas", mode=mode)
    out = synth(f, seed=0, **ctx)
    anchor = f if mode == "manifold" else ctx["centres"].T.reshape(1, C, H, W)
    norms = (out.features - anchor).norm(dim=1)
    if mode == "manifold":
        r = 0.5
    else:
        r = float(torch.quantile((f - anchor).norm(dim=1).flatten(), 0.75))
        assert synth.batch_coupled
    assert (norms >= r * (1 - 1e-5)).all() and (norms <= 2 * r * (1 + 1e-5)).all()
    torch.testing.assert_close(out.extras["offset_norm"][:, 0], norms)
    with pytest.raises(ValueError, match="discriminator"):
        synth(f, seed=0)


def test_gas_ascends_the_discriminator_loss():
    """Without projection, the steps move the features towards 'normal' for the discriminator."""
    f = _features(4)
    d = _discriminator()
    start = defectforge.create("glass_gas", steps=0)(f, seed=0, discriminator=d).features
    moved = defectforge.create("glass_gas", project_every=1000, step_size=0.05)(f, seed=0, discriminator=d).features
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, C)  # noqa: E731
    with torch.no_grad():
        assert d(rows(moved)).mean() < d(rows(start)).mean()


@pytest.mark.parametrize("radius", ["batch", "sample"])
def test_pbas_shift_is_k_times_r_away_from_nearest_centre(radius):
    f = _features(4)
    centres = torch.randn(10, C)
    out = defectforge.create("pbas", k=0.25, radius=radius)(f, centres=centres)
    rows = f.permute(0, 2, 3, 1).reshape(-1, C)
    dist = (rows - nearest_centres(rows, centres)).norm(dim=1).reshape(4, -1)
    r = dist.mean().expand(4) if radius == "batch" else dist.mean(1)
    shift = (out.features - f).norm(dim=1).reshape(4, -1)
    torch.testing.assert_close(shift, (0.25 * r)[:, None].expand_as(shift), rtol=1e-4, atol=1e-6)
    # the shift points away from the nearest centre: the distance grows by exactly k * r
    new_dist = (out.features.permute(0, 2, 3, 1).reshape(-1, C) - nearest_centres(rows, centres)).norm(dim=1)
    torch.testing.assert_close(new_dist.reshape(4, -1), dist + (0.25 * r)[:, None], rtol=1e-4, atol=1e-5)


def test_pbas_with_a_given_assignment_equals_its_own_search():
    f = _features(4)
    centres = torch.randn(10, C)
    rows = f.permute(0, 2, 3, 1).reshape(-1, C)
    nearest = nearest_centres(rows, centres).reshape(4, H, W, C).permute(0, 3, 1, 2)
    assert nearest.shape == f.shape
    pbas = defectforge.create("pbas")
    searched, given = pbas(f, centres=centres), pbas(f, centres=centres, nearest=nearest)
    assert torch.equal(searched.features, given.features)
    # a wrong assignment changes the result (the argument is used), and a wrong shape is refused
    assert not torch.equal(pbas(f, centres=centres, nearest=torch.zeros_like(f)).features, searched.features)
    with pytest.raises(ValueError, match="nearest must have the features' shape"):
        pbas(f, centres=centres, nearest=nearest[:, :, :2])


def test_replay_takes_the_assignment_its_call_took():
    # before: FeatureSynthesizer.replay had no nearest= (the call had), so a detector could not
    # replay a PBAS batch with the centres it had assigned
    f = _features(4)
    centres = torch.randn(10, C)
    wrong = torch.zeros_like(f)
    pbas = defectforge.create("pbas")
    made = pbas(f, centres=centres, nearest=wrong)
    again = pbas.replay(f, made.params, centres=centres, nearest=wrong)
    assert torch.equal(again.features, made.features) and torch.equal(again.masks, made.masks)


def test_image_and_feature_methods_share_one_seeded_parent():
    from defectforge.core.seeded import SeededSynthesizer

    image, feature = defectforge.create("draem"), defectforge.create("simplenet")
    assert isinstance(image, SeededSynthesizer) and isinstance(feature, SeededSynthesizer)
    assert feature.capabilities == defectforge.method_info("simplenet").capabilities
    with pytest.raises(ValueError, match="not made by defectforge.create"):
        type(feature)().config()


def test_each_feature_method_declares_the_detector_that_trains_on_it():
    # before: cli/bench_feature.py kept this map by hand
    from defectforge.detectors.registry import detector_info, list_detectors

    for name in defectforge.list_methods(level="feature") + defectforge.list_methods(level="latent"):
        detector = defectforge.method_info(name).capabilities["detector"]
        assert detector in list_detectors(kind=defectforge.method_info(name).level), name
    for detector in list_detectors(kind="feature") + list_detectors(kind="latent"):
        assert defectforge.method_info(detector_info(detector).method).capabilities["detector"] == detector
    assert defectforge.method_info("dsr").capabilities["detector"] == "dsr"


def test_centre_bank_ema():
    bank = CentreBank(momentum=0.9)
    a, b = torch.ones(2, 3, 2, 2), torch.zeros(2, 3, 2, 2)
    assert torch.equal(bank.update(a), torch.ones(4, 3))
    torch.testing.assert_close(bank.update(b), torch.full((4, 3), 0.9))


def test_feature_inputs_validated():
    synth = defectforge.create("simplenet")
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        synth(torch.zeros(3, 4, 4))
    with pytest.raises(TypeError, match="floating point"):
        synth(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="masks must have shape"):
        defectforge.create("supersimplenet")(torch.zeros(2, 3, 4, 4), masks=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="centres"):
        defectforge.create("pbas")(torch.zeros(2, 3, 4, 4))


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_config_round_trips(name):
    synth = defectforge.create(name)
    again = defectforge.from_config(synth.config())
    assert type(again) is type(synth) and again.config() == synth.config()
    f = _features(2)
    ctx = _context(f)
    assert torch.equal(again(f, seed=1, **ctx).features, synth(f, seed=1, **ctx).features)
