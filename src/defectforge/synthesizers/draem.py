"""Perlin-mask texture anomalies: DRAEM, its anomalib port, and DeSTSeg.

Follows
- DRAEM, Zavrtanik et al., "DRAEM - A discriminatively trained reconstruction embedding for
  surface anomaly detection", ICCV 2021; implementation VitjanZ/DRAEM (MIT), ``data_loader.py``.
- anomalib 2.x ``PerlinAnomalyGenerator`` (open-edge-platform/anomalib, Apache-2.0) for the
  ``draem_anomalib`` preset.
- DeSTSeg, Zhang et al., CVPR 2023; apple/ml-destseg: DRAEM's synthesis without texture
  augmentation, every sample anomalous.

A sample: a Perlin mask (lattice ``2**a x 2**b``, ``a, b ~ U{0..5}``, rotated ``U(-90, 90)``,
threshold 0.5), a texture (from a folder such as DTD, or the built-in procedural bank) augmented
by 3 of 10 ops drawn without replacement, blended inside the mask with opacity ``U(0.2, 1)``:
``out = img*(1-m) + m*(opacity*tex + (1-opacity)*img)`` (DRAEM writes ``beta = 0.8*U(0,1)``,
``opacity = 1 - beta``).

Texture preparation as the sources do it: DRAEM resizes the texture with ``cv2.resize`` (bilinear)
and augments it with imgaug's uint8 ops, its brightness op on the brightness channel of one of six
colour spaces drawn per image (YCrCb, HSV, HLS, Lab, Luv, YUV), imgaug's ``Multiply`` truncating
and its ``Add`` adding an integer; anomalib's photometric distortion permutes the channels every
time (``p=1``) and its hue/saturation jitter runs in a random order (both drawn and recorded).

Known differences from the originals, all deliberate:
- DRAEM's loader also rotates 30% of normal images by ``U(-90, 90)`` before synthesis: that is
  data augmentation of the normal image, not anomaly synthesis, and is left to the training code.
- DRAEM reads images and textures with ``cv2.imread`` (BGR) and hands them to imgaug, which takes
  them for RGB: its hue and brightness ops weigh red and blue the other way round. Here the ops
  see true RGB, as imgaug intends.
- anomalib draws its solarize threshold once per generator; here it is drawn per sample (recorded).
  anomalib's AutoAugment op is replaced by autocontrast (see :mod:`defectforge.functional.augment`).
  anomalib's ops run on float tensors; here in uint8, rounded after each op (within one grey level
  per op). Its antialiased bilinear texture resize is approximated by area interpolation.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..core.base import ImageShape, Synthesizer
from ..core.parallel import map_samples
from ..core.registry import register_method
from ..core.types import SynthesisContext
from ..core.validation import check_choice, check_interval, check_range
from ..functional.augment import augment_uint8, op_set, sample_pipeline
from ..functional.perlin import PerlinMaskSpec, perlin_masks
from ..sources.textures import TEXTURE_RESIZE, resolve_textures
from ._common import blend_masked_uint8, clone_batch

__all__ = ["PerlinTextureSynthesizer", "EMPTY_MASK_POLICIES"]

#: What to do when a Perlin mask comes out empty (about 5% of DRAEM's masks at 256x256):
#: ``keep_normal`` labels the sample normal (DRAEM), ``retry`` redraws the mask from the sample's
#: own generator until it is not empty (GLASS), ``rescale`` min-max rescales the noise and retries
#: up to 10 times (anomalib).
EMPTY_MASK_POLICIES = ("keep_normal", "retry", "rescale")


def union_masks(params: list[dict], height: int, width: int, threshold: float, rescale: bool, device):
    """Masks of ``params[i]["perlin"]``, unioned with ``params[i]["perlin2"]`` where ``union`` is set."""
    masks, noise = perlin_masks([p["perlin"] for p in params], height, width, threshold, rescale, device)
    second = [i for i, p in enumerate(params) if p.get("union")]
    if second:
        extra, _ = perlin_masks([params[i]["perlin2"] for i in second], height, width, threshold, rescale, device)
        idx = torch.tensor(second, device=masks.device)
        masks[idx] = torch.maximum(masks[idx], extra)
    return masks, noise


class PerlinTextureSynthesizer(Synthesizer):
    """Perlin mask x augmented texture, blended (DRAEM family). See the module docstring.

    Parameters
    ----------
    anomaly_probability : float
        Share of samples made anomalous; DRAEM and anomalib train with 0.5.
    textures : str, path, TextureSource or None
        Anomaly-source textures: a folder (DTD's ``images/`` in the papers), ``"procedural"`` or
        ``None`` for the built-in bank, or ``"noise"`` to use the Perlin noise itself as the
        texture (anomalib's behaviour without a texture folder).
    perlin_exponent_range : (int, int)
        Lattice exponents, upper bound exclusive: ``(0, 6)`` in DRAEM and anomalib.
    rotation_range : (float, float)
        Rotation of the noise in degrees: ``(-90, 90)`` in DRAEM and anomalib.
    threshold : float
        Noise threshold: 0.5 in DRAEM and anomalib.
    opacity_range : (float, float)
        Texture opacity ``(lo, hi]``: DRAEM ``1 - 0.8*U(0,1)`` = ``(0.2, 1]``; anomalib's generator
        ``(0.2, 1)`` (its Draem model passes ``(0.1, 1)``; its synthetic validation set ``(0.01, 0.2)``).
    augmentations : {"draem", "anomalib", "none"}
        Texture op set; DRAEM and anomalib pick 3 ops without replacement.
    augmentations_per_sample : int
        Ops per texture: 3 in both sources.
    empty_mask_policy : {"keep_normal", "retry", "rescale"}
        See :data:`EMPTY_MASK_POLICIES`.
    dual_mask : bool
        anomalib's option: with probability 0.5 union a second, independent Perlin mask.
    max_attempts : int
        Bound on mask redraws under ``retry`` / ``rescale``; a sample still empty is left normal
        and its params say ``"empty_mask": true``.
    texture_resize : {"bilinear", "stretch"}
        How a texture is brought to the image size: ``"bilinear"`` as DRAEM's ``cv2.resize``
        (its default interpolation, both ways); ``"stretch"`` uses area interpolation when
        shrinking, closer to anomalib's antialiased resize.
    """

    def __init__(self, anomaly_probability: float = 0.5, textures=None,
                 perlin_exponent_range=(0, 6), rotation_range=(-90.0, 90.0), threshold: float = 0.5,
                 opacity_range=(0.2, 1.0), augmentations: str = "draem", augmentations_per_sample: int = 3,
                 empty_mask_policy: str = "keep_normal", dual_mask: bool = False, max_attempts: int = 100,
                 texture_resize: str = "bilinear"):
        super().__init__(anomaly_probability)
        self.perlin = PerlinMaskSpec.checked(perlin_exponent_range, rotation_range, threshold)
        self.perlin_exponent_range, self.rotation_range, self.threshold = (
            self.perlin.exponent_range, self.perlin.rotation_range, self.perlin.threshold)
        self.opacity_range = check_interval("opacity_range", opacity_range, 0.0, 1.0)
        self.augmentations = check_choice("augmentations", augmentations, ("draem", "anomalib", "none"))
        self._ops = op_set(augmentations) if augmentations != "none" else {}
        self.augmentations_per_sample = check_range("augmentations_per_sample", augmentations_per_sample,
                                                    0, len(self._ops), integer=True)
        self.empty_mask_policy = check_choice("empty_mask_policy", empty_mask_policy, EMPTY_MASK_POLICIES)
        self.dual_mask = bool(dual_mask)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        self.texture_resize = check_choice("texture_resize", texture_resize, TEXTURE_RESIZE[:2])
        self.noise_texture = isinstance(textures, str) and textures == "noise"
        self.textures = None if self.noise_texture else resolve_textures(textures)

    def _sample_masks(self, rng: np.random.Generator) -> dict[str, Any]:
        out: dict[str, Any] = {"perlin": self.perlin.sample(rng)}
        if self.dual_mask:
            out["perlin2"] = self.perlin.sample(rng)
            out["union"] = bool(rng.random() > 0.5)
        return out

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        params = self._sample_masks(rng)
        if self.textures is not None:
            params["texture"] = int(rng.integers(len(self.textures)))
        params["augment"] = sample_pipeline(rng, self._ops, self.augmentations_per_sample) if self._ops else []
        lo, hi = self.opacity_range
        params["opacity"] = float(hi - (hi - lo) * rng.random())  # DRAEM: 1 - 0.8*U[0,1) lies in (0.2, 1]
        return params

    def masks(self, params: list[dict], height: int, width: int, device, rngs) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks and rotated noise of ``params``, redrawing empty masks as the policy says."""
        rescale = self.empty_mask_policy == "rescale"
        masks, noise = union_masks(params, height, width, self.threshold, rescale, device)
        if self.empty_mask_policy == "keep_normal" or rngs is None:
            return masks, noise
        limit = 10 if rescale else self.max_attempts  # anomalib retries 10 times
        for _ in range(limit):
            empty = torch.nonzero(masks.flatten(1).amax(1) == 0)[:, 0].tolist()
            if not empty:
                break
            for i in empty:
                params[i].update(self._sample_masks(rngs[i]))
                params[i]["attempts"] = params[i].get("attempts", 1) + 1
            sub, sub_noise = union_masks([params[i] for i in empty], height, width, self.threshold, rescale, device)
            idx = torch.tensor(empty, device=masks.device)
            masks[idx], noise[idx] = sub, sub_noise
        return masks, noise

    any_dtype = True  # blends the masked pixels only, in the input's dtype

    def mask_sample(self, p: dict, height: int, width: int, rng, noise_out: np.ndarray | None = None) -> np.ndarray:
        """One sample's mask ``(H, W)`` bool, redrawn from ``rng`` while empty as the policy says.

        The per-sample form of :meth:`masks` (same draws, same arithmetic, same bound on redraws),
        so that the CPU path makes each sample whole in one task of the per-sample pool, with no
        batch-wide op between (those cost a fixed ~1 ms per sample on a busy machine, which
        dominated small images). The first mask's rotated noise goes to ``noise_out``.
        """
        rescale = self.empty_mask_policy == "rescale"
        redraws = 0 if self.empty_mask_policy == "keep_normal" or rng is None else (10 if rescale else self.max_attempts)
        while True:
            mask = self.perlin.mask(p["perlin"], height, width, rescale, noise_out)
            if p.get("union"):
                mask |= self.perlin.mask(p["perlin2"], height, width, rescale)
            if redraws == 0 or mask.any():
                return mask
            p.update(self._sample_masks(rng))
            p["attempts"] = p.get("attempts", 1) + 1
            redraws -= 1

    def _source(self, p: dict, height: int, width: int, noise: np.ndarray | None) -> np.ndarray:
        """The augmented texture ``(H, W, 3)`` uint8 of one sample."""
        if self.noise_texture:
            # anomalib: the rotated noise, scaled by 0.5 and shifted by 0.25, as a grey texture
            grey = np.rint(np.clip(noise * 0.5 + 0.25, 0, 1) * 255.0).astype(np.uint8)
            source = np.repeat(grey[..., None], 3, axis=2)
        else:
            source = self.textures.get_uint8(p["texture"], height, width, self.texture_resize)
        return augment_uint8(source, p["augment"], self._ops) if self._ops else source

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        out = clone_batch(images)
        # The masks are binary, so only the masked pixels change, each by the same opacity:
        # out = img + opacity * (tex - img), on those pixels alone (cost follows the defect area).
        if images.device.type == "cpu":
            # each sample whole (mask, redraws, texture, blend) in one task of the per-sample pool:
            # numpy only, no batch-wide torch op (torch's intra-op threads stall on a busy machine)
            masks_np = np.zeros((b, 1, h, w), np.float32)
            noise_np = np.empty((b, h, w), np.float32) if self.noise_texture else None
            fg = None if context.foreground is None else context.foreground.to(torch.float32).numpy()
            nonempty = np.zeros(b, bool)

            def make(i: int) -> None:
                p = params[i]
                noise = None if noise_np is None else noise_np[i]
                mask = self.mask_sample(p, h, w, None if rngs is None else rngs[i], noise)
                masks_np[i, 0] = mask if fg is None else mask * fg[i, 0]
                selected = masks_np[i, 0] > 0
                nonempty[i] = selected.any()
                if nonempty[i]:
                    blend_masked_uint8(out, i, selected, self._source(p, h, w, noise), p["opacity"])

            map_samples(make, range(b))
            masks = torch.from_numpy(masks_np)
        else:
            masks, noise = self.masks(params, h, w, images.device, rngs)
            if context.foreground is not None:
                masks = masks * context.foreground.to(masks.dtype)
            selected = masks[:, 0] > 0
            nonempty = selected.flatten(1).any(1).cpu().numpy()
            noise_np = noise[:, 0].cpu().numpy() if self.noise_texture else None
            map_samples(lambda i: blend_masked_uint8(
                out, i, selected[i], self._source(params[i], h, w, None if noise_np is None else noise_np[i]),
                params[i]["opacity"]), [i for i in range(b) if nonempty[i]])
        for i, p in enumerate(params):
            if not nonempty[i]:
                p["empty_mask"] = True
                if rngs is not None and self.empty_mask_policy != "keep_normal":
                    warnings.warn(f"{self.method_name or 'perlin'}: mask still empty after "
                                  f"{p.get('attempts', 1)} draws; the sample stays normal", stacklevel=4)
        labels = torch.from_numpy(nonempty).long().to(images.device) * self.anomaly_label
        return out, masks, labels


_DRAEM_SOURCE = "Zavrtanik et al., ICCV 2021; VitjanZ/DRAEM data_loader.py"
register_method(
    "draem", family="hand-crafted", level="image",
    description="Perlin mask x DTD-style texture (3 of 10 imgaug ops), opacity U(0.2,1)",
    source=_DRAEM_SOURCE, licence="MIT",
    defaults={"anomaly_probability": 0.5, "augmentations": "draem", "empty_mask_policy": "keep_normal"},
)(PerlinTextureSynthesizer)
register_method(
    "draem_anomalib", family="hand-crafted", level="image",
    description="anomalib's DRAEM port: torchvision ops, noise as texture without a folder, rescaled empty masks",
    source="anomalib 2.x PerlinAnomalyGenerator (open-edge-platform/anomalib)", licence="Apache-2.0",
    defaults={"anomaly_probability": 0.5, "augmentations": "anomalib", "empty_mask_policy": "rescale",
              "textures": "noise", "texture_resize": "stretch"},
)(PerlinTextureSynthesizer)
register_method(
    "destseg", family="hand-crafted", level="image",
    description="DRAEM's Perlin texture anomalies without texture augmentation, always anomalous",
    source="Zhang et al., CVPR 2023; apple/ml-destseg", licence="Apple sample code licence",
    defaults={"anomaly_probability": 1.0, "augmentations": "none", "augmentations_per_sample": 0,
              "empty_mask_policy": "retry"},
)(PerlinTextureSynthesizer)
