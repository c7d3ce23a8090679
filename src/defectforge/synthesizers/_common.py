"""Helpers shared by the hand-crafted methods: regions, masked blending, mask redraws."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..core.dtype import LUMA_WEIGHTS_F32, luma, to_uint8_hwc
from ..core.parallel import map_samples

__all__ = ["blend_masked_uint8", "to_uint8_hwc", "masks_per_sample", "clone_batch", "masked_source_blend"]

def clone_batch(images: torch.Tensor) -> torch.Tensor:
    """A copy of the batch; on the CPU made by numpy (torch's threaded copy stalls on a busy machine)."""
    if images.device.type == "cpu":
        return torch.from_numpy(np.array(images.numpy(), copy=True, order="C"))
    return images.clone()


def blend_masked_uint8(out: torch.Tensor, index: int, selected: torch.Tensor, source: np.ndarray,
                       opacity: float | torch.Tensor) -> None:
    """``out[index] += opacity * (source - out[index])`` on the pixels where ``selected`` (H, W) is true.

    ``source`` is ``(H, W, 3)`` or ``(H, W, 1)`` uint8; ``opacity`` a number or an ``(H, W)`` map.
    Only the selected pixels are read and written, so the cost follows the defect's area and every
    other pixel stays bit-identical.
    """
    c = out.shape[1]
    if out.device.type == "cpu" and not torch.is_tensor(opacity):
        sel = selected if isinstance(selected, np.ndarray) else selected.numpy()
        _blend_masked_numpy(out[index].numpy(), sel, source, float(opacity))
        return
    if isinstance(selected, np.ndarray):
        selected = torch.from_numpy(selected).to(out.device)
    flat = torch.nonzero(selected.flatten())[:, 0]
    if flat.numel() == 0:
        return
    src = source if source.flags.writeable else source.copy()
    tex = torch.from_numpy(src).to(out.device).view(-1, src.shape[2])[flat].T.float()  # (C_src, n)
    if tex.shape[0] == 3 and c == 1:
        tex = luma(tex[None, :, :, None])[0, :, :, 0]
    elif tex.shape[0] == 1 and c == 3:
        tex = tex.expand(3, -1)
    if torch.is_tensor(opacity):
        opacity = opacity.to(out.device).flatten()[flat].float()
    target = out[index].view(c, -1)
    pixels = target[:, flat].float()
    if out.dtype == torch.uint8:
        pixels.add_((tex - pixels).mul_(opacity)).round_().clamp_(0, 255)
    else:
        pixels.add_((tex / 255.0 - pixels).mul_(opacity))
    target[:, flat] = pixels.to(out.dtype)


_LUMA = LUMA_WEIGHTS_F32


def _blend_masked_numpy(target: np.ndarray, selected: np.ndarray, source: np.ndarray, opacity: float) -> None:
    """CPU path of :func:`blend_masked_uint8` on numpy views (same arithmetic, in float32)."""
    c = target.shape[0]
    flat = np.flatnonzero(selected)
    if flat.size == 0:
        return
    tex = source.reshape(-1, source.shape[2])[flat].astype(np.float32)  # (n, C_src)
    if tex.shape[1] == 3 and c == 1:  # luma as core.dtype.luma computes it (same order, float32)
        tex = _LUMA[0] * tex[:, 0:1] + _LUMA[1] * tex[:, 1:2] + _LUMA[2] * tex[:, 2:3]
    elif tex.shape[1] == 1 and c == 3:
        tex = np.repeat(tex, 3, axis=1)
    view = target.reshape(c, -1)
    for ch in range(c):
        pixels = view[ch, flat].astype(np.float32)
        t = tex[:, ch]
        if target.dtype == np.uint8:
            pixels += (t - pixels) * np.float32(opacity)
            view[ch, flat] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
        else:
            pixels += (t / np.float32(255.0) - pixels) * np.float32(opacity)
            view[ch, flat] = pixels.astype(target.dtype)


def masks_per_sample(params: list[dict], rngs, region: np.ndarray | None, make: Callable, redraw: Callable,
                     max_attempts: int, what: str, i: int) -> np.ndarray:
    """Sample ``i``'s mask ``make(params[i])`` x its region, redrawn from ``rngs[i]`` while empty.

    At most ``max_attempts`` draws; a mask still empty is recorded in ``params[i]["empty_mask"]``
    (the caller leaves the sample normal). On replay (``rngs is None``) nothing is redrawn.
    """
    p = params[i]
    while True:
        mask = make(p)
        if region is not None:
            mask &= region[i]
        if mask.any() or rngs is None:
            return mask
        if p.get("attempts", 1) >= max_attempts:
            p["empty_mask"] = f"{what} still empty after {max_attempts} draws; the sample stays normal"
            warnings.warn(f"{what} still empty after {max_attempts} draws (is the foreground tiny?); "
                          "the sample stays normal", stacklevel=2)
            return mask
        redraw(rngs[i], p)
        p["attempts"] = p.get("attempts", 1) + 1


def masked_source_blend(synth, images: torch.Tensor, params: list[dict], context, rngs, make_mask: Callable,
                        redraw: Callable, source: Callable, name: str):
    """``apply`` of the mask x anomaly-source methods (GLASS-LAS, MemSeg): ``(out, masks, labels)``.

    Each sample is made whole in one task of the per-sample pool: its mask (a user-supplied shape,
    or ``make_mask(params[i])`` x the region, redrawn by ``redraw`` while empty, see
    :func:`masks_per_sample`), then ``source(i, params[i]) -> (uint8 source, opacity)`` blended
    inside the mask. A sample whose mask stays empty is left normal (label 0).
    """
    b, c, h, w = images.shape
    region = None if context.foreground is None else (context.foreground[:, 0] > 0.5).cpu().numpy()
    shapes = None if context.shapes is None else (context.shapes[:, 0] > 0.5).cpu().numpy()
    masks = np.zeros((b, 1, h, w), np.float32)
    out = clone_batch(images)
    what = f"{synth.method_name or name} mask"

    def make(i: int) -> None:
        p = params[i]
        if shapes is not None:  # a user-supplied shape is the mask
            mask = shapes[i] & region[i] if region is not None else shapes[i]
        else:
            mask = masks_per_sample(params, rngs, region, make_mask, redraw, synth.max_attempts, what, i)
        if not mask.any():
            return
        masks[i, 0] = mask
        src, opacity = source(i, p)
        blend_masked_uint8(out, i, mask, src, opacity)

    map_samples(make, range(b))
    nonempty = masks.reshape(b, -1).any(1)
    labels = torch.from_numpy(nonempty.astype(np.int64)).to(images.device) * synth.anomaly_label
    return out, torch.from_numpy(masks).to(images.device), labels
