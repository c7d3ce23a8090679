"""Prior-dependent feature synthesis: GLASS's gradient ascent (GAS) and PBAS's push from the
normal centres.

GLASS-GAS (Chen et al., ECCV 2024; cqylunlun/GLASS, MIT)
    ``glass.py``, ``GLASS._train_discriminator``: ``gaus_feats = true_feats + N(0, noise^2)``
    (``noise=0.015``, ``main.py``); then ``step=20`` iterations, each adding ``0.001 *`` the
    row-normalised gradient (``grad / (||grad|| + 1e-10)``) of the BCE loss of the
    discriminator calling ``gaus_feats`` anomalous (``gaus_loss``), i.e. an ascent on that loss
    towards the normal side of the decision boundary; every 5 iterations (``(step + 1) % 5 ==
    0``) the offset ``h = gaus_feats - anchor`` is rescaled to a norm ``clamp(||h||, r, 2r)``.
    Manifold mode (``svd == 0``): anchor = the normal feature, ``r = 0.5``. Hypersphere mode
    (``svd == 1``): anchor = the centre ``c`` of the feature's grid position (mean normal feature,
    recomputed each epoch), ``r = r_t``, the ``radius=0.75`` quantile of the normal features'
    distances to their centres. The last iteration ends with a projection, so every offset
    norm is in ``[r, 2r]``.
    Deliberate difference: the official discriminator sees the ascent in training mode (batch
    norm statistics of the batch being ascended); pass ``discriminator`` in eval mode for
    per-sample results, which the detector here does.

PBAS (Chen et al., 2024, "Progressive Boundary Guided Anomaly Synthesis"; cqylunlun/PBAS, MIT)
    ``pbas.py``, ``PBAS._train_discriminator``: each feature's centre ``c*`` is the
    cosine-nearest row of the centre bank (``argmax(normalize(f) @ normalize(c).T)``);
    ``d = f - c*``; ``r_ct = mean ||d||`` over the batch; ``fake = f + (d / ||d||) * r_ct * k``
    with ``k = 0.25``. The bank is ``(h*w, C)``, built **once before training**
    (``PBAS.trainer``, its ``torch.no_grad()`` pass over the training loader): the first batch's
    mean adapted feature per position, then each row ``j`` of every later batch mean updates its
    cosine-nearest centre, ``c[i*] <- 0.9 c[i*] + 0.1 * mean[j]`` (:func:`build_centre_bank`); it
    stays fixed while the projection and discriminator train. :class:`CentreBank` is the moving
    alternative (an exponential average of every step's batch mean, all positions at once), kept
    as the detector's ``bank="moving"`` ablation.
    ``r_ct`` is a batch mean, so a sample depends on its batch: ``radius="sample"`` takes the
    mean over the sample's own positions instead (batch-independent, not the official choice).
    PBAS's compactness loss uses the same nearest centres, so its detector searches once per step
    and passes the assignment (``nearest=``) instead of searching twice.

Neither method draws anything beyond GAS's starting noise (seeded per sample and recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.registry import register_method
from ..core.validation import check_choice, check_probability, check_range
from .base import FeatureContext, FeatureShape, FeatureSynthesizer, check_positive, gaussian_fields, noise_seed

__all__ = ["GlassGAS", "PBASPush", "CentreBank", "build_centre_bank", "nearest_centres"]

_FAMILY = "distribution-hypothesis"


def _rows(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B*h*w, C)`` rows, sample-major."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def _unrows(rows: torch.Tensor, shape) -> torch.Tensor:
    b, c, h, w = shape
    return rows.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()


@register_method("glass_gas", family=_FAMILY, level="feature",
                 description="N(0,0.015^2) start, 20 normalised-gradient ascent steps (0.001) on the discriminator's "
                             "loss, offsets projected into [r, 2r] every 5 steps (manifold r=0.5 or hypersphere)",
                 source="Chen et al., ECCV 2024 (GLASS); cqylunlun/GLASS glass.py _train_discriminator",
                 licence="MIT")
class GlassGAS(FeatureSynthesizer):
    """GLASS's global anomaly synthesis (module docstring).

    Parameters
    ----------
    noise_std : float
        Starting noise (0.015, ``--noise``).
    steps : int
        Ascent iterations (20, ``--step``).
    step_size : float
        Length of each normalised gradient step (0.001).
    project_every : int
        Projection period (5).
    mode : {"manifold", "hypersphere"}
        Anchor of the projection: the normal feature (``r`` = ``radius``, 0.5) or the centre of
        its grid position (needs ``centres`` of shape ``(h*w, C)``).
    radius : float, optional
        ``r``; default 0.5 in manifold mode, the ``quantile`` of the batch's normal distances to
        their centres in hypersphere mode (batch-coupled; pass a number to decouple).
    quantile : float
        Quantile of the hypersphere radius (0.75, ``--radius``).

    Examples
    --------
    >>> import torch, defectforge
    >>> d = torch.nn.Sequential(torch.nn.Linear(8, 1), torch.nn.Sigmoid())
    >>> f = torch.randn(2, 8, 4, 4)
    >>> out = defectforge.create("glass_gas")(f, seed=0, discriminator=d)
    >>> norms = (out.features - f).norm(dim=1)
    >>> bool(((norms >= 0.5 - 1e-5) & (norms <= 1.0 + 1e-5)).all())
    True
    """

    #: The detector that trains on this method (``defectforge benchmark --detector glass``).
    detector = "glass"

    needs = ("discriminator",)

    def __init__(self, noise_std: float = 0.015, steps: int = 20, step_size: float = 0.001, project_every: int = 5,
                 mode: str = "manifold", radius: float | None = None, quantile: float = 0.75,
                 anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.noise_std = check_positive("noise_std", noise_std)
        self.steps = check_range("steps", steps, 0, None, integer=True)
        self.step_size = check_positive("step_size", step_size)
        self.project_every = check_range("project_every", project_every, 1, None, integer=True)
        self.mode = check_choice("mode", mode, ("manifold", "hypersphere"))
        self.radius = None if radius is None else check_positive("radius", radius)
        self.quantile = check_probability("quantile", quantile)
        if self.mode == "hypersphere":
            self.needs = ("discriminator", "centres")
        self.method_kwargs = {"noise_std": self.noise_std, "steps": self.steps, "step_size": self.step_size,
                              "project_every": self.project_every, "mode": self.mode, "radius": self.radius,
                              "quantile": self.quantile, "anomaly_probability": self.anomaly_probability}

    @property
    def batch_coupled(self) -> bool:  # type: ignore[override]
        return self.mode == "hypersphere" and self.radius is None

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        return {"noise_seed": noise_seed(rng)}

    def _anchor_and_radius(self, true: torch.Tensor, shape, centres: torch.Tensor | None):
        if self.mode == "manifold":
            return true, (0.5 if self.radius is None else self.radius)
        b, c, h, w = shape
        if centres.shape[0] != h * w:
            raise ValueError(f"hypersphere mode needs one centre per grid position: centres of shape ({h * w}, {c}), "
                             f"got {tuple(centres.shape)}")
        anchor = centres.to(true).repeat(b, 1)
        if self.radius is not None:
            return anchor, self.radius
        return anchor, float(torch.quantile((true - anchor).norm(dim=1).float(), self.quantile))

    def apply(self, features, params, context: FeatureContext):
        shape = features.shape
        b, c, h, w = shape
        true = _rows(features.detach())
        noise = _rows(gaussian_fields([p["noise_seed"] for p in params], (c, h, w), features.device, features.dtype))
        g = true + self.noise_std * noise
        anchor, r = self._anchor_and_radius(true, shape, context.centres)
        d = context.discriminator
        for step in range(self.steps):
            with torch.enable_grad():
                g = g.detach().requires_grad_(True)
                prob = d(g).reshape(-1).clamp(1e-7, 1 - 1e-7)
                loss = F.binary_cross_entropy(prob, torch.ones_like(prob))
                grad, = torch.autograd.grad(loss, g)
            with torch.no_grad():
                g = g + self.step_size * grad / (grad.norm(dim=1, keepdim=True) + 1e-10)
                if (step + 1) % self.project_every == 0:
                    offset = g - anchor
                    norm = offset.norm(dim=1, keepdim=True)
                    g = anchor + offset * (norm.clamp(r, 2 * r) / (norm + 1e-10))
        g = g.detach()
        offsets = _unrows((g - anchor).norm(dim=1, keepdim=True), (b, 1, h, w))
        return _unrows(g, shape), features.new_ones((b, 1, h, w)), {"offset_norm": offsets}


def nearest_centres(rows: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The cosine-nearest centre of each row (``(N, C)`` from a ``(K, C)`` bank)."""
    sim = F.normalize(rows, dim=1) @ F.normalize(centres.to(rows), dim=1).T
    return centres.to(rows)[sim.argmax(dim=1)]


