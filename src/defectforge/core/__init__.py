"""Types, registry, seeding and validation shared by every method."""

from .base import ApplyResult, ImageShape, Synthesizer, apply_subset
from .dtype import as_float_images, restore_dtype, to_uint8
from .registry import (FAMILIES, LEVELS, MethodInfo, create, from_config, list_methods, method_info,
                       register_method)
from .seeding import child_seed, sample_rng, torch_generator
from .types import SynthesisContext, SynthesisResult, to_jsonable

__all__ = [
    "FAMILIES", "LEVELS", "ApplyResult", "ImageShape", "apply_subset", "from_config", "MethodInfo", "SynthesisContext", "SynthesisResult",
    "Synthesizer", "as_float_images", "child_seed", "create", "list_methods", "method_info",
    "register_method", "restore_dtype", "to_uint8", "sample_rng", "to_jsonable", "torch_generator",
]
