"""``defectforge bench --to-disk``: samples per second of a whole dataset run, ``generate`` into a
fresh folder (reading the inputs, starting the workers, synthesis, PNG encoding, hashing, the
atomic writes of images, masks and records, the manifest).

Each method and size is run twice, with ``count // 4`` and ``count`` samples, so that the report
can tell the start-up (reading the inputs, starting and importing the worker processes, building
the synthesizer and its texture bank) from the rate at which samples are written once it is
done: ``(count - count // 4) / (t_count - t_quarter)``. Each run is timed in a fresh Python
process, from the call of ``generate`` to its return, as a ``defectforge generate`` command runs
it (a process that ran one already has its workers' fork server started). Wall clock: on a busy
machine it measures the other jobs too, so the load average is printed beside it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["demo_inputs", "time_generate", "to_disk_row", "to_disk_line", "DEMO_INPUTS"]

#: The inputs when none are given: this many procedural surfaces (metal, fabric, wood, tiles in
#: turn), 320 px, so that every run resizes them to its ``--size`` as it would a folder of photos.
DEMO_INPUTS = (64, 320)


def demo_inputs(folder: Path) -> Path:
    """Write the :data:`DEMO_INPUTS` surfaces as PNGs into ``folder``; returns it."""
    from ..io.images import write_image
    from ..sources.procedural import SURFACE_KINDS, surface

    count, size = DEMO_INPUTS
    for i in range(count):
        write_image(folder / f"{i:03d}.png", surface(SURFACE_KINDS[i % len(SURFACE_KINDS)], size, seed=i))
    return folder


#: What the fresh process runs: its imports first, then ``generate`` timed alone.
_TIMED_RUN = """
import json, sys, time
from defectforge.pipelines.generate import GenerateConfig, generate
args = json.loads(sys.argv[1])
start = time.perf_counter()
generate(GenerateConfig(args["input"], args["method"], count=args["count"], seed=0, size=args["size"]),
         args["output"], workers=args["workers"], progress=False)
print(time.perf_counter() - start)
"""


def time_generate(input_folder: str | Path, output: Path, method: str, count: int, size: int, workers: int) -> float:
    """Wall seconds of one ``generate`` (seed 0) into the fresh folder ``output``, in a fresh process
    that imports the same ``defectforge`` as this one."""
    shutil.rmtree(output, ignore_errors=True)
    args = {"input": str(input_folder), "output": str(output), "method": method, "count": count, "size": size,
            "workers": workers}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run([sys.executable, "-c", _TIMED_RUN, json.dumps(args)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise RuntimeError(f"generate {method} at {size} px failed: {lines[-1]}")
    return float(done.stdout.strip().splitlines()[-1])


def to_disk_row(input_folder: str | Path, method: str, count: int, size: int, workers: int) -> dict:
    """One method and size: the two timed runs and what they give (see the module docstring).

    ``ms_per_image`` is the time one worker spends on a sample once started (``workers`` over the
    rate after start-up), the figure the size scaling compares.
    """
    small = max(1, count // 4)
    with tempfile.TemporaryDirectory(prefix="defectforge-bench-") as tmp:
        # untimed: the inputs come from the page cache in both timed runs
        time_generate(input_folder, Path(tmp) / "warm-up", method, 2, size, 1)
        t_small = time_generate(input_folder, Path(tmp) / "small", method, small, size, workers)
        t_count = time_generate(input_folder, Path(tmp) / "count", method, count, size, workers)
    row = {"method": method, "size": size, "workers": workers, "count": count, "seconds": t_count,
           "samples_per_second": count / t_count, "quarter_count": small, "quarter_seconds": t_small}
    if t_count > t_small and count > small:
        rate = (count - small) / (t_count - t_small)
        row.update(after_start_samples_per_second=rate, start_seconds=max(0.0, t_count - count / rate),
                   ms_per_image=1e3 * workers / rate)
    return row


def to_disk_line(row: dict) -> str:
    """One line of the report: the whole run's rate, then the rate after start-up and the start-up."""
    line = (f"{row['method']} {row['size']} px, --workers {row['workers']}: {row['count']} samples in "
            f"{row['seconds']:.2f} s = {row['samples_per_second']:.0f} samples/s end to end")
    if "after_start_samples_per_second" in row:
        line += (f"; {row['after_start_samples_per_second']:.0f} samples/s after a start-up of "
                 f"{row['start_seconds']:.2f} s (from {row['quarter_count']} samples in "
                 f"{row['quarter_seconds']:.2f} s)")
    else:
        line += f"; {row['quarter_count']} samples took as long: no rate after start-up (use a larger --count)"
    return line
