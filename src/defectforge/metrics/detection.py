"""Detection metrics: image and pixel AUROC, AP, F1-max, and AUPRO (MVTec AD protocol).

Every metric ranks the scores once and reads the counts of positives and negatives above each
distinct score (the same curve scikit-learn builds), so ties are handled exactly as in
``sklearn.metrics.roc_auc_score`` / ``average_precision_score``. Pixel metrics avoid
``argsort``: for float32 maps each pixel becomes one 64-bit key (the score's order-preserving
bits above, the pixel's ground-truth region id below) and ``np.sort`` orders them. All seven
metrics of :func:`detection_metrics` on 200 maps of 256x256 (13M pixels, float32) took 2.2 to
4 s on the shared 2-core development machine (``benchmarks/bench_metrics.py``; scikit-learn's
``roc_auc_score`` alone took 9.5 s there); time grows as n log n (60M pixels: about 15 s). float64 maps that are not exactly float32 values take
the exact ``argsort`` path (about 6 s for the same size).

Degenerate inputs. A metric whose value needs both classes returns ``nan`` and emits an
:class:`UndefinedMetricWarning` when only one class is present: AUROC, AP and F1-max when there
is no positive or no negative sample (pixel), AUPRO when the masks hold no defect pixel or no
normal pixel. Constant scores are valid: AUROC 0.5, AP the positive rate, as scikit-learn.

Inputs are torch tensors or numpy arrays. Image labels: 0 is normal, any positive integer is an
anomaly (the manifest's defect classes). Maps: ``(N, H, W)`` or ``(N, 1, H, W)`` float scores,
higher meaning more anomalous; masks the same shape with values in ``{0, 1}``. For images of
different sizes pass lists of ``(H_i, W_i)`` maps and masks (pixels are pooled over all images).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "UndefinedMetricWarning",
    "image_auroc",
    "image_ap",
    "f1_max",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "aupro",
    "pro_curve",
    "detection_metrics",
]

#: False-positive-rate limit of AUPRO in the MVTec AD protocol (Bergmann et al., IJCV 2021).
MVTEC_FPR_LIMIT = 0.3


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined for the given input (for example only one class present); it is nan."""


# --------------------------------------------------------------------------------------------
# input handling


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor without importing torch here
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise TypeError(f"{name} must be a torch tensor or numpy array, got {type(value).__name__}") from exc
    if array.dtype == object:
        raise TypeError(f"{name} must be numeric, got an object array")
    return array


def _scores_1d(scores: Any, name: str = "scores") -> np.ndarray:
    array = _to_numpy(scores, name)
    if array.ndim != 1:
        array = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if array.ndim != 1:
        raise ValueError(f"{name} must be one score per image (shape (N,)), got shape {array.shape}")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{name} must be numeric scores, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains nan or inf; replace them before scoring")
    return array


def _labels_1d(labels: Any, n: int, name: str = "labels") -> np.ndarray:
    array = _to_numpy(labels, name).reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"{name} has {array.shape[0]} entries but there are {n} scores")
    if array.dtype != bool:
        if not np.all(np.isfinite(array)) or np.any(array < 0) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must be 0 (normal) or a positive integer (anomalous)")
    return array > 0


