"""defectforge: industrial anomaly (defect) synthesis, seeded, batched, with masks.

>>> import torch, defectforge
>>> synth = defectforge.create("draem", anomaly_probability=1.0)
>>> result = synth(torch.rand(4, 3, 128, 128), seed=0)
>>> result.masks.shape
torch.Size([4, 1, 128, 128])
"""

from .core import (
    SynthesisContext,
    SynthesisResult,
    Synthesizer,
    create,
    from_config,
    list_methods,
    method_info,
    register_method,
)
# Importing the method packages registers their methods (the registry itself imports nothing).
from . import features, generative, realdefect, synthesizers  # noqa: E402,F401
from .sources.mask_bank import MaskBank  # noqa: E402
from .synthesizers.compose import control, mix, recipe  # noqa: E402
from .pipelines.stream import AnomalyStream, stream  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "SynthesisContext", "SynthesisResult", "Synthesizer", "create", "list_methods", "method_info",
    "register_method", "from_config", "__version__", "control", "mix", "recipe", "MaskBank", "stream", "AnomalyStream",
]
