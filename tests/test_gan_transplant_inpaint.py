"""gan_transplant (a defect GAN's crops transplanted) and prompt_inpaint (Stable Diffusion inpainting).

Tiny random models built in code (no files downloaded); the registry-wide matrix also runs both
with such a model (``conftest.method_for_tests``).
"""

import json

import pytest
import torch

pytest.importorskip("safetensors")

import defectforge  # noqa: E402
from defectforge.generative.gan import mask_of  # noqa: E402
from defectforge.generative.gan_transplant import load_defect_gan, tiny_gan  # noqa: E402


def _normal(b=3, size=48):
    g = torch.Generator().manual_seed(0)
    return (120 + 10 * torch.randn(b, 3, size, size, generator=g)).clamp(0, 255).to(torch.uint8)


# --- the GAN's masks ---------------------------------------------------------------------------
def test_mask_is_where_the_mask_logit_is_positive_for_fixed_weights():
    """A generator whose mask logit is its image channel's pre-activation: the mask is exactly the bright pixels."""
    gan = tiny_gan(16, 1, seed=2)
    out_conv = gan.generator.out
    with torch.no_grad():
        out_conv.weight[1] = out_conv.weight[0]
        out_conv.bias[1] = out_conv.bias[0]
    crop, mask = gan.generate("blob", 5)
    assert mask.any() and not mask.all()
    assert ((crop[..., 0] > 127.5) == mask).all()  # tanh(v) > 0  <=>  v > 0  <=>  the mask logit > 0
    raw = torch.zeros(1, 2, 3, 3)
    raw[0, 1, 1, 1] = 0.5
    assert mask_of(raw)[0, 0].sum() == 1


def test_a_generator_with_only_empty_masks_is_an_error_that_says_so():
    gan = tiny_gan(16, 3)
    with torch.no_grad():
        gan.generator.out.weight[-1].zero_()
        gan.generator.out.bias[-1].fill_(-1.0)
    synth = defectforge.create("gan_transplant", model=gan, max_attempts=3)
    with pytest.raises(ValueError, match="empty mask for 3 latents.*train it longer"):
        synth(_normal(1), seed=0)


def test_gan_transplant_mask_is_the_changed_pixels_and_replays(tmp_path):
    gan = tiny_gan(16, 3, seed=1)
    file = gan.save(tmp_path / "run")
    synth = defectforge.create("gan_transplant", model=str(tmp_path / "run"))
    x = _normal(4)
    out = synth(x, seed=7)
    changed = (out.images != x).any(1, keepdim=True)
    assert out.masks.flatten(1).amax(1).tolist() == [1.0] * 4
    assert torch.equal(changed.float(), out.masks)
    assert all(p["entry"].startswith("gan:") and p["defect_type"] in ("blob", "scratch") for p in out.params)
    assert torch.equal(synth.replay(x, out.params).images, out.images)
    alone = synth(x[2:3], seed=7, indices=[2])  # a sample does not depend on its batch
    assert torch.equal(alone.images[0], out.images[2])
    rebuilt = defectforge.from_config(json.loads(json.dumps(synth.config())))
    assert torch.equal(rebuilt(x, seed=7).images, out.images)
    assert load_defect_gan(file).types == ["blob", "scratch"]


def test_gan_loader_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="generator.safetensors"):
        defectforge.create("gan_transplant", model=str(tmp_path))
    with pytest.raises(ValueError, match="model=PATH"):
        defectforge.create("gan_transplant")


# --- prompt_inpaint ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd_folder():
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    from conftest import tiny_sd_inpaint_folder

    return tiny_sd_inpaint_folder()


def test_prompt_inpaint_changes_only_the_mask_and_replays(sd_folder):
    synth = defectforge.create("prompt_inpaint_sdinpaint", model=sd_folder, num_inference_steps=2, object_name="tile",
                               defects=["crack", "hole"])
    x = torch.rand(3, 3, 24, 24)
    out = synth(x, seed=1)
    assert all(p["prompt"] in ("a tile with a crack", "a tile with a hole") for p in out.params)
    outside = out.masks.expand_as(x) == 0
    assert torch.equal(out.images[outside], x[outside])  # the final blend keeps every outside pixel
    assert (out.images != x).any()
    assert torch.equal(synth.replay(x, out.params).images, out.images)
    alone = synth(x[1:2], seed=1, indices=[1])
    assert torch.equal(alone.images[0], out.images[1])
    grey = synth(x[:1, :1], seed=1)  # grey images: RGB in the pipeline, luma back
    assert grey.images.shape == (1, 1, 24, 24)


def test_prompt_inpaint_names_a_missing_file_and_the_pixel_loader_points_to_it(sd_folder, tmp_path):
    import shutil

    from defectforge.generative.models import load_diffusion_model

    broken = tmp_path / "sd"
    shutil.copytree(sd_folder, broken)
    (broken / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="text_encoder/model.safetensors"):
        defectforge.create("prompt_inpaint_sdinpaint", model=str(broken))
    (broken / "unet" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="unet/config.json"):
        defectforge.create("prompt_inpaint_sdinpaint", model=str(broken))
    with pytest.raises(ValueError, match="prompt_inpaint"):
        load_diffusion_model(sd_folder)


def test_prompt_inpaint_device_passes_through(sd_folder):
    synth = defectforge.create("prompt_inpaint_sdinpaint", model=sd_folder, num_inference_steps=2, device="cpu")
    assert synth.device == torch.device("cpu") and synth.config()["device"] == "cpu"
    if torch.cuda.is_available():  # the same code on a GPU where there is one
        cuda = defectforge.create("prompt_inpaint_sdinpaint", model=sd_folder, num_inference_steps=2, device="cuda")
        x = torch.rand(1, 3, 24, 24)
        out = cuda(x, seed=0)
        assert out.images.device == x.device
        assert torch.equal(out.images[out.masks.expand_as(x) == 0], x[out.masks.expand_as(x) == 0])


