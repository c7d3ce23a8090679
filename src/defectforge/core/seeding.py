"""Per-sample random sources.

Every random choice a synthesizer makes for sample ``index`` of a run seeded with ``seed`` comes
from :func:`sample_rng` ``(seed, index)`` alone, so a sample is the same whatever the batch size,
the number of workers or the order in which samples are made. No global random state (numpy's,
Python's or torch's) is read or changed.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch

__all__ = ["sample_rng", "child_seed", "child_rng", "CHILD_DRAWS", "CHILD_REDRAWS", "torch_generator", "retry_stream",
           "Stream", "MAX_SEED", "MAX_RETRIES", "donor_indices", "DONOR_POOL"]

MAX_SEED = 2**63 - 1

#: Redraws a pipeline may make of one sample (an empty mask, too little contrast): attempts 1..19.
MAX_RETRIES = 19


class Stream(IntEnum):
    """Named sub-streams of :func:`sample_rng`: one per kind of random choice about a sample.

    Two uses of the same ``(seed, index, stream)`` draw the same numbers, so every consumer has
    its own number here and no module passes a bare stream number to :func:`sample_rng`. The
    numbers are those existing outputs were made with: changing one changes every dataset made
    since. Until version 0.1 the first redraw of a sample used stream 2, the donors' stream
    (``1 + attempt``); it now uses :attr:`RETRY_FIRST` and later redraws keep ``1 + attempt``
    (3..20), so outputs that needed no redraw, or none before the second, are unchanged.

    The overlap rule: a new stream takes a number outside the redraw streams 3..20 and 21
    (:func:`retry_stream`). :attr:`REALISM_NORMALS` (5) and :attr:`FEW_SHOT_SPLIT` (7) predate the
    rule and keep their numbers so that existing splits and picks stay as they are; they are keyed
    by a split or benchmark seed and index 0 or a defect type's position, and coincide with redraw
    4 or 6 of a dataset sample only where that run's seed and the sample's index are the same
    numbers, which then draw the same values (no module draws both for one purpose).
    :attr:`PREVIEW_PICK` (9) is only drawn by the preview, never by a dataset.
    ``tests/test_engine_rules.py`` holds the list of these exceptions.
    """

    #: The synthesizer's own draws (every parameter in ``params``).
    SYNTHESIS = 0
    #: The generator's plan of a sample: its source image and whether it stays normal.
    PLAN = 1
    #: Donor images (other normal images cut from by NSA, DefectMaker) of a sample or step.
    DONORS = 2
    #: The few-shot benchmark's realism section: its pick of training normals (index 0 of the
    #: benchmark seed). Inside the redraw range (see the class docstring).
    REALISM_NORMALS = 5
    #: The few-shot split's permutation of each defect type's files (index: the type's position
    #: among the sorted types; seed: the split seed). Inside the redraw range (see above).
    FEW_SHOT_SPLIT = 7
    #: First redraw of a sample (the seed its synthesis uses instead of the run seed).
    RETRY_FIRST = 21
    #: The preview command's pick of input images (index 0 of the preview seed). Only the preview
    #: draws from it, never a dataset, so it shares no sample with redraw 8 (also stream 9).
    PREVIEW_PICK = 9
    #: The benchmark's validation protocol: which of the few-shot training defects are held out
    #: for validation (per type), and which training normals (index 0). Above every redraw stream.
    VALIDATION_DEFECTS = 41
    VALIDATION_NORMALS = 42


def retry_stream(attempt: int) -> int:
    """Stream of redraw ``attempt`` (1..:data:`MAX_RETRIES`) of a sample; never one of the streams a dataset's sample uses.

    >>> [retry_stream(a) for a in (1, 2, 3, 19)]
    [21, 3, 4, 20]
    """
    if not 1 <= attempt <= MAX_RETRIES:
        raise ValueError(f"attempt must be in [1, {MAX_RETRIES}], got {attempt}")
    return int(Stream.RETRY_FIRST) if attempt == 1 else 1 + attempt


def _check_seed(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{name} must be in [0, 2**63-1], got {value}")
    return value


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Random generator of one sample, derived from ``(seed, index, stream)`` only.

    A counter-based Philox generator keyed by ``(seed, index)`` (Salmon et al., SC 2011): keys
    give independent streams by construction, and making one costs ~15 us, half of hashing a
    ``SeedSequence``.

    Parameters
    ----------
    seed : int
        Run seed, ``0 <= seed < 2**63``.
    index : int
        Sample index within the run (``>= 0``).
    stream : int, optional
        Independent sub-stream, for callers that need a second generator per sample.

    Examples
    --------
    >>> a = sample_rng(7, 3).random()
    >>> b = sample_rng(7, 3).random()
    >>> a == b
    True
    """
    seed = _check_seed("seed", seed)
    index = _check_seed("index", index)
    stream = _check_seed("stream", stream)
    return np.random.Generator(np.random.Philox(key=(seed << 64) | index, counter=stream << 128))


def child_seed(rng: np.random.Generator) -> int:
    """Draw a 63-bit seed from ``rng`` (recorded in params so big random fields replay)."""
    return int(rng.integers(0, MAX_SEED, dtype=np.int64))


#: Sub-streams of :func:`child_rng`: a part's own draws, and its redraws (an empty mask, say).
CHILD_DRAWS, CHILD_REDRAWS = 0, 1


def child_rng(seed: int, stream: int = CHILD_DRAWS) -> np.random.Generator:
    """The generator of one part of a sample, keyed by a seed drawn from the sample's own stream.

    ``seed`` comes from :func:`child_seed` on the sample's generator and is recorded in its
    params, so the part (one defect of ``control``) replays from its record alone. A Philox key
    of the child seed itself: it equals ``sample_rng(0, seed)``'s key, which no run reaches (a
    child seed is a uniform 63-bit number, a sample index a count of samples).

    Examples
    --------
    >>> a = child_rng(123).random()
    >>> a == child_rng(123).random() != child_rng(123, CHILD_REDRAWS).random()
    True
    """
    seed = _check_seed("seed", seed)
    return np.random.Generator(np.random.Philox(key=seed, counter=_check_seed("stream", stream) << 128))


def torch_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (for large random tensors)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(_check_seed("seed", seed))
    return gen


#: Donor images per sample (or per training step) for methods that cut from other normal images:
#: the one pool size of ``generate``, the online dataset and the benchmark's training batches.
DONOR_POOL = 4


def donor_indices(seed: int, key: int, n_images: int, exclude: int | None = None,
                  pool_size: int = DONOR_POOL) -> list[int]:
    """Indices of the donor images of sample (or training step) ``key``, drawn from :attr:`Stream.DONORS`.

    ``min(pool_size, candidates)`` distinct images among ``range(n_images)`` other than ``exclude``
    (the sample's own source image), the same for a given ``(seed, key)`` wherever it is drawn.

    Examples
    --------
    >>> d = donor_indices(0, 5, n_images=10, exclude=3)
    >>> len(d), 3 in d, d == donor_indices(0, 5, n_images=10, exclude=3)
    (4, False, True)
    """
    candidates = n_images - (1 if exclude is not None else 0)
    k = min(int(pool_size), candidates)
    if k <= 0:
        return []
    picks = sample_rng(seed, key, stream=Stream.DONORS).choice(candidates, size=k, replace=False)
    if exclude is None:
        return [int(p) for p in picks]
    return [int(p) + (1 if p >= exclude else 0) for p in picks]
