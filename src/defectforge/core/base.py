"""The synthesizer base class: draw parameters per sample, then apply them to the batch.

A subclass implements two methods:

``sample_params(rng, shape, foreground)``
    Draws every random choice of one anomalous sample from its own generator and returns them
    as a JSON-serialisable dict. It sees the image shape and the sample's region of interest
    (``(H, W)`` bool array or ``None``), never the pixels, so the same ``(seed, index)`` gives
    the same parameters on any device and in any batch.
``apply(images, params, context, rngs)``
    Makes the anomalies of a float batch from the drawn parameters, batched on the batch's
    device. It returns ``(images, masks, labels)``. It may redraw a sample's parameters from
    ``rngs[i]`` (an empty-mask retry, say) by replacing ``params[i]`` in place; ``rngs`` is
    ``None`` on replay, when the recorded parameters are final.

The base class converts uint8 / float inputs, decides per sample whether it stays normal
(``anomaly_probability``), derives each sample's generator from ``(seed, index)`` and records
the parameters, so ``replay(images, result.params)`` remakes the batch exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .seeding import sample_rng
from .types import SynthesisContext, SynthesisResult, to_jsonable
from .validation import check_probability

__all__ = ["Synthesizer", "as_float_images", "validate_images", "restore_dtype", "ImageShape"]


class ImageShape(tuple):
    """``(channels, height, width)`` of the images of a batch."""

    @property
    def channels(self) -> int:
        return self[0]

    @property
    def height(self) -> int:
        return self[1]

    @property
    def width(self) -> int:
        return self[2]


def validate_images(images: torch.Tensor) -> None:
    """Check that ``images`` is a ``(B, C, H, W)`` uint8 or float tensor with C = 1 or 3."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]} "
                         "(drop the alpha channel of RGBA images first)")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(f"images must be uint8 or floating point in [0, 1], got {images.dtype}")


def as_float_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a ``(B, C, H, W)`` batch (C = 1 or 3) and return it as float32 in ``[0, 1]``."""
    validate_images(images)
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def restore_dtype(images: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Convert a float ``[0, 1]`` batch back to the dtype of ``like`` (in place where it can)."""
    if like.dtype == torch.uint8:
        return images.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return images.to(like.dtype)


