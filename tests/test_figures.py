"""Issue 19, section 6: the benchmark's figures show every bar, label their axes and outline faint defects."""

from __future__ import annotations

import numpy as np
import torch

from defectforge.detectors.benchmark.figures import axis_floor, bar_chart, convergence_chart, score_map_figures
from defectforge.detectors.data import MVTecCategory

DARK, LIGHT = (31, 100, 180), (140, 185, 230)


def _rows():
    return [{"method": "memseg", "baseline": False, "image_auroc": (0.805, 0.009), "pixel_auroc": (0.676, 0.015)},
            {"method": "riad", "baseline": False, "image_auroc": (0.558, 0.012), "pixel_auroc": (0.460, 0.037)}]


def test_every_bar_has_a_length_even_below_chance():
    assert axis_floor([0.6, 0.7]) == 0.5 and axis_floor([0.46, 0.8]) == 0.4 and axis_floor([0.5]) == 0.4
    assert axis_floor([-0.3]) == 0.0
    chart = bar_chart(_rows())
    label_w, row_h, top = 230, 34, 40
    for i in range(2):
        for j, colour in enumerate((DARK, LIGHT)):
            y = top + i * row_h + 4 + j * 13 + 5
            assert (chart[y, label_w:] == colour).all(-1).sum() > 10, (i, j)   # riad's 0.460 bar was empty


def test_convergence_axes_have_labelled_ticks():
    runs = {"draem": {"seed": 0, "losses": list(np.linspace(0.3, 0.05, 100)),
                      "checkpoints": [{"step": 50, "image_auroc": 0.6}], "metrics": {"image_auroc": 0.7}}}
    chart = convergence_chart(runs)
    pad, panel_w, panel_h = 50, 360, 220
    for k in range(5):  # tick marks under the loss panel at 0, 1/4, ..., all steps
        x = int(pad + k / 4 * panel_w)
        assert (chart[pad + panel_h + 1:pad + panel_h + 4, max(x - 1, 0):x + 2] < 100).any(), k


def test_score_map_figure_outlines_the_ground_truth_on_the_image(tmp_path):
    size, tile = 32, 48
    test = torch.full((2, 3, size, size), 100, dtype=torch.uint8)
    masks = torch.zeros(2, size, size, dtype=torch.bool)
    masks[0, 8:20, 10:22] = True                                  # a faint defect: no visible change
    data = MVTecCategory(root=tmp_path, size=size, train=test, test=test, test_masks=masks,
                         test_labels=torch.tensor([1, 0]), test_names=["crack/000", "good/000"])
    grid, _ = score_map_figures(tmp_path, [], data, tile=tile)
    image_row = grid[18:18 + tile + 2]                            # under the column names
    red = (image_row[..., 0] > 200) & (image_row[..., 1] < 80)
    assert red[:, 170:170 + tile + 2].any() and not red[:, 170 + tile + 2:].any()


def test_gan_preview_names_its_columns_and_rows():
    from defectforge.generative.train import _grid

    tiles = np.full((16, 8, 8, 3), 128, np.uint8)
    plain = _grid(tiles)
    named = _grid(tiles, column_labels=["blowhole", "crack"] * 4, row_labels=["crop", "crop", "mask", "mask"])
    assert named.shape[0] > plain.shape[0] and named.shape[1] > plain.shape[1]
    assert (named[:14] < 100).any() and (named[:, :40] < 100).any()       # text above and at the left
