"""The dataset generator: a folder of good images in, an MVTec-style defect dataset out.

Layout written under ``OUTPUT`` (anomalib's ``Folder`` / MVTec readers take it as it is)::

    test/<method>/000012.png                 synthetic anomalies
    ground_truth/<method>/000012_mask.png    their masks, 0/255
    test/good/000013.png                     normal samples (only with normal_ratio > 0)
    manifest.jsonl                           one line per sample, in index order (samples only)
    config.yaml                              the full run configuration; skipped inputs and why

Sample ``i`` depends on ``(seed, i)`` alone: its source image, whether it is normal, and every
synthesis parameter. So the files are byte-identical whatever the number of workers, and an
interrupted run resumed with ``resume=True`` ends exactly as an uninterrupted one (and a larger
``count`` extends it). Every file is written atomically (temporary file + rename); finished
samples are recorded one file each under ``.records/`` until the manifest is assembled, with the
size and SHA-256 of their image and mask, which ``resume`` checks: missing files are made
again, and a file whose bytes changed (a mask corrected by hand) is the user's and kept
(:mod:`defectforge.pipelines.user_edits`). One run at a time writes a folder: every run holds
the lock of :mod:`defectforge.io.output_lock` from before it reads the folder until it ends.

Nothing the tool did not write is ever deleted: ``overwrite`` removes only the files the earlier
run's own records name (or its naming scheme, for a run killed between writing a file and its
record), and refuses, deleting nothing, when the folder holds anything else or a file the user
changed. An output folder
equal to, inside or containing the input is refused before anything is read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import __version__
from ..core.registry import _accepted_kwargs, create, method_info
from ..core.seeding import DONOR_POOL, MAX_RETRIES, MAX_SEED, Stream, donor_indices, retry_stream, sample_rng
from ..core.validation import check_choice, check_probability, check_range
from ..io.files import atomic_write_bytes
from ..io.images import BIT_DEPTHS, encode_png
from ..io.inputs import NormalImages, load_normal_images, resolve_input_folder
from ..io.output_lock import LOCK_NAME, lock_output
from .rebuild import bank_of, resolve_recorded_paths
from .user_edits import check_run_files, listed, refuse_overwrite

__all__ = ["GenerateConfig", "generate", "build_synthesizer", "build_from_config", "synthesizer_from_config",
           "OutputExistsError", "MissingDependencyError", "load_run_config"]

#: Tries of a sample whose synthesis left it normal (an empty mask, a foreground with no room) or,
#: with ``min_contrast``, changed its masked pixels too little.
MAX_ATTEMPTS = MAX_RETRIES + 1
#: Optional packages of methods and texture sources: import name -> the pip extra that installs it.
EXTRAS = {"skimage": "pip install 'defectforge[textures]' (scikit-image)"}


class OutputExistsError(FileExistsError):
    """The output folder holds another run or other files."""


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
    donor_pool: int = DONOR_POOL
    # inputs that are not plain 8-bit images (see defectforge.io.images)
    bit_depth: str = "auto"
    max_pixels: int | None = None
    output_bit_depth: int = 8
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
        """The ``generator`` section of a ``config.yaml``; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config.yaml: unknown generator field(s) {unknown}; was it written by a newer "
                             "defectforge?")
        return cls(**data)

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
        if self.max_pixels is not None:
            check_range("max_pixels (--max-pixels)", self.max_pixels, 1, 1 << 40, integer=True)
        if self.min_contrast is not None:
            check_range("min_contrast (--min-contrast)", self.min_contrast, 0.0, 0.5, low_inclusive=False)
        check_foreground_options(self.foreground, self.foreground_threshold, self.foreground_invert,
                                 self.foreground_masks)
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
                                self.foreground_masks)

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
        from ..synthesizers.compose import control

        synth = control(synth, defect_count=tuple(cfg.defect_count) if cfg.defect_count else 1,
                        area_range=None if cfg.area_range is None else tuple(cfg.area_range),
                        mask_bank=cfg.mask_bank)
    return synth


