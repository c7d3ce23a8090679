"""Probe behind docs/features.md's supersimplenet reading: the norm of the feature-level
detectors' prepared features (standardised per channel on the training features, averaged over
3x3, ``FeatureDetector.prepare``) used directly as an anomaly map. Gaussian feature noise
``f + n`` adds one signal a per-cell discriminator can learn, a larger norm
(``E|f + n|^2 = |f|^2 + C sigma^2``); this measures what that signal alone finds on a test set.

    python benchmarks/feature_norm_probe.py /path/to/ball_screw --cache benchmark_out/cache
"""
import argparse
from pathlib import Path

import torch.nn.functional as F

from defectforge.detectors.backbones import load_backbone
from defectforge.detectors.benchmark.runner import features_cached, load_data_cached
from defectforge.detectors.feature_level import SimpleNetDetector
from defectforge.metrics.detection import detection_metrics

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("data", type=Path)
parser.add_argument("--cache", type=Path, default=Path("benchmark_out/cache"))
parser.add_argument("--size", type=int, default=256)
args = parser.parse_args()
backbone = load_backbone("mobilenet_v2")
data, fingerprint = load_data_cached(args.data, args.size, args.cache)
feats = features_cached(backbone, data, fingerprint, args.cache)
train, test = feats["train"].float(), feats["test"].float()
# the detectors' own preparation, with the per-channel statistics fit() takes
prep = SimpleNetDetector(backbone)
prep.fit_statistics(train)
norm = prep.prepare(test).norm(dim=1, keepdim=True)
maps = F.interpolate(norm, size=(args.size, args.size), mode="bilinear", align_corners=False)[:, 0]
for sign, name in ((1, "feature norm"), (-1, "minus the feature norm")):
    m = sign * maps
    r = detection_metrics(m.amax((1, 2)).numpy(), data.test_labels.numpy(), m.numpy(), data.test_masks.numpy())
    print(f"{args.data.name}, {name} as the map: image AUROC {r['image_auroc']:.3f}  pixel AUROC "
          f"{r['pixel_auroc']:.3f}  AUPRO {r['aupro']:.3f}")
print(f"median prepared |f| of the training cells {prep.prepare(train).norm(dim=1).median():.2f}; "
      f"sigma 0.015 noise norm {0.015 * train.shape[1] ** 0.5:.3f}")
