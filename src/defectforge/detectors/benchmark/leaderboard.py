"""The benchmark's leaderboard: runs aggregated (mean and sample std over seeds) into
``leaderboard.md`` and ``leaderboard.json``, with the figures of :mod:`.figures` beside them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ...io.images import atomic_write_bytes, write_image
from ..data import MVTecCategory
from .figures import bar_chart, convergence_chart, score_map_figures
from .recipes import row_folder

__all__ = ["METRICS", "collect_runs", "write_leaderboard", "leaderboard_markdown", "write_json", "run_path"]

#: Metrics of the leaderboard, in column order.
METRICS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "image_f1_max", "aupro")
_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "image_ap": "image AP",
           "pixel_ap": "pixel AP", "image_f1_max": "image F1-max", "aupro": "AUPRO"}


def write_json(path: Path, data: Any) -> None:
    """``data`` as JSON (undefined metrics as null), written atomically."""
    from ...io.files import write_json as _write

    _write(path, data, indent=1)


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def run_path(run_dir: Path, method: str, seed: int) -> Path:
    """Where the result of one ``(training source, seed)`` run is written."""
    return Path(run_dir) / row_folder(method) / f"seed{int(seed)}.json"


def collect_runs(run_dir: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(run_dir).glob("*/seed*.json")):
        result = json.loads(path.read_text())
        runs.setdefault(result["method"], []).append(result)
    return runs


def write_leaderboard(run_dir: Path, data: MVTecCategory | None = None, methods: list[str] | None = None,
                      seeds: list[int] | None = None) -> dict[str, Any]:
    """Aggregate ``run_dir``'s runs into ``leaderboard.md``, ``leaderboard.json``,
    ``leaderboard.png`` (bar chart) and ``score_maps.png`` (+ ``score_maps/<method>.png``).

    Rows are sorted by mean image AUROC; std is the sample standard deviation over seeds.
    """
    run_dir = Path(run_dir)
    runs = collect_runs(run_dir)
    if methods is not None:
        runs = {m: r for m, r in runs.items() if m in methods}
    if seeds is not None:
        runs = {m: [x for x in r if x["seed"] in seeds] for m, r in runs.items()}
        runs = {m: r for m, r in runs.items() if r}
    rows = []
    for method, results in runs.items():
        row: dict[str, Any] = {"method": method, "baseline": results[0]["baseline"],
                               "seeds": sorted(r["seed"] for r in results)}
        for metric in METRICS:
            row[metric] = _mean_std([r["metrics"].get(metric) for r in results])
        row["train_seconds"] = _mean_std([r["train_seconds"] for r in results])
        row["eval_seconds"] = _mean_std([r["eval_seconds"] for r in results])
        row["synthesis_share"] = _mean_std([r["synthesis_share"] for r in results])
        rows.append(row)
    rows.sort(key=lambda r: -np.nan_to_num(r["image_auroc"][0], nan=-1.0))
    first = next(iter(runs.values()))[0] if runs else {}
    board = {"run_dir": str(run_dir), "config": first.get("config", {}), "rows": rows,
             "missing": [] if methods is None or seeds is None else
             [f"{m}/seed{s}" for m in methods for s in seeds if not run_path(run_dir, m, s).is_file()]}
    write_json(run_dir / "leaderboard.json", board)
    atomic_write_bytes(run_dir / "leaderboard.md", leaderboard_markdown(board).encode())
    if rows:
        write_image(run_dir / "leaderboard.png", bar_chart(rows))
        # test-set checkpoints (--checkpoint-every), not the validation scores of --select-every
        curves = {m: r for m, results in runs.items() for r in results[:1]
                  if any("image_auroc" in c for c in r.get("checkpoints", []))}
        if curves:
            write_image(run_dir / "convergence.png", convergence_chart(curves))
        if data is not None:
            grid, per_method = score_map_figures(run_dir, rows, data)
            write_image(run_dir / "score_maps.png", grid)
            for method, image in per_method.items():
                write_image(run_dir / "score_maps" / f"{row_folder(method)}.png", image)
    return board


def _fmt(pair: tuple[float, float], digits: int = 3) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def leaderboard_markdown(board: dict[str, Any]) -> str:
    cfg = board.get("config", {})
    lines = [f"Detector `{cfg.get('detector')}` on backbone `{cfg.get('backbone')}`, {cfg.get('size')} px, "
             f"{cfg.get('steps')} steps x batch {cfg.get('batch_size')}; mean ± std over seeds.", "",
             "| method | seeds | " + " | ".join(_LABELS[m] for m in METRICS) + " | train s | synthesis share |",
             "|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for row in board["rows"]:
        name = f"{row['method']} (no synthesis, baseline)" if row["baseline"] else row["method"]
        share = "-" if row["baseline"] else f"{100 * row['synthesis_share'][0]:.0f}%"
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(_fmt(row[m]) for m in METRICS)
                     + f" | {row['train_seconds'][0]:.0f} | {share} |")
    if board.get("missing"):
        lines += ["", f"Not finished yet: {', '.join(board['missing'])}."]
    return "\n".join(lines) + "\n"
