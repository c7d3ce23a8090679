"""Gaussian feature noise: SimpleNet, SuperSimpleNet and UniAD's feature jitter.

SimpleNet (Liu et al., CVPR 2023; DonaldRR/SimpleNet, MIT)
    ``fake = f + eps`` on every patch of the adapted features, ``eps ~ N(0, sigma^2 I)``.
    ``simplenet.py``: ``SimpleNet.load`` defaults ``noise_std=0.05``, ``mix_noise=1``; in
    ``SimpleNet._train_discriminator`` each feature row draws ``k ~ U{0..mix_noise-1}`` and gets
    ``N(0, (noise_std * 1.1**k)^2)`` noise. The published runs (``run.sh``) pass ``--noise_std
    0.015``: preset ``simplenet`` uses 0.015, preset ``simplenet_code`` the code default 0.05.
    As in the code, ``k`` is drawn per feature row (patch), not per image.

SuperSimpleNet (Rolih, Fučka, Skočaj, ICPR 2024; blaz-r/SuperSimpleNet, MIT)
    ``model/supersimplenet.py``, ``AnomalyGenerator``: Perlin noise on the next power-of-two grid
    above the feature size, lattice ``2**a x 2**b`` with ``a, b ~ U{0..5}`` (``perlin_range=(0,
    6)``), resized bilinearly (``align_corners=False``) to the feature grid, thresholded
    ``> perlin_thr``; with probability 0.5 the mask is emptied (``no_anomaly="empty"``); noise
    ``N(0, 0.015^2)`` (``noise_std``) only inside the mask and, with ``overlap=False``, outside an
    existing anomaly mask; ground truth = old mask OR noise mask; label = mask non-empty.
    ``perlin_thr`` is 0.2 in the MVTec configuration (``train.py``) and 0.6 in the VisA one:
    presets ``supersimplenet`` and ``supersimplenet_visa``. The noise is not rotated (the
    image-level Perlin masks of DRAEM are).

UniAD (You et al., NeurIPS 2022; zhiyuanyou/UniAD, Apache-2.0)
    ``models/reconstructions/uniad.py``, ``UniAD.add_jitter``: with probability ``prob`` the
    tokens get ``randn * (||f||_2 / C) * scale`` (the norm over channels, per position);
    ``experiments/MVTec-AD/config.yaml``: ``feature_jitter: scale 20.0, prob 1.0``.

Each sample's Gaussian field comes from a 63-bit seed drawn from its own generator and
recorded in its parameters (``noise_seed``), so the sample replays exactly and does not depend
on the batch it is in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.registry import register_method
from ..core.validation import check_probability, check_range
from ..functional.perlin import PERLIN_EXPONENT_RANGE, perlin_noise
from .base import FeatureContext, FeatureShape, FeatureSynthesizer, check_positive, gaussian_fields, noise_seed

__all__ = ["SimpleNetNoise", "SuperSimpleNetNoise", "UniADJitter"]

_FAMILY = "distribution-hypothesis"


@register_method("simplenet", family=_FAMILY, level="feature",
                 description="N(0, 0.015^2) noise on every adapted feature (published runs; mix_noise K: sigma*1.1^k)",
                 source="Liu et al., CVPR 2023 (SimpleNet); DonaldRR/SimpleNet simplenet.py + run.sh",
                 licence="MIT", defaults={"noise_std": 0.015})
@register_method("simplenet_code", family=_FAMILY, level="feature",
                 description="SimpleNet with the code's default noise_std 0.05",
                 source="Liu et al., CVPR 2023 (SimpleNet); DonaldRR/SimpleNet simplenet.py SimpleNet.load",
                 licence="MIT", defaults={"noise_std": 0.05})
class SimpleNetNoise(FeatureSynthesizer):
    """SimpleNet's Gaussian feature noise (module docstring).

    Parameters
    ----------
    noise_std : float
        Standard deviation ``sigma`` (0.015, the published runs; ``simplenet_code``: 0.05).
    mix_noise : int
        Number of noise scales ``K``; each feature row uses ``sigma * 1.1**k``, ``k ~ U{0..K-1}`` (1).
    anomaly_probability : float
        Probability that a sample is perturbed (1.0).

    Examples
    --------
    >>> import torch, defectforge
    >>> synth = defectforge.create("simplenet")
    >>> out = synth(torch.zeros(2, 8, 4, 4), seed=0)
    >>> abs(float(out.features.std()) - 0.015) < 0.002, out.labels.tolist()
    (True, [1, 1])
    """

    #: The detector that trains on this method (``defectforge benchmark --detector simplenet``).
    detector = "simplenet"

    def __init__(self, noise_std: float = 0.015, mix_noise: int = 1, anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.noise_std = check_positive("noise_std", noise_std)
        self.mix_noise = check_range("mix_noise", mix_noise, 1, None, integer=True)
        self.method_kwargs = {"noise_std": self.noise_std, "mix_noise": self.mix_noise,
                              "anomaly_probability": self.anomaly_probability}

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        return {"noise_seed": noise_seed(rng)}

    def noise(self, params: list[dict], shape: FeatureShape, device) -> torch.Tensor:
        c, h, w = shape
        fields = gaussian_fields([p["noise_seed"] for p in params], (c + (1 if self.mix_noise > 1 else 0), h, w))
        eps = fields[:, :c]
        if self.mix_noise > 1:  # per-row scale index from the extra channel's uniform quantile
            u = torch.special.ndtr(fields[:, c:])
            k = (u * self.mix_noise).long().clamp_(max=self.mix_noise - 1)
            eps = eps * (1.1 ** k.float())
        return (eps * self.noise_std).to(device)

    def apply(self, features, params, context: FeatureContext):
        noise = self.noise(params, FeatureShape(features.shape[1:]), features.device)
        masks = features.new_ones((features.shape[0], 1, *features.shape[2:]))
        return features + noise.to(features.dtype), masks, {}


def _next_power_2(n: int) -> int:
    return 1 << (int(n) - 1).bit_length()


@register_method("supersimplenet", family=_FAMILY, level="feature",
                 description="N(0, 0.015^2) feature noise inside a Perlin mask (threshold 0.2), half the masks empty",
                 source="Rolih et al., ICPR 2024 (SuperSimpleNet); blaz-r/SuperSimpleNet model/supersimplenet.py",
                 licence="MIT", defaults={"threshold": 0.2})
@register_method("supersimplenet_visa", family=_FAMILY, level="feature",
                 description="SuperSimpleNet's VisA setting: Perlin threshold 0.6",
                 source="Rolih et al., ICPR 2024 (SuperSimpleNet); blaz-r/SuperSimpleNet VisA config",
                 licence="MIT", defaults={"threshold": 0.6})
class SuperSimpleNetNoise(FeatureSynthesizer):
    """SuperSimpleNet's Perlin-masked feature noise (module docstring).

    Parameters
    ----------
    noise_std : float
        Noise standard deviation inside the mask (0.015, ``noise_std``).
    threshold : float
        Perlin threshold (0.2 MVTec; ``supersimplenet_visa``: 0.6).
    empty_probability : float
        Probability that a sample's noise mask is emptied (0.5, ``chance_anomaly > 0.5``).
    exponent_range : (int, int)
        Lattice exponents ``[lo, hi)`` ((0, 6), ``perlin_range``).
    anomaly_probability : float
        Probability that a sample is considered at all (1.0).

    Examples
    --------
    >>> import torch, defectforge
    >>> out = defectforge.create("supersimplenet")(torch.zeros(4, 8, 16, 16), seed=1)
    >>> bool(((out.features != 0) <= (out.masks > 0)).all())     # noise only inside the mask
    True
    """

    #: The detector that trains on this method (``defectforge benchmark --detector supersimplenet``).
    detector = "supersimplenet"

    def __init__(self, noise_std: float = 0.015, threshold: float = 0.2, empty_probability: float = 0.5,
                 exponent_range: tuple[int, int] = PERLIN_EXPONENT_RANGE, anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.noise_std = check_positive("noise_std", noise_std)
        self.threshold = float(threshold)
        if not -1.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in [-1, 1) (Perlin noise range), got {threshold}")
        self.empty_probability = check_probability("empty_probability", empty_probability)
        lo, hi = (int(v) for v in exponent_range)
        if not 0 <= lo < hi <= 8:
            raise ValueError(f"exponent_range must be (lo, hi) with 0 <= lo < hi <= 8, got {exponent_range}")
        self.exponent_range = (lo, hi)
        self.method_kwargs = {"noise_std": self.noise_std, "threshold": self.threshold,
                              "empty_probability": self.empty_probability, "exponent_range": list(self.exponent_range),
                              "anomaly_probability": self.anomaly_probability}

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        a, b = rng.integers(*self.exponent_range, size=2)
        return {"res": [int(2 ** a), int(2 ** b)], "perlin_seed": noise_seed(rng),
                "empty": bool(rng.random() < self.empty_probability), "noise_seed": noise_seed(rng)}

    def noise_masks(self, params: list[dict], height: int, width: int, device=None) -> torch.Tensor:
        """``(B, 1, h, w)`` binary noise masks (all zero for samples drawn ``empty``)."""
        ph, pw = _next_power_2(height), _next_power_2(width)
        # lattice cells never exceed the grid (Perlin needs at least one pixel per cell)
        res = [(min(p["res"][0], ph), min(p["res"][1], pw)) for p in params]
        noise = perlin_noise(ph, pw, res, [p["perlin_seed"] for p in params])[:, None]
        noise = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
        masks = (noise > self.threshold).float()
        empty = torch.tensor([p["empty"] for p in params], dtype=torch.bool)
        masks[empty] = 0.0
        return masks.to(device)

    def apply(self, features, params, context: FeatureContext):
        b, c, h, w = features.shape
        masks = self.noise_masks(params, h, w, features.device)
        if context.masks is not None:  # overlap=False: no noise on already anomalous cells
            masks = masks * (context.masks <= 0.5).float()
        noise = gaussian_fields([p["noise_seed"] for p in params], (c, h, w), features.device, features.dtype)
        return features + noise * self.noise_std * masks, masks, {}


@register_method("uniad_jitter", family=_FAMILY, level="feature",
                 description="feature jitter f + N(0,1) * (|f|_2 / C) * 20 on every token, probability 1",
                 source="You et al., NeurIPS 2022 (UniAD); zhiyuanyou/UniAD models/reconstructions/uniad.py",
                 licence="Apache-2.0")
class UniADJitter(FeatureSynthesizer):
    """UniAD's feature jitter (module docstring).

    Parameters
    ----------
    scale : float
        Jitter scale (20.0, ``feature_jitter.scale``).
    anomaly_probability : float
        Probability of jittering a sample (1.0, ``feature_jitter.prob``).

    Examples
    --------
    >>> import torch, defectforge
    >>> f = torch.ones(1, 4, 2, 2)                       # |f|_2 = 2 at every position, C = 4
    >>> out = defectforge.create("uniad_jitter")(f, seed=0)
    >>> round(float((out.features - f).std()), 0)        # noise std (2 / 4) * 20 = 10
    10.0
    """

    #: The detector that trains on this method (``defectforge benchmark --detector uniad``).
    detector = "uniad"

    def __init__(self, scale: float = 20.0, anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.scale = check_positive("scale", scale)
        self.method_kwargs = {"scale": self.scale, "anomaly_probability": self.anomaly_probability}

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        return {"noise_seed": noise_seed(rng)}

    def apply(self, features, params, context: FeatureContext):
        b, c, h, w = features.shape
        noise = gaussian_fields([p["noise_seed"] for p in params], (c, h, w), features.device, features.dtype)
        norms = features.norm(dim=1, keepdim=True) / c
        return features + noise * norms * self.scale, features.new_ones((b, 1, h, w)), {}
