"""The feature-level detectors train as their official code does (issue 22): each test checks the
behaviour itself on a tiny random backbone."""

import pytest
import torch
from torch import nn

import defectforge
from defectforge.detectors import load_backbone, load_mvtec_category
from defectforge.detectors.feature_level import _bce, _rows, synthetic_validation_set, validation_criterion
from defectforge.detectors.registry import create_detector
from defectforge.features import build_centre_bank

from test_detectors import make_category


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_mvtec_category(make_category(tmp_path_factory.mktemp("cat") / "cat"), size=32)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def features(backbone, data):
    return backbone.extract(data.train)


def _fitted(name, backbone, data, features, steps=0, width=0, **options):
    det = create_detector(name, backbone, width, options=options)
    det.fit(data.train, steps=steps, batch_size=4, seed=0, features=features)
    return det


def test_supersimplenet_noises_both_copies(backbone, data, features):
    """Official: both copies of the doubled batch go through the generator, so twice as many maps
    are anomalous (on real feature grids about half: the generator empties half of its masks; on
    this 4x4 grid some Perlin masks are empty too) as when the first copy stays clean."""
    synth = defectforge.create("supersimplenet")
    shares = {}
    for both in (True, False):
        det = _fitted("supersimplenet", backbone, data, features, noise_both_copies=both, width=8)
        labels = []
        for step in range(150):
            x = det.modules["adaptor"](det.prepare(features[:4]))
            batch, masks, lab = det.training_batch(x, step, 0, synth)
            assert batch.shape[0] == 8 and torch.equal((masks.flatten(1).amax(1) > 0).float(), lab)
            labels.append(lab)
        labels = torch.stack(labels)
        first, second = float(labels[:, :4].mean()), float(labels[:, 4:].mean())
        if both:
            assert first > 0.15 and second > 0.15 and abs(first - second) < 0.1
        else:
            assert first == 0 and second > 0.15
        shares[both] = float(labels.mean())
    assert 1.6 < shares[True] / shares[False] < 2.4


@pytest.mark.parametrize("stop_grad", [True, False])
def test_supersimplenet_classification_loss_stops_at_the_map(stop_grad, backbone, data, features):
    det = _fitted("supersimplenet", backbone, data, features, stop_grad=stop_grad, width=8)
    x = det.modules["adaptor"](det.prepare(features[:4]))
    _, score = det.heads(x)
    score.sum().backward()
    seg_grad = sum(float(p.grad.abs().sum()) for p in det.modules["seg"].parameters() if p.grad is not None)
    assert (seg_grad == 0) == stop_grad
    assert float(det.modules["adaptor"].weight.grad.abs().sum()) > 0  # the features still carry it


def test_supersimplenet_image_score_is_the_head(backbone, data, features):
    det = _fitted("supersimplenet", backbone, data, features, steps=2, width=8)
    maps = det.score_maps(data.test[:4])
    det.modules.eval()
    with torch.no_grad():
        _, score = det.heads(det.modules["adaptor"](det.prepare(backbone.extract(data.test[:4]))))
    assert torch.allclose(det.image_scores(maps), torch.sigmoid(score))
    det.image_score = "map"
    assert torch.equal(det.image_scores(maps), maps.amax(dim=(1, 2)))


def test_supersimplenet_learning_rate_schedule(backbone, data, features):
    det = _fitted("supersimplenet", backbone, data, features, width=8)
    opts = det.optimisers()
    scheds = det.schedulers(opts, 10)
    for _ in range(10):
        opts[0].step()
        scheds[0].step()
    assert opts[0].param_groups[0]["lr"] == pytest.approx(det.adaptor_lr * 0.4 ** 2)


def test_pbas_bank_is_built_once_and_stays_fixed(backbone, data, features):
    det = _fitted("pbas", backbone, data, features, width=8)
    built = det.centres.clone()
    trained = _fitted("pbas", backbone, data, features, steps=5, width=8)
    assert torch.equal(trained.centres, built), "the bank must not move during training"
    # built from the untrained projection, by the official nearest-row rule
    with torch.no_grad():
        again = build_centre_bank(det.adapt(x) for x in det.epoch_batches(features, 0))
    assert torch.equal(again, built) and built.shape == (features.shape[-2] * features.shape[-1], features.shape[1])


def test_pbas_moving_bank_moves(backbone, data, features):
    det = _fitted("pbas", backbone, data, features, steps=1, bank="moving", width=8)
    after_one = det.bank.centres.clone()
    det = _fitted("pbas", backbone, data, features, steps=3, bank="moving", width=8)
    assert not torch.equal(det.bank.centres, after_one)


@pytest.mark.parametrize("into_projection", [True, False])
def test_glass_gas_loss_trains_the_projection(into_projection, backbone, data, features):
    det = _fitted("glass", backbone, data, features, las_pool=0, gas_into_projection=into_projection, width=8)
    det.modules["discriminator"].body[1] = nn.Identity()  # no batch-norm coupling between the rows
    true = det.adapt(det.prepare(features[:2]))
    _, gas = det.gas_scores(true, 0, 0, defectforge.create("glass_gas"))
    _bce(gas, 1.0).backward()
    grad = det.modules["adaptor"].weight.grad
    assert (grad is not None and float(grad.abs().sum()) > 0) == into_projection


