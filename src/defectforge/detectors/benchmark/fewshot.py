"""The few-shot protocol of the generative papers in the benchmark (``defectforge benchmark --few-shot``).

AnomalyDiffusion, DualAnoDiff and DFMGAN give one third of each defect type's real anomalies
(image + mask) to the generator and test on the other two thirds
(``/work/shared/reference/methods.md``, "Few-shot protocol"). Here the split is the
:class:`~defectforge.sources.defects.DefectBank`'s (per type, by source image, seeded, written to
``OUT/fewshot_split.json`` and reused). Every detector trains on the normal training images plus:

- nothing (``patchcore``, the synthesis-free baseline);
- ``real_only``: the few real training defects themselves, oversampled (sample ``j`` of step
  ``s`` is a training defect drawn by ``(seed, s * batch + j)``), no synthesis;
- a hand-crafted method (which ignores the bank);
- ``copy_paste`` / ``defect_transplant`` (or any method that needs a bank), driven by the
  training split;

and is tested on the held-out real defects plus every good test image (the training-split
defect images are removed from the test set). Besides the overall metrics each run records
image AUROC, pixel AUROC and AUPRO per defect type (good test images + that type's held-out
images).

:func:`few_shot_realism` measures FID and KID per defect type (the AnomalyDiffusion / AdaBLDM
tables): each method's generated images against the held-out real defects of that type.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...core.seeding import Stream, sample_rng
from ...core.types import SynthesisResult
from ..data import MVTecCategory

__all__ = ["REAL_ONLY", "RealOnly", "few_shot_subset", "per_type_metrics", "few_shot_realism",
           "few_shot_markdown", "realism_markdown", "run_few_shot_benchmark"]

#: The method name of the no-synthesis, real-defects-only row.
REAL_ONLY = "real_only"
_REAL_STREAM = 3  # random stream of real_only's picks


class RealOnly:
    """The real training defects themselves, oversampled: what a synthesizer returns, without synthesis.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` uint8 real defect images (the training split).
    masks : torch.Tensor
        ``(N, H, W)`` bool, their masks.
    """

    method_name = REAL_ONLY
    uses_donors = False

    def __init__(self, images: torch.Tensor, masks: torch.Tensor):
        if images.shape[0] == 0:
            raise ValueError("real_only needs at least one real training defect; the few-shot split gave none")
        self.images = images
        self.masks = masks

    def __call__(self, images: torch.Tensor, *, seed: int = 0, indices=None, context=None, **_) -> SynthesisResult:
        indices = range(images.shape[0]) if indices is None else indices
        picks = [int(sample_rng(seed, int(i), _REAL_STREAM).integers(self.images.shape[0])) for i in indices]
        out = self.images[picks].to(images.device)
        if out.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"real_only images are {tuple(out.shape[-2:])}, the batch {tuple(images.shape[-2:])}")
        masks = self.masks[picks][:, None].float().to(images.device)
        return SynthesisResult(images=out, masks=masks, labels=torch.ones(len(picks), dtype=torch.long),
                               params=[{"anomalous": True, "real_image": k} for k in picks])


def _split_names(split) -> dict[str, str]:
    """``{"<type>/<stem>": "train"}`` for the split's training images (MVTec test names)."""
    names = {}
    for t, files in split.train.items():
        for f in files:
            names[f"{t}/{Path(f).stem}"] = "train"
    return names


def few_shot_subset(data: MVTecCategory, split) -> tuple[MVTecCategory, list[int], list[int]]:
    """The test set without the split's training images, and the indices of both parts in ``data.test``."""
    train_names = _split_names(split)
    keep = [i for i, n in enumerate(data.test_names) if n not in train_names]
    real = [i for i, n in enumerate(data.test_names) if n in train_names]
    if len(real) != len(train_names):
        missing = sorted(set(train_names) - {data.test_names[i] for i in real})[:5]
        raise ValueError(f"the few-shot split names test images the data does not hold (e.g. {missing}); "
                         "delete the split file to make a new one")
    idx = torch.tensor(keep)
    test = MVTecCategory(root=data.root, size=data.size, train=data.train, test=data.test[idx],
                         test_masks=data.test_masks[idx], test_labels=data.test_labels[idx],
                         test_names=[data.test_names[i] for i in keep], train_files=data.train_files)
    return test, keep, real


def per_type_metrics(scores: torch.Tensor, maps: torch.Tensor, data: MVTecCategory) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC and AUPRO per defect type (good test images + that type's images)."""
    from ...metrics.detection import detection_metrics

    types = [n.split("/")[0] for n in data.test_names]
    good = [i for i, t in enumerate(types) if t == "good"]
    out = {}
    for t in sorted(set(types) - {"good"}):
        idx = good + [i for i, x in enumerate(types) if x == t]
        m = detection_metrics(scores[idx].numpy(), data.test_labels[idx].numpy(), maps[idx].numpy(),
                              data.test_masks[idx].numpy())
        out[t] = {k: m[k] for k in ("image_auroc", "pixel_auroc", "aupro")}
    return out


# ---------------------------------------------------------------------------------------------
# tables

def _mean_std(values) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def few_shot_markdown(runs: dict[str, list[dict]], order: list[str] | None = None) -> str:
    """Overall and per-type AUPRO (mean ± std over seeds) of the few-shot runs."""
    types = sorted({t for rs in runs.values() for r in rs for t in r.get("per_type", {})})
    header = ("| method | seeds | image AUROC | pixel AUROC | AUPRO | " + " | ".join(f"AUPRO {t}" for t in types) + " |")
    lines = [header, "|---|---|---|---|---|" + "---|" * len(types)]
    names = [m for m in (order or []) if m in runs] + sorted(m for m in runs if m not in (order or []))
    names.sort(key=lambda m: -np.nan_to_num(_mean_std([r["metrics"]["aupro"] for r in runs[m]])[0], nan=-1))

    def cell(values):
        mu, sd = _mean_std(values)
        return "-" if math.isnan(mu) else f"{mu:.3f} ± {sd:.3f}"

    for m in names:
        rs = runs[m]
        label = f"{m} (no synthesis, baseline)" if rs[0].get("baseline") else m
        cells = [cell([r["metrics"][k] for r in rs]) for k in ("image_auroc", "pixel_auroc", "aupro")]
        cells += [cell([r.get("per_type", {}).get(t, {}).get("aupro") for r in rs]) for t in types]
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# realism per type

def few_shot_realism(data: MVTecCategory, split, bank, methods: list[str], per_type: int = 50, seed: int = 0,
                     fid_weights: str | None = None, log=print, on_method=None,
                     method_options: dict | None = None) -> dict[str, Any]:
    """FID and KID per defect type of each method's images against the held-out real defects.

    For each type, the reference set is that type's held-out real images (at the benchmark's
    size). A method that needs a bank makes ``per_type`` images with that type only; a
    hand-crafted method makes ``per_type`` images once (it has no types) and is scored against
    every type; ``real_only`` is the training split's real images of the type (the floor: real
    against real). Normal images are the category's training images, drawn by ``seed``. A method
    that takes ``defect_types`` without a bank (``gan_transplant``) makes each type apart too.
    ``method_options``: ``{method: {parameter: value}}`` (e.g. a trained model's path).
    ``on_method(result)``, when given, is called after each method with the result so far (a long
    run can save as it goes).
    """
    from ...metrics.features import extract_features, load_fid_inception
    from ...metrics.realism import fid_from_features, kid_from_features
    from ...core.registry import _accepted_kwargs, method_info
    from ...pipelines.generate import build_synthesizer
    from ...realdefect import needs_bank

    network = load_fid_inception(fid_weights)
    test, keep, real = few_shot_subset(data, split)
    types = sorted({n.split("/")[0] for n in test.test_names} - {"good"})
    feats: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    for t in types:
        idx = [i for i, n in enumerate(test.test_names) if n.startswith(t + "/")]
        feats[f"real/{t}"] = extract_features(test.test[idx], network, progress=False)
    picks = sample_rng(seed, 0, Stream.REALISM_NORMALS).integers(data.train.shape[0], size=per_type)
    normals = data.train[torch.from_numpy(picks)]
    result: dict[str, Any] = {"per_type": per_type, "types": types, "methods": {}, "real_counts":
                              {t: int(feats[f"real/{t}"].shape[0]) for t in types}}
    for name in methods:
        scores = {}
        if name == REAL_ONLY:
            for t in types:
                idx = [i for i in real if data.test_names[i].startswith(t + "/")]
                gen = extract_features(data.test[idx], network, progress=False)
                scores[t] = _fid_kid(feats[f"real/{t}"], gen, fid_from_features, kid_from_features)
        elif needs_bank(name) or "defect_types" in _accepted_kwargs(method_info(name).cls):
            for t in types:
                synth = build_synthesizer(name, _options(name, bank, method_options, defect_types=[t]))
                out = synth(normals, seed=seed, indices=range(per_type))
                gen = extract_features(out.images, network, progress=False)
                scores[t] = _fid_kid(feats[f"real/{t}"], gen, fid_from_features, kid_from_features)
        else:
            synth = build_synthesizer(name, _options(name, bank, method_options))
            donors = normals if getattr(synth, "uses_donors", False) else None
            out = synth(normals, seed=seed, indices=range(per_type), donors=donors)
            gen = extract_features(out.images, network, progress=False)
            for t in types:
                scores[t] = _fid_kid(feats[f"real/{t}"], gen, fid_from_features, kid_from_features)
        result["methods"][name] = scores
        if on_method is not None:
            on_method(result)
        log(f"realism {name:<18} " + "  ".join(f"{t} FID {s['fid']:.1f} KID {s['kid']:.4f}" for t, s in scores.items())
            + f"  ({time.perf_counter() - start:.0f} s)")
    return result


def _options(name: str, bank, method_options: dict | None, **extra) -> dict[str, Any]:
    """A method's constructor overrides: the bank (methods that need one), ``method_options[name]``, ``extra``."""
    from ...realdefect import needs_bank

    return {**({"bank": bank} if needs_bank(name) else {}), **(method_options or {}).get(name, {}), **extra}


def _fid_kid(real, gen, fid, kid) -> dict[str, float]:
    k = kid(real, gen)
    k_mean = float(k[0]) if isinstance(k, (tuple, list)) else float(k)
    k_std = float(k[1]) if isinstance(k, (tuple, list)) and len(k) > 1 else float("nan")
    return {"fid": float(fid(real, gen)), "kid": k_mean, "kid_std": k_std, "n_generated": int(gen.shape[0])}


def realism_markdown(realism: dict[str, Any]) -> str:
    """Per-type FID / KID table (rows: methods; columns: types)."""
    types = realism["types"]
    lines = ["| method | " + " | ".join(f"FID {t}" for t in types) + " | mean FID | "
             + " | ".join(f"KID {t}" for t in types) + " | mean KID |",
             "|---|" + "---|" * (2 * len(types) + 2)]
    rows = sorted(realism["methods"].items(), key=lambda kv: np.mean([s["fid"] for s in kv[1].values()]))
    for name, scores in rows:
        fids = [scores[t]["fid"] for t in types]
        kids = [scores[t]["kid"] for t in types]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1f}" for v in fids) + f" | {np.mean(fids):.1f} | "
                     + " | ".join(f"{v:.4f}" for v in kids) + f" | {np.mean(kids):.4f} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# the whole few-shot benchmark

def run_few_shot_benchmark(data_dir, few_shot: str = "1/3", methods: list[str] | None = None,
                           seeds=(0, 1, 2), out="benchmark_out", config=None, baseline: bool = True,
                           split_seed: int = 0, realism: int = 0, fid_weights: str | None = None,
                           log=print, method_options: dict | None = None) -> dict[str, Any]:
    """Run every missing ``(method, seed)`` under the few-shot protocol and write its tables.

    Parameters
    ----------
    data_dir : path-like
        An MVTec-AD category (its real defects are split per type).
    few_shot : str
        ``"1/3"`` (the papers' protocol), any fraction, or a count per type.
    methods : list of str, optional
        Registry names and/or ``real_only`` (default: ``real_only``, every method that needs a
        bank, and every other image-level method).
    realism : int
        When > 0, also FID / KID per type with this many generated images per method and type.
    method_options : dict, optional
        ``{method: {parameter: value}}`` (CLI ``--set METHOD.KEY=VALUE``): e.g. the ``model`` of
        the methods that need a trained one, which the default method list leaves out otherwise.

    Returns
    -------
    dict
        ``{"run_dir", "split", "rows" (the leaderboard), "few_shot_table", "realism"}``.
    """
    import defectforge

    from ...pipelines.generate import build_synthesizer
    from ...realdefect import needs_bank
    from ...sources.defects import SPLIT_FILE, DefectBank, parse_few_shot
    from ..backbones import load_backbone
    from ..data import check_mvtec_category
    from .leaderboard import collect_runs, write_json, write_leaderboard
    from .runner import BACKBONE_DETECTORS, BASELINE, DETECTORS, BenchmarkConfig, _check_methods, features_cached, \
        load_data_cached, make_detector, run_one

    cfg = config or BenchmarkConfig()
    if cfg.detector not in DETECTORS:
        make_detector(cfg.detector, None)
    kind, value = parse_few_shot(few_shot)
    if methods:
        names = [REAL_ONLY] if REAL_ONLY in methods else []
        names += _check_methods([m for m in methods if m != REAL_ONLY], cfg.detector)
    else:  # methods that need a trained model run only when given one
        image = [n for n in defectforge.list_methods(level="image")
                 if not getattr(defectforge.method_info(n).cls, "needs_model", False) or n in (method_options or {})]
        names = [REAL_ONLY] + [n for n in image if needs_bank(n)] + [n for n in image if not needs_bank(n)]
    unused = sorted(set(method_options or {}) - set(names))
    if unused:
        raise ValueError(f"--set names {unused}, which this run does not include (methods: {names})")
    seeds = [int(s) for s in seeds]
    root = Path(data_dir).expanduser()
    check_mvtec_category(root)
    out = Path(out)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    bank = DefectBank.from_folder(root, few_shot=few_shot, split_file=out / SPLIT_FILE, split_seed=split_seed)
    backbone = load_backbone(cfg.backbone, cfg.backbone_weights).to(cfg.device) \
        if cfg.detector in BACKBONE_DETECTORS or baseline else None
    data, fingerprint = load_data_cached(root, cfg.size, cache_dir, log)
    test, keep, real = few_shot_subset(data, bank.split)
    features = None
    if backbone is not None:
        full = features_cached(backbone, data, fingerprint, cache_dir, log)
        features = {"train": full["train"], "test": full["test"][torch.tensor(keep)]}
    spec = str(value.numerator) + "of" + str(value.denominator) if kind == "fraction" else f"{value}pertype"
    run_dir = out / f"fewshot-{spec}-split{split_seed}-{cfg.run_folder_name(backbone.identity if backbone else 'nobackbone')}"
    log(f"few-shot {few_shot}: {len(real)} real defect images feed synthesis, {len(keep)} test images "
        f"({sum(1 for n in test.test_names if not n.startswith('good/'))} held-out defects); split in {out / SPLIT_FILE}")

    def synthesizer_of(name):
        if name == REAL_ONLY:
            idx = torch.tensor(real)
            return RealOnly(data.test[idx], data.test_masks[idx])
        if needs_bank(name) or name in (method_options or {}):
            return build_synthesizer(name, _options(name, bank, method_options))
        return None

    all_names = ([BASELINE] if baseline else []) + names
    todo = [(m, s) for s in seeds for m in all_names]
    for method, seed in todo:
        if (run_dir / method / f"seed{seed}.json").is_file():
            continue
        run_one(method, seed, cfg, test, backbone, features, run_dir, log,
                synthesizer=None if method == BASELINE else synthesizer_of(method), per_type=True)
        write_leaderboard(run_dir, test, methods=all_names, seeds=seeds)
    board = write_leaderboard(run_dir, test, methods=all_names, seeds=seeds)
    runs = {m: [r for r in rs if r["seed"] in seeds] for m, rs in collect_runs(run_dir).items() if m in all_names}
    table = few_shot_markdown({m: r for m, r in runs.items() if r}, all_names)
    (run_dir / "fewshot.md").write_text(table)
    result = {"run_dir": str(run_dir), "split": bank.split.as_dict(), "rows": board.get("rows", []),
              "few_shot_table": table, "realism": None}
    if realism:
        path = run_dir / f"realism-{realism}.json"
        if path.is_file():
            import json

            scores = json.loads(path.read_text())
        else:
            scores = few_shot_realism(data, bank.split, bank, names, per_type=realism, fid_weights=fid_weights, log=log,
                                      method_options=method_options)
            write_json(path, scores)
        (run_dir / f"realism-{realism}.md").write_text(realism_markdown(scores))
        result["realism"] = scores
    return result
