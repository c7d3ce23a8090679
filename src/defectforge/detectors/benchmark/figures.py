"""The benchmark's figures: bar chart of the leaderboard, convergence curves and example score
maps (the first test image of each defect type and a good one)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import MVTecCategory
from .recipes import row_folder

__all__ = ["bar_chart", "convergence_chart", "score_map_figures", "example_indices", "example_maps", "axis_floor"]

#: Example test images shown in the score-map figures: the first of each defect type and one good.
N_EXAMPLE_TILE = 96


def example_indices(data: MVTecCategory, per_defect: int = 1) -> list[int]:
    chosen, seen = [], {}
    for i, name in enumerate(data.test_names):
        defect = name.split("/")[0]
        if seen.get(defect, 0) < per_defect:
            seen[defect] = seen.get(defect, 0) + 1
            chosen.append(i)
    good = [i for i in chosen if data.test_names[i].startswith("good/")]
    return [i for i in chosen if i not in good] + good


def example_maps(maps: torch.Tensor, indices: list[int], tile: int = N_EXAMPLE_TILE) -> np.ndarray:
    """Example maps scaled to [0, 1] by the run's whole test set (its 0.1 and 99.9 percentiles)."""
    sample = maps.flatten()[:: max(1, maps.numel() // 2_000_000)]
    low, high = torch.quantile(sample.float(), torch.tensor([0.001, 0.999])).tolist()
    chosen = maps[indices][:, None].float()
    chosen = torch.nn.functional.interpolate(chosen, size=(tile, tile), mode="bilinear", align_corners=False)[:, 0]
    return ((chosen - low) / max(high - low, 1e-12)).clamp(0, 1).numpy().astype(np.float16)



def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def axis_floor(values: list[float], floor: float = 0.5) -> float:
    """The axis start: ``floor``, lowered in steps of 0.1 until it lies below every value (so every
    bar has a length), never below 0."""
    finite = [v for v in values if not math.isnan(v)]
    low = min([floor] + [math.floor((v - 1e-9) * 10) / 10 for v in finite])
    return max(0.0, low)


def bar_chart(rows: list[dict[str, Any]], low: float | None = None, high: float = 1.0) -> np.ndarray:
    """Horizontal bars of image AUROC (dark) and pixel AUROC (light), mean with ± std whiskers.

    The axis starts at 0.5 (chance), or lower where a mean or whisker is below it
    (:func:`axis_floor`), so every bar shows; each bar carries its value.
    """
    from PIL import Image, ImageDraw

    if low is None:
        low = axis_floor([row[m][0] - row[m][1] for row in rows for m in ("image_auroc", "pixel_auroc")])
    label_w, plot_w, row_h, top, bottom = 230, 520, 34, 40, 44
    width, height = label_w + plot_w + 30, top + row_h * len(rows) + bottom
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    x_of = lambda v: label_w + (min(max(v, low), high) - low) / (high - low) * plot_w  # noqa: E731
    draw.text((label_w, 10), "image AUROC (dark), pixel AUROC (light); whiskers: ± std over seeds", fill="black", font=small)
    for tick in np.arange(low, high + 1e-9, 0.1):
        x = x_of(tick)
        draw.line([(x, top - 4), (x, height - bottom + 4)], fill=(220, 220, 220))
        draw.text((x - 10, height - bottom + 8), f"{tick:.1f}", fill="black", font=small)
    draw.text((label_w + plot_w // 2 - 20, height - bottom + 24), "AUROC", fill="black", font=small)
    for i, row in enumerate(rows):
        y = top + i * row_h
        name = f"{row['method']} (baseline)" if row["baseline"] else row["method"]
        draw.text((8, y + 8), name, fill="black", font=font)
        colours = ((110, 110, 110), (190, 190, 190)) if row["baseline"] else ((31, 100, 180), (140, 185, 230))
        for j, (metric, colour) in enumerate(zip(("image_auroc", "pixel_auroc"), colours)):
            mean, std = row[metric]
            if math.isnan(mean):
                continue
            y0 = y + 4 + j * 13
            draw.rectangle([label_w, y0, x_of(mean), y0 + 11], fill=colour)
            draw.line([(x_of(mean - std), y0 + 5), (x_of(mean + std), y0 + 5)], fill="black", width=1)
            draw.text((x_of(mean + std) + 4, y0 - 2 + j * 2), f"{mean:.3f}", fill="black" if j == 0 else (90, 90, 90),
                      font=_font(10 if j else 12))
    return np.asarray(img)


_PALETTE = ((31, 100, 180), (214, 96, 28), (44, 150, 60), (180, 40, 40), (120, 80, 170), (120, 120, 120))


def convergence_chart(runs: dict[str, dict[str, Any]]) -> np.ndarray:
    """Training loss (moving average over 20 steps, left) and image AUROC at the checkpoints
    plus the final one (right) against steps, one colour per method."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, pad = 360, 220, 50
    img = Image.new("RGB", (2 * panel_w + 3 * pad, panel_h + 2 * pad + 16 + 16 * len(runs)), "white")
    draw = ImageDraw.Draw(img)
    small = _font(12)
    max_step = max(len(r["losses"]) for r in runs.values())
    losses = {m: np.convolve(r["losses"], np.ones(20) / 20, mode="valid") if len(r["losses"]) >= 20
              else np.asarray(r["losses"]) for m, r in runs.items()}
    aurocs = {m: [(c["step"], c["image_auroc"]) for c in r["checkpoints"] if "image_auroc" in c]
              + [(len(r["losses"]), r["metrics"]["image_auroc"])] for m, r in runs.items()}
    loss_max = max(float(v.max()) for v in losses.values() if v.size) * 1.05
    all_auc = [a for pts in aurocs.values() for _, a in pts]
    auc_low, auc_high = math.floor(min(all_auc) * 20) / 20, math.ceil(max(all_auc) * 20) / 20
    auc_high = max(auc_high, auc_low + 0.05)
    panels = ((pad, "training loss (moving average, 20 steps)", 0.0, loss_max),
              (2 * pad + panel_w, "image AUROC on the test set", auc_low, auc_high))
    for x0, title, low, high in panels:
        draw.rectangle([x0, pad, x0 + panel_w, pad + panel_h], outline="black")
        draw.text((x0, pad - 18), title, fill="black", font=small)
        for k in range(5):  # labelled ticks on both axes: values, and training steps
            y = pad + panel_h - k / 4 * panel_h
            draw.line([(x0 - 4, y), (x0, y)], fill="black")
            draw.text((x0 - 40, y - 6), f"{low + k / 4 * (high - low):.2f}", fill="black", font=small)
            x = x0 + k / 4 * panel_w
            draw.line([(x, pad + panel_h), (x, pad + panel_h + 4)], fill="black")
            draw.text((x - 10, pad + panel_h + 6), f"{round(k / 4 * max_step)}", fill="black", font=small)
        draw.text((x0 + panel_w // 2 - 30, pad + panel_h + 20), "training step", fill="black", font=small)
    to_xy = lambda x0, low, high, step, v: (x0 + step / max_step * panel_w,  # noqa: E731
                                            pad + panel_h - (v - low) / (high - low) * panel_h)
    for k, method in enumerate(runs):
        colour = _PALETTE[k % len(_PALETTE)]
        curve = losses[method]
        offset = (len(runs[method]["losses"]) - curve.size) + 1
        draw.line([to_xy(pad, 0.0, loss_max, i + offset, v) for i, v in enumerate(curve)], fill=colour, width=2)
        points = [to_xy(2 * pad + panel_w, auc_low, auc_high, step, a) for step, a in aurocs[method]]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((pad, pad + panel_h + 38 + 16 * k), f"{method} (seed {runs[method]['seed']})", fill=colour, font=small)
    return np.asarray(img)


def _colour_map(values: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.applyColorMap((np.clip(values, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]


def score_map_figures(run_dir: Path, rows: list[dict[str, Any]], data: MVTecCategory,
                      tile: int = N_EXAMPLE_TILE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The example grid (rows: image, ground truth, then each method's seed-0 maps) and one
    figure per method."""
    import cv2
    from PIL import Image, ImageDraw

    from ...pipelines.preview import overlay

    indices = example_indices(data)
    resize = lambda a, interp=cv2.INTER_AREA: cv2.resize(a, (tile, tile), interpolation=interp)  # noqa: E731
    truths = [resize(data.test_masks[i].numpy().astype(np.uint8) * 255, cv2.INTER_NEAREST) for i in indices]
    # the ground truth outlined on the image too: many real defects are faint at this size
    images = [overlay(resize(data.test[i].permute(1, 2, 0).numpy()), t > 0, fill=False) for i, t in zip(indices, truths)]
    truths = [np.repeat(t[..., None], 3, 2) for t in truths]
    label_w = 170
    font = _font(12)

    def strip(label: str, tiles: list[np.ndarray]) -> np.ndarray:
        canvas = Image.new("RGB", (label_w + len(tiles) * (tile + 2), tile + 2), "white")
        for k, t in enumerate(tiles):
            canvas.paste(Image.fromarray(np.ascontiguousarray(t)), (label_w + k * (tile + 2), 1))
        ImageDraw.Draw(canvas).text((4, tile // 2 - 6), label, fill="black", font=font)
        return np.asarray(canvas)

    header = [strip("image\n(truth outlined)", images), strip("ground truth", truths)]
    names = [data.test_names[i].split("/")[0] for i in indices]
    title = Image.new("RGB", (header[0].shape[1], 18), "white")
    for k, name in enumerate(names):
        ImageDraw.Draw(title).text((label_w + k * (tile + 2) + 2, 2), name, fill="black", font=font)
    header.insert(0, np.asarray(title))
    method_strips, per_method = [], {}
    for row in rows:
        files = sorted((run_dir / row_folder(row["method"])).glob("seed*.examples.npy"))
        if not files:
            continue
        maps = np.load(files[0]).astype(np.float32)
        if maps.shape[0] != len(indices):
            continue
        label = f"{row['method']} (baseline)" if row["baseline"] else row["method"]
        s = strip(label, [_colour_map(m) for m in maps])
        method_strips.append(s)
        per_method[row["method"]] = np.concatenate(header + [s])
    grid = np.concatenate(header + method_strips)
    return grid, per_method
