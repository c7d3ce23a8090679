"""NSA, natural synthetic anomalies: patches of other normal images, Poisson-blended.

Follows Schlüter et al., "Natural Synthetic Anomalies for Self-Supervised Anomaly Detection and
Localization", ECCV 2022; implementation hmsch/natural-synthetic-anomalies (MIT),
``self_sup_data/self_sup_tasks.py`` (``patch_ex``) and its training settings.

A sample gets ``U{1..4}`` patches (NSA's textures use 4, objects 3). Each patch has half-widths
``clip(0.03 + Gamma(2, 0.05), 0.03, 0.4)`` of the image per axis (``gamma_params=(2, 0.05, 0.03)``,
``width_bounds_pct=((0.03, 0.4), (0.03, 0.4))``), is cut at a random place from another normal
image (a donor of ``SynthesisContext.donors``; without a pool, from the image itself elsewhere,
NSA's ``same=True`` variant), resized by ``U(0.7, 1.3)`` (objects' ``resize_bounds``) and placed
at a random position; with a foreground, at least ``min_overlap`` (0.25) of the patch must lie on
it (NSA's object-aware placement). Patches are blended one after the other by Poisson image
editing (OpenCV ``seamlessClone``, ``NORMAL_CLONE``; ``nsa_mixed``: ``MIXED_CLONE``).

Labels: the per-pixel change ``delta`` (mean absolute difference over channels, 0..255) inside
the patches. The mask is ``delta > tolerance`` (``tol=1``, NSA's binary labels); the soft label
``1 / (1 + exp(-k (delta - x0)))`` with ``(k, x0) = (1/12, 24)`` (NSA's logistic-intensity labels for
bottle, cable, hazelnut) is returned as ``extras["soft_mask"]``. Pixels changed by at most the
tolerance lie outside the mask, so this method declares ``changes_outside_mask``.

Known differences: NSA also requires the source patch to lie on the donor's object
(``min_object_pct``); donors come without a foreground here, so only the destination placement
is object-aware. NSA's per-product width bounds and logistic parameters are options, not presets.

Soft failures, as NSA: a patch under 50 px, or one for which no placement fits the foreground in
``placement_attempts`` tries, is redrawn (recorded in ``params["failures"]``); a sample whose
patches all fail is left normal with the reason recorded.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.parallel import map_samples
from ..core.registry import register_method
from ..core.types import SynthesisContext
from ..core.validation import check_interval, check_range
from ..functional.shapes import poisson_paste
from ._common import clone_batch, to_uint8_hwc

__all__ = ["NSASynthesizer", "MIN_PATCH_PIXELS"]

#: NSA skips patches smaller than this many pixels.
MIN_PATCH_PIXELS = 50


class NSASynthesizer(Synthesizer):
    """NSA (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        NSA makes every training sample anomalous: 1.
    patches_range : (int, int)
        Patches per sample, inclusive: (1, 4) (NSA's ``num_patches`` for textures).
    half_width_bounds : (float, float)
        Half-width of a patch as a fraction of the image side: (0.03, 0.4) (``width_bounds_pct``).
    gamma_shape, gamma_scale, gamma_lower_bound
        Half-width = lower bound + Gamma(shape, scale), clipped to the bounds: 2, 0.05, 0.03 (``gamma_params``).
    resize_range : (float, float)
        Patch resize factor: (0.7, 1.3) (``resize_bounds`` for objects).
    min_overlap : float
        Share of the patch that must lie on the foreground, when one is given: 0.25 (``min_overlap_pct``).
    mixed_clone : bool
        Mixed-gradient Poisson blending (``nsa_mixed``).
    tolerance : float
        Change (0..255) above which a pixel is in the mask: 1 (NSA ``tol``).
    logistic_k, logistic_x0 : float
        Soft-label logistic: 1/12 and 24 (NSA ``intensity_logistic_params``).
    placement_attempts, max_failures : int
        Tries per placement, and patch redraws before a patch is given up.
    """

    any_dtype = True
    changes_outside_mask = True  # pixels changed by at most ``tolerance`` are outside the mask
    uses_donors = True  # patches come from other normal images (``SynthesisContext.donors``)
    foreground_is_hint = True  # NSA: a patch need only overlap the foreground by ``min_overlap``

    def __init__(self, anomaly_probability: float = 1.0, patches_range=(1, 4), half_width_bounds=(0.03, 0.4),
                 gamma_shape: float = 2.0, gamma_scale: float = 0.05, gamma_lower_bound: float = 0.03,
                 resize_range=(0.7, 1.3), min_overlap: float = 0.25, mixed_clone: bool = False,
                 tolerance: float = 1.0, logistic_k: float = 1 / 12, logistic_x0: float = 24.0,
                 placement_attempts: int = 50, max_failures: int = 10):
        super().__init__(anomaly_probability)
        self.patches_range = check_interval("patches_range", patches_range, 1, 64, integer=True)
        self.half_width_bounds = check_interval("half_width_bounds", half_width_bounds, 1e-3, 0.5)
        self.gamma_shape = float(check_range("gamma_shape", gamma_shape, 1e-3, 100.0))
        self.gamma_scale = float(check_range("gamma_scale", gamma_scale, 1e-6, 10.0))
        self.gamma_lower_bound = float(check_range("gamma_lower_bound", gamma_lower_bound, 0.0, 0.5))
        self.resize_range = check_interval("resize_range", resize_range, 0.05, 20.0)
        self.min_overlap = float(check_range("min_overlap", min_overlap, 0.0, 1.0))
        self.mixed_clone = bool(mixed_clone)
        self.tolerance = float(check_range("tolerance", tolerance, 0.0, 255.0))
        self.logistic_k = float(check_range("logistic_k", logistic_k, 1e-6, 100.0))
        self.logistic_x0 = float(check_range("logistic_x0", logistic_x0, 0.0, 255.0))
        self.placement_attempts = check_range("placement_attempts", placement_attempts, 1, 100_000, integer=True)
        self.max_failures = check_range("max_failures", max_failures, 0, 1000, integer=True)

    # --- parameters -------------------------------------------------------------------------
    def _half_width(self, rng) -> float:
        lo, hi = self.half_width_bounds
        return float(np.clip(self.gamma_lower_bound + rng.gamma(self.gamma_shape, self.gamma_scale), lo, hi))

    def _patch(self, rng, h: int, w: int, region: np.ndarray | None, integral: np.ndarray | None):
        """One patch's geometry, or the reason it failed."""
        hh, hw = self._half_width(rng), self._half_width(rng)
        src_h, src_w = max(1, min(h, int(round(2 * hh * h)))), max(1, min(w, int(round(2 * hw * w))))
        factor = float(rng.uniform(*self.resize_range))
        dst_h, dst_w = min(h, max(1, int(round(src_h * factor)))), min(w, max(1, int(round(src_w * factor))))
        patch = {"size": [src_h, src_w], "resize": factor, "placed_size": [dst_h, dst_w],
                 "source": [float(rng.random()), float(rng.random())], "donor": float(rng.random())}
        if dst_h * dst_w < MIN_PATCH_PIXELS:
            return None, f"patch of {dst_h}x{dst_w} px is under {MIN_PATCH_PIXELS} px"
        for _ in range(self.placement_attempts):
            ty, tx = int(rng.integers(0, h - dst_h + 1)), int(rng.integers(0, w - dst_w + 1))
            if integral is None:
                break
            inside = integral[ty + dst_h, tx + dst_w] - integral[ty, tx + dst_w] - integral[ty + dst_h, tx] + integral[ty, tx]
            if inside >= self.min_overlap * dst_h * dst_w:
                break
        else:
            return None, f"no placement with {self.min_overlap:.0%} of the patch on the foreground"
        patch["target"] = [ty, tx]
        return patch, None

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        h, w = shape.height, shape.width
        p: dict[str, Any] = {}
        region = foreground  # None, or a non-empty region (the base class handles empty ones)
        integral = None if region is None else cv2.integral(region.astype(np.uint8)).astype(np.int64)
        n = int(rng.integers(self.patches_range[0], self.patches_range[1] + 1))
        patches, failures = [], []
        for _ in range(n):
            for _attempt in range(self.max_failures + 1):
                patch, why = self._patch(rng, h, w, region, integral)
                if patch is not None:
                    patches.append(patch)
                    break
                failures.append(why)
        p["patches"] = patches
        if failures:
            p["failures"] = failures
        return p

    # --- application ------------------------------------------------------------------------
    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        out = clone_batch(images)
        masks = torch.from_numpy(np.zeros((b, 1, h, w), np.float32)).to(images.device)
        soft = torch.from_numpy(np.zeros((b, 1, h, w), np.float32)).to(images.device)
        anomalous = [0] * b
        donors = context.donors
        is_uint8 = images.dtype == torch.uint8

        def make(i: int) -> None:
            p = params[i]
            if not p["patches"]:
                p["empty_mask"] = "every patch failed: " + "; ".join(sorted(set(p.get("failures", []))))
                return
            original = to_uint8_hwc(images[i])
            current = original.copy()
            region = np.zeros((h, w), bool)
            for patch in p["patches"]:
                if donors is not None and len(donors):
                    k = min(int(patch["donor"] * len(donors)), len(donors) - 1)
                    patch["donor_index"] = k
                    source = donors[k]
                else:
                    source = images[i]
                sh, sw = patch["size"]
                H, W = source.shape[-2:]
                sh, sw = min(sh, H), min(sw, W)
                sy = min(int(patch["source"][0] * (H - sh + 1)), H - sh)
                sx = min(int(patch["source"][1] * (W - sw + 1)), W - sw)
                crop = to_uint8_hwc(source[:, sy:sy + sh, sx:sx + sw])
                if crop.shape[2] != c:
                    crop = (cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)[..., None] if c == 1
                            else np.repeat(crop, 3, 2))
                dh, dw = patch["placed_size"]
                if (dh, dw) != (sh, sw):
                    crop = cv2.resize(crop, (dw, dh), interpolation=cv2.INTER_LINEAR).reshape(dh, dw, c)
                ty, tx = patch["target"]
                box, _ = poisson_paste(current, np.ascontiguousarray(crop), np.ones((dh, dw), bool), ty, tx,
                                       self.mixed_clone)
                current[ty:ty + dh, tx:tx + dw] = box
                region[ty:ty + dh, tx:tx + dw] = True
            # labels from the change, computed on the patches' bounding box only
            ys, xs = np.nonzero(region.any(1))[0], np.nonzero(region.any(0))[0]
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            cur_box, orig_box, reg_box = current[y0:y1, x0:x1], original[y0:y1, x0:x1], region[y0:y1, x0:x1]
            diff = cv2.absdiff(cur_box, orig_box).reshape(y1 - y0, x1 - x0, c)
            delta = diff.mean(2, dtype=np.float32) * reg_box
            mask = delta > self.tolerance
            changed = torch.from_numpy(diff.max(2) > 0).to(images.device)
            values = torch.from_numpy(np.ascontiguousarray(cur_box)).permute(2, 0, 1).to(images.device)
            values = values if is_uint8 else values.to(images.dtype) / 255.0
            target = out[i, :, y0:y1, x0:x1]
            target.copy_(torch.where(changed, values, target))
            masks[i, 0, y0:y1, x0:x1] = torch.from_numpy(mask.astype(np.float32)).to(images.device)
            logistic = 1.0 / (1.0 + np.exp(-self.logistic_k * (delta - self.logistic_x0)))
            soft[i, 0, y0:y1, x0:x1] = torch.from_numpy((logistic * reg_box).astype(np.float32)).to(images.device)
            if not mask.any():
                p["empty_mask"] = f"the patches changed no pixel by more than {self.tolerance:g}"
            else:
                anomalous[i] = 1

        map_samples(make, range(b))
        labels = torch.tensor(anomalous, dtype=torch.long, device=images.device) * self.anomaly_label
        return out, masks, labels, {"soft_mask": soft}


_SOURCE = "Schlüter et al., ECCV 2022 (NSA); hmsch/natural-synthetic-anomalies"
register_method(
    "nsa", family="hand-crafted", level="image",
    description="1-4 patches of other normal images, Gamma sizes, resized 0.7-1.3, Poisson-blended; soft labels",
    source=_SOURCE, licence="MIT", defaults={"anomaly_probability": 1.0, "mixed_clone": False}, cpu_bound=True,
)(NSASynthesizer)
register_method(
    "nsa_mixed", family="hand-crafted", level="image",
    description="NSA with mixed-gradient Poisson blending (seamlessClone MIXED_CLONE)",
    source=_SOURCE, licence="MIT", defaults={"anomaly_probability": 1.0, "mixed_clone": True}, cpu_bound=True,
)(NSASynthesizer)
