"""The feature-level synthesizer base class: anomalies made in a backbone's feature space.

The distribution-hypothesis family of the survey (arXiv 2502.16412, section 2) perturbs the
``(B, C, h, w)`` feature maps of a frozen backbone instead of image pixels. The house rules of
the image-level methods hold here too:

- every random choice of sample ``index`` in a run seeded ``seed`` comes from
  :func:`~defectforge.core.seeding.sample_rng` ``(seed, index)`` alone, and large random fields
  (Gaussian noise on every feature) from a 63-bit seed drawn from it and recorded, so a sample
  is the same in any batch (unless the method is *batch-coupled* by definition, see
  :attr:`FeatureSynthesizer.batch_coupled`);
- :meth:`FeatureSynthesizer.sample_params` draws everything once, as plain JSON, and
  :meth:`FeatureSynthesizer.replay` remakes the batch from those records;
- the result carries a mask on the feature grid ``(B, 1, h, w)`` (1 where the features were
  perturbed) and a label per sample (1 when its mask is non-empty).

Some methods need more than the features: GLASS's gradient ascent needs the discriminator being
trained, PBAS needs its bank of normal centres. They arrive in a :class:`FeatureContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from ..core.base import ImageShape
from ..core.seeded import SeededSynthesizer, batch_indices, check_records, label_empty_masks_normal, scatter_rows
from ..core.seeding import child_seed, torch_generator
from ..core.validation import check_range

__all__ = ["FeatureSynthesizer", "FeatureSynthesisResult", "FeatureContext", "FeatureShape", "gaussian_fields",
           "validate_features", "check_positive", "noise_seed"]


class FeatureShape(ImageShape):
    """``(channels, height, width)`` of the feature maps of a batch (the image shape's accessors)."""


class FeatureSynthesisResult(NamedTuple):
    """What a feature-level synthesizer returns.

    Attributes
    ----------
    features : torch.Tensor
        ``(B, C, h, w)`` float, the perturbed features (normal samples unchanged).
    masks : torch.Tensor
        ``(B, 1, h, w)`` float in {0, 1}: where the features are anomalous (the input mask, when
        one was given, OR the synthesised region).
    labels : torch.Tensor
        ``(B,)`` int64, 1 where the mask is non-empty.
    params : list of dict
        Everything drawn for each sample (JSON); :meth:`FeatureSynthesizer.replay` takes it back.
    extras : dict of str to torch.Tensor
        Method-specific outputs (GAS: the offset norms after projection).
    """

    features: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    params: list
    extras: dict


@dataclass
class FeatureContext:
    """Optional inputs of a feature-level synthesizer.

    Attributes
    ----------
    masks : torch.Tensor, optional
        ``(B, 1, h, w)`` existing anomaly masks on the feature grid (SuperSimpleNet keeps them and
        adds noise only outside them; its ground truth is their union with the noise mask).
    discriminator : callable, optional
        ``(N, C) -> (N, 1)`` anomaly probabilities of feature vectors (GLASS-GAS ascends its loss).
    centres : torch.Tensor, optional
        ``(K, C)`` normal centres (PBAS pushes features away from the cosine-nearest one;
        GLASS-GAS hypersphere mode projects around ``centres`` of the same grid position).
    nearest : torch.Tensor, optional
        ``(B, C, h, w)`` the centre already assigned to each feature (PBAS's detector finds the
        cosine-nearest centre once per step for its compactness loss; passing it here spares the
        synthesizer the same search). Must equal what the search over ``centres`` would give.
    """

    masks: torch.Tensor | None = None
    discriminator: Callable[[torch.Tensor], torch.Tensor] | None = None
    centres: torch.Tensor | None = None
    nearest: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "FeatureContext":
        return FeatureContext(masks=None if self.masks is None else self.masks[index],
                              discriminator=self.discriminator, centres=self.centres,
                              nearest=None if self.nearest is None else self.nearest[index])


def validate_features(features: torch.Tensor) -> None:
    """Check that ``features`` is a ``(B, C, h, w)`` floating-point tensor."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"features must be a torch.Tensor of shape (B, C, h, w), got {type(features).__name__}")
    if features.ndim != 4:
        raise ValueError(f"features must have shape (B, C, h, w), got {tuple(features.shape)} "
                         "(add the missing axes, e.g. features[None] for one map)")
    if not features.is_floating_point():
        raise TypeError(f"features must be floating point, got {features.dtype} (convert with .float())")


def gaussian_fields(seeds: Sequence[int], shape: Sequence[int], device=None, dtype=torch.float32) -> torch.Tensor:
    """Standard normal fields ``(len(seeds), *shape)``, field ``i`` from ``seeds[i]`` alone.

    Drawn on the CPU (a CPU generator gives the same numbers on any machine) and moved to
    ``device``, so a sample's noise does not depend on its batch or on the device.
    """
    out = torch.empty((len(seeds), *shape), dtype=torch.float32)
    for i, seed in enumerate(seeds):
        out[i].normal_(generator=torch_generator(int(seed)))
    return out.to(device=device, dtype=dtype)


class FeatureSynthesizer(SeededSynthesizer):
    """Base class of the feature-level synthesizers.

    A subclass implements ``sample_params(rng, shape) -> dict`` (every random choice of one
    sample) and ``apply(features, params, context) -> (features, masks, extras)`` (batched, on
    the features' device). The seeded skeleton is the image-level methods' own
    (:class:`~defectforge.core.seeded.SeededSynthesizer`: each sample's generator from
    ``(seed, index)``, whether a sample stays normal, the records, ``config``, labels from the
    masks); this class validates feature maps and their context.

    Parameters
    ----------
    anomaly_probability : float
        Probability that a sample is perturbed at all (1.0 in every source of this family).
    """

    #: Registry level, for readers of an instance.
    level: str = "feature"
    #: ``True`` when a sample's output depends on the other samples of its batch by the method's
    #: definition (PBAS's radius is a batch mean; GAS's hypersphere radius is a batch quantile).
    #: The batch-split tests use such methods in their per-sample mode.
    batch_coupled: bool = False
    #: Context fields the method cannot work without (``"discriminator"``, ``"centres"``).
    needs: tuple[str, ...] = ()
    #: The benchmark detector that trains on this method (reported by ``capabilities``).
    detector: ClassVar[str | None] = None

    # --- to implement -------------------------------------------------------------------
    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        """Draw one anomalous sample's parameters (JSON-serialisable)."""
        raise NotImplementedError

    def apply(self, features: torch.Tensor, params: list[dict[str, Any]], context: FeatureContext
              ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Perturb a batch whose samples are all anomalous; return ``(features, masks, extras)``."""
        raise NotImplementedError

    # --- public API ---------------------------------------------------------------------
    def draw(self, seed: int, indices: Sequence[int], shape: FeatureShape) -> list[dict[str, Any]]:
        """The parameters of samples ``indices`` (they never depend on the feature values)."""
        return self.draw_records(seed, indices, lambda k, rng: self.sample_params(rng, shape))[0]

    def __call__(self, features: torch.Tensor, *, seed: int = 0, indices: Sequence[int] | None = None,
                 masks: torch.Tensor | None = None, discriminator=None, centres: torch.Tensor | None = None,
                 nearest: torch.Tensor | None = None, context: FeatureContext | None = None) -> FeatureSynthesisResult:
        """Synthesise anomalies on a batch of feature maps.

        Parameters
        ----------
        features : torch.Tensor
            ``(B, C, h, w)`` float, any device.
        seed : int
            Run seed; sample ``indices[i]`` depends on ``(seed, indices[i])`` only.
        indices : sequence of int, optional
            Global index of each sample (default ``0..B-1``).
        masks, discriminator, centres, nearest
            Shortcuts for the fields of :class:`FeatureContext`.
        """
        validate_features(features)
        indices = batch_indices(indices, features.shape[0], "feature maps")
        ctx = context or FeatureContext(masks=masks, discriminator=discriminator, centres=centres, nearest=nearest)
        params = self.draw(seed, indices, FeatureShape(features.shape[1:]))
        return self._run(features, params, ctx)

    def replay(self, features: torch.Tensor, params: Sequence[dict[str, Any]], *, masks: torch.Tensor | None = None,
               discriminator=None, centres: torch.Tensor | None = None, nearest: torch.Tensor | None = None,
               context: FeatureContext | None = None) -> FeatureSynthesisResult:
        """Remake a batch from recorded ``params`` (``FeatureSynthesisResult.params``); the keywords are the call's."""
        validate_features(features)
        records = check_records(params, features.shape[0], "feature maps")
        ctx = context or FeatureContext(masks=masks, discriminator=discriminator, centres=centres, nearest=nearest)
        return self._run(features, records, ctx)

    # --- internals ----------------------------------------------------------------------
    def _check_context(self, features: torch.Tensor, ctx: FeatureContext) -> None:
        b, _, h, w = features.shape
        if ctx.masks is not None and tuple(ctx.masks.shape) != (b, 1, h, w):
            raise ValueError(f"masks must have shape {(b, 1, h, w)} (the feature grid), got {tuple(ctx.masks.shape)}")
        for name in self.needs:
            if getattr(ctx, name) is None:
                raise ValueError(f"method {self.method_name or type(self).__name__!r} needs {name}=...; "
                                 f"pass it to the call (see the method's docstring)")
        if ctx.centres is not None and (ctx.centres.ndim != 2 or ctx.centres.shape[1] != features.shape[1]):
            raise ValueError(f"centres must have shape (K, {features.shape[1]}), got {tuple(ctx.centres.shape)}")
        if ctx.nearest is not None and tuple(ctx.nearest.shape) != tuple(features.shape):
            raise ValueError(f"nearest must have the features' shape {tuple(features.shape)} (one assigned centre per "
                             f"feature), got {tuple(ctx.nearest.shape)}")

    def _run(self, features: torch.Tensor, params: list[dict], ctx: FeatureContext) -> FeatureSynthesisResult:
        self._check_context(features, ctx)
        b, _, h, w = features.shape
        base_masks = (ctx.masks > 0.5).float() if ctx.masks is not None else features.new_zeros((b, 1, h, w))
        out, masks = features.clone(), base_masks.clone()
        extras: dict[str, torch.Tensor] = {}
        sel = [i for i, p in enumerate(params) if p.get("anomalous")]
        if sel:
            idx = torch.tensor(sel, device=features.device)
            sub_out, sub_masks, sub_extras = self.apply(features[idx], [params[i] for i in sel], ctx.select(idx))
            out[idx] = sub_out.to(out.dtype)
            masks[idx] = torch.maximum(base_masks[idx], (sub_masks > 0.5).float())
            scatter_rows(extras, sub_extras, idx, b)
        # an emptied mask (SuperSimpleNet's half) is a normal sample
        labels = label_empty_masks_normal(masks, (masks.flatten(1).amax(1) > 0).long(), params)
        return FeatureSynthesisResult(out, masks, labels, params, extras)


def check_positive(name: str, value: Any) -> float:
    """Check a finite number ``> 0``."""
    return float(check_range(name, value, 0.0, None, low_inclusive=False))


def noise_seed(rng: np.random.Generator) -> int:
    """The recorded seed of a sample's Gaussian field."""
    return child_seed(rng)
