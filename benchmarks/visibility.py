"""How much a method changes the pixels under its own mask, per recorded (shape, fill) choice.

Behind docs/handcrafted.md's reading of ``defectmaker_poisson``: every 5th normal training image
of a category at ``--size`` px, ``--repeats`` seeds each; per sample the mean absolute change
(grey levels, over channels) inside the mask, grouped by the recorded params ``--keys``. A sample
whose masked pixels change by less than ``--faint`` grey levels on average is counted as faint.

    python benchmarks/visibility.py /path/to/magnetic_tile -m defectmaker,defectmaker_poisson
"""
import argparse
import collections
from pathlib import Path

import numpy as np
import torch

import defectforge
from defectforge.io.inputs import load_normal_images

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", type=Path, help="an MVTec-AD category (its train/good) or a folder of normal images")
parser.add_argument("-m", "--methods", default="defectmaker,defectmaker_poisson")
parser.add_argument("--keys", default="shape,fill", help="recorded params to group by")
parser.add_argument("--size", type=int, default=256)
parser.add_argument("--every", type=int, default=5)
parser.add_argument("--repeats", type=int, default=5)
parser.add_argument("--faint", type=float, default=3.0)
args = parser.parse_args()
torch.set_num_threads(1)
folder = args.data / "train" / "good" if (args.data / "train" / "good").is_dir() else args.data
normal = load_normal_images(folder, args.size)
x = torch.from_numpy(np.stack(normal.images[::args.every])).permute(0, 3, 1, 2).contiguous()
keys = args.keys.split(",")
print(f"{len(x)} images, {args.repeats} seeds; faint = mean |change| inside the mask < {args.faint} grey levels\n")
print(f"| method | {' | '.join(keys)} | samples | mean abs change | faint |")
print("|---|" + "---|" * len(keys) + "---|---|---|")
for name in args.methods.split(","):
    synth = defectforge.create(name)
    groups = collections.defaultdict(list)
    for seed in range(args.repeats):
        out = synth(x, seed=seed)
        change = (out.images.float() - x.float()).abs().mean(1)
        for i, p in enumerate(out.params):
            inside = out.masks[i, 0] > 0
            if inside.any():
                groups[tuple(str(p.get(k)) for k in keys)].append(change[i][inside].mean().item())
    every = []
    for group, values in sorted(groups.items()):
        v = np.asarray(values)
        every.extend(values)
        print(f"| {name} | {' | '.join(group)} | {len(v)} | {v.mean():.1f} | {(v < args.faint).mean():.0%} |")
    v = np.asarray(every)
    print(f"| {name} | all |" + " |" * (len(keys) - 1) + f" {len(v)} | {v.mean():.1f} | {(v < args.faint).mean():.0%} |")
