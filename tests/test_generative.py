"""The diffusion sampler core, the diffusion synthesizers, the trainers and the model loader.

Tiny random models built in code (no files downloaded); the registry-wide matrix also runs
``realnet_sdas`` and ``masked_diffusion`` with such a model (``conftest.method_for_tests``).
"""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

import defectforge  # noqa: E402
from defectforge.generative.models import load_diffusion_model, tiny_latent_model, tiny_unet  # noqa: E402
from defectforge.generative.sampler import diffusion_sample  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return tiny_unet(16, 3, seed=1)


def _gens(indices):
    return [torch.Generator().manual_seed(1000 + i) for i in indices]


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_strength_zero_is_the_plain_sampler_bit_for_bit(model, scheduler):
    plain = diffusion_sample(model, _gens(range(3)), scheduler=scheduler, num_inference_steps=4)
    zero = diffusion_sample(model, _gens(range(3)), scheduler=scheduler, num_inference_steps=4,
                            strength=torch.zeros(3))
    assert torch.equal(plain, zero)
    inflated = diffusion_sample(model, _gens(range(3)), scheduler=scheduler, num_inference_steps=4,
                                strength=torch.full((3,), 0.15))
    assert not torch.equal(plain, inflated)


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim"])
def test_variance_is_inflated_by_exactly_sqrt_1_plus_s(model, scheduler):
    s = torch.tensor([0.0, 0.1, 0.5, 3.0])
    base, infl = [], []
    diffusion_sample(model, _gens(range(4)), scheduler=scheduler, num_inference_steps=5, trace=base)
    diffusion_sample(model, _gens(range(4)), scheduler=scheduler, num_inference_steps=5, strength=s, trace=infl)
    # first step: same x_T, same model output, so the same mean; the noise term scales by sqrt(1+s)
    (t0, mean0, x0), (t1, mean1, x1) = base[0], infl[0]
    assert t0 == t1 and torch.equal(mean0, mean1)
    noise0, noise1 = (x0 - mean0).flatten(1), (x1 - mean1).flatten(1)
    assert noise0.abs().amax() > 1e-3  # the step does add noise
    ratio = (noise1 * noise0).sum(1) / (noise0 * noise0).sum(1)
    torch.testing.assert_close(ratio, torch.sqrt(1 + s), rtol=1e-5, atol=0)
    torch.testing.assert_close(noise1, noise0 * torch.sqrt(1 + s)[:, None], rtol=1e-4, atol=1e-6)


def test_masked_sampler_outside_follows_the_known_image_and_ends_on_it(model):
    known = torch.rand(2, 3, 16, 16) * 2 - 1
    masks = torch.zeros(2, 1, 16, 16)
    masks[:, :, 4:10, 5:12] = 1
    out = diffusion_sample(model, _gens(range(2)), scheduler="ddim", num_inference_steps=4, known=known, masks=masks)
    outside = masks.expand_as(known) == 0
    torch.testing.assert_close(out[outside], known.clamp(-1, 1)[outside], rtol=0, atol=1e-6)
    assert not torch.allclose(out[~outside], known[~outside])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    tiny_unet(16, 3, seed=2).save(folder)
    return folder


@pytest.fixture(scope="module", params=["pixel", "vq", "kl"])
def any_model_dir(request, tmp_path_factory):
    """A pixel-space model folder, and latent diffusion folders with a VQ and a KL auto-encoder."""
    folder = tmp_path_factory.mktemp(f"model_{request.param}")
    if request.param == "pixel":
        tiny_unet(16, 3, seed=2).save(folder)
    else:
        tiny_latent_model(16, 3, request.param, seed=4).save(folder)
    return folder


def _images():
    from defectforge.sources.procedural import surface

    imgs = [surface(k, 40, seed=i) for i, k in enumerate(["metal", "fabric", "wood", "tiles"])]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("kwargs", [{}, {"crop_context": 1.5, "min_crop": 8},
                                    {"free_steps": 1, "dilated_steps": 1, "dilation": 1},
                                    {"mask_source": "defectmaker"}])
