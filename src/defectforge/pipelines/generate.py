"""The dataset generator: a folder of good images in, an MVTec-style defect dataset out.

Layout written under ``OUTPUT`` (anomalib's ``Folder`` / MVTec readers take it as it is)::

    test/<method>/000012.png                 synthetic anomalies
    ground_truth/<method>/000012_mask.png    their masks, 0/255
    test/good/000013.png                     normal samples (only with normal_ratio > 0)
    manifest.jsonl                           one line per sample, in index order
    config.yaml                              the full run configuration

Sample ``i`` depends on ``(seed, i)`` alone: its source image, whether it is normal, and every
synthesis parameter. So the files are byte-identical whatever the number of workers, and an
interrupted run resumed with ``resume=True`` ends exactly as an uninterrupted one. Every file
is written atomically (temporary file + rename); finished samples are recorded one file each
under ``.records/`` until the manifest is assembled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from .. import __version__
from ..core.registry import _accepted_kwargs, create, method_info
from ..core.seeding import MAX_RETRIES, MAX_SEED, Stream, retry_stream, sample_rng
from ..core.validation import check_probability, check_range
from ..io.images import atomic_write_bytes, encode_png
from ..io.inputs import NormalImages, load_normal_images

__all__ = ["GenerateConfig", "generate", "build_synthesizer", "build_from_config", "OutputExistsError"]

#: Tries of a sample whose synthesis left it normal (an empty mask, a foreground with no room).
MAX_ATTEMPTS = MAX_RETRIES + 1
#: Other normal images given to methods that cut from another image (NSA, DefectMaker), per sample.
DONOR_POOL = 4
_GENERATED = ("test", "ground_truth", "manifest.jsonl", "config.yaml", ".records", "skipped.jsonl")


class OutputExistsError(FileExistsError):
    """The output folder holds another run or other files."""


@dataclass
class GenerateConfig:
    """Everything that determines a generated dataset (written to ``config.yaml``)."""

    input: str
    method: str
    count: int
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

    def validate(self) -> None:
        check_range("count", self.count, 1, 10**8, integer=True)
        check_range("seed", self.seed, 0, MAX_SEED, integer=True)
        check_probability("normal_ratio", self.normal_ratio)
        check_range("batch_size", self.batch_size, 1, 4096, integer=True)
        check_range("donor_pool", self.donor_pool, 0, 1024, integer=True)
        from ..sources.foreground import parse_foreground

        parse_foreground(self.foreground, self.foreground_threshold, self.foreground_invert, None)
        if self.foreground_masks is not None and self.foreground not in (None, "none"):
            raise ValueError("give either --foreground or --foreground-masks, not both")
        if self.mix is not None and self.overrides:
            raise ValueError("--set applies to a single method; drop it when using --mix")


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
    accepted = _accepted_kwargs(info.cls)
    if textures is not None:
        if "textures" not in accepted:
            raise ValueError(f"method {method!r} takes no texture source; drop --textures")
        overrides.setdefault("textures", str(textures))
    if for_dataset:
        for key, value in _DATASET_OVERLAY.items():
            if key in accepted and not _defines_preset(info, key):
                overrides.setdefault(key, value)
    return create(method, **overrides)


#: What a dataset (or a training batch's synthetic half) asks of every method, where it may.
_DATASET_OVERLAY = {"anomaly_probability": 1.0, "empty_mask_policy": "retry"}


def _defines_preset(info, key: str) -> bool:
    """``key`` is set by the preset to another value than its class's constructor default."""
    import inspect

    if key not in info.defaults:
        return False
    parameter = inspect.signature(info.cls.__init__).parameters.get(key)
    return parameter is None or parameter.default is inspect.Parameter.empty or parameter.default != info.defaults[key]


def build_from_config(cfg: GenerateConfig):
    """The synthesizer of a run: one method or a ``--mix``, wrapped by the count/area/shape controls."""
    if cfg.mix is not None:
        from ..cli.parsing import parse_mix
        from ..synthesizers.compose import mix

        names, probs = parse_mix(cfg.mix)
        synth = mix([build_synthesizer(n, None, cfg.textures) for n in names], probs)
    else:
        synth = build_synthesizer(cfg.method, cfg.overrides, cfg.textures)
    if cfg.defect_count is not None or cfg.area_range is not None or cfg.mask_bank is not None:
        from ..synthesizers.compose import control

        synth = control(synth, defect_count=tuple(cfg.defect_count) if cfg.defect_count else 1,
                        area_range=None if cfg.area_range is None else tuple(cfg.area_range),
                        mask_bank=cfg.mask_bank)
    return synth


def _donor_indices(cfg: GenerateConfig, index: int, source: int, n_images: int) -> list[int]:
    # the donors of sample ``index``, other images than its source, drawn by its seed
    others = n_images - 1
    k = min(cfg.donor_pool, others)
    if k <= 0:
        return []
    picks = sample_rng(cfg.seed, index, stream=Stream.DONORS).choice(others, size=k, replace=False)
    return [int(p) + (1 if p >= source else 0) for p in picks]


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


