"""The per-sample work of a dataset run: draw sample ``i``'s source image and whether it is
normal from ``(seed, i)``, synthesize (redrawing empty or too faint anomalies from the sample's
own stream), encode and write its image and mask atomically, and record it (``.records/``).

A :class:`SampleWriter` runs chunks of sample indices in whichever process holds it (the main
process, a pool worker or a Ray task: :mod:`defectforge.pipelines.chunks`); what it writes for
sample ``i`` depends on ``(seed, i)`` alone.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.seeding import MAX_RETRIES, MAX_SEED, Stream, donor_indices, retry_stream, sample_rng
from ..io.files import atomic_write_bytes
from ..io.images import ImageDecodeWarning, encode_png, png_parameters, set_pixel_limit, warn_once
from ..io.inputs import NormalImages
from .build import SPLIT_FILE, build_from_config, defect_bank, procedural_banks, synthesizer_from_config
from .run_config import GenerateConfig
from .sample_record import file_record, mask_contrast, mask_fields, real_defect

__all__ = ["SampleWriter", "MAX_ATTEMPTS", "show_worker_warnings"]


#: Tries of a sample whose synthesis left it normal (an empty mask, a foreground with no room) or,
#: with ``min_contrast``, changed its masked pixels too little.
MAX_ATTEMPTS = MAX_RETRIES + 1


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


class SampleWriter:
    """Makes and writes the samples of a chunk (in the main process, a pool worker or a Ray task)."""

    def __init__(self, cfg: GenerateConfig, output: str, images: NormalImages, foreground=None,
                 synthesizer: dict | None = None, keep: frozenset[str] = frozenset(), built=None,
                 textures: dict | None = None):
        self.cfg, self.output, self.images = cfg, Path(output), images
        set_pixel_limit(cfg.max_pixels)  # a worker process reads textures (and banks) under the run's limit
        self.keep = keep  # files the user edited: a sample made again for its missing sibling leaves them
        # the run's own synthesizer where this process has it (a one-process run builds it once); else
        # the same one rebuilt (a few-shot split was written next to the output before workers started)
        if built is not None:
            self.synth = built
        elif synthesizer is None:
            self.synth = build_from_config(cfg, defect_bank(cfg, self.output / SPLIT_FILE))
        else:
            self.synth = synthesizer_from_config(synthesizer)
        for bank in procedural_banks(self.synth):  # made once by the main process, not again here
            if bank.key in (textures or {}):
                bank.adopt(textures[bank.key])
        self.name = cfg.method
        self.foreground = foreground
        self.uses_donors = self.synth.capabilities["uses_donors"] and cfg.donor_pool > 0
        depth = images.bit_depth if cfg.output_bit_depth == 16 else 8
        self.output_scale = None if cfg.output_bit_depth == 8 else (2 ** (depth if depth > 8 else 16) - 1) / 255.0
        self.image_png = png_parameters(cfg.png_compression)
        self.mask_png = png_parameters(cfg.png_compression, binary=True)

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
        name = real_defect(params).get("type") or self._method_of(params)
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

    def run_reporting(self, indices: Sequence[int]) -> tuple[list[dict], list[tuple[bool, str]]]:
        """:meth:`run` in a worker process: its records and the warnings it raised, as
        ``(is an ImageDecodeWarning, message)`` for the main process to show (a file's decode
        warning once, whichever worker read it; a flag, since any warning class may not pickle)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            records = self.run(indices)
        return records, [(issubclass(w.category, ImageDecodeWarning), str(w.message)) for w in caught]

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
            contrast = mask_contrast(image.permute(1, 2, 0).cpu().numpy(), source, mask[0].cpu().numpy() > 0.5)
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
            mask_np = mask[0].cpu().numpy() > 0.5  # compared by numpy: a torch op costs more on one small mask
            records.append(self._write(i, sources[k], image, mask_np, params, label, attempt,
                                       foreground_fallback=None if fallbacks is None else fallbacks[k],
                                       donors=_donor_indices(self.cfg, i, sources[k], len(self.images))
                                       if self.uses_donors else None, redrawn=reasons, unresolved=reason))
        return records

    def _encode(self, image: np.ndarray) -> bytes:
        if self.output_scale is None:
            return encode_png(image, parameters=self.image_png)
        return encode_png((image.astype(np.float64) * self.output_scale + 0.5).astype(np.uint16),
                          parameters=self.image_png)

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
            "image_file": file_record(data),
        }
        if foreground_fallback:
            record["foreground_fallback"] = foreground_fallback
        if not normal and real_defect(params):
            record["defect"] = real_defect(params)
            if "mask_kind" in record["defect"]:  # the mask is a box around a real defect, not its outline
                record["mask_kind"] = record["defect"]["mask_kind"]
        if donors:
            record["donor_images"] = [self.images.relative(d) for d in donors]
        if attempt:
            record["attempt"] = attempt
            record["synthesis_seed"] = _attempt_seed(self.cfg, index, attempt)
            record["redrawn"] = list(redrawn or [])
        if mask is not None and not normal:
            mask_data = encode_png(np.multiply(mask, 255, dtype=np.uint8), parameters=self.mask_png)
            if mask_path not in self.keep:
                atomic_write_bytes(self.output / mask_path, mask_data)
            record["mask_path"] = mask_path
            record["mask_file"] = file_record(mask_data)
            record.update(mask_fields(image, self.images.images[src], mask))
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


def show_worker_warnings(caught: list[tuple[bool, str]]) -> None:
    """Warnings a worker process raised (:meth:`SampleWriter.run_reporting`), shown by this process."""
    for decode, message in caught:
        if decode:
            warn_once(message)
        else:
            warnings.warn(message, UserWarning, stacklevel=2)
