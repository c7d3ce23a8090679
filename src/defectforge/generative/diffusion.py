"""Diffusion synthesizers: RealNet's SDAS and masked (RePaint / AnomalyDiffusion / AdaBLDM) diffusion.

Both sample a trained diffusion model (:mod:`defectforge.generative.models`: a pixel-space one made
by ``defectforge train ddpm``, or a latent diffusion folder, ``vqvae/`` or ``vae/`` + ``unet/`` +
``scheduler/``) with :func:`~defectforge.generative.sampler.diffusion_sample`,
so they need ``model=`` (a folder, or a :class:`~defectforge.generative.models.DiffusionModel`) and
the ``generative`` extra (diffusers). Every random choice of sample ``i`` comes from
``(seed, index)``: its mask, its strength or opacity, and ``noise_seed``, which seeds the
``torch.Generator`` every noise tensor of that sample is drawn from; ``replay`` remakes a batch
bit for bit from the records.

The model runs at its own resolution ``S``: the image (or, with ``crop_context``, a square around
the mask) is resized to ``S x S`` (bilinear, antialiased), converted to the model's channels (grey:
ITU-R 601 luma; colour: the grey channel repeated), sampled, and resized back. A latent model
samples latents: the normal image is encoded (``E``), the mask is taken to the latent grid (a cell
is inside when any of its pixels is), the sampler blends latents, and the result is decoded
(``D``), as in AnomalyDiffusion's and AdaBLDM's latent diffusion. The final blend is made at the
image's resolution: every pixel outside the mask is the input pixel, exactly (the auto-encoder's
round trip would otherwise change the whole image).

``realnet_sdas``
    RealNet (Zhang et al., "RealNet: A Feature Selection Network with Realistic Synthetic Anomaly
    for Anomaly Detection", CVPR 2024; cnulab/RealNet, MIT): strength-controllable diffusion anomaly
    synthesis. A DDPM trained on normal images is sampled from noise with every step's variance
    inflated, ``x_{t-1} = mu + sqrt(1 + s) * sigma_t * z``, ``s ~ U(0.1, 0.2)``. RealNet samples
    with ``p_sample_loop`` (ancestral) on 20 respaced steps (``sample.py``;
    ``experiments/MVTec-AD/sample.yaml``: ``TestSampler: T 1000, section_counts ddim20``), its
    UNet's learned variance (``learn_sigma: True``) and classifier guidance (``classifier_scale``
    1.0); ``s ~ U(0.1, 0.2)`` is drawn in ``sample.py`` for that sampler (``0.01..0.03`` is its
    note for DDIM sampling). Here the default is the same respaced ancestral sampler, 20 DDPM
    steps (diffusers' ``DDPMScheduler`` with 20 inference steps keeps timesteps ``0, 50, ...,
    950`` and recomputes each step's beta and posterior variance, as guided-diffusion's
    respacing), with the fixed posterior variance (the models trained here predict the noise
    only, no variance) and no classifier guidance (no classifier is trained here); RealNet draws
    ``s`` once per batch of 16, here once per sample (the same distribution). The sample is blended into
    the normal image inside a Perlin mask x foreground with opacity ``U(0.5, 1)``:
    ``out = x + opacity * m * (sample - x)``. The Perlin mask is DRAEM's (RealNet reuses it):
    lattice ``2**a x 2**b``, ``a, b ~ U{0..5}``, rotation ``U(-90, 90)``, threshold 0.5, redrawn
    while empty (at most ``max_attempts`` draws). Difference: RealNet samples its anomaly images
    offline into a folder and blends them during training; here each sample is generated on demand
    (the same distribution; costlier per sample).
``masked_diffusion``
    AnomalyDiffusion (Hu et al., AAAI 2024) / RePaint (Lugmayr et al., CVPR 2022) mask-guided
    generation: at every step the outside of the mask is replaced by the forward-noised normal image
    ``q(y, t-1)``, so the model generates only inside the mask. Defaults as AnomalyDiffusion: DDIM,
    200 steps, ``eta = 1``, and its adaptive mask (``adaptive_mask=True``: the blending mask
    dilated by ``(t + 100) * 8 // 1000`` cells of a 32-cell grid, shrinking with ``t``;
    :func:`~defectforge.generative.sampler.adaptive_radius`; on by default in AnomalyDiffusion's
    ``generate_with_mask.py``). Left out: its attention re-weighting (the same step's
    ``weight_map``, ``1 / ||x_t - x_0||^2`` inside the dilated mask, normalised and clipped to
    ``[1, 1.5]``, scales the cross-attention of its learned defect tokens; the unconditional UNets
    here have no cross-attention), and its blend is made before each step at the step's own ``t``
    where here it is made after the step at ``t - 1`` (the same schedule of blends, shifted by
    one noise draw). Masks from any mask source of the library: ``mask_source="perlin"``
    (default), any registered image-level method's masks by name (``"defectmaker"``: Bezier shapes,
    ``"cutpaste_scar"``, ...), or a user's mask bank through ``defectforge.control(...,
    mask_bank=)``. AdaBLDM's three stages (Jiang et al. 2024) are options: ``free_steps`` (no
    blending), then ``dilated_steps`` blended with the mask dilated by ``dilation`` cells of the
    sampling grid (AdaBLDM's latent-space stage), then the exact mask. With a pixel-space model all
    three stages run on pixels; with a latent model the dilation is in latent cells (where AdaBLDM
    dilates) and ``pixel_steps`` of the last steps blend in pixel space (decode the step's
    predicted ``x_0``, paste the normal image outside the mask, encode, re-noise; AdaBLDM's
    ``ddim_sampling_with_pixel_latent_blend``). Preset ``masked_diffusion_adabldm`` has
    AdaBLDM's published stages (``test.py``: ``ddim_steps=50``, ``eta=0``, ``cutoff_index=45``,
    latent blending on the 20 steps before it with the latent mask dilated by a 5x5 square,
    ``use_dilation``; pixel blending from step 45): 50 DDIM steps, eta 0, 26 free, 20 dilated
    (dilation 2), the last 4 in pixel space (AdaBLDM's step 45 gets both blends, so it counts 5
    pixel steps), no adaptive mask. Left out of AdaBLDM: its ControlNet trimap conditioning and
    prompt (the models here are unconditional), guidance 9, and the decoder's online adaptation
    (200 AdamW steps, lr 1e-4, fine-tuning the VAE decoder per sample so that decoding the final
    latent reproduces the generated foreground inside the mask and the normal image outside,
    weighted 100x); the final exact blend at full resolution takes the place of the latter.
    Differences: no RePaint resampling jumps; AnomalyDiffusion's learned
    defect/position embeddings and its mask generator are not part of this method (the mask comes
    from a mask source; the content from a model trained on defects, e.g. ``defectforge train ddpm
    CATEGORY OUT --on defects`` with ``crop_context`` set).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..core.base import ImageShape, Synthesizer
from ..core.dtype import luma
from ..core.registry import method_info, register_method
from ..core.seeding import child_seed
from ..core.types import SynthesisContext
from ..core.validation import check_choice, check_interval, check_range
from ..functional.perlin import PerlinMaskSpec
from .data import square_crop_box
from .sampler import SCHEDULERS, diffusion_sample

__all__ = ["DiffusionSynthesizer", "RealNetSDAS", "MaskedDiffusion", "needs_model"]

def needs_model(name: str) -> bool:
    """``True`` for registered methods that need a trained model (``model=``) to be created."""
    return method_info(name).capabilities["needs_model"]


def to_model_space(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """``(B, C, H, W)`` in ``[0, 1]`` -> ``(B, channels, size, size)`` in ``[-1, 1]``."""
    if x.shape[1] == 3 and channels == 1:
        x = luma(x)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x * 2.0 - 1.0


def from_model_space(y: torch.Tensor, height: int, width: int, channels: int) -> torch.Tensor:
    """Inverse of :func:`to_model_space`: ``(B, c, S, S)`` in ``[-1, 1]`` -> ``(B, channels, H, W)`` in ``[0, 1]``."""
    y = (y + 1.0) * 0.5
    if y.shape[-2:] != (height, width):
        y = F.interpolate(y, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    if y.shape[1] == 1 and channels == 3:
        y = y.expand(-1, 3, -1, -1)
    elif y.shape[1] == 3 and channels == 1:
        y = luma(y)
    return y.clamp(0.0, 1.0)


class DiffusionSynthesizer(Synthesizer):
    """Base of the synthesizers that sample a trained diffusion model (see the module docstring).

    Parameters
    ----------
    model : path or DiffusionModel
        A folder written by ``defectforge train ddpm`` (``OUT`` or ``OUT/model``), a diffusers
        ``UNet2DModel`` folder, or a latent diffusion folder (``LDMPipeline`` layout: ``vqvae/`` or
        ``vae/``, ``unet/``, ``scheduler/``); loaded with ``local_files_only=True``.
    scheduler : {"ddpm", "ddim"}
        diffusers' scheduler used to sample.
    num_inference_steps : int or None
        Denoising steps (``None``: the model's training steps).
    eta : float
        DDIM noise scale (ignored by DDPM).
    batch_invariant : bool
        One denoiser call per sample, so results never depend on the batch (see
        :func:`~defectforge.generative.sampler.diffusion_sample`).
    device : str or None
        Where the model runs (``"cuda"``; ``generate --set device=cuda``); default the images'
        device. The noise is drawn on the CPU from each sample's generator either way, and the
        results come back to the images' device.
    """

    requires = ("diffusers",)
    #: Cannot be created without ``model=``; the registry-wide tests give it a tiny random model.
    needs_model = True
    #: What ``model=`` is: a diffusion model folder (pixel-space or latent).
    model_kind = "diffusion"

    def __init__(self, model=None, scheduler: str = "ddpm", num_inference_steps: int | None = None,
                 eta: float = 1.0, batch_invariant: bool = True, max_attempts: int = 20,
                 perlin_exponent_range=(0, 6), rotation_range=(-90.0, 90.0), threshold: float = 0.5,
                 anomaly_probability: float = 1.0, device: str | None = None):
        super().__init__(anomaly_probability)
        self.device = None if device is None else torch.device(device)
        self.model = self._load_model(model)
        self.scheduler = check_choice("scheduler", scheduler, SCHEDULERS)
        self.num_inference_steps = None if num_inference_steps is None else \
            check_range("num_inference_steps", num_inference_steps, 1, 100_000, integer=True)
        self.eta = float(check_range("eta", eta, 0.0, 1.0))
        self.batch_invariant = bool(batch_invariant)
        self.max_attempts = check_range("max_attempts", max_attempts, 1, 10_000, integer=True)
        self.perlin = PerlinMaskSpec.checked(perlin_exponent_range, rotation_range, threshold)

    def network_passes(self) -> int:
        """Denoiser passes one anomalous sample costs: its sampling steps.

        ``num_inference_steps`` when set, else the model's training steps (1,000 for a DDPM). Fewer
        steps (``num_inference_steps=20`` with ``scheduler="ddim"``) make a run shorter.
        """
        return int(self.num_inference_steps or self.model.scheduler.config.num_train_timesteps)

    def _load_model(self, model):
        """The model from ``model=`` (a subclass taking another kind of model overrides this)."""
        if model is None:
            raise ValueError("this method samples a trained diffusion model: pass model=PATH (command line: "
                             "--model PATH), a folder from 'defectforge train ddpm DATA OUT' (OUT/model), a "
                             "UNet2DModel folder or a latent diffusion folder, or a DiffusionModel")
        from .models import resolve_model

        return resolve_model(model)

    def _sample(self, params: list[dict], device, **kw) -> torch.Tensor:
        """Samples in the model's pixel space, ``(B, channels, size, size)`` in ``[-1, 1]``.

        ``known`` (pixels, model resolution), ``masks`` and ``dilated_masks`` (on the sampling grid:
        model pixels, or latent cells for a latent model) are passed on to the sampler; a latent
        model's ``known`` images are encoded first and its samples decoded.
        """
        gens = [torch.Generator().manual_seed(int(p["noise_seed"])) for p in params]
        back, device = device, self.device or device
        self.model.to(device)
        pixel_masks = kw.pop("pixel_masks", None)
        if kw.get("known") is not None:
            known_px = kw["known"].to(device)
            kw["known"] = self.model.encode(known_px, self.batch_invariant)
            if pixel_masks is not None and kw.get("pixel_steps"):
                pm = pixel_masks.to(device)

                def pixel_blend(pred_x0):  # AdaBLDM's pixel stage: decode, paste the normal image outside, encode
                    pixels = self.model.decode(pred_x0, self.batch_invariant)
                    return self.model.encode(pm * pixels + (1.0 - pm) * known_px, self.batch_invariant)

                kw["pixel_blend"] = pixel_blend
        z = diffusion_sample(self.model, gens, scheduler=self.scheduler,
                             num_inference_steps=self.num_inference_steps, eta=self.eta, device=device,
                             batch_invariant=self.batch_invariant, **kw)
        return self.model.decode(z, self.batch_invariant).to(back)

    def _redraw_perlin(self, rng: np.random.Generator, p: dict) -> None:
        p["perlin"] = self.perlin.sample(rng)

    def _perlin_masks(self, params, rngs, context, h, w) -> np.ndarray:
        """``(B, H, W)`` bool: user shapes where given, else Perlin x region (redrawn while empty)."""
        region = None if context.foreground is None else (context.foreground[:, 0] > 0.5).cpu().numpy()
        if context.shapes is not None:
            shapes = (context.shapes[:, 0] > 0.5).cpu().numpy()
            return shapes & region if region is not None else shapes
        masks = np.zeros((len(params), h, w), bool)
        for i, p in enumerate(params):
            while True:  # redrawn from the sample's own generator while empty (not on replay)
                masks[i] = self.perlin.mask(p["perlin"], h, w)
                if region is not None:
                    masks[i] &= region[i]
                if masks[i].any() or rngs is None:
                    break
                if p.get("attempts", 1) >= self.max_attempts:
                    p["empty_mask"] = f"mask still empty after {self.max_attempts} draws; the sample stays normal"
                    break
                self._redraw_perlin(rngs[i], p)
                p["attempts"] = p.get("attempts", 1) + 1
        return masks


@register_method(
    "realnet_sdas", family="diffusion", level="image",
    description="DDPM sampled with variance inflated by sqrt(1+s), s~U(0.1,0.2), blended in a Perlin mask (opacity U(0.5,1)); needs model=",
    source="Zhang et al., CVPR 2024 (RealNet SDAS); cnulab/RealNet", licence="MIT")
class RealNetSDAS(DiffusionSynthesizer):
    """RealNet's strength-controllable diffusion anomaly synthesis (see the module docstring).

    Parameters
    ----------
    strength_range : (float, float)
        Variance inflation ``s`` per sample (RealNet: ``(0.1, 0.2)`` for its 20-step ancestral
        sampler, ``(0.01, 0.03)`` for DDIM).
    opacity_range : (float, float)
        Blend opacity inside the mask (RealNet: ``U(0.5, 1)``).
    num_inference_steps : int or None
        20 (RealNet's ``ddim20`` respacing; capped at the model's training steps); ``None``: every
        training step (1000 for the models trained here, minutes per sample on a CPU).
    Others : see :class:`DiffusionSynthesizer`.

    Examples
    --------
    >>> import pytest, tempfile, torch, defectforge; _ = pytest.importorskip("diffusers")
    >>> from defectforge.generative.models import tiny_unet
    >>> folder = tempfile.mkdtemp(); tiny_unet(16, 3).save(folder)
    >>> synth = defectforge.create("realnet_sdas", model=folder, num_inference_steps=5)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> out = synth(x, seed=0)
    >>> torch.equal(synth.replay(x, out.params).images, out.images)
    True
    """

    def __init__(self, model=None, strength_range=(0.1, 0.2), opacity_range=(0.5, 1.0), scheduler: str = "ddpm",
                 num_inference_steps: int | None = 20, eta: float = 1.0, batch_invariant: bool = True,
                 max_attempts: int = 20, perlin_exponent_range=(0, 6), rotation_range=(-90.0, 90.0),
                 threshold: float = 0.5, anomaly_probability: float = 1.0, device: str | None = None):
        super().__init__(model, scheduler, num_inference_steps, eta, batch_invariant, max_attempts,
                         perlin_exponent_range, rotation_range, threshold, anomaly_probability, device)
        self.strength_range = check_interval("strength_range", strength_range, 0.0, 100.0)
        self.opacity_range = check_interval("opacity_range", opacity_range, 0.0, 1.0)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        return {"perlin": self.perlin.sample(rng), "strength": float(rng.uniform(*self.strength_range)),
                "opacity": float(rng.uniform(*self.opacity_range)), "noise_seed": child_seed(rng)}

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        masks_np = self._perlin_masks(params, rngs, context, h, w)
        masks = torch.from_numpy(masks_np[:, None].astype(np.float32)).to(images.device)
        out = images.clone()
        sel = [i for i in range(b) if masks_np[i].any()]
        if sel:
            sub = [params[i] for i in sel]
            strength = torch.tensor([p["strength"] for p in sub])
            gen = from_model_space(self._sample(sub, images.device, strength=strength), h, w, c)
            idx = torch.tensor(sel, device=images.device)
            x, m = images[idx], masks[idx]
            opacity = torch.tensor([p["opacity"] for p in sub], device=images.device).view(-1, 1, 1, 1)
            out[idx] = torch.where(m > 0, x + opacity * (gen - x), x)
        labels = (masks.flatten(1).amax(1) > 0).long() * self.anomaly_label
        return out, masks, labels


@register_method(
    "masked_diffusion", family="diffusion", level="image",
    description="RePaint/AnomalyDiffusion: generate inside a mask, outside replaced by q(y,t-1) each step; AdaBLDM stages as options; needs model=",
    source="Hu et al., AAAI 2024 (AnomalyDiffusion); Lugmayr et al., CVPR 2022 (RePaint); Jiang et al. 2024 (AdaBLDM)",
    licence="paper (re-implemented; AnomalyDiffusion code MIT)",
    defaults={"scheduler": "ddim", "num_inference_steps": 200, "eta": 1.0})
@register_method(
    "masked_diffusion_adabldm", family="diffusion", level="image",
    description="AdaBLDM's published stages: DDIM 50 steps, eta 0, 26 free, 20 blended in the mask dilated by 2, "
                "the last 4 blended in pixel space; needs model=",
    source="Jiang et al. 2024 (AdaBLDM); GrandpaXun242/AdaBLDM test.py + cldm/ddim_hacked.py",
    licence="paper (re-implemented)",
    defaults={"scheduler": "ddim", "num_inference_steps": 50, "eta": 0.0, "free_steps": 26, "dilated_steps": 20,
              "dilation": 2, "pixel_steps": 4, "adaptive_mask": False})
class MaskedDiffusion(DiffusionSynthesizer):
    """Mask-guided diffusion (see the module docstring).

    Parameters
    ----------
    mask_source : str
        ``"perlin"`` or the name of a registered image-level method whose masks are used.
    crop_context : float or None
        ``None``: the whole image is resized to the model (AnomalyDiffusion). A number: a square of
        ``crop_context`` x the mask's longer bounding-box side (at least ``min_crop`` px) around the
        mask is, for models trained on defect crops.
    min_crop : int
        Smallest crop side in px.
    free_steps, dilated_steps : int
        AdaBLDM's first two stages (0, 0: plain masked diffusion).
    dilation : int
        Dilation of the masks of the ``dilated_steps``, in cells of the sampling grid (model pixels,
        or latent cells for a latent model).
    pixel_steps : int
        The last steps blended in pixel space (AdaBLDM; 0: none).
    adaptive_mask : bool
        AnomalyDiffusion's adaptive mask (default ``True``, as its ``generate_with_mask.py``).
    Others : see :class:`DiffusionSynthesizer`.

    Examples
    --------
    >>> import pytest, tempfile, torch, defectforge; _ = pytest.importorskip("diffusers")
    >>> from defectforge.generative.models import tiny_unet
    >>> folder = tempfile.mkdtemp(); tiny_unet(16, 3).save(folder)
    >>> synth = defectforge.create("masked_diffusion", model=folder, num_inference_steps=4)
    >>> x = torch.rand(2, 3, 32, 32)
    >>> out = synth(x, seed=0)
    >>> bool(((out.images != x).any(1, keepdim=True) & (out.masks == 0)).any())
    False
    """

    def __init__(self, model=None, mask_source: str = "perlin", crop_context: float | None = None,
                 min_crop: int = 32, free_steps: int = 0, dilated_steps: int = 0, dilation: int = 2,
                 scheduler: str = "ddim", num_inference_steps: int | None = 200, eta: float = 1.0,
                 batch_invariant: bool = True, max_attempts: int = 20, perlin_exponent_range=(0, 6),
                 rotation_range=(-90.0, 90.0), threshold: float = 0.5, anomaly_probability: float = 1.0,
                 device: str | None = None, pixel_steps: int = 0, adaptive_mask: bool = True):
        super().__init__(model, scheduler, num_inference_steps, eta, batch_invariant, max_attempts,
                         perlin_exponent_range, rotation_range, threshold, anomaly_probability, device)
        self.pixel_steps = check_range("pixel_steps", pixel_steps, 0, 100_000, integer=True)
        self.adaptive_mask = bool(adaptive_mask)
        if mask_source != "perlin":
            info = method_info(mask_source)  # unknown names raise with suggestions
            if info.level != "image" or info.capabilities["needs_model"] or info.capabilities["needs_bank"]:
                raise ValueError(f"mask_source={mask_source!r}: use 'perlin' or an image-level method that needs "
                                 "no model or bank (e.g. 'defectmaker' for Bezier shapes)")
            from ..core.registry import create

            self._mask_method = create(mask_source, anomaly_probability=1.0)
        self.mask_source = mask_source
        self.crop_context = None if crop_context is None else float(check_range("crop_context", crop_context, 1.0, 100.0))
        self.min_crop = check_range("min_crop", min_crop, 1, 1 << 16, integer=True)
        self.free_steps = check_range("free_steps", free_steps, 0, 100_000, integer=True)
        self.dilated_steps = check_range("dilated_steps", dilated_steps, 0, 100_000, integer=True)
        self.dilation = check_range("dilation", dilation, 0, 1000, integer=True)

    def sample_params(self, rng: np.random.Generator, shape: ImageShape, foreground=None) -> dict[str, Any]:
        p: dict[str, Any] = {}
        if self.mask_source == "perlin":
            p["perlin"] = self.perlin.sample(rng)
        else:
            p["mask_seed"] = child_seed(rng)
        p["noise_seed"] = child_seed(rng)
        return p

    def _source_masks(self, images, params, rngs, context, h, w) -> np.ndarray:
        if self.mask_source == "perlin" or context.shapes is not None:
            return self._perlin_masks(params, rngs, context, h, w)
        masks = np.zeros((len(params), h, w), bool)
        for i, p in enumerate(params):
            fg = None if context.foreground is None else context.foreground[i:i + 1]
            for _ in range(self.max_attempts):
                res = self._mask_method(images[i:i + 1], seed=int(p["mask_seed"]), indices=[0], foreground=fg)
                masks[i] = res.masks[0, 0].cpu().numpy() > 0.5
                if masks[i].any() or rngs is None:
                    break
                p["mask_seed"] = child_seed(rngs[i])
        return masks

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        masks_np = self._source_masks(images, params, rngs, context, h, w)
        masks = torch.from_numpy(masks_np[:, None].astype(np.float32)).to(images.device)
        out = images.clone()
        sel = [i for i in range(b) if masks_np[i].any()]
        if sel:
            s = self.model.size
            boxes = [(0, 0, h, w) if self.crop_context is None else
                     (lambda y, x, side: (y, x, side, side))(*square_crop_box(masks_np[i], self.crop_context, self.min_crop))
                     for i in sel]
            crops = [images[i:i + 1, :, y:y + bh, x:x + bw] for i, (y, x, bh, bw) in zip(sel, boxes)]
            mcrops = [masks[i:i + 1, :, y:y + bh, x:x + bw] for i, (y, x, bh, bw) in zip(sel, boxes)]
            known = torch.cat([to_model_space(cr, s, self.model.channels) for cr in crops])
            # the sampling grid's mask (model pixels, or latent cells) covers every pixel the
            # full-resolution mask touches
            g = self.model.latent_size
            m_s = torch.cat([(F.interpolate(m, size=(g, g), mode="area") > 0).float() for m in mcrops])
            dil = F.max_pool2d(m_s, 2 * self.dilation + 1, 1, self.dilation) if self.dilation else m_s
            pixel_masks = torch.cat([(F.interpolate(m, size=(s, s), mode="area") > 0).float() for m in mcrops])
            gen = self._sample([params[i] for i in sel], images.device, known=known, masks=m_s, dilated_masks=dil,
                               free_steps=self.free_steps, dilated_steps=self.dilated_steps,
                               adaptive_masks=self.adaptive_mask, pixel_steps=self.pixel_steps,
                               pixel_masks=pixel_masks)
            for j, (i, (y, x, bh, bw)) in enumerate(zip(sel, boxes)):
                g = from_model_space(gen[j:j + 1], bh, bw, c)
                region = out[i:i + 1, :, y:y + bh, x:x + bw]
                out[i:i + 1, :, y:y + bh, x:x + bw] = torch.where(mcrops[j] > 0, g, region)
        labels = (masks.flatten(1).amax(1) > 0).long() * self.anomaly_label
        return out, masks, labels
