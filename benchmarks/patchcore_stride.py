"""Ablation behind docs/benchmark.md's feature-level reading: ``patchcore`` on the benchmark's
cached stride-8 MobileNetV2 maps average-pooled ``pool x pool`` (2: stride 16, UniAD's token grid),
to measure what a coarser grid costs at the pixel level.

    python benchmarks/patchcore_stride.py /path/to/magnetic_tile --cache benchmark_out/cache --pool 2
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from defectforge.detectors.backbones import load_backbone
from defectforge.detectors.benchmark.runner import evaluate_detector, features_cached, load_data_cached
from defectforge.detectors.patchcore import PatchCoreBaseline

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", type=Path)
parser.add_argument("--cache", type=Path, default=Path("benchmark_out/cache"))
parser.add_argument("--pool", type=int, default=2)
parser.add_argument("--seeds", default="0,1,2")
parser.add_argument("--size", type=int, default=256)
args = parser.parse_args()
backbone = load_backbone("mobilenet_v2")
data, fingerprint = load_data_cached(args.data, args.size, args.cache)
feats = features_cached(backbone, data, fingerprint, args.cache)
train, test = feats["train"].float(), feats["test"].float()
if args.pool > 1:
    train, test = (F.avg_pool2d(x, args.pool, ceil_mode=True) for x in (train, test))
for seed in (int(s) for s in args.seeds.split(",")):
    detector = PatchCoreBaseline(backbone)
    start = time.time()
    detector.fit(data.train, seed=seed, features=train)
    m, _ = evaluate_detector(detector, data, test)
    print(f"patchcore stride {8 * args.pool} seed {seed}: image AUROC {m['image_auroc']:.3f}  pixel AUROC "
          f"{m['pixel_auroc']:.3f}  AUPRO {m['aupro']:.3f}  ({time.time() - start:.0f} s)", flush=True)
