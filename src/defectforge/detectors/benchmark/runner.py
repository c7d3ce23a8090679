"""The benchmark runner: train and evaluate each ``(method, seed)`` and keep the caches.

For every synthesis method and seed, a reference detector is trained on the category's normal
images plus online synthetic anomalies and tested on its real defects; the synthesis-free
baseline (``patchcore``) runs on the same backbone. Results are written as one JSON per
finished ``(method, seed)`` run (atomic), so an interrupted benchmark resumes where it stopped,
and then aggregated by :mod:`.leaderboard` (markdown + JSON) and drawn by :mod:`.figures`.

Cost. The backbone is frozen, so the features of the training and test images are computed once
per (backbone weights, size, data) and cached on disk under ``OUT/cache``; a ``seghead`` run
then passes only its synthetic images through the backbone.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...io.images import atomic_write_bytes
from ...metrics.detection import detection_metrics, image_ap, image_auroc
from ..backbones import Backbone, load_backbone
from ..data import MVTecCategory, check_mvtec_category, load_mvtec_category
from ..registry import check_options, create_detector, detector_info, list_detectors
from .figures import example_indices, example_maps
from .leaderboard import run_path, write_json, write_leaderboard
from .per_type import per_type_metrics
from .recipes import build_source, check_rows, is_mixture, split_rows
from .selection import Selection, held_out_selection

__all__ = ["DETECTORS", "BASELINE", "BenchmarkConfig", "run_benchmark", "run_one", "evaluate_detector",
           "load_data_cached", "features_cached", "data_fingerprint"]

#: The detectors a benchmark trains (``--detector``): every registered one but the synthesis-free
#: baselines (:func:`~defectforge.detectors.registry.list_detectors`).
DETECTORS = tuple(n for n in list_detectors() if detector_info(n).kind != "baseline")
#: The dsr detector's VQ-VAE (trained once per dataset, cached): resolution of the images it
#: encodes, random crop side and batch of its training (``defectforge train vqvae``'s --size,
#: --patch, --batch-size); see :mod:`..dsr` and :mod:`defectforge.generative.vqvae`.
DSR_RESOLUTION, VQVAE_CROP, VQVAE_BATCH = 128, 64, 8
#: The synthesis-free baseline, always on the leaderboard (a registered detector of kind ``"baseline"``).
BASELINE = "patchcore"


@dataclass
class BenchmarkConfig:
    """Everything a run depends on (the run folder is named after it)."""

    detector: str = "seghead"
    backbone: str = "mobilenet_v2"
    backbone_weights: str | None = None
    size: int = 256
    steps: int = 500
    batch_size: int = 8
    width: int = 0  # 0: the detector's default
    checkpoint_every: int = 0
    device: str = "cpu"
    vqvae_steps: int = 3000  # dsr only: training steps of the cached VQ-VAE
    vqvae_width: str = "small"  # dsr only: VQVAE_WIDTHS name
    #: Constructor options of the detector (CLI ``--detector-option KEY=VALUE``; see
    #: :func:`~defectforge.detectors.registry.check_options`).
    detector_options: dict = field(default_factory=dict)
    #: Keep the best checkpoint, scored every N steps on a validation set made without test images
    #: (:mod:`.selection`; detectors whose ``fit`` takes ``select_every``); 0: the last step's weights.
    select_every: int = 0

    def run_folder_name(self, backbone_identity: str) -> str:
        width = f"-w{self.width}" if self.width else ""
        vq = f"-vq{self.vqvae_width}{self.vqvae_steps}" if detector_info(self.detector).needs_vqvae else ""
        options = "".join(f"-{k}={v}" for k, v in sorted(self.detector_options.items()))
        selection = f"-sel{self.select_every}" if self.select_every else ""
        return (f"{self.detector}-{backbone_identity}-s{self.size}-n{self.steps}-b{self.batch_size}{width}{vq}{options}"
                f"{selection}")


def evaluate_detector(detector, data: MVTecCategory, test_features: torch.Tensor | None,
                      pixel: bool = True) -> tuple[dict[str, float], torch.Tensor]:
    """Detection metrics of a fitted detector on the test split, and its maps."""
    maps = detector.score_maps(data.test, features=test_features, size=data.size)
    scores = detector.image_scores(maps)
    if pixel:
        metrics = detection_metrics(scores.numpy(), data.test_labels.numpy(), maps.numpy(), data.test_masks.numpy())
    else:
        metrics = {"image_auroc": image_auroc(scores.numpy(), data.test_labels.numpy()),
                   "image_ap": image_ap(scores.numpy(), data.test_labels.numpy())}
    return metrics, maps


# ---------------------------------------------------------------------------------------------
# caches


def data_fingerprint(root: Path) -> str:
    """Hash of the category's file list, sizes and modification times."""
    layout = check_mvtec_category(root)
    files = list(layout["train"]) + [p for p, _, _ in layout["test"]] + [m for _, _, m in layout["test"] if m]
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _cached(path: Path, make: Callable[[], Any], log) -> Any:
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt
            log(f"cache {path} unreadable ({exc}); rebuilding it")
    value = make()
    _atomic_torch_save(value, path)
    return value


