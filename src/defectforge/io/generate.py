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
from ..core.seeding import MAX_SEED, sample_rng
from ..core.validation import check_probability, check_range
from .images import atomic_write_bytes, encode_png
from .inputs import NormalImages, load_normal_images

__all__ = ["GenerateConfig", "generate", "build_synthesizer", "OutputExistsError"]

#: Redraws of a sample whose synthesis left it normal (an empty mask, a foreground with no room).
MAX_ATTEMPTS = 20
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

    def validate(self) -> None:
        check_range("count", self.count, 1, 10**8, integer=True)
        check_range("seed", self.seed, 0, MAX_SEED, integer=True)
        check_probability("normal_ratio", self.normal_ratio)
        check_range("batch_size", self.batch_size, 1, 4096, integer=True)


def build_synthesizer(method: str, overrides: dict[str, Any] | None = None, textures: str | None = None,
                      for_dataset: bool = True):
    """The synthesizer of a run: every sample anomalous, empty masks redrawn (unless overridden)."""
    overrides = dict(overrides or {})
    accepted = _accepted_kwargs(method_info(method).cls)
    if textures is not None:
        if "textures" not in accepted:
            raise ValueError(f"method {method!r} takes no texture source; drop --textures")
        overrides.setdefault("textures", str(textures))
    if for_dataset:
        overrides.setdefault("anomaly_probability", 1.0)
        if "empty_mask_policy" in accepted:
            overrides.setdefault("empty_mask_policy", "retry")
    return create(method, **overrides)


def _plan(cfg: GenerateConfig, index: int, n_images: int) -> tuple[int, bool]:
    # stream 1: the generator's own draws, independent of the synthesizer's (stream 0)
    rng = sample_rng(cfg.seed, index, stream=1)
    return int(rng.integers(n_images)), bool(rng.random() < cfg.normal_ratio)


def _attempt_seed(cfg: GenerateConfig, index: int, attempt: int) -> int:
    if attempt == 0:
        return cfg.seed
    return int(sample_rng(cfg.seed, index, stream=1 + attempt).integers(0, MAX_SEED))


class _Worker:
    """Makes and writes the samples of a chunk (in the main process or a pool worker)."""

    def __init__(self, cfg: GenerateConfig, output: str, images: NormalImages):
        self.cfg, self.output, self.images = cfg, Path(output), images
        self.synth = build_synthesizer(cfg.method, cfg.overrides, cfg.textures)
        self.name = cfg.method

    def _paths(self, index: int, normal: bool) -> tuple[str, str | None]:
        if normal:
            return f"test/good/{index:06d}.png", None
        return f"test/{self.name}/{index:06d}.png", f"ground_truth/{self.name}/{index:06d}_mask.png"

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
        batch = torch.from_numpy(np.stack([self.images.images[plans[i][0]] for i in chunk])).permute(0, 3, 1, 2)
        out = self.synth(batch.contiguous(), seed=self.cfg.seed, indices=chunk)
        results = {}
        for k, i in enumerate(chunk):
            results[i] = (out.images[k], out.masks[k], int(out.labels[k]), out.params[k], 0)
        for i, (img, _, label, _, _) in list(results.items()):
            attempt = 0
            while label == 0 and attempt < MAX_ATTEMPTS - 1:
                attempt += 1
                single = batch[chunk.index(i)][None]
                redo = self.synth(single, seed=_attempt_seed(self.cfg, i, attempt), indices=[i])
                label = int(redo.labels[0])
                results[i] = (redo.images[0], redo.masks[0], label, redo.params[0], attempt)
        records = []
        for i in chunk:
            img, mask, label, params, attempt = results[i]
            image = img.permute(1, 2, 0).cpu().numpy()
            mask_np = (mask[0] > 0.5).cpu().numpy()
            records.append(self._write(i, plans[i][0], image, mask_np, params, label, attempt))
        return records

    def _write(self, index: int, src: int, image: np.ndarray, mask: np.ndarray | None, params, label: int,
               attempt: int = 0) -> dict:
        normal = mask is None or label == 0
        image_path, mask_path = self._paths(index, normal)
        atomic_write_bytes(self.output / image_path, encode_png(image))
        record: dict[str, Any] = {
            "index": index, "image_path": image_path, "mask_path": None, "label": int(label),
            "method": self.name if not normal else "good", "seed": self.cfg.seed,
            "source_image": self.images.relative(src), "params": params, "area_fraction": 0.0, "bbox": None,
        }
        if attempt:
            record["attempt"] = attempt
            record["synthesis_seed"] = _attempt_seed(self.cfg, index, attempt)
        if mask is not None and not normal:
            atomic_write_bytes(self.output / mask_path, encode_png(mask.astype(np.uint8) * 255))
            ys, xs = np.nonzero(mask)
            record["mask_path"] = mask_path
            record["area_fraction"] = float(mask.mean())
            record["bbox"] = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        elif mask is not None:
            record["failed"] = f"synthesis left the sample normal after {MAX_ATTEMPTS} attempts"
        # the sample counts as done once its record exists: image and mask are already in place
        atomic_write_bytes(self.output / ".records" / f"{index:06d}.json", json.dumps(record, sort_keys=True).encode())
        return record


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
             batch_size: int = 32, progress: bool = True) -> dict:
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
    cfg = GenerateConfig(str(Path(input)), method, count, seed, size, None if textures is None else str(textures),
                         dict(overrides or {}), normal_ratio, batch_size)
    cfg.validate()
    check_range("workers", workers, 1, 256, integer=True)
    synth = build_synthesizer(cfg.method, cfg.overrides, cfg.textures)  # fails fast on bad names/values
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
