"""Realism metrics on features: FID, KID (StyleGAN2-ADA / DFMGAN protocol) and Inception Score.

These functions take feature (or probability) arrays, so any extractor can be measured; the
standard numbers need :func:`~defectforge.metrics.features.load_fid_inception` features (FID,
KID) and :func:`~defectforge.metrics.features.load_is_inception` probabilities (IS).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "gaussian_stats",
    "frechet_distance",
    "fid_from_features",
    "kid_from_features",
    "inception_score_from_probs",
]

#: KID protocol of StyleGAN2-ADA (metrics/kernel_inception_distance.py), used by DFMGAN.
KID_NUM_SUBSETS = 100
KID_MAX_SUBSET_SIZE = 1000
#: Largest (n_real + n_gen)^2 for which KID precomputes whole kernel matrices (~200 MB of float64).
_KID_GRAM_LIMIT = 25_000_000
#: Inception Score splits (Salimans et al. 2016; StyleGAN2-ADA's inception_score.py).
IS_NUM_SPLITS = 10


def _features(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains nan or inf")
    return array


def gaussian_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (``np.cov``, unbiased) of ``(N, D)`` features."""
    x = _features(features, "features")
    if x.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr((sigma1 sigma2)^(1/2))`` for symmetric PSD matrices.

    Equal to ``tr(sqrtm(sigma1 @ sigma2))`` (the eigenvalues of ``sigma1 sigma2`` are those of the
    symmetric ``sigma1^(1/2) sigma2 sigma1^(1/2)``), but from two symmetric eigendecompositions,
    about twice as fast as ``scipy.linalg.sqrtm`` at 2048-d and without its complex round-off.
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    middle = root @ sigma2 @ root
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``, the formula of the
    TF FID code, pytorch-fid and StyleGAN2-ADA. They take the trace of ``scipy.linalg.sqrtm``;
    here it comes from symmetric eigendecompositions (same value: the tests compare with
    ``sqrtm``; on 2048-d covariances the two agreed to 1e-12 relative), which also copes with
    singular covariances (few images) without the ``1e-6 * I`` retry.

    Examples
    --------
    >>> import numpy as np
    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
    2.0
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("the two sets have features of different dimensions")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2))


def fid_from_features(real: Any, generated: Any) -> float:
    """FID between two ``(N, D)`` feature sets (StyleGAN2-ADA: statistics of all features).

    With fewer images than feature dimensions (the usual case for defect sets: a few hundred
    images, 2048-d), ``tr((S1 S2)^(1/2))`` is computed exactly in the small space: with centred
    features ``X_i`` and ``S_i = X_i^T X_i / (n_i - 1)``, the eigenvalues of ``S1 S2`` are the
    squared singular values of ``X1 X2^T / sqrt((n1 - 1)(n2 - 1))``, so the trace is that
    matrix's nuclear norm (an ``n1 x n2`` SVD instead of two ``D x D`` eigendecompositions).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(500, 4))
    >>> abs(fid_from_features(x, x)) < 1e-6
    True
    """
    x = _features(real, "real")
    y = _features(generated, "generated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    n1, n2, d = x.shape[0], y.shape[0], x.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {n1} real and {n2} generated")
    if min(n1, n2) >= d:
        mu1, s1 = gaussian_stats(x)
        mu2, s2 = gaussian_stats(y)
        return frechet_distance(mu1, s1, mu2, s2)
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mu1, y - mu2
    trace1 = float(np.sum(xc * xc)) / (n1 - 1)
    trace2 = float(np.sum(yc * yc)) / (n2 - 1)
    cross = (xc @ yc.T) / np.sqrt((n1 - 1) * (n2 - 1))
    nuclear = float(np.linalg.svd(cross, compute_uv=False).sum())
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2.0 * nuclear)


def kid_from_features(real: Any, generated: Any, num_subsets: int = KID_NUM_SUBSETS,
                      max_subset_size: int = KID_MAX_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel ``(x.y / d + 1)^3``.

    StyleGAN2-ADA / DFMGAN protocol: ``num_subsets`` (100) times, draw ``m = min(n_real, n_gen,
    max_subset_size)`` (1000) samples without replacement from each set and compute the unbiased
    estimate ``mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)``;
    report the mean (and standard deviation) over subsets. Subsets are drawn by
    ``numpy.random.default_rng(seed)``, so the value is reproducible.

    Returns
    -------
    (kid, kid_std) : tuple of float
    """
    x = _features(real, "real")
    y = _features(generated, "generated")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(x.shape[0], y.shape[0], int(max_subset_size))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {x.shape[0]} real and {y.shape[0]} generated")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    d = x.shape[1]
    n_x, n_y = x.shape[0], y.shape[0]
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    # Small sets (the usual case here): compute each kernel matrix once and sum sub-blocks per
    # subset; large sets: kernels per subset, as StyleGAN2-ADA does. Same draws, same values.
    whole = (n_x + n_y) ** 2 <= _KID_GRAM_LIMIT
    if whole:
        k_yy_all = (y @ y.T / d + 1) ** 3
        k_xx_all = (x @ x.T / d + 1) ** 3
        k_yx_all = (y @ x.T / d + 1) ** 3
    for s in range(num_subsets):
        ia = rng.choice(n_y, m, replace=False)
        ib = rng.choice(n_x, m, replace=False)
        if whole:
            k_aa = k_yy_all[np.ix_(ia, ia)]
            k_bb = k_xx_all[np.ix_(ib, ib)]
            k_ab = k_yx_all[np.ix_(ia, ib)]
        else:
            a, b = y[ia], x[ib]
            k_aa = (a @ a.T / d + 1) ** 3
            k_bb = (b @ b.T / d + 1) ** 3
            k_ab = (a @ b.T / d + 1) ** 3
        within = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
        values[s] = within - 2.0 * k_ab.mean()
    return float(values.mean()), float(values.std())


def inception_score_from_probs(probs: Any, num_splits: int = IS_NUM_SPLITS) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))``, mean and std over ``num_splits`` splits.

    Splits are consecutive chunks ``probs[i*N//k:(i+1)*N//k]`` and ``p(y)`` is each split's mean,
    as in StyleGAN2-ADA's ``inception_score.py`` (and the original TF code).

    Examples
    --------
    >>> import numpy as np
    >>> round(inception_score_from_probs(np.eye(10), num_splits=1)[0], 6)  # 10 sure, distinct classes
    10.0
    """
    p = _features(probs, "probs")
    if np.any(p < 0):
        raise ValueError("probs must be probabilities (non-negative rows summing to 1), not logits")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError("probs rows must sum to 1; apply a softmax to logits first")
    if not 1 <= num_splits <= p.shape[0]:
        raise ValueError(f"num_splits must be in [1, {p.shape[0]}] (number of images), got {num_splits}")
    n = p.shape[0]
    scores = []
    for i in range(num_splits):
        part = p[i * n // num_splits:(i + 1) * n // num_splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
