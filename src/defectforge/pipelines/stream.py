"""Fresh anomalies on every call: a synthesizer with a running sample index.

``synth(images, seed=s)`` without ``indices`` makes samples ``0..B-1`` on every call, so a
training loop calling it each step sees the same anomalies each step. :class:`AnomalyStream`
keeps the index: call ``k`` gets the next ``B`` sample indices, so every call draws new
anomalies, and a run is still reproducible (sample ``i`` depends on ``(seed, i)`` only; the
position is saved and restored with ``state_dict``). Under data parallelism each process
(``rank`` of ``world_size``) takes the indices ``i * world_size + rank``, so no two processes make
the same sample.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.validation import check_range

__all__ = ["AnomalyStream", "stream", "distributed_rank"]


def distributed_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process under ``torch.distributed``; ``(0, 1)`` otherwise."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank()), int(dist.get_world_size())
    return 0, 1


class AnomalyStream:
    """A synthesizer that advances its sample indices on every call.

    Parameters
    ----------
    synthesizer : Synthesizer or str
        A synthesizer, a registry name (built with its preset defaults), or a combined source
        ``"real_only:0.5+defect_transplant:0.5"`` (:func:`defectforge.recipe`).
    seed : int
        Run seed.
    start : int
        Samples already drawn on this process (the position to continue from).
    rank, world_size : int, optional
        This process's share of the index space; by default read from ``torch.distributed`` at
        each call (0 and 1 when it is not initialised).
    bank : DefectBank, optional
        The real defects of methods that place them (``real_only``, ``copy_paste``, ...).

    Examples
    --------
    >>> import torch
    >>> s = AnomalyStream("cutpaste", seed=0)
    >>> first = s(torch.rand(2, 3, 64, 64))
    >>> s.position, s.last_indices
    (2, [0, 1])
    >>> _ = s(torch.rand(3, 3, 64, 64)); s.last_indices
    [2, 3, 4]
    >>> s.load_state_dict({"position": 0, "seed": 0}); s.indices(2)
    [0, 1]
    """

    def __init__(self, synthesizer, seed: int = 0, start: int = 0, rank: int | None = None,
                 world_size: int | None = None, bank=None):
        from ..core.registry import create
        from ..synthesizers.compose import recipe

        if isinstance(synthesizer, str) and any(sep in synthesizer for sep in "+,:"):
            synthesizer = recipe(synthesizer, bank=bank)  # a combined source, e.g. "real_only+glass_las"
        elif isinstance(synthesizer, str):
            synthesizer = create(synthesizer, **({"bank": bank} if bank is not None else {}))
        self.synthesizer = synthesizer
        self.seed = int(check_range("seed", seed, 0, None, integer=True))
        self.position = int(check_range("start", start, 0, None, integer=True))
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither (then torch.distributed decides)")
        if world_size is not None:
            check_range("world_size", world_size, 1, None, integer=True)
            check_range("rank", rank, 0, world_size - 1, integer=True)
        self.rank, self.world_size = rank, world_size
        self.last_indices: list[int] = []

    def _share(self) -> tuple[int, int]:
        if self.world_size is not None:
            return int(self.rank), int(self.world_size)
        return distributed_rank()

    def indices(self, n: int) -> list[int]:
        """The global sample indices of the next ``n`` samples of this process (without advancing)."""
        rank, world = self._share()
        return [(self.position + k) * world + rank for k in range(int(n))]

    def __call__(self, images: torch.Tensor, **kwargs: Any):
        """``synthesizer(images, seed=seed, indices=<next B>, **kwargs)``; then advance by ``B``."""
        if "indices" in kwargs or "seed" in kwargs:
            raise TypeError("the stream chooses seed and indices itself; call the synthesizer directly to set them")
        idx = self.indices(images.shape[0])
        out = self.synthesizer(images, seed=self.seed, indices=idx, **kwargs)
        self.position += len(idx)
        self.last_indices = idx
        return out

    def state_dict(self) -> dict[str, int]:
        """``{"position", "seed"}``: what a checkpoint needs to continue the stream."""
        return {"position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`state_dict`."""
        self.position = int(check_range("position", state["position"], 0, None, integer=True))
        self.seed = int(state.get("seed", self.seed))


def stream(synthesizer, seed: int = 0, **kwargs: Any) -> AnomalyStream:
    """Shortcut for :class:`AnomalyStream` (``defectforge.stream("draem", seed=0)``).

    Examples
    --------
    >>> import torch, defectforge
    >>> s = defectforge.stream("cutpaste", seed=1)
    >>> a, b = s(torch.rand(2, 3, 64, 64)), s(torch.rand(2, 3, 64, 64))
    >>> s.last_indices
    [2, 3]
    """
    return AnomalyStream(synthesizer, seed=seed, **kwargs)
