"""Running chunks of sample indices: one interface, three engines.

A :class:`ChunkRunner` takes the arguments of a :class:`~defectforge.pipelines.sample_writer.SampleWriter`
and yields ``(chunk, records)`` as each chunk of sample indices is written:

- :class:`SerialRunner`: in this process, with the synthesizer the run already built;
- :class:`ProcessPoolRunner`: ``workers`` processes started from a fork server (or spawned), one writer each;
- :class:`~defectforge.pipelines.ray_engine.RayRunner`: Ray tasks (``--engine ray``).

Sample ``i`` depends on ``(seed, i)`` alone, so every engine writes the same bytes.
"""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Protocol

import torch

from ..io.images import ImageDecodeWarning
from .build import procedural_banks
from .sample_writer import SampleWriter, show_worker_warnings

__all__ = ["ChunkRunner", "SerialRunner", "ProcessPoolRunner", "chunk_runner", "plan_chunks", "worker_context",
           "start_worker_imports"]


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


def _start_pool_worker(writer_args: tuple, textures: dict) -> None:
    global _WRITER
    torch.set_num_threads(1)  # one core per worker: the pool is the parallelism
    with warnings.catch_warnings():
        # the main process built the same banks from the same files and has reported them
        warnings.simplefilter("ignore", ImageDecodeWarning)
        _WRITER = SampleWriter(*writer_args, textures=textures)


def _run_pool_chunk(indices: list[int]) -> tuple[list[dict], list[tuple[bool, str]]]:
    assert _WRITER is not None, "the pool's initializer builds the writer"
    return _WRITER.run_reporting(indices)



def worker_context():
    """How pool workers start: from a fork server where the platform has one, else spawned.

    A fork of this process could hang (OpenMP, OpenCV and BLAS threads already started here);
    both ways start each worker from a process that has only imported modules. A spawned worker imports
    torch and the writer itself (about 1.6 s of CPU each, measured on the 2-core development
    machine); the fork server imports them once, ahead of time (:func:`start_worker_imports`), and
    forks every worker from there already imported.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # no effect where this process's fork server already runs (then it imports them in each worker)
    context.set_forkserver_preload([__name__])
    return context


def start_worker_imports(engine: str, workers: int) -> None:
    """Start the fork server of a process pool now, so that it imports torch and the writer while
    this process reads the inputs (a run of ``workers > 1`` local workers; no-op otherwise)."""
    if engine != "local" or workers < 2 or worker_context().get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    forkserver.ensure_running()


class ProcessPoolRunner:
    """Chunks spread over ``workers`` processes (:func:`worker_context`), each building its own writer once.

    The built-in procedural textures of the run's ``synthesizer`` are made here, once, while the
    workers' fork server imports, and handed to every worker (each made all 60: 0.3 s of CPU).
    """

    def __init__(self, writer_args: tuple, workers: int, synthesizer=None):
        self.writer_args, self.workers, self.synthesizer = writer_args, workers, synthesizer

    def run(self, chunks: Sequence[list[int]]) -> Iterator[tuple[list[int], list[dict]]]:
        banks = procedural_banks(self.synthesizer) if self.synthesizer is not None else []
        textures = {bank.key: bank.made() for bank in banks}
        with ProcessPoolExecutor(self.workers, mp_context=worker_context(), initializer=_start_pool_worker,
                                 initargs=(self.writer_args, textures)) as pool:
            for chunk, (records, caught) in zip(chunks, pool.map(_run_pool_chunk, chunks)):
                show_worker_warnings(caught)
                yield chunk, records


def chunk_runner(engine: str, workers: int, writer_args: tuple, synthesizer=None,
                 ray_address: str | None = None) -> ChunkRunner:
    """The runner of ``engine`` (``"local"``: one process or a pool, by ``workers``; ``"ray"``)."""
    if engine == "ray":
        from .ray_engine import RayRunner

        return RayRunner(writer_args, workers, ray_address)
    if workers == 1:
        return SerialRunner(writer_args, synthesizer)
    return ProcessPoolRunner(writer_args, workers, synthesizer)
