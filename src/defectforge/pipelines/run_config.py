"""The configuration of a dataset run: everything that determines the written files
(:class:`GenerateConfig`, recorded in ``config.yaml``) and the checks made before the first write."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..core.registry import method_info
from ..core.seeding import DONOR_POOL, MAX_SEED
from ..core.validation import check_probability, check_range
from ..io.images import BIT_DEPTHS, PNG_COMPRESSIONS

__all__ = ["GenerateConfig", "MissingDependencyError", "EXTRAS", "check_foreground_options", "check_requirements",
           "RECORDED_BEFORE"]


#: Optional packages of methods and texture sources: import name -> the pip extra that installs it.
EXTRAS = {"skimage": "pip install 'defectforge[textures]' (scikit-image)"}


#: Fields added after runs were recorded without them, and the value those runs used: a record
#: without the field reads as that value (resumed and rebuilt alike), not as today's default.
RECORDED_BEFORE = {"png_compression": "level1"}


class MissingDependencyError(ImportError):
    """An optional package the run needs is not installed; the message names the extra."""


@dataclass
class GenerateConfig:
    """Everything that determines a generated dataset (written to ``config.yaml``).

    Run options that do not change the files (workers, resume, overwrite, progress) are
    arguments of :func:`generate` instead.
    """

    input: str
    method: str | None = None
    count: int = 100
    seed: int = 0
    size: int | None = None
    textures: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    normal_ratio: float = 0.0
    batch_size: int = 32
    # where defects go and how many (see defectforge.sources.foreground and defectforge.control)
    foreground: str | None = None
    foreground_threshold: float | None = None
    foreground_invert: bool = False
    foreground_masks: str | None = None
    mix: str | None = None
    defect_count: list[int] | None = None
    area_range: list[float] | None = None
    mask_bank: str | None = None
    # grey level from which a pixel of a near-binary (JPEG) mask-bank or foreground mask is shape
    mask_threshold: int | None = None
    donor_pool: int = DONOR_POOL
    # inputs that are not plain 8-bit images (see defectforge.io.images)
    bit_depth: str = "auto"
    max_pixels: int | None = None
    output_bit_depth: int = 8
    # how the PNGs are compressed (same pixels, other bytes; see defectforge.io.images.PNG_COMPRESSIONS)
    png_compression: str = "fast"
    # redraw samples whose mean absolute change inside the mask is below this (in [0, 1]; off)
    min_contrast: float | None = None
    # real defects for the methods that need a bank (copy_paste, defect_transplant; see
    # defectforge.sources.defects): a labelled folder or file, its types, the few-shot part, its
    # format (None: detected; see defectforge.io.annotations)
    defects: str | None = None
    defect_types: list[str] | None = None
    few_shot: str | None = None
    defects_format: str | None = None

    def __post_init__(self) -> None:
        # plain YAML-able values whatever the caller passed (paths, tuples, a single defect count);
        # paths absolute, so that `generate --config` rebuilds the run from any working directory
        for name in ("input", "textures", "foreground_masks", "mask_bank", "defects", "few_shot"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, str(value) if name == "few_shot" else _absolute(value))
        if self.foreground in ("none", ""):
            self.foreground = None
        if self.mix is not None and not self.method:
            self.method = "mix"
        if isinstance(self.defect_count, (int, np.integer)):
            self.defect_count = [int(self.defect_count)] * 2
        elif self.defect_count is not None:
            self.defect_count = [int(v) for v in self.defect_count]
        if self.area_range is not None:
            self.area_range = [float(v) for v in self.area_range]
        self.overrides = dict(self.overrides or {})
        for name in ("model", "textures"):
            if isinstance(self.overrides.get(name), str):
                self.overrides[name] = _absolute(self.overrides[name])
        self.bit_depth = str(self.bit_depth)
        if isinstance(self.defect_types, str):
            self.defect_types = [t.strip() for t in self.defect_types.split(",") if t.strip()]
        self.defect_types = list(self.defect_types) if self.defect_types else None

    @classmethod
    def from_dict(cls, data: dict) -> GenerateConfig:
        """The ``generator`` section of a ``config.yaml``; unknown keys are an error, and a field the
        record predates is the value runs used before it (:data:`RECORDED_BEFORE`)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.yaml: unknown generator field(s) {unknown}; was it written by a newer "
                             "defectforge?")
        return cls(**{**RECORDED_BEFORE, **data})

    def validate(self):
        """Check every field; returns the parsed foreground spec (parsed here, once)."""
        from ..sources.foreground import parse_foreground

        if not self.method:
            raise ValueError("give a method (--method NAME) or a mixture (--mix 'a:0.5,b:0.5')")
        if self.mix is not None and self.method != "mix":
            raise ValueError("give a method (--method) or a mixture (--mix), not both")
        check_range("count (--count)", self.count, 1, 10**8, integer=True)
        check_range("seed (--seed)", self.seed, 0, MAX_SEED, integer=True)
        if self.size is not None:
            check_range("size (--size)", self.size, 16, 1 << 15, integer=True)
        check_probability("normal_ratio (--normal-ratio)", self.normal_ratio)
        # no command-line option sets these two: a user meets them in an edited config.yaml (--config)
        check_range("batch_size (config.yaml: generator.batch_size)", self.batch_size, 1, 4096, integer=True)
        check_range("donor_pool (config.yaml: generator.donor_pool)", self.donor_pool, 0, 1024, integer=True)
        if self.bit_depth not in ("auto",) + tuple(str(b) for b in BIT_DEPTHS):
            raise ValueError(f"bit_depth (--bit-depth) must be auto or one of {list(BIT_DEPTHS)}, "
                             f"got {self.bit_depth!r}")
        if self.output_bit_depth not in (8, 16):
            raise ValueError(f"output_bit_depth (--output-bit-depth) must be 8 or 16, got {self.output_bit_depth!r}")
        if self.png_compression not in PNG_COMPRESSIONS:
            raise ValueError(f"png_compression (--png-compression) must be one of {list(PNG_COMPRESSIONS)}, "
                             f"got {self.png_compression!r}")
        if self.max_pixels is not None:
            check_range("max_pixels (--max-pixels)", self.max_pixels, 1, 1 << 40, integer=True)
        if self.min_contrast is not None:
            check_range("min_contrast (--min-contrast)", self.min_contrast, 0.0, 0.5, low_inclusive=False)
        check_foreground_options(self.foreground, self.foreground_threshold, self.foreground_invert,
                                 self.foreground_masks)
        if self.mask_threshold is not None:
            check_range("mask_threshold (--mask-threshold)", self.mask_threshold, 1, 255, integer=True)
            if self.mask_bank is None and self.foreground_masks is None:
                raise ValueError("--mask-threshold applies only with --mask-bank or --foreground-masks; add one or "
                                 "drop it")
        if self.mix is not None and self.overrides:
            raise ValueError("--set applies to a single method; drop it when using --mix")
        if self.defects is None and (self.defect_types or self.few_shot is not None or self.defects_format):
            raise ValueError("--defect-types, --few-shot and --defects-format choose among real defects: give "
                             "--defects CATEGORY_OR_FOLDER")
        if self.defects_format is not None:
            from ..io.annotations import check_format

            check_format(self.defects_format)
        if self.few_shot is not None:
            from ..sources.defects import parse_few_shot

            parse_few_shot(self.few_shot)
        return parse_foreground(self.foreground, self.foreground_threshold, self.foreground_invert,
                                self.foreground_masks, self.mask_threshold)

    def methods(self) -> list[str]:
        """Registry names this run uses (the members of a mixture)."""
        if self.mix is not None:
            from ..synthesizers.compose import parse_mix

            return parse_mix(self.mix)[0]
        return [self.method] if self.method else []


