"""Detection metrics against scikit-learn and a straightforward AUPRO reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from defectforge.metrics import (
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


def sklearn_f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


def reference_aupro(maps, masks, fpr_limit=0.3):
    """Loop over every distinct threshold; regions are 8-connected components per image."""
    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    region_list = []
    for index, image_mask in enumerate(masks):
        labelled, n = ndimage.label(image_mask, structure=np.ones((3, 3)))
        region_list += [(index, labelled == k) for k in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        predicted = maps >= threshold
        fprs.append((predicted & normal).sum() / normal.sum())
        pros.append(np.mean([(predicted[i] & r).sum() / r.sum() for i, r in region_list]))
    fprs.append(1.0)
    pros.append(1.0)
    # Integrate up to the limit: exact area of the piecewise-linear curve, segment by segment.
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(fprs[:-1], pros[:-1]), zip(fprs[1:], pros[1:])):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_cut = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_cut) / 2
    return area / fpr_limit


def random_detection_case(seed, n=6, size=24, quantize=None):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n // 2, n):
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, size - 4, size=2)
            h, w = rng.integers(1, 6, size=2)
            masks[i, y:y + h, x:x + w] = 1
    maps = rng.normal(size=masks.shape) + 1.5 * masks
    if quantize:
        maps = np.round(maps * quantize) / quantize  # many ties
    return maps.astype(np.float32), masks


# ---------------------------------------------------------------- image level

@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_image_metrics_match_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=200)
    labels[:2] = [0, 1]
    scores = rng.normal(size=200) + labels
    if ties:
        scores = np.round(scores, 1)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image_ap(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert f1_max(scores, labels) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)


def test_image_metrics_accept_tensors_float32_and_multiclass_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=100)  # defect classes 1..3 count as anomalous
    scores = (rng.random(100) + 0.3 * (labels > 0)).astype(np.float32)
    expected = roc_auc_score(labels > 0, scores)
    assert image_auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(expected)
    assert image_auroc(scores.astype(np.float64), labels) == pytest.approx(expected)


def test_constant_scores():
    labels = np.array([0, 0, 0, 1])
    scores = np.full(4, 0.5)
    assert image_auroc(scores, labels) == pytest.approx(0.5)
    assert image_ap(scores, labels) == pytest.approx(0.25)
    assert f1_max(scores, labels) == pytest.approx(2 * 0.25 / 1.25)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_single_class_is_nan_with_warning(labels):
    for metric in (image_auroc, image_ap, f1_max):
        with pytest.warns(UndefinedMetricWarning):
            assert math.isnan(metric([0.1, 0.2, 0.3], labels))


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match="nan or inf"):
        image_auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="3 entries but there are 2"):
        image_auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="positive integer"):
        image_auroc([0.1, 0.2], [0, -1])
    with pytest.raises(ValueError, match="only 0 and 1"):
        pixel_auroc(np.zeros((1, 4, 4)), np.full((1, 4, 4), 255))
    with pytest.raises(ValueError, match="does not match"):
        pixel_auroc(np.zeros((1, 4, 4)), np.zeros((1, 8, 8)))


# ---------------------------------------------------------------- pixel level

@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("quantize", [None, 4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_metrics_match_sklearn(seed, quantize, dtype):
    maps, masks = random_detection_case(seed, quantize=quantize)
    maps = maps.astype(dtype)
    flat_truth, flat_maps = masks.reshape(-1), maps.reshape(-1)
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(flat_truth, flat_maps), abs=1e-10)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(flat_truth, flat_maps), abs=1e-10)
    assert pixel_f1_max(maps, masks) == pytest.approx(sklearn_f1_max(flat_truth, flat_maps), abs=1e-10)


def test_pixel_metrics_accept_channel_axis_tensors_and_negative_scores():
    maps, masks = random_detection_case(7)
    maps = maps - 3.0  # negative scores: the packed sort keys must keep their order
    expected = roc_auc_score(masks.reshape(-1), maps.reshape(-1))
    got = pixel_auroc(torch.from_numpy(maps)[:, None], torch.from_numpy(masks)[:, None].float())
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("quantize", [None, 3])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_matches_threshold_loop_reference(seed, quantize, fpr_limit):
    maps, masks = random_detection_case(seed, quantize=quantize)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(reference_aupro(maps, masks, fpr_limit), abs=1e-9)


def test_aupro_single_pixel_defects_and_diagonal_connectivity():
    masks = np.zeros((3, 10, 10), dtype=np.uint8)
    masks[0, 4, 4] = 1                       # a single-pixel defect
    masks[1, 2, 2] = masks[1, 3, 3] = 1      # diagonal neighbours: one region (8-connectivity)
    masks[2, 0, 9] = 1
    rng = np.random.default_rng(0)
    maps = rng.random(masks.shape).astype(np.float32) + 0.4 * masks
    assert aupro(maps, masks) == pytest.approx(reference_aupro(maps, masks), abs=1e-9)
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)


def test_aupro_perfect_inverted_and_constant_maps():
    maps, masks = random_detection_case(1)
    assert aupro(masks.astype(np.float32), masks) == pytest.approx(1.0)
    assert aupro(1.0 - masks.astype(np.float32), masks) == pytest.approx(0.0)
    # Constant scores: one threshold jumps from (0, 0) to (1, 1); the area up to 0.3 is 0.3 * 0.3 / 2.
    constant = np.zeros_like(maps)
    assert aupro(constant, masks) == pytest.approx(0.15)
    assert aupro(constant, masks) == pytest.approx(reference_aupro(constant, masks))


def test_pro_curve_endpoints_and_monotone():
    maps, masks = random_detection_case(2)
    fpr, pro = pro_curve(maps, masks)
    assert (fpr[0], pro[0], fpr[-1], pro[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)


def test_all_normal_masks_give_nan_pixel_metrics_with_warning():
    maps = np.random.default_rng(0).random((3, 8, 8))
    masks = np.zeros((3, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = detection_metrics(maps.max(axis=(1, 2)), [0, 0, 0], maps, masks)
    assert all(math.isnan(v) for v in out.values())
    assert sum(issubclass(w.category, UndefinedMetricWarning) for w in caught) == 7
    with pytest.warns(UndefinedMetricWarning, match="no defect pixel"):
        assert math.isnan(aupro(maps, masks))


def test_detection_metrics_agrees_with_individual_functions():
    maps, masks = random_detection_case(5, n=8)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    labels = masks.reshape(len(masks), -1).max(axis=1)
    out = detection_metrics(scores, labels, maps, masks, fpr_limit=0.3)
    assert out["image_auroc"] == pytest.approx(image_auroc(scores, labels))
    assert out["image_ap"] == pytest.approx(image_ap(scores, labels))
    assert out["image_f1_max"] == pytest.approx(f1_max(scores, labels))
    assert out["pixel_auroc"] == pytest.approx(pixel_auroc(maps, masks))
    assert out["pixel_ap"] == pytest.approx(pixel_ap(maps, masks))
    assert out["pixel_f1_max"] == pytest.approx(pixel_f1_max(maps, masks))
    assert out["aupro"] == pytest.approx(aupro(maps, masks))
    assert set(detection_metrics(scores, labels)) == {"image_auroc", "image_ap", "image_f1_max"}
    with pytest.raises(ValueError, match="both maps and masks"):
        detection_metrics(scores, labels, maps=maps)


def test_lists_of_differently_sized_maps_pool_pixels():
    maps_a, masks_a = random_detection_case(11, n=4, size=16)
    maps_b, masks_b = random_detection_case(12, n=4, size=24)
    maps = list(maps_a) + list(maps_b)
    masks = list(masks_a) + list(masks_b)
    flat_maps = np.concatenate([m.reshape(-1) for m in maps])
    flat_masks = np.concatenate([m.reshape(-1) for m in masks])
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(flat_masks, flat_maps), abs=1e-10)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(flat_masks, flat_maps), abs=1e-10)
    # AUPRO: same regions whether each size group is labelled as a stack or image by image.
    reference = reference_aupro_list(maps, masks)
    assert aupro(maps, masks) == pytest.approx(reference, abs=1e-9)
    scores = np.array([m.max() for m in maps])
    labels = np.array([m.max() for m in masks])
    out = detection_metrics(scores, labels, maps, masks)
    assert out["aupro"] == pytest.approx(reference, abs=1e-9)
    with pytest.raises(ValueError, match="same length"):
        pixel_auroc(maps, masks[:-1])


def reference_aupro_list(maps, masks, fpr_limit=0.3):
    """Threshold loop over a list of (H_i, W_i) maps; 8-connected regions per image."""
    regions = []
    for index, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(index, labelled == k) for k in range(1, n + 1)]
    n_normal = sum((m == 0).sum() for m in masks)
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(np.concatenate([m.reshape(-1) for m in maps]))[::-1]:
        predicted = [m >= threshold for m in maps]
        fprs.append(sum((p & (m == 0)).sum() for p, m in zip(predicted, masks)) / n_normal)
        pros.append(np.mean([(predicted[i] & r).sum() / r.sum() for i, r in regions]))
    fprs.append(1.0)
    pros.append(1.0)
    area = 0.0
    for (x0, y0), (x1, y1) in zip(zip(fprs[:-1], pros[:-1]), zip(fprs[1:], pros[1:])):
        if x0 >= fpr_limit:
            break
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            area += (fpr_limit - x0) * (y0 + y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)) / 2
    return area / fpr_limit
