"""Evaluate a generated tree against real anomalies: FID, KID, IS and IC-LPIPS per defect type.

The generated tree is what ``defectforge generate`` writes: ``manifest.jsonl`` (one JSON object
per line with ``image_path``, ``mask_path``, ``label``, ``method``..., paths relative to the
tree) next to ``test/<method>/`` images; a plain folder of images is read as one group. The real
side is an MVTec AD category (``test/<defect>/*`` except ``good``) or a plain folder of images.

"Per defect type" groups the generated anomalies by the real defect type a sample was made from
(the manifest's ``defect.type``, for ``copy_paste`` and ``defect_transplant``), else by their
``method`` field; every group and the overall set are compared with all real anomalies pooled.
Normal generated samples (label 0) are left out unless ``include_normal``. A few-shot run's
``fewshot_split.json`` names the real defects that fed synthesis: those are left out of the real
side, so a run is scored against the held-out defects only.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.validation import check_choice, suggest
from ..io.mvtec import defect_folders, mask_path
from .features import FeatureCache, extract_features, list_images, load_fid_inception, load_is_inception
from .realism import (
    IS_NUM_SPLITS,
    KID_MAX_SUBSET_SIZE,
    KID_NUM_SUBSETS,
    fid_from_features,
    inception_score_from_probs,
    kid_from_features,
)

__all__ = ["ImageRecord", "read_generated", "read_real", "evaluate_synthesis", "SYNTHESIS_METRICS", "format_table"]

#: Metric names accepted by :func:`evaluate_synthesis` and ``defectforge evaluate --metrics``.
SYNTHESIS_METRICS = ("fid", "kid", "is", "ic-lpips")
OVERALL = "overall"


@dataclass(frozen=True)
class ImageRecord:
    """One image of a generated or real set."""

    path: Path
    group: str
    label: int
    mask_path: Path | None = None


def read_generated(root: str | os.PathLike) -> list[ImageRecord]:
    """Records of a generated tree (``manifest.jsonl``) or, without a manifest, of an image folder.

    Raises a ``ValueError`` naming the manifest line when an entry is malformed and a
    ``FileNotFoundError`` naming the file when an image is missing.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"generated folder {root} does not exist")
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        paths = list_images(root)
        if not paths:
            raise FileNotFoundError(f"{root} has neither a manifest.jsonl nor any image file")
        return [ImageRecord(p, "all", 1) for p in paths]
    records = []
    with open(manifest, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{manifest} line {number} is not valid JSON: {exc}") from exc
            if "skipped_input" in entry:  # an unreadable input the generator listed, not a sample
                continue
            missing = [k for k in ("image_path", "label", "method") if k not in entry]
            if missing:
                raise ValueError(f"{manifest} line {number} lacks {', '.join(missing)}")
            path = root / entry["image_path"]
            if not path.is_file():
                raise FileNotFoundError(f"{manifest} line {number}: image {path} does not exist")
            mask = root / entry["mask_path"] if entry.get("mask_path") else None
            defect = entry.get("defect")
            group = defect["type"] if isinstance(defect, dict) and isinstance(defect.get("type"), str) \
                else entry["method"]
            records.append(ImageRecord(path, str(group), int(entry["label"]), mask))
    if not records:
        raise ValueError(f"{manifest} is empty")
    return records


def read_real(root: str | os.PathLike) -> list[ImageRecord]:
    """Real anomalies of an MVTec AD category (``test/<defect>/``, not ``good``), or an image folder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"real folder {root} does not exist")
    test = root / "test"
    if not test.is_dir():
        paths = list_images(root)
        if not paths:
            raise FileNotFoundError(f"{root} has no test/ folder (MVTec layout) and no image file")
        return [ImageRecord(p, "all", 1) for p in paths]
    records = []
    for defect in defect_folders(root):
        for path in list_images(defect, recursive=False):
            records.append(ImageRecord(path, defect.name, 1, mask_path(root, defect.name, path)))
    if not records:
        raise FileNotFoundError(f"{test} holds no anomalous images (only test/good or nothing)")
    return records


def held_out_real(real: Sequence[ImageRecord], generated_dir: str | os.PathLike):
    """``real`` without the defects that fed a few-shot run's synthesis (its ``fewshot_split.json``).

    Returns ``(kept records, how many were left out, a note for the results or None)``.
    """
    from ..pipelines.build import SPLIT_FILE
    from ..sources.defects import FewShotSplit

    split_file = Path(generated_dir) / SPLIT_FILE
    if not split_file.is_file():
        return list(real), 0, None
    split = FewShotSplit.load(split_file)
    root = Path(split.root).resolve()
    trained = {(root / rel).resolve() for files in split.train.values() for rel in files}
    kept = [r for r in real if r.path.resolve() not in trained]
    left_out = len(real) - len(kept)
    if left_out:
        note = (f"{left_out} real defect image(s) that fed synthesis (the training part of {split_file}) left out; "
                f"scored against the {len(kept)} held-out one(s)")
    else:
        note = (f"{split_file} names {len(trained)} training image(s) under {split.root}, none of them among the "
                "real images given: every real image is used")
    return kept, left_out, note


def _centres(real: Sequence[ImageRecord]) -> list[Path]:
    """First third (rounded up) of each real defect type, by file name: the IC-LPIPS centres."""
    by_type: dict[str, list[Path]] = {}
    for record in real:
        by_type.setdefault(record.group, []).append(record.path)
    centres = []
    for paths in by_type.values():
        paths = sorted(paths)
        centres += paths[: math.ceil(len(paths) / 3)]
    return centres


def _read_config(path: Path) -> Any:
    """The generation run's config.yaml (for provenance in the results), or None."""
    if not path.is_file():
        return None
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {"unreadable": str(path)}


def _parse_metrics(metrics: str | Sequence[str]) -> list[str]:
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    if not names:
        raise ValueError(f"no metric given; choose from {', '.join(SYNTHESIS_METRICS)}")
    for name in names:
        if name not in SYNTHESIS_METRICS:
            raise ValueError(f"unknown metric {name!r}.{suggest(name, SYNTHESIS_METRICS)} "
                             f"Choose from {', '.join(SYNTHESIS_METRICS)}")
    return list(dict.fromkeys(names))


def evaluate_synthesis(generated_dir: str | os.PathLike, real_dir: str | os.PathLike, *,
                       metrics: str | Sequence[str] = ("fid", "kid"), protocol: str = "dfmgan",
                       fid_weights: str | os.PathLike | None = None, is_weights: str | os.PathLike | None = None,
                       lpips_backbone: str | os.PathLike | None = None,
                       lpips_linear: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | bool | None = None, batch_size: int = 16,
                       device: str = "cpu", kid_subsets: int = KID_NUM_SUBSETS,
                       kid_subset_size: int = KID_MAX_SUBSET_SIZE, seed: int = 0, include_normal: bool = False,
                       lpips_image_size: int = 256,
                       progress: bool = True, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Realism and diversity of a generated tree against real anomalies.

    Parameters
    ----------
    generated_dir : path
        Output of ``defectforge generate`` (with ``manifest.jsonl``) or a folder of images.
    real_dir : path
        MVTec AD category folder, or a folder of images.
    metrics : str or list of str
        Any of ``fid``, ``kid``, ``is``, ``ic-lpips`` (comma-separated string accepted).
    protocol : {"dfmgan", "anomalydiffusion", "seas"}
        IC-LPIPS protocol (network, cluster cap, number of generated images).
    fid_weights, is_weights, lpips_backbone, lpips_linear : path, optional
        Local weight files; see :mod:`defectforge.metrics.weights` for the other places searched.
    cache_dir : path or bool, optional
        Feature cache directory (``False`` disables caching).
    kid_subsets, kid_subset_size, seed
        KID protocol (StyleGAN2-ADA: 100 subsets of up to 1000) and its random draw.
    lpips_image_size : int
        Side images are resized to for LPIPS (256 in DFMGAN and AnomalyDiffusion).

    Returns
    -------
    dict
        ``protocols`` (one sentence per metric), ``real`` (counts per defect type), ``groups``
        (``overall`` and one entry per method: ``n_generated`` and the metric values), ``notes``,
        ``timings_s``.
    """
    from .diversity import IC_LPIPS_PROTOCOLS

    names = _parse_metrics(metrics)
    check_choice("protocol", protocol, IC_LPIPS_PROTOCOLS)
    say = log or (lambda message: None)
    generated = read_generated(generated_dir)
    real, left_out, split_note = held_out_real(read_real(real_dir), generated_dir)
    if split_note:
        say(split_note)
    if not real:
        raise ValueError(f"{real_dir}: no real defect is left once the ones that fed synthesis are left out "
                         f"({Path(generated_dir) / 'fewshot_split.json'}); give the category the run was made from")
    skipped_normal = sum(r.label == 0 for r in generated)
    if not include_normal:
        generated = [r for r in generated if r.label > 0]
    if not generated:
        raise ValueError(f"{generated_dir} holds no anomalous generated image (label >= 1)")
    groups: dict[str, list[int]] = {OVERALL: list(range(len(generated)))}
    by_group: dict[str, list[int]] = {}
    for index, record in enumerate(generated):
        by_group.setdefault(record.group, []).append(index)
    if len(by_group) > 1:  # a single group would repeat the overall numbers
        groups.update(by_group)
    real_counts: dict[str, int] = {}
    for record in real:
        real_counts[record.group] = real_counts.get(record.group, 0) + 1
    result: dict[str, Any] = {
        "generated": str(generated_dir),
        "generated_config": _read_config(Path(generated_dir) / "config.yaml"),
        "real": str(real_dir),
        "metrics": names,
        "protocols": {},
        "real_counts": real_counts,
        "n_real": len(real),
        "real_left_out_fed_synthesis": left_out,
        "skipped_normal_generated": skipped_normal if not include_normal else 0,
        "groups": {name: {"n_generated": len(idx)} for name, idx in groups.items()},
        "notes": [split_note] if split_note else [],
        "timings_s": {},
    }
    cache: FeatureCache | bool = False if cache_dir is False else FeatureCache(None if cache_dir in (None, True) else cache_dir)
    gen_paths = [r.path for r in generated]
    real_paths = [r.path for r in real]

    if "fid" in names or "kid" in names:
        start = time.perf_counter()
        network = load_fid_inception(fid_weights, device=device)
        say(f"FID/KID features: {len(real_paths)} real, {len(gen_paths)} generated ({network.name})")
        real_feats = extract_features(real_paths, network, batch_size=batch_size, cache=cache,
                                      progress=progress, desc="real features")
        gen_feats = extract_features(gen_paths, network, batch_size=batch_size, cache=cache,
                                     progress=progress, desc="generated features")
        result["timings_s"]["inception_features"] = round(time.perf_counter() - start, 2)
        feature_note = (f"InceptionV3 pool3 {real_feats.shape[1]}-d ({network.name}, weights sha1 "
                        f"{network.weights_id}), TF1-bilinear resize to 299, x/128-1")
        if "fid" in names:
            result["protocols"]["fid"] = f"FID on {feature_note}; statistics of all images (StyleGAN2-ADA/DFMGAN)"
        if "kid" in names:
            result["protocols"]["kid"] = (f"KID on {feature_note}; kernel (x.y/d+1)^3, unbiased MMD^2, mean over "
                                          f"{kid_subsets} subsets of up to {kid_subset_size} (seed {seed}); "
                                          "StyleGAN2-ADA/DFMGAN")
        start = time.perf_counter()
        for name, idx in groups.items():
            entry = result["groups"][name]
            feats = gen_feats[idx]
            if "fid" in names:
                entry["fid"] = fid_from_features(real_feats, feats) if len(idx) >= 2 and len(real) >= 2 else math.nan
            if "kid" in names:
                if len(idx) >= 2 and len(real) >= 2:
                    entry["kid"], entry["kid_std"] = kid_from_features(real_feats, feats, kid_subsets,
                                                                       kid_subset_size, seed)
                else:
                    entry["kid"], entry["kid_std"] = math.nan, math.nan
        result["timings_s"]["fid_kid"] = round(time.perf_counter() - start, 2)
        small = min(len(real), min(len(idx) for idx in groups.values()))
        if small < real_feats.shape[1]:
            result["notes"].append(f"FID from {small} images in a set is biased upwards (covariance of "
                                   f"{real_feats.shape[1]}-d features from fewer samples); compare FIDs only "
                                   "at equal set sizes")

    if "is" in names:
        start = time.perf_counter()
        network = load_is_inception(is_weights, device=device)
        probs = extract_features(gen_paths, network, batch_size=batch_size, cache=cache, progress=progress,
                                 desc="generated IS probabilities")
        result["protocols"]["is"] = (f"IS with {network.name} (weights sha1 {network.weights_id}), "
                                     f"{IS_NUM_SPLITS} splits (StyleGAN2-ADA)")
        for name, idx in groups.items():
            entry = result["groups"][name]
            if len(idx) >= IS_NUM_SPLITS:
                entry["is"], entry["is_std"] = inception_score_from_probs(probs[idx], IS_NUM_SPLITS)
            else:
                entry["is"], entry["is_std"] = math.nan, math.nan
                result["notes"].append(f"IS of {name!r} is nan: {len(idx)} images, fewer than {IS_NUM_SPLITS} splits")
        result["timings_s"]["is"] = round(time.perf_counter() - start, 2)

    if "ic-lpips" in names:
        from .diversity import ic_lpips, load_lpips

        start = time.perf_counter()
        spec = IC_LPIPS_PROTOCOLS[protocol]
        model = load_lpips(spec.net, lpips_backbone, lpips_linear, device=device)
        centres = _centres(real)
        key = f"ic_lpips[{protocol}]"
        result["protocols"][key] = spec.describe().replace("at 256x256", f"at {lpips_image_size}x{lpips_image_size}") \
            + f"; {len(centres)} centres from {real_dir}"
        for name, idx in groups.items():
            say(f"IC-LPIPS[{protocol}] for {name}: {len(idx)} generated, {len(centres)} centres")
            out = ic_lpips(model, [gen_paths[i] for i in idx], centres, cap=spec.cap,
                           max_generated=spec.max_generated, size=lpips_image_size, progress=progress)
            entry = result["groups"][name]
            entry[key] = out["ic_lpips"]
            entry[f"{key}_clusters_used"] = out["clusters_used"]
        result["timings_s"]["ic_lpips"] = round(time.perf_counter() - start, 2)
    return result


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of :func:`evaluate_synthesis` results, protocols listed below it."""
    columns = ["n_generated"]
    for entry in result["groups"].values():
        for key in entry:
            if key not in columns and not key.endswith("_clusters_used"):
                columns.append(key)
    header = ["group"] + columns
    rows = [[name] + [_fmt(entry.get(c, "")) for c in columns] for name, entry in result["groups"].items()]
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)) for row in rows]
    lines.append("")
    lines.append(f"real: {result['n_real']} images ({', '.join(f'{k}: {v}' for k, v in result['real_counts'].items())})")
    for name, text in result["protocols"].items():
        lines.append(f"{name}: {text}")
    for note in result["notes"]:
        lines.append(f"note: {note}")
    return "\n".join(lines)
