"""A small thread pool for per-sample work that runs in OpenCV / numpy / torch kernels.

Those kernels release the GIL, so samples of a batch run side by side on the threads torch is
allowed to use (``torch.get_num_threads()``). Each sample writes only its own outputs, so the
results do not depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["map_samples"]

T = TypeVar("T")
R = TypeVar("R")
_POOLS: dict[int, ThreadPoolExecutor] = {}


def map_samples(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(x) for x in items]``, spread over ``torch.get_num_threads()`` threads."""
    items = list(items)
    threads = min(torch.get_num_threads(), len(items))
    if threads <= 1:
        return [fn(x) for x in items]
    pool = _POOLS.get(threads)
    if pool is None:
        pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="defectforge")
    return list(pool.map(fn, items))
