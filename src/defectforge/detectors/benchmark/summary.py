"""One table over several categories: each training source's scores per set, their mean over the
sets, and on how many sets it beats the references by more than the seed spread.

``defectforge benchmark CAT1 CAT2 ...`` runs each category and writes ``OUT/summary.md`` and
``OUT/summary.json``. A row *beats* a reference on a set when its mean over seeds is higher by
more than the larger of the two standard deviations over seeds (sample std; a single seed has no
spread, so one seed never proves a win): a difference the seeds alone could make is not counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["SUMMARY_METRICS", "beats", "summarise", "summary_markdown"]

#: The metrics of the summary table: the localisation metrics the few-shot goal is judged by.
SUMMARY_METRICS = ("aupro", "pixel_ap")
_LABELS = {"aupro": "AUPRO", "pixel_ap": "pixel AP", "image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC",
           "pixel_f1_max": "pixel F1-max"}


def _stats(runs: list[dict], metric: str) -> tuple[float, float, int]:
    values = [r["metrics"].get(metric) for r in runs]
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan"), 0
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"), len(values)


def beats(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """Whether ``a`` (mean, std, n) is above ``b`` by more than the larger standard deviation.

    Examples
    --------
    >>> beats((0.80, 0.01, 3), (0.75, 0.02, 3)), beats((0.80, 0.03, 3), (0.78, 0.01, 3))
    (True, False)
    >>> beats((0.9, float("nan"), 1), (0.1, float("nan"), 1))  # one seed: no spread, no proof
    False
    """
    spread = max(a[1], b[1])
    return bool(a[2] > 1 and b[2] > 1 and math.isfinite(spread) and a[0] - b[0] > spread)


def summarise(per_set: dict[str, dict[str, list[dict]]], references: tuple[str, ...] = ("real_only", "patchcore"),
              metrics: tuple[str, ...] = SUMMARY_METRICS) -> dict[str, Any]:
    """``per_set``: ``{set: {row: [run results]}}`` -> the rows with per-set stats, means and win counts."""
    sets = list(per_set)
    names: list[str] = []
    for runs in per_set.values():
        names += [n for n in runs if n not in names]
    present = [r for r in references if any(r in runs for runs in per_set.values())]
    rows = []
    for name in names:
        row: dict[str, Any] = {"method": name, "sets": {}, "mean": {}, "wins": {}}
        for s in sets:
            runs = per_set[s].get(name)
            if runs:
                row["sets"][s] = {m: _stats(runs, m) for m in metrics}
        for m in metrics:
            values = [row["sets"][s][m][0] for s in sets if s in row["sets"]]
            row["mean"][m] = float(np.mean(values)) if len(values) == len(sets) else float("nan")
        for ref in present:
            if ref == name or all(per_set[s].get(ref) is per_set[s].get(name) for s in sets):
                continue  # a reference is not compared with itself (also under another name)
            for m in metrics:
                won = [s for s in sets if s in row["sets"] and per_set[s].get(ref)
                       and beats(row["sets"][s][m], _stats(per_set[s][ref], m))]
                row["wins"][f"{ref}/{m}"] = won
        rows.append(row)
    rows.sort(key=lambda r: -np.nan_to_num(r["mean"].get(metrics[0], float("nan")), nan=-1.0))
    return {"sets": sets, "metrics": list(metrics), "references": present, "rows": rows}


def summary_markdown(summary: dict[str, Any]) -> str:
    """The summary as a markdown table (mean ± std over seeds per set; wins as ``k/N`` sets)."""
    sets, metrics, refs = summary["sets"], summary["metrics"], summary["references"]
    n = len(sets)
    head = ["method"] + [f"{s}: {_LABELS.get(m, m)}" for s in sets for m in metrics] \
        + [f"mean {_LABELS.get(m, m)}" for m in metrics] \
        + [f"beats {r} ({_LABELS.get(m, m)})" for r in refs for m in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary["rows"]:
        cells = [row["method"]]
        for s in sets:
            for m in metrics:
                mu, sd, k = row["sets"].get(s, {}).get(m, (float("nan"), float("nan"), 0))
                cells.append("-" if math.isnan(mu) else f"{mu:.3f}" + (f" ± {sd:.3f}" if k > 1 else " (1 seed)"))
        cells += ["-" if math.isnan(row["mean"][m]) else f"{row['mean'][m]:.3f}" for m in metrics]
        cells += [f"{len(row['wins'][f'{r}/{m}'])}/{n}" if f"{r}/{m}" in row["wins"] else "" for r in refs for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
