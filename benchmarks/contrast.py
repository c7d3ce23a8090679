"""Invisible anomalies: per method, the share of written samples whose masked pixels barely change.

For every image-level method, ``defectforge generate`` writes COUNT samples (seed 0, 256 px) on
(a) the built-in procedural surfaces (metal, fabric, wood, tiles; 6 images each) and (b) a real
folder of normal images given with ``--real`` (e.g. magnetic_tile/train/good). Each manifest
records ``contrast``: the mean absolute change inside the mask on the written 8-bit image, in
[0, 1]. Printed: the share of samples below 2/255 and the median contrast, as a markdown table.

    python benchmarks/contrast.py --count 200 --real /path/to/magnetic_tile/train/good
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import defectforge
from defectforge.io.images import write_image
from defectforge.pipelines.generate import GenerateConfig, generate
from defectforge.sources.procedural import SURFACE_KINDS, surface

THRESHOLD = 2 / 255


def measure(folder: Path, method: str, count: int, work: Path) -> tuple[float, float, int]:
    out = work / method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        generate(GenerateConfig(str(folder), method, count=count, seed=0, size=256), out, progress=False)
    values = [r["contrast"] for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
              if r.get("contrast") is not None]
    return sum(v < THRESHOLD for v in values) / len(values), statistics.median(values), len(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--real", type=Path, default=None, help="A folder of real normal images.")
    parser.add_argument("--methods", default=None, help="Comma-separated (default: every image-level method).")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else defectforge.list_methods(level="image")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        surfaces = tmp / "surfaces"
        for kind in SURFACE_KINDS:
            for i in range(6):
                write_image(surfaces / f"{kind}_{i:02d}.png", surface(kind, 256, seed=i))
        sets = [("procedural surfaces", surfaces)] + ([(args.real.name, args.real)] if args.real else [])
        header = "| method | " + " | ".join(f"{name}: share < 2/255 | median" for name, _ in sets) + " |"
        print(header)
        print("|---" * (1 + 2 * len(sets)) + "|")
        for method in methods:
            cells = []
            for k, (_, folder) in enumerate(sets):
                share, median, n = measure(folder, method, args.count, tmp / f"run{k}")
                cells += [f"{100 * share:.1f}% of {n}", f"{255 * median:.1f}/255"]
            print(f"| {method} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
