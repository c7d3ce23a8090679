"""DefectMaker (REB): Bezier rect / scar / clump shapes filled with noise or a cut from another image.

Follows Lyu et al., "REB: Reducing biases in representation for industrial defect detection via
a DefectMaker", 2023; implementation ShuaiLYU/REB (Apache-2.0), its DefectMaker module. Defaults
from methods.md (the reference sheet of this project, read from the paper and that code).

A sample has one of three shapes (1/3 each), each a closed smooth Bezier curve through 5..7
random points (sorted by angle; smoothness ``U(0.2, 0.5)``):

- ``rect``: the curve fills a box of area ``U(0.02, 0.15)`` of the image and aspect ratio
  log-uniform in ``[0.3, 1/0.3]`` (CutPaste's box);
- ``scar``: a box of ``U(7, 21) x U(15, 30)`` px at 256 x 256 (scaled with the image), rotated
  ``U(-45, 45)`` degrees;
- ``clump``: a rect-sized box of thresholded blocky noise, eroded, inside the Bezier shape;

and one of two fills (1/2 each): ``cut``, a crop of another normal image (a donor from
``SynthesisContext.donors``; the image itself, elsewhere, when no donor pool is given), or
``noise``, uniform grey noise of mean ``U(50, 200)`` and fluctuation ``U(0, 50)`` (values
``U(mean - f, mean + f)``) in cells of ``scale in {1, 2, 4}`` px and aspect ``{1, 2, 4, 0.5, 0.25}``.
The fill is colour-jittered (0.1, as torchvision ``ColorJitter``) and pasted with weight 1
(rect, scar) or ``U(0.5, 1)`` (clump); with probability 0.5 its edge is blurred (Gaussian kernel
3 or 5, inside the shape only, so the mask stays exact). The ``defectmaker_poisson`` preset fuses
by Poisson image editing (OpenCV ``seamlessClone``) instead. The box is centred on a foreground
pixel when a region is given (REB uses a saliency model; see :mod:`defectforge.sources.foreground`).

Labels: the 3 shapes x 2 fills are defect classes 1..6 (:data:`LABELS`; 0 is normal, so 7 labels
for self-supervised classification as in REB).

Choices this project made where the sheet is silent: the clump's noise cells are ``U{2..5}`` px
at 256 x 256, thresholded at 0.5 and eroded once by a 3 x 3 square (the un-eroded noise is kept
when erosion leaves nothing); the noise fill is grey.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.dtype import uint8_array_to_float
from ..core.parallel import map_samples
from ..core.registry import register_method
from ..core.seeding import child_seed
from ..core.types import SynthesisContext
from ..core.validation import check_interval, check_probability, check_range
from ..functional import uint8ops as u8
from ..functional.paste import place_box, sample_box
from ..functional.shapes import bezier_outline, fill_outline, poisson_paste, rotate_points
from ._common import clone_batch, to_uint8_hwc

__all__ = ["DefectMakerSynthesizer", "SHAPES", "FILLS", "LABELS"]

SHAPES = ("rect", "scar", "clump")
FILLS = ("cut", "noise")
#: Defect class of each (shape, fill): 1..6.
LABELS = {(s, f): 1 + 2 * i + j for i, s in enumerate(SHAPES) for j, f in enumerate(FILLS)}


class DefectMakerSynthesizer(Synthesizer):
    """DefectMaker / REB (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        Share of anomalous samples: 1 (REB's 7-way task draws normal as one class of 7: pass 1/7).
    shapes, fills : sequence of str
        Shapes (``rect``, ``scar``, ``clump``) and fills (``cut``, ``noise``) to draw from, uniformly.
    area_ratio_range, aspect_ratio
        Rect and clump box: area (0.02, 0.15) of the image, aspect log-uniform in [0.3, 1/0.3] (REB).
    scar_width_range, scar_height_range, scar_rotation_range
        Scar box (7, 21) x (15, 30) px at ``reference_size``, rotation (-45, 45) degrees (REB).
    points_range : (int, int)
        Bezier points per shape, inclusive: (5, 7) (REB).
    smoothness_range : (float, float)
        Bezier smoothness: (0.2, 0.5) (REB).
    noise_mean_range, noise_fluctuation_range, noise_scales, noise_aspects
        Noise fill: mean (50, 200), fluctuation (0, 50), cell scale {1, 2, 4}, aspect {1, 2, 4, 0.5, 0.25} (REB).
    clump_weight_range : (float, float)
        Paste weight of clumps: (0.5, 1) (REB); rects and scars paste with weight 1.
    blur_probability, blur_kernels
        Edge blur with probability 0.5, kernel 3 or 5 (REB).
    color_jitter : float
        ``ColorJitter`` strength of the fill: 0.1 (REB).
    poisson : bool
        Fuse by Poisson image editing instead of pasting (REB's optional fusion).
    mixed_clone : bool
        Mixed-gradient Poisson cloning (with ``poisson``).
    reference_size : int
        Scar and clump-cell sizes are given at this image size (256) and scale with ``min(H, W)``.
    max_attempts : int
        Draws of a sample whose shape misses the region before it is left normal (recorded).
    """

    any_dtype = True
    uses_donors = True  # with the default fills ("cut" among them); an instance without "cut" says False

    def __init__(self, anomaly_probability: float = 1.0, shapes=SHAPES, fills=FILLS,
                 area_ratio_range=(0.02, 0.15), aspect_ratio: float = 0.3,
                 scar_width_range=(7.0, 21.0), scar_height_range=(15.0, 30.0), scar_rotation_range=(-45.0, 45.0),
                 points_range=(5, 7), smoothness_range=(0.2, 0.5), noise_mean_range=(50.0, 200.0),
                 noise_fluctuation_range=(0.0, 50.0), noise_scales=(1, 2, 4), noise_aspects=(1, 2, 4, 0.5, 0.25),
                 clump_weight_range=(0.5, 1.0), blur_probability: float = 0.5, blur_kernels=(3, 5),
                 color_jitter: float = 0.1, poisson: bool = False, mixed_clone: bool = False,
                 reference_size: int = 256, max_attempts: int = 20):
        super().__init__(anomaly_probability)
        self.shapes = self._subset("shapes", shapes, SHAPES)
        self.fills = self._subset("fills", fills, FILLS)
        self.area_ratio_range = check_interval("area_ratio_range", area_ratio_range, 1e-6, 1.0)
        self.aspect_ratio = float(check_range("aspect_ratio", aspect_ratio, 1e-3, 1.0, low_inclusive=False))
        self.scar_width_range = check_interval("scar_width_range", scar_width_range, 1.0, 4096.0)
        self.scar_height_range = check_interval("scar_height_range", scar_height_range, 1.0, 4096.0)
        self.scar_rotation_range = check_interval("scar_rotation_range", scar_rotation_range, -360.0, 360.0)
        self.points_range = check_interval("points_range", points_range, 3, 64, integer=True)
        self.smoothness_range = check_interval("smoothness_range", smoothness_range, 0.0, 1.0)
        self.noise_mean_range = check_interval("noise_mean_range", noise_mean_range, 0.0, 255.0)
        self.noise_fluctuation_range = check_interval("noise_fluctuation_range", noise_fluctuation_range, 0.0, 255.0)
        self.noise_scales = [check_range("noise_scales", s, 1, 256, integer=True) for s in noise_scales]
        self.noise_aspects = [float(check_range("noise_aspects", a, 1e-2, 100.0)) for a in noise_aspects]
        if not self.noise_scales or not self.noise_aspects:
            raise ValueError("noise_scales and noise_aspects must not be empty")
        self.clump_weight_range = check_interval("clump_weight_range", clump_weight_range, 0.0, 1.0)
        self.blur_probability = check_probability("blur_probability", blur_probability)
        self.blur_kernels = [check_range("blur_kernels", k, 1, 63, integer=True) for k in blur_kernels]
        if any(k % 2 == 0 for k in self.blur_kernels) or not self.blur_kernels:
            raise ValueError(f"blur_kernels must be odd sizes, got {list(blur_kernels)}")
        self.color_jitter = float(check_range("color_jitter", color_jitter, 0.0, 0.5))
        self.poisson = bool(poisson)
        self.mixed_clone = bool(mixed_clone)
        self.reference_size = check_range("reference_size", reference_size, 1, 1 << 16, integer=True)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        # cut fills take their crops from other normal images when a donor pool is given
        self.uses_donors = "cut" in self.fills

    @staticmethod
    def _subset(name, values, allowed) -> list[str]:
        values = [values] if isinstance(values, str) else list(values)
        if not values or any(v not in allowed for v in values):
            raise ValueError(f"{name} must be a non-empty subset of {list(allowed)}, got {values}")
        return values

    # --- parameters -------------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        h, w = shape.height, shape.width
        p: dict[str, Any] = {}
        region = foreground  # None, or a non-empty region (the base class handles empty ones)
        p["shape"] = self.shapes[int(rng.integers(len(self.shapes)))]
        p["fill"] = self.fills[int(rng.integers(len(self.fills)))]
        n = int(rng.integers(self.points_range[0], self.points_range[1] + 1))
        p["points"] = [[float(x), float(y)] for x, y in rng.random((n, 2))]
        p["smoothness"] = float(rng.uniform(*self.smoothness_range))
        scale = min(h, w) / self.reference_size
        if p["shape"] == "scar":
            sw = rng.uniform(*self.scar_width_range) * scale
            sh = rng.uniform(*self.scar_height_range) * scale
            p["scar_size"] = [float(sh), float(sw)]
            p["angle"] = float(rng.uniform(*self.scar_rotation_range))
            bh, bw = self._scar_extent(p)
        else:
            bh, bw = sample_box(rng, h, w, self.area_ratio_range, self.aspect_ratio, min_side=2)
        bh, bw = min(bh, h), min(bw, w)
        p["size"] = [bh, bw]
        if p["shape"] == "clump":
            p["clump_cell"] = max(1, int(round(rng.integers(2, 6) * scale)))
            p["clump_seed"] = child_seed(rng)
        if p["fill"] == "cut":
            p["donor"] = float(rng.random())  # index = floor(donor * pool size), resolved in apply
            p["source"] = [float(rng.random()), float(rng.random())]
        else:
            f = float(rng.uniform(*self.noise_fluctuation_range))
            p["noise"] = {"mean": float(rng.uniform(*self.noise_mean_range)), "fluctuation": f,
                          "scale": int(self.noise_scales[int(rng.integers(len(self.noise_scales)))]),
                          "aspect": float(self.noise_aspects[int(rng.integers(len(self.noise_aspects)))]),
                          "seed": child_seed(rng)}
        j = self.color_jitter
        p["jitter"] = u8.sample_color_jitter(rng, j, j, j, j)
        p["weight"] = float(rng.uniform(*self.clump_weight_range)) if p["shape"] == "clump" else 1.0
        p["blur"] = int(self.blur_kernels[int(rng.integers(len(self.blur_kernels)))]) \
            if rng.random() < self.blur_probability else 0
        p["target"] = list(place_box(rng, h, w, bh, bw, region))
        return p

    @staticmethod
    def _scar_outline(p: dict) -> np.ndarray:
        sh, sw = p["scar_size"]
        outline = bezier_outline(p["points"], p["smoothness"])
        lo, hi = outline.min(0), outline.max(0)
        outline = (outline - lo) / np.maximum(hi - lo, 1e-12) * np.array([sw, sh])
        return rotate_points(outline, p["angle"])

    def _scar_extent(self, p: dict) -> tuple[int, int]:
        outline = self._scar_outline(p)
        ext = outline.max(0) - outline.min(0)
        return max(int(math.ceil(ext[1])) + 1, 2), max(int(math.ceil(ext[0])) + 1, 2)

    # --- application ------------------------------------------------------------------------
    def shape_mask(self, p: dict) -> np.ndarray:
        """The defect's ``(h, w)`` bool mask in its box."""
        bh, bw = p["size"]
        if p["shape"] == "scar":
            outline = self._scar_outline(p)
            outline = outline - outline.min(0)
            mask = np.zeros((bh, bw), np.uint8)
            cv2.fillPoly(mask, [np.round(outline * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            mask = mask.astype(bool)
        else:
            mask = fill_outline(bezier_outline(p["points"], p["smoothness"]), bh, bw)
        if p["shape"] == "clump":
            cell = p["clump_cell"]
            rng = np.random.default_rng(p["clump_seed"])
            cells = rng.random((-(-bh // cell), -(-bw // cell))) > 0.5
            blocky = np.repeat(np.repeat(cells, cell, 0), cell, 1)[:bh, :bw].astype(np.uint8)
            eroded = cv2.erode(blocky, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)
            clump = mask & eroded.astype(bool)
            mask = clump if clump.any() else mask & blocky.astype(bool)
        return mask

    def _fill(self, image: torch.Tensor, donors, p: dict, bh: int, bw: int, channels: int) -> np.ndarray:
        if p["fill"] == "cut":
            if donors is not None and len(donors):
                k = min(int(p["donor"] * len(donors)), len(donors) - 1)
                p["donor_index"] = k
                source = donors[k]
            else:
                source = image
            sh, sw = source.shape[-2:]
            sy = min(int(p["source"][0] * (sh - bh + 1)), max(sh - bh, 0))
            sx = min(int(p["source"][1] * (sw - bw + 1)), max(sw - bw, 0))
            crop = to_uint8_hwc(source[:, sy:sy + bh, sx:sx + bw])
            if crop.shape[:2] != (bh, bw):
                crop = cv2.resize(crop, (bw, bh), interpolation=cv2.INTER_LINEAR).reshape(bh, bw, -1)
        else:
            q = p["noise"]
            rng = np.random.default_rng(q["seed"])
            cy, cx = q["scale"], max(1, int(round(q["scale"] * q["aspect"])))
            lo, hi = q["mean"] - q["fluctuation"], q["mean"] + q["fluctuation"]
            cells = rng.uniform(lo, hi, (-(-bh // cy), -(-bw // cx)))
            grey = np.clip(np.rint(np.repeat(np.repeat(cells, cy, 0), cx, 1)[:bh, :bw]), 0, 255).astype(np.uint8)
            crop = grey[..., None]
        rgb = np.ascontiguousarray(np.repeat(crop, 3, 2) if crop.shape[2] == 1 else crop)
        rgb = u8.color_jitter(rgb, p["jitter"])
        if channels == 1:
            return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]) if crop.shape[2] == 3 \
                else np.ascontiguousarray(rgb[..., :1])
        return rgb

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        # Shapes, fills and Poisson fusion are OpenCV/numpy work on small boxes: the batch is
        # worked on as a CPU numpy array (no torch op per sample) and moved back at the end.
        b, c, h, w = images.shape
        source = images.cpu()
        work = clone_batch(source)
        out = work.numpy()
        masks = np.zeros((b, 1, h, w), np.float32)
        region = None if context.foreground is None else (context.foreground[:, 0] > 0.5).cpu().numpy()
        shapes = None if context.shapes is None else (context.shapes[:, 0] > 0.5).cpu().numpy()
        donors = None if context.donors is None else context.donors.cpu()
        is_uint8 = images.dtype == torch.uint8
        labels = [0] * b

        def make(i: int) -> None:
            p = params[i]
            if shapes is not None:  # a user-supplied shape replaces the Bezier outline
                ys, xs = np.nonzero(shapes[i])
                if len(ys) == 0:
                    return
                ty, tx = int(ys.min()), int(xs.min())
                mask = shapes[i][ty:ys.max() + 1, tx:xs.max() + 1].copy()
                p["size"], p["target"] = [int(mask.shape[0]), int(mask.shape[1])], [ty, tx]
            else:
                mask = self.shape_mask(p)
                ty, tx = p["target"]
            bh, bw = mask.shape
            if region is not None:
                mask &= region[i, ty:ty + bh, tx:tx + bw]
            if not mask.any():
                return
            fill = self._fill(source[i], donors, p, bh, bw, c)
            box = out[i, :, ty:ty + bh, tx:tx + bw]  # (C, bh, bw) view of the output
            if self.poisson:
                new, mask = poisson_paste(to_uint8_hwc(source[i]), fill, mask, ty, tx, self.mixed_clone)
                values = new.transpose(2, 0, 1)
                values = values if is_uint8 else uint8_array_to_float(values, box.dtype)
            else:
                alpha = mask.astype(np.float32) * np.float32(p["weight"])
                if p["blur"]:
                    k = p["blur"]
                    alpha = cv2.GaussianBlur(alpha, (k, k), 0, borderType=cv2.BORDER_CONSTANT) * mask
                target = fill.transpose(2, 0, 1).astype(np.float32)
                cur = box.astype(np.float32)
                if not is_uint8:
                    target /= np.float32(255.0)
                values = cur + alpha * (target - cur)
                values = np.clip(np.rint(values), 0, 255).astype(np.uint8) if is_uint8 else values.astype(box.dtype)
            if not mask.any():
                return
            np.copyto(box, values, where=mask[None])
            masks[i, 0, ty:ty + bh, tx:tx + bw] = mask
            labels[i] = LABELS[(p["shape"], p["fill"])]

        # Without Poisson the per-sample work is interpreter-bound (small shapes, several small
        # kernels): serial beats the 2-thread pool (1,650-1,690 vs 1,130 img/s on a quiet 2-core
        # machine). Poisson's solver releases the interpreter lock: threads help (580 vs 380).
        map_samples(make, range(b), threads=None if self.poisson else 1)
        if rngs is not None:
            # a shape that misses the region (its box is centred on a region pixel, its outline
            # need not cover it) is redrawn from the sample's own generator, a bounded number of times
            shape = ImageShape((c, h, w))
            for _ in range(self.max_attempts - 1):
                empty = [i for i in range(b) if labels[i] == 0]
                if not empty:
                    break
                for i in empty:
                    attempts = params[i].get("attempts", 1) + 1
                    fg = None if region is None else region[i]
                    fresh = self.sample_params(rngs[i], shape, fg)
                    params[i].clear()
                    params[i].update({"anomalous": True, **fresh, "attempts": attempts})
                map_samples(make, empty)
        for i in range(b):
            if labels[i] == 0:
                params[i]["empty_mask"] = "the defect missed the region in every draw; the sample stays normal"
        device = images.device
        return work.to(device), torch.from_numpy(masks).to(device), torch.tensor(labels, dtype=torch.long, device=device)


_SOURCE = "Lyu et al., 2023 (REB); ShuaiLYU/REB DefectMaker"
register_method(
    "defectmaker", family="hand-crafted", level="image",
    description="Bezier rect/scar/clump x noise or cut-from-another-image fill, pasted with edge blur; labels 1..6",
    source=_SOURCE, licence="Apache-2.0", defaults={"anomaly_probability": 1.0, "poisson": False},
)(DefectMakerSynthesizer)
register_method(
    "defectmaker_poisson", family="hand-crafted", level="image",
    description="DefectMaker with Poisson fusion (OpenCV seamlessClone)",
    source=_SOURCE, licence="Apache-2.0", defaults={"anomaly_probability": 1.0, "poisson": True}, cpu_bound=True,
)(DefectMakerSynthesizer)