def _maps_and_masks(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    score_maps = _to_numpy(maps, "maps")
    truth = _to_numpy(masks, "masks")
    if score_maps.ndim == 4:
        if score_maps.shape[1] != 1:
            raise ValueError(f"maps must be (N, H, W) or (N, 1, H, W), got shape {score_maps.shape}")
        score_maps = score_maps[:, 0]
    if truth.ndim == 4:
        if truth.shape[1] != 1:
            raise ValueError(f"masks must be (N, H, W) or (N, 1, H, W), got shape {truth.shape}")
        truth = truth[:, 0]
    if score_maps.ndim == 2:  # a single map
        score_maps, truth = score_maps[None], truth[None] if truth.ndim == 2 else truth
    if score_maps.ndim != 3:
        raise ValueError(f"maps must be (N, H, W) or (N, 1, H, W), got shape {score_maps.shape}")
    if truth.shape != score_maps.shape:
        raise ValueError(f"masks shape {truth.shape} does not match maps shape {score_maps.shape}; "
                         "resize the score maps to the mask size first")
    if score_maps.dtype == bool or not np.issubdtype(score_maps.dtype, np.number):
        raise TypeError(f"maps must be numeric scores, got dtype {score_maps.dtype}")
    if not np.all(np.isfinite(score_maps)):
        raise ValueError("maps contain nan or inf; replace them before scoring")
    if truth.dtype != bool:
        if np.any((truth != 0) & (truth != 1)):
            raise ValueError("masks must hold only 0 and 1 (for 0/255 PNG masks divide by 255 or "
                             "compare with > 127 first)")
        truth = truth != 0
    return score_maps, truth


def _pixel_inputs(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray | list[np.ndarray], int]:
    """Flat scores, the masks (an ``(N, H, W)`` bool array, or a list of ``(H, W)`` ones when the
    images differ in size) and ``N``."""
    if isinstance(maps, (list, tuple)):
        if not isinstance(masks, (list, tuple)) or len(masks) != len(maps):
            raise ValueError("when maps is a list (images of different sizes), masks must be a list of the same length")
        if not maps:
            raise ValueError("maps is empty")
        flat, truths = [], []
        for index, (score_map, mask) in enumerate(zip(maps, masks)):
            try:
                one_map, one_mask = _maps_and_masks(score_map, mask)
            except (ValueError, TypeError) as exc:
                raise type(exc)(f"maps[{index}] / masks[{index}]: {exc}") from exc
            if one_map.shape[0] != 1:
                raise ValueError(f"maps[{index}] must be one (H, W) or (1, H, W) map, got shape {one_map.shape}")
            flat.append(one_map.reshape(-1))
            truths.append(one_mask[0])
        return np.concatenate(flat), truths, len(truths)
    score_maps, truth = _maps_and_masks(maps, masks)
    return score_maps.reshape(-1), truth, score_maps.shape[0]


def _flat_truth(truth: np.ndarray | list[np.ndarray]) -> np.ndarray:
    if isinstance(truth, list):
        return np.concatenate([t.reshape(-1) for t in truth])
    return truth.reshape(-1)


def _undefined(metric: str, reason: str) -> float:
    warnings.warn(f"{metric} is undefined: {reason}; returning nan", UndefinedMetricWarning, stacklevel=3)
    return math.nan


# --------------------------------------------------------------------------------------------
# ranking


@dataclass
class _RankedCounts:
    """Cumulative counts at each distinct score threshold, from the highest score down.

    ``tps[i]`` / ``fps[i]``: positives / negatives with a score >= the i-th highest distinct
    score. ``pro[i]`` and ``fpr_weighted`` are filled only for AUPRO.
    """

    tps: np.ndarray
    fps: np.ndarray
    pro: np.ndarray | None = None

    @property
    def n_pos(self) -> float:
        return float(self.tps[-1]) if self.tps.size else 0.0

    @property
    def n_neg(self) -> float:
        return float(self.fps[-1]) if self.fps.size else 0.0


#: Dtypes whose values float32 represents exactly, so the packed-key sort ranks them exactly.
_EXACT_IN_FLOAT32 = tuple(np.dtype(t) for t in (np.float32, np.float16, np.uint8, np.int8, np.uint16,
                                                np.int16, np.bool_))

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz


def _sortable_bits32(scores: np.ndarray) -> np.ndarray:
    """Unsigned keys with the same order as the float32 ``scores`` (uint64, in the low 32 bits)."""
    values = np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0
    bits = values.view(np.uint32)
    negative = (bits >> np.uint32(31)).astype(bool)
    keys = np.where(negative, ~bits, bits | np.uint32(0x80000000))
    return keys.astype(np.uint64)


def _rank(scores: np.ndarray, ids: np.ndarray, weights: np.ndarray | None = None) -> _RankedCounts:
    """Counts of ``ids > 0`` (positives) and ``ids == 0`` above every distinct score.

    ``ids`` are small non-negative integers (a label, or a ground-truth region id); with
    ``weights`` (a table indexed by id) the cumulative sum of ``weights[id]`` is returned as ``pro``.
    """
    ids = np.asarray(ids).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    if scores.dtype == np.float64:
        narrow = scores.astype(np.float32)
        if np.array_equal(narrow, scores):  # float32 data held in float64: rank it on the fast path
            scores = narrow
    if scores.dtype not in _EXACT_IN_FLOAT32 or int(ids.max(initial=0)) >= 2**32:
        # Exact path for float64 and wide integers: argsort (slower, about 2 s for 13M values).
        order = np.argsort(scores, kind="quicksort")[::-1]
        sorted_scores = scores[order]
        sorted_ids = ids[order]
        boundary = sorted_scores[1:] != sorted_scores[:-1]
    else:
        keys = _sortable_bits32(scores) << np.uint64(32)
        keys |= ids.astype(np.uint64)
        keys.sort()
        keys = keys[::-1]
        high = keys >> np.uint64(32)
        boundary = high[1:] != high[:-1]
        sorted_ids = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
        del keys, high
    # Last index of each run of equal scores: the curve points.
    last = np.flatnonzero(np.append(boundary, True))
    positive = sorted_ids > 0
    tps = np.cumsum(positive, dtype=np.int64)[last]
    fps = (last + 1) - tps
    pro = None
    if weights is not None:
        pro = np.cumsum(weights[sorted_ids], dtype=np.float64)[last]
    return _RankedCounts(tps=tps.astype(np.float64), fps=fps.astype(np.float64), pro=pro)


def _auroc_from(counts: _RankedCounts, metric: str) -> float:
    if counts.n_pos == 0 or counts.n_neg == 0:
        return _undefined(metric, f"needs both classes, got {int(counts.n_pos)} positive and "
                                  f"{int(counts.n_neg)} negative samples")
    tpr = np.concatenate(([0.0], counts.tps / counts.n_pos))
    fpr = np.concatenate(([0.0], counts.fps / counts.n_neg))
    return float(_trapezoid(tpr, fpr))


def _ap_from(counts: _RankedCounts, metric: str) -> float:
    if counts.n_pos == 0 or counts.n_neg == 0:
        return _undefined(metric, f"needs both classes, got {int(counts.n_pos)} positive and "
                                  f"{int(counts.n_neg)} negative samples")
    precision = counts.tps / (counts.tps + counts.fps)
    recall = counts.tps / counts.n_pos
    # Step-wise sum of precision over recall increments (scikit-learn's definition, no interpolation).
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1_max_from(counts: _RankedCounts, metric: str) -> float:
    if counts.n_pos == 0 or counts.n_neg == 0:
        return _undefined(metric, f"needs both classes, got {int(counts.n_pos)} positive and "
                                  f"{int(counts.n_neg)} negative samples")
    # F1 = 2 TP / (2 TP + FP + FN) with FN = P - TP; the denominator is >= P > 0.
    f1 = 2.0 * counts.tps / (counts.tps + counts.fps + counts.n_pos)
    return float(f1.max())


# --------------------------------------------------------------------------------------------
# image-level


def image_auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve of per-image anomaly scores.

    Parameters
    ----------
    scores : array-like of shape (N,)
        Anomaly score per image, higher meaning more anomalous.
    labels : array-like of shape (N,)
        0 for normal, a positive integer for anomalous.

    Returns
    -------
    float
        Same value as ``sklearn.metrics.roc_auc_score(labels > 0, scores)``; nan (with an
        :class:`UndefinedMetricWarning`) when only one class is present.

    Examples
    --------
    >>> image_auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    values = _scores_1d(scores)
    return _auroc_from(_rank(values, _labels_1d(labels, values.size).astype(np.uint8)), "image AUROC")


def image_ap(scores: Any, labels: Any) -> float:
    """Average precision of per-image anomaly scores (``sklearn.metrics.average_precision_score``).

    Examples
    --------
    >>> round(image_ap([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 4)
    0.8333
    """
    values = _scores_1d(scores)
    return _ap_from(_rank(values, _labels_1d(labels, values.size).astype(np.uint8)), "image AP")


def f1_max(scores: Any, labels: Any) -> float:
    """Best F1 score over all thresholds of per-image anomaly scores.

    Thresholds are the distinct scores (``score >= t`` is anomalous), as in anomalib's ``F1Max``.

    Examples
    --------
    >>> round(f1_max([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]), 4)
    0.8
    """
    values = _scores_1d(scores)
    return _f1_max_from(_rank(values, _labels_1d(labels, values.size).astype(np.uint8)), "F1-max")


# --------------------------------------------------------------------------------------------
# pixel-level


def _pixel_counts(maps: Any, masks: Any) -> _RankedCounts:
    scores, truth, _ = _pixel_inputs(maps, masks)
    return _rank(scores, _flat_truth(truth).astype(np.uint8))


def pixel_auroc(maps: Any, masks: Any) -> float:
    """Pixel-level AUROC over all pixels of all images pooled together.

    Parameters
    ----------
    maps : array-like of shape (N, H, W) or (N, 1, H, W)
        Anomaly score maps at mask resolution.
    masks : array-like, same shape
        Ground truth in ``{0, 1}``.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 8, 8)); masks[1, 2:4, 2:4] = 1
    >>> pixel_auroc(masks * 0.9 + 0.05, masks)
    1.0
    """
    return _auroc_from(_pixel_counts(maps, masks), "pixel AUROC")


def pixel_ap(maps: Any, masks: Any) -> float:
    """Pixel-level average precision over all pixels pooled together.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 8, 8)); masks[1, 2:4, 2:4] = 1
    >>> pixel_ap(masks, masks)
    1.0
    """
    return _ap_from(_pixel_counts(maps, masks), "pixel AP")


def pixel_f1_max(maps: Any, masks: Any) -> float:
    """Pixel-level best F1 over all thresholds, pixels pooled.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 8, 8)); masks[1, 2:4, 2:4] = 1
    >>> pixel_f1_max(masks, masks)
    1.0
    """
    return _f1_max_from(_pixel_counts(maps, masks), "pixel F1-max")


#: 8-connectivity inside each image, no connection between images of the stack (MVTec's
#: evaluation labels regions with a 3x3 structuring element of ones).
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True


def _region_counts(scores: np.ndarray, truth: np.ndarray | list[np.ndarray]) -> tuple[_RankedCounts, int]:
    if isinstance(truth, list):
        parts, n_regions = [], 0
        for mask in truth:
            labelled, count = ndimage.label(mask, structure=_REGION_STRUCTURE[1])
            labelled = labelled.astype(np.int64).reshape(-1)
            labelled[labelled > 0] += n_regions
            parts.append(labelled)
            n_regions += count
        regions = np.concatenate(parts)
    else:
        regions, n_regions = ndimage.label(truth, structure=_REGION_STRUCTURE)
        regions = regions.reshape(-1)
    if n_regions == 0:
        return _RankedCounts(np.zeros(0), np.zeros(0)), 0
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    # Each defect pixel adds 1 / (its region's size * number of regions) to the mean overlap.
    weights = np.zeros(n_regions + 1, dtype=np.float64)
    weights[1:] = 1.0 / (sizes[1:] * n_regions)
    ids = regions.astype(np.uint32 if n_regions < 2**32 else np.uint64)
    return _rank(scores, ids, weights), n_regions


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline ``(x, y)`` (x non-decreasing) for ``x <= x_max``."""
    inside = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:inside], y[:inside]
    area = float(_trapezoid(ys, xs)) if inside > 1 else 0.0
    if inside < x.size and inside > 0 and xs[-1] < x_max:
        x0, y0, x1, y1 = xs[-1], ys[-1], x[inside], y[inside]
        y_cut = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area += 0.5 * (y0 + y_cut) * (x_max - x0)
    return area


def pro_curve(maps: Any, masks: Any) -> tuple[np.ndarray, np.ndarray]:
    """The per-region-overlap curve: ``(fpr, pro)`` at every distinct threshold, from (0, 0) to (1, 1).

    For a threshold ``t`` the prediction is ``maps >= t``; FPR is the fraction of normal pixels
    predicted anomalous, PRO the mean over all ground-truth regions (8-connected components of
    each mask) of the fraction of the region's pixels predicted anomalous.

    Returns empty arrays when the masks hold no defect or no normal pixel.
    """
    scores, truth, _ = _pixel_inputs(maps, masks)
    counts, n_regions = _region_counts(scores, truth)
    if n_regions == 0 or counts.n_neg == 0:
        return np.zeros(0), np.zeros(0)
    fpr = np.concatenate(([0.0], counts.fps / counts.n_neg, [1.0]))
    pro = np.concatenate(([0.0], np.minimum(counts.pro, 1.0), [1.0]))  # cumsum rounding can exceed 1
    return fpr, pro


def aupro(maps: Any, masks: Any, fpr_limit: float = MVTEC_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, normalised by ``fpr_limit``.

    The MVTec AD protocol (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021, and
    its evaluation code): regions are the 8-connected components of each ground-truth mask;
    PRO(t) averages the overlap of every region (all images pooled) with ``maps >= t``; the curve
    is integrated over the false-positive rate from 0 to ``fpr_limit`` (default 0.3), linearly
    interpolated at the limit, and divided by ``fpr_limit`` so that a perfect map scores 1.

    Computed from one sort of all pixels (no loop over thresholds).

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((2, 16, 16)); masks[1, 2:6, 2:6] = 1; masks[1, 10:12, 10:14] = 1
    >>> aupro(masks, masks)
    1.0
    """
    if not (isinstance(fpr_limit, (int, float)) and 0.0 < fpr_limit <= 1.0):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r} (the MVTec protocol uses 0.3)")
    scores, truth, _ = _pixel_inputs(maps, masks)
    counts, n_regions = _region_counts(scores, truth)
    return _aupro_from(counts, n_regions, float(fpr_limit))


