"""DSR: anomalies made by replacing codes in the quantised latent space of a two-level VQ-VAE.

Zavrtanik, Kristan, Skočaj, "DSR -- A dual subspace re-projection network for surface anomaly
detection", ECCV 2022; VitjanZ/DSR_anomaly_detection (MIT; methods.md lists Apache-2.0, the
repository's LICENSE file says MIT). What follows is read from ``train_dsr.py``
(``generate_fake_anomalies_joined`` and the training loop of ``train_on_device``) and
``data_loader.py`` (``TrainWholeImageDataset``):

- a Perlin mask at image resolution: lattice ``2**a x 2**b``, ``a, b ~ U{0..5}``, noise rotated by
  ``U(-90, 90)`` degrees, thresholded ``> 0.5``; with probability 0.5 the mask is emptied
  (``no_anomaly = rand > 0.5``) -- :class:`~defectforge.functional.perlin.PerlinMaskSpec`;
- the mask max-pooled to each latent grid (kernel = image size / grid size: 4 for the bottom
  level ``Q_hi``, 8 for the top level ``Q_lo``);
- a strength per level ``s ~ U(0.2, 1)`` (``anom_par = 0.2``);
- every masked position's code is replaced by a code drawn uniformly from the candidate ranks
  (below), ranked by the squared Euclidean distance between the position's latent *before*
  quantisation (``zt`` / ``zb``) and every codebook vector;
- with probability 0.5 both levels are altered (``use_both``), else only the top level or only
  the bottom level, each with probability 0.5 (``use_lo``, ``use_hi = 1 - use_lo``). When both
  are altered, the bottom latent is recomputed from the altered top codes before its own codes
  are replaced (DSR's ``zb`` from ``up_quantized_t``); when only the top level is, the bottom
  codes are those of the normal image (``quantized_b_real``);
- ground truth (the segmentation target): the top-level mask (max-pooled by 8) when the top level
  is altered (alone or with the bottom), else the bottom-level mask (max-pooled by 4).

Candidate ranks, precisely. With ``K`` codes, rank 0 the nearest code (the one the quantiser
picks), ``n = clamp(floor(s * K) + 1, 1, K - 1)`` and ``skip = floor(0.05 * K)``: the replacement
is the code of rank ``skip + floor(u * (n - skip))``, ``u ~ U[0, 1)``, i.e. uniform over the
``n`` nearest codes minus the ``skip`` nearest (DSR: ``topk(distances, n)`` then
``topk_indices[:, int(K * 0.05):]`` and a uniform index into what is left). Since ``skip >= 1``
once ``K >= 20``, a replaced code always differs from the original one.

House rules: every random choice of sample ``index`` (mask, emptiness, levels, strengths and the
seed of the per-position uniforms) is drawn from ``(seed, index)`` and recorded, so a sample
replays from its record and does not depend on its batch. The code search is batched per sample
(one distance matrix and one ``topk`` for all masked positions of a sample, no per-position
Python loop).

Deliberate differences: the Perlin mask is made at ``stride x`` the bottom grid (the image size
of the VQ-VAE's input) with this library's Perlin implementation; the normal image is not
rotated (DSR rotates it with probability 0.4 before encoding: an augmentation of the normal data,
left to the caller).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.registry import register_method
from ..core.seeded import batch_indices, check_records, label_empty_masks_normal
from ..core.seeding import torch_generator
from ..core.validation import check_interval, check_probability
from ..functional.perlin import PERLIN_EXPONENT_RANGE, PerlinMaskSpec, perlin_masks
from .base import FeatureShape, FeatureSynthesisResult, FeatureSynthesizer, noise_seed, validate_features

__all__ = ["DSRCodeReplacement", "candidate_ranks", "nearest_codes", "replace_codes"]

#: DSR's ``anom_par``: strengths ``s ~ U(0.2, 1)`` (``train_dsr.py``).
STRENGTH_RANGE = (0.2, 1.0)
#: The nearest ``int(K * 0.05)`` codes are never picked (``train_dsr.py``, ``generate_fake_anomalies_joined``).
SKIP_FRACTION = 0.05


def candidate_ranks(strength: float, num_codes: int, skip_fraction: float = SKIP_FRACTION) -> tuple[int, int]:
    """``(skip, n)``: a replacement has distance rank in ``[skip, n)`` (0 = nearest; module docstring).

    Examples
    --------
    >>> candidate_ranks(0.2, 4096)      # floor(0.05 * 4096) = 204; floor(0.2 * 4096) + 1 = 820
    (204, 820)
    >>> candidate_ranks(1.0, 4096)      # capped at K - 1, as DSR
    (204, 4095)
    """
    k = int(num_codes)
    n = max(1, min(int(math.floor(strength * k)) + 1, k - 1))
    skip = int(math.floor(skip_fraction * k))
    if skip >= n:
        raise ValueError(f"strength {strength} leaves no candidates with {k} codes: floor(strength*K)+1 = {n} "
                         f"<= the {skip} skipped nearest codes (raise strength_range's lower bound above skip_fraction)")
    return skip, n


def _distances(rows: torch.Tensor, codebook: torch.Tensor, code_norms: torch.Tensor) -> torch.Tensor:
    """``|c|^2 - 2 z.c`` ``(N, K)``: the squared Euclidean distances minus the row's constant ``|z|^2``
    (same order within a row, half the work)."""
    return torch.addmm(code_norms, rows, codebook.T, alpha=-2.0)


def _codes(z: torch.Tensor, codebook: torch.Tensor, mask: torch.Tensor | None = None,
           strengths: Sequence[float] | None = None, uniforms: torch.Tensor | None = None,
           skip_fraction: float = SKIP_FRACTION) -> tuple[torch.Tensor, torch.Tensor]:
    """``(nearest, replaced)`` codes ``(B, h, w)``: one distance matrix per sample serves both."""
    b, d, h, w = z.shape
    norms = codebook.pow(2).sum(1)
    nearest = torch.empty((b, h, w), dtype=torch.long, device=z.device)
    replaced = nearest if mask is None else torch.empty_like(nearest)
    for i in range(b):
        dist = _distances(z[i].permute(1, 2, 0).reshape(-1, d), codebook, norms)
        nearest[i] = dist.argmin(1).view(h, w)
        if mask is None:
            continue
        replaced[i] = nearest[i]
        where = mask[i, 0].reshape(-1) > 0.5
        if not bool(where.any()):
            continue
        skip, n = candidate_ranks(float(strengths[i]), codebook.shape[0], skip_fraction)
        rank = skip + (uniforms[i].reshape(-1)[where].to(z.device) * (n - skip)).long().clamp_(max=n - skip - 1)
        order = torch.topk(dist[where], int(rank.max()) + 1, dim=1, largest=False, sorted=True).indices
        replaced[i].view(-1)[where] = order.gather(1, rank[:, None])[:, 0]
    return nearest, replaced


def nearest_codes(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``(B, h, w)`` index of the nearest code of every latent vector of ``z`` ``(B, D, h, w)``, per sample."""
    return _codes(z, codebook)[0]