def check_foreground_options(mode, threshold=None, invert: bool = False, masks=None) -> None:
    """Options that only apply with another option are an error without it, never ignored."""
    mode = None if mode in (None, "none", "") else mode
    if masks is not None and mode is not None:
        raise ValueError("give either --foreground or --foreground-masks, not both")
    if threshold is not None and mode != "threshold":
        raise ValueError("--foreground-threshold applies only with --foreground threshold; add that or drop it")
    if invert and mode not in ("otsu", "threshold"):
        raise ValueError("--foreground-invert applies only with --foreground otsu or threshold; add one or drop it")


def synthesizer_from_config(config: dict):
    """Rebuild a synthesizer from its ``config()`` (``config.yaml``'s ``synthesizer`` section)."""
    from .. import from_config

    return from_config(config)


def check_requirements(cfg: GenerateConfig) -> None:
    """Every optional package the run needs is installed (else one line naming the extra)."""
    import importlib.util

    needs = []
    for name in cfg.methods():
        needs += [(r, f"method {name!r}") for r in getattr(method_info(name).cls, "requires", ())]
    if cfg.textures == "skimage":
        needs.append(("skimage", "--textures skimage"))
    for module, who in needs:
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(f"{who} needs the optional package {module!r}: "
                                         f"{EXTRAS.get(module, 'pip install ' + module)}")


def _donor_indices(cfg: GenerateConfig, index: int, source: int, n_images: int) -> list[int]:
    # the donors of sample ``index``, other images than its source, drawn by its seed
    return donor_indices(cfg.seed, index, n_images, exclude=source, pool_size=cfg.donor_pool)


def _plan(cfg: GenerateConfig, index: int, n_images: int) -> tuple[int, bool]:
    # the generator's own draws, independent of the synthesizer's (Stream.SYNTHESIS)
    rng = sample_rng(cfg.seed, index, stream=Stream.PLAN)
    return int(rng.integers(n_images)), bool(rng.random() < cfg.normal_ratio)


def _drawn_normal(params: dict | None) -> bool:
    """The synthesizer chose to leave this sample normal (its ``anomaly_probability``), as opposed
    to an anomaly whose mask came out empty: only the latter is redrawn."""
    return bool(params) and params.get("anomalous") is False and set(params) <= {"anomalous"}


def _attempt_seed(cfg: GenerateConfig, index: int, attempt: int) -> int:
    if attempt == 0:
        return cfg.seed
    return int(sample_rng(cfg.seed, index, stream=retry_stream(attempt)).integers(0, MAX_SEED))