# --- the few-shot benchmark with methods that need a model -------------------------------------
def test_few_shot_benchmark_runs_methods_given_a_model(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app
    from defectforge.detectors import BenchmarkConfig
    from defectforge.detectors.benchmark.fewshot import run_few_shot_benchmark
    from test_realdefect import make_category

    cat = make_category(tmp_path / "cat", per_type=6)
    tiny_gan(16, 3, types=("hole", "scratch"), seed=1).save(tmp_path / "gan")
    cfg = BenchmarkConfig(backbone="tiny", size=32, steps=2, batch_size=4, width=8)
    options = {"gan_transplant": {"model": str(tmp_path / "gan")}}
    result = run_few_shot_benchmark(cat, "1/3", ["gan_transplant"], [0], tmp_path / "bench", cfg, baseline=False,
                                    log=lambda m: None, method_options=options)
    run = json.loads((tmp_path / "bench" / result["run_dir"].split("/")[-1] / "gan_transplant" / "seed0.json").read_text())
    assert set(run["per_type"]) == {"hole", "scratch"}
    with pytest.raises(ValueError, match="model=PATH"):  # without a model: the error says what to pass
        run_few_shot_benchmark(cat, "1/3", ["gan_transplant"], [0], tmp_path / "b2", cfg, baseline=False,
                               log=lambda m: None)
    with pytest.raises(ValueError, match="does not include"):
        run_few_shot_benchmark(cat, "1/3", ["copy_paste"], [0], tmp_path / "b3", cfg, baseline=False,
                               log=lambda m: None, method_options=options)
    _register_commands()
    result = CliRunner().invoke(app, ["benchmark", str(cat), "--set", "gan_transplant.model=x"])
    assert result.exit_code == 2 and "--few-shot" in result.output
    result = CliRunner().invoke(app, ["benchmark", str(cat), "--few-shot", "1/3", "--set", "model=x"])
    assert result.exit_code == 2 and "METHOD.KEY=VALUE" in result.output


# --- prompt_inpaint: AnomalyAny's normal-image conditioning and latent blending ----------------
@pytest.fixture(scope="module")
def t2i_folder():
    pytest.importorskip("transformers")
    pytest.importorskip("diffusers")
    from conftest import tiny_sd_text2img_folder

    return tiny_sd_text2img_folder()


@pytest.mark.parametrize("strength, runs", [(0.3, 3), (0.5, 5), (1.0, 10)])
def test_prompt_inpaint_runs_only_the_last_strength_of_the_schedule(t2i_folder, strength, runs, monkeypatch):
    """With N = 10 steps and strength s the UNet sees only the last int(N * s) timesteps, starting
    from the normal latent noised to the first of them (t_start = N - int(N * s))."""
    synth = defectforge.create("prompt_inpaint", model=t2i_folder, num_inference_steps=10, strength=strength)
    unet = synth.model.unet
    seen, starts = [], []
    forward = unet.forward

    def spy(sample, t, *args, **kwargs):
        seen.append(int(t))
        return forward(sample, t, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", spy)
    scheduled = []
    known = torch.zeros(1, 3, 16, 16)
    m_lat = torch.ones(1, 1, 8, 8)
    synth._generate(known, m_lat, "a tile with a crack", torch.Generator().manual_seed(0), "cpu", scheduled)
    from diffusers import DDIMScheduler

    full = DDIMScheduler.from_config(synth.model.scheduler.config)
    full.set_timesteps(10)
    assert seen == scheduled == [int(t) for t in full.timesteps][10 - runs:]
    assert synth.start_index() == 10 - runs


def test_prompt_inpaint_starts_from_the_noised_normal_latent(t2i_folder):
    """The fewer steps run, the closer the result stays to the normal image (empty mask = all latents
    blended back, so compare the generated inside with a full mask)."""
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    from defectforge.generative.diffusion import to_model_space

    known = to_model_space(x, 16, 3)
    m_lat = torch.ones(1, 1, 8, 8)
    errors = []
    for strength in (0.1, 1.0):
        synth = defectforge.create("prompt_inpaint", model=t2i_folder, num_inference_steps=10, strength=strength)
        gen = synth._generate(known, m_lat, "a tile with a crack", torch.Generator().manual_seed(0), "cpu")
        vae = synth.model.vae
        recon = vae.decode(vae.encode(known).latent_dist.mean).sample.clamp(-1, 1)
        errors.append(float((gen - recon).abs().mean()))
    assert errors[0] < errors[1]


def test_prompt_inpaint_changes_only_the_mask_replays_and_names_the_variant(t2i_folder, sd_folder):
    synth = defectforge.create("prompt_inpaint", model=t2i_folder, num_inference_steps=4, strength=0.5,
                               object_name="tile", defects=["crack"])
    x = torch.rand(2, 3, 24, 24)
    out = synth(x, seed=2)
    outside = out.masks.expand_as(x) == 0
    assert torch.equal(out.images[outside], x[outside]) and (out.images != x).any()
    assert torch.equal(synth.replay(x, out.params).images, out.images)
    assert torch.equal(synth(x[1:], seed=2, indices=[1]).images[0], out.images[1])
    with pytest.raises(ValueError, match="prompt_inpaint_sdinpaint"):
        defectforge.create("prompt_inpaint", model=sd_folder)
    with pytest.raises(ValueError, match="strength"):
        defectforge.create("prompt_inpaint", model=t2i_folder, num_inference_steps=10, strength=0.05)
