"""A run's synthesizer, built from its configuration: the dataset overlay on one method or a
``--mix``, the count/area/shape controls, and the bank of real defects the methods that place
them take. Used by the dataset writer, the UI, the detectors' training and the speed bench alike,
none of which needs the writer for it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.registry import _accepted_kwargs, create, method_info
from .run_config import GenerateConfig

__all__ = ["build_synthesizer", "build_from_config", "synthesizer_from_config", "defect_bank", "DATASET_OVERLAY",
           "SPLIT_FILE", "procedural_banks"]


def build_synthesizer(method: str, overrides: dict[str, Any] | None = None, textures: str | None = None,
                      for_dataset: bool = True):
    """The synthesizer of a run: every sample anomalous, empty masks redrawn (unless overridden).

    The dataset overlay (``anomaly_probability=1``: normals come from ``normal_ratio`` instead;
    ``empty_mask_policy="retry"``) never replaces what the user sets, nor a preset value that
    defines the preset: one that differs from its class's own default (``cutpaste_3way``'s 2/3,
    whose normal samples are class 0 of its 3-way classifier; ``draem_anomalib``'s rescaled
    empty masks). A preset value equal to the class default (DRAEM's loader mix of 0.5, which
    ``normal_ratio`` replaces) is the class's and is overlaid.
    """
    overrides = dict(overrides or {})
    info = method_info(method)
    if info.level != "image":
        # feature/latent methods perturb a backbone's features inside their detector's training
        raise ValueError(f"method {method!r} is {info.level}-level: it makes anomalies in feature space, not "
                         f"images, so it cannot write a dataset; use it through its detector "
                         f"(defectforge benchmark --detector ...) or its Python API, or pick an image-level "
                         f"method (defectforge methods --level image)")
    accepted = _accepted_kwargs(info.cls)
    if textures is not None:
        if "textures" not in accepted:
            raise ValueError(f"method {method!r} takes no texture source; drop --textures")
        overrides.setdefault("textures", str(textures))
    return create(method, overlay=DATASET_OVERLAY if for_dataset else None, **overrides)


#: What a dataset (or a training batch's synthetic half) asks of every method, where it may
#: (an explicit overlay: :func:`defectforge.core.registry.create` applies and records it).
DATASET_OVERLAY = {"anomaly_probability": 1.0, "empty_mask_policy": "retry"}


#: Where a run records which real defects fed synthesis (next to its other outputs).
SPLIT_FILE = "fewshot_split.json"


def defect_bank(cfg: GenerateConfig, split_file: str | os.PathLike | None = None):
    """The run's bank of real defects (``cfg.defects``), its few-shot split reused from ``split_file`` when there."""
    from ..sources.defects import DefectBank

    if cfg.defects is None:
        return None
    reuse = split_file if split_file is not None and Path(split_file).is_file() else None
    return DefectBank.from_folder(cfg.defects, few_shot=cfg.few_shot, split_file=reuse, defect_types=cfg.defect_types,
                                  format=cfg.defects_format)


def build_from_config(cfg: GenerateConfig, bank=None):
    """The synthesizer of a run: one method or a ``--mix``, wrapped by the count/area/shape controls.

    Methods that place real defects (``copy_paste``, ``defect_transplant``) get ``bank`` (see
    :func:`defect_bank`).
    """
    from ..realdefect import needs_bank

    names = cfg.methods()
    wanted = [n for n in names if needs_bank(n)]
    if wanted and bank is None:
        raise ValueError(f"{', '.join(wanted)} place(s) real defects: give --defects CATEGORY_OR_FOLDER "
                         "(an MVTec-AD category or a folder of image/mask pairs)")
    if bank is not None and not wanted:
        raise ValueError("--defects is for methods that place real defects (copy_paste, defect_transplant); "
                         f"{', '.join(names)} do(es) not take it")

    def one(name, overrides):
        overrides = dict(overrides or {})
        if needs_bank(name):
            overrides.setdefault("bank", bank)
        return build_synthesizer(name, overrides, cfg.textures)

    if cfg.mix is not None:
        from ..synthesizers.compose import mix, parse_mix

        names, probs = parse_mix(cfg.mix)
        synth = mix([one(n, None) for n in names], probs)
    else:
        synth = one(cfg.method, cfg.overrides)
    if cfg.defect_count is not None or cfg.area_range is not None or cfg.mask_bank is not None:
        from ..sources.mask_bank import MaskBank
        from ..synthesizers.compose import control

        bank = cfg.mask_bank
        if bank is not None and cfg.mask_threshold is not None:
            bank = MaskBank(bank, mask_threshold=cfg.mask_threshold)
        synth = control(synth, defect_count=tuple(cfg.defect_count) if cfg.defect_count else 1,
                        area_range=None if cfg.area_range is None else tuple(cfg.area_range),
                        mask_bank=bank)
    return synth


def synthesizer_from_config(config: dict):
    """Rebuild a synthesizer from its ``config()`` (``config.yaml``'s ``synthesizer`` section)."""
    from .. import from_config

    return from_config(config)


def procedural_banks(synthesizer) -> list:
    """The built-in procedural texture banks inside ``synthesizer`` (a method, a mixture, a control wrapper)."""
    from ..core.base import walk_synthesizers
    from ..sources.textures import ProceduralTextures

    banks = (getattr(s, "textures", None) for s in walk_synthesizers(synthesizer))
    return [t for t in banks if isinstance(t, ProceduralTextures)]
