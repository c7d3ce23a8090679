"""What the real-defect methods share: the bank argument, drawing an entry and its placement, warping it.

Geometry. A bank entry is placed so that it keeps its size *relative to its source image*
(``natural`` scale ``(H_target / H_source, W_target / W_source)``, the way a resized test set
shows real defects), times a drawn ``scale``. The map from crop to target pixels is
``q = c_t + s R(angle) J F N (p - c_s)``: ``N`` the natural scale, ``F`` the flip, ``J`` the shape
jitter (aspect and shear, identity for ``copy_paste``), ``R`` the rotation, ``s`` the scale,
``c_s`` the centre of the component's box in the crop and ``c_t`` the drawn centre in the target.
The centre is drawn on a foreground pixel (whole image without one) and shifted so the defect's
box lies inside the image; a defect larger than 90% of a side is scaled down to fit (recorded).
A method may anchor a defect cut off by its source image's edge (:attr:`DefectEntry.borders`) at
the target's edge instead (:func:`anchored_centre`; ``defect_transplant``'s ``anchor_edges``).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ApplyResult, ImageShape, Synthesizer
from ..core.dtype import float_array_to_uint8, luma_array_uint8, uint8_array_to_float
from ..core.types import to_jsonable
from ..core.validation import check_interval, check_probability, check_range
from ..functional.paste import place_box
from ..sources.defects import DefectBank, DefectEntry

__all__ = ["RealDefectSynthesizer", "resolve_bank", "warp_entry", "to_target_channels", "differs", "target_side",
           "anchored_centre"]

def resolve_bank(bank, method: str) -> DefectBank:
    """``bank`` as a :class:`DefectBank` (a path is loaded whole, no split)."""
    if isinstance(bank, DefectBank) or getattr(bank, "makes_entries", False):  # a bank, or a generator of entries
        return bank
    if bank is None:
        raise ValueError(f"{method} needs a bank of real defects: pass bank=DefectBank.from_folder('mvtec/bottle', "
                         f"few_shot='1/3') or a folder path (CLI: --defects CATEGORY_OR_FOLDER)")
    if isinstance(bank, (str, bytes)) or hasattr(bank, "__fspath__"):
        return DefectBank.from_folder(bank)
    if isinstance(bank, dict):  # a config's record (DefectBank.describe), e.g. from defectforge.from_config
        return DefectBank.from_description(bank)
    raise TypeError(f"bank must be a DefectBank, a folder path or a bank description, got {type(bank).__name__}")


def pick_defect_types(defect_types, available: list[str]) -> list[str]:
    """The ``defect_types`` argument (a list or a comma-separated string) checked against the
    ``available`` types; every available type when ``None``."""
    if defect_types is None:
        return list(available)
    wanted = [t.strip() for t in (defect_types.split(",") if isinstance(defect_types, str) else defect_types)]
    unknown = [t for t in wanted if t not in available]
    if unknown or not wanted:
        raise ValueError(f"defect_types={wanted}: the bank holds types {list(available)}; pick from those")
    return wanted


def to_target_channels(patch: np.ndarray, channels: int) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 crop as ``(h, w, channels)`` (grey by the usual luma weights)."""
    if channels == 3:
        return patch
    return luma_array_uint8(patch)


def differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: where two ``(h, w, C)`` arrays differ in any channel (``(a != b).any(2)``,
    without numpy's slow reduction over a short last axis)."""
    ne = a != b
    out = ne[..., 0]
    for k in range(1, ne.shape[2]):
        out = out | ne[..., k]
    return out


def _linear(p: dict, entry: DefectEntry, height: int, width: int) -> np.ndarray:
    """The 2x2 map ``s R J F N`` from crop to target pixels (x, y order).

    Written out (no matrix products: it runs for every sample): ``N = diag(nx, ny)`` the natural
    scale, ``F = diag(+-1, 1)`` the flip, ``J = [[a, shear], [0, 1/a]]`` (``a = sqrt(aspect)``),
    ``R = [[cos, sin], [-sin, cos]]`` (counter-clockwise on screen), ``s`` the scale.
    """
    nx, ny = width / entry.image_size[1], height / entry.image_size[0]
    f = -1.0 if p["flip"] else 1.0
    a = math.sqrt(p.get("aspect", 1.0))
    sh = p.get("shear", 0.0)
    t = math.radians(p["angle"])
    c, s = math.cos(t), math.sin(t)
    k = p["scale"]
    j00, j01, j11 = a * f * nx, sh * ny, ny / a  # J F N = [[j00, j01], [0, j11]]
    return np.array([[k * c * j00, k * (c * j01 + s * j11)], [-k * s * j00, k * (c * j11 - s * j01)]])


def _component_centre(entry: DefectEntry) -> tuple[float, float]:
    y0, x0, y1, x1 = entry.box
    return (x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0


def _moved_bounds(linear: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """``(min x, max x, min y, max y)`` of the rectangle ``[x0, x1] x [y0, y1]`` (relative to the
    centre) under ``linear``: each coordinate's extreme takes each term's extreme."""
    (m00, m01), (m10, m11) = linear.tolist()
    xs0, xs1 = sorted((m00 * x0, m00 * x1))
    xt0, xt1 = sorted((m01 * y0, m01 * y1))
    ys0, ys1 = sorted((m10 * x0, m10 * x1))
    yt0, yt1 = sorted((m11 * y0, m11 * y1))
    return xs0 + xt0, xs1 + xt1, ys0 + yt0, ys1 + yt1


def _extent(linear: np.ndarray, entry: DefectEntry) -> tuple[float, float]:
    """Height and width in target pixels of the component's box after the map."""
    y0, x0, y1, x1 = entry.box
    cx, cy = _component_centre(entry)
    lx, hx, ly, hy = _moved_bounds(linear, x0 - cx, y0 - cy, x1 - cx, y1 - cy)
    return hy - ly, hx - lx


_NORMALS = {"top": (0.0, -1.0), "bottom": (0.0, 1.0), "left": (-1.0, 0.0), "right": (1.0, 0.0)}


def target_side(linear: np.ndarray, source_side: str) -> str:
    """The target side a source side faces after ``linear`` (normals move by the inverse transpose).

    >>> target_side(np.array([[0.0, 1.0], [-1.0, 0.0]]), "bottom")  # 90 degrees counter-clockwise
    'right'
    """
    nx, ny = _NORMALS[source_side]
    (a, b), (c, d) = linear.tolist()
    sign = 1.0 if a * d - b * c > 0 else -1.0
    mx, my = sign * (d * nx - c * ny), sign * (-b * nx + a * ny)
    return max(_NORMALS, key=lambda k: _NORMALS[k][0] * mx + _NORMALS[k][1] * my)


def anchored_centre(rng: np.random.Generator, side: str, eh: float, ew: float, height: int, width: int,
                    region: np.ndarray | None, overshoot: float) -> list[float]:
    """Centre ``[y, x]`` of an ``eh x ew`` defect whose ``side`` lies ``overshoot`` pixels beyond the edge.

    The edge is the image's border, or with a ``region`` (foreground) the region's outermost pixel on
    that side in a uniformly drawn row or column of it (the part's own edge); along the edge the
    position is uniform, the box kept inside the image.
    """
    hy, hx = (eh - 1) / 2.0, (ew - 1) / 2.0
    vertical = side in ("top", "bottom")
    half_along, half_across = (hx, hy) if vertical else (hy, hx)
    n_along, n_across = (width, height) if vertical else (height, width)
    lo, hi = half_along, n_along - 1 - half_along
    if region is None:
        along = rng.uniform(lo, hi) if hi > lo else (n_along - 1) / 2.0
        edge = 0 if side in ("top", "left") else n_across - 1
    else:
        lines = np.flatnonzero(region.any(0 if vertical else 1))
        line = int(lines[int(rng.integers(len(lines)))])
        inside = np.flatnonzero(region[:, line] if vertical else region[line])
        edge = int(inside[0] if side in ("top", "left") else inside[-1])
        along = min(max(float(line), lo), hi) if hi > lo else (n_along - 1) / 2.0
    across = edge - overshoot + half_across if side in ("top", "left") else edge + overshoot - half_across
    return [across, along] if vertical else [along, across]


def warp_entry(entry: DefectEntry, p: dict, height: int, width: int, displacement=None, surround: bool = True):
    """Warp an entry into the target frame.

    Returns ``(top, left, crop, own, context, valid)``: the canvas's place in the target and, on
    the canvas, the warped crop ``(h, w, 3)`` uint8, the warped component, the warped surface
    around it and where the crop has data (all ``(h, w)`` bool); ``None`` when the canvas falls
    outside the image. ``displacement(h, w) -> (dx, dy)`` adds an elastic field (target pixels).
    Without ``surround`` only the component's box is warped (``context`` and ``valid`` are ``None``).
    """
    linear = _linear(p, entry, height, width)
    cx, cy = _component_centre(entry)
    tx, ty = float(p["centre"][1]), float(p["centre"][0])
    if surround:
        sy0, sx0, (sy1, sx1) = 0, 0, entry.crop.shape[:2]
    else:
        sy0, sx0, sy1, sx1 = entry.box
    lx, hx, ly, hy = _moved_bounds(linear, sx0 - cx, sy0 - cy, sx1 - 1 - cx, sy1 - 1 - cy)
    pad = 2 + (p.get("elastic_pad", 0) or 0)
    left = max(int(math.floor(lx + tx)) - pad, 0)
    top = max(int(math.floor(ly + ty)) - pad, 0)
    right = min(int(math.ceil(hx + tx)) + pad + 1, width)
    bottom = min(int(math.ceil(hy + ty)) + pad + 1, height)
    if right - left < 2 or bottom - top < 2:
        return None
    h, w = bottom - top, right - left
    (m00, m01), (m10, m11) = linear.tolist()
    det = m00 * m11 - m01 * m10
    inv = np.array([[m11 / det, -m01 / det], [-m10 / det, m00 / det]])
    offset = np.array([cx - sx0, cy - sy0]) - inv @ np.array([tx - left, ty - top])
    # one 4-channel warp: RGB + component; a second for surround and validity
    first, second = entry.layers()
    first = first[sy0:sy1, sx0:sx1]
    if displacement is None:
        m = np.hstack([inv, offset[:, None]]).astype(np.float64)

        def warp(img):
            return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    else:
        dx, dy = displacement(h, w)
        u, v = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        qx, qy = u + dx, v + dy
        inv32 = inv.astype(np.float32)
        map_x = inv32[0, 0] * qx + inv32[0, 1] * qy + np.float32(offset[0])
        map_y = inv32[1, 0] * qx + inv32[1, 1] * qy + np.float32(offset[1])

        def warp(img):
            return cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = warp(first)
    crop, own = a[..., :3], a[..., 3] >= 128
    if not surround:
        return top, left, crop, own, None, None
    b = warp(second)
    valid = b[..., 1] == 255
    return top, left, crop, own & valid, (b[..., 0] >= 128) & valid, valid


class RealDefectSynthesizer(Synthesizer):
    """Base of the methods that place real defects from a :class:`~defectforge.sources.DefectBank`.

    Parameters
    ----------
    bank : DefectBank or path-like
        The real defects (a path loads every defect of the folder, no split).
    anomaly_probability : float
    defect_types : list of str, optional
        Only these types of the bank (default every type). A type is drawn uniformly, then an
        entry of that type uniformly.
    flip_probability : float
        Horizontal flip (with the rotations this gives every mirror image).
    scale_range : (float, float)
        Factor on the defect's natural size (its size relative to its source image).
    max_attempts : int
        Draws per sample while a placement changes no pixel (then the sample stays normal).
    """

    any_dtype = True
    #: Needs a bank of real defects (``bank=``): test matrices and "every method" lists check this.
    needs_bank = True
    #: Threads for the per-sample loop (None: torch's thread count; 1: in the calling thread, for
    #: methods whose per-sample work is too short for a thread pool to pay off).
    sample_threads: int | None = None

    def __init__(self, bank=None, anomaly_probability: float = 1.0, defect_types=None, flip_probability: float = 0.5,
                 scale_range=(0.75, 1.25), max_attempts: int = 10):
        super().__init__(anomaly_probability)
        self.bank = resolve_bank(bank, type(self).__name__)
        self.defect_types = pick_defect_types(defect_types, self.bank.types)
        self.flip_probability = check_probability("flip_probability", flip_probability)
        self.scale_range = check_interval("scale_range", scale_range, 0.01, 100.0)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 1000, integer=True)

    def config(self) -> dict[str, Any]:
        """Constructor arguments; the bank as its description (:meth:`DefectBank.describe`: source, split,
        entries), from which ``defectforge.from_config`` rebuilds a folder bank."""
        cfg = super().config()
        cfg["bank"] = to_jsonable(self.bank.describe())
        return cfg

    # --- drawing ----------------------------------------------------------------------------
    def _draw_shape(self, rng: np.random.Generator, p: dict, entry: DefectEntry) -> None:
        """Method-specific draws (rotation, jitter); the base draws the rotation only."""
        p["angle"] = float(rng.integers(0, 4) * 90)

    def _draw_entry(self, rng: np.random.Generator, defect_type: str) -> DefectEntry:
        """An entry of ``defect_type``, uniformly (a generator of entries makes one instead)."""
        entries = self.bank.of_type(defect_type)
        return entries[int(rng.integers(len(entries)))]

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        h, w = shape.height, shape.width
        t = self.defect_types[int(rng.integers(len(self.defect_types)))]
        entry = self._draw_entry(rng, t)
        p: dict[str, Any] = {"defect_type": t, "entry": entry.key, "flip": bool(rng.random() < self.flip_probability)}
        if getattr(entry, "mask_kind", "pixel") != "pixel":  # its mask is a box, not the defect's outline
            p["mask_kind"] = entry.mask_kind
        p["scale"] = float(rng.uniform(*self.scale_range))
        self._draw_shape(rng, p, entry)
        linear = _linear(p, entry, h, w)
        eh, ew = _extent(linear, entry)
        source_side = self._anchor_from(rng, entry)
        side = None if source_side is None else target_side(linear, source_side)
        # larger than 90% of a side: scaled down to fit; a defect at an edge only across the edge (along
        # it, as in its source, it may run off the image)
        fit = min(1.0, 0.9 * h / max(eh, 1e-6) if side not in ("left", "right") else 1.0,
                  0.9 * w / max(ew, 1e-6) if side not in ("top", "bottom") else 1.0)
        if fit < 1.0:
            p["scale"] *= fit
            p["scaled_to_fit"] = fit
            eh, ew = eh * fit, ew * fit
        bh, bw = max(1, int(math.ceil(eh))), max(1, int(math.ceil(ew)))
        region = foreground if foreground is not None and foreground.any() else None
        if side is None:
            top, left = place_box(rng, h, w, min(bh, h), min(bw, w), region)
            p["centre"] = [top + (eh - 1) / 2.0, left + (ew - 1) / 2.0]
        else:
            p["anchor"] = {"source_side": source_side, "side": side}
            p["centre"] = anchored_centre(rng, side, eh, ew, h, w, region, self._overshoot(eh, ew))
        return p

    def _anchor_from(self, rng: np.random.Generator, entry: DefectEntry) -> str | None:
        """The side of its source image by which an entry is placed at the target's edge, or ``None``
        (placed anywhere). The base never anchors; ``defect_transplant`` does with ``anchor_edges``."""
        return None

    def _overshoot(self, eh: float, ew: float) -> float:
        """Pixels an anchored defect's cut side is placed beyond the target's edge (no gap left)."""
        return 1.0

    # --- application ------------------------------------------------------------------------
    def _make(self, window, shape: tuple[int, int, int], p: dict, entry: DefectEntry, region: np.ndarray | None):
        """``(top, left, new box, changed)`` for one sample, or ``None`` when nothing changed.

        ``window(y0, y1, x0, x1)`` gives that part of the target as ``(h, w, C)`` uint8; ``shape``
        is the target's ``(H, W, C)``.
        """
        raise NotImplementedError

    def _sample(self, out_np: np.ndarray, images_np: np.ndarray, masks: np.ndarray, params: list[dict], rngs,
                fg: np.ndarray | None, i: int, is_uint8: bool) -> bool:
        c, h, w = out_np.shape[1:]
        original = images_np[i]

        def window(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
            part = original[:, y0:y1, x0:x1]
            if not is_uint8:
                part = float_array_to_uint8(part)
            return np.ascontiguousarray(part.transpose(1, 2, 0))

        region = None if fg is None or not fg[i].any() else fg[i]
        while True:
            p = params[i]
            made = self._make(window, (h, w, c), p, self.bank.get(p["entry"]), region)
            if made is not None or rngs is None:
                break
            if p.get("attempts", 1) >= self.max_attempts:
                p["empty_mask"] = f"no placement changed a pixel in {self.max_attempts} draws; the sample stays normal"
                return False
            attempts = p.get("attempts", 1) + 1
            params[i] = {"anomalous": True, **self.sample_params(rngs[i], ImageShape((c, h, w)), region),
                         "attempts": attempts}
        if made is None:
            return False
        top, left, box, changed = made
        bh, bw = changed.shape
        target = out_np[i, :, top:top + bh, left:left + bw]
        values = box.transpose(2, 0, 1)
        if not is_uint8:
            values = uint8_array_to_float(values, out_np.dtype)
        np.copyto(target, values, where=changed[None])
        masks[i, 0, top:top + bh, left:left + bw] = changed
        return True

    def apply(self, images: torch.Tensor, params: list[dict], context, rngs):
        """``apply``: every sample made by :meth:`_sample`, spread over the per-sample thread pool."""
        from ..core.parallel import map_samples

        b, c, h, w = images.shape
        is_uint8 = images.dtype == torch.uint8
        cpu = images.detach().cpu()
        images_np = cpu.numpy()
        # a copy made by numpy (torch's threaded copy stalls on a busy machine)
        out = torch.from_numpy(np.array(images_np, copy=True, order="C"))
        out_np = out.numpy()
        masks = np.zeros((b, 1, h, w), np.float32)
        fg = None if context.foreground is None else (context.foreground[:, 0] > 0.5).cpu().numpy()

        def make(i: int) -> bool:
            return self._sample(out_np, images_np, masks, params, rngs, fg, i, is_uint8)

        done = map_samples(make, range(b), self.sample_threads)
        labels = torch.tensor([int(d) for d in done], dtype=torch.long) * self.anomaly_label
        dev = images.device
        return ApplyResult(out.to(dev), torch.from_numpy(masks).to(dev), labels.to(dev))
