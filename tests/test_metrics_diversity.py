"""LPIPS and IC-LPIPS plumbing with tiny random backbones laid out like torchvision's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defectforge.metrics.diversity import (
    IC_LPIPS_PROTOCOLS,
    LPIPS,
    ic_lpips,
    load_lpips,
    lpips_distance_matrix,
    prepare_lpips_images,
)
from defectforge.metrics.weights import MissingWeightsError

TINY_ALEX = {0: (3, 4, 11), 3: (4, 6, 5), 6: (6, 5, 3), 8: (5, 4, 3), 10: (4, 4, 3)}
TINY_VGG = {i: (3 if i == 0 else 4, 4, 3) for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


def tiny_states(net, seed=0):
    gen = torch.Generator().manual_seed(seed)
    layout = TINY_ALEX if net == "alex" else TINY_VGG
    backbone = {}
    for index, (cin, cout, k) in layout.items():
        backbone[f"features.{index}.weight"] = torch.randn(cout, cin, k, k, generator=gen) * 0.3
        backbone[f"features.{index}.bias"] = torch.randn(cout, generator=gen) * 0.1
    backbone["classifier.1.weight"] = torch.zeros(2, 2)  # ignored, as in torchvision files
    taps = [4, 6, 5, 4, 4] if net == "alex" else [4] * 5
    linear = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen) for k, c in enumerate(taps)}
    return backbone, linear


def images(n, seed, size=48):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_embedding_distances_equal_the_layerwise_formula(net):
    model = LPIPS(net, *tiny_states(net))
    a, b = prepare_lpips_images(images(3, 1), 64), prepare_lpips_images(images(3, 2), 64)
    paired = model(a, b).double()
    matrix = lpips_distance_matrix(model, images(3, 1), images(3, 2), size=64)
    assert np.allclose(np.diag(matrix), paired.numpy(), rtol=1e-4, atol=1e-7)
    assert torch.allclose(model(a, a), torch.zeros(3), atol=1e-7)


def test_layerwise_formula_against_direct_computation():
    backbone, linear = tiny_states("alex")
    model = LPIPS("alex", backbone, linear)
    x0, x1 = prepare_lpips_images(images(2, 3), 64), prepare_lpips_images(images(2, 4), 64)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(x):
        h = (x - shift) / scale
        outs = []
        specs = [(0, 4, 2, False), (3, 1, 2, True), (6, 1, 1, True), (8, 1, 1, False), (10, 1, 1, False)]
        for index, stride, pad, pool_first in specs:
            if pool_first:
                h = torch.nn.functional.max_pool2d(h, 3, 2)
            h = torch.relu(torch.nn.functional.conv2d(h, backbone[f"features.{index}.weight"],
                                                      backbone[f"features.{index}.bias"], stride, pad))
            outs.append(h)
        return outs

    expected = 0
    for k, (f0, f1) in enumerate(zip(taps(x0), taps(x1))):
        n0 = f0 / (f0.norm(dim=1, keepdim=True) + 1e-10)
        n1 = f1 / (f1.norm(dim=1, keepdim=True) + 1e-10)
        w = linear[f"lin{k}.model.1.weight"]
        expected = expected + torch.nn.functional.conv2d((n0 - n1) ** 2, w).mean(dim=(1, 2, 3))
    assert torch.allclose(model(x0, x1), expected, rtol=1e-5)


def test_blocked_matrix_equals_single_block():
    model = LPIPS("alex", *tiny_states("alex"))
    imgs = images(7, 5)
    whole = lpips_distance_matrix(model, imgs, size=64)
    blocked = lpips_distance_matrix(model, imgs, size=64, max_memory_gb=1e-6, batch_size=2)
    assert np.allclose(whole, blocked, rtol=1e-5, atol=1e-8)
    assert np.allclose(whole, whole.T) and np.all(np.diag(whole) == 0)


def test_ic_lpips_matches_brute_force():
    model = LPIPS("alex", *tiny_states("alex"))
    centres = images(3, 10)
    generated = images(8, 11)
    out = ic_lpips(model, generated, centres, cap=3, size=64)
    x_gen, x_cen = prepare_lpips_images(generated, 64), prepare_lpips_images(centres, 64)
    assign = []
    for i in range(8):
        d = [model(x_gen[i:i + 1], x_cen[c:c + 1]).item() for c in range(3)]
        assign.append(int(np.argmin(d)))
    cluster_means = []
    for c in range(3):
        members = [i for i in range(8) if assign[i] == c][:3]
        pairs = [model(x_gen[i:i + 1], x_gen[j:j + 1]).item()
                 for k, i in enumerate(members) for j in members[k + 1:]]
        if pairs:
            cluster_means.append(np.mean(pairs))
    assert out["cluster_sizes"] == [assign.count(c) for c in range(3)]
    assert out["clusters_used"] == len(cluster_means)
    assert out["ic_lpips"] == pytest.approx(np.mean(cluster_means), rel=1e-4)


def test_ic_lpips_identical_images_have_zero_diversity_and_single_images_nan():
    model = LPIPS("alex", *tiny_states("alex"))
    one = images(1, 3)
    assert ic_lpips(model, one.repeat(4, 1, 1, 1), one, cap=50, size=64)["ic_lpips"] == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(ic_lpips(model, one, one, cap=50, size=64)["ic_lpips"])


def test_load_lpips_from_files_and_missing_error(tmp_path, monkeypatch):
    backbone, linear = tiny_states("vgg")
    torch.save(backbone, tmp_path / "vgg16.pth")
    torch.save(linear, tmp_path / "vgg.pth")
    model = load_lpips("vgg", tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert model(prepare_lpips_images(images(1, 0), 32), prepare_lpips_images(images(1, 1), 32)).shape == (1,)
    monkeypatch.delenv("DEFECTFORGE_LPIPS_ALEX", raising=False)
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        load_lpips("alex")
    with pytest.raises(ValueError, match="features.0.weight"):
        load_lpips("alex", tmp_path / "vgg.pth", tmp_path / "vgg.pth")


def test_protocols_are_named_and_distinct():
    assert set(IC_LPIPS_PROTOCOLS) == {"dfmgan", "anomalydiffusion", "seas"}
    assert (IC_LPIPS_PROTOCOLS["dfmgan"].net, IC_LPIPS_PROTOCOLS["dfmgan"].cap) == ("alex", 200)
    assert (IC_LPIPS_PROTOCOLS["anomalydiffusion"].net, IC_LPIPS_PROTOCOLS["anomalydiffusion"].cap) == ("vgg", 50)
    assert (IC_LPIPS_PROTOCOLS["seas"].net, IC_LPIPS_PROTOCOLS["seas"].cap) == ("vgg", 140)
    assert "IC-LPIPS[seas]" in IC_LPIPS_PROTOCOLS["seas"].describe()