class Synthesizer:
    """Base class of every image-level synthesizer (see the module docstring)."""

    #: Registry name; set by :func:`defectforge.create`.
    method_name: str = ""
    #: Label given to anomalous samples by default.
    anomaly_label: int = 1
    #: ``True`` when ``apply`` accepts the batch in its own dtype (uint8 or float) and returns the
    #: same dtype; methods that only touch small regions then skip whole-image conversions.
    any_dtype: bool = False
    #: ``True`` for methods that may change pixels outside the returned mask (Poisson blending,
    #: inpainting targets); the registry-wide tests check the others leave them bit-identical.
    changes_outside_mask: bool = False

    def __init__(self, anomaly_probability: float = 1.0):
        self.anomaly_probability = check_probability("anomaly_probability", anomaly_probability)
        self.method_kwargs: dict[str, Any] = {}

    # --- to implement -------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, shape: ImageShape,
                      foreground: np.ndarray | None = None) -> dict[str, Any]:
        """Draw one anomalous sample's parameters; return plain Python types (JSON-serialisable)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: list[dict[str, Any]], context: SynthesisContext,
              rngs: list[np.random.Generator] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # --- public API ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Constructor arguments (preset defaults plus overrides), for writing to YAML."""
        kwargs = dict(self.method_kwargs)
        if not kwargs:
            sig = inspect.signature(type(self).__init__)
            kwargs = {k: getattr(self, k) for k in sig.parameters if k != "self" and hasattr(self, k)}
        return to_jsonable({"method": self.method_name, **kwargs})

    def draw(self, seed: int, indices: Sequence[int], shape: ImageShape,
             foreground: torch.Tensor | None = None) -> tuple[list[dict], list]:
        """Draw the parameters of samples ``indices``; they may depend on the foreground, never on pixels."""
        params, rngs = [], []
        fg = None if foreground is None else (foreground[:, 0] > 0.5).cpu().numpy()
        for k, index in enumerate(indices):
            rng = sample_rng(seed, int(index))
            anomalous = bool(rng.random() < self.anomaly_probability)
            record: dict[str, Any] = {"anomalous": anomalous}
            if anomalous:
                record.update(self.sample_params(rng, shape, None if fg is None else fg[k]))
            params.append(record)
            rngs.append(rng)
        return params, rngs

    def __call__(self, images: torch.Tensor, *, seed: int = 0, indices: Sequence[int] | None = None,
                 foreground: torch.Tensor | None = None, donors: torch.Tensor | None = None,
                 context: SynthesisContext | None = None) -> SynthesisResult:
        """Synthesise anomalies on a batch.

        Parameters
        ----------
        images : torch.Tensor
            ``(B, C, H, W)`` uint8, or float in ``[0, 1]``; 1 or 3 channels; any device.
        seed : int
            Run seed. Sample ``indices[i]`` depends on ``(seed, indices[i])`` only.
        indices : sequence of int, optional
            Global index of each sample (default ``0..B-1``).
        foreground, donors : torch.Tensor, optional
            Shortcuts for the fields of :class:`SynthesisContext`.
        """
        x = self._prepare(images)
        if indices is None:
            indices = range(x.shape[0])
        indices = [int(i) for i in indices]
        if len(indices) != x.shape[0]:
            raise ValueError(f"got {len(indices)} indices for a batch of {x.shape[0]} images")
        shape = ImageShape(x.shape[1:])
        ctx = context or SynthesisContext(foreground=foreground, donors=donors)
        params, rngs = self.draw(seed, indices, shape, ctx.foreground)
        return self._run(images, x, params, rngs, ctx)

    def replay(self, images: torch.Tensor, params: Sequence[dict[str, Any]], *,
               foreground: torch.Tensor | None = None, donors: torch.Tensor | None = None,
               context: SynthesisContext | None = None) -> SynthesisResult:
        """Remake a batch from recorded ``params`` (as returned in ``SynthesisResult.params``)."""
        x = self._prepare(images)
        if len(params) != x.shape[0]:
            raise ValueError(f"got {len(params)} parameter records for a batch of {x.shape[0]} images")
        ctx = context or SynthesisContext(foreground=foreground, donors=donors)
        return self._run(images, x, [dict(p) for p in params], None, ctx)

    # --- internals ----------------------------------------------------------------------
    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if self.any_dtype:
            validate_images(images)
            return images
        return as_float_images(images)

    def _run(self, original: torch.Tensor, x: torch.Tensor, params: list[dict], rngs, ctx) -> SynthesisResult:
        b, _, h, w = x.shape
        if ctx.foreground is not None and tuple(ctx.foreground.shape) != (b, 1, h, w):
            raise ValueError(f"foreground must have shape {(b, 1, h, w)}, got {tuple(ctx.foreground.shape)}")
        sel = [i for i, p in enumerate(params) if p.get("anomalous")]
        extras: dict[str, torch.Tensor] = {}
        if len(sel) == b:  # the whole batch: apply's outputs are the results, no copies
            result = self.apply(x, params, ctx, rngs)
            out, masks, labels = result[:3]
            extras = dict(result[3]) if len(result) > 3 else {}
        else:
            out = x.clone()
            masks = torch.zeros((b, 1, h, w), device=x.device)
            labels = torch.zeros(b, dtype=torch.long, device=x.device)
            if sel:
                idx = torch.tensor(sel, device=x.device)
                sub_params = [params[i] for i in sel]
                result = self.apply(x[idx], sub_params, ctx.select(idx),
                                    [rngs[i] for i in sel] if rngs is not None else None)
                for j, i in enumerate(sel):
                    params[i] = sub_params[j]
                out[idx], masks[idx], labels[idx] = result[0], result[1], result[2].to(labels.dtype)
                for key, value in (result[3] if len(result) > 3 else {}).items():
                    full = value.new_zeros((b, *value.shape[1:]))
                    full[idx] = value
                    extras[key] = full
        # A sample whose apply left it normal (an empty mask kept as normal) reports so.
        for p, label in zip(params, labels.tolist()):
            if p.get("anomalous") and label == 0:
                p["anomalous"] = False
        return SynthesisResult(
            images=out if out.dtype == original.dtype else restore_dtype(out, original),
            masks=masks,
            labels=labels,
            params=params,
            extras=extras,
        )
