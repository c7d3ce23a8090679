"""Data types shared by every synthesizer."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

__all__ = ["SynthesisResult", "SynthesisContext", "to_jsonable"]


@dataclass
class SynthesisResult:
    """What a synthesizer returns for a batch.

    Attributes
    ----------
    images : torch.Tensor
        ``(B, C, H, W)``, same dtype and device as the input batch.
    masks : torch.Tensor
        ``(B, 1, H, W)`` float32 in ``{0, 1}``: where the sample was changed.
    labels : torch.Tensor
        ``(B,)`` int64; 0 is normal, >= 1 an anomaly class (most methods use 1 only).
    params : list of dict
        One JSON-serialisable record per sample; ``synthesizer.replay(images, params)`` remakes
        the same batch.
    extras : dict of str to torch.Tensor
        Method-specific outputs with a leading batch axis (soft masks, reconstruction targets...).
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    params: list[dict[str, Any]]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass
class SynthesisContext:
    """Optional per-batch inputs a synthesizer may use.

    Attributes
    ----------
    foreground : torch.Tensor or None
        ``(B, 1, H, W)`` region of interest in ``{0, 1}``; defects are placed inside it.
    donors : torch.Tensor or None
        ``(N, C, H, W)`` pool of other normal images (for methods that cut from another image).
        Donor choices are recorded as indices into this pool.
    shapes : torch.Tensor or None
        ``(B, 1, H, W)`` user-supplied defect shapes in ``{0, 1}`` (a mask bank, placed per sample).
        Methods that draw a free-form mask use the shape as their mask; the others place their
        defect inside it (it is then given as the foreground too).
    """

    foreground: torch.Tensor | None = None
    donors: torch.Tensor | None = None
    shapes: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> "SynthesisContext":
        """The context of a sub-batch (``donors`` is a shared pool, so it is kept whole)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("foreground", "shapes") and value is not None:
                value = value[index]
            out[f.name] = value
        return SynthesisContext(**out)


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON types: the one sanitiser every record and report goes through.

    numpy/torch scalars and arrays become Python numbers and lists, tuples lists, paths strings,
    and non-finite floats ``None`` (JSON has no nan: ``null`` means "undefined", e.g. an AUROC
    without positives).

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonable({"a": np.float32(0.5), "b": (1, float("nan")), "c": np.arange(2)})
    {'a': 0.5, 'b': [1, None], 'c': [0, 1]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return to_jsonable(value.detach().cpu().tolist())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return to_jsonable(float(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value