def replace_codes(z: torch.Tensor, codebook: torch.Tensor, mask: torch.Tensor, strengths: Sequence[float],
                  uniforms: torch.Tensor, skip_fraction: float = SKIP_FRACTION) -> torch.Tensor:
    """DSR's code replacement on one latent level.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, D, h, w)`` latents before quantisation.
    codebook : torch.Tensor
        ``(K, D)`` code vectors.
    mask : torch.Tensor
        ``(B, 1, h, w)``: positions whose code is replaced (> 0.5).
    strengths : sequence of float
        ``s`` per sample.
    uniforms : torch.Tensor
        ``(B, h, w)`` values in ``[0, 1)``: the position's pick among its candidates.
    skip_fraction : float
        Share of nearest codes never picked (0.05).

    Returns
    -------
    torch.Tensor
        ``(B, h, w)`` codes: the nearest code outside the mask, the replacement inside.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> z, book = torch.randn(1, 4, 3, 3, generator=g), torch.randn(100, 4, generator=g)
    >>> mask = torch.zeros(1, 1, 3, 3); mask[..., 1, 1] = 1
    >>> codes = replace_codes(z, book, mask, [0.5], torch.rand(1, 3, 3, generator=g))
    >>> d = ((z[0, :, 1, 1] - book) ** 2).sum(1)
    >>> rank = int((d < d[codes[0, 1, 1]]).sum())    # distance rank of the replacement
    >>> 5 <= rank < 51                                # skip = floor(0.05 * 100), n = floor(0.5 * 100) + 1
    True
    """
    return _codes(z, codebook, mask, strengths, uniforms, skip_fraction)[1]


