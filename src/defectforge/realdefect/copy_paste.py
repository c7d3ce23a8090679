"""Copy&Paste (Crop&Paste): a real defect's pixels under its mask, hard-pasted onto a normal image.

The baseline of the few-shot generative papers (DFMGAN, Duan et al., AAAI 2023; AnomalyDiffusion,
Hu et al., AAAI 2024; both report "Crop&Paste" on MVTec-AD with one third of each type's real
anomalies given to the generator, and describe Crop&Paste as the defect's pixels under its mask
pasted onto a normal image, with a hard edge). No reference code
is published for it; everything here follows that description.

Per sample: a defect type (uniform over the bank's types, or ``defect_types``), an entry of that
type (uniform), a horizontal flip (p = 0.5), a rotation by 0, 90, 180 or 270 degrees (uniform)
and a scale ``U(scale_range)`` of the defect's natural size (its size relative to its source
image; ``(0.75, 1.25)``, chosen here: the papers give no range), a centre on a foreground pixel.
The crop is warped (bilinear) and its component's pixels replace the target's: no colour
change, no blending. The mask is the pasted pixels that differ from the target.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..core.registry import register_method
from ._common import RealDefectSynthesizer, differs, to_target_channels, warp_entry

__all__ = ["CopyPasteSynthesizer"]


class CopyPasteSynthesizer(RealDefectSynthesizer):
    """Copy&Paste of bank defects (see the module docstring; parameters in :class:`RealDefectSynthesizer`).

    Examples
    --------
    >>> import numpy as np, torch, defectforge
    >>> from defectforge.sources.defects import DefectBank
    >>> image = np.full((64, 64, 3), 120, np.uint8); mask = np.zeros((64, 64), np.uint8)
    >>> image[20:30, 10:40] = 30; mask[20:30, 10:40] = 255
    >>> bank = DefectBank.from_arrays([image], [mask], ["scratch"])
    >>> out = defectforge.create("copy_paste", bank=bank)(torch.full((2, 3, 64, 64), 200, dtype=torch.uint8), seed=0)
    >>> out.params[0]["defect_type"], bool(out.masks[0].any())
    ('scratch', True)
    """

    # about 0.1 ms per sample, half of it in Python: the pool's hand-offs cost more than a second
    # thread gives (measured in `defectforge bench`, 256 px, batch 32: 2 threads 2,918 img/s, the
    # calling thread alone 3,237 img/s, at a load of 1.5 on 2 cores; worse under load)
    sample_threads = 1

    def _make(self, window, shape, p: dict, entry, region):
        h, w, c = shape
        warped = warp_entry(entry, p, h, w, surround=False)
        if warped is None:
            return None
        top, left, crop, own, _, _ = warped
        bh, bw = own.shape
        box = window(top, top + bh, left, left + bw)
        crop = to_target_channels(crop, c)
        sel = own if region is None else own & region[top:top + bh, left:left + bw]
        changed = sel & differs(crop, box)
        if not cv2.countNonZero(changed.view(np.uint8)):
            return None
        return top, left, crop, changed


register_method(
    "copy_paste", family="real-defect", level="image",
    description="real defects of a bank (crop under its mask), flipped, rotated by 90s, scaled, hard-pasted",
    source="Crop&Paste baseline of DFMGAN (Duan et al., AAAI 2023) / AnomalyDiffusion (Hu et al., AAAI 2024), paper",
    licence="paper (no reference code)", defaults={"anomaly_probability": 1.0},
)(CopyPasteSynthesizer)
