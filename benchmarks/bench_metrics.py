"""Time the detection metrics on 200 score maps of 256x256 (the issue's target: under 5 s).

Run: ``PYTHONPATH=src python benchmarks/bench_metrics.py [--sklearn]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_case(n: int = 200, size: int = 256, seed: int = 0):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 40, size=2)
            h, w = rng.integers(2, 40, size=2)
            masks[i, y:y + h, x:x + w] = 1
    maps = (rng.normal(size=masks.shape).astype(np.float32) + 1.5 * masks).astype(np.float32)
    return maps, masks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn for comparison")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from defectforge.metrics import aupro, detection_metrics, pixel_auroc

    maps, masks = make_case()
    scores = maps.reshape(len(maps), -1).max(axis=1)
    labels = masks.reshape(len(masks), -1).max(axis=1)
    print(f"{maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]} ({maps.size / 1e6:.1f}M pixels), float32")

    def best(fn):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            value = fn()
            times.append(time.perf_counter() - start)
        return min(times), value

    t, out = best(lambda: detection_metrics(scores, labels, maps, masks))
    print(f"detection_metrics (all 7):          {t:6.2f} s  {({k: round(v, 4) for k, v in out.items()})}")
    t, _ = best(lambda: pixel_auroc(maps, masks))
    print(f"pixel_auroc alone:                  {t:6.2f} s")
    t, _ = best(lambda: aupro(maps, masks))
    print(f"aupro alone:                        {t:6.2f} s")
    wide = maps.astype(np.float64) + np.random.default_rng(1).random(maps.shape) * 1e-9
    t, _ = best(lambda: detection_metrics(scores, labels, wide, masks))
    print(f"detection_metrics, float64 maps:    {t:6.2f} s  (exact argsort path)")
    if args.sklearn:
        from sklearn.metrics import roc_auc_score

        start = time.perf_counter()
        roc_auc_score(masks.reshape(-1), maps.reshape(-1))
        print(f"sklearn roc_auc_score (reference):  {time.perf_counter() - start:6.2f} s")


if __name__ == "__main__":
    main()
