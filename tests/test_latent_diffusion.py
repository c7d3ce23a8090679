"""Latent diffusion models (an auto-encoder's latents denoised by a UNet) in the diffusion samplers.

(``masked_diffusion``'s outside-the-mask, replay and batch-split checks run on latent models too,
in ``test_generative.py``.)

Tiny random ``VQModel`` / ``AutoencoderKL`` + latent ``UNet2DModel`` built in code, saved in
diffusers' ``LDMPipeline`` layout and loaded back (nothing downloaded).
"""

import json

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

import defectforge  # noqa: E402
from defectforge.generative.models import load_diffusion_model, tiny_latent_model  # noqa: E402
from defectforge.generative.sampler import diffusion_sample  # noqa: E402

KINDS = ["vq", "kl"]


@pytest.fixture(scope="module", params=KINDS)
def ldm_dir(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"ldm_{request.param}")
    tiny_latent_model(16, 3, request.param, seed=4).save(folder)
    return folder


def _gens(indices):
    return [torch.Generator().manual_seed(500 + i) for i in indices]


def _images(n=3, size=40):
    g = torch.Generator().manual_seed(9)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("kind", KINDS)
def test_folder_round_trip_is_the_same_model(tmp_path, kind):
    model = tiny_latent_model(16, 3, kind, seed=1)
    model.save(tmp_path)
    sub = {"vq": "vqvae", "kl": "vae"}[kind]
    assert (tmp_path / sub / "diffusion_pytorch_model.safetensors").is_file()
    loaded = load_diffusion_model(tmp_path)
    assert loaded.latent and type(loaded.autoencoder) is type(model.autoencoder)
    assert (loaded.size, loaded.channels, loaded.latent_size, loaded.latent_channels) == \
        (16, 3, 8, model.latent_channels)
    x = _images(2, 16) * 2 - 1
    torch.testing.assert_close(loaded.encode(x), model.encode(x), rtol=0, atol=0)
    a = diffusion_sample(model, _gens(range(2)), scheduler="ddim", num_inference_steps=3)
    b = diffusion_sample(loaded, _gens(range(2)), scheduler="ddim", num_inference_steps=3)
    # same weights; diffusers' loaded UNet may pick another attention kernel, so equal to rounding
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_encode_and_decode_scale_the_autoencoder_latents_as_diffusers_pipelines(kind):
    model = tiny_latent_model(16, 3, kind, seed=2)
    ae, scale = model.autoencoder, model.autoencoder.config.scaling_factor
    x = _images(2, 16) * 2 - 1
    with torch.no_grad():
        enc = ae.encode(x)
        raw = enc.latent_dist.mode() if kind == "kl" else enc.latents
        z = model.encode(x)
        torch.testing.assert_close(z, raw * scale)
        assert z.shape == (2, model.latent_channels, 8, 8)
        torch.testing.assert_close(model.decode(z), ae.decode(raw).sample.clamp(-1, 1))
    # one image at a time (the default) or batched: the same latents up to float rounding
    torch.testing.assert_close(model.encode(x, batch_invariant=False), z)


@pytest.mark.parametrize("kind", KINDS)
def test_latent_masked_sampler_keeps_the_known_latents_outside_the_mask(kind):
    model = tiny_latent_model(16, 3, kind, seed=3)
    known = model.encode(_images(2, 16) * 2 - 1)
    masks = torch.zeros(2, 1, 8, 8)
    masks[:, :, 2:5, 3:7] = 1
    out = diffusion_sample(model, _gens(range(2)), scheduler="ddim", num_inference_steps=4, known=known, masks=masks)
    outside = masks.expand_as(known) == 0
    torch.testing.assert_close(out[outside], known[outside], rtol=0, atol=1e-6)
    assert not torch.allclose(out[~outside], known[~outside])


def test_masked_diffusion_inside_the_mask_is_the_decoded_latent_sample(ldm_dir):
    """Inside the mask: D(z_0) of the latent sampler run on E(normal image), resized back (one sample, no crop)."""
    from defectforge.generative.diffusion import from_model_space, to_model_space
    from torch.nn import functional as F

    x = _images(1, 32)
    synth = defectforge.create("masked_diffusion", model=str(ldm_dir), num_inference_steps=3)
    out = synth(x, seed=2)
    model = synth.model
    known = model.encode(to_model_space(x, model.size, 3))
    m = (F.interpolate(out.masks, size=(8, 8), mode="area") > 0).float()
    z = diffusion_sample(model, [torch.Generator().manual_seed(out.params[0]["noise_seed"])], scheduler="ddim",
                         num_inference_steps=3, known=known, masks=m)
    expected = from_model_space(model.decode(z), 32, 32, 3)
    inside = out.masks.expand_as(x) > 0
    assert inside.any()
    torch.testing.assert_close(out.images[inside], expected[inside], rtol=0, atol=1e-6)


