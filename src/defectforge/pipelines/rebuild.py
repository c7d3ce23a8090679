"""``generate --config OLD/config.yaml NEW``: a recorded run, with the options given beside it.

One rule: every option given beside ``--config`` overrides what the record says, and the new
run's ``config.yaml`` records the result. Without such options the recorded synthesizer (every
resolved constructor argument) is used as it is, so the rebuild is byte-identical; an option
that changes the synthesizer (its method, parameters, textures, defect count, area, shapes or
real defects) rebuilds it from the merged generator record instead.

Paths in a record are absolute (``GenerateConfig`` resolves them), so ``--config`` works from any
working directory; :func:`resolve_recorded_paths` does the same to a record written before that.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

__all__ = ["SYNTHESIZER_FIELDS", "FOREGROUND_FIELDS", "merge_given_options", "resolve_recorded_paths", "bank_of"]

#: Generator fields that change the synthesizer: given beside ``--config``, it is rebuilt from them.
SYNTHESIZER_FIELDS = frozenset({"method", "mix", "overrides", "textures", "defect_count", "area_range", "mask_bank",
                                "mask_threshold", "defects", "defects_format", "defect_types", "few_shot"})
#: The foreground options form one choice: giving any of them replaces the recorded choice whole
#: (a recorded ``--foreground-threshold`` does not survive ``--foreground otsu``).
FOREGROUND_FIELDS = ("foreground", "foreground_threshold", "foreground_invert", "foreground_masks")


def merge_given_options(recorded: dict[str, Any], options, given: set[str]):
    """The generator config of a rebuilt run: ``recorded`` with the ``given`` fields of ``options``.

    Parameters
    ----------
    recorded : dict
        The record's ``generator`` section.
    options : GenerateConfig
        The options of the command line (all of them; only the ``given`` fields are used).
    given : set of str
        Names of the :class:`~defectforge.pipelines.generate.GenerateConfig` fields the user gave.

    Returns
    -------
    (GenerateConfig, bool)
        The merged config, and whether the synthesizer must be rebuilt from it (a given field in
        :data:`SYNTHESIZER_FIELDS`) rather than taken from the record.
    """
    from .run_config import GenerateConfig

    merged = asdict(GenerateConfig.from_dict(recorded))
    new = asdict(options)
    if given & {"method", "mix"}:
        same = (new["method"], new["mix"]) == (merged["method"], merged["mix"])
        merged.update(method=new["method"], mix=new["mix"])
        if not same:
            merged["overrides"] = {}  # the recorded --set values were the other method's parameters
    if given & set(FOREGROUND_FIELDS):
        merged.update({name: new[name] for name in FOREGROUND_FIELDS})
    if "overrides" in given:
        merged["overrides"] = {**merged["overrides"], **new["overrides"]}
    for name in given - {"method", "mix", "overrides", *FOREGROUND_FIELDS}:
        merged[name] = new[name]
    return GenerateConfig(**merged), bool(given & SYNTHESIZER_FIELDS)


def resolve_recorded_paths(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a whole ``config.yaml``) with its generator paths absolute, as records are written now.

    A run recorded with relative paths by an earlier version is compared with the resumed one
    (relative to the current working directory, as it was read then).
    """
    from .run_config import GenerateConfig

    try:
        generator = asdict(GenerateConfig.from_dict(config["generator"]))
    except (KeyError, TypeError, ValueError):
        return config
    resolved = {**config, "generator": generator}
    inputs = config.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("root"), str):
        resolved["inputs"] = {**inputs, "root": os.path.abspath(inputs["root"])}
    return resolved


def bank_of(synthesizer):
    """The bank of real defects inside ``synthesizer`` (a method, a mixture, a control wrapper), or ``None``."""
    from ..core.base import walk_synthesizers

    banks = (getattr(s, "bank", None) for s in walk_synthesizers(synthesizer))
    return next((bank for bank in banks if bank is not None and hasattr(bank, "split")), None)
