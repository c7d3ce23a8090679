"""FID, KID and IS on features, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from defectforge.metrics.realism import (
    fid_from_features,
    frechet_distance,
    inception_score_from_probs,
    kid_from_features,
)


def direct_fid(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    # tr((s1 s2)^(1/2)) = sum of square roots of the eigenvalues of s1 s2 (real, >= 0 for PSD s1, s2)
    eig = np.linalg.eigvals(s1 @ s2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.abs(eig.real))))


def direct_unbiased_mmd2(x, y):
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    x = np.random.default_rng(0).normal(size=(300, 8))
    assert abs(fid_from_features(x, x)) < 1e-6
    shifts = [0.1, 0.5, 1.0, 2.0]
    values = [fid_from_features(x, x + s) for s in shifts]
    # Same covariance: FID is exactly the squared mean difference, 8 * s^2.
    assert values == pytest.approx([8 * s ** 2 for s in shifts], rel=1e-6)
    assert values == sorted(values)


def test_fid_matches_eigenvalue_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 6))
    y = rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) * 0.7 + 0.3
    assert fid_from_features(x, y) == pytest.approx(direct_fid(x, y), rel=1e-6)


@pytest.mark.parametrize("n_real,n_gen", [(7, 9), (9, 40), (60, 50)])
def test_small_sample_route_equals_covariance_route(n_real, n_gen):
    rng = np.random.default_rng(n_real)
    x = rng.normal(size=(n_real, 16))
    y = rng.normal(size=(n_gen, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.2
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    assert fid_from_features(x, y) == pytest.approx(expected, rel=1e-6)
    # the eigendecomposition route takes square roots of round-off eigenvalues of singular products
    assert fid_from_features(x, y) == pytest.approx(frechet_distance(mu1, s1, mu2, s2), rel=1e-7)


def test_frechet_distance_matches_scipy_sqrtm_trace():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(40, 12))
    b = rng.normal(size=(30, 12)) @ rng.normal(size=(12, 12))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    mu1, mu2 = a.mean(0), b.mean(0)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_singular_covariances_fall_back():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5))  # 3 samples in 5-d: rank-deficient covariance
    value = fid_from_features(x, x + 1.0)
    assert np.isfinite(value) and value == pytest.approx(5.0, abs=1e-3)


@pytest.mark.parametrize("n_real,n_gen", [(12, 12), (15, 9)])
def test_kid_unbiased_estimate_matches_direct_computation(n_real, n_gen):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(n_real, 5))
    gen = rng.normal(size=(n_gen, 5)) + 0.5
    if n_real == n_gen:
        # Every subset is the whole set (permuted): each subset's estimate is the full MMD^2.
        kid, std = kid_from_features(real, gen, num_subsets=5)
        assert kid == pytest.approx(direct_unbiased_mmd2(real, gen), rel=1e-10)
        assert std == pytest.approx(0.0, abs=1e-10)
    else:
        # Subsets of m = 9: the mean over subsets equals the mean of direct estimates on the same draws.
        kid, _ = kid_from_features(real, gen, num_subsets=4, seed=7)
        draw = np.random.default_rng(7)
        expected = []
        for _ in range(4):
            g = gen[draw.choice(n_gen, 9, replace=False)]
            r = real[draw.choice(n_real, 9, replace=False)]
            expected.append(direct_unbiased_mmd2(r, g))
        assert kid == pytest.approx(np.mean(expected), rel=1e-10)


def test_kid_whole_kernel_and_per_subset_routes_agree(monkeypatch):
    import defectforge.metrics.realism as realism

    rng = np.random.default_rng(8)
    real, gen = rng.normal(size=(30, 6)), rng.normal(size=(25, 6)) + 0.3
    whole = kid_from_features(real, gen, num_subsets=6, max_subset_size=10, seed=3)
    monkeypatch.setattr(realism, "_KID_GRAM_LIMIT", 0)
    per_subset = kid_from_features(real, gen, num_subsets=6, max_subset_size=10, seed=3)
    assert whole == pytest.approx(per_subset, rel=1e-10)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_a_shift():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, _ = kid_from_features(a, b, num_subsets=20, max_subset_size=200)
    shifted, _ = kid_from_features(a, b + 1.0, num_subsets=20, max_subset_size=200)
    assert abs(same) < 0.01 < shifted


def test_inception_score_known_values():
    assert inception_score_from_probs(np.full((20, 7), 1 / 7), num_splits=2)[0] == pytest.approx(1.0)
    sure = np.eye(10)[np.arange(40) % 10]
    mean, std = inception_score_from_probs(sure, num_splits=4)  # each split holds all 10 classes
    assert mean == pytest.approx(10.0) and std == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="softmax"):
        inception_score_from_probs(np.ones((10, 3)), num_splits=2)


def test_inception_score_matches_direct_formula():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(50, 6)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    expected = []
    for i in range(10):
        part = p[i * 5:(i + 1) * 5]
        py = part.mean(0)
        expected.append(np.exp(np.mean([np.sum(row * np.log(row / py)) for row in part])))
    assert inception_score_from_probs(p)[0] == pytest.approx(np.mean(expected), rel=1e-10)


def test_feature_validation():
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="at least 2"):
        kid_from_features(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="nan or inf"):
        fid_from_features(np.full((3, 2), np.nan), np.zeros((3, 2)))