def test_masked_diffusion_changes_only_the_mask_and_replays(any_model_dir, kwargs):
    x = _images()
    synth = defectforge.create("masked_diffusion", model=str(any_model_dir), num_inference_steps=3, **kwargs)
    out = synth(x, seed=5)
    assert (out.labels == 1).all()
    changed = (out.images != x).any(1, keepdim=True)
    assert not (changed & (out.masks == 0)).any(), "a pixel outside the mask changed"
    assert changed.any()
    again = synth.replay(x, out.params)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)
    part = synth(x[1:3], seed=5, indices=[1, 2])
    assert torch.equal(part.images, out.images[1:3]) and part.params == out.params[1:3]


def test_sdas_strength_zero_opacity_one_is_the_model_sample_inside_the_mask(model_dir):
    from defectforge.generative.diffusion import from_model_space

    x = _images().float() / 255
    synth = defectforge.create("realnet_sdas", model=str(model_dir), strength_range=(0, 0), opacity_range=(1, 1),
                               num_inference_steps=3)
    out = synth(x, seed=1)
    gens = [torch.Generator().manual_seed(p["noise_seed"]) for p in out.params]
    plain = from_model_space(diffusion_sample(synth.model, gens, num_inference_steps=3), 40, 40, 3)
    inside = out.masks.expand_as(x) > 0
    assert inside.any()
    torch.testing.assert_close(out.images[inside], plain[inside], rtol=0, atol=1e-6)  # x + 1 * (g - x)
    assert torch.equal(out.images[~inside], x[~inside])


