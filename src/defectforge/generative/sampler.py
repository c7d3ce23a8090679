"""The diffusion sampler core: DDPM / DDIM ancestral sampling with per-sample noise, variance
inflation (RealNet's SDAS) and masked blending (RePaint / AnomalyDiffusion / AdaBLDM).

One loop, :func:`diffusion_sample`, built on diffusers' ``DDPMScheduler.step`` and
``DDIMScheduler.step`` (the schedule, the posterior mean and variance are diffusers'):

- every random number of sample ``i`` comes from its own ``torch.Generator`` (``generators[i]``,
  seeded by the synthesizer from ``(seed, index)``), drawn in a fixed order (the start noise, then
  per step the step's noise and the blend's noise), so a sample does not depend on the batch it
  is made in;
- ``strength`` ``s`` (per sample) inflates the step noise: ``x_{t-1} = mu + sqrt(1 + s) * sigma_t * z``
  (RealNet, Zhang et al., CVPR 2024, cnulab/RealNet, MIT: "strength-controllable diffusion anomaly
  synthesis"). With DDIM the inflated noise goes in through ``variance_noise``; with DDPM the step's
  own noise term ``x' - mu`` is scaled, ``mu`` being the posterior mean of Ho et al. eq. 7 computed
  from the step's predicted ``x_0`` exactly as diffusers does. ``s = 0`` adds exactly nothing, so it
  reproduces the plain sampler bit for bit;
- ``known``, ``masks``: at every step ``x_{t-1} <- m * x'_{t-1} + (1 - m) * q(y, t-1)`` with ``y``
  the known (normal) image and ``q`` the forward process (``scheduler.add_noise``), so generated
  content lives only inside ``m`` (RePaint, Lugmayr et al. CVPR 2022, without its resampling
  jumps; AnomalyDiffusion, Hu et al. AAAI 2024). After the last step ``q(y, -1) = y``.
- AdaBLDM's stages (Jiang et al. 2024; GrandpaXun242/AdaBLDM ``cldm/ddim_hacked.py``,
  ``ddim_sampling_with_pixel_latent_blend``): the first ``free_steps`` steps are not blended (free
  diffusion), the next ``dilated_steps`` blend with ``dilated_masks`` (the latent mask dilated),
  the rest with ``masks``; with ``pixel_blend`` the last ``pixel_steps`` of them blend in pixel
  space instead: the step's predicted ``x_0`` is decoded, the normal image pasted outside the
  mask, the result encoded again and forward-noised (``pixel_blend(pred_x0) -> z_0``);
- ``adaptive_masks``: AnomalyDiffusion's adaptive mask (sjtuplayer/anomalydiffusion
  ``ldm/models/diffusion/ddim.py``, ``ddim_sampling``, on by default in ``generate_with_mask.py``):
  the blending mask is dilated by ``m(t) = (t + 100) * k // 1000`` cells (``Dilation2d(m)``, a
  ``(2m+1)``-square maximum), ``k = 16`` for 50 steps and 8 otherwise, on AnomalyDiffusion's
  32-cell latent grid; here ``m`` is scaled by ``grid / 32`` so it covers the same share of any
  grid. The dilation shrinks as ``t`` falls, so early steps generate around the mask and the
  last ones inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["diffusion_sample", "per_sample_noise", "adaptive_radius", "SCHEDULERS"]

#: The samplers: diffusers' DDPM (ancestral, Ho et al. 2020) and DDIM (Song et al. 2021, with ``eta``).
SCHEDULERS = ("ddpm", "ddim")


def per_sample_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...], device) -> torch.Tensor:
    """Standard normal noise ``(B, *shape)``, row ``i`` drawn from ``generators[i]`` (CPU generators).

    The same convention as diffusers' ``randn_tensor`` with a list of generators, so a row's
    numbers are the same whatever the batch.
    """
    rows = [torch.randn((1, *shape), generator=g, dtype=torch.float32) for g in generators]
    return torch.cat(rows, 0).to(device)


def _ddpm_mean(scheduler, t, x, x0):
    """Posterior mean of Ho et al. eq. 7, in the order of operations of ``DDPMScheduler.step``."""
    prev_t = scheduler.previous_timestep(t)
    alpha_prod_t = scheduler.alphas_cumprod[t]
    alpha_prod_t_prev = scheduler.alphas_cumprod[prev_t] if prev_t >= 0 else scheduler.one
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t
    c0 = (alpha_prod_t_prev ** 0.5 * current_beta_t) / beta_prod_t
    c1 = current_alpha_t ** 0.5 * beta_prod_t_prev / beta_prod_t
    return c0 * x0 + c1 * x


def adaptive_radius(t: int, steps: int, grid: int) -> int:
    """AnomalyDiffusion's adaptive-mask dilation in cells at timestep ``t`` (module docstring):
    ``(t + 100) * k // 1000`` on a 32-cell grid, ``k`` 16 for 50 sampling steps, else 8; scaled
    to a ``grid``-cell grid.

    Examples
    --------
    >>> [adaptive_radius(t, 200, 32) for t in (999, 500, 0)], adaptive_radius(999, 50, 32), adaptive_radius(999, 200, 16)
    ([8, 4, 0], 17, 4)
    """
    k = 16 if steps == 50 else 8
    return int((int(t) + 100) * k * int(grid) // (1000 * 32))


def _dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(masks, 2 * radius + 1, 1, radius) if radius > 0 else masks


@torch.no_grad()
def diffusion_sample(model, generators: Sequence[torch.Generator], *, scheduler: str = "ddpm",
                     num_inference_steps: int | None = None, eta: float = 1.0,
                     strength: torch.Tensor | None = None, known: torch.Tensor | None = None,
                     masks: torch.Tensor | None = None, dilated_masks: torch.Tensor | None = None,
                     free_steps: int = 0, dilated_steps: int = 0, device=None, trace: list | None = None,
                     batch_invariant: bool = True, adaptive_masks: bool = False, pixel_steps: int = 0,
                     pixel_blend=None, timesteps_out: list | None = None, stages_out: list | None = None
                     ) -> torch.Tensor:
    """Sample a batch from ``model`` (a :class:`~defectforge.generative.models.DiffusionModel`).

    Parameters
    ----------
    model : DiffusionModel
        The denoiser and its training schedule. For a latent diffusion model this samples (and
        blends) latents: ``known`` and ``masks`` are on the latent grid, and the result is latents
        (:meth:`~defectforge.generative.models.DiffusionModel.decode` makes images of them).
    generators : sequence of torch.Generator
        One CPU generator per sample; the batch size is ``len(generators)``.
    scheduler : {"ddpm", "ddim"}
        diffusers' ``DDPMScheduler`` or ``DDIMScheduler`` with the model's schedule.
    num_inference_steps : int, optional
        Denoising steps (default: the training steps; at most the training steps). With DDPM,
        ``k`` steps of a ``T``-step model are the respaced ancestral sampler of guided-diffusion's
        ``space_timesteps(T, "ddimk")`` (timesteps ``0, T/k, ...``, each step's beta and posterior
        variance recomputed from the kept cumulative alphas), as diffusers' ``DDPMScheduler``
        computes them.
    eta : float
        DDIM's noise scale (1.0 = DDPM-like ancestral steps, as AnomalyDiffusion; 0 is deterministic,
        where a strength has nothing to inflate). Ignored by DDPM.
    strength : torch.Tensor, optional
        ``(B,)`` variance inflation ``s >= 0`` per sample (SDAS); ``None`` or 0 = plain sampling.
    known, masks : torch.Tensor, optional
        ``(B, C, S, S)`` known images in ``[-1, 1]`` and ``(B, 1, S, S)`` masks (1 = generate); when
        given, the outside of the mask follows ``q(known, t-1)`` at every step.
    dilated_masks : torch.Tensor, optional
        Masks used during the ``dilated_steps`` steps after the ``free_steps`` (AdaBLDM).
    free_steps, dilated_steps : int
        AdaBLDM's first two stages (see the module docstring).
    trace : list, optional
        When a list, ``(t, mean, x_{t-1})`` of every step is appended (for tests of the inflation).
    batch_invariant : bool
        Run the denoiser one sample at a time (default), so a sample is bit-identical in any batch
        (batched convolutions round differently with the batch size); ``False`` batches the calls
        (faster on a GPU; samples then agree across batches to float rounding only).
    adaptive_masks : bool
        Dilate the blending mask by :func:`adaptive_radius` at every step (AnomalyDiffusion).
    pixel_steps, pixel_blend : int, callable
        The last ``pixel_steps`` blended steps replace ``x_{t-1}`` by ``q(pixel_blend(x_0), t-1)``,
        ``x_0`` the step's prediction (AdaBLDM's pixel stage; module docstring).
    timesteps_out, stages_out : list, optional
        When lists, the timesteps run, and per step ``(stage, mask)`` with stage ``"free"``,
        ``"dilated"``, ``"exact"`` or ``"pixel"`` and the blending mask used (``None`` when
        free or in pixel space), are appended (for tests of the schedule and the stages).

    Returns
    -------
    torch.Tensor
        ``(B, C, S, S)`` samples in ``[-1, 1]`` (clamped; latent models: unclamped latents).
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {scheduler!r}")
    device = torch.device(device) if device is not None else next(model.unet.parameters()).device
    b, c, s = len(generators), model.latent_channels, model.latent_size
    sched = model.make_scheduler(scheduler)
    steps = min(int(num_inference_steps or sched.config.num_train_timesteps), int(sched.config.num_train_timesteps))
    sched.set_timesteps(steps, device="cpu")
    timesteps = [int(t) for t in sched.timesteps]
    if timesteps_out is not None:
        timesteps_out.extend(timesteps)
    if strength is not None:
        strength = strength.to(device, torch.float32).reshape(b, 1, 1, 1)
        if bool((strength < 0).any()):
            raise ValueError("strength must be >= 0")
        inflation = torch.sqrt(1.0 + strength)
    if known is not None:
        known = known.to(device, torch.float32)
        masks = masks.to(device, torch.float32)
        dilated_masks = masks if dilated_masks is None else dilated_masks.to(device, torch.float32)
    x = per_sample_noise(generators, (c, s, s), device) * sched.init_noise_sigma
    for k, t in enumerate(timesteps):
        if batch_invariant and b > 1:
            eps = torch.cat([model.unet(x[i:i + 1], t).sample for i in range(b)], 0)
        else:
            eps = model.unet(x, t).sample
        if scheduler == "ddim":
            z = per_sample_noise(generators, (c, s, s), device)
            if strength is not None:
                z = z * inflation
            out = sched.step(eps, t, x, eta=float(eta), variance_noise=z)
            x_prev = out.prev_sample
            if trace is not None:  # the step without its noise term
                trace.append((t, sched.step(eps, t, x, eta=float(eta), variance_noise=torch.zeros_like(z)).prev_sample,
                              x_prev))
        else:
            out = sched.step(eps, t, x, generator=list(generators))
            x_prev = out.prev_sample
            if strength is not None or trace is not None:
                mean = _ddpm_mean(sched, t, x, out.pred_original_sample)
                if strength is not None:  # mu + sqrt(1+s)*sigma*z, adding exactly 0 when s = 0
                    x_prev = x_prev + (inflation - 1.0) * (x_prev - mean)
                if trace is not None:
                    trace.append((t, mean, x_prev))
        if known is not None and k < free_steps and stages_out is not None:
            stages_out.append(("free", None))
        if known is not None and k >= free_steps:
            m = dilated_masks if k < free_steps + dilated_steps else masks
            last = k + 1 == len(timesteps)
            if adaptive_masks and not last:
                m = _dilate(m, adaptive_radius(timesteps[k + 1], len(timesteps), s))
            pixel = pixel_blend is not None and k >= len(timesteps) - pixel_steps
            noise = None if last else per_sample_noise(generators, (c, s, s), device)
            if stages_out is not None:
                stages_out.append(("pixel", None) if pixel else
                                  ("dilated" if k < free_steps + dilated_steps else "exact", m))
            if pixel:  # AdaBLDM: the prediction pasted into the normal image in pixels, then re-noised
                z0 = pixel_blend(out.pred_original_sample)
                x_prev = z0 if last else sched.add_noise(z0, noise, torch.tensor([timesteps[k + 1]] * b))
            else:
                q = known if last else sched.add_noise(known, noise, torch.tensor([timesteps[k + 1]] * b))
                x_prev = m * x_prev + (1.0 - m) * q
        x = x_prev
    return x if model.latent else x.clamp(-1.0, 1.0)
