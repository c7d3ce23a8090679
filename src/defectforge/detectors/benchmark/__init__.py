"""``defectforge benchmark``: which synthesis trains the best detector on real defects.

- :mod:`.runner`: the configuration, the caches and the ``(method, seed)`` runs.
- :mod:`.selection`: best-checkpoint selection on held-out training normals (``--select-every``).
- :mod:`.per_type`: image AUROC, pixel AUROC and AUPRO per defect type (plain and few-shot runs).
- :mod:`.leaderboard`: runs aggregated over seeds into ``leaderboard.md`` / ``leaderboard.json``.
- :mod:`.figures`: bar chart, convergence curves and example score maps (PNG).
"""

from .leaderboard import METRICS, collect_runs, leaderboard_markdown, write_leaderboard
from .runner import BASELINE, DETECTORS, BenchmarkConfig, evaluate_detector, run_benchmark, run_one

__all__ = ["DETECTORS", "BASELINE", "METRICS", "BenchmarkConfig", "run_benchmark", "run_one", "write_leaderboard",
           "collect_runs", "leaderboard_markdown", "evaluate_detector"]
