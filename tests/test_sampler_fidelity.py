"""The diffusion samplers follow their official code (issue 22, items 7 and 8): RealNet's 20-step
respaced ancestral sampler, AnomalyDiffusion's adaptive mask, AdaBLDM's stages. Tiny random
models built in code."""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")

import defectforge  # noqa: E402
from defectforge.generative.models import tiny_latent_model, tiny_unet  # noqa: E402
from defectforge.generative.sampler import adaptive_radius, diffusion_sample  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_unet(16, 3, seed=1)


def _gens(n, base=0):
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def test_realnet_default_is_the_20_step_respaced_ancestral_sampler(model, tmp_path):
    model.save(tmp_path / "m")
    synth = defectforge.create("realnet_sdas", model=str(tmp_path / "m"))
    assert synth.num_inference_steps == 20 and synth.scheduler == "ddpm"
    steps, trace = [], []
    diffusion_sample(model, _gens(4), num_inference_steps=synth.num_inference_steps, timesteps_out=steps, trace=trace)
    assert steps == list(range(950, -1, -50)), "guided-diffusion's space_timesteps(1000, 'ddim20')"
    acp = model.scheduler.alphas_cumprod
    for t, mean, x_prev in trace[:-1]:  # each step's noise has the respaced posterior variance
        prev = t - 50
        var = (1 - acp[prev]) / (1 - acp[t]) * (1 - acp[t] / acp[prev])
        assert float((x_prev - mean).std()) == pytest.approx(float(var.sqrt()), rel=0.1)
    # 1000-step sampling would use beta_t's much smaller posterior variance at the same t
    t = 500
    assert float((1 - acp[t] / acp[t - 1]).sqrt()) < 0.5 * float(
        ((1 - acp[t - 50]) / (1 - acp[t]) * (1 - acp[t] / acp[t - 50])).sqrt())


def test_inference_steps_are_capped_at_the_training_steps():
    short = tiny_unet(16, 3, num_train_timesteps=10)
    steps = []
    diffusion_sample(short, _gens(1), num_inference_steps=20, timesteps_out=steps)
    assert len(steps) == 10


def test_adaptive_mask_dilates_by_a_radius_shrinking_with_t():
    big = tiny_unet(32, 1, seed=2)
    known = torch.zeros(1, 1, 32, 32)
    masks = torch.zeros(1, 1, 32, 32)
    masks[..., 16, 16] = 1
    stages, steps = [], []
    diffusion_sample(big, _gens(1), scheduler="ddim", num_inference_steps=10, eta=1.0, known=known, masks=masks,
                     adaptive_masks=True, stages_out=stages, timesteps_out=steps)
    radii = []
    for k, (stage, m) in enumerate(stages[:-1]):
        r = adaptive_radius(steps[k + 1], 10, 32)
        assert stage == "exact" and torch.equal(m, F.max_pool2d(masks, 2 * r + 1, 1, r) if r else masks)
        radii.append(int(m.sum().sqrt()) // 2)
    assert radii[0] > radii[-1] and radii == sorted(radii, reverse=True) and radii[0] >= 6
    assert torch.equal(stages[-1][1], masks), "the last step blends with the exact mask"


def test_adabldm_preset_runs_free_dilated_then_pixel_stages():
    lat = tiny_latent_model(16, 3, "kl", seed=3)
    synth_cls = defectforge.method_info("masked_diffusion_adabldm")
    assert synth_cls.defaults["num_inference_steps"] == 50 and synth_cls.defaults["eta"] == 0.0
    known = lat.encode(torch.zeros(1, 3, 16, 16))
    g = lat.latent_size
    masks = torch.zeros(1, 1, g, g)
    masks[..., 3:5, 3:5] = 1
    dilated = F.max_pool2d(masks, 5, 1, 2)
    calls = []

    def pixel_blend(pred_x0):
        calls.append(pred_x0.shape)
        return pred_x0

    stages = []
    d = synth_cls.defaults
    diffusion_sample(lat, _gens(1), scheduler="ddim", num_inference_steps=d["num_inference_steps"], eta=d["eta"],
                     known=known, masks=masks, dilated_masks=dilated, free_steps=d["free_steps"],
                     dilated_steps=d["dilated_steps"], pixel_steps=d["pixel_steps"], pixel_blend=pixel_blend,
                     stages_out=stages)
    names = [s for s, _ in stages]
    assert names == ["free"] * 26 + ["dilated"] * 20 + ["pixel"] * 4
    assert all(torch.equal(m, dilated) for s, m in stages if s == "dilated") and len(calls) == 4


def test_adabldm_preset_on_a_latent_model_keeps_the_outside(tmp_path):
    tiny_latent_model(16, 3, "vq", seed=5).save(tmp_path / "ldm")
    synth = defectforge.create("masked_diffusion_adabldm", model=str(tmp_path / "ldm"), num_inference_steps=10,
                               free_steps=3, dilated_steps=4, pixel_steps=3)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out = synth(x, seed=0)
    assert not ((out.images != x).any(1, keepdim=True) & (out.masks == 0)).any()
    assert torch.equal(synth.replay(x, out.params).images, out.images)