def _absolute(path) -> str:
    """``path`` absolute (``~`` expanded); the texture banks named by a word stay words."""
    if str(path) in ("procedural", "skimage", ""):
        return str(path)
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def check_foreground_options(mode, threshold=None, invert: bool = False, masks=None) -> None:
    """Options that only apply with another option are an error without it, never ignored."""
    mode = None if mode in (None, "none", "") else mode
    if masks is not None and mode is not None:
        raise ValueError("give either --foreground or --foreground-masks, not both")
    if threshold is not None and mode != "threshold":
        raise ValueError("--foreground-threshold applies only with --foreground threshold; add that or drop it")
    if invert and mode not in ("otsu", "threshold"):
        raise ValueError("--foreground-invert applies only with --foreground otsu or threshold; add one or drop it")


def check_requirements(cfg: GenerateConfig) -> None:
    """Every optional package the run needs is installed (else one line naming the extra)."""
    import importlib.util

    needs = []
    for name in cfg.methods():
        needs += [(r, f"method {name!r}") for r in method_info(name).capabilities["requires"]]
    if cfg.textures == "skimage":
        needs.append(("skimage", "--textures skimage"))
    for module, who in needs:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(f"{who} needs the optional package {module!r}: "
                                         f"{EXTRAS.get(module, 'pip install ' + module)}")
