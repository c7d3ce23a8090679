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
- AdaBLDM's three stages (Jiang et al. 2024, pixel-space version): the first ``free_steps`` steps
  are not blended (free diffusion), the next ``dilated_steps`` blend with ``dilated_masks``
  (AdaBLDM edits in the dilated mask in latent space first), the rest with ``masks``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["diffusion_sample", "per_sample_noise", "SCHEDULERS"]

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


@torch.no_grad()
def diffusion_sample(model, generators: Sequence[torch.Generator], *, scheduler: str = "ddpm",
                     num_inference_steps: int | None = None, eta: float = 1.0,
                     strength: torch.Tensor | None = None, known: torch.Tensor | None = None,
                     masks: torch.Tensor | None = None, dilated_masks: torch.Tensor | None = None,
                     free_steps: int = 0, dilated_steps: int = 0, device=None, trace: list | None = None,
                     batch_invariant: bool = True) -> torch.Tensor:
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
        Denoising steps (default: the training steps, 1000 for DDPM as RealNet samples).
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
    steps = int(num_inference_steps or sched.config.num_train_timesteps)
    sched.set_timesteps(steps, device="cpu")
    timesteps = [int(t) for t in sched.timesteps]
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
            x_prev = sched.step(eps, t, x, eta=float(eta), variance_noise=z).prev_sample
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
        if known is not None and k >= free_steps:
            m = dilated_masks if k < free_steps + dilated_steps else masks
            if k + 1 < len(timesteps):
                noise = per_sample_noise(generators, (c, s, s), device)
                q = sched.add_noise(known, noise, torch.tensor([timesteps[k + 1]] * b))
            else:
                q = known
            x_prev = m * x_prev + (1.0 - m) * q
        x = x_prev
    return x if model.latent else x.clamp(-1.0, 1.0)