def test_official_manifold_gas_has_an_identity_jacobian():
    """Why the straight-through gradient is GLASS's: ascent steps added under no_grad and rescalings
    of an offset whose graph does not depend on the normal features leave d gas / d true = I."""
    torch.manual_seed(0)
    true = torch.randn(6, 5, requires_grad=True)
    gas = true + 0.015 * torch.randn(6, 5)
    for step in range(20):
        with torch.no_grad():
            gas.add_(0.001 * nn.functional.normalize(torch.randn(6, 5), dim=1))
        if (step + 1) % 5 == 0:
            h = gas - true
            norm = h.norm(dim=1, keepdim=True)
            gas = true + h * (norm.clamp(0.5, 1.0) / (norm + 1e-10))
    weights = torch.randn(6, 5)
    (gas * weights).sum().backward()
    assert torch.allclose(true.grad, weights, atol=1e-5)


def test_glass_hypersphere_mode(backbone, data, features):
    det = _fitted("glass", backbone, data, features, steps=2, las_pool=4, mode="hypersphere", width=8)
    h, w = features.shape[-2:]
    assert det.centres.shape == (h * w, features.shape[1])
    assert det.synthesizer_options("glass_gas") == {"mode": "hypersphere"}
    assert torch.isfinite(det.score_maps(data.test[:2])).all()


@pytest.mark.parametrize("clip", [0.1, None])
def test_uniad_clips_the_gradient_norm(clip, backbone, data, features):
    det = _fitted("uniad", backbone, data, features, steps=1, clip_grad_norm=clip)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in det.modules.parameters() if p.grad is not None]))
    assert (float(norm) <= 0.1 + 1e-5) == (clip is not None)


def test_best_checkpoint_on_validation(backbone, data, features):
    """select_every keeps the weights of the best validation score, here those after step 2 of 3."""
    scores = iter([0.2, 0.9, 0.5])
    det = create_detector("simplenet", backbone, width=8)
    record = det.fit(data.train, steps=3, batch_size=2, seed=1, features=features,
                     validation=lambda d: next(scores), select_every=1)
    assert record.selected_step == 2 and [c["validation"] for c in record.checkpoints] == [0.2, 0.9, 0.5]
    two = create_detector("simplenet", backbone, width=8)
    two.fit(data.train, steps=2, batch_size=2, seed=1, features=features)
    assert torch.equal(det.score_maps(data.test[:2]), two.score_maps(data.test[:2]))


def test_validation_set_from_training_images(backbone, data):
    images, masks, labels = synthetic_validation_set(data.train[:4], "draem", seed=0)
    assert images.shape[0] == 4 and labels[:2].sum() == 0 and labels[2:].sum() > 0 and masks[:2].sum() == 0
    det = create_detector("pbas", backbone, width=8)
    record = det.fit(data.train[4:], steps=2, batch_size=2, seed=0, validation=validation_criterion(images, masks, labels),
                     select_every=1)
    assert record.selected_step in (1, 2) and all(0 <= c["validation"] <= 2 for c in record.checkpoints)
    with pytest.raises(ValueError, match="select_every"):
        det.fit(data.train, steps=1, batch_size=2, validation=lambda d: 0.0)


def test_uniad_matched_jitter_has_the_papers_relative_size(backbone, data, features):
    """The jitter's norm relative to the feature's is scale / sqrt(C): matched on C channels it is
    UniAD's 20 / sqrt(272)."""
    det = _fitted("uniad", backbone, data, features, jitter_scale="matched")
    f = torch.randn(64, 128, 4, 4)
    det.channels = 128
    synth = defectforge.create("uniad_jitter", **det.synthesizer_options("uniad_jitter"))
    ratio = float(((synth(f, seed=0).features - f).norm(dim=1) / f.norm(dim=1)).mean())
    assert ratio == pytest.approx(20 / 272 ** 0.5, rel=0.05)
    default = create_detector("uniad", backbone)
    assert default.synthesizer_options("uniad_jitter") == {"scale": 20.0}


def test_centre_bank_closed_form_is_the_official_row_by_row_loop():
    """PBAS.trainer updates each row's nearest centre in turn; the vectorised bank must agree."""
    def row_by_row(batches, m=0.9):
        centres = None
        for batch in batches:
            mean = batch.mean(0).flatten(1).T
            if centres is None:
                centres = mean.clone()
                continue
            nearest = (torch.nn.functional.normalize(mean, dim=1)
                       @ torch.nn.functional.normalize(centres, dim=1).T).argmax(1)
            for j, i in enumerate(nearest.tolist()):
                centres[i] = centres[i] * m + mean[j] * (1 - m)
        return centres

    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 6, 5, 5, generator=g) for _ in range(7)]  # 25 rows onto 25 centres: collisions
    assert torch.allclose(build_centre_bank(batches), row_by_row(batches), atol=1e-6)
