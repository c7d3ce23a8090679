"""Building blocks against independent references (DRAEM's formula, PIL, torchvision semantics)."""

import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps

from defectforge.core.seeding import sample_rng
from defectforge.functional import uint8ops as u8
from defectforge.functional.geometry import rotate
from defectforge.functional.perlin import perlin_masks, perlin_noise, sample_perlin_params


def reference_perlin(shape, res, angles):
    """DRAEM's rand_perlin_2d_np written out from its formula (tile gradients, quintic fade)."""
    d = (shape[0] // res[0], shape[1] // res[1])
    grid = np.mgrid[0:res[0]:res[0] / shape[0], 0:res[1]:res[1] / shape[1]].transpose(1, 2, 0) % 1
    grads = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def tile(s1, s2):
        return np.repeat(np.repeat(grads[s1[0]:s1[1], s2[0]:s2[1]], d[0], 0), d[1], 1)

    def dot(g, shift):
        return ((grid[..., 0] + shift[0]) * g[..., 0] + (grid[..., 1] + shift[1]) * g[..., 1])

    n00, n10 = dot(tile([0, -1], [0, -1]), [0, 0]), dot(tile([1, None], [0, -1]), [-1, 0])
    n01, n11 = dot(tile([0, -1], [1, None]), [0, -1]), dot(tile([1, None], [1, None]), [-1, -1])
    t = 6 * grid ** 5 - 15 * grid ** 4 + 10 * grid ** 3
    lerp = lambda a, b, w: a + w * (b - a)  # noqa: E731
    return math.sqrt(2) * lerp(lerp(n00, n10, t[..., 0]), lerp(n01, n11, t[..., 0]), t[..., 1])


@pytest.mark.parametrize("res", [(1, 1), (2, 8), (32, 4), (16, 16)])
def test_perlin_matches_draem_formula(res):
    seed = 17
    angles = 2 * math.pi * np.random.default_rng(seed).random((res[0] + 1, res[1] + 1))
    ours = perlin_noise(128, 128, [res], [seed])[0].numpy()
    np.testing.assert_allclose(ours, reference_perlin((128, 128), res, angles), atol=1e-5)


def test_perlin_any_size_and_batch():
    noise = perlin_noise(50, 77, [(3, 5), (1, 1)], [1, 2])
    assert noise.shape == (2, 50, 77) and noise.abs().max() <= 1.5


def test_perlin_mask_distribution_matches_draem_figures():
    # methods.md: at 256x256 about 5% of DRAEM masks are empty, mean anomalous area about 5.4%.
    params = [sample_perlin_params(sample_rng(2024, i)) for i in range(1500)]
    masks, _ = perlin_masks(params, 256, 256)
    area = masks.mean((1, 2, 3))
    assert 0.03 < (area == 0).float().mean() < 0.08
    assert 0.045 < area.mean() < 0.065
    exps = np.log2(np.array([p["res"] for p in params]))
    assert set(np.unique(exps)) == {0, 1, 2, 3, 4, 5}
    angles = np.array([p["angle"] for p in params])
    assert angles.min() >= -90 and angles.max() <= 90 and abs(angles.mean()) < 5


def test_rescale_policy_never_leaves_unrotated_noise_empty():
    params = [{"res": [1, 1], "angle": 0.0, "seed": s} for s in range(200)]
    masks, _ = perlin_masks(params, 64, 64, rescale_empty=True)
    assert (masks.flatten(1).amax(1) > 0).all()


@pytest.mark.parametrize("rescale", [False, True])
def test_per_sample_cpu_masks_equal_the_batched_composition(rescale):
    # perlin_masks on the CPU runs each sample in numpy/OpenCV; it must equal the batched recipe
    # (field, min-max rescale of empty fields, rotation, threshold) bit for bit.
    params = [sample_perlin_params(sample_rng(3, i)) for i in range(12)]
    threshold = 0.9 if rescale else 0.5  # a high threshold leaves some fields empty
    masks, noise = perlin_masks(params, 48, 40, threshold, rescale_empty=rescale)
    ref = perlin_noise(48, 40, [p["res"] for p in params], [p["seed"] for p in params])
    if rescale:
        lo, hi = ref.flatten(1).min(1).values, ref.flatten(1).max(1).values
        scaled = (ref - lo[:, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None] * 2.0 - 1.0
        empty = hi <= threshold
        assert empty.any()
        ref = torch.where(empty[:, None, None], scaled, ref)
    ref = rotate(ref[:, None], torch.tensor([p["angle"] for p in params]))
    assert torch.equal(noise, ref)
    assert torch.equal(masks, (ref > threshold).float())


def test_rotate_opencv_and_grid_sample_agree():
    import torch.nn.functional as F

    from defectforge.functional.geometry import rotation_matrices

    x = torch.rand(3, 3, 40, 56)
    angles = torch.tensor([10.0, -75.0, 33.0])
    grid = F.affine_grid(rotation_matrices(angles, 40, 56), [3, 1, 40, 56], align_corners=False)
    expected = F.grid_sample(x, grid, align_corners=False)
    assert (rotate(x, angles) - expected).abs().max() < 1e-3


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    base = np.linspace(30, 200, 64)[None, :, None] + rng.normal(0, 20, (48, 64, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("cutoff", [0, 2, 10])
def test_autocontrast_matches_pil(photo, cutoff):
    expected = np.asarray(ImageOps.autocontrast(Image.fromarray(photo), cutoff=cutoff))
    assert np.abs(u8.autocontrast(photo, cutoff).astype(int) - expected).max() <= 1


def test_equalize_solarize_posterize_invert_match_pil(photo):
    pil = Image.fromarray(photo)
    assert np.array_equal(u8.equalize(photo), np.asarray(ImageOps.equalize(pil)))
    assert np.array_equal(u8.solarize(photo, 100), np.asarray(ImageOps.solarize(pil, 100)))
    assert np.array_equal(u8.posterize(photo, 3), np.asarray(ImageOps.posterize(pil, 3)))
    assert np.array_equal(u8.invert(photo), np.asarray(ImageOps.invert(pil)))


@pytest.mark.parametrize("factor", [0.0, 0.5, 1.7])
def test_sharpness_matches_pil(photo, factor):
    expected = np.asarray(ImageEnhance.Sharpness(Image.fromarray(photo)).enhance(factor))
    assert np.abs(u8.sharpness(photo, factor).astype(int) - expected).max() <= 1


def test_brightness_contrast_saturation_match_pil(photo):
    pil = Image.fromarray(photo)
    for ours, enhancer in [(u8.brightness, ImageEnhance.Brightness), (u8.saturation, ImageEnhance.Color)]:
        expected = np.asarray(enhancer(pil).enhance(1.08))
        assert np.abs(ours(photo, 1.08).astype(int) - expected).max() <= 1
    # PIL's Contrast rounds the mean grey level to an integer first
    expected = np.asarray(ImageEnhance.Contrast(pil).enhance(0.93))
    assert np.abs(u8.contrast(photo, 0.93).astype(int) - expected).max() <= 1


def test_color_jitter_draws_torchvision_ranges():
    draws = [u8.sample_color_jitter(sample_rng(0, i), 0.1, 0.1, 0.1, 0.1) for i in range(400)]
    for key in ["brightness", "contrast", "saturation"]:
        v = np.array([d[key] for d in draws])
        assert v.min() >= 0.9 and v.max() <= 1.1 and abs(v.mean() - 1.0) < 0.01
    hue = np.array([d["hue"] for d in draws])
    assert hue.min() >= -0.1 and hue.max() <= 0.1
    assert all(sorted(d["order"]) == [0, 1, 2, 3] for d in draws)


def test_fused_pipelines_equal_sequential_ops(photo):
    from defectforge.functional.augment import ANOMALIB_OPS, DRAEM_OPS, augment_uint8, sample_pipeline

    for ops in (DRAEM_OPS, ANOMALIB_OPS):
        for i in range(150):
            pipeline = sample_pipeline(sample_rng(1, i), ops, 3)
            expected = photo
            for name, params in pipeline:
                expected = ops[name].apply(expected, params)
            assert np.array_equal(augment_uint8(photo, pipeline, ops), expected), pipeline