class _Worker:
    """Makes and writes the samples of a chunk (in the main process or a pool worker)."""

    def __init__(self, cfg: GenerateConfig, output: str, images: NormalImages):
        from ..sources.foreground import parse_foreground

        self.cfg, self.output, self.images = cfg, Path(output), images
        self.synth = build_from_config(cfg)
        self.name = cfg.method
        self.foreground = parse_foreground(cfg.foreground, cfg.foreground_threshold, cfg.foreground_invert,
                                           cfg.foreground_masks)
        self.uses_donors = bool(getattr(self.synth, "uses_donors", False)) and cfg.donor_pool > 0

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
        name = self._method_of(params)
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

    def _synthesize(self, chunk: list[int], plans) -> list[dict]:
        if self.uses_donors and len(chunk) > 1:
            # each sample has its own donor pool (drawn by its seed), so it is made on its own
            return [r for i in chunk for r in self._synthesize([i], plans)]
        sources = [plans[i][0] for i in chunk]
        # channels-first copy made by numpy (a torch copy runs its own threads, which stall on a busy machine)
        batch = torch.from_numpy(np.ascontiguousarray(np.stack([self.images.images[s] for s in sources]).transpose(0, 3, 1, 2)))
        context, fallbacks = self._context(batch, sources, chunk)
        out = self.synth(batch, seed=self.cfg.seed, indices=chunk, context=context)
        results = {}
        for k, i in enumerate(chunk):
            results[i] = (out.images[k], out.masks[k], int(out.labels[k]), out.params[k], 0)
        for i, (img, _, label, params, _) in list(results.items()):
            attempt = 0
            k = chunk.index(i)
            while label == 0 and not _drawn_normal(params) and attempt < MAX_ATTEMPTS - 1:
                attempt += 1
                single = batch[k][None]
                sub_context = context if len(chunk) == 1 else context.select(torch.tensor([k]))
                redo = self.synth(single, seed=_attempt_seed(self.cfg, i, attempt), indices=[i], context=sub_context)
                label, params = int(redo.labels[0]), redo.params[0]
                results[i] = (redo.images[0], redo.masks[0], label, params, attempt)
        records = []
        for k, i in enumerate(chunk):
            img, mask, label, params, attempt = results[i]
            image = img.permute(1, 2, 0).cpu().numpy()
            mask_np = (mask[0] > 0.5).cpu().numpy()
            record = self._write(i, plans[i][0], image, mask_np, params, label, attempt,
                                 foreground_fallback=None if fallbacks is None else fallbacks[k],
                                 donors=_donor_indices(self.cfg, i, plans[i][0], len(self.images))
                                 if self.uses_donors else None)
            records.append(record)
        return records

    def _write(self, index: int, src: int, image: np.ndarray, mask: np.ndarray | None, params, label: int,
               attempt: int = 0, foreground_fallback: str | None = None, donors: list[int] | None = None) -> dict:
        normal = mask is None or label == 0
        image_path, mask_path = self._paths(index, normal, params)
        atomic_write_bytes(self.output / image_path, encode_png(image))
        record: dict[str, Any] = {
            "index": index, "image_path": image_path, "mask_path": None, "label": int(label),
            "method": self._method_of(params) if not normal else "good", "seed": self.cfg.seed,
            "source_image": self.images.relative(src), "params": params, "area_fraction": 0.0, "bbox": None,
        }
        if foreground_fallback:
            record["foreground_fallback"] = foreground_fallback
        if donors:
            record["donor_images"] = [self.images.relative(d) for d in donors]
        if attempt:
            record["attempt"] = attempt
            record["synthesis_seed"] = _attempt_seed(self.cfg, index, attempt)
        if mask is not None and not normal:
            atomic_write_bytes(self.output / mask_path, encode_png(mask.astype(np.uint8) * 255))
            ys, xs = np.nonzero(mask)
            record["mask_path"] = mask_path
            record["area_fraction"] = float(mask.mean())
            record["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
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


def _init_worker(cfg: GenerateConfig, output: str, images: NormalImages) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = _Worker(cfg, output, images)


def _run_chunk(indices: list[int]) -> list[dict]:
    assert _WORKER is not None
    return _WORKER.run(indices)


def _config_dict(cfg: GenerateConfig, synth, images: NormalImages) -> dict:
    return {
        "defectforge_version": __version__,
        "generator": asdict(cfg),
        "synthesizer": synth.config(),
        "inputs": {"root": str(images.root), "count": len(images), "skipped": len(images.skipped)},
    }


def _comparable(config: dict) -> dict:
    out = json.loads(json.dumps(config))
    out.pop("defectforge_version", None)
    return out


def _prepare_output(output: Path, config: dict, resume: bool, overwrite: bool) -> None:
    config_path = output / "config.yaml"
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"output {output} exists and is not a folder")
    if output.exists() and any(output.iterdir()):
        if overwrite:
            for name in _GENERATED:
                target = output / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            if any(output.iterdir()):
                raise OutputExistsError(f"output folder {output} holds files this tool did not write; "
                                        "choose an empty or new folder")
        elif resume:
            if not config_path.exists():
                raise OutputExistsError(f"cannot resume: {output} holds no config.yaml of an earlier run")
            previous = yaml.safe_load(config_path.read_text())
            if _comparable(previous) != _comparable(config):
                raise OutputExistsError(f"cannot resume: {config_path} describes a different run "
                                        "(method, seed, count, size, parameters or inputs differ); "
                                        "use the same command, or --overwrite to start again")
        else:
            what = "another run" if config_path.exists() else "other files"
            raise OutputExistsError(f"output folder {output} already holds {what}; pass --resume to continue "
                                    "that run or --overwrite to replace it")
    try:
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config, sort_keys=True).encode())
    except PermissionError as exc:
        raise PermissionError(f"output folder {output} is not writable ({exc}); choose another folder") from exc