def load_data_cached(root: Path, size: int, cache_dir: Path, log=print) -> tuple[MVTecCategory, str]:
    fingerprint = data_fingerprint(root)
    path = cache_dir / f"data-{fingerprint}-s{size}.pt"
    data = _cached(path, lambda: load_mvtec_category(root, size).__dict__, log)
    return MVTecCategory(**data), fingerprint


def features_cached(backbone: Backbone, data: MVTecCategory, fingerprint: str, cache_dir: Path,
                    log=print) -> dict[str, torch.Tensor]:
    path = cache_dir / f"features-{backbone.identity}-{fingerprint}-s{data.size}.pt"

    def make():
        start = time.perf_counter()
        out = {"train": backbone.extract(data.train, progress=True), "test": backbone.extract(data.test, progress=True)}
        log(f"backbone features of {data.train.shape[0] + data.test.shape[0]} images: {time.perf_counter() - start:.1f} s "
            f"(cached in {path})")
        return out

    return _cached(path, make, log)


def vqvae_cached(root: Path, fingerprint: str, cache_dir: Path, cfg: BenchmarkConfig, log=print):
    """The dsr detector's VQ-VAE for this dataset: trained once (``cfg.vqvae_steps`` steps, resumable
    when interrupted) under ``cache_dir`` and loaded from there afterwards (``weights_only``)."""
    import json

    from ...generative.train import TrainConfig, train
    from ...generative.vqvae import load_vqvae

    folder = cache_dir / f"vqvae-{fingerprint}-r{DSR_RESOLUTION}-{cfg.vqvae_width}-n{cfg.vqvae_steps}"
    summary_path = folder / "train.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if summary.get("steps_done", 0) < cfg.vqvae_steps:
        log(f"training the dsr detector's VQ-VAE ({cfg.vqvae_steps} steps, one-off, cached in {folder})")
        tc = TrainConfig(kind="vqvae", data=str(root), out=str(folder), steps=cfg.vqvae_steps, size=DSR_RESOLUTION,
                         batch_size=VQVAE_BATCH, seed=0, width=cfg.vqvae_width, patch=VQVAE_CROP,
                         checkpoint_every=250, preview_every=0, device=cfg.device)
        summary = train(tc, progress=False, resume=(folder / "checkpoint.pt").is_file())
        log(f"VQ-VAE trained: {summary['seconds_this_run']:.0f} s, codes in use {summary['codes_in_use']}")
    model = load_vqvae(folder / "vqvae.pt", cfg.device)
    model.extra = {**model.extra, "train": summary, "path": str(folder / "vqvae.pt")}
    return model


# ---------------------------------------------------------------------------------------------
# one run