def mask_contrast(image: np.ndarray, source: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change inside ``mask`` of an 8-bit ``image`` against its ``source``, in [0, 1].

    >>> a = np.zeros((4, 4, 1), np.uint8); b = a.copy(); b[:2] = 51
    >>> mask_contrast(b, a, np.ones((4, 4), bool))
    0.1
    """
    m = mask.astype(bool)
    if not m.any() or image.shape != source.shape:
        return 0.0
    diff = np.abs(image[m].astype(np.int16) - source[m].astype(np.int16))
    return round(float(diff.mean()) / 255.0, 6)


def _file_record(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class _Worker:
    """Makes and writes the samples of a chunk (in the main process or a pool worker)."""

    def __init__(self, cfg: GenerateConfig, output: str, images: NormalImages, foreground=None,
                 synthesizer: dict | None = None, keep: frozenset[str] = frozenset()):
        self.cfg, self.output, self.images = cfg, Path(output), images
        self.keep = keep  # files the user edited: a sample made again for its missing sibling leaves them
        # a few-shot split was written next to the output before the workers started: reused here
        self.synth = (build_from_config(cfg, defect_bank(cfg, self.output / SPLIT_FILE)) if synthesizer is None
                      else synthesizer_from_config(synthesizer))
        self.name = cfg.method
        self.foreground = foreground
        self.uses_donors = bool(getattr(self.synth, "uses_donors", False)) and cfg.donor_pool > 0
        depth = images.bit_depth if cfg.output_bit_depth == 16 else 8
        self.output_scale = None if cfg.output_bit_depth == 8 else (2 ** (depth if depth > 8 else 16) - 1) / 255.0

    def _method_of(self, params) -> str:
        # a mixture writes each sample under the method that made it
        inner = params or {}
        for _ in range(3):
            if "method" in inner and isinstance(inner["method"], str):
                return inner["method"]
            defects = inner.get("defects")
            if not defects:
                break
            inner = defects[0].get("params", {})
        return self.name

    def _paths(self, index: int, normal: bool, params=None) -> tuple[str, str | None]:
        if normal:
            return f"test/good/{index:06d}.png", None
        # real defects go to one folder per defect type, as in the category they come from
        name = _real_defect(params).get("type") or self._method_of(params)
        return f"test/{name}/{index:06d}.png", f"ground_truth/{name}/{index:06d}_mask.png"

    def _context(self, batch: torch.Tensor, sources: list[int], indices: list[int]):
        """Foreground and (for one sample) donors of a batch; both depend on each sample alone."""
        from ..core.types import SynthesisContext
        from ..sources.foreground import estimate_foreground

        names = [self.images.relative(s) for s in sources]
        fg = estimate_foreground(batch, self.foreground, names) if self.foreground is not None else None
        donors = None
        if self.uses_donors and len(indices) == 1:
            picks = _donor_indices(self.cfg, indices[0], sources[0], len(self.images))
            if picks:
                h, w, c = self.images.images[sources[0]].shape
                donors = torch.from_numpy(np.stack([_match(self.images.images[p], h, w, c) for p in picks]))
                donors = donors.permute(0, 3, 1, 2).contiguous()
        context = SynthesisContext(foreground=None if fg is None else fg.masks, donors=donors)
        return context, (None if fg is None else fg.fallbacks)

    def run(self, indices: Sequence[int]) -> list[dict]:
        cfg, n = self.cfg, len(self.images)
        plans = {i: _plan(cfg, i, n) for i in indices}
        records = []
        anomalous: dict[tuple, list[int]] = {}
        for i in indices:
            src, normal = plans[i]
            if normal:
                records.append(self._write(i, src, self.images.images[src], None, None, 0))
            else:
                anomalous.setdefault(self.images.images[src].shape, []).append(i)
        for _, group in anomalous.items():
            for start in range(0, len(group), cfg.batch_size):
                records.extend(self._synthesize(group[start:start + cfg.batch_size], plans))
        return records

    def _redraw_reason(self, image, mask, label: int, params, source: np.ndarray) -> str | None:
        """Why this result is not kept: an anomaly left normal, or (``min_contrast``) too faint."""
        if label == 0:
            return None if _drawn_normal(params) else "empty"
        if self.cfg.min_contrast is not None:
            contrast = mask_contrast(image.permute(1, 2, 0).cpu().numpy(), source, (mask[0] > 0.5).cpu().numpy())
            if contrast < self.cfg.min_contrast:
                return "contrast"
        return None

    def _synthesize(self, chunk: list[int], plans) -> list[dict]:
        if self.uses_donors and len(chunk) > 1:
            # each sample has its own donor pool (drawn by its seed), so it is made on its own
            return [r for i in chunk for r in self._synthesize([i], plans)]
        sources = [plans[i][0] for i in chunk]
        # channels-first copy made by numpy (a torch copy runs its own threads, which stall on a busy machine)
        batch = torch.from_numpy(np.ascontiguousarray(np.stack([self.images.images[s] for s in sources]).transpose(0, 3, 1, 2)))
        context, fallbacks = self._context(batch, sources, chunk)
        out = self.synth(batch, seed=self.cfg.seed, indices=chunk, context=context)
        records = []
        for k, i in enumerate(chunk):
            img, mask, label, params = out.images[k], out.masks[k], int(out.labels[k]), out.params[k]
            source = self.images.images[sources[k]]
            attempt, reasons = 0, []
            reason = self._redraw_reason(img, mask, label, params, source)
            while reason is not None and attempt < MAX_ATTEMPTS - 1:
                reasons.append(reason)
                attempt += 1
                sub_context = context if len(chunk) == 1 else context.select(torch.tensor([k]))
                redo = self.synth(batch[k][None], seed=_attempt_seed(self.cfg, i, attempt), indices=[i],
                                  context=sub_context)
                img, mask, label, params = redo.images[0], redo.masks[0], int(redo.labels[0]), redo.params[0]
                reason = self._redraw_reason(img, mask, label, params, source)
            image = img.permute(1, 2, 0).cpu().numpy()
            mask_np = (mask[0] > 0.5).cpu().numpy()
            records.append(self._write(i, sources[k], image, mask_np, params, label, attempt,
                                       foreground_fallback=None if fallbacks is None else fallbacks[k],
                                       donors=_donor_indices(self.cfg, i, sources[k], len(self.images))
                                       if self.uses_donors else None, redrawn=reasons, unresolved=reason))
        return records

    def _encode(self, image: np.ndarray) -> bytes:
        if self.output_scale is None:
            return encode_png(image)
        return encode_png((image.astype(np.float64) * self.output_scale + 0.5).astype(np.uint16))

    def _write(self, index: int, src: int, image: np.ndarray, mask: np.ndarray | None, params, label: int,
               attempt: int = 0, foreground_fallback: str | None = None, donors: list[int] | None = None,
               redrawn: list[str] | None = None, unresolved: str | None = None) -> dict:
        normal = mask is None or label == 0
        image_path, mask_path = self._paths(index, normal, params)
        data = self._encode(image)
        if image_path not in self.keep:
            atomic_write_bytes(self.output / image_path, data)
        record: dict[str, Any] = {
            "index": index, "image_path": image_path, "mask_path": None, "label": int(label),
            "method": self._method_of(params) if not normal else "good", "seed": self.cfg.seed,
            "source_image": self.images.relative(src), "params": params, "area_fraction": 0.0, "bbox": None,
            "image_file": _file_record(data),
        }
        if foreground_fallback:
            record["foreground_fallback"] = foreground_fallback
        if not normal and _real_defect(params):
            record["defect"] = _real_defect(params)
            if "mask_kind" in record["defect"]:  # the mask is a box around a real defect, not its outline
                record["mask_kind"] = record["defect"]["mask_kind"]
        if donors:
            record["donor_images"] = [self.images.relative(d) for d in donors]
        if attempt:
            record["attempt"] = attempt
            record["synthesis_seed"] = _attempt_seed(self.cfg, index, attempt)
            record["redrawn"] = list(redrawn or [])
        if mask is not None and not normal:
            mask_data = encode_png(mask.astype(np.uint8) * 255)
            if mask_path not in self.keep:
                atomic_write_bytes(self.output / mask_path, mask_data)
            ys, xs = np.nonzero(mask)
            record["mask_path"] = mask_path
            record["mask_file"] = _file_record(mask_data)
            record["area_fraction"] = float(mask.mean())
            record["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            record["contrast"] = mask_contrast(image, self.images.images[src], mask)
            if unresolved == "contrast":
                record["failed"] = f"contrast below min_contrast after {MAX_ATTEMPTS} attempts"
        elif mask is not None and not _drawn_normal(params):
            record["failed"] = f"synthesis left the sample normal after {MAX_ATTEMPTS} attempts"
        # the sample counts as done once its record exists: image and mask are already in place
        atomic_write_bytes(self.output / ".records" / f"{index:06d}.json", json.dumps(record, sort_keys=True).encode())
        return record


def _match(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """``image`` (H', W', C') as ``(height, width, channels)`` uint8 (a donor for another image's size)."""
    import cv2

    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA).reshape(height, width, -1)
    if image.shape[2] != channels:
        image = (cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None] if channels == 1
                 else np.repeat(image, 3, axis=2))
    return np.ascontiguousarray(image)


_WORKER: _Worker | None = None


def _init_worker(cfg: GenerateConfig, output: str, images: NormalImages, foreground, synthesizer,
                 keep: frozenset[str] = frozenset()) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Worker(cfg, output, images, foreground, synthesizer, keep)


def _run_chunk(indices: list[int]) -> list[dict]:
    assert _WORKER is not None
    return _WORKER.run(indices)


# --- the output folder --------------------------------------------------------------------------

def _config_dict(cfg: GenerateConfig, synth, images: NormalImages) -> dict:
    return {
        "defectforge_version": __version__,
        "generator": asdict(cfg),
        "synthesizer": synth.config(),
        "inputs": {"root": str(images.root), "count": len(images), "bit_depth": images.bit_depth,
                   "skipped": [dict(s) for s in images.skipped]},
    }


def _flatten(value, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _differences(old: dict, new: dict) -> list[str]:
    """``field: old -> new`` for every field that differs (version and count ignored)."""
    a, b = _flatten(old), _flatten(new)
    ignored = {"defectforge_version", "generator.count"}
    out = []
    for k in sorted((set(a) | set(b)) - ignored):
        if a.get(k) is None and b.get(k) is None:  # a field added since the run, at its default (None)
            continue
        if k not in a or k not in b or json.dumps(a[k], sort_keys=True, default=str) != \
                json.dumps(b[k], sort_keys=True, default=str):
            out.append(f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}")
    return out


def load_run_config(path: str | os.PathLike) -> dict | None:
    """A defectforge ``config.yaml`` as a dict, or ``None`` when ``path`` is not one of ours."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "generator" not in data or "defectforge_version" not in data:
        return None
    return data


def _read_records(output: Path) -> dict[int, dict]:
    """Sample records of the run in ``output`` (manifest, then the per-sample records of a killed run)."""
    done: dict[int, dict] = {}
    manifest = output / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: the sample is made again
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done[record["index"]] = record
    records = output / ".records"
    if records.is_dir():
        for f in records.glob("*.json"):
            try:
                record = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done[record["index"]] = record
    return done


def _real_defect(params) -> dict:
    """The bank entry a sample was made from (type, entry key, source file); ``{}`` for other methods."""
    inner = params or {}
    for _ in range(3):
        if isinstance(inner.get("entry"), str) and "defect_type" in inner:
            found = {"type": inner["defect_type"], "entry": inner["entry"], "source": inner["entry"].rsplit("#", 1)[0]}
            if inner.get("mask_kind", "pixel") != "pixel":  # drawn from a box, not an outline
                found["mask_kind"] = inner["mask_kind"]
            return found
        defects = inner.get("defects")
        if not defects:
            break
        inner = defects[0].get("params", {})
    return {}


def _our_files(output: Path, config: dict, records: dict[int, dict]):
    """A predicate: was this file (relative POSIX path) written by the run ``config`` describes?"""
    named = {"config.yaml", "manifest.jsonl", "skipped.jsonl", SPLIT_FILE}
    for r in records.values():
        named.update(p for p in (r.get("image_path"), r.get("mask_path")) if isinstance(p, str))
    generator = config.get("generator", {})
    methods = {"good"}
    try:
        methods.update(GenerateConfig.from_dict(generator).methods())
    except (TypeError, ValueError):
        pass
    methods.update(r.get("method") for r in records.values() if isinstance(r.get("method"), str))
    methods.update(r["defect"]["type"] for r in records.values() if isinstance(r.get("defect"), dict))
    names = "|".join(re.escape(m) for m in sorted(methods))
    # a run killed between writing a sample's files and its record leaves files named by the scheme
    scheme = re.compile(rf"(test/({names})/\d{{6,}}\.png|ground_truth/({names})/\d{{6,}}_mask\.png|"
                        rf"\.records/\d{{6,}}\.json)")

    def ours(rel: str) -> bool:
        return rel in named or bool(scheme.fullmatch(rel)) or _partial_write(rel)

    return ours


def _partial_write(rel: str) -> bool:
    """Is ``rel`` the temporary file of an atomic write into the run's own folders, left by a killed process?"""
    return bool(re.fullmatch(r"(.*/)?\.[^/]+\.tmp", rel)) and (
        rel.startswith(("test/", "ground_truth/", ".records/")) or "/" not in rel)


def _all_files(output: Path) -> list[str]:
    # the lock file is the running writer's, neither the earlier run's nor the user's
    return sorted(p.relative_to(output).as_posix() for p in output.rglob("*")
                  if (not p.is_dir() or p.is_symlink()) and p.relative_to(output).as_posix() != LOCK_NAME)


def _remove_run(output: Path, config: dict) -> None:
    """Delete the earlier run in ``output``, after checking that every file there is its own."""
    records = _read_records(output)
    ours = _our_files(output, config, records)
    files = _all_files(output)
    foreign = [f for f in files if not ours(f)]
    if foreign:
        raise OutputExistsError(f"--overwrite refused, nothing deleted: {output} holds {len(foreign)} file(s) "
                                f"this tool did not write ({listed(foreign)}); move them away or choose "
                                "another OUTPUT")
    for f in files:
        (output / f).unlink()
    for d in sorted((p for p in output.rglob("*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: len(p.parts), reverse=True):
        rel = d.relative_to(output).as_posix()
        if rel.split("/")[0] in ("test", "ground_truth", ".records") and not any(d.iterdir()):
            d.rmdir()


def _check_location(output: Path, given_input: Path, input_root: Path) -> None:
    """OUTPUT must be neither INPUT, nor inside it, nor around it."""
    out = output.resolve()
    inputs = [given_input.resolve(), input_root.resolve()]
    if out in inputs:
        raise OutputExistsError(f"OUTPUT {output} is the INPUT folder; choose a new folder outside it")
    for inp in inputs:
        if inp in out.parents:
            raise OutputExistsError(f"OUTPUT {output} is inside INPUT {given_input}; its images would be read as "
                                    "inputs next time: choose a folder outside INPUT")
        if out in inp.parents:
            raise OutputExistsError(f"OUTPUT {output} contains INPUT {given_input}; choose a new folder that "
                                    "does not hold your images")


def _prepare_output(output: Path, config: dict, resume: bool, overwrite: bool, count: int,
                    discard_edits: bool = False) -> tuple[dict, int, list[str]]:
    """Check (and with ``overwrite`` empty) the output folder; returns the verified finished
    samples of a resumed run, how many had a missing file, and the files the user edited
    (kept, unless ``discard_edits``: see :mod:`defectforge.pipelines.user_edits`)."""
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"OUTPUT {output} is a file, not a folder; choose a folder")
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in OUTPUT) or --overwrite (replace it), not both")
    done: dict[int, dict] = {}
    repaired, edited = 0, []
    if output.is_dir() and any(p.name != LOCK_NAME for p in output.iterdir()):
        previous = load_run_config(output / "config.yaml")
        if overwrite:
            if previous is None:
                files = _all_files(output)
                raise OutputExistsError(f"--overwrite refused, nothing deleted: {output} holds no run of this tool "
                                        f"(no config.yaml of defectforge) but {len(files)} file(s) this tool did "
                                        f"not write ({listed(files)}); choose a new or empty OUTPUT")
            changed = check_run_files(output, _read_records(output)).edited
            if changed and not discard_edits:
                refuse_overwrite(output, changed)
            _remove_run(output, previous)
        elif resume:
            if previous is None:
                raise OutputExistsError(f"cannot --resume: {output} holds no config.yaml of an earlier run; "
                                        "choose a new or empty OUTPUT")
            diffs = _differences(resolve_recorded_paths(previous), config)
            if diffs:
                raise OutputExistsError(f"cannot --resume: {output / 'config.yaml'} describes a different run ("
                                        + "; ".join(diffs[:6]) + (f"; {len(diffs) - 6} more" if len(diffs) > 6 else "")
                                        + "); use the same options, or a new OUTPUT")
            records = _read_records(output)
            beyond = sorted(i for i in records if i >= count)
            if beyond:
                raise OutputExistsError(f"cannot --resume with --count {count}: {output} already holds "
                                        f"{max(beyond) + 1} samples; --resume can extend a run, not shrink it")
            found = check_run_files(output, records, keep_edits=not discard_edits)
            done, repaired, edited = found.intact, len(found.incomplete), found.edited
            # a process killed inside an atomic write leaves its temporary file; the sample is made again
            for rel in _all_files(output):
                if _partial_write(rel):
                    (output / rel).unlink()
        else:
            what = "another run" if previous is not None else "other files"
            raise OutputExistsError(f"OUTPUT {output} already holds {what}; pass --resume to continue that run, "
                                    "--overwrite to replace it, or choose a new folder")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config, sort_keys=True).encode())
    return done, repaired, edited