def _done_indices(output: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    manifest = output / "manifest.jsonl"
    if manifest.exists():
        for line in manifest.read_text().splitlines():
            record = json.loads(line)
            if "index" in record:
                done[record["index"]] = record
    records = output / ".records"
    if records.is_dir():
        for f in records.glob("*.json"):
            record = json.loads(f.read_text())
            done[record["index"]] = record
    return done


def generate(input: str | os.PathLike, output: str | os.PathLike, method: str, count: int, seed: int = 0,
             size: int | None = None, textures: str | None = None, overrides: dict[str, Any] | None = None,
             normal_ratio: float = 0.0, workers: int = 1, resume: bool = False, overwrite: bool = False,
             batch_size: int = 32, progress: bool = True, foreground: str | None = None,
             foreground_threshold: float | None = None, foreground_invert: bool = False,
             foreground_masks: str | os.PathLike | None = None, mix: str | None = None,
             defect_count: tuple[int, int] | int | None = None, area_range: tuple[float, float] | None = None,
             mask_bank: str | os.PathLike | None = None, donor_pool: int = DONOR_POOL) -> dict:
    """Write a synthetic defect dataset (see the module docstring); returns a summary dict.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> from defectforge.io.images import write_image
    >>> src, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> write_image(src / "a.png", np.full((64, 64, 3), 128, np.uint8))
    >>> generate(src, out, "cutpaste", count=2, progress=False)["written"]
    2
    """
    if isinstance(defect_count, (int, np.integer)):
        defect_count = (int(defect_count), int(defect_count))
    cfg = GenerateConfig(str(Path(input)), "mix" if mix is not None and not method else method, count, seed, size,
                         None if textures is None else str(textures), dict(overrides or {}), normal_ratio, batch_size,
                         foreground=None if foreground in (None, "none") else str(foreground),
                         foreground_threshold=foreground_threshold, foreground_invert=bool(foreground_invert),
                         foreground_masks=None if foreground_masks is None else str(foreground_masks),
                         mix=mix, defect_count=None if defect_count is None else [int(v) for v in defect_count],
                         area_range=None if area_range is None else [float(v) for v in area_range],
                         mask_bank=None if mask_bank is None else str(mask_bank), donor_pool=donor_pool)
    cfg.validate()
    check_range("workers", workers, 1, 256, integer=True)
    synth = build_from_config(cfg)  # fails fast on bad names/values
    images = load_normal_images(cfg.input, cfg.size, progress=progress)
    output = Path(output)
    config = _config_dict(cfg, synth, images)
    _prepare_output(output, config, resume, overwrite)

    done = _done_indices(output) if resume else {}
    pending = [i for i in range(cfg.count) if i not in done]
    chunk = max(1, min(cfg.batch_size, -(-len(pending) // max(1, workers * 4)) if pending else 1))
    chunks = [pending[k:k + chunk] for k in range(0, len(pending), chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.count, initial=cfg.count - len(pending), desc=f"generating {method}", unit="img")
    records = dict(done)
    if workers == 1:
        worker = _Worker(cfg, str(output), images)
        for c in chunks:
            for r in worker.run(c):
                records[r["index"]] = r
            if bar:
                bar.update(len(c))
    else:
        ctx = get_context("spawn")  # fork after OpenMP start-up can hang; spawn is always safe
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(cfg, str(output), images)) as pool:
            for c, result in zip(chunks, pool.map(_run_chunk, chunks)):
                for r in result:
                    records[r["index"]] = r
                if bar:
                    bar.update(len(c))
    if bar:
        bar.close()
    lines = [json.dumps(s, sort_keys=True) for s in images.skipped]
    lines += [json.dumps(records[i], sort_keys=True) for i in range(cfg.count)]
    atomic_write_bytes(output / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
    shutil.rmtree(output / ".records", ignore_errors=True)
    labels = [records[i]["label"] for i in range(cfg.count)]
    return {
        "output": str(output), "written": cfg.count, "resumed": len(done), "anomalous": sum(1 for v in labels if v),
        "normal": sum(1 for v in labels if not v), "skipped_inputs": len(images.skipped),
        "failed": sum(1 for i in range(cfg.count) if "failed" in records[i]),
    }
