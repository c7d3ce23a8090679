"""Where a dataset run's time goes, per sample and stage, at one or several image sizes.

One ``generate`` in this process (one torch thread, as each pool worker runs) per size, its stages
timed with the main thread's CPU clock, so the split holds on a busy machine too (wall times
there measure the other jobs): reading the inputs and making the anomaly-source textures (once
per run and process, spread over its samples), the synthesizer call, PNG encoding, the atomic
writes of image, mask and record, the mask's area, box and contrast, and the rest of the sample
(its plan, conversions, SHA-256, record). A row per stage, a column per size, then a fit of each
stage as ``fixed + per-pixel x pixels`` over the sizes. The rate of whole runs, with workers, is
``defectforge bench --to-disk``.

    python benchmarks/generate_speed.py /path/to/magnetic_tile -m draem --sizes 64,128,256 --count 600
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

#: The stages a run pays once (per process), whatever its count: left out of the per-sample fit.
ONCE = ("reading the inputs (once per run)", "textures made and resized (once per process)")


def stage_seconds(input_folder: str, out: Path, method: str, count: int, size: int) -> tuple[float, Counter]:
    """Main-thread CPU seconds of a one-process run, in total and per stage (exclusive of the stages inside)."""
    import torch

    from defectforge.core.base import Synthesizer
    from defectforge.pipelines import generate as gen
    from defectforge.pipelines import sample_writer as writer
    from defectforge.sources.textures import TextureSource

    torch.set_num_threads(1)  # as a pool worker runs
    spent: Counter = Counter()
    patched = []

    def clock(owner, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:  # a stage this version of the writer does not have
            return

        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start

        patched.append((owner, name, original))
        setattr(owner, name, timed)

    for owner, name, label in [(gen, "load_normal_images", ONCE[0]), (TextureSource, "get_uint8", ONCE[1]),
                               (Synthesizer, "__call__", "synthesizer call"),
                               (writer, "encode_png", "PNG encoding (image + mask)"),
                               (writer, "atomic_write_bytes", "atomic writes (image, mask, record)"),
                               (writer, "mask_fields", "mask area, box and contrast"),
                               (writer, "mask_contrast", "mask area, box and contrast"),  # before mask_fields
                               (writer.SampleWriter, "run", "all per-sample work")]:
        clock(owner, name, label)
    try:
        shutil.rmtree(out, ignore_errors=True)
        start = time.thread_time()
        gen.generate(gen.GenerateConfig(input_folder, method, count=count, seed=0, size=size), out, progress=False)
        total = time.thread_time() - start
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)
    # textures are made inside the first calls that use them (later calls find them in the cache)
    spent["synthesizer call"] -= spent[ONCE[1]]
    inside = [k for k in spent if k not in ("all per-sample work", ONCE[0])]
    spent["rest of the sample (plan, conversions, SHA-256, record)"] = (spent.pop("all per-sample work")
                                                                       - sum(spent[k] for k in inside))
    return total, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="folder of normal images or an MVTec-style category")
    parser.add_argument("-m", "--method", default="draem")
    parser.add_argument("--sizes", default="256", help="image sizes, comma-separated (e.g. 64,128,256)")
    parser.add_argument("--count", type=int, default=600, help="samples per run")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    table: dict[str, dict[int, float]] = {}
    totals = {}
    with tempfile.TemporaryDirectory(prefix="generate-speed-") as tmp:
        for size in sizes:
            total, spent = stage_seconds(args.input, Path(tmp) / str(size), args.method, args.count, size)
            totals[size] = 1e3 * total / args.count
            for label, seconds in spent.items():
                table.setdefault(label, {})[size] = 1e3 * seconds / args.count
    print(f"{args.method}, one process, {args.count} samples: CPU ms per sample")
    print(f"{'stage':<56}" + "".join(f"{s:>9} px" for s in sizes))
    order = sorted(table, key=lambda k: (k in ONCE, -table[k][sizes[-1]]))
    for label in order:
        print(f"{label:<56}" + "".join(f"{table[label][s]:12.2f}" for s in sizes))
    steady = {s: totals[s] - sum(table[k][s] for k in ONCE) for s in sizes}
    print(f"{'total':<56}" + "".join(f"{totals[s]:12.2f}" for s in sizes))
    print(f"{'total without the once-per-run stages':<56}" + "".join(f"{steady[s]:12.2f}" for s in sizes))
    if len(sizes) > 1:
        pixels = np.array([s * s for s in sizes], float)
        print("fit: fixed ms per sample + ns per pixel (least squares over the sizes)")
        for label in order + ["total without the once-per-run stages"]:
            values = np.array([steady[s] if label.startswith("total") else table[label][s] for s in sizes])
            slope, fixed = np.polyfit(pixels, values, 1)
            print(f"  {label:<54} {fixed:6.2f} ms + {slope * 1e6:6.1f} ns/px")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
