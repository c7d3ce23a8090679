"""The synthesizer base class: draw parameters per sample, then apply them to the batch.

A subclass implements two methods:

``sample_params(rng, shape, foreground)``
    Draws every random choice of one anomalous sample from its own generator and returns them
    as a JSON-serialisable dict. It sees the image shape and the sample's region of interest
    (``(H, W)`` bool array or ``None``), never the pixels, so the same ``(seed, index)`` gives
    the same parameters on any device and in any batch.
``apply(images, params, context, rngs)``
    Makes the anomalies of a float batch from the drawn parameters, batched on the batch's
    device. It returns an :class:`ApplyResult` ``(images, masks, labels, extras)``. It may
    redraw a sample's parameters from ``rngs[i]`` (an empty-mask retry, say) by replacing
    ``params[i]`` in place; ``rngs`` is ``None`` on replay, when the recorded parameters are final.

The base class owns the rules every method shares, so no method implements them for itself
(the seeded ones, common to the feature-level methods, are its parent's,
:class:`~defectforge.core.seeded.SeededSynthesizer`):

- it converts uint8 / float inputs, decides per sample whether it stays normal
  (``anomaly_probability``), derives each sample's generator from ``(seed, index)`` and records
  the parameters, so ``replay(images, result.params)`` remakes the batch exactly;
- the usable region: a sample whose foreground is empty falls back to the whole image, recorded
  as ``params["region_fallback"]`` (one note for every method), and ``apply`` sees the region
  with that fallback already applied;
- masks are confined to the region unless the class declares the foreground a hint
  (:attr:`Synthesizer.foreground_is_hint`: NSA places a patch that only has to overlap it);
- a sample whose mask came out empty is labelled normal (label 0, ``params["anomalous"] = False``);
- :func:`apply_subset` runs ``apply`` on a sub-batch and scatters the results back (used here,
  by :func:`~defectforge.synthesizers.compose.control` and by mixtures).

Capabilities are typed class attributes (:attr:`Synthesizer.any_dtype`, ``changes_outside_mask``,
``uses_donors``, ``requires``, ``foreground_is_hint``, ``needs_bank``, ``needs_model``,
``model_kind``; the list is :data:`CAPABILITIES`), reported by :func:`capabilities_of` as
``method_info(name).capabilities`` (the class) and ``synth.capabilities`` (the instance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from .capabilities import CAPABILITIES, capabilities_of
from .dtype import as_float_images, restore_dtype, validate_images
from .seeded import SeededSynthesizer, batch_indices, check_records, label_empty_masks_normal, scatter_rows
from .types import SynthesisContext, SynthesisResult

__all__ = ["Synthesizer", "ApplyResult", "apply_subset", "as_float_images", "validate_images", "restore_dtype",
           "ImageShape", "EMPTY_REGION_NOTE", "CAPABILITIES", "capabilities_of", "label_empty_masks_normal",
           "walk_synthesizers"]

#: The note recorded in ``params["region_fallback"]`` when a sample's foreground is empty.
EMPTY_REGION_NOTE = "empty foreground: the defect was placed on the whole image"

class _ApplyResultFields(NamedTuple):
    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    extras: dict[str, torch.Tensor]


class ApplyResult(_ApplyResultFields):
    """What :meth:`Synthesizer.apply` returns for a (sub-)batch: ``(images, masks, labels, extras)``.

    ``extras`` defaults to a new empty dict per result (a ``NamedTuple`` default would be one dict
    shared by every result, so a caller filling one would fill them all).
    """

    __slots__ = ()

    def __new__(cls, images: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor,
                extras: dict[str, torch.Tensor] | None = None) -> "ApplyResult":
        return super().__new__(cls, images, masks, labels, {} if extras is None else extras)

    @classmethod
    def of(cls, result) -> "ApplyResult":
        """An ``ApplyResult`` from one, or from a plain ``(images, masks, labels[, extras])`` tuple."""
        if isinstance(result, cls):
            return result
        return cls(result[0], result[1], result[2], dict(result[3]) if len(result) > 3 else {})


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


class Synthesizer(SeededSynthesizer):
    """Base class of every image-level synthesizer (see the module docstring).

    The seeded skeleton (draws per ``(seed, index)``, records, ``config``, capabilities, labels
    from masks) is :class:`~defectforge.core.seeded.SeededSynthesizer`'s, shared with the
    feature-level methods; what is the image's (regions, dtypes, mask confinement) is here.
    """

    #: Label given to anomalous samples by default.
    anomaly_label: int = 1

    # --- capabilities (typed class attributes; an instance may narrow them in __init__) -----
    #: ``True`` when ``apply`` accepts the batch in its own dtype (uint8 or float) and returns the
    #: same dtype; methods that only touch small regions then skip whole-image conversions.
    any_dtype: ClassVar[bool] = False
    #: ``True`` for methods that may change pixels outside the returned mask (Poisson blending,
    #: inpainting targets); the registry-wide tests check the others leave them bit-identical.
    changes_outside_mask: ClassVar[bool] = False
    #: ``True`` for methods that cut from other normal images (``SynthesisContext.donors``).
    uses_donors: ClassVar[bool] = False
    #: Importable modules the method needs beyond the core install (e.g. ``("skimage",)``).
    requires: ClassVar[tuple[str, ...]] = ()
    #: ``True`` when the foreground only guides placement (NSA: a patch must overlap it), so the
    #: base class does not cut the mask to it; a user's mask-bank shape still confines it.
    foreground_is_hint: ClassVar[bool] = False
    #: ``True`` for methods that cannot be created without a bank of real defects (``bank=``).
    needs_bank: ClassVar[bool] = False
    #: ``True`` for methods that cannot be created without a trained model (``model=``).
    needs_model: ClassVar[bool] = False
    #: What ``model=`` is (``"diffusion"``, ``"gan"``, ``"sd_inpaint"``), for methods that take one.
    model_kind: ClassVar[str | None] = None

    # --- to implement -------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, shape: ImageShape,
                      foreground: np.ndarray | None = None) -> dict[str, Any]:
        """Draw one anomalous sample's parameters; return plain Python types (JSON-serialisable)."""
        raise NotImplementedError

    def apply(self, images: torch.Tensor, params: list[dict[str, Any]], context: SynthesisContext,
              rngs: list[np.random.Generator] | None) -> ApplyResult:
        """Make the anomalies of ``images`` from ``params`` (see the module docstring)."""
        raise NotImplementedError

    # --- public API ---------------------------------------------------------------------
    def draw(self, seed: int, indices: Sequence[int], shape: ImageShape,
             foreground: torch.Tensor | None = None) -> tuple[list[dict], list]:
        """Draw the parameters of samples ``indices``; they may depend on the foreground, never on pixels."""
        fg = None if foreground is None else (foreground[:, 0] > 0.5).cpu().numpy()

        def sample(k: int, rng: np.random.Generator) -> dict[str, Any]:
            region = None if fg is None else fg[k]
            if region is not None and not region.any():
                return {"region_fallback": EMPTY_REGION_NOTE, **self.sample_params(rng, shape, None)}
            return self.sample_params(rng, shape, region)

        return self.draw_records(seed, indices, sample)

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
        indices = batch_indices(indices, x.shape[0])
        shape = ImageShape(x.shape[1:])
        ctx = context or SynthesisContext(foreground=foreground, donors=donors)
        params, rngs = self.draw(seed, indices, shape, ctx.foreground)
        return self._run(images, x, params, rngs, ctx)

    def replay(self, images: torch.Tensor, params: Sequence[dict[str, Any]], *,
               foreground: torch.Tensor | None = None, donors: torch.Tensor | None = None,
               context: SynthesisContext | None = None) -> SynthesisResult:
        """Remake a batch from recorded ``params`` (as returned in ``SynthesisResult.params``)."""
        x = self._prepare(images)
        records = check_records(params, x.shape[0])
        ctx = context or SynthesisContext(foreground=foreground, donors=donors)
        return self._run(images, x, records, None, ctx)

    def children(self) -> tuple["Synthesizer", ...]:
        """The synthesizers this one delegates to (a wrapper's inner method, a mixture's members);
        none for a method. :func:`walk_synthesizers` visits the whole tree."""
        return ()

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
        ctx = effective_region(ctx, params, x.device)
        sel = [i for i, p in enumerate(params) if p.get("anomalous")]
        if len(sel) == b:  # the whole batch: apply's outputs are the results, no copies
            result = ApplyResult.of(self.apply(x, params, ctx, rngs))
            out, masks, labels, extras = result.images, result.masks, result.labels, dict(result.extras)
        else:
            out, masks, labels, extras = apply_subset(self.apply, x, params, ctx, rngs, sel)
        if ctx.foreground is not None and not self.foreground_is_hint:
            masks = confine_masks(masks, ctx.foreground)
        labels = label_empty_masks_normal(masks, labels, params)
        return SynthesisResult(
            images=out if out.dtype == original.dtype else restore_dtype(out, original),
            masks=masks,
            labels=labels,
            params=params,
            extras=extras,
        )


