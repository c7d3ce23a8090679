"""The seeded skeleton every synthesizer shares, whatever it perturbs (pixels or feature maps).

Image-level methods (:class:`~defectforge.core.base.Synthesizer`) and feature-level ones
(:class:`~defectforge.features.base.FeatureSynthesizer`) follow the same rules, written once here:

- sample ``index`` of a run seeded ``seed`` draws from :func:`~defectforge.core.seeding.sample_rng`
  ``(seed, index)`` (its :attr:`~defectforge.core.seeding.Stream.SYNTHESIS` stream) alone: first
  whether it is anomalous at all (``anomaly_probability``), then every parameter of the method,
  recorded as plain JSON so that ``replay`` remakes the batch from the records;
- the records of a batch and the sub-batch of anomalous samples: indices and records are checked
  against the batch, and what a method returns for the sub-batch is scattered back;
- labels follow the masks: a sample whose mask came out empty is normal (label 0,
  ``params["anomalous"] = False``);
- ``config()`` holds every resolved constructor argument, and ``capabilities`` what the class
  declares (:mod:`defectforge.core.capabilities`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .capabilities import capabilities_of
from .seeding import Stream, sample_rng
from .types import to_jsonable
from .validation import check_probability

__all__ = ["SeededSynthesizer", "label_empty_masks_normal", "scatter_rows", "batch_indices", "check_records"]


class SeededSynthesizer:
    """Parent of the image-level and feature-level synthesizer base classes (see the module docstring).

    Parameters
    ----------
    anomaly_probability : float
        Probability that a sample is anomalous at all.
    """

    #: Registry name; set by :func:`defectforge.create`.
    method_name: str = ""
    #: The registry preset's ``cpu_bound`` flag; set by :func:`defectforge.create`.
    cpu_bound: bool = False

    def __init__(self, anomaly_probability: float = 1.0):
        self.anomaly_probability = check_probability("anomaly_probability", anomaly_probability)
        self.method_kwargs: dict[str, Any] = {}

    @property
    def capabilities(self) -> dict[str, Any]:
        """This synthesizer's capabilities, as ``method_info(name).capabilities`` reports its class's.

        The same keys and types; the values are this instance's (it may narrow its class's).
        """
        return capabilities_of(self, self.cpu_bound)

    def config(self) -> dict[str, Any]:
        """Every constructor argument, resolved (preset defaults, overrides and class defaults).

        ``defectforge.from_config(synth.config())`` rebuilds an identical synthesizer.
        """
        if not self.method_name:
            raise ValueError(f"{type(self).__name__} was not made by defectforge.create, so it has no "
                             "registry name to record; build it with defectforge.create(name, ...)")
        return to_jsonable({"method": self.method_name, **{k: _config_value(v) for k, v in self.method_kwargs.items()}})

    def draw_records(self, seed: int, indices: Sequence[int],
                     sample: Callable[[int, np.random.Generator], dict[str, Any]]
                     ) -> tuple[list[dict[str, Any]], list[np.random.Generator]]:
        """The records of samples ``indices`` and their generators.

        ``sample(k, rng)`` draws the parameters of the ``k``-th of them, an anomalous one, from its
        generator (after the draw that decided it is anomalous).
        """
        params, rngs = [], []
        for k, index in enumerate(indices):
            rng = sample_rng(seed, int(index), Stream.SYNTHESIS)
            anomalous = bool(rng.random() < self.anomaly_probability)
            record: dict[str, Any] = {"anomalous": anomalous}
            if anomalous:
                record.update(sample(k, rng))
            params.append(record)
            rngs.append(rng)
        return params, rngs


def _config_value(value: Any) -> Any:
    """A constructor argument as the config records it (sources and banks by their identity)."""
    identity = getattr(value, "identity", None)
    return identity if isinstance(identity, str) else value


def batch_indices(indices: Sequence[int] | None, batch: int, what: str = "images") -> list[int]:
    """The global index of each of ``batch`` samples (default ``0..batch-1``), checked against the batch."""
    out = list(range(batch)) if indices is None else [int(i) for i in indices]
    if len(out) != batch:
        raise ValueError(f"got {len(out)} indices for a batch of {batch} {what}")
    return out


def check_records(params: Sequence[dict[str, Any]], batch: int, what: str = "images") -> list[dict[str, Any]]:
    """Copies of recorded ``params`` to replay, one per sample of a batch of ``batch``."""
    if len(params) != batch:
        raise ValueError(f"got {len(params)} parameter records for a batch of {batch} {what}")
    return [dict(p) for p in params]


def scatter_rows(extras: dict[str, torch.Tensor], sub_extras: dict[str, torch.Tensor], index: torch.Tensor,
                 batch: int) -> dict[str, torch.Tensor]:
    """Write a sub-batch's ``sub_extras`` into the full-batch ``extras`` at rows ``index`` (zeros elsewhere)."""
    for key, value in sub_extras.items():
        if key not in extras:
            extras[key] = value.new_zeros((batch, *value.shape[1:]))
        extras[key][index] = value
    return extras


def label_empty_masks_normal(masks: torch.Tensor, labels: torch.Tensor, params: list[dict]) -> torch.Tensor:
    """Label 0 (and ``params["anomalous"] = False``) for every sample whose mask is empty."""
    empty = (masks.flatten(1).amax(1) <= 0).cpu().tolist()
    if any(e and label != 0 for e, label in zip(empty, labels.tolist())):
        labels = labels.masked_fill(torch.tensor(empty, device=labels.device), 0)
    for p, e, label in zip(params, empty, labels.tolist()):
        if p.get("anomalous") and (e or label == 0):
            p["anomalous"] = False
    return labels