@torch.no_grad()
def build_centre_bank(batches, momentum: float = 0.9) -> torch.Tensor:
    """PBAS's centre bank, built once before training (``PBAS.trainer`` in cqylunlun/PBAS ``pbas.py``).

    Parameters
    ----------
    batches : iterable of torch.Tensor
        ``(B, C, h, w)`` adapted normal features, one batch at a time, in loader order.
    momentum : float
        Weight of the old centre (0.9).

    Returns
    -------
    torch.Tensor
        ``(h*w, C)``: the first batch's mean feature per position; then each row ``j`` of every
        later batch mean (one per position) moves its cosine-nearest centre ``i*``,
        ``c[i*] <- momentum * c[i*] + (1 - momentum) * mean[j]``, row after row (two rows with
        the same nearest centre update it in turn, as the official loop does).

    Examples
    --------
    >>> import torch
    >>> first = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)    # centres (1, 0) and (0, 1)
    >>> second = torch.tensor([[2.0, 0.0], [3.0, 0.0]]).T.reshape(1, 2, 1, 2)   # both nearest to centre 0
    >>> build_centre_bank([first, second]).tolist()                             # 1 -> 1.1 -> 1.29
    [[1.2899999618530273, 0.0], [0.0, 1.0]]
    """
    momentum = check_probability("momentum", momentum)
    centres = None
    for batch in batches:
        mean = batch.detach().mean(0).flatten(1).T  # (h*w, C)
        if centres is None:
            centres = mean.clone()
            continue
        nearest = (F.normalize(mean, dim=1) @ F.normalize(centres, dim=1).T).argmax(dim=1)
        # the official row-by-row loop in closed form: a centre updated by k rows in turn becomes
        # m^k c + (1 - m) sum_r m^(rows after r) x_r (a Python loop over h*w rows per batch is slow)
        counts = torch.bincount(nearest, minlength=centres.shape[0])
        order = torch.sort(nearest, stable=True).indices
        starts = torch.cumsum(counts, 0) - counts
        position = torch.empty_like(nearest)
        position[order] = torch.arange(len(nearest)) - starts[nearest[order]]
        later = counts[nearest] - 1 - position
        weights = (1 - momentum) * momentum ** later.to(mean.dtype)
        centres = centres * (momentum ** counts.to(mean.dtype))[:, None]
        centres.index_add_(0, nearest, weights[:, None] * mean)
    if centres is None:
        raise ValueError("build_centre_bank needs at least one batch")
    return centres