@register_method("dsr", family="distribution-hypothesis", level="latent",
                 description="VQ-VAE code replacement inside a Perlin mask (0.5, half empty) max-pooled to both latent "
                             "grids: codes drawn from the floor(s*K)+1 nearest minus the nearest 5%, s ~ U(0.2, 1); both "
                             "levels with p 0.5, else one",
                 source="Zavrtanik et al., ECCV 2022 (DSR); VitjanZ/DSR_anomaly_detection train_dsr.py "
                        "generate_fake_anomalies_joined + data_loader.py",
                 licence="MIT")
class DSRCodeReplacement(FeatureSynthesizer):
    """DSR's latent anomaly generation (module docstring); needs the VQ-VAE at call time.

    The input is the VQ-VAE's bottom-encoder output ``enc_b`` ``(B, hidden, h, w)`` (from which
    the model derives both levels); ``vqvae`` is any object with ``top_latent(enc_b)``,
    ``bottom_latent(enc_b, q_top)``, ``codebook_top``, ``codebook_bottom`` and ``stride``, such as
    :class:`defectforge.generative.vqvae.TwoLevelVQVAE`.

    The result's ``features`` are the altered bottom-level code vectors ``(B, D, h, w)``, its
    ``masks`` the ground truth on the bottom grid (module docstring), and ``extras`` hold the
    rest: ``quantized_top`` ``(B, D, h/2, w/2)``, ``codes_top``, ``codes_bottom``, ``mask_top``
    and ``mask_bottom`` (where codes were replaced at each level), and the normal image's
    ``quantized_top_normal``, ``quantized_bottom_normal``, ``codes_top_normal``,
    ``codes_bottom_normal``.

    Parameters
    ----------
    strength_range : (float, float)
        Strength ``s`` interval (``(0.2, 1.0)``, ``anom_par``).
    skip_fraction : float
        Share of nearest codes never picked (0.05).
    both_probability : float
        Probability of altering both levels (0.5, ``use_both``); otherwise top or bottom, 0.5 each.
    empty_probability : float
        Probability that the Perlin mask is emptied (0.5, ``no_anomaly``).
    threshold, rotation_range, perlin_exponent_range
        The Perlin mask (0.5, (-90, 90) degrees, lattice exponents [0, 6)).
    anomaly_probability : float
        Probability that a sample is considered at all (1.0).

    Examples
    --------
    >>> import torch, defectforge
    >>> from defectforge.generative.vqvae import TwoLevelVQVAE, VQVAE_WIDTHS
    >>> torch.manual_seed(0) and None
    >>> vq = TwoLevelVQVAE(**VQVAE_WIDTHS["tiny"]).eval()
    >>> enc = vq.encode_bottom(torch.rand(4, 3, 64, 64))
    >>> out = defectforge.create("dsr")(enc, seed=0, vqvae=vq)
    >>> tuple(out.features.shape), tuple(out.masks.shape), tuple(out.extras["codes_top"].shape)
    ((4, 8, 16, 16), (4, 1, 16, 16), (4, 8, 8))
    >>> changed = out.extras["codes_top"] != out.extras["codes_top_normal"]
    >>> bool((changed == (out.extras["mask_top"][:, 0] > 0)).all())    # every masked code, and only those
    True
    """

    #: The detector that trains on this method (``defectforge benchmark --detector dsr``).
    detector = "dsr"

    level = "latent"
    needs = ("vqvae",)

    def __init__(self, strength_range: tuple[float, float] = STRENGTH_RANGE, skip_fraction: float = SKIP_FRACTION,
                 both_probability: float = 0.5, empty_probability: float = 0.5, threshold: float = 0.5,
                 rotation_range: tuple[float, float] = (-90.0, 90.0),
                 perlin_exponent_range: tuple[int, int] = PERLIN_EXPONENT_RANGE, anomaly_probability: float = 1.0):
        super().__init__(anomaly_probability)
        self.skip_fraction = check_probability("skip_fraction", skip_fraction)
        lo, hi = check_interval("strength_range", strength_range, 0.0, 1.0)
        if lo < self.skip_fraction:
            raise ValueError(f"strength_range={tuple(strength_range)} starts below skip_fraction={self.skip_fraction}: "
                             "such strengths leave no candidate codes; start it at or above skip_fraction")
        self.strength_range = (float(lo), float(hi))
        self.both_probability = check_probability("both_probability", both_probability)
        self.empty_probability = check_probability("empty_probability", empty_probability)
        self.perlin = PerlinMaskSpec.checked(perlin_exponent_range, rotation_range, threshold)
        self.method_kwargs = {"strength_range": list(self.strength_range), "skip_fraction": self.skip_fraction,
                              "both_probability": self.both_probability, "empty_probability": self.empty_probability,
                              "threshold": self.perlin.threshold, "rotation_range": list(self.perlin.rotation_range),
                              "perlin_exponent_range": list(self.perlin.exponent_range),
                              "anomaly_probability": self.anomaly_probability}

    def sample_params(self, rng: np.random.Generator, shape: FeatureShape) -> dict[str, Any]:
        perlin = self.perlin.sample(rng)
        empty = bool(rng.random() < self.empty_probability)
        both = bool(rng.random() < self.both_probability)
        top_only = bool(rng.random() < 0.5)
        strengths = rng.uniform(*self.strength_range, size=2)
        return {"perlin": perlin, "empty": empty, "levels": "both" if both else ("top" if top_only else "bottom"),
                "strength_top": float(strengths[0]), "strength_bottom": float(strengths[1]),
                "replace_seed": noise_seed(rng)}

    # --- public API (the base class's, with the VQ-VAE instead of a discriminator) -----------
    def __call__(self, features: torch.Tensor, *, seed: int = 0,  # type: ignore[override]
                 indices: Sequence[int] | None = None, vqvae=None) -> FeatureSynthesisResult:
        """Alter the latents of ``enc_b`` ``(B, hidden, h, w)`` (class docstring); ``vqvae`` is required."""
        validate_features(features)
        indices = batch_indices(indices, features.shape[0], "latent maps")
        params = self.draw(seed, indices, FeatureShape(features.shape[1:]))
        return self._dsr(features, params, vqvae)

    def replay(self, features: torch.Tensor, params: Sequence[dict[str, Any]], *,  # type: ignore[override]
               vqvae=None) -> FeatureSynthesisResult:
        """Remake a batch from recorded ``params``."""
        validate_features(features)
        return self._dsr(features, check_records(params, features.shape[0], "latent maps"), vqvae)

    # --- internals ----------------------------------------------------------------------
    def _check_model(self, features: torch.Tensor, vqvae) -> None:
        if vqvae is None:
            raise ValueError("method 'dsr' needs vqvae=... (a two-level VQ-VAE such as "
                             "defectforge.generative.vqvae.TwoLevelVQVAE; train one with `defectforge train vqvae`)")
        for attr in ("top_latent", "bottom_latent", "codebook_top", "codebook_bottom", "stride"):
            if not hasattr(vqvae, attr):
                raise TypeError(f"vqvae has no {attr!r}; pass a two-level VQ-VAE (TwoLevelVQVAE)")
        h, w = features.shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"the bottom latent grid must have even sides (image sides a multiple of "
                             f"{2 * vqvae.stride}), got {h}x{w}")

    def masks_at_image(self, params: list[dict], height: int, width: int) -> torch.Tensor:
        """``(B, 1, H, W)`` Perlin masks at image resolution (zero where ``empty``)."""
        masks, _ = perlin_masks([p["perlin"] for p in params], height, width, self.perlin.threshold)
        empty = torch.tensor([bool(p["empty"]) for p in params], dtype=torch.bool)
        masks[empty] = 0.0
        return masks

    @torch.no_grad()
    def _dsr(self, enc_b: torch.Tensor, params: list[dict], vqvae) -> FeatureSynthesisResult:
        self._check_model(enc_b, vqvae)
        b, _, hb, wb = enc_b.shape
        stride = int(vqvae.stride)
        book_top, book_bot = vqvae.codebook_top, vqvae.codebook_bottom
        z_top = vqvae.top_latent(enc_b)
        ht, wt = z_top.shape[-2:]
        zeros = enc_b.new_zeros
        mask_top, mask_bot, target = zeros((b, 1, ht, wt)), zeros((b, 1, hb, wb)), zeros((b, 1, hb, wb))
        use_top = torch.zeros((b, 1, 1, 1), dtype=torch.bool, device=enc_b.device)
        use_bot = use_top.clone()
        strengths_top, strengths_bot = [0.0] * b, [0.0] * b
        uniforms = torch.zeros((b, ht * wt + hb * wb))
        sel = [i for i, p in enumerate(params) if p.get("anomalous")]
        if sel:
            sub = [params[i] for i in sel]
            idx = torch.tensor(sel, device=enc_b.device)
            image_masks = self.masks_at_image(sub, stride * hb, stride * wb).to(enc_b.device)
            pooled_top = F.max_pool2d(image_masks, 2 * stride)[..., :ht, :wt]
            pooled_bot = F.max_pool2d(image_masks, stride)
            levels = [p["levels"] for p in sub]
            use_top[idx] = torch.tensor([lv in ("top", "both") for lv in levels], device=enc_b.device).view(-1, 1, 1, 1)
            use_bot[idx] = torch.tensor([lv in ("bottom", "both") for lv in levels], device=enc_b.device).view(-1, 1, 1, 1)
            mask_top[idx], mask_bot[idx] = pooled_top * use_top[idx], pooled_bot * use_bot[idx]
            up_top = F.interpolate(pooled_top, scale_factor=2, mode="nearest")
            up_top = F.pad(up_top, (0, wb - up_top.shape[-1], 0, hb - up_top.shape[-2]))
            target[idx] = torch.where(use_top[idx], up_top, pooled_bot)
            for i, p in zip(sel, sub):
                strengths_top[i], strengths_bot[i] = float(p["strength_top"]), float(p["strength_bottom"])
                uniforms[i] = torch.rand(ht * wt + hb * wb, generator=torch_generator(int(p["replace_seed"])))
        codes_top_normal, codes_top = _codes(z_top, book_top, mask_top, strengths_top,
                                             uniforms[:, :ht * wt].view(-1, ht, wt), self.skip_fraction)
        q_top_normal = book_top[codes_top_normal].permute(0, 3, 1, 2)
        z_bot = vqvae.bottom_latent(enc_b, q_top_normal)
        u_bot = uniforms[:, ht * wt:].view(-1, hb, wb)
        # both levels: the bottom latent follows the altered top codes (DSR's zb); bottom only: the normal
        # one; top only: mask_bot is empty and the bottom codes stay the normal image's
        both = (use_top & use_bot).flatten()
        codes_bot_normal, codes_bot = _codes(z_bot, book_bot, mask_bot * (~use_top), strengths_bot, u_bot,
                                             self.skip_fraction)
        if bool(both.any()):
            z_both = vqvae.bottom_latent(enc_b[both], book_top[codes_top[both]].permute(0, 3, 1, 2))
            codes_bot[both] = _codes(z_both, book_bot, mask_bot[both], [s for s, k in zip(strengths_bot, both) if k],
                                     u_bot[both], self.skip_fraction)[1]
        # an emptied mask (DSR's half) is a normal sample
        labels = label_empty_masks_normal(target, (target.flatten(1).amax(1) > 0).long(), params)
        embed = lambda book, codes: book[codes].permute(0, 3, 1, 2).contiguous()  # noqa: E731
        extras = {"quantized_top": embed(book_top, codes_top), "codes_top": codes_top, "codes_bottom": codes_bot,
                  "mask_top": mask_top, "mask_bottom": mask_bot, "quantized_top_normal": q_top_normal.contiguous(),
                  "quantized_bottom_normal": embed(book_bot, codes_bot_normal), "codes_top_normal": codes_top_normal,
                  "codes_bottom_normal": codes_bot_normal}
        return FeatureSynthesisResult(embed(book_bot, codes_bot), target, labels, params, extras)
