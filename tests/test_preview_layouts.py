"""Preview layouts: compact outlines leave the defect visible; side-by-side pairs image and outline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import defectforge
from defectforge.pipelines.preview import overlay, preview_grid


def _inputs():
    return np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3), dtype=np.uint8)


def test_compact_outlines_keep_the_defect_pixels():
    images = _inputs()
    synth = defectforge.create("cutout", anomaly_probability=1.0)
    grid = preview_grid(images, ["cutout"], seed=0, rows="compact", synthesizers={"cutout": synth})
    out = synth(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), seed=0)
    synthetic = out.images.permute(0, 2, 3, 1).numpy()
    mask = (out.masks[0, 0] > 0.5).numpy()
    tile = grid[-48 - 2:-2, 150 + 2:150 + 2 + 48]          # method row, first column (label 150 px, pad 2)
    inner = mask.copy()
    inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    assert inner.any()
    assert (tile[inner] == synthetic[0][inner]).all()       # untinted inside the outline
    assert not (tile[mask & ~inner] == synthetic[0][mask & ~inner]).all()   # the outline is drawn


def test_side_by_side_pairs_each_image_with_its_outline():
    images = _inputs()
    grid = preview_grid(images, ["cutout", "cutpaste"], seed=0, rows="side-by-side")
    compact = preview_grid(images, ["cutout", "cutpaste"], seed=0, rows="compact")
    assert grid.shape[0] == compact.shape[0] and grid.shape[1] == 150 + 2 * (2 * 48 + 4)
    with pytest.raises(ValueError, match="rows"):
        preview_grid(images, ["cutout"], rows="grid")


def test_filled_overlay_still_available():
    img = np.zeros((8, 8, 3), np.uint8)
    m = np.zeros((8, 8), bool)
    m[2:6, 2:6] = True
    assert overlay(img, m)[3, 3, 0] > 0 and overlay(img, m, fill=False)[3, 3, 0] == 0


@pytest.mark.parametrize("rows", ["full", "compact", "side-by-side"])
def test_columns_are_named_over_their_images(rows):
    from defectforge.pipelines.preview import HEADER_HEIGHT

    images = _inputs()
    plain = preview_grid(images, ["cutout"], seed=0, rows=rows)
    named = preview_grid(images, ["cutout"], seed=0, rows=rows, column_labels=["left.png", "right.png"])
    assert named.shape[0] == plain.shape[0] + HEADER_HEIGHT and (named[HEADER_HEIGHT:] == plain).all()
    column = (named.shape[1] - 150) // 2
    for k in range(2):                                    # text (dark pixels) over each column
        assert (named[:HEADER_HEIGHT, 150 + k * column:150 + (k + 1) * column] < 128).any()
    with pytest.raises(ValueError, match="column_labels"):
        preview_grid(images, ["cutout"], column_labels=["one"])
