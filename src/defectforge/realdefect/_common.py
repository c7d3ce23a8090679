"""What the real-defect methods share: the bank argument, drawing an entry and its placement, warping it.

Geometry. A bank entry is placed so that it keeps its size *relative to its source image*
(``natural`` scale ``(H_target / H_source, W_target / W_source)``, the way a resized test set
shows real defects), times a drawn ``scale``. The map from crop to target pixels is
``q = c_t + s R(angle) J F N (p - c_s)``: ``N`` the natural scale, ``F`` the flip, ``J`` the shape
jitter (aspect and shear, identity for ``copy_paste``), ``R`` the rotation, ``s`` the scale,
``c_s`` the centre of the component's box in the crop and ``c_t`` the drawn centre in the target.
The centre is drawn on a foreground pixel (whole image without one) and shifted so the defect's
box lies inside the image; a defect larger than 90% of a side is scaled down to fit (recorded).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ApplyResult, ImageShape, Synthesizer
from ..core.types import to_jsonable
from ..core.validation import check_interval, check_probability, check_range
from ..functional.paste import place_box
from ..sources.defects import DefectBank, DefectEntry

__all__ = ["RealDefectSynthesizer", "resolve_bank", "warp_entry", "to_target_channels"]

_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


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


def to_target_channels(patch: np.ndarray, channels: int) -> np.ndarray:
    """An ``(h, w, 3)`` uint8 crop as ``(h, w, channels)`` (grey by the usual luma weights)."""
    if channels == 3:
        return patch
    grey = patch.astype(np.float32) @ _LUMA
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[..., None]


def _linear(p: dict, entry: DefectEntry, height: int, width: int) -> np.ndarray:
    """The 2x2 map ``s R J F N`` from crop to target pixels (x, y order)."""
    nat = np.diag([width / entry.image_size[1], height / entry.image_size[0]])
    flip = np.diag([-1.0 if p["flip"] else 1.0, 1.0])
    a = math.sqrt(p.get("aspect", 1.0))
    jitter = np.array([[a, p.get("shear", 0.0)], [0.0, 1.0 / a]])
    t = math.radians(p["angle"])
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])  # counter-clockwise on screen
    return p["scale"] * rot @ jitter @ flip @ nat


def _component_centre(entry: DefectEntry) -> np.ndarray:
    y0, x0, y1, x1 = entry.box
    return np.array([(x0 + x1 - 1) / 2.0, (y0 + y1 - 1) / 2.0])


def _extent(linear: np.ndarray, entry: DefectEntry) -> tuple[float, float]:
    """Height and width in target pixels of the component's box after the map."""
    y0, x0, y1, x1 = entry.box
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], float) - _component_centre(entry)
    moved = corners @ linear.T
    return float(np.ptp(moved[:, 1])), float(np.ptp(moved[:, 0]))


def warp_entry(entry: DefectEntry, p: dict, height: int, width: int, displacement=None, surround: bool = True):
    """Warp an entry into the target frame.

    Returns ``(top, left, crop, own, context, valid)``: the canvas's place in the target and, on
    the canvas, the warped crop ``(h, w, 3)`` uint8, the warped component, the warped surface
    around it and where the crop has data (all ``(h, w)`` bool); ``None`` when the canvas falls
    outside the image. ``displacement(h, w) -> (dx, dy)`` adds an elastic field (target pixels).
    Without ``surround`` only the component's box is warped (``context`` and ``valid`` are ``None``).
    """
    linear = _linear(p, entry, height, width)
    c_s = _component_centre(entry)
    c_t = np.array([p["centre"][1], p["centre"][0]], float)
    if surround:
        sy0, sx0, (sy1, sx1) = 0, 0, entry.crop.shape[:2]
    else:
        sy0, sx0, sy1, sx1 = entry.box
    corners = np.array([[sx0, sy0], [sx1 - 1, sy0], [sx0, sy1 - 1], [sx1 - 1, sy1 - 1]], float) - c_s
    moved = corners @ linear.T + c_t
    pad = 2 + (p.get("elastic_pad", 0) or 0)
    left = max(int(math.floor(moved[:, 0].min())) - pad, 0)
    top = max(int(math.floor(moved[:, 1].min())) - pad, 0)
    right = min(int(math.ceil(moved[:, 0].max())) + pad + 1, width)
    bottom = min(int(math.ceil(moved[:, 1].max())) + pad + 1, height)
    if right - left < 2 or bottom - top < 2:
        return None
    h, w = bottom - top, right - left
    inv = np.linalg.inv(linear)
    offset = c_s - inv @ (c_t - np.array([left, top], float)) - np.array([sx0, sy0], float)
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
    _rotation_step: float | None = None  # 90 for copy_paste; None = any angle in angle_range

    def __init__(self, bank=None, anomaly_probability: float = 1.0, defect_types=None, flip_probability: float = 0.5,
                 scale_range=(0.75, 1.25), max_attempts: int = 10):
        super().__init__(anomaly_probability)
        self.bank = resolve_bank(bank, type(self).__name__)
        if defect_types is None:
            self.defect_types = self.bank.types
        else:
            wanted = [t.strip() for t in (defect_types.split(",") if isinstance(defect_types, str) else defect_types)]
            unknown = [t for t in wanted if t not in self.bank.types]
            if unknown or not wanted:
                raise ValueError(f"defect_types={wanted}: the bank holds types {self.bank.types}; pick from those")
            self.defect_types = wanted
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
        p["scale"] = float(rng.uniform(*self.scale_range))
        self._draw_shape(rng, p, entry)
        eh, ew = _extent(_linear(p, entry, h, w), entry)
        fit = min(1.0, 0.9 * h / max(eh, 1e-6), 0.9 * w / max(ew, 1e-6))
        if fit < 1.0:
            p["scale"] *= fit
            p["scaled_to_fit"] = fit
            eh, ew = eh * fit, ew * fit
        bh, bw = max(1, int(math.ceil(eh))), max(1, int(math.ceil(ew)))
        region = foreground if foreground is not None and foreground.any() else None
        top, left = place_box(rng, h, w, min(bh, h), min(bw, w), region)
        p["centre"] = [top + (eh - 1) / 2.0, left + (ew - 1) / 2.0]
        return p

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
                part = np.clip(np.rint(part * 255.0), 0, 255).astype(np.uint8)
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
            values = values.astype(out_np.dtype) / out_np.dtype.type(255.0)
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

        done = map_samples(make, range(b))
        labels = torch.tensor([int(d) for d in done], dtype=torch.long) * self.anomaly_label
        dev = images.device
        return ApplyResult(out.to(dev), torch.from_numpy(masks).to(dev), labels.to(dev))
