"""Generative synthesis: a diffusion sampler core (RealNet SDAS, masked / RePaint-style diffusion with
AdaBLDM's stages) on diffusers' schedulers, for pixel-space and latent diffusion models; small
generators (DDPM, defect GAN) trained on the user's images with ``defectforge train``; and Stable
Diffusion inpainting from a local folder (``prompt_inpaint``).

diffusers and safetensors are an optional extra (``pip install 'defectforge[generative]'``); every
module here imports without them (they are imported inside the functions that need them).
"""

from . import diffusion, gan_transplant, inpaint  # noqa: E402,F401  (registers realnet_sdas, masked_diffusion,
#                                                  gan_transplant, prompt_inpaint)
