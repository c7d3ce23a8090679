"""``generate --engine ray``: the generator's chunks of sample indices as Ray tasks.

Each task runs the same writer as the local engine
(:meth:`~defectforge.pipelines.sample_writer.SampleWriter.run` over a list of indices, the writer
built once per Ray worker process from the same arguments), so the files are
byte-identical to a local run for any number of workers: sample ``i`` depends on ``(seed, i)``
alone and is written by whichever task holds it. The decoded inputs go to the object store once.
Finished samples leave their record file as locally, so ``--resume`` continues a Ray run (with
either engine). On a cluster every node must see the input and output folders at the same paths
(a shared file system).

Ray is an optional extra (``pip install -e ".[ray]"``); this module imports it inside functions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from .sample_writer import SampleWriter

__all__ = ["RayRunner", "require_ray"]

# per Ray worker process: the shard function's state, built once per run (keyed by its token)
_WORKERS: dict[str, Any] = {}


def _shard(token: str, init_args: tuple, indices: list[int]) -> list[dict]:
    """One Ray task: the local engine's writer on ``indices``."""
    import torch

    worker = _WORKERS.get(token)
    if worker is None:
        torch.set_num_threads(1)
        _WORKERS.clear()  # one run at a time per process
        worker = _WORKERS[token] = SampleWriter(*init_args)
    return worker.run(indices)


def require_ray():
    try:
        import ray
    except ImportError:
        raise ImportError('--engine ray needs Ray: pip install -e ".[ray]" (or pip install ray)') from None
    return ray


class RayRunner:
    """Chunks of sample indices as Ray tasks (the :class:`~defectforge.pipelines.chunks.ChunkRunner` of
    ``--engine ray``).

    Uses the running Ray instance if there is one; otherwise connects to ``address`` (a cluster
    started with ``ray start --head``; ``"auto"`` finds it) or starts a local instance with
    ``workers`` CPUs and no dashboard. At most ``workers`` tasks are in flight, so a large run
    never floods the object store (give ``workers`` = the cluster's CPUs to use all of them).
    """

    def __init__(self, writer_args: tuple, workers: int, address: str | None = None):
        self.writer_args, self.workers, self.address = writer_args, workers, address

    def run(self, chunks: Sequence[list[int]]) -> Iterator[tuple[list[int], list[dict]]]:
        """Yield ``(chunk, records)`` as each task finishes."""
        import uuid

        ray = require_ray()
        started = False
        if not ray.is_initialized():
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            kwargs: dict[str, Any] = dict(include_dashboard=False, configure_logging=False, log_to_driver=False)
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.workers, **kwargs)
            started = True
        try:
            task = ray.remote(num_cpus=1)(_shard)
            token = uuid.uuid4().hex
            shared = ray.put(self.writer_args)
            pending: dict[Any, list[int]] = {}
            queue = list(chunks)
            limit = max(1, self.workers)
            while queue or pending:
                while queue and len(pending) < limit:
                    chunk = queue.pop(0)
                    pending[task.remote(token, shared, chunk)] = chunk
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            if started:
                ray.shutdown()
