"""``real_only``: the user's real defect images themselves, with standard augmentation, as a source.

Not a synthesis method: the few-shot reference that every synthesis must beat. The generative
papers (AnomalyDiffusion, SeaS, DualAnoDiff; ``../shared/reference/methods.md``, "Few-shot
protocol") train a segmentation network on their generated pairs *plus* the third of each type's
real anomalies; as a registered method, ``real_only`` is that third, so it can stand alone (the
``real_only`` row of ``defectforge benchmark --few-shot``) or be mixed with synthesis per sample
(``defectforge.mix(["real_only", "defect_transplant"], bank=...)``, ``-m "real_only+glass_las"``).

Per sample: one of the bank's whole training images (uniform over the images, or over the
images of ``defect_types``), then the augmentation every segmentation pipeline applies to few
real samples (chosen here; the papers name no values): a horizontal and a vertical flip (each
p = 0.5) and a rotation by 0, 90, 180 or 270 degrees (uniform; together every symmetry of the
square), a zoom about the centre by ``U(scale_range)`` (default 0.9-1.1; reflected borders, the
mask warped alike), brightness ``U(brightness_range)`` (x0.9-1.1) and contrast
``U(contrast_range)`` (x0.9-1.1 about the image mean). ``augment=False`` returns the images as
they are (the benchmark's ``real_only`` before augmentation). The real image is resized to the
batch's size (area interpolation; the mask nearest), as the benchmark loads its images, so the
*input* normal image is replaced: pixels outside the mask change (``changes_outside_mask``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from ..core.base import ApplyResult, ImageShape, Synthesizer
from ..core.registry import register_method
from ..core.types import SynthesisContext, to_jsonable
from ..core.validation import check_interval, check_probability
from ._common import pick_defect_types, resolve_bank, to_target_channels

__all__ = ["RealOnlySource"]


class RealOnlySource(Synthesizer):
    """The bank's whole real defect images, augmented (see the module docstring).

    Parameters
    ----------
    bank : DefectBank or path-like
        The real defects (its whole training images are used).
    anomaly_probability : float
    defect_types : list of str, optional
        Only images of these types (default every type).
    augment : bool
        Apply the flips, rotations, zoom and colour jitter (default ``True``).
    flip_probability : float
        Probability of each of the horizontal and vertical flips (0.5).
    scale_range, brightness_range, contrast_range : (float, float)
        Zoom about the centre, brightness factor, contrast factor (each 0.9-1.1).

    Examples
    --------
    >>> import numpy as np, torch, defectforge
    >>> from defectforge.sources.defects import DefectBank
    >>> image = np.full((64, 64, 3), 120, np.uint8); mask = np.zeros((64, 64), np.uint8)
    >>> image[20:30, 10:40] = 30; mask[20:30, 10:40] = 255
    >>> bank = DefectBank.from_arrays([image], [mask], ["scratch"])
    >>> out = defectforge.create("real_only", bank=bank)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), seed=0)
    >>> out.params[0]["defect_type"], tuple(out.masks.shape), bool(out.masks[0].any())
    ('scratch', (2, 1, 32, 32), True)
    """

    any_dtype = True
    changes_outside_mask = True  # the whole image is the real one
    foreground_is_hint = True  # the real mask is the truth of its image: never cut to a foreground
    needs_bank = True

    def __init__(self, bank=None, anomaly_probability: float = 1.0, defect_types=None, augment: bool = True,
                 flip_probability: float = 0.5, scale_range=(0.9, 1.1), brightness_range=(0.9, 1.1),
                 contrast_range=(0.9, 1.1)):
        super().__init__(anomaly_probability)
        self.bank = resolve_bank(bank, type(self).__name__)
        images = list(getattr(self.bank, "images", []))
        self.defect_types = None if defect_types is None else \
            pick_defect_types(defect_types, sorted({im.defect_type for im in images}))
        images = [im for im in images if self.defect_types is None or im.defect_type in self.defect_types]
        if not images:
            raise ValueError(f"real_only needs whole real defect images: the bank ({self.bank.identity}) holds none "
                             "(a bank from DefectBank.from_folder or from_arrays keeps them)")
        self.sources = images
        self.augment = bool(augment)
        self.flip_probability = check_probability("flip_probability", flip_probability)
        self.scale_range = check_interval("scale_range", scale_range, 0.25, 4.0)
        self.brightness_range = check_interval("brightness_range", brightness_range, 0.0, 10.0)
        self.contrast_range = check_interval("contrast_range", contrast_range, 0.0, 10.0)

    def config(self) -> dict[str, Any]:
        """Constructor arguments, the bank as its description (rebuilt by ``defectforge.from_config``)."""
        cfg = super().config()
        cfg["bank"] = to_jsonable(self.bank.describe())
        return cfg

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        k = int(rng.integers(len(self.sources)))
        p: dict[str, Any] = {"defect_type": self.sources[k].defect_type, "source": self.sources[k].name}
        if self.augment:
            p.update(hflip=bool(rng.random() < self.flip_probability), vflip=bool(rng.random() < self.flip_probability),
                     rotation=int(rng.integers(0, 4)) * 90, scale=float(rng.uniform(*self.scale_range)),
                     brightness=float(rng.uniform(*self.brightness_range)),
                     contrast=float(rng.uniform(*self.contrast_range)))
        return p

    def _source(self, name: str):
        found = getattr(self, "_by_name", None)
        if found is None:
            found = self._by_name = {im.name: im for im in self.sources}
        if name not in found:
            raise ValueError(f"real_only: the recorded source {name!r} is not among this bank's images")
        return found[name]

    def _make(self, p: dict[str, Any], h: int, w: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """One sample as ``(h, w, channels)`` uint8 and ``(h, w)`` bool."""
        src = self._source(p["source"])
        image, mask = src.image, src.mask.view(np.uint8)
        if p.get("hflip"):
            image, mask = image[:, ::-1], mask[:, ::-1]
        if p.get("vflip"):
            image, mask = image[::-1], mask[::-1]
        turns = int(p.get("rotation", 0)) // 90
        if turns:
            image, mask = np.rot90(image, turns), np.rot90(mask, turns)
        image = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(np.ascontiguousarray(mask) * np.uint8(255), (w, h), interpolation=cv2.INTER_NEAREST)
        scale = float(p.get("scale", 1.0))
        if scale != 1.0:  # zoom about the centre; reflected borders for both, so no defect pixel goes unlabelled
            m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), 0.0, scale)
            image = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)
        if "brightness" in p:
            x = image.astype(np.float32)
            x = (x - x.mean()) * float(p["contrast"]) + x.mean()
            image = np.clip(np.rint(x * float(p["brightness"])), 0, 255).astype(np.uint8)
        return to_target_channels(image, channels), mask >= 128

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs) -> ApplyResult:
        b, c, h, w = images.shape
        made = [self._make(p, h, w, c) for p in params]
        out = torch.from_numpy(np.stack([m[0] for m in made])).permute(0, 3, 1, 2).to(images.device)
        if images.dtype != torch.uint8:
            out = out.to(images.dtype) / 255.0
        masks = torch.from_numpy(np.stack([m[1] for m in made]))[:, None].to(images.device, torch.float32)
        labels = torch.full((b,), self.anomaly_label, dtype=torch.long, device=images.device)
        return ApplyResult(out, masks, labels)


register_method(
    "real_only", family="real-defect", level="image",
    description="the bank's whole real defect images, flipped, rotated by 90s, zoomed 0.9-1.1, brightness/contrast 0.9-1.1",
    source="the few-shot papers' real third (AnomalyDiffusion, SeaS, DualAnoDiff); augmentation chosen here",
    licence="-", defaults={"anomaly_probability": 1.0},
)(RealOnlySource)
