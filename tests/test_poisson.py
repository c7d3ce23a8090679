"""The sine-transform Poisson solver (functional/poisson.py) against OpenCV's and the paper's rules."""

import cv2
import numpy as np
import pytest

from defectforge.functional.poisson import poisson_blend
from defectforge.functional.shapes import poisson_paste


def _scene(channels: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    image = rng.normal(120, 10, (96, 96, channels)).clip(0, 255).astype(np.uint8)
    patch = np.full((40, 46, channels), 125, np.uint8)
    cv2.circle(patch, (23, 20), 9, (40,) * channels, -1)
    patch = (patch + rng.normal(0, 3, patch.shape)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((40, 46), np.uint8)
    cv2.circle(mask, (23, 20), 16, 1, -1)
    return image, patch, mask.astype(bool)


@pytest.mark.parametrize("channels", [1, 3])
def test_normal_gradients_match_opencv_seamless_clone(channels):
    # the same discretisation as OpenCV's seamlessClone (NORMAL_CLONE): equal up to rounding and the
    # solved rectangle (OpenCV: the mask's box; here the box, a ring and a few pixels to a fast size)
    image, patch, mask = _scene(channels)
    ours, keep = poisson_blend(image, patch, mask, 30, 20, mixed=False)
    ref, _ = poisson_paste(image, patch, mask, 30, 20, mixed=False)
    diff = np.abs(ours.astype(int) - ref.astype(int))[keep]
    assert diff.max() <= 3 and diff.mean() < 1.0
    # the dark disc came through, darker than the surround it was pasted on
    assert ours[20, 23].mean() < 80


def test_only_the_region_changes_and_the_border_is_boundary():
    image, patch, mask = _scene(3)
    box = image[30:70, 20:66]
    new, keep = poisson_blend(image, patch, mask, 30, 20, mixed=True)
    assert np.array_equal(new[~keep], box[~keep])
    # a region on the image's border: those pixels are boundary values and stay
    full = np.ones((40, 46), bool)
    new, keep = poisson_blend(image, patch, full, 0, 0)
    assert not keep[0].any() and not keep[:, 0].any() and keep[1:, 1:].all()
    assert np.array_equal(new[0], image[0, :46])


def test_mixed_gradients_keep_the_stronger_texture():
    # Perez et al. eq. 13: per edge the larger difference; strong stripes of the target survive inside
    # a flat source, the source's strong edge survives on a flat target
    stripes = np.zeros((64, 64, 1), np.uint8)
    stripes[:, ::4] = 200
    flat = np.full((30, 30, 1), 100, np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[3:27, 3:27] = True
    normal, _ = poisson_blend(stripes, flat, mask, 17, 17, mixed=False)
    mixed, _ = poisson_blend(stripes, flat, mask, 17, 17, mixed=True)
    centre = (slice(10, 20), slice(10, 20))
    assert np.ptp(mixed[centre]) > 150 > np.ptp(normal[centre]) + 100
    edge = np.full((30, 30, 1), 100, np.uint8)
    edge[:, 15:] = 20
    plain = np.full((64, 64, 1), 120, np.uint8)
    mixed, _ = poisson_blend(plain, edge, mask, 17, 17, mixed=True)
    assert int(mixed[15, 12, 0]) - int(mixed[15, 18, 0]) > 40  # a clear step (80 in the source, ends pinned)


def test_grey_equals_each_channel_of_colour():
    image, patch, mask = _scene(1, seed=3)
    grey, _ = poisson_blend(image, patch, mask, 30, 20, mixed=True)
    colour, _ = poisson_blend(np.repeat(image, 3, 2), np.repeat(patch, 3, 2), mask, 30, 20, mixed=True)
    for k in range(3):
        assert np.array_equal(colour[..., k], grey[..., 0])


def test_tiny_regions_are_pasted():
    image = np.full((20, 20, 3), 50, np.uint8)
    patch = np.full((4, 4, 3), 200, np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    new, keep = poisson_blend(image, patch, mask, 8, 8)
    assert np.array_equal(new[keep], patch[keep]) and keep.sum() == 4
