"""Feature-level anomaly synthesis: the survey's distribution-hypothesis family.

Importing the package registers its methods (level ``feature``):

- ``simplenet``, ``simplenet_code``: Gaussian noise on every adapted feature (SimpleNet).
- ``supersimplenet``, ``supersimplenet_visa``: Perlin-masked feature noise (SuperSimpleNet).
- ``uniad_jitter``: norm-scaled feature jitter (UniAD).
- ``glass_gas``: gradient ascent on a discriminator's loss with projection (GLASS-GAS).
- ``pbas``: push away from the nearest normal centre (PBAS).
- ``dsr`` (level ``latent``): code replacement in a two-level VQ-VAE's latents (DSR).

See :mod:`defectforge.features.base` for the rules every method follows.
"""

from . import boundary, dsr, noise  # noqa: F401  (registers the methods)
from .base import FeatureContext, FeatureShape, FeatureSynthesisResult, FeatureSynthesizer, gaussian_fields
from .boundary import CentreBank, GlassGAS, PBASPush, build_centre_bank, nearest_centres
from .dsr import DSRCodeReplacement, candidate_ranks, replace_codes
from .noise import SimpleNetNoise, SuperSimpleNetNoise, UniADJitter

__all__ = ["FeatureSynthesizer", "FeatureSynthesisResult", "FeatureContext", "FeatureShape", "gaussian_fields",
           "SimpleNetNoise", "SuperSimpleNetNoise", "UniADJitter", "GlassGAS", "PBASPush", "CentreBank",
           "build_centre_bank", "nearest_centres", "DSRCodeReplacement", "candidate_ranks", "replace_codes"]
