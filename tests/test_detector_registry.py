"""Every registered detector, the moment it registers: built by name, trained a few steps on a tiny
category, scored, seeded, and its declared attributes consistent (tiny random backbone and VQ-VAE)."""

import pytest
import torch

import defectforge
from defectforge.detectors import Detector
from defectforge.detectors.base import KINDS, DetectorBase
from defectforge.detectors.registry import (RESERVED_ARGUMENTS, check_options, create_detector, detector_info,
                                            list_detectors, register_detector)
from defectforge.generative.vqvae import VQVAE_WIDTHS, TwoLevelVQVAE

from test_feature_fidelity import backbone, data  # noqa: F401 - the tiny category at 32 px and the tiny backbone

#: Options that keep a detector cheap at 32 px (glass: a small LAS pool; dsr: its smallest resolution).
FAST = {"glass": {"las_pool": 4}, "dsr": {"resolution": 64}}
#: An image-level method that needs no donors, bank or model (the image-level detectors' source here).
IMAGE_METHOD = "cutpaste"


@pytest.fixture(scope="module")
def vqvae():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"]).eval()


def _build(name, backbone, vqvae):
    info = detector_info(name)
    return create_detector(name, backbone, 4 if info.width_option else 0, "cpu", vqvae, FAST.get(name, {}))


def _fit_and_score(name, backbone, vqvae, data, seed):
    info = detector_info(name)
    det = _build(name, backbone, vqvae)
    train = backbone.extract(data.train) if info.uses_backbone_features else None
    source = IMAGE_METHOD if info.kind == "image" else None  # feature/latent: their own method; baseline: none
    record = det.fit(data.train, source, steps=2, batch_size=2, seed=seed, features=train)
    test = backbone.extract(data.test) if info.uses_backbone_features else None
    maps = det.score_maps(data.test, features=test, size=32)
    return det, record, maps


@pytest.mark.parametrize("name", list_detectors())
def test_detector_trains_scores_and_is_seeded(name, backbone, vqvae, data):
    det, record, maps = _fit_and_score(name, backbone, vqvae, data, seed=3)
    assert isinstance(det, Detector) and det.name == name
    assert maps.shape == (data.test.shape[0], 32, 32) and maps.dtype == torch.float32 and torch.isfinite(maps).all()
    scores = det.image_scores(maps)
    assert scores.shape == (data.test.shape[0],) and torch.isfinite(scores).all()
    assert record.seconds >= 0
    if detector_info(name).kind != "baseline":
        assert len(record.losses) == 2 and all(torch.isfinite(torch.tensor(record.losses)))
    _, _, again = _fit_and_score(name, backbone, vqvae, data, seed=3)
    assert torch.equal(maps, again), "same seed, same maps"


@pytest.mark.parametrize("name", [n for n in list_detectors() if detector_info(n).uses_backbone_features])
def test_scoring_images_and_their_cached_features_agree(name, backbone, vqvae, data):
    """A detector on backbone features scores images as it scores their cached features."""
    det, _, maps = _fit_and_score(name, backbone, vqvae, data, seed=0)
    torch.testing.assert_close(det.score_maps(data.test, size=32), maps)


@pytest.mark.parametrize("name", list_detectors())
def test_declared_attributes_are_consistent(name):
    info = detector_info(name)
    assert info.kind in KINDS and info.cls.name == name
    assert info.summary, "the class docstring's first line describes the detector"
    if info.kind in ("feature", "latent"):  # its own method: registered, at its level, naming it back
        method = defectforge.method_info(info.method)
        assert method.level == info.kind and method.capabilities["detector"] == name
    else:
        assert info.method is None
    assert not set(info.options) & set(RESERVED_ARGUMENTS)
    assert info.width_option is None or info.width_option in info.options
    assert not info.uses_backbone_features or info.needs_backbone
    assert list_detectors(kind=info.kind).count(name) == 1


@pytest.mark.parametrize("name", list_detectors())
def test_unknown_option_lists_the_valid_ones(name):
    info = detector_info(name)
    with pytest.raises(ValueError, match="no option 'no_such_option'") as error:
        check_options(name, {"no_such_option": 1})
    assert all(f"{key}=" in str(error.value) for key in info.options)


def test_unknown_detector_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'seghead'"):
        create_detector("seghed")
    with pytest.raises(ValueError, match="kind must be one of"):
        list_detectors(kind="pixel")


def test_width_sets_the_declared_option(backbone):
    assert create_detector("simplenet", backbone, width=16).hidden == 16  # feature-level: the hidden size
    assert create_detector("seghead", backbone, width=16).width == 16
    with pytest.raises(ValueError, match="no width"):
        create_detector("patchcore", backbone, width=16)
    with pytest.raises(ValueError, match="needs a backbone"):
        create_detector("seghead")


def test_a_new_detector_is_one_class_and_one_registration(backbone, data):
    from defectforge.detectors import registry

    class BrightnessDetector(DetectorBase):
        """Scores each pixel by its brightness (a test detector, no training)."""

        name = "test_brightness"
        kind = "baseline"
        uses_backbone_features = False
        width_option = None

        def __init__(self, gain: float = 1.0):
            self.gain = gain

        def fit(self, images, synthesizer=None, steps=0, batch_size=0, seed=0, features=None, **_):
            return None

        def score_maps(self, images=None, features=None, size=None):
            return images.float().mean(1) * self.gain

    try:
        register_detector(BrightnessDetector)
        assert "test_brightness" in list_detectors(kind="baseline")
        assert dict(detector_info("test_brightness").options) == {"gain": 1.0}
        det = create_detector("test_brightness", options={"gain": 2.0})
        maps = det.score_maps(data.test)
        torch.testing.assert_close(det.image_scores(maps), maps.amax(dim=(1, 2)))  # the default image score
        with pytest.raises(ValueError, match="already registered"):
            register_detector(type("Other", (BrightnessDetector,), {}))
    finally:
        registry._REGISTRY.pop("test_brightness", None)


def test_registration_refuses_undeclared_attributes():
    class NoKind(DetectorBase):
        """A detector that forgot its kind."""

        name = "test_no_kind"
        uses_backbone_features = False

        def fit(self, images, **_):
            return None

        def score_maps(self, images=None, features=None, size=None):
            return images

    with pytest.raises(ValueError, match="kind"):
        register_detector(NoKind)
    NoKind.kind = "feature"  # a feature-level detector names its method
    with pytest.raises(ValueError, match="method"):
        register_detector(NoKind)
