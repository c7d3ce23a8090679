"""Methods that synthesise from real defects (a :class:`~defectforge.sources.defects.DefectBank`).

Family ``real-defect``: neither hand-crafted (the defect content is real) nor generative (no
model is trained): ``copy_paste`` (the papers' Crop&Paste baseline) and ``defect_transplant``
(DCDGANc's fusion step: colour-matched, jittered, Poisson-blended). Importing registers them.
"""

from . import copy_paste, real_only, transplant  # noqa: F401


def needs_bank(name: str) -> bool:
    """Whether registry method ``name`` needs a defect bank (``bank=``) to be created."""
    from ..core.registry import method_info

    return method_info(name).capabilities["needs_bank"]


__all__ = ["needs_bank"]
