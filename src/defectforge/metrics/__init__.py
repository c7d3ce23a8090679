"""Measuring synthesis: detection metrics (AUROC, AP, F1-max, AUPRO) and, in submodules,
realism and diversity metrics (FID, KID, IS, IC-LPIPS).

- :mod:`.detection`: image/pixel AUROC, AP, F1-max, AUPRO (MVTec protocol) on arrays.
- :mod:`.detection_io`: the same from score-map folders and an MVTec category.
- :mod:`.realism`: FID, KID, IS from features; :mod:`.features`: the Inception networks and cache.
- :mod:`.diversity`: LPIPS and IC-LPIPS (protocols ``dfmgan``, ``anomalydiffusion``, ``seas``).
- :mod:`.synthesis`: ``evaluate_synthesis`` behind ``defectforge evaluate``.
- :mod:`.weights`: where weight files are looked up (never downloaded).

>>> from defectforge.metrics import image_auroc
>>> image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
0.75
"""

from .detection import (
    UndefinedMetricWarning,
    aupro,
    detection_metrics,
    f1_max,
    image_ap,
    image_auroc,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
    pro_curve,
)

from .detection_io import detection_metrics_from_folders, read_detection_folder

__all__ = [
    "detection_metrics_from_folders", "read_detection_folder",
    "UndefinedMetricWarning", "aupro", "detection_metrics", "f1_max", "image_ap", "image_auroc",
    "pixel_ap", "pixel_auroc", "pixel_f1_max", "pro_curve",
]