def walk_synthesizers(synthesizer):
    """``synthesizer`` and every synthesizer inside it, depth first (:meth:`Synthesizer.children`).

    Examples
    --------
    >>> import defectforge
    >>> mix = defectforge.mix(["cutpaste", defectforge.control("draem", defect_count=2)])
    >>> [type(s).__name__ for s in walk_synthesizers(mix)][:2]
    ['MixtureSynthesizer', 'CutPasteSynthesizer']
    >>> len(list(walk_synthesizers(mix)))
    4
    """
    yield synthesizer
    for child in getattr(synthesizer, "children", tuple)():  # a feature-level or user object has none
        yield from walk_synthesizers(child)


def effective_region(ctx: SynthesisContext, params: list[dict], device) -> SynthesisContext:
    """``ctx`` with the foreground set to the whole image for samples that fell back (empty region)."""
    if ctx.foreground is None:
        return ctx
    fallback = [i for i, p in enumerate(params) if p.get("region_fallback")]
    if not fallback:
        return ctx
    fg = ctx.foreground.to(device, torch.float32).clone()
    fg[fallback] = 1.0
    return SynthesisContext(foreground=fg, donors=ctx.donors, shapes=ctx.shapes)


def confine_masks(masks: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``masks`` cut to ``region`` (both ``(B, 1, H, W)``); the same tensor when nothing lies outside."""
    outside = (masks > 0) & (region.to(masks.device) <= 0.5)
    if not bool(outside.any()):
        return masks
    return masks.masked_fill(outside, 0.0)


def confine_result(original: torch.Tensor, out: torch.Tensor, masks: torch.Tensor, region: torch.Tensor,
                   extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Restore every pixel outside ``region`` from ``original`` and cut masks and soft masks to it.

    For methods whose foreground is only a hint (NSA) when a user's shape must bound the defect.
    """
    inside = region.to(out.device) > 0.5
    out = torch.where(inside, out, original.to(out.dtype))
    masks = masks * inside.to(masks.dtype)
    for key, value in extras.items():
        if key == "soft_mask" and value.shape == masks.shape:
            extras[key] = value * inside.to(value.dtype)
    return out, masks


def apply_subset(apply: Callable, x: torch.Tensor, params: list, ctx: SynthesisContext, rngs,
                 sel: Sequence[int], into: tuple | None = None):
    """Run ``apply`` on the samples ``sel`` of ``x`` and scatter the results into full-batch tensors.

    ``params`` and ``rngs`` are full-batch lists (entries outside ``sel`` are not read). Records
    that ``apply`` replaced (redraws) are written back into ``params``. ``into`` is an
    ``(images, masks, labels, extras)`` tuple to write into; by default a copy of ``x`` with empty
    masks and label 0 for the samples outside ``sel``. Returns ``(images, masks, labels, extras)``.
    """
    b, _, h, w = x.shape
    if into is None:
        into = (x.clone(), torch.zeros((b, 1, h, w), device=x.device),
                torch.zeros(b, dtype=torch.long, device=x.device), {})
    out, masks, labels, extras = into
    if not sel:
        return out, masks, labels, extras
    idx = torch.tensor(list(sel), device=x.device)
    sub_params = [params[i] for i in sel]
    result = ApplyResult.of(apply(x[idx], sub_params, ctx.select(idx),
                                  [rngs[i] for i in sel] if rngs is not None else None))
    for j, i in enumerate(sel):
        params[i] = sub_params[j]
    out[idx] = result.images.to(out.dtype)
    masks[idx] = result.masks.to(masks.dtype)
    labels[idx] = result.labels.to(labels.dtype)
    scatter_rows(extras, result.extras, idx, b)
    return out, masks, labels, extras
