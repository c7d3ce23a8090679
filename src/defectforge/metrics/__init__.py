"""Measuring synthesis: detection metrics (AUROC, AP, F1-max, AUPRO) and, in submodules,
realism and diversity metrics (FID, KID, IS, IC-LPIPS).

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

__all__ = [
    "UndefinedMetricWarning", "aupro", "detection_metrics", "f1_max", "image_ap", "image_auroc",
    "pixel_ap", "pixel_auroc", "pixel_f1_max", "pro_curve",
]
