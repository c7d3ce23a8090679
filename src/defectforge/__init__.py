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
    list_methods,
    method_info,
    register_method,
)
from .control import MaskBank, control, mix  # noqa: E402  (after core: it builds on the registry)

__version__ = "0.1.0"

__all__ = [
    "SynthesisContext", "SynthesisResult", "Synthesizer", "create", "list_methods", "method_info",
    "register_method", "__version__", "control", "mix", "MaskBank",
]
