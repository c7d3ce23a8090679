"""Regions of interest ("foreground"): where on an image a defect may be placed.

Image-level methods take a ``(B, 1, H, W)`` foreground in ``{0, 1}`` through
:class:`~defectforge.core.types.SynthesisContext` and keep their defects inside it. This module
makes that region from:

- a grey-level threshold: Otsu's (1979) automatic threshold, or a fixed one, optionally inverted
  (MemSeg's per-product foreground masks are a grey threshold with an invert flag);
- spectral-residual saliency (Hou & Zhang, CVPR 2007), for objects on plain backgrounds when no
  threshold fits (DefectMaker/REB places defects on salient pixels);
- a folder of per-image masks (:class:`MaskFolder`), e.g. from a segmentation tool;
- nothing: the whole image (textures, where every pixel may carry a defect).

:func:`foreground_batch` turns a spec (``None``, ``"otsu"``, ``"saliency"``, a
:class:`Threshold`, a :class:`Saliency` or a :class:`MaskFolder`) into the batch's region. An
estimate that comes out empty falls back to the whole image, with a warning and a note in
:attr:`ForegroundResult.fallbacks`, so synthesis never waits for a placement that cannot exist.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core.dtype import LUMA_WEIGHTS_F32, uint8_array_to_float
from ..core.validation import check_choice, check_range

__all__ = ["Threshold", "Saliency", "MaskFolder", "ForegroundResult", "estimate_foreground",
           "foreground_batch", "parse_foreground", "FOREGROUND_MODES"]

#: Names accepted by :func:`parse_foreground` (and the CLI's ``--foreground``).
FOREGROUND_MODES = ("none", "otsu", "threshold", "saliency")
_LUMA = tuple(LUMA_WEIGHTS_F32)


def _gray(images: torch.Tensor) -> np.ndarray:
    """``(B, H, W)`` float32 grey levels in ``[0, 1]`` of a uint8 or float batch.

    Computed in numpy on the CPU: region estimation is per-image work, and batch-wide torch
    operations stall on a busy machine when torch's intra-op threads cannot get their cores.
    """
    x = images.detach().cpu().numpy()
    x = uint8_array_to_float(x) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    if x.shape[1] == 3:
        return _LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2]
    return np.ascontiguousarray(x[:, 0])


def _to_masks(fg: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(fg[:, None], dtype=np.float32)).to(like.device)


@dataclass(frozen=True)
class Threshold:
    """Foreground = pixels brighter than a grey threshold (darker with ``invert``).

    Parameters
    ----------
    value : float or None
        Threshold on grey levels in ``[0, 1]``; ``None`` computes Otsu's threshold per image.
    invert : bool
        Take the pixels below the threshold (dark objects on a bright background).

    Examples
    --------
    >>> import torch
    >>> img = torch.zeros(1, 1, 8, 8, dtype=torch.uint8); img[..., 2:6, 2:6] = 200
    >>> int(Threshold().masks(img).sum())
    16
    """

    value: float | None = None
    invert: bool = False

    def __post_init__(self):
        if self.value is not None:
            check_range("foreground threshold", self.value, 0.0, 1.0)

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        gray = _gray(images)
        if self.value is None:
            g8 = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
            level = np.array([cv2.threshold(g, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)[0] / 255.0 for g in g8],
                             np.float32).reshape(-1, 1, 1)
        else:
            level = np.float32(self.value)
        fg = gray <= level if self.invert else gray > level
        return _to_masks(fg, images)


@dataclass(frozen=True)
class Saliency:
    """Foreground = spectral-residual salient pixels (Hou & Zhang, CVPR 2007).

    The grey image, resized to ``scale x scale`` (64 in the paper), has its log-amplitude spectrum
    minus its 3x3 local mean (the spectral residual) recombined with the phase; the squared
    inverse transform, Gaussian-smoothed (sigma ``scale/8``, the paper's 8 px at 64), is the
    saliency map. Pixels above ``factor`` x its mean (3 in the paper) are salient.
    """

    scale: int = 64
    factor: float = 3.0

    def __post_init__(self):
        check_range("saliency scale", self.scale, 8, 1024, integer=True)
        check_range("saliency factor", self.factor, 0.0, 100.0)

    def saliency(self, images: torch.Tensor) -> torch.Tensor:
        """Saliency maps ``(B, 1, H, W)`` float, each scaled to max 1."""
        return torch.from_numpy(self._saliency(_gray(images))[:, None]).to(images.device)

    def _saliency(self, gray: np.ndarray) -> np.ndarray:
        b, h, w = gray.shape
        out = np.empty((b, h, w), np.float32)
        sigma = self.scale / 8.0
        ksize = 2 * int(3 * sigma) + 1
        for i in range(b):
            small = cv2.resize(gray[i], (self.scale, self.scale), interpolation=cv2.INTER_AREA).astype(np.float64)
            spectrum = np.fft.fft2(small)
            amp = np.abs(spectrum)
            # Exact spectral zeros (flat synthetic images) would dominate the residual: floor them
            # at 1% of the median amplitude.
            log_amp = np.log(np.maximum(amp, 0.01 * max(float(np.median(amp)), 1e-12)))
            residual = log_amp - cv2.blur(log_amp, (3, 3), borderType=cv2.BORDER_REPLICATE)
            sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
            sal = cv2.GaussianBlur(sal.astype(np.float32), (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
            sal = cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR)
            out[i] = sal / max(float(sal.max()), 1e-12)
        return out

    def masks(self, images: torch.Tensor) -> torch.Tensor:
        sal = self._saliency(_gray(images))
        return _to_masks(sal > self.factor * sal.reshape(len(sal), -1).mean(1).reshape(-1, 1, 1), images)


class MaskFolder:
    """Per-image foreground masks from a folder: ``<folder>/<image stem>.png`` (any image type).

    A mask is matched to an image by the image's relative path without extension (``a/b.png``
    looks for ``a/b.*``, then ``b.*`` at the top, then ``b_mask.*``), and read as its image is
    (:func:`~defectforge.io.images.read_image`: orientation, transparency), so both line up.
    Non-zero pixels are foreground; a mask with more than two grey levels (a JPEG) is refused
    unless ``mask_threshold`` (``--mask-threshold``) says from which grey level a pixel is foreground.
    A mask of another size than its image is resized (nearest neighbour) with a warning; an
    image without a mask raises an error naming the missing file.
    """

    def __init__(self, folder: str | os.PathLike, mask_threshold: int | None = None):
        from ..io.images import list_images

        self.mask_threshold = None if mask_threshold is None else int(
            check_range("mask threshold (--mask-threshold)", mask_threshold, 1, 255, integer=True))
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise NotADirectoryError(f"foreground mask folder {self.folder} does not exist; "
                                     "pass a folder with one mask per image (same file name)")
        files = list_images(self.folder)
        if not files:
            raise ValueError(f"foreground mask folder {self.folder} holds no images")
        self._by_key: dict[str, Path] = {}
        for f in files:
            rel = f.relative_to(self.folder).with_suffix("").as_posix()
            self._by_key.setdefault(rel, f)
            self._by_key.setdefault(f.stem, f)
            if f.stem.endswith("_mask"):
                self._by_key.setdefault(f.stem[:-5], f)
        self._cache: dict[tuple, np.ndarray] = {}

    def path_for(self, name: str) -> Path:
        key = Path(name).with_suffix("").as_posix()
        for k in (key, Path(key).name):
            if k in self._by_key:
                return self._by_key[k]
        raise FileNotFoundError(f"no foreground mask for image {name!r} in {self.folder} "
                                f"(expected {self.folder / (Path(key).name + '.png')})")

    def read(self, name: str) -> np.ndarray:
        """The bool mask of image ``name`` (its path relative to the input folder) at its own size.

        Raises
        ------
        ValueError
            A mask that is not binary and no ``threshold``; an unreadable file.
        """
        from ..io.images import binary_mask, read_image

        path = self.path_for(name)
        return binary_mask(read_image(path, channels=1)[..., 0], path, self.mask_threshold, what="foreground mask")

    def mask(self, name: str, height: int, width: int) -> np.ndarray:
        """The ``(height, width)`` bool mask of image ``name`` (its path relative to the input folder)."""
        path = self.path_for(name)
        key = (str(path), height, width)
        if key not in self._cache:
            m = self.read(name)
            if m.shape != (height, width):
                warnings.warn(f"foreground mask {path} is {m.shape[1]}x{m.shape[0]} but its image is "
                              f"{width}x{height}; resized (nearest neighbour)", stacklevel=3)
                m = cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
            self._cache[key] = m
        return self._cache[key]

    def masks(self, images: torch.Tensor, names=None) -> torch.Tensor:
        if names is None or len(names) != images.shape[0]:
            raise ValueError("MaskFolder needs the file name of every image of the batch (names=...)")
        h, w = images.shape[-2:]
        return _to_masks(np.stack([self.mask(n, h, w) for n in names]), images)


@dataclass
class ForegroundResult:
    """Foreground masks ``(B, 1, H, W)`` and, per image, why a fallback was used (or ``None``)."""

    masks: torch.Tensor
    fallbacks: list[str | None] = field(default_factory=list)


def parse_foreground(mode, threshold: float | None = None, invert: bool = False,
                     mask_folder: str | os.PathLike | None = None, mask_threshold: int | None = None):
    """A spec from CLI-style options: ``mode`` in :data:`FOREGROUND_MODES` or a spec object.

    ``mask_threshold`` (``--mask-threshold``) is the grey level from which a pixel of a
    near-binary ``mask_folder`` mask is foreground (see :class:`MaskFolder`).

    Examples
    --------
    >>> parse_foreground("otsu", invert=True)
    Threshold(value=None, invert=True)
    >>> parse_foreground("none") is None
    True
    """
    if mask_folder is not None:
        if mode not in (None, "none"):
            raise ValueError("give either a foreground mode or a mask folder, not both")
        return MaskFolder(mask_folder, mask_threshold)
    if mode is None or isinstance(mode, (Threshold, Saliency, MaskFolder)):
        return mode
    check_choice("foreground", mode, FOREGROUND_MODES)
    if mode == "none":
        return None
    if mode == "otsu":
        return Threshold(None, invert)
    if mode == "threshold":
        if threshold is None:
            raise ValueError("foreground 'threshold' needs a threshold value in [0, 1] (--foreground-threshold)")
        return Threshold(float(threshold), invert)
    return Saliency()


def estimate_foreground(images: torch.Tensor, spec, names=None) -> ForegroundResult | None:
    """Foreground of a ``(B, C, H, W)`` batch, with the fallbacks it needed (``None``: no region).

    Examples
    --------
    >>> import torch
    >>> result = estimate_foreground(torch.zeros(2, 3, 16, 16), "otsu")
    >>> result.fallbacks[0]
    'empty foreground (otsu threshold): the whole image is used'
    """
    spec = parse_foreground(spec) if isinstance(spec, str) or spec is None else spec
    if spec is None:
        return None
    if isinstance(spec, MaskFolder):
        masks = spec.masks(images, names)
        what = "mask file"
    else:
        masks = spec.masks(images)
        what = ("otsu threshold" if isinstance(spec, Threshold) and spec.value is None
                else "threshold" if isinstance(spec, Threshold) else "saliency")
    empty = [not bool(m.any()) for m in masks.cpu().numpy()]
    fallbacks: list[str | None] = []
    for i, e in enumerate(empty):
        if e:
            masks[i] = 1.0
            note = f"empty foreground ({what}): the whole image is used"
            warnings.warn(note + (f" for {names[i]}" if names is not None else ""), stacklevel=2)
            fallbacks.append(note)
        else:
            fallbacks.append(None)
    return ForegroundResult(masks, fallbacks)


def foreground_batch(images: torch.Tensor, spec, names=None) -> torch.Tensor | None:
    """Foreground masks ``(B, 1, H, W)`` in ``{0, 1}`` of a batch, or ``None`` for the whole image.

    Parameters
    ----------
    images : torch.Tensor
        ``(B, C, H, W)`` uint8 or float in ``[0, 1]``.
    spec : None, str, Threshold, Saliency or MaskFolder
        ``None`` / ``"none"``: no region; ``"otsu"``, ``"saliency"``; or a spec object.
    names : sequence of str, optional
        Each image's path relative to the input folder (needed by :class:`MaskFolder`).

    Examples
    --------
    >>> import torch
    >>> img = torch.zeros(1, 3, 32, 32); img[..., 8:24, 8:24] = 0.9
    >>> fg = foreground_batch(img, "otsu")
    >>> int(fg.sum())
    256
    """
    result = estimate_foreground(images, spec, names)
    return None if result is None else result.masks
