"""The stream object, anomalib's augmenter adapter (against a stand-in; anomalib itself: tests/integration) and the
per-sample transforms."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

import defectforge
from defectforge.integrations.anomalib import AnomalibAugmenter
from defectforge.integrations.transforms import AlbumentationsSynthesis, SynthesizeTransform
from defectforge.pipelines.stream import AnomalyStream


def _images(b=4, c=3, size=48, seed=0):
    return torch.rand(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_stream_draws_fresh_anomalies_each_call_and_resumes():
    synth = defectforge.create("cutpaste", anomaly_probability=1.0)
    x = _images()
    s = defectforge.stream(synth, seed=5)
    a, b = s(x), s(x)
    assert not torch.equal(a.masks, b.masks)  # a plain synth(x, seed=5) repeats itself
    assert torch.equal(b.images, synth(x, seed=5, indices=[4, 5, 6, 7]).images)
    state = s.state_dict()
    c = s(x)
    again = AnomalyStream(synth, seed=0)
    again.load_state_dict(state)
    assert torch.equal(again(x).images, c.images)
    with pytest.raises(TypeError, match="indices"):
        s(x, indices=[0, 1, 2, 3])


def test_stream_ranks_take_disjoint_indices():
    shares = [AnomalyStream("cutout", rank=r, world_size=3) for r in range(3)]
    seen = []
    for s in shares:
        for n in (2, 3):
            seen += s.indices(n)
            s.position += n
    assert sorted(seen[:2] + seen[5:7] + seen[10:12]) == list(range(6))
    assert len(set(seen)) == len(seen)
    with pytest.raises(ValueError, match="rank"):
        AnomalyStream("cutout", rank=3, world_size=3)


class _DraemLike(torch.nn.Module):
    """Stand-in with anomalib 2.x Draem's training-step contract (augmenter call, focal-style target)."""

    def __init__(self, augmenter):
        super().__init__()
        self.augmenter = augmenter
        self.model = torch.nn.Conv2d(3, 2, 3, padding=1)

    def training_step(self, batch):
        input_image = batch.image
        augmented_image, anomaly_mask = self.augmenter(input_image)
        prediction = self.model(augmented_image)
        target = anomaly_mask.squeeze(1).long()  # as anomalib's focal loss takes it
        return torch.nn.functional.cross_entropy(prediction.float(), target) + (augmented_image - input_image).abs().mean()


def test_adapter_trains_a_draem_like_step_and_checkpoints_its_position():
    module = _DraemLike(AnomalibAugmenter("cutpaste", seed=3))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    images = _images().requires_grad_(True)
    loss = module.training_step(types.SimpleNamespace(image=images))
    loss.backward()
    opt.step()
    assert not module.augmenter(images)[0].requires_grad  # the input was detached
    assert module.model.weight.grad is not None
    assert module.augmenter.last_indices == [4, 5, 6, 7]  # the check above was call 2
    module.training_step(types.SimpleNamespace(image=_images()))
    assert module.augmenter.last_indices == [8, 9, 10, 11]
    checkpoint = module.state_dict()
    assert int(checkpoint["augmenter.position"]) == 12
    restored = _DraemLike(AnomalibAugmenter("cutpaste", seed=3))
    restored.load_state_dict(checkpoint)
    _, mask = restored.augmenter(_images())
    assert restored.augmenter.last_indices == [12, 13, 14, 15]
    direct = defectforge.create("cutpaste", anomaly_probability=1.0)(_images(), seed=3, indices=[12, 13, 14, 15])
    assert torch.equal(mask, direct.masks)


def test_adapter_casts_dtypes_undoes_normalisation_and_offsets_by_rank():
    x = _images()
    ref = AnomalibAugmenter("cutout", seed=1)(x)
    half, mask = AnomalibAugmenter("cutout", seed=1)(x.to(torch.bfloat16))
    assert half.dtype == mask.dtype == torch.bfloat16 and mask.shape == (4, 1, 48, 48)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    normed, mask_n = AnomalibAugmenter("cutout", seed=1, mean=mean, std=std)((x - m) / s)
    assert torch.equal(mask_n, ref[1])
    assert torch.allclose(normed * s + m, ref[0], atol=1e-5)
    second = AnomalibAugmenter("cutout", seed=1, rank=1, world_size=2)
    second(x)
    assert second.last_indices == [1, 3, 5, 7]
    with pytest.raises(TypeError, match="float"):
        AnomalibAugmenter("cutout")(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_transforms_are_seeded_per_sample():
    synth = defectforge.create("cutpaste", anomaly_probability=1.0)
    x = _images(1)[0]
    t = SynthesizeTransform(synth, seed=2)
    image, mask, label = t(x, index=9)
    ref = synth(x[None], seed=2, indices=[9])
    assert torch.equal(image, ref.images[0]) and torch.equal(mask, ref.masks[0]) and label == 1
    given = torch.zeros(1, 48, 48)
    given[0, :2, :2] = 1
    sample = t({"image": x, "mask": given, "index": 9})
    assert torch.equal(sample["mask"], torch.maximum(ref.masks[0], given))
    # without an index: calls are numbered 0, 1, 2 ... in this process
    counted = SynthesizeTransform(synth, seed=2)
    _, first, _ = counted(x)
    _, second, _ = counted(x)
    assert torch.equal(first, synth(x[None], seed=2, indices=[0]).masks[0])
    assert torch.equal(second, synth(x[None], seed=2, indices=[1]).masks[0])
    alb = AlbumentationsSynthesis(synth, seed=2)
    grey = (np.random.default_rng(0).random((48, 48)) * 255).astype(np.uint8)
    out = alb(image=grey, index=4, extra="kept")
    ref = synth(torch.from_numpy(grey)[None, None], seed=2, indices=[4])
    assert out["image"].shape == (48, 48) and (out["image"] == ref.images[0, 0].numpy()).all()
    assert (out["mask"] == ref.masks[0, 0].numpy().astype(np.uint8)).all() and out["extra"] == "kept"
