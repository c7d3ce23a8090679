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


_TINY_MODEL_DIR = None


def tiny_model_folder():
    """A tiny random diffusion model (16 px, RGB) saved once to a temporary folder.

    A folder (not an in-memory model) so that configs holding it round-trip through
    ``defectforge.from_config``.
    """
    import atexit
    import shutil
    import tempfile

    from defectforge.generative.models import tiny_unet

    global _TINY_MODEL_DIR
    if _TINY_MODEL_DIR is None:
        root = tempfile.mkdtemp(prefix="defectforge-model-")
        atexit.register(shutil.rmtree, root, True)
        tiny_unet(16, 3, seed=0).save(root)
        _TINY_MODEL_DIR = root
    return _TINY_MODEL_DIR


def method_for_tests(name, **kwargs):
    """``defectforge.create(name, **kwargs)``; methods that need a trained model get a tiny random
    one (3 denoising steps, so the registry-wide matrix stays fast)."""
    import defectforge

    if getattr(defectforge.method_info(name).cls, "needs_model", False):
        kwargs.setdefault("model", tiny_model_folder())
        kwargs.setdefault("num_inference_steps", 3)
    return defectforge.create(name, **kwargs)


def method_or_name(name):
    """The registry name, or (for methods that need a model) the method made with the tiny model."""
    import defectforge

    return method_for_tests(name) if getattr(defectforge.method_info(name).cls, "needs_model", False) else name
