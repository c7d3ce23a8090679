import numpy as np
import pytest
import torch

from defectforge.io.images import write_image
from defectforge.sources.foreground import (MaskFolder, Saliency, Threshold, estimate_foreground,
                                            foreground_batch, parse_foreground)


def _object_batch():
    img = torch.full((2, 3, 48, 48), 20, dtype=torch.uint8)
    img[0, :, 10:30, 12:40] = 200
    img[1, :, 5:20, 5:20] = 180
    return img


def test_otsu_finds_the_bright_object_and_invert_the_background():
    img = _object_batch()
    fg = foreground_batch(img, "otsu")
    assert fg.shape == (2, 1, 48, 48)
    assert int(fg[0].sum()) == 20 * 28 and int(fg[1].sum()) == 15 * 15
    inv = foreground_batch(img, Threshold(None, invert=True))
    assert torch.equal(inv, 1 - fg)


def test_fixed_threshold_on_float_and_uint8_agree():
    img = _object_batch()
    a = foreground_batch(img, Threshold(0.5))
    b = foreground_batch(img.float() / 255, Threshold(0.5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="threshold"):
        parse_foreground("threshold")


def test_saliency_marks_a_small_object_on_a_plain_background():
    img = torch.full((1, 1, 64, 64), 0.3)
    img[..., 28:36, 28:36] = 0.9
    fg = Saliency().masks(img)
    assert fg[0, 0, 32, 32] == 1 and fg[0, 0, 2, 2] == 0
    assert 0 < fg.mean() < 0.5


def test_empty_foreground_falls_back_to_the_whole_image_with_a_note():
    with pytest.warns(UserWarning, match="empty foreground"):
        result = estimate_foreground(torch.zeros(2, 3, 16, 16), Threshold(0.5))
    assert result.masks.min() == 1
    assert all("whole image" in note for note in result.fallbacks)


def test_mask_folder_matches_by_name_and_resizes_with_a_warning(tmp_path):
    m = np.zeros((24, 24), np.uint8)
    m[:12] = 255
    write_image(tmp_path / "a.png", m)
    folder = MaskFolder(tmp_path)
    img = torch.zeros(1, 3, 48, 48, dtype=torch.uint8)
    with pytest.warns(UserWarning, match="resized"):
        fg = foreground_batch(img, folder, names=["sub/a.jpg"])
    assert fg[0, 0, :24].min() == 1 and fg[0, 0, 24:].max() == 0
    with pytest.raises(FileNotFoundError, match="b.png"):
        foreground_batch(img, folder, names=["b.png"])
    assert isinstance(parse_foreground(None, mask_folder=tmp_path), MaskFolder)