def _aupro_from(counts: _RankedCounts, n_regions: int, fpr_limit: float) -> float:
    if n_regions == 0:
        return _undefined("AUPRO", "the masks contain no defect pixel")
    if counts.n_neg == 0:
        return _undefined("AUPRO", "the masks contain no normal pixel")
    fpr = np.concatenate(([0.0], counts.fps / counts.n_neg, [1.0]))
    pro = np.concatenate(([0.0], np.minimum(counts.pro, 1.0), [1.0]))
    return float(_area_up_to(fpr, pro, fpr_limit) / fpr_limit)


# --------------------------------------------------------------------------------------------
# all at once


def detection_metrics(image_scores: Any, image_labels: Any, maps: Any = None, masks: Any = None,
                      fpr_limit: float = MVTEC_FPR_LIMIT) -> dict[str, float]:
    """Image metrics and, with ``maps`` and ``masks``, pixel metrics, sharing one sort per level.

    Parameters
    ----------
    image_scores, image_labels : array-like of shape (N,)
        Per-image scores and labels (0 normal, > 0 anomalous).
    maps, masks : array-like of shape (N, H, W) or (N, 1, H, W), optional
        Pixel score maps and ground-truth masks in ``{0, 1}``.
    fpr_limit : float
        AUPRO integration limit (MVTec protocol: 0.3).

    Returns
    -------
    dict
        ``image_auroc``, ``image_ap``, ``image_f1_max``; with maps also ``pixel_auroc``,
        ``pixel_ap``, ``pixel_f1_max``, ``aupro``. Undefined values are nan.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.zeros((4, 8, 8)); masks[2:, 3:5, 3:5] = 1
    >>> out = detection_metrics(masks.max(axis=(1, 2)), [0, 0, 1, 1], masks, masks)
    >>> sorted(out)
    ['aupro', 'image_ap', 'image_auroc', 'image_f1_max', 'pixel_ap', 'pixel_auroc', 'pixel_f1_max']
    """
    values = _scores_1d(image_scores, "image_scores")
    labels = _labels_1d(image_labels, values.size, "image_labels")
    counts = _rank(values, labels.astype(np.uint8))
    out = {
        "image_auroc": _auroc_from(counts, "image AUROC"),
        "image_ap": _ap_from(counts, "image AP"),
        "image_f1_max": _f1_max_from(counts, "image F1-max"),
    }
    if (maps is None) != (masks is None):
        raise ValueError("pass both maps and masks for pixel metrics, or neither")
    if maps is not None:
        if not (isinstance(fpr_limit, (int, float)) and 0.0 < fpr_limit <= 1.0):
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
        scores, truth, n_maps = _pixel_inputs(maps, masks)
        if n_maps != values.size:
            raise ValueError(f"{n_maps} maps but {values.size} image scores")
        # One sort serves all pixel metrics: ids are region ids, positives are ids > 0.
        region_counts, n_regions = _region_counts(scores, truth)
        if n_regions == 0:
            region_counts = _rank(scores, np.zeros(scores.size, dtype=np.uint8))
        out["pixel_auroc"] = _auroc_from(region_counts, "pixel AUROC")
        out["pixel_ap"] = _ap_from(region_counts, "pixel AP")
        out["pixel_f1_max"] = _f1_max_from(region_counts, "pixel F1-max")
        out["aupro"] = _aupro_from(region_counts, n_regions, float(fpr_limit))
    return out
