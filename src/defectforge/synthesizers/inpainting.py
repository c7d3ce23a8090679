"""Inpainting masks for reconstruction training: RIAD's square grids and SAMI's superpixels.

Inpainting-based methods train a network to fill in hidden parts of normal images, and at test
time score the difference between an image and its reconstruction. Their "synthesis" is the
hiding: these synthesizers return the masked image (hidden pixels set to ``fill``), the mask
and, in ``extras["target"]``, the unmasked image to reconstruct.

- ``riad``: Zavrtanik et al., "Reconstruction by inpainting for visual anomaly detection",
  Pattern Recognition 2021 (paper; the authors' code is not public). The image is cut into square
  cells of a side drawn from ``{2, 4, 8, 16}`` px (at 256 x 256; scaled with the image), the cells
  are split at random into ``n = 3`` disjoint sets, and one set is hidden: each training image
  shows two thirds of its cells.
- ``sami``: Li et al., "Superpixel Masking and Inpainting for Self-Supervised Anomaly Detection",
  BMVC 2020 (paper). SLIC superpixels (scikit-image, imported when first used; install the
  ``textures`` extra) are hidden at random. The sheet does not give SAMI's numbers; this project
  uses ``n_segments=100`` (about 650 px each at 256 x 256) in SLICO mode (``slic_zero``: the
  compactness adapts per superpixel; plain SLIC with compactness 10 merged a whole high-contrast
  fabric texture into one or two superpixels) and hides each superpixel with probability 0.3.

Pixels outside the mask are returned unchanged.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.parallel import map_samples
from ..core.registry import register_method
from ..core.seeding import child_seed
from ..core.types import SynthesisContext
from ..core.validation import check_choice, check_probability, check_range
from ._common import clone_batch, to_uint8_hwc

__all__ = ["RIADMasks", "SAMIMasks", "FILLS"]

#: What hidden pixels become: 0, or the image's mean colour.
FILLS = ("zero", "mean")


def _finish(images: torch.Tensor, masks: np.ndarray, fill: str, params: list[dict], context: SynthesisContext,
            anomaly_label: int):
    """Masks x region, hidden pixels filled, labels and the reconstruction target.

    Works in numpy on the CPU (no batch-wide torch op: torch's intra-op threads stall on a busy
    machine) and moves the results to the batch's device.
    """
    device = images.device
    if context.foreground is not None:
        region = (context.foreground[:, 0] > 0.5).cpu().numpy()
        masks[:, 0] &= region
    source = images.cpu().numpy()
    # arithmetic select: np.where with a broadcast mask is ~30x slower here
    hidden = source * ~masks
    if fill == "mean":
        value = source.mean((2, 3), keepdims=True, dtype=np.float64)
        value = np.rint(value).astype(np.uint8) if source.dtype == np.uint8 else value.astype(source.dtype)
        hidden += value * masks
    labels = masks.reshape(len(masks), -1).any(1).astype(np.int64) * anomaly_label
    return (torch.from_numpy(hidden).to(device), torch.from_numpy(masks.astype(np.float32)).to(device),
            torch.from_numpy(labels).to(device), {"target": clone_batch(images.cpu()).to(device)})


class RIADMasks(Synthesizer):
    """RIAD's multi-scale square-grid masks (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        Share of masked samples: 1.
    cell_sizes : sequence of int
        Cell sides in px at ``reference_size``: (2, 4, 8, 16) (RIAD's ``K``).
    sets : int
        Disjoint cell sets per image, one hidden: 3 (RIAD's ``n``).
    fill : {"zero", "mean"}
        Value of hidden pixels: 0 in RIAD.
    reference_size : int
        Image side the cell sizes refer to: 256.
    """

    any_dtype = True

    def __init__(self, anomaly_probability: float = 1.0, cell_sizes=(2, 4, 8, 16), sets: int = 3,
                 fill: str = "zero", reference_size: int = 256):
        super().__init__(anomaly_probability)
        self.cell_sizes = [check_range("cell_sizes", s, 1, 4096, integer=True) for s in cell_sizes]
        if not self.cell_sizes:
            raise ValueError("cell_sizes must not be empty")
        self.sets = check_range("sets", sets, 2, 64, integer=True)
        self.fill = check_choice("fill", fill, FILLS)
        self.reference_size = check_range("reference_size", reference_size, 1, 1 << 16, integer=True)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        p: dict[str, Any] = {}
        scale = min(shape.height, shape.width) / self.reference_size
        p["cell"] = max(1, int(round(self.cell_sizes[int(rng.integers(len(self.cell_sizes)))] * scale)))
        p["hidden_set"] = int(rng.integers(self.sets))
        p["seed"] = child_seed(rng)
        return p

    def masks(self, params: list[dict], height: int, width: int) -> np.ndarray:
        """Hidden cells ``(B, 1, H, W)`` bool."""
        out = np.zeros((len(params), 1, height, width), bool)
        for i, p in enumerate(params):
            cell = p["cell"]
            gh, gw = -(-height // cell), -(-width // cell)
            sets = np.random.default_rng(p["seed"]).integers(self.sets, size=(gh, gw))
            grid = sets == p["hidden_set"]
            out[i, 0] = np.repeat(np.repeat(grid, cell, 0), cell, 1)[:height, :width]
        return out

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        return _finish(images, self.masks(params, h, w), self.fill, params, context, self.anomaly_label)


class SAMIMasks(Synthesizer):
    """SAMI's superpixel masks (see the module docstring; needs scikit-image).

    Parameters
    ----------
    anomaly_probability : float
        Share of masked samples: 1.
    n_segments : int
        SLIC superpixels per image (approximate): 100 (this project's choice).
    compactness : float
        SLIC compactness: 10 (scikit-image's default; SLICO's starting value).
    slic_zero : bool
        SLICO, the zero-parameter SLIC variant: True (see the module docstring).
    hide_probability : float
        Chance that a superpixel is hidden: 0.3 (this project's choice).
    fill : {"zero", "mean"}
        Value of hidden pixels.
    """

    any_dtype = True
    requires = ("skimage",)

    def __init__(self, anomaly_probability: float = 1.0, n_segments: int = 100, compactness: float = 10.0,
                 hide_probability: float = 0.3, fill: str = "zero", slic_zero: bool = True):
        super().__init__(anomaly_probability)
        self.slic_zero = bool(slic_zero)
        self.n_segments = check_range("n_segments", n_segments, 2, 100_000, integer=True)
        self.compactness = float(check_range("compactness", compactness, 1e-3, 1e4))
        self.hide_probability = check_probability("hide_probability", hide_probability)
        self.fill = check_choice("fill", fill, FILLS)
        self._segment_cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cached_bytes = 0

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        p: dict[str, Any] = {}
        p["seed"] = child_seed(rng)
        return p

    def __getstate__(self):  # picklable for DataLoader workers: the cache and its lock stay behind
        state = dict(self.__dict__)
        state.update(_segment_cache=OrderedDict(), _cache_lock=None, _cached_bytes=0)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache_lock = threading.Lock()

    #: Bytes of superpixel maps kept (least recently used dropped first).
    segment_cache_bytes = 128 * 2**20

    def _segments(self, slic, source: np.ndarray) -> np.ndarray:
        """SLIC superpixels of ``source``, cached by image content.

        The segmentation depends on the pixels alone (the random part is which superpixels are
        hidden), and SLIC costs ~50 ms per 256 x 256 image; a training loop sees each normal
        image many times, so the map is computed once per image and reused.
        """
        key = hashlib.blake2b(source.tobytes(), digest_size=16, person=repr(source.shape).encode()[:16]).digest()
        with self._cache_lock:
            hit = self._segment_cache.get(key)
            if hit is not None:
                self._segment_cache.move_to_end(key)
                return hit
        segments = slic(source, n_segments=self.n_segments, compactness=self.compactness, start_label=0,
                        channel_axis=-1, slic_zero=self.slic_zero)
        segments = segments.astype(np.uint16 if segments.max() < 2**16 else np.int64)
        with self._cache_lock:
            self._segment_cache[key] = segments
            self._cached_bytes += segments.nbytes
            while self._cached_bytes > self.segment_cache_bytes and len(self._segment_cache) > 1:
                _, old = self._segment_cache.popitem(last=False)
                self._cached_bytes -= old.nbytes
        return segments

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        try:
            from skimage.segmentation import slic
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("sami needs scikit-image for SLIC superpixels: pip install 'defectforge[textures]' "
                              "(or scikit-image)") from exc
        b, c, h, w = images.shape
        masks = np.zeros((b, 1, h, w), bool)

        def make(i: int) -> None:
            image = to_uint8_hwc(images[i])
            # grey images go through the same Lab conversion as colour ones (replicated to RGB):
            # SLIC rescales a grey image to 0..1, where compactness 10 gives a square grid
            source = image if c == 3 else np.repeat(image, 3, axis=2)
            segments = self._segments(slic, source)
            n = int(segments.max()) + 1
            rng = np.random.default_rng(params[i]["seed"])
            hidden = rng.random(n) < self.hide_probability
            if not hidden.any():  # at least one superpixel, so every sample is masked
                hidden[int(rng.integers(n))] = True
            params[i]["segments"] = n
            params[i]["hidden"] = [int(k) for k in np.flatnonzero(hidden)]
            masks[i, 0] = hidden[segments]

        map_samples(make, range(b))
        return _finish(images, masks, self.fill, params, context, self.anomaly_label)


register_method(
    "riad", family="hand-crafted", level="image",
    description="inpainting masks: one of 3 random sets of square grid cells (2/4/8/16 px) hidden",
    source="Zavrtanik et al., Pattern Recognition 2021 (RIAD), paper", licence="paper (no public code)",
    defaults={"anomaly_probability": 1.0},
)(RIADMasks)
register_method(
    "sami", family="hand-crafted", level="image",
    description="inpainting masks: random SLIC superpixels hidden (needs scikit-image)",
    source="Li et al., BMVC 2020 (superpixel masking and inpainting), paper", licence="paper (no public code)",
    defaults={"anomaly_probability": 1.0},
)(SAMIMasks)