#: Network passes (samples x denoising steps) from which a run says what it will cost before it starts:
#: about 4 minutes at the 12.5 ms a pass of the 0.79 M-parameter UNet measured on one CPU thread
#: (README, generative benchmark); larger models take longer per pass.
LONG_RUN_PASSES = 20_000


class LongRunWarning(UserWarning):
    """A run of a generative method that will take long (said before the first sample)."""


def run_cost(synth, samples: int) -> str | None:
    """What a run of ``samples`` samples will cost, when it is long (at least :data:`LONG_RUN_PASSES`).

    Generative methods report their network passes per sample (``network_passes()``: denoising
    steps, or one generator pass); the others cost milliseconds and give ``None``.
    """
    inner, per_defect = synth, 1
    while not hasattr(inner, "network_passes") and hasattr(inner, "inner"):  # control(...): up to N defects
        per_defect *= max(getattr(inner, "defect_count", (1, 1)))
        inner = inner.inner
    if not hasattr(inner, "network_passes"):
        return None
    steps = inner.network_passes()
    total = samples * steps * per_defect
    if total < LONG_RUN_PASSES:
        return None
    name = getattr(inner, "method_name", type(inner).__name__)
    if steps == 1:
        return (f"{name}: {samples:,} samples = {total:,} generator passes before the run ends; "
                "fewer samples (--count) make it shorter")
    return (f"{name}: {samples:,} samples x {steps:,} denoising steps{f' x {per_defect} defects' if per_defect > 1 else ''}"
            f" = {total:,} network passes before the run ends (a small UNet on one CPU thread: about 12 ms a "
            "pass); fewer steps (--set num_inference_steps=20 --set scheduler=ddim) or fewer samples (--count) "
            "make it shorter")


