"""The few-shot recipe tables of docs/fewshot_recipes.md: several detectors' benchmark folders as one table.

``defectforge benchmark CAT1 CAT2 ...`` compares training sources for one detector. The recipe
tables compare detector + source pairs, so this script reads the run folders that several such
commands wrote (one ``--out`` per detector) and prints, per set, every metric of the few-shot
protocol, then the summary over the sets (``detector: source`` rows; wins counted beyond the
seed spread, as ``OUT/summary.md``; the ``real_only`` reference is the first detector's
``real_only`` row).

    python benchmarks/fewshot_recipes.py seghead=OUT_SEGHEAD fusion=OUT_FUSION [--validation]

Each ``OUT`` holds ``<set>/fewshot-*`` folders (``benchmark CAT1 CAT2 --out OUT``); ``--validation``
reads the validation protocol's folders (``--validate``) instead of the test ones. The commands
that made the docs' tables are at the top of docs/fewshot_recipes.md.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from defectforge.detectors.benchmark.fewshot import few_shot_markdown
from defectforge.detectors.benchmark.leaderboard import collect_runs
from defectforge.detectors.benchmark.summary import summarise, summary_markdown


def _folders(out: Path, validation: bool) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for folder in sorted(out.glob("*/fewshot-*")):
        if folder.is_dir() and ("-validation-" in folder.name) == validation:
            found.setdefault(folder.parent.name, []).append(folder)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outs", nargs="+", help="DETECTOR=OUT pairs (one benchmark --out per detector)")
    parser.add_argument("--validation", action="store_true", help="read the --validate folders")
    args = parser.parse_args()
    per_set: dict[str, dict[str, list[dict]]] = {}
    for pair in args.outs:
        label, _, out = pair.partition("=")
        for name, folders in _folders(Path(out), args.validation).items():
            for folder in folders:
                options = folder.name.split("-b8")[-1].lstrip("-")
                for method, runs in collect_runs(folder).items():
                    row = method if runs[0].get("baseline") else f"{label}{'[' + options + ']' if options else ''}: {method}"
                    per_set.setdefault(name, {})[row] = runs
    for name, runs in per_set.items():
        references = [r for r in runs if r.endswith(": real_only")]
        if references:  # the reference "real_only": the real_only row of the first DETECTOR given
            runs.setdefault("real_only", runs[references[0]])
        print(f"### {name}\n")
        print(few_shot_markdown({k: v for k, v in runs.items() if k != "real_only"}))
    summary = summarise(per_set)
    summary["rows"] = [r for r in summary["rows"] if r["method"] != "real_only"]
    print(summary_markdown(summary))
    for row in summary["rows"]:
        values = [row["mean"][m] for m in summary["metrics"]]
        if all(math.isfinite(v) for v in values):
            print(f"{row['method']:<48} mean of the metrics' means over the sets: {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
