"""Helpers shared by the hand-crafted methods: regions, masked blending, mask redraws."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from ..functional.color import to_gray

__all__ = ["usable_region", "EMPTY_REGION_NOTE", "blend_masked_uint8", "to_uint8_hwc", "region_masks",
           "redraw_empty"]

EMPTY_REGION_NOTE = "empty foreground: the defect was placed on the whole image"


def usable_region(foreground: np.ndarray | None, params: dict) -> np.ndarray | None:
    """``foreground`` for drawing, or ``None`` (whole image) with a note in ``params`` when it is empty."""
    if foreground is None:
        return None
    if not foreground.any():
        params["region_fallback"] = EMPTY_REGION_NOTE
        return None
    return foreground


def region_masks(context, params: list[dict], like: torch.Tensor) -> torch.Tensor | None:
    """The batch's region ``(B, 1, H, W)`` as float, whole image where a sample's params say it fell back."""
    fg = context.foreground
    if fg is None:
        return None
    fg = fg.to(like.device, torch.float32)
    fallback = [i for i, p in enumerate(params) if p.get("region_fallback")]
    if fallback:
        fg = fg.clone()
        fg[fallback] = 1.0
    return fg


def to_uint8_hwc(image: torch.Tensor) -> np.ndarray:
    """One ``(C, H, W)`` image (uint8 or float in [0, 1]) as a contiguous ``(H, W, C)`` uint8 array."""
    if image.dtype != torch.uint8:
        image = image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())


def blend_masked_uint8(out: torch.Tensor, index: int, selected: torch.Tensor, source: np.ndarray,
                       opacity: float | torch.Tensor) -> None:
    """``out[index] += opacity * (source - out[index])`` on the pixels where ``selected`` (H, W) is true.

    ``source`` is ``(H, W, 3)`` or ``(H, W, 1)`` uint8; ``opacity`` a number or an ``(H, W)`` map.
    Only the selected pixels are read and written, so the cost follows the defect's area and every
    other pixel stays bit-identical.
    """
    c = out.shape[1]
    if out.device.type == "cpu" and not torch.is_tensor(opacity):
        _blend_masked_numpy(out[index].numpy(), selected.numpy(), source, float(opacity))
        return
    flat = torch.nonzero(selected.flatten())[:, 0]
    if flat.numel() == 0:
        return
    src = source if source.flags.writeable else source.copy()
    tex = torch.from_numpy(src).to(out.device).view(-1, src.shape[2])[flat].T.float()  # (C_src, n)
    if tex.shape[0] == 3 and c == 1:
        tex = to_gray(tex[None, :, :, None])[0, :, :, 0]
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


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _blend_masked_numpy(target: np.ndarray, selected: np.ndarray, source: np.ndarray, opacity: float) -> None:
    """CPU path of :func:`blend_masked_uint8` on numpy views (same arithmetic, in float32)."""
    c = target.shape[0]
    flat = np.flatnonzero(selected)
    if flat.size == 0:
        return
    tex = source.reshape(-1, source.shape[2])[flat].astype(np.float32)  # (n, C_src)
    if tex.shape[1] == 3 and c == 1:
        tex = tex @ _LUMA[:, None]
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


def redraw_empty(masks: torch.Tensor, params: list[dict], rngs, make: Callable, redraw: Callable,
                 max_attempts: int, what: str) -> torch.Tensor:
    """Redraw the masks that came out empty, from each sample's own generator, at most ``max_attempts`` times.

    ``make(sub_params, indices)`` builds masks ``(n, 1, H, W)`` for the given samples; ``redraw(rng,
    params)`` updates a sample's params in place. A sample still empty is recorded
    (``params["empty_mask"]``) and warned about; the caller leaves it normal. On replay
    (``rngs is None``) nothing is redrawn.
    """
    if rngs is None:
        return masks
    for _ in range(max_attempts - 1):
        empty = torch.nonzero(masks.flatten(1).amax(1) == 0)[:, 0].tolist()
        if not empty:
            return masks
        for i in empty:
            redraw(rngs[i], params[i])
            params[i]["attempts"] = params[i].get("attempts", 1) + 1
        masks[torch.tensor(empty, device=masks.device)] = make([params[i] for i in empty], empty)
    for i in torch.nonzero(masks.flatten(1).amax(1) == 0)[:, 0].tolist():
        params[i]["empty_mask"] = f"{what} still empty after {max_attempts} draws; the sample stays normal"
        warnings.warn(f"{what} still empty after {max_attempts} draws (is the foreground tiny?); "
                      "the sample stays normal", stacklevel=4)
    return masks
