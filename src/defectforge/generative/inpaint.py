"""``prompt_inpaint``: AnomalyAny's prompt-guided anomaly generation on a normal image, and its
Stable Diffusion inpainting variant ``prompt_inpaint_sdinpaint``.

AnomalyAny (Sun et al., "Unseen Visual Anomaly Generation", CVPR 2025; EPFL-IMOS/AnomalyAny): a
pretrained *text-to-image* Stable Diffusion (SD 1.4) generates an anomaly on a normal image from a
prompt "a {object} with a {defect}", without training; 50 steps, guidance 7.5. Its test-time
normal-sample conditioning (``init_image_guidance_scale`` gamma, 0.3 in the MVTec notebook, 0.25
in the README's example): the normal image's latent is noised to ``t_start = N - int(N * gamma)``
and only the last ``timesteps[t_start:]`` run; with a mask, after every step the latents outside
it are replaced by the normal latent forward-noised (``latents * mask + noised_source * (1 -
mask)``, ``clip_pipeline_attend_and_excite.py``; ``run.py`` passes ``init_image``,
``init_image_guidance_scale`` and ``mask_image`` through ``run_on_prompt_and_masked_image``).

``prompt_inpaint`` follows that path on the user's own text-to-image folder (diffusers
``StableDiffusionPipeline`` layout: ``model_index.json``, ``unet/`` with 4 input channels, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``; loaded with ``local_files_only=True``, nothing is
ever downloaded): ``strength`` is gamma (default 0.3), classifier-free guidance 7.5, DDIM eta 0 (the
pipeline's default ``eta``). Differences: no test-time attention optimisation (Attend-and-Excite
on the anomaly token), no CLIP loss and no prompt-embedding update; the normal latent is the VAE
posterior's mean (AnomalyAny samples it); the outside is noised to the *next* step's ``t`` after
each step (the copy of the pipeline read noises it to the step's own ``t``); the mask comes from
one of the library's mask sources (Perlin by default, any image-level method's masks, or a mask
bank through ``defectforge.control``), as in ``masked_diffusion``, instead of being optional.

``prompt_inpaint_sdinpaint`` is the previous generator, kept as a named variant: a Stable
Diffusion *inpainting* folder (UNet of 9 input channels) fills the mask from pure noise
(``strength=1``), the same prompt; it is a different generator from AnomalyAny's (nothing of the
normal image's content inside the mask conditions it but the inpainting UNet's masked-image input).

Per sample (drawn from the sample's ``(seed, index)`` generator and recorded): the mask (as
``masked_diffusion``), the defect word (uniform over ``defects``), so the prompt, and
``noise_seed``, which seeds the ``torch.Generator`` every noise tensor is drawn from. Each sample
runs alone, so it does not depend on its batch, and replays bit for bit from its params.

The pipeline runs at ``size`` px (default: the UNet's sample size x the VAE's scale factor, 512 for
SD): the image, or with ``crop_context`` a square around the mask, is resized to it (RGB; grey
images repeated), generated and resized back; the final blend is made at the image's resolution
and every pixel outside the mask is the input pixel, exactly (the VAE round trip would otherwise
change the whole image). ``device`` (e.g. ``"cuda"``) runs the pipeline there; by default on the
images' device.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..core.registry import register_method
from ..core.seeding import child_seed
from ..core.types import SynthesisContext
from ..core.validation import check_range
from .data import square_crop_box
from .diffusion import MaskedDiffusion, from_model_space, to_model_space

__all__ = ["PromptInpaintSynthesizer", "PromptBlendSynthesizer", "load_sd_inpaint", "load_sd_text2img", "tiny_sd_inpaint",
           "tiny_sd_text2img", "SD_INPAINT_FILES"]

#: The files a Stable Diffusion inpainting folder must hold (weights: safetensors or .bin).
SD_INPAINT_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                    "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json")
#: The tokenizer's vocabulary: a fast tokenizer's ``tokenizer.json``, or CLIP's ``vocab.json`` + ``merges.txt``.
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
_WEIGHTS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def _require():
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("prompt_inpaint needs diffusers and transformers: pip install 'defectforge[generative]'") from exc


def check_sd_inpaint_folder(path) -> Path:
    """``path`` if it holds every file of a Stable Diffusion inpainting folder; else an error naming the first missing one."""
    return check_sd_folder(path, 9)


def check_sd_folder(path, in_channels: int) -> Path:
    """``path`` if it holds every file of a Stable Diffusion folder whose UNet has ``in_channels``
    inputs (4: text-to-image, 9: inpainting); else an error naming the first missing one."""
    kind = "inpainting" if in_channels == 9 else "text-to-image"
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Stable Diffusion {kind} folder {root} does not exist")
    for rel in SD_INPAINT_FILES:
        if not (root / rel).is_file():
            raise FileNotFoundError(f"the Stable Diffusion {kind} folder is incomplete: {root / rel} does not exist")
    tok = root / "tokenizer"
    if not any(all((tok / f).is_file() for f in files) for files in _TOKENIZER_FILES):
        raise FileNotFoundError(f"the tokenizer's vocabulary is missing: {tok / 'tokenizer.json'} (or vocab.json + "
                                "merges.txt) does not exist")
    for part, stem in _WEIGHTS.items():
        options = [root / part / f"{stem}.safetensors", root / part / f"{stem}.bin"]
        if not any(o.is_file() for o in options):
            raise FileNotFoundError(f"the {part}'s weights are missing: {options[0]} does not exist")
    config = json.loads((root / "unet" / "config.json").read_text())
    got = int(config.get("in_channels", 0))
    if got != in_channels:
        if in_channels == 9:
            raise ValueError(f"{root / 'unet' / 'config.json'}: in_channels is {got}, an inpainting UNet has 9 "
                             "(latents 4 + mask 1 + masked image 4); pass an inpainting checkpoint, or use "
                             "prompt_inpaint (AnomalyAny's text-to-image path) with a text-to-image one")
        raise ValueError(f"{root / 'unet' / 'config.json'}: in_channels is {got}, a text-to-image UNet has "
                         f"{in_channels}; pass a text-to-image checkpoint (SD 1.4 / 1.5), or use "
                         "prompt_inpaint_sdinpaint with an inpainting one")
    return root


_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def load_sd_inpaint(path):
    """A diffusers ``StableDiffusionInpaintPipeline`` from a local folder (``local_files_only=True``, cached)."""
    _require()
    from diffusers import StableDiffusionInpaintPipeline

    root = check_sd_inpaint_folder(path)
    stamp = max((root / rel).stat().st_mtime_ns for rel in SD_INPAINT_FILES)
    key = (str(root.resolve()), stamp)
    with _CACHE_LOCK:
        if key not in _CACHE:
            pipe = StableDiffusionInpaintPipeline.from_pretrained(
                root, local_files_only=True, safety_checker=None, requires_safety_checker=False, low_cpu_mem_usage=False)
            pipe.set_progress_bar_config(disable=True)
            _CACHE[key] = pipe
        return _CACHE[key]


def load_sd_text2img(path):
    """A diffusers ``StableDiffusionPipeline`` from a local folder (``local_files_only=True``, cached)."""
    _require()
    from diffusers import StableDiffusionPipeline

    root = check_sd_folder(path, 4)
    stamp = max((root / rel).stat().st_mtime_ns for rel in SD_INPAINT_FILES)
    key = (str(root.resolve()), stamp, "text2img")
    with _CACHE_LOCK:
        if key not in _CACHE:
            pipe = StableDiffusionPipeline.from_pretrained(
                root, local_files_only=True, safety_checker=None, requires_safety_checker=False, low_cpu_mem_usage=False)
            pipe.set_progress_bar_config(disable=True)
            _CACHE[key] = pipe
        return _CACHE[key]


def tiny_sd_text2img(folder, seed: int = 0):
    """Save a tiny random Stable Diffusion text-to-image pipeline (16 px, UNet of 4 input channels) to
    ``folder``, as :func:`tiny_sd_inpaint` (for tests; no download)."""
    return tiny_sd_inpaint(folder, seed, in_channels=4)


def tiny_sd_inpaint(folder, seed: int = 0, in_channels: int = 9):
    """Save a tiny random Stable Diffusion inpainting pipeline (16 px) to ``folder`` (for tests; no download).

    UNet2DConditionModel with 9 input channels, a two-level AutoencoderKL (scale factor 2), a
    2-layer CLIPTextModel and a CLIPTokenizer of a tiny vocabulary written to ``folder``.

    Examples
    --------
    >>> import pytest, tempfile; _ = pytest.importorskip("transformers"); _ = pytest.importorskip("diffusers")
    >>> folder = tempfile.mkdtemp(); _ = tiny_sd_inpaint(folder)
    >>> sorted(p.name for p in Path(folder).iterdir())[:3]
    ['model_index.json', 'scheduler', 'text_encoder']
    """
    _require()
    from diffusers import (AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    words = ["a", "with", "surface", "object", "scratch", "crack", "hole", "stain", "dent", "tile"]
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters] + [w + "</w>" for w in words]:
        vocab.setdefault(token, len(vocab))
    merges = ["#version: 0.2"]
    for w in words:  # merge each word letter by letter into its whole-word token
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    tok_dir = folder / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                            layers_per_block=1, norm_num_groups=8, sample_size=16)
    finally:
        torch.random.set_rng_state(state)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe_cls = StableDiffusionInpaintPipeline if in_channels == 9 else StableDiffusionPipeline
    pipe = pipe_cls(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    import shutil

    shutil.rmtree(tok_dir)
    return folder


@register_method(
    "prompt_inpaint_sdinpaint", family="diffusion", level="image",
    description="Stable Diffusion inpainting (local folder) fills a mask from pure noise, prompt 'a {object} with a "
                "{defect}' (the inpainting variant of prompt_inpaint); needs model=",
    source="Sun et al., CVPR 2025 (AnomalyAny)'s prompt, on diffusers' StableDiffusionInpaintPipeline",
    licence="paper (no reference code used); the weights' own licence applies",
    defaults={"scheduler": "ddim", "num_inference_steps": 50, "eta": 0.0})
class PromptInpaintSynthesizer(MaskedDiffusion):
    """Prompt-guided inpainting inside a mask (``prompt_inpaint_sdinpaint``; module docstring).

    Parameters
    ----------
    model : path
        A Stable Diffusion inpainting folder (diffusers layout; loaded with ``local_files_only=True``).
    object_name : str
        ``{object}`` of the prompt (default ``"object"``; e.g. ``"magnetic tile"``).
    defects : list of str or str
        ``{defect}`` words, one drawn per sample (comma-separated string allowed). Default: a generic
        list chosen here (``scratch, crack, hole, stain, dent``).
    prompt_template : str
        AnomalyAny's ``"a {object} with a {defect}"``.
    guidance_scale : float
        Classifier-free guidance (AnomalyAny: 7.5).
    size : int or None
        Pipeline resolution in px (default: the UNet's sample size x the VAE's scale factor).
    device : str or None
        Where the pipeline runs (``"cuda"``); default the images' device.
    scheduler, num_inference_steps, eta
        DDIM (default) or DDPM, 50 steps (AnomalyAny), DDIM's eta 0 (diffusers' default).
    mask_source, crop_context, min_crop, max_attempts, perlin_exponent_range, rotation_range, threshold
        As ``masked_diffusion``.

    Examples
    --------
    >>> import pytest, tempfile, torch, defectforge
    >>> _ = pytest.importorskip("transformers"); _ = pytest.importorskip("diffusers")
    >>> from defectforge.generative.inpaint import tiny_sd_inpaint
    >>> folder = tempfile.mkdtemp(); _ = tiny_sd_inpaint(folder)
    >>> synth = defectforge.create("prompt_inpaint_sdinpaint", model=folder, num_inference_steps=2, object_name="tile")
    >>> x = torch.rand(1, 3, 24, 24)
    >>> out = synth(x, seed=0)
    >>> out.params[0]["prompt"].startswith("a tile with a "), bool(((out.images != x) & (out.masks == 0)).any())
    (True, False)
    """

    model_kind = "sd_inpaint"
    requires = ("diffusers", "transformers")

    def __init__(self, model=None, object_name: str = "object", defects=("scratch", "crack", "hole", "stain", "dent"),
                 prompt_template: str = "a {object} with a {defect}", guidance_scale: float = 7.5,
                 size: int | None = None, device: str | None = None, mask_source: str = "perlin",
                 crop_context: float | None = None, min_crop: int = 32, scheduler: str = "ddim",
                 num_inference_steps: int | None = 50, eta: float = 0.0, max_attempts: int = 20,
                 perlin_exponent_range=(0, 6), rotation_range=(-90.0, 90.0), threshold: float = 0.5,
                 anomaly_probability: float = 1.0):
        super().__init__(model, mask_source, crop_context, min_crop, 0, 0, 0, scheduler, num_inference_steps, eta,
                         True, max_attempts, perlin_exponent_range, rotation_range, threshold, anomaly_probability,
                         device)
        words = [d.strip() for d in (defects.split(",") if isinstance(defects, str) else defects)]
        if not words or not all(words):
            raise ValueError(f"defects={defects!r}: give at least one defect word, e.g. ['scratch', 'crack']")
        self.defects = words
        self.object_name = str(object_name)
        if "{defect}" not in prompt_template:
            raise ValueError(f"prompt_template={prompt_template!r} must contain {{defect}} (and may contain {{object}})")
        self.prompt_template = str(prompt_template)
        self.guidance_scale = float(check_range("guidance_scale", guidance_scale, 0.0, 100.0))
        self.size = None if size is None else check_range("size", size, 8, 4096, integer=True)

    def _load_model(self, model):
        if model is None or not isinstance(model, (str, os.PathLike)):
            raise ValueError("prompt_inpaint_sdinpaint needs model=PATH: a local Stable Diffusion inpainting folder "
                             "(diffusers layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
        return load_sd_inpaint(model)

    def sample_params(self, rng: np.random.Generator, shape, foreground=None) -> dict[str, Any]:
        p = super().sample_params(rng, shape, foreground)
        defect = self.defects[int(rng.integers(len(self.defects)))]
        p["prompt"] = self.prompt_template.format(object=self.object_name, defect=defect)
        p.setdefault("noise_seed", child_seed(rng))
        return p

    def _pipeline_size(self) -> int:
        if self.size is not None:
            return self.size
        pipe = self.model
        s = pipe.unet.config.sample_size
        return int(s[0] if isinstance(s, (tuple, list)) else s) * int(pipe.vae_scale_factor)

    def apply(self, images: torch.Tensor, params: list[dict], context: SynthesisContext, rngs):
        b, c, h, w = images.shape
        masks_np = self._source_masks(images, params, rngs, context, h, w)
        masks = torch.from_numpy(masks_np[:, None].astype(np.float32)).to(images.device)
        out = images.clone()
        s = self._pipeline_size()
        device = self.device or images.device
        self.model.to(device)
        for i in range(b):
            if not masks_np[i].any():
                continue
            y, x, bh, bw = (0, 0, h, w) if self.crop_context is None else \
                (lambda y0, x0, side: (y0, x0, side, side))(*square_crop_box(masks_np[i], self.crop_context, self.min_crop))
            crop = images[i:i + 1, :, y:y + bh, x:x + bw].float()
            mcrop = masks[i:i + 1, :, y:y + bh, x:x + bw]
            g = torch.Generator().manual_seed(int(params[i]["noise_seed"]))
            gen = self._generate_crop(to_model_space(crop, s, 3), mcrop, params[i]["prompt"], g, device)
            gen = from_model_space(gen.float().to(images.device), bh, bw, c)
            region = out[i:i + 1, :, y:y + bh, x:x + bw]
            out[i:i + 1, :, y:y + bh, x:x + bw] = torch.where(mcrop > 0, gen.to(out.dtype), region)
        labels = (masks.flatten(1).amax(1) > 0).long() * self.anomaly_label
        return out, masks, labels

    def _generate_crop(self, known: torch.Tensor, mask: torch.Tensor, prompt: str, g: torch.Generator, device):
        """One sample at the pipeline's size: ``known`` ``(1, 3, s, s)`` in ``[-1, 1]``, its mask at the
        crop's resolution; returns ``(1, 3, s, s)`` in ``[-1, 1]``. Here: the inpainting pipeline."""
        s = known.shape[-1]
        pipe = self.model
        pipe.scheduler = self.model_scheduler_class().from_config(pipe.scheduler.config)
        m_s = (F.interpolate(mask, size=(s, s), mode="area") > 0).float()
        result = pipe(prompt=prompt, image=((known + 1.0) * 0.5).to(device), mask_image=m_s.to(device), height=s,
                      width=s, strength=1.0, num_inference_steps=self.num_inference_steps or 50,
                      guidance_scale=self.guidance_scale, eta=self.eta, generator=g, output_type="pt").images
        return result * 2.0 - 1.0

    def model_scheduler_class(self):
        from diffusers import DDIMScheduler, DDPMScheduler

        return {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[self.scheduler]


@register_method(
    "prompt_inpaint", family="diffusion", level="image",
    description="AnomalyAny: a text-to-image Stable Diffusion (local folder) starts from the normal image noised to "
                "N - int(N * strength) and denoises the last strength of the schedule from the prompt 'a {object} "
                "with a {defect}', latents outside the mask replaced by the noised normal ones each step; needs model=",
    source="Sun et al., CVPR 2025 (AnomalyAny); EPFL-IMOS/AnomalyAny (normal-sample conditioning, masked blending)",
    licence="paper (re-implemented); the weights' own licence applies",
    defaults={"scheduler": "ddim", "num_inference_steps": 50, "eta": 0.0, "strength": 0.3})
class PromptBlendSynthesizer(PromptInpaintSynthesizer):
    """AnomalyAny's generation path (``prompt_inpaint``; module docstring).

    Parameters
    ----------
    model : path
        A Stable Diffusion *text-to-image* folder (``StableDiffusionPipeline`` layout, UNet of 4 input
        channels; AnomalyAny: SD 1.4).
    strength : float
        AnomalyAny's ``init_image_guidance_scale`` gamma: the share of the schedule that runs,
        starting from the normal image's latent noised to step ``t_start = N - int(N * gamma)``
        (0.3, the MVTec notebook; the README example 0.25; 1.0 starts from noise).
    Others : see :class:`PromptInpaintSynthesizer` (guidance 7.5, 50 steps, DDIM eta 0).

    Examples
    --------
    >>> import pytest, tempfile, torch, defectforge
    >>> _ = pytest.importorskip("transformers"); _ = pytest.importorskip("diffusers")
    >>> from defectforge.generative.inpaint import tiny_sd_text2img
    >>> folder = tempfile.mkdtemp(); _ = tiny_sd_text2img(folder)
    >>> synth = defectforge.create("prompt_inpaint", model=folder, num_inference_steps=10, object_name="tile")
    >>> x = torch.rand(1, 3, 24, 24)
    >>> out = synth(x, seed=0)
    >>> out.params[0]["prompt"].startswith("a tile with a "), bool(((out.images != x) & (out.masks == 0)).any())
    (True, False)
    """

    model_kind = "sd_text2img"

    def __init__(self, model=None, strength: float = 0.3, **kwargs):
        super().__init__(model, **kwargs)
        self.strength = float(check_range("strength", strength, 0.0, 1.0, low_inclusive=False))
        if int((self.num_inference_steps or 50) * self.strength) < 1:
            raise ValueError(f"strength={strength} runs no step of {self.num_inference_steps or 50}: "
                             "int(num_inference_steps * strength) must be >= 1")

    def _load_model(self, model):
        if model is None or not isinstance(model, (str, os.PathLike)):
            raise ValueError("prompt_inpaint needs model=PATH: a local Stable Diffusion text-to-image folder "
                             "(diffusers layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/); "
                             "prompt_inpaint_sdinpaint takes an inpainting one")
        return load_sd_text2img(model)

    def network_passes(self) -> int:
        """Denoiser passes one anomalous sample costs: the last ``int(N * strength)`` steps run."""
        n = self.num_inference_steps or 50
        return n - self.start_index()

    def start_index(self) -> int:
        """``t_start = N - int(N * strength)``: the first of the ``N`` scheduled steps that runs."""
        n = self.num_inference_steps or 50
        return n - int(n * self.strength)

    @torch.no_grad()
    def _generate(self, known: torch.Tensor, m_lat: torch.Tensor, prompt: str, g: torch.Generator, device,
                  timesteps_out: list | None = None) -> torch.Tensor:
        """One sample: ``known`` ``(1, 3, s, s)`` in ``[-1, 1]``, latent mask ``m_lat``; returns pixels in ``[-1, 1]``."""
        pipe = self.model
        vae, unet = pipe.vae, pipe.unet
        scale = float(vae.config.scaling_factor)
        z0 = vae.encode(known.to(device)).latent_dist.mean * scale
        cfg = self.guidance_scale > 1.0
        pos, neg = pipe.encode_prompt(prompt, device, 1, cfg)
        context = torch.cat([neg, pos]) if cfg else pos
        sched = self.model_scheduler_class().from_config(pipe.scheduler.config)
        sched.set_timesteps(self.num_inference_steps or 50, device="cpu")
        timesteps = [int(t) for t in sched.timesteps][self.start_index():]
        if timesteps_out is not None:
            timesteps_out.extend(timesteps)
        shape = tuple(z0.shape)
        noise = torch.randn(shape, generator=g).to(device)
        lat = sched.add_noise(z0, noise, torch.tensor([timesteps[0]]))  # test-time normal-sample conditioning
        m = m_lat.to(device)
        for k, t in enumerate(timesteps):
            inp = sched.scale_model_input(torch.cat([lat, lat]) if cfg else lat, t)
            eps = unet(inp, t, encoder_hidden_states=context).sample
            if cfg:
                uncond, text = eps.chunk(2)
                eps = uncond + self.guidance_scale * (text - uncond)
            if self.scheduler == "ddim":
                z = torch.randn(shape, generator=g).to(device) if self.eta > 0 else None
                lat = sched.step(eps, t, lat, eta=self.eta, variance_noise=z).prev_sample
            else:
                lat = sched.step(eps, t, lat, generator=g).prev_sample
            if k + 1 < len(timesteps):  # the outside follows the normal latent, noised to the next step
                q = sched.add_noise(z0, torch.randn(shape, generator=g).to(device), torch.tensor([timesteps[k + 1]]))
            else:
                q = z0
            lat = m * lat + (1.0 - m) * q
        return vae.decode(lat / scale).sample.clamp(-1.0, 1.0)

    def _generate_crop(self, known, mask, prompt, g, device):
        s = known.shape[-1] // int(self.model.vae_scale_factor)
        # a latent cell is generated when any of its pixels is inside the mask
        return self._generate(known, (F.interpolate(mask, size=(s, s), mode="area") > 0).float(), prompt, g, device)