def test_model_argument_is_required_and_loader_names_missing_files(tmp_path, model_dir):
    with pytest.raises(ValueError, match="model=PATH"):
        defectforge.create("realnet_sdas")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_diffusion_model(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    (broken / "unet").mkdir(parents=True)
    (broken / "unet" / "config.json").write_text((model_dir / "unet" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_diffusion_model(broken)
    (broken / "text_encoder").mkdir()
    with pytest.raises(ValueError, match="prompt_inpaint"):
        load_diffusion_model(broken)
    loaded = load_diffusion_model(model_dir)
    assert loaded.size == 16 and loaded.channels == 3
    synth = defectforge.create("realnet_sdas", model=str(model_dir), num_inference_steps=2)
    assert defectforge.from_config(json.loads(json.dumps(synth.config()))).config() == synth.config()


def test_methods_needing_a_model_are_left_out_of_all():
    from defectforge.cli.common import available_image_methods

    assert "realnet_sdas" in defectforge.list_methods(family="diffusion")
    assert "realnet_sdas" not in available_image_methods() and "draem" in available_image_methods()


# --- training ------------------------------------------------------------------------------
def _write_category(root, n_normal=6, n_defect=3):
    from defectforge.io.images import write_image

    g = np.random.default_rng(0)
    for i in range(n_normal):
        write_image(root / "train" / "good" / f"{i:03d}.png", (120 + g.normal(0, 8, (24, 28, 1))).clip(0, 255).astype(np.uint8))
    write_image(root / "test" / "good" / "000.png", np.full((24, 28, 1), 120, np.uint8))
    for kind in ("dark", "scratch"):
        for i in range(n_defect):
            img = (120 + g.normal(0, 8, (24, 28, 1))).clip(0, 255).astype(np.uint8)
            mask = np.zeros((24, 28), np.uint8)
            mask[5 + i:12 + i, 6:10 + 2 * i] = 255
            img[mask > 0] = 30 if kind == "dark" else 230
            write_image(root / "test" / kind / f"{i:03d}.png", img)
            write_image(root / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    return root


def _weights(out):
    from defectforge.generative.train import load_checkpoint_state

    tensors, meta = load_checkpoint_state(out / "checkpoint.safetensors")
    return tensors, int(meta["step"])


@pytest.mark.parametrize("kind", ["ddpm", "gan"])
def test_training_resumes_to_the_same_weights_as_an_uninterrupted_run(tmp_path, kind):
    from defectforge.generative.train import TrainConfig, train

    data = _write_category(tmp_path / "cat")
    common = dict(kind=kind, data=str(data), size=16, batch_size=4, width="tiny", checkpoint_every=2, seed=3)
    full = train(TrainConfig(out=str(tmp_path / "full"), steps=4, preview_every=4, **common), progress=False)
    assert full["steps_done"] == 4
    train(TrainConfig(out=str(tmp_path / "part"), steps=2, preview_every=0, **common), progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(TrainConfig(out=str(tmp_path / "part"), steps=4, preview_every=0, **common), progress=False)
    resumed = train(TrainConfig(out=str(tmp_path / "part"), steps=4, preview_every=0, **common), progress=False,
                    resume=True)
    assert resumed["resumed_from"] == 2 and resumed["steps_done"] == 4
    a, step_a = _weights(tmp_path / "full")
    b, step_b = _weights(tmp_path / "part")
    assert step_a == step_b == 4 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(k.startswith(("ema.", "G_ema.")) for k in a), "no EMA weights in the checkpoint"
    assert (tmp_path / "full" / "previews" / "step_0000004.png").exists()
    if kind == "ddpm":  # the run's model folder loads and samples
        synth = defectforge.create("realnet_sdas", model=str(tmp_path / "full"), num_inference_steps=2)
        assert synth(torch.rand(1, 1, 20, 20), seed=0).images.shape == (1, 1, 20, 20)
    else:  # the run's generator loads into gan_transplant and its defects have masks
        synth = defectforge.create("gan_transplant", model=str(tmp_path / "full"), max_attempts=50)
        out = synth(torch.full((2, 1, 40, 40), 120, dtype=torch.uint8), seed=0)
        assert out.masks.flatten(1).amax(1).tolist() == [1.0, 1.0]
        split = json.loads((tmp_path / "full" / "split.json").read_text())
        assert {k: len(v) for k, v in split["train"].items()} == {"dark": 1, "scratch": 1}
        assert {k: len(v) for k, v in split["test"].items()} == {"dark": 2, "scratch": 2}


def test_train_command_budget_and_errors(tmp_path):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    data = _write_category(tmp_path / "cat")
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "ddpm", str(data), str(out), "--size", "16", "--width", "tiny",
                                 "--steps", "1000", "--max-minutes", "0", "--batch-size", "2", "--preview-every", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "train.json").read_text())
    assert summary["steps_done"] == 1 and summary["stopped_by_budget"]
    result = runner.invoke(app, ["train", "ddpm", str(data), str(out), "--size", "16"])
    assert result.exit_code == 2 and "--resume" in result.output
    result = runner.invoke(app, ["train", "ddpm", str(data), str(out), "--size", "32", "--resume"])
    assert result.exit_code == 2 and "size was 16" in result.output
    result = runner.invoke(app, ["train", "gan", str(tmp_path / "cat" / "train" / "good"), str(tmp_path / "g")])
    assert result.exit_code == 2 and "MVTec" in result.output


def test_checkpoints_never_touch_another_writers_temporary_file(tmp_path):
    # Two processes saving to one cache (two benchmarks training the same model) once shared the
    # fixed name ``<name>.tmp``: one renamed the other's half-written file into place.
    from defectforge.generative.gan import DefectGenerator, save_generator
    from defectforge.generative.gan_transplant import load_defect_gan
    from defectforge.generative.train import load_checkpoint_state, save_checkpoint

    ckpt, gen = tmp_path / "checkpoint.safetensors", tmp_path / "model" / "generator.safetensors"
    gen.parent.mkdir()
    for target in (ckpt, gen):  # the other writer's file, mid-write
        target.with_name(target.name + ".tmp").write_bytes(b"another process is writing this")
    linear = torch.nn.Linear(2, 3)
    save_checkpoint(ckpt, 7, {"net": linear}, {}, {"kind": "test"})
    save_generator(gen, DefectGenerator(16, 1, 1, 8), ["blob"], {"blob": [[4, 4]]})
    for target in (ckpt, gen):
        assert target.with_name(target.name + ".tmp").read_bytes() == b"another process is writing this"
    tensors, meta = load_checkpoint_state(ckpt)
    assert meta["step"] == "7" and torch.equal(tensors["net.weight"], linear.weight.detach())
    assert load_defect_gan(tmp_path).types == ["blob"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["checkpoint.safetensors", "checkpoint.safetensors.tmp", "model", "generator.safetensors",
         "generator.safetensors.tmp"])