def describe_os_error(exc: OSError, output: str | os.PathLike | None = None, resumable: bool = True) -> str:
    """One line for a file-system error: what failed, and what to do.

    ``resumable``: the command keeps finished work and continues with ``--resume``
    (``generate``); other commands are told to run again.
    """
    where = exc.filename or output or ""
    again = (" then run the same command with --resume to continue (finished samples are kept)" if resumable
             else " then run the same command again")
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {where}: free some space,{again}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {where} (permission denied or read-only file system): choose another OUTPUT, "
                f"or make it writable and{again.replace(' then', '')}")
    if exc.errno == errno.ENOTDIR:
        return f"cannot write {where}: part of that path is a file, not a folder; choose another OUTPUT"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where}: free some space,{again}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


# --- the run ------------------------------------------------------------------------------------

def generate(cfg: GenerateConfig | str | os.PathLike, output: str | os.PathLike | None = None,
             method: str | None = None, count: int | None = None, *, workers: int = 1, resume: bool = False,
             overwrite: bool = False, progress: bool = True, synthesizer: dict | None = None,
             engine: str = "local", ray_address: str | None = None, discard_edits: bool = False,
             **fields_) -> dict:
    """Write a synthetic defect dataset (see the module docstring); returns a summary dict.

    Call it with a :class:`GenerateConfig` (as the CLI does) or, as a shortcut, with the
    config's fields: ``generate(input, output, method, count, seed=..., ...)``.
    ``synthesizer`` is a synthesizer's ``config()`` (``config.yaml``'s section) to use instead of
    building one from ``cfg``: a run rebuilt from its record. ``engine="ray"`` runs the same
    chunks as Ray tasks (:mod:`defectforge.pipelines.ray_engine`; ``ray_address`` names a
    cluster), writing the same files. A file the user changed after the run wrote it is kept by
    ``resume`` and refused by ``overwrite`` unless ``discard_edits``.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> from defectforge.io.images import write_image
    >>> src, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> write_image(src / "a.png", np.full((64, 64, 3), 128, np.uint8))
    >>> generate(GenerateConfig(str(src), "cutpaste", count=2), out, progress=False)["written"]
    2
    """
    if not isinstance(cfg, GenerateConfig):
        cfg = GenerateConfig(input=str(cfg), method=method, count=100 if count is None else count, **fields_)
    elif method is not None or count is not None or fields_:
        raise TypeError("give a GenerateConfig or its fields, not both")
    if output is None:
        raise TypeError("generate() needs an output folder")
    output = Path(output)
    spec = cfg.validate()
    check_range("workers", workers, 1, 256, integer=True)
    check_choice("engine", engine, ("local", "ray"))
    if engine == "ray":
        from .ray_engine import require_ray

        require_ray()  # before any file is written
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in OUTPUT) or --overwrite (replace it), not both")
    # everything is checked before the first file is written
    input_root = resolve_input_folder(cfg.input)
    _check_location(output, Path(cfg.input), input_root)
    check_requirements(cfg)
    with lock_output(output):  # one writer per folder, from before anything there is read or deleted
        return _write_run(cfg, output, spec, workers=workers, resume=resume, overwrite=overwrite, progress=progress,
                          synthesizer=synthesizer, engine=engine, ray_address=ray_address, discard_edits=discard_edits)