def test_sdas_on_a_latent_model_strength_zero_is_the_decoded_plain_sample(ldm_dir):
    from defectforge.generative.diffusion import from_model_space

    x = _images(3)
    synth = defectforge.create("realnet_sdas", model=str(ldm_dir), strength_range=(0, 0), opacity_range=(1, 1),
                               num_inference_steps=3)
    out = synth(x, seed=1)
    gens = [torch.Generator().manual_seed(p["noise_seed"]) for p in out.params]
    plain = from_model_space(synth.model.decode(diffusion_sample(synth.model, gens, num_inference_steps=3)), 40, 40, 3)
    inside = out.masks.expand_as(x) > 0
    assert inside.any()
    torch.testing.assert_close(out.images[inside], plain[inside], rtol=0, atol=1e-6)
    assert torch.equal(out.images[~inside], x[~inside])
    assert defectforge.from_config(json.loads(json.dumps(synth.config()))).config() == synth.config()


def test_loader_names_what_is_missing_or_wrong_in_a_latent_folder(tmp_path, ldm_dir):
    import shutil

    ae = "vqvae" if (ldm_dir / "vqvae").is_dir() else "vae"
    broken = tmp_path / "broken"
    shutil.copytree(ldm_dir, broken)
    (broken / ae / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{ae}.diffusion_pytorch_model.safetensors"):
        load_diffusion_model(broken)
    shutil.rmtree(broken)
    shutil.copytree(ldm_dir, broken)
    shutil.rmtree(broken / "scheduler")
    with pytest.raises(FileNotFoundError, match="scheduler"):
        load_diffusion_model(broken)
    shutil.rmtree(broken)
    shutil.copytree(ldm_dir, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(FileNotFoundError, match=r"unet.config\.json"):
        load_diffusion_model(broken)
    shutil.copytree(ldm_dir / "unet", broken / "unet")
    (broken / ("vae" if ae == "vqvae" else "vqvae")).mkdir()
    with pytest.raises(ValueError, match="both vqvae/ and vae/"):
        load_diffusion_model(broken)
    shutil.rmtree(broken / ("vae" if ae == "vqvae" else "vqvae"))
    config = json.loads((broken / "unet" / "config.json").read_text())
    (broken / "unet" / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(ValueError, match="UNet2DConditionModel"):
        load_diffusion_model(broken)


def test_a_unet_that_does_not_fit_the_autoencoder_is_refused():
    from defectforge.generative.models import DiffusionModel, build_unet, default_scheduler

    vq = tiny_latent_model(16, 3, "vq").autoencoder
    with pytest.raises(ValueError, match="same latent diffusion model"):
        DiffusionModel(build_unet(8, 4, "tiny"), default_scheduler(), autoencoder=vq)


def test_generate_command_runs_a_latent_folder(tmp_path, ldm_dir):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app
    from defectforge.io.images import write_image

    _register_commands()
    src = tmp_path / "good"
    g = torch.Generator().manual_seed(0)
    for i in range(2):
        write_image(src / f"{i}.png", (torch.rand(32, 32, 3, generator=g) * 255).byte().numpy())
    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(src), str(tmp_path / "out"), "-m", "masked_diffusion",
                                 "--model", str(ldm_dir), "--set", "num_inference_steps=2", "--count", "2", "-q"])
    assert result.exit_code == 0, result.output
    manifest = (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()
    assert len(manifest) == 2
    twice = runner.invoke(app, ["generate", str(src), str(tmp_path / "o2"), "-m", "masked_diffusion",
                                "--model", str(ldm_dir), "--set", f"model={ldm_dir}", "--count", "2", "-q"])
    assert twice.exit_code != 0 and "not both" in twice.output
    missing = runner.invoke(app, ["generate", str(src), str(tmp_path / "o3"), "-m", "masked_diffusion",
                                  "--model", str(tmp_path / "nowhere"), "--count", "2", "-q"])
    assert missing.exit_code != 0 and "nowhere does not exist" in missing.output
    none = runner.invoke(app, ["generate", str(src), str(tmp_path / "o4"), "-m", "masked_diffusion", "--count", "2", "-q"])
    assert none.exit_code != 0 and "--model PATH" in none.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU here")
def test_latent_model_on_cuda_matches_the_cpu_run_to_rounding(ldm_dir):
    x = _images(2)
    cpu = defectforge.create("masked_diffusion", model=str(ldm_dir), num_inference_steps=3)(x, seed=0)
    gpu = defectforge.create("masked_diffusion", model=str(ldm_dir), num_inference_steps=3, device="cuda")(x, seed=0)
    assert gpu.images.device == x.device
    torch.testing.assert_close(gpu.images, cpu.images, rtol=0, atol=2e-2)
    assert torch.equal(gpu.masks, cpu.masks)


def test_device_argument_runs_the_model_there_and_returns_to_the_images_device(ldm_dir):
    x = _images(2)
    default = defectforge.create("realnet_sdas", model=str(ldm_dir), num_inference_steps=2)
    on_cpu = defectforge.create("realnet_sdas", model=str(ldm_dir), num_inference_steps=2, device="cpu")
    assert on_cpu.config()["device"] == "cpu"
    assert torch.equal(default(x, seed=3).images, on_cpu(x, seed=3).images)