def run_one(method: str, seed: int, cfg: BenchmarkConfig, data: MVTecCategory, backbone: Backbone | None,
            features: dict[str, torch.Tensor] | None, run_dir: Path, log=print, synthesizer=None,
            per_type: bool = False, vqvae=None, selection: Selection | None = None) -> dict[str, Any]:
    """Train and evaluate one ``(method, seed)``; write ``run_dir/<method>/seed<seed>.json``.

    ``synthesizer`` replaces the registry method ``method`` (a method built with a defect bank,
    or the few-shot ``real_only`` source); ``per_type`` adds metrics per defect type; ``vqvae``
    is the ``dsr`` detector's VQ-VAE (:func:`vqvae_cached`); ``selection`` keeps the detector's
    best checkpoint on a validation set (:func:`~.selection.held_out_selection`; ``data`` is then
    the training data without its held-out normals).
    """
    is_baseline = method == BASELINE
    detector = create_detector(BASELINE, backbone) if is_baseline else \
        create_detector(cfg.detector, backbone, cfg.width, cfg.device, vqvae, cfg.detector_options)
    train_features = features["train"] if features is not None and detector.uses_backbone_features else None
    test_features = features["test"] if features is not None and detector.uses_backbone_features else None
    evaluate = None
    if cfg.checkpoint_every and not is_baseline:
        evaluate = lambda det: evaluate_detector(det, data, test_features, pixel=False)[0]  # noqa: E731
    selecting = {"validation": selection.criterion, "select_every": selection.every} \
        if selection is not None and not is_baseline else {}
    record = detector.fit(data.train, None if is_baseline else (synthesizer or method), steps=cfg.steps, batch_size=cfg.batch_size,
                          seed=seed, features=train_features, checkpoint_every=cfg.checkpoint_every,
                          evaluate=evaluate, **selecting)
    start = time.perf_counter()
    metrics, maps = evaluate_detector(detector, data, test_features)
    eval_seconds = time.perf_counter() - start
    examples = example_indices(data)
    out_dir = run_path(run_dir, method, seed).parent
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer_path = out_dir / f"seed{seed}.examples.npy"
    buffer = io.BytesIO()
    np.save(buffer, example_maps(maps, examples))
    atomic_write_bytes(buffer_path, buffer.getvalue())
    training = record.as_dict()
    if is_baseline:
        training.update(steps=0, batch_size=0, synthesis_share=0.0)
    result = {
        "method": method, "seed": int(seed), "detector": detector.name, "baseline": is_baseline,
        "metrics": metrics, "eval_seconds": eval_seconds, **training,
        "config": {**cfg.__dict__, "backbone_identity": getattr(backbone, "identity", None)},
        "examples": [data.test_names[i] for i in examples],
        "torch_threads": torch.get_num_threads(), "device": cfg.device,
    }
    if vqvae is not None and not is_baseline:  # the VQ-VAE's one-off training, apart from this run's
        train_info = getattr(vqvae, "extra", {}).get("train", {})
        result["vqvae"] = {"path": getattr(vqvae, "extra", {}).get("path"), "settings": vqvae.settings,
                           "steps": train_info.get("steps_done"), "train_seconds": train_info.get("seconds_this_run"),
                           "codes_in_use": train_info.get("codes_in_use")}
    if selection is not None:  # the held-out normals: no row of this folder trained on them
        result["selection"] = selection.record
    if per_type:
        result["per_type"] = per_type_metrics(detector.image_scores(maps), maps, data)
    write_json(out_dir / f"seed{seed}.json", result)
    log(f"{method:<18} seed {seed}: image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}  "
        f"AUPRO {metrics['aupro']:.3f}  train {training['train_seconds']:.0f} s (synthesis "
        f"{100 * training['synthesis_share']:.0f}%)  eval {eval_seconds:.0f} s")
    return result


# ---------------------------------------------------------------------------------------------
# the whole benchmark


def _check_methods(methods: list[str], detector: str = "seghead", allowed: tuple[str, ...] = ()) -> list[str]:
    """The training sources (rows) of ``methods``, each a method or a mixture (:mod:`.recipes`) whose
    members exist and synthesise at the detector's level (``allowed``: extra member names)."""
    from ...core.registry import method_info

    level = detector_info(detector).kind

    def check(name: str) -> None:
        if name == BASELINE:
            raise ValueError(f"{BASELINE!r} is the synthesis-free baseline, always included; do not list it in --methods")
        if name in allowed:
            return
        info = method_info(name)  # unknown names raise with suggestions
        if info.level != level:
            raise ValueError(f"method {name!r} synthesises at {info.level} level; detector {detector!r} trains on "
                             f"{level}-level anomalies (see: defectforge methods --level {level})")

    rows = split_rows(methods)
    if level != "image" and any(is_mixture(r) for r in rows):
        raise ValueError(f"combined training sources ({[r for r in rows if is_mixture(r)]}) are for image-level "
                         f"detectors; {detector!r} trains on its own {level}-level synthesis")
    return check_rows(rows, check)


