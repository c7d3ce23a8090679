import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def rgb_batch():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(4, 3, 64, 64, generator=g) * 255).to(torch.uint8)


@pytest.fixture
def surface_batch():
    from defectforge.sources.procedural import surface

    imgs = [surface(k, 96, seed=i) for i, k in enumerate(["metal", "fabric", "wood", "tiles"])]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).contiguous()


_FOLDERS: dict = {}


def _folder_once(prefix: str, write) -> str:
    """A temporary folder filled by ``write(folder)`` on first use in this test run, removed at exit."""
    import atexit
    import shutil
    import tempfile

    if prefix not in _FOLDERS:
        root = tempfile.mkdtemp(prefix=f"defectforge-{prefix}-")
        atexit.register(shutil.rmtree, root, True)
        write(root)
        _FOLDERS[prefix] = root
    return _FOLDERS[prefix]


def tiny_model_folder():
    """A tiny random diffusion model (16 px, RGB) saved once to a temporary folder.

    A folder (not an in-memory model) so that configs holding it round-trip through
    ``defectforge.from_config``.
    """
    from defectforge.generative.models import tiny_unet

    return _folder_once("model", lambda root: tiny_unet(16, 3, seed=0).save(root))


def tiny_gan_folder():
    """A tiny random defect GAN (16 px, RGB, types blob and scratch) saved once in a run's layout."""
    from defectforge.generative.gan_transplant import tiny_gan

    return _folder_once("gan", lambda root: tiny_gan(16, 3, seed=0).save(root))


def tiny_sd_inpaint_folder():
    """A tiny random Stable Diffusion inpainting pipeline (UNet of 9 input channels, VAE, CLIP text
    encoder, a tokenizer of a tiny vocabulary) saved once with ``save_pretrained``."""
    from defectforge.generative.inpaint import tiny_sd_inpaint

    return _folder_once("sd", tiny_sd_inpaint)


def tiny_sd_text2img_folder():
    """A tiny random Stable Diffusion text-to-image pipeline (UNet of 4 input channels), saved once."""
    from defectforge.generative.inpaint import tiny_sd_text2img

    return _folder_once("sd_t2i", tiny_sd_text2img)


def _write_tiny_bank(root) -> None:
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for k in range(3):
        g = np.random.default_rng(k)
        image = (110 + g.normal(0, 6, (48, 48, 3))).clip(0, 255).astype(np.uint8)
        mask = np.zeros((48, 48), np.uint8)
        if k < 2:  # dark blob
            yy, xx = np.mgrid[:48, :48]
            mask[(yy - 24) ** 2 / 64 + (xx - 20 - 4 * k) ** 2 / 25 <= 1] = 255
            image[mask > 0] = (image[mask > 0] * 0.3).astype(np.uint8)
        else:  # bright scratch
            mask[10:38, 22:25] = 255
            image[mask > 0] = 230
        folder = root / ("blob" if k < 2 else "scratch")
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"d{k}.png")
        Image.fromarray(mask).save(folder / f"d{k}_mask.png")


def tiny_defect_bank():
    """A bank of 3 real-looking defects (2 types: blob, scratch), written once to a temporary folder.

    A folder bank (not in-memory arrays) so that configs holding it round-trip through
    ``defectforge.from_config``.
    """
    from pathlib import Path

    from defectforge.sources.defects import DefectBank

    return DefectBank.from_folder(Path(_folder_once("bank", _write_tiny_bank)))


def method_for_tests(name, **kwargs):
    """``defectforge.create(name, **kwargs)``; methods that need real defects get the tiny bank, methods
    that need a trained model a tiny random one (3 denoising steps, so the registry-wide matrix stays fast)."""
    import defectforge

    caps = defectforge.method_info(name).capabilities
    if caps["needs_bank"]:
        kwargs.setdefault("bank", tiny_defect_bank())
    if caps["needs_model"]:
        kind = caps["model_kind"]
        if kind == "gan":
            kwargs.setdefault("model", tiny_gan_folder())
        elif kind == "sd_inpaint":
            kwargs.setdefault("model", tiny_sd_inpaint_folder())
            kwargs.setdefault("num_inference_steps", 2)
        elif kind == "sd_text2img":
            kwargs.setdefault("model", tiny_sd_text2img_folder())
            kwargs.setdefault("num_inference_steps", 4)
            kwargs.setdefault("strength", 0.5)
        else:
            kwargs.setdefault("model", tiny_model_folder())
            kwargs.setdefault("num_inference_steps", 3)
    return defectforge.create(name, **kwargs)


def method_or_name(name):
    """The registry name, or (for methods that need a bank or a model) the method made with a tiny one."""
    import defectforge

    cls = defectforge.method_info(name).cls
    needs = getattr(cls, "needs_bank", False) or getattr(cls, "needs_model", False)
    return method_for_tests(name) if needs else name
