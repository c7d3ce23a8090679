"""Generate-to-disk speed: samples written per second by ``generate`` (images, masks, records,
manifest), and where one process's CPU time goes.

Two runs of COUNT_SMALL and COUNT_LARGE samples (same method, size, workers, into fresh folders)
give the end-to-end rate of each (start-up and reading the inputs included) and the marginal rate
``(large - small) / (t_large - t_small)``, which leaves the fixed start-up out. ``--breakdown``
adds one single-process run that times the generator's stages with the main thread's CPU clock
(reading the inputs, the synthesizer call, PNG encoding, atomic writes, mask contrast, the
rest), so the split holds on a busy machine too, where wall times measure the other jobs
(``--no-rate`` leaves the timed runs out).

    python benchmarks/generate_speed.py /path/to/magnetic_tile -m draem --size 256 --workers 2
    python benchmarks/generate_speed.py /path/to/magnetic_tile -m draem --size 128 --breakdown
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path


def timed_run(input_folder: str, out: Path, method: str, count: int, size: int, workers: int) -> float:
    """Wall seconds of one ``generate`` into the fresh folder ``out``."""
    from defectforge.pipelines.generate import GenerateConfig, generate

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    generate(GenerateConfig(input_folder, method, count=count, seed=0, size=size), out, workers=workers,
             progress=False)
    return time.perf_counter() - start


def cpu_breakdown(input_folder: str, out: Path, method: str, count: int, size: int) -> tuple[float, Counter]:
    """Main-thread CPU seconds of a one-process run, in total and per stage."""
    import torch

    from defectforge.core.base import Synthesizer
    from defectforge.pipelines import generate as gen
    from defectforge.pipelines import sample_writer as writer

    torch.set_num_threads(1)  # as a pool worker runs
    spent: Counter = Counter()
    patched = []

    def clock(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start

        patched.append((owner, name, original))
        setattr(owner, name, timed)

    for owner, name, label in [(gen, "load_normal_images", "reading the inputs (once per run)"),
                               (Synthesizer, "__call__", "synthesizer call"),
                               (writer, "encode_png", "PNG encoding (image + mask)"),
                               (writer, "atomic_write_bytes", "atomic writes (image, mask, record)"),
                               (writer, "mask_fields", "mask area, box and contrast"),
                               (writer.SampleWriter, "run", "all per-sample work")]:
        clock(owner, name, label)
    try:
        shutil.rmtree(out, ignore_errors=True)
        start = time.thread_time()
        gen.generate(gen.GenerateConfig(input_folder, method, count=count, seed=0, size=size), out, progress=False)
        total = time.thread_time() - start
    finally:
        for owner, name, original in patched:
            setattr(owner, name, original)
    parts = [k for k in spent if k not in ("all per-sample work", "reading the inputs (once per run)")]
    spent["rest of the sample (plan, conversions, SHA-256, record)"] = (spent.pop("all per-sample work")
                                                                       - sum(spent[k] for k in parts))
    return total, spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="folder of normal images or an MVTec-style category")
    parser.add_argument("-m", "--method", default="draem")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--counts", default="500,2500", help="COUNT_SMALL,COUNT_LARGE")
    parser.add_argument("--breakdown", action="store_true", help="also split one process's CPU time by stage")
    parser.add_argument("--breakdown-count", type=int, default=600)
    parser.add_argument("--no-rate", action="store_true", help="skip the two timed runs (a saturated machine)")
    args = parser.parse_args()
    small, large = (int(v) for v in args.counts.split(","))
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="generate-speed-") as tmp:
        work = Path(tmp)
        if not args.no_rate:
            t_small = timed_run(args.input, work / "small", args.method, small, args.size, args.workers)
            t_large = timed_run(args.input, work / "large", args.method, large, args.size, args.workers)
            print(f"{args.method} {args.size} px, --workers {args.workers}: {small} samples {t_small:.1f} s "
                  f"({small / t_small:.0f}/s), {large} samples {t_large:.1f} s ({large / t_large:.0f}/s); "
                  f"marginal {(large - small) / (t_large - t_small):.0f} samples/s")
        if args.breakdown:
            n = args.breakdown_count
            total, spent = cpu_breakdown(args.input, work / "breakdown", args.method, n, args.size)
            print(f"one process, {n} samples: {1e3 * total / n:.2f} ms CPU per sample (inputs included)")
            for label, seconds in spent.most_common():
                print(f"  {label:<56} {1e3 * seconds / n:6.2f} ms/sample")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