def run_benchmark(data_dir: str | os.PathLike, methods: list[str] | None = None, seeds: list[int] = (0, 1, 2),
                  out: str | os.PathLike = "benchmark_out", config: BenchmarkConfig | None = None,
                  baseline: bool = True, log=print, progress: bool = False) -> dict[str, Any]:
    """Run every missing ``(method, seed)`` and write the leaderboard.

    Parameters
    ----------
    data_dir : path-like
        An MVTec-AD category.
    methods : list of str, optional
        Registry names (default: every image-level method; for a feature-level detector, its own
        method, e.g. ``simplenet`` for ``--detector simplenet``).
    seeds : list of int
        Seeds of each method.
    out : path-like
        Output folder; runs already there are kept (resume).
    config : BenchmarkConfig
        Detector, backbone, size, steps, batch size.
    baseline : bool
        Also run the synthesis-free ``patchcore`` baseline.
    progress : bool
        A progress bar over the runs, with ETA (the CLI shows it in a terminal).

    Returns
    -------
    dict
        The leaderboard (see :func:`write_leaderboard`).
    """
    import defectforge

    cfg = config or BenchmarkConfig()
    info = detector_info(cfg.detector)  # unknown names raise with suggestions
    if info.kind == "baseline":
        raise ValueError(f"{cfg.detector!r} is a synthesis-free baseline, not a detector trained on synthesis "
                         f"(detectors: {', '.join(DETECTORS)})")
    check_options(cfg.detector, cfg.detector_options, cfg.width)  # option errors before any data is read
    if cfg.select_every and not info.selects_checkpoints:
        raise ValueError(f"best-checkpoint selection (select_every) applies to "
                         f"{', '.join(n for n in DETECTORS if detector_info(n).selects_checkpoints)}, not "
                         f"{cfg.detector!r}")
    if methods:
        names = _check_methods(list(methods), cfg.detector)
    elif info.method is not None:  # a feature- or latent-level detector: its own method
        names = [info.method]
    else:
        from ...realdefect import needs_bank

        names = _check_methods([n for n in defectforge.list_methods(level="image")  # a trained model only when named
                                if not needs_bank(n) and not defectforge.method_info(n).capabilities["needs_model"]])
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds}")
    root = Path(data_dir).expanduser()
    check_mvtec_category(root)  # layout errors before anything else
    backbone = None
    if info.needs_backbone or baseline:
        backbone = load_backbone(cfg.backbone, cfg.backbone_weights).to(cfg.device)  # weight errors before training
    out = Path(out)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    data, fingerprint = load_data_cached(root, cfg.size, cache_dir, log)
    features = features_cached(backbone, data, fingerprint, cache_dir, log) if backbone is not None else None
    vqvae = vqvae_cached(root, fingerprint, cache_dir, cfg, log) if info.needs_vqvae else None
    selection = None
    if cfg.select_every:
        data, features, selection = held_out_selection(data, features, backbone, cfg.select_every)
        log(f"best checkpoint every {cfg.select_every} steps on {selection.record['validation_images']} validation "
            f"images: {len(selection.record['held_out_normals'])} held-out training normals, half with "
            f"{selection.record['method']} anomalies; every row trains on the other "
            f"{selection.record['training_normals']}")
    run_dir = out / cfg.run_folder_name(backbone.identity if backbone is not None else "nobackbone")
    # seed-major order: an interrupted benchmark has every method at the first seeds
    todo = [(m, s) for s in seeds for m in ([BASELINE] if baseline else []) + names]
    todo = [(m, s) for m, s in todo if not run_path(run_dir, m, s).is_file()]
    from tqdm import tqdm

    from ...pipelines.build import build_synthesizer

    for method, seed in tqdm(todo, desc="benchmark runs", unit="run", disable=not progress):
        source = build_source(method, build_synthesizer) if method != BASELINE and is_mixture(method) else None
        run_one(method, seed, cfg, data, backbone, features, run_dir, log, vqvae=vqvae, synthesizer=source,
                selection=selection)
        # the table after every run, so an interrupted benchmark always has one
        write_leaderboard(run_dir, data, methods=([BASELINE] if baseline else []) + names, seeds=seeds)
    return write_leaderboard(run_dir, data, methods=([BASELINE] if baseline else []) + names, seeds=seeds)