def _write_run(cfg: GenerateConfig, output: Path, spec, *, workers: int, resume: bool, overwrite: bool,
               progress: bool, synthesizer: dict | None, engine: str, ray_address: str | None,
               discard_edits: bool) -> dict:
    """:func:`generate`'s work once its options are checked, under the output folder's lock."""
    bank = defect_bank(cfg, output / SPLIT_FILE if resume else None) if synthesizer is None else None
    synth = build_from_config(cfg, bank) if synthesizer is None else synthesizer_from_config(synthesizer)
    if synthesizer is not None and synth.config() != synthesizer:
        raise ValueError("config.yaml's synthesizer section does not rebuild to the same synthesizer "
                         "(written by another defectforge version?); rerun with the original options")
    bank = bank if bank is not None else bank_of(synth)  # a rebuilt few-shot run records its split too
    images = load_normal_images(cfg.input, cfg.size, progress=progress, bit_depth=cfg.bit_depth,
                                max_pixels=cfg.max_pixels)
    if spec is not None and hasattr(spec, "path_for"):
        for i in range(len(images)):
            spec.path_for(images.relative(i))  # every image has its foreground mask
    config = _config_dict(cfg, synth, images)
    done, repaired, edited = _prepare_output(output, config, resume, overwrite, cfg.count, discard_edits)
    keep = frozenset(edited) if not discard_edits else frozenset()
    if bank is not None and bank.split is not None:  # next to the output: which real defects fed synthesis
        bank.split.save(output / SPLIT_FILE)

    pending = [i for i in range(cfg.count) if i not in done]
    cost = run_cost(synth, round(len(pending) * (1 - cfg.normal_ratio)))
    if cost:
        warnings.warn(cost, LongRunWarning, stacklevel=2)
    chunk = max(1, min(cfg.batch_size, -(-len(pending) // max(1, workers * 4)) if pending else 1))
    chunks = [pending[k:k + chunk] for k in range(0, len(pending), chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.count, initial=cfg.count - len(pending), desc=f"generating {cfg.method}", unit="img")
    records = dict(done)
    synth_config = synthesizer  # workers rebuild the same synthesizer the same way
    if engine == "ray":
        from .ray_engine import run_chunks

        for c, result in run_chunks(chunks, (cfg, str(output), images, spec, synth_config, keep), workers, ray_address):
            for r in result:
                records[r["index"]] = r
            if bar:
                bar.update(len(c))
    elif workers == 1:
        worker = _Worker(cfg, str(output), images, spec, synth_config, keep)
        for c in chunks:
            for r in worker.run(c):
                records[r["index"]] = r
            if bar:
                bar.update(len(c))
    else:
        ctx = get_context("spawn")  # fork after OpenMP start-up can hang; spawn is always safe
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg, str(output), images, spec, synth_config, keep)) as pool:
            for c, result in zip(chunks, pool.map(_run_chunk, chunks)):
                for r in result:
                    records[r["index"]] = r
                if bar:
                    bar.update(len(c))
    if bar:
        bar.close()
    lines = [json.dumps(records[i], sort_keys=True) for i in range(cfg.count)]
    atomic_write_bytes(output / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
    for f in sorted((output / ".records").glob("*.json")) if (output / ".records").is_dir() else []:
        f.unlink()
    if (output / ".records").is_dir() and not any((output / ".records").iterdir()):
        (output / ".records").rmdir()
    labels = [records[i]["label"] for i in range(cfg.count)]
    return {
        "output": str(output), "written": cfg.count, "resumed": len(done), "repaired": repaired,
        "kept_edits": sorted(keep),
        "anomalous": sum(1 for v in labels if v), "normal": sum(1 for v in labels if not v),
        "skipped_inputs": len(images.skipped),
        "failed": sum(1 for i in range(cfg.count) if "failed" in records[i]),
        "low_contrast": sum(1 for i in range(cfg.count)
                            if records[i].get("contrast") is not None and records[i]["contrast"] < 2 / 255),
    }
