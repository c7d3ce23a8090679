"""Reference detectors trained on normal images plus synthetic anomalies, and the benchmark that
compares synthesis methods by the detector they train.

- :class:`SegHeadDetector` (``seghead``): frozen ImageNet backbone + small segmentation head.
- :class:`ResidualSegDetector` (``residual_seg``): the same head also given each patch's residual
  to ``patchcore``'s memory bank.
- :class:`FusionDetector` (``fusion``): ``seghead`` and ``patchcore``, each standardised on normal
  images, added.
- :class:`DraemSegDetector` (``draem_seg``): DRAEM's discriminative sub-network from scratch.
- :class:`PatchCoreBaseline` (``patchcore``): synthesis-free nearest-neighbour baseline.
- the feature-level detectors (``simplenet``, ``supersimplenet``, ``glass``, ``pbas``, ``uniad``,
  :mod:`.feature_level`) and ``dsr`` (:mod:`.dsr`, latent level).
- :func:`create_detector`, :func:`list_detectors`, :func:`detector_info`, :func:`register_detector`:
  the detectors by name (:mod:`.registry`), each following the :class:`Detector` protocol.
- :func:`load_backbone`: MobileNetV2, EfficientNet-Lite0, TorchScript files, a tiny random net.
- :func:`load_mvtec_category`: a checked MVTec-AD category as tensors.
- :func:`run_benchmark`: behind ``defectforge benchmark``.
"""

from .backbones import BACKBONES, Backbone, BackboneMismatchError, load_backbone
from .base import Detector, DetectorBase
from .benchmark import BASELINE, DETECTORS, BenchmarkConfig, run_benchmark, write_leaderboard
from .data import MVTecCategory, MVTecLayoutError, check_mvtec_category, load_mvtec_category
from .draem_seg import DraemSegDetector
from .fusion import FusionDetector
from .patchcore import PatchCoreBaseline
from .registry import create_detector, detector_info, list_detectors, register_detector
from .residual_seg import ResidualSegDetector
from .seghead import SegHeadDetector

__all__ = [
    "BACKBONES", "Backbone", "BackboneMismatchError", "load_backbone",
    "Detector", "DetectorBase", "create_detector", "detector_info", "list_detectors", "register_detector",
    "BASELINE", "DETECTORS", "BenchmarkConfig", "run_benchmark", "write_leaderboard",
    "MVTecCategory", "MVTecLayoutError", "check_mvtec_category", "load_mvtec_category",
    "DraemSegDetector", "FusionDetector", "PatchCoreBaseline", "ResidualSegDetector", "SegHeadDetector",
]
