"""Variants of ``residual_seg`` behind docs/benchmark.md's reading: residuals only, or anchored on
patchcore's distance, at any number of steps, on the benchmark's cached features.

    python benchmarks/residual_seg_variants.py /path/to/magnetic_tile --cache benchmark_out/cache \\
        --method draem --variant anchored --steps 0,50,150,500,2000 --seeds 0
"""
import argparse
import time
from pathlib import Path

import torch

from defectforge.detectors.backbones import load_backbone
from defectforge.detectors.benchmark.runner import evaluate_detector, features_cached, load_data_cached
from defectforge.detectors.residual_seg import ResidualSegDetector

VARIANTS = {"default": {}, "residuals_only": {"with_features": False}, "anchored": {"anchored": True}}

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", type=Path)
parser.add_argument("--cache", type=Path, default=Path("benchmark_out/cache"))
parser.add_argument("--method", default="draem")
parser.add_argument("--variant", choices=sorted(VARIANTS), default="anchored")
parser.add_argument("--steps", default="500", help="comma-separated step counts, one run each")
parser.add_argument("--seeds", default="0")
parser.add_argument("--size", type=int, default=256)
parser.add_argument("--threads", type=int, default=1)
args = parser.parse_args()
torch.set_num_threads(args.threads)
backbone = load_backbone("mobilenet_v2")
data, fingerprint = load_data_cached(args.data, args.size, args.cache)
features = features_cached(backbone, data, fingerprint, args.cache)
print("| method | variant | seed | steps | image AUROC | pixel AUROC | AUPRO | seconds |")
print("|---|---|---|---|---|---|---|---|")
for seed in (int(s) for s in args.seeds.split(",")):
    for steps in (int(s) for s in args.steps.split(",")):
        start = time.perf_counter()
        detector = ResidualSegDetector(backbone, **VARIANTS[args.variant])
        detector.fit(data.train, args.method, steps=steps, batch_size=8, seed=seed, features=features["train"])
        metrics, _ = evaluate_detector(detector, data, features["test"])
        print(f"| {args.method} | {args.variant} | {seed} | {steps} | {metrics['image_auroc']:.3f} | "
              f"{metrics['pixel_auroc']:.3f} | {metrics['aupro']:.3f} | {time.perf_counter() - start:.0f} |", flush=True)