class CentreBank:
    """Moving per-position centres ``(h*w, C)``: the first batch's mean, then every call
    ``c <- momentum * c + (1 - momentum) * batch mean`` (momentum 0.9). Not PBAS's bank, which is
    built once before training (:func:`build_centre_bank`); the detector's ``bank="moving"``."""

    def __init__(self, momentum: float = 0.9):
        self.momentum = check_probability("momentum", momentum)
        self.centres: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> torch.Tensor:
        batch_mean = features.detach().mean(0).flatten(1).T  # (h*w, C)
        if self.centres is None:
            self.centres = batch_mean.clone()
        else:
            self.centres = self.momentum * self.centres + (1 - self.momentum) * batch_mean
        return self.centres


@register_method("pbas", family=_FAMILY, level="feature",
                 description="push each feature away from its cosine-nearest normal centre by k * r (k 0.25, "
                             "r the batch mean distance)",
                 source="Chen et al., 2024 (PBAS); cqylunlun/PBAS pbas.py _train_discriminator",
                 licence="MIT")
class PBASPush(FeatureSynthesizer):
    """PBAS's boundary push (module docstring).

    Parameters
    ----------
    k : float
        Push length in units of the mean distance to the centres (0.25, ``--k``).
    radius : {"batch", "sample"}
        Mean of ``||f - c*||`` over the whole batch (PBAS) or over each sample.

    Examples
    --------
    >>> import torch, defectforge
    >>> f = torch.randn(2, 8, 4, 4)
    >>> centres = f.mean(0).flatten(1).T                 # (h*w, C)
    >>> out = defectforge.create("pbas")(f, centres=centres)
    >>> shift = (out.features - f).norm(dim=1)
    >>> bool(torch.allclose(shift, shift.flatten()[0].expand_as(shift)))   # one length k * r for all
    True
    """

    #: The detector that trains on this method (``defectforge benchmark --detector pbas``).
    detector = "pbas"

    needs = ("centres",)

    def __init__(self, k: float = 0.25, radius: str = "batch", anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.k = check_positive("k", k)
        self.radius = check_choice("radius", radius, ("batch", "sample"))
        self.method_kwargs = {"k": self.k, "radius": self.radius, "anomaly_probability": self.anomaly_probability}

    @property
    def batch_coupled(self) -> bool:  # type: ignore[override]
        return self.radius == "batch"

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        return {}

    def apply(self, features, params, context: FeatureContext):
        b, c, h, w = features.shape
        rows = _rows(features)
        # the search is the cost of this method; a detector that already made it passes ``nearest``
        nearest = _rows(context.nearest.to(rows)) if context.nearest is not None else nearest_centres(rows, context.centres)
        direction = rows - nearest
        dist = direction.norm(dim=1, keepdim=True)
        if self.radius == "batch":
            r = dist.mean().expand(b)
        else:
            r = dist.reshape(b, -1).mean(1)
        r_rows = r.repeat_interleave(h * w)[:, None]
        fake = rows + direction / dist.clamp_min(1e-12) * r_rows * self.k
        radius = r.view(b, 1, 1, 1).expand(b, 1, h, w).contiguous()
        return _unrows(fake, features.shape), features.new_ones((b, 1, h, w)), {"radius": radius}
