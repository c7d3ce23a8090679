"""Running chunks of sample indices: one interface, three engines.

A :class:`ChunkRunner` takes the arguments of a :class:`~defectforge.pipelines.sample_writer.SampleWriter`
and yields ``(chunk, records)`` as each chunk of sample indices is written:

- :class:`SerialRunner`: in this process, with the synthesizer the run already built;
- :class:`ProcessPoolRunner`: ``workers`` spawned processes, one writer each;
- :class:`~defectforge.pipelines.ray_engine.RayRunner`: Ray tasks (``--engine ray``).

Sample ``i`` depends on ``(seed, i)`` alone, so every engine writes the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Protocol

import torch

from .sample_writer import SampleWriter

__all__ = ["ChunkRunner", "SerialRunner", "ProcessPoolRunner", "chunk_runner", "plan_chunks"]


class ChunkRunner(Protocol):
    """Writes chunks of sample indices; yields each chunk with its records as it finishes."""

    def run(self, chunks: Sequence[list[int]]) -> Iterator[tuple[list[int], list[dict]]]:
        ...


def plan_chunks(pending: list[int], batch_size: int, workers: int) -> list[list[int]]:
    """``pending`` in chunks of at most ``batch_size``, about four per worker (even progress)."""
    chunk = max(1, min(batch_size, -(-len(pending) // max(1, workers * 4)) if pending else 1))
    return [pending[k:k + chunk] for k in range(0, len(pending), chunk)]


class SerialRunner:
    """Every chunk in this process, by one writer (with the run's own synthesizer, built once)."""

    def __init__(self, writer_args: tuple, synthesizer=None):
        self.writer = SampleWriter(*writer_args, built=synthesizer)

    def run(self, chunks: Sequence[list[int]]) -> Iterator[tuple[list[int], list[dict]]]:
        for chunk in chunks:
            yield chunk, self.writer.run(chunk)


_WRITER: SampleWriter | None = None  # a pool worker's writer, built once per process


def _start_pool_worker(*writer_args) -> None:
    global _WRITER
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    _WRITER = SampleWriter(*writer_args)


def _run_pool_chunk(indices: list[int]) -> list[dict]:
    assert _WRITER is not None, "the pool's initializer builds the writer"
    return _WRITER.run(indices)


class ProcessPoolRunner:
    """Chunks spread over ``workers`` spawned processes, each building its own writer once."""

    def __init__(self, writer_args: tuple, workers: int):
        self.writer_args, self.workers = writer_args, workers

    def run(self, chunks: Sequence[list[int]]) -> Iterator[tuple[list[int], list[dict]]]:
        context = get_context("spawn")  # fork after OpenMP start-up can hang; spawn is always safe
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_pool_worker,
                                 initargs=self.writer_args) as pool:
            yield from zip(chunks, pool.map(_run_pool_chunk, chunks))


def chunk_runner(engine: str, workers: int, writer_args: tuple, synthesizer=None,
                 ray_address: str | None = None) -> ChunkRunner:
    """The runner of ``engine`` (``"local"``: one process or a pool, by ``workers``; ``"ray"``)."""
    if engine == "ray":
        from .ray_engine import RayRunner

        return RayRunner(writer_args, workers, ray_address)
    if workers == 1:
        return SerialRunner(writer_args, synthesizer)
    return ProcessPoolRunner(writer_args, workers)
