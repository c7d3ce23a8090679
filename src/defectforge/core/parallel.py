"""A small thread pool for per-sample work that runs in OpenCV / numpy / torch kernels.

Those kernels release the GIL, so samples of a batch run side by side on the threads torch is
allowed to use (``torch.get_num_threads()``). Each sample writes only its own outputs, so the
results do not depend on the thread count.

While the pool runs, numpy's BLAS and OpenCV are held to one thread each: the per-sample kernels
are small (a 256x33 matrix product, a 256x256 warp), the pool already gives every core a sample,
and nested BLAS/OpenCV threads only oversubscribe the cores. On a busy 2-core machine the nested
OpenBLAS threads made a batch of 32 Perlin fields 30x slower (4 ms -> 130 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

__all__ = ["map_samples", "single_threaded_kernels"]

T = TypeVar("T")
R = TypeVar("R")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_BLAS = None  # threadpoolctl controller, made on first use (it scans the loaded libraries)


@contextmanager
def single_threaded_kernels():
    """Hold numpy's BLAS and OpenCV to one thread inside the block (restored on exit)."""
    global _BLAS
    import cv2
    from threadpoolctl import ThreadpoolController

    if _BLAS is None:
        _BLAS = ThreadpoolController()
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with _BLAS.limit(limits=1, user_api="blas"):
            yield
    finally:
        cv2.setNumThreads(opencv_threads)


def map_samples(fn: Callable[[T], R], items: Iterable[T], threads: int | None = None) -> list[R]:
    """``[fn(x) for x in items]``, spread over ``threads`` (default ``torch.get_num_threads()``) threads."""
    items = list(items)
    threads = min(torch.get_num_threads() if threads is None else threads, len(items))
    with single_threaded_kernels():
        if threads <= 1:
            return [fn(x) for x in items]
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="defectforge")
        return list(pool.map(fn, items))
