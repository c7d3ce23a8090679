"""The few-shot protocol of the generative papers in the benchmark (``defectforge benchmark --few-shot``).

AnomalyDiffusion, DualAnoDiff and DFMGAN give one third of each defect type's real anomalies
(image + mask) to the generator and test on the other two thirds (AnomalyDiffusion, Hu et al.,
AAAI 2024; DFMGAN, Duan et al., AAAI 2023). Here the split is the
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
from .per_type import FEW_SHOT_METRICS, per_type_metrics
from .selection import VALIDATION_NORMAL_SHARE, split_normals

__all__ = ["REAL_ONLY", "few_shot_subset", "validation_subset", "per_type_metrics", "few_shot_realism",
           "few_shot_markdown", "realism_markdown", "run_few_shot_benchmark"]

#: The method name of the no-synthesis, real-defects-only row (:mod:`defectforge.realdefect.real_only`).
REAL_ONLY = "real_only"
#: The validation protocol (:func:`run_few_shot_benchmark` with ``validation=True``): the share of
#: each type's few-shot training defects that still feed synthesis (the rest is validated on);
#: :data:`~.selection.VALIDATION_NORMAL_SHARE` of the training normals are the validation set's
#: good images.
VALIDATION_FIT = "2/3"
_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "pixel_ap": "pixel AP",
           "pixel_f1_max": "pixel F1-max", "aupro": "AUPRO"}


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


# ---------------------------------------------------------------------------------------------
# tables

def _mean_std(values) -> tuple[float, float]:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def few_shot_markdown(runs: dict[str, list[dict]], order: list[str] | None = None) -> str:
    """Overall :data:`FEW_SHOT_METRICS` and per-type AUPRO and pixel AP (mean ± std over seeds),
    rows sorted by mean AUPRO."""
    types = sorted({t for rs in runs.values() for r in rs for t in r.get("per_type", {})})
    per_type = [(t, k) for t in types for k in ("aupro", "pixel_ap")]
    header = ("| method | seeds | " + " | ".join(_LABELS[k] for k in FEW_SHOT_METRICS) + " | "
              + " | ".join(f"{_LABELS[k]} {t}" for t, k in per_type) + " |")
    lines = [header, "|---|---|" + "---|" * (len(FEW_SHOT_METRICS) + len(per_type))]
    names = [m for m in (order or []) if m in runs] + sorted(m for m in runs if m not in (order or []))
    names.sort(key=lambda m: -np.nan_to_num(_mean_std([r["metrics"]["aupro"] for r in runs[m]])[0], nan=-1))

    def cell(values):
        mu, sd = _mean_std(values)
        return "-" if math.isnan(mu) else f"{mu:.3f} ± {sd:.3f}"

    for m in names:
        rs = runs[m]
        label = f"{m} (no synthesis, baseline)" if rs[0].get("baseline") else m
        cells = [cell([r["metrics"].get(k) for r in rs]) for k in FEW_SHOT_METRICS]
        cells += [cell([r.get("per_type", {}).get(t, {}).get(k) for r in rs]) for t, k in per_type]
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells).replace("| |", "| - |") + " |")
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
    from ...pipelines.build import build_synthesizer
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
            donors = normals if synth.capabilities["uses_donors"] else None
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

def validation_subset(data: MVTecCategory, features: dict | None, split, inner, split_seed: int,
                      normal_share: float = VALIDATION_NORMAL_SHARE):
    """The validation protocol's training and test data: the training normals minus a held-out share,
    and a test set of those normals plus the validation part of the training defects.

    ``split`` is the few-shot split, ``inner`` the split of its training images (``inner.train``
    feeds synthesis, ``inner.test`` is validated on). The held-out normals are drawn by
    :func:`~.selection.split_normals` with ``split_seed``.
    Returns ``(data, features, record)``; no image of the few-shot test split is used.
    """
    n = data.train.shape[0]
    val_normals, fit_normals = split_normals(n, split_seed, normal_share)
    val_names = {f"{t}/{Path(f).stem}" for t, files in inner.test.items() for f in files}
    val_defects = [i for i, name in enumerate(data.test_names) if name in val_names]
    if len(val_defects) != len(val_names):
        raise ValueError("the validation split names images the data does not hold; delete the split files")
    fit_idx, vn, vd = torch.tensor(fit_normals), torch.tensor(val_normals), torch.tensor(val_defects, dtype=torch.long)
    size = data.train.shape[-1]
    test = torch.cat([data.train[vn], data.test[vd]])
    masks = torch.cat([torch.zeros(len(val_normals), size, size, dtype=data.test_masks.dtype), data.test_masks[vd]])
    labels = torch.cat([torch.zeros(len(val_normals), dtype=data.test_labels.dtype), data.test_labels[vd]])
    names = [f"good/{Path(data.train_files[i]).stem}" for i in val_normals] + [data.test_names[i] for i in val_defects]
    subset = MVTecCategory(root=data.root, size=data.size, train=data.train[fit_idx], test=test, test_masks=masks,
                           test_labels=labels, test_names=names, train_files=[data.train_files[i] for i in fit_normals])
    feats = None
    if features is not None:
        feats = {"train": features["train"][fit_idx],
                 "test": torch.cat([features["train"][vn], features["test"][vd]])}
    record = {"protocol": "validation: the few-shot training defects split again (fit / validate, per type), "
                          f"{len(val_normals)} of {n} training normals held out; no test-split image is used",
              "fit_defects": inner.train, "validation_defects": inner.test,
              "validation_normals": [Path(data.train_files[i]).name for i in val_normals]}
    return subset, feats, record


def run_few_shot_benchmark(data_dir, few_shot: str = "1/3", methods: list[str] | None = None,
                           seeds=(0, 1, 2), out="benchmark_out", config=None, baseline: bool = True,
                           split_seed: int = 0, realism: int = 0, fid_weights: str | None = None,
                           log=print, method_options: dict | None = None, split_group: str | None = None,
                           validation: bool = False) -> dict[str, Any]:
    """Run every missing ``(training source, seed)`` under the few-shot protocol and write its tables.

    Parameters
    ----------
    data_dir : path-like
        An MVTec-AD category (its real defects are split per type).
    few_shot : str
        ``"1/3"`` (the papers' protocol), any fraction, or a count per type.
    methods : list of str, optional
        Training sources: registry names, ``real_only``, or mixtures such as
        ``"real_only:0.5+defect_transplant:0.5"`` (:mod:`.recipes`). Default: ``real_only``,
        every method that needs a bank, and every other image-level method.
    realism : int
        When > 0, also FID / KID per type with this many generated images per method and type.
    method_options : dict, optional
        ``{method: {parameter: value}}`` (CLI ``--set METHOD.KEY=VALUE``): e.g. the ``model`` of
        the methods that need a trained one, which the default method list leaves out otherwise.
    split_group : str, optional
        A regular expression naming each defect image's group (e.g. a spot photographed repeatedly):
        a group stays on one side of the split (:meth:`~defectforge.sources.defects.FewShotSplit.make`).
    validation : bool
        The validation protocol, for choosing recipes, weights, steps or detectors without the test
        set: the few-shot training defects are split again per type (2/3 feed synthesis and
        ``real_only``, 1/3 is validated on, with :data:`VALIDATION_NORMAL_SHARE` of the training
        normals held out as its good images); the few-shot test split is never read.

    Returns
    -------
    dict
        ``{"run_dir", "split", "rows" (the leaderboard), "few_shot_table", "realism", "runs"}``.
    """
    import defectforge

    from ...core.seeding import Stream
    from ...pipelines.build import build_synthesizer
    from ...realdefect import needs_bank
    from ...sources.defects import SPLIT_FILE, DefectBank, FewShotSplit, parse_few_shot
    from ..backbones import load_backbone
    from ..data import check_mvtec_category
    from .leaderboard import collect_runs, run_path, write_json, write_leaderboard
    from .recipes import build_source, is_mixture, row_members
    from ..registry import detector_info, list_detectors
    from .runner import BASELINE, BenchmarkConfig, _check_methods, features_cached, load_data_cached, run_one

    cfg = config or BenchmarkConfig()
    info = detector_info(cfg.detector)  # unknown names raise with suggestions
    if info.kind != "image":
        raise ValueError(f"the few-shot protocol trains image-level detectors ({', '.join(list_detectors('image'))}); "
                         f"{cfg.detector!r} is a {info.kind} detector")
    if cfg.select_every:
        raise ValueError("best-checkpoint selection (select_every) is for the plain protocol; the few-shot protocol's "
                         "validation set is --validate")
    kind, value = parse_few_shot(few_shot)
    if validation and realism:
        raise ValueError("--realism compares against the held-out test defects; the validation protocol never reads them")
    if methods:
        names = _check_methods(list(methods), cfg.detector, allowed=(REAL_ONLY,))
    else:  # methods that need a trained model run only when given one
        image = [n for n in defectforge.list_methods(level="image") if n != REAL_ONLY and
                 (not defectforge.method_info(n).capabilities["needs_model"] or n in (method_options or {}))]
        names = [REAL_ONLY] + [n for n in image if needs_bank(n)] + [n for n in image if not needs_bank(n)]
    members = {m for row in names for m in row_members(row)[0]}
    unused = sorted(set(method_options or {}) - members)
    if unused:
        raise ValueError(f"--set names {unused}, which this run does not include (methods: {names})")
    seeds = [int(s) for s in seeds]
    root = Path(data_dir).expanduser()
    check_mvtec_category(root)
    out = Path(out)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    bank = DefectBank.from_folder(root, few_shot=few_shot, split_file=out / SPLIT_FILE, split_seed=split_seed,
                                  split_group=split_group)
    split = bank.split
    backbone = load_backbone(cfg.backbone, cfg.backbone_weights).to(cfg.device) \
        if info.needs_backbone or baseline else None
    data, fingerprint = load_data_cached(root, cfg.size, cache_dir, log)
    full = features_cached(backbone, data, fingerprint, cache_dir, log) if backbone is not None else None
    spec = str(value.numerator) + "of" + str(value.denominator) if kind == "fraction" else f"{value}pertype"
    folder = f"fewshot-{spec}-split{split_seed}" + ("-grouped" if split_group else "")
    if validation:
        inner = FewShotSplit.make(root, split.train, VALIDATION_FIT, split_seed, split_group,
                                  stream=int(Stream.VALIDATION_DEFECTS))
        fit = FewShotSplit(str(root), f"{few_shot}, then {VALIDATION_FIT} of it to fit", split_seed,
                           train=inner.train, test={t: inner.test.get(t, []) + split.test.get(t, []) for t in split.test},
                           group=split_group)
        bank = DefectBank.from_folder(root, split=fit)
        test, features, record = validation_subset(data, full, split, inner, split_seed)
        write_json(out / f"validation_split-{folder}.json", record)
        folder += "-validation"
        log(f"validation protocol: {sum(map(len, inner.train.values()))} of the {sum(map(len, split.train.values()))} "
            f"few-shot training defect images feed synthesis, {sum(map(len, inner.test.values()))} are validated on "
            f"with {len(record['validation_normals'])} held-out training normals; the test split is not used")
    else:
        test, keep, real = few_shot_subset(data, split)
        features = None if full is None else {"train": full["train"], "test": full["test"][torch.tensor(keep)]}
        log(f"few-shot {few_shot}: {len(real)} real defect images feed synthesis, {len(keep)} test images "
            f"({sum(1 for n in test.test_names if not n.startswith('good/'))} held-out defects); split in {out / SPLIT_FILE}")
    run_dir = out / f"{folder}-{cfg.run_folder_name(backbone.identity if backbone else 'nobackbone')}"

    def member(name):
        return build_synthesizer(name, _options(name, bank, method_options))

    def synthesizer_of(row):
        names_, _ = row_members(row)
        if len(names_) > 1 or needs_bank(names_[0]) or names_[0] in (method_options or {}):
            return build_source(row, member)
        return None  # a plain registry method, built by the detector

    all_names = ([BASELINE] if baseline else []) + names
    todo = [(m, s) for s in seeds for m in all_names]
    for method, seed in todo:
        if run_path(run_dir, method, seed).is_file():
            continue
        run_one(method, seed, cfg, test, backbone, features, run_dir, log,
                synthesizer=None if method == BASELINE else synthesizer_of(method), per_type=True)
        write_leaderboard(run_dir, test, methods=all_names, seeds=seeds)
    board = write_leaderboard(run_dir, test, methods=all_names, seeds=seeds)
    runs = {m: [r for r in rs if r["seed"] in seeds] for m, rs in collect_runs(run_dir).items() if m in all_names}
    runs = {m: r for m, r in runs.items() if r}
    table = few_shot_markdown(runs, all_names)
    (run_dir / "fewshot.md").write_text(table)
    result = {"run_dir": str(run_dir), "split": split.as_dict(), "rows": board.get("rows", []),
              "few_shot_table": table, "realism": None, "runs": runs}
    if realism:
        path = run_dir / f"realism-{realism}.json"
        if path.is_file():
            import json

            scores = json.loads(path.read_text())
        else:
            scores = few_shot_realism(data, split, bank, [n for n in names if not is_mixture(n)],
                                      per_type=realism, fid_weights=fid_weights, log=log, method_options=method_options)
            write_json(path, scores)
        (run_dir / f"realism-{realism}.md").write_text(realism_markdown(scores))
        result["realism"] = scores
    return result
