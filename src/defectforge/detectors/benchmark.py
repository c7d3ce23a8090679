"""``defectforge benchmark``: which synthesis trains the best detector on real defects.

For every synthesis method and seed, a reference detector is trained on the category's normal
images plus online synthetic anomalies and tested on its real defects; the synthesis-free
baseline (``patchcore``) runs on the same backbone. Results are written as one JSON per
finished ``(method, seed)`` run (atomic), so an interrupted benchmark resumes where it stopped,
and then aggregated into a leaderboard (markdown + JSON, mean and std over seeds), a bar chart
and example score maps (PNG).

Cost. The backbone is frozen, so the features of the training and test images are computed once
per (backbone weights, size, data) and cached on disk under ``OUT/cache``; a ``seghead`` run
then passes only its synthetic images through the backbone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..io.images import atomic_write_bytes, write_image
from ..metrics.detection import detection_metrics, image_ap, image_auroc
from .backbones import Backbone, load_backbone
from .data import MVTecCategory, check_mvtec_category, load_mvtec_category

__all__ = ["DETECTORS", "BASELINE", "BenchmarkConfig", "make_detector", "run_benchmark", "write_leaderboard",
           "image_scores_of", "evaluate_detector"]

DETECTORS = ("seghead", "draem_seg")
#: The synthesis-free baseline, always on the leaderboard.
BASELINE = "patchcore"
#: Metrics of the leaderboard, in column order.
METRICS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "image_f1_max", "aupro")
_LABELS = {"image_auroc": "image AUROC", "pixel_auroc": "pixel AUROC", "image_ap": "image AP",
           "pixel_ap": "pixel AP", "image_f1_max": "image F1-max", "aupro": "AUPRO"}
#: Example test images shown in the score-map figures: the first of each defect type and one good.
N_EXAMPLE_TILE = 96


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

    def run_folder_name(self, backbone_identity: str) -> str:
        width = f"-w{self.width}" if self.width else ""
        return f"{self.detector}-{backbone_identity}-s{self.size}-n{self.steps}-b{self.batch_size}{width}"


def make_detector(name: str, backbone: Backbone | None, width: int = 0, device: str = "cpu"):
    """A fresh detector: ``seghead``, ``draem_seg`` or the baseline ``patchcore``."""
    from .draem_seg import DraemSegDetector
    from .patchcore import PatchCoreBaseline
    from .seghead import SegHeadDetector

    if name == "seghead":
        return SegHeadDetector(backbone, **({"width": width} if width else {}))
    if name == "draem_seg":
        return DraemSegDetector(device=device, **({"width": width} if width else {}))
    if name == BASELINE:
        return PatchCoreBaseline(backbone)
    from ..core.validation import suggest

    raise ValueError(f"unknown detector {name!r}.{suggest(name, DETECTORS)} Detectors: {', '.join(DETECTORS)}")


def image_scores_of(detector, maps: torch.Tensor) -> torch.Tensor:
    """The detector's image scores from its maps (maximum, or DRAEM's windowed maximum)."""
    if hasattr(detector, "image_scores"):
        return detector.image_scores(maps)
    return maps.amax(dim=(1, 2))


def evaluate_detector(detector, data: MVTecCategory, test_features: torch.Tensor | None,
                      pixel: bool = True) -> tuple[dict[str, float], torch.Tensor]:
    """Detection metrics of a fitted detector on the test split, and its maps."""
    maps = detector.score_maps(data.test, features=test_features, size=data.size)
    scores = image_scores_of(detector, maps)
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


def _jsonable(value):
    """JSON has no nan: undefined metrics are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(data), indent=1) + "\n").encode())


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import io

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


# ---------------------------------------------------------------------------------------------
# one run


def _example_indices(data: MVTecCategory, per_defect: int = 1) -> list[int]:
    chosen, seen = [], {}
    for i, name in enumerate(data.test_names):
        defect = name.split("/")[0]
        if seen.get(defect, 0) < per_defect:
            seen[defect] = seen.get(defect, 0) + 1
            chosen.append(i)
    good = [i for i in chosen if data.test_names[i].startswith("good/")]
    return [i for i in chosen if i not in good] + good


def _example_maps(maps: torch.Tensor, indices: list[int], tile: int = N_EXAMPLE_TILE) -> np.ndarray:
    """Example maps scaled to [0, 1] by the run's whole test set (its 0.1 and 99.9 percentiles)."""
    sample = maps.flatten()[:: max(1, maps.numel() // 2_000_000)]
    low, high = torch.quantile(sample.float(), torch.tensor([0.001, 0.999])).tolist()
    chosen = maps[indices][:, None].float()
    chosen = torch.nn.functional.interpolate(chosen, size=(tile, tile), mode="bilinear", align_corners=False)[:, 0]
    return ((chosen - low) / max(high - low, 1e-12)).clamp(0, 1).numpy().astype(np.float16)


def run_one(method: str, seed: int, cfg: BenchmarkConfig, data: MVTecCategory, backbone: Backbone | None,
            features: dict[str, torch.Tensor] | None, run_dir: Path, log=print) -> dict[str, Any]:
    """Train and evaluate one ``(method, seed)``; write ``run_dir/<method>/seed<seed>.json``."""
    is_baseline = method == BASELINE
    detector = make_detector(BASELINE if is_baseline else cfg.detector, backbone, cfg.width, cfg.device)
    train_features = features["train"] if features is not None and detector.uses_features else None
    test_features = features["test"] if features is not None and detector.uses_features else None
    evaluate = None
    if cfg.checkpoint_every and not is_baseline:
        evaluate = lambda det: evaluate_detector(det, data, test_features, pixel=False)[0]  # noqa: E731
    record = detector.fit(data.train, None if is_baseline else method, steps=cfg.steps, batch_size=cfg.batch_size,
                          seed=seed, features=train_features, checkpoint_every=cfg.checkpoint_every,
                          evaluate=evaluate)
    start = time.perf_counter()
    metrics, maps = evaluate_detector(detector, data, test_features)
    eval_seconds = time.perf_counter() - start
    examples = _example_indices(data)
    out_dir = run_dir / method
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer_path = out_dir / f"seed{seed}.examples.npy"
    import io

    buffer = io.BytesIO()
    np.save(buffer, _example_maps(maps, examples))
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
    _write_json(out_dir / f"seed{seed}.json", result)
    log(f"{method:<18} seed {seed}: image AUROC {metrics['image_auroc']:.3f}  pixel AUROC {metrics['pixel_auroc']:.3f}  "
        f"AUPRO {metrics['aupro']:.3f}  train {training['train_seconds']:.0f} s (synthesis "
        f"{100 * training['synthesis_share']:.0f}%)  eval {eval_seconds:.0f} s")
    return result


# ---------------------------------------------------------------------------------------------
# the whole benchmark


def _check_methods(methods: list[str]) -> list[str]:
    from ..core.registry import method_info

    out = []
    for name in methods:
        if name == BASELINE:
            raise ValueError(f"{BASELINE!r} is the synthesis-free baseline, always included; do not list it in --methods")
        info = method_info(name)  # unknown names raise with suggestions
        if info.level != "image":
            raise ValueError(f"method {name!r} synthesises at {info.level} level; the benchmark trains on images "
                             "(use image-level methods: defectforge list --level image)")
        if name not in out:
            out.append(name)
    return out


def run_benchmark(data_dir: str | os.PathLike, methods: list[str] | None = None, seeds: list[int] = (0, 1, 2),
                  out: str | os.PathLike = "benchmark_out", config: BenchmarkConfig | None = None,
                  baseline: bool = True, log=print) -> dict[str, Any]:
    """Run every missing ``(method, seed)`` and write the leaderboard.

    Parameters
    ----------
    data_dir : path-like
        An MVTec-AD category.
    methods : list of str, optional
        Registry names (default: every image-level method).
    seeds : list of int
        Seeds of each method.
    out : path-like
        Output folder; runs already there are kept (resume).
    config : BenchmarkConfig
        Detector, backbone, size, steps, batch size.
    baseline : bool
        Also run the synthesis-free ``patchcore`` baseline.

    Returns
    -------
    dict
        The leaderboard (see :func:`write_leaderboard`).
    """
    import defectforge

    cfg = config or BenchmarkConfig()
    if cfg.detector not in DETECTORS:
        make_detector(cfg.detector, None)  # raises with suggestions
    from ..realdefect import needs_bank

    names = _check_methods(list(methods) if methods else
                           [n for n in defectforge.list_methods(level="image") if not needs_bank(n)])
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative integers, got {seeds}")
    root = Path(data_dir).expanduser()
    check_mvtec_category(root)  # layout errors before anything else
    backbone = None
    if cfg.detector == "seghead" or baseline:
        backbone = load_backbone(cfg.backbone, cfg.backbone_weights).to(cfg.device)  # weight errors before training
    out = Path(out)
    cache_dir = out / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    data, fingerprint = load_data_cached(root, cfg.size, cache_dir, log)
    features = features_cached(backbone, data, fingerprint, cache_dir, log) if backbone is not None else None
    run_dir = out / cfg.run_folder_name(backbone.identity if backbone is not None else "nobackbone")
    # seed-major order: an interrupted benchmark has every method at the first seeds
    todo = [(m, s) for s in seeds for m in ([BASELINE] if baseline else []) + names]
    for method, seed in todo:
        if (run_dir / method / f"seed{seed}.json").is_file():
            continue
        run_one(method, seed, cfg, data, backbone, features, run_dir, log)
        # the table after every run, so an interrupted benchmark always has one
        write_leaderboard(run_dir, data, methods=([BASELINE] if baseline else []) + names, seeds=seeds)
    return write_leaderboard(run_dir, data, methods=([BASELINE] if baseline else []) + names, seeds=seeds)


# ---------------------------------------------------------------------------------------------
# leaderboard, chart and score maps


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return float("nan"), float("nan")
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def collect_runs(run_dir: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for path in sorted(Path(run_dir).glob("*/seed*.json")):
        result = json.loads(path.read_text())
        runs.setdefault(result["method"], []).append(result)
    return runs


def write_leaderboard(run_dir: Path, data: MVTecCategory | None = None, methods: list[str] | None = None,
                      seeds: list[int] | None = None) -> dict[str, Any]:
    """Aggregate ``run_dir``'s runs into ``leaderboard.md``, ``leaderboard.json``,
    ``leaderboard.png`` (bar chart) and ``score_maps.png`` (+ ``score_maps/<method>.png``).

    Rows are sorted by mean image AUROC; std is the sample standard deviation over seeds.
    """
    run_dir = Path(run_dir)
    runs = collect_runs(run_dir)
    if methods is not None:
        runs = {m: r for m, r in runs.items() if m in methods}
    if seeds is not None:
        runs = {m: [x for x in r if x["seed"] in seeds] for m, r in runs.items()}
        runs = {m: r for m, r in runs.items() if r}
    rows = []
    for method, results in runs.items():
        row: dict[str, Any] = {"method": method, "baseline": results[0]["baseline"],
                               "seeds": sorted(r["seed"] for r in results)}
        for metric in METRICS:
            row[metric] = _mean_std([r["metrics"].get(metric) for r in results])
        row["train_seconds"] = _mean_std([r["train_seconds"] for r in results])
        row["eval_seconds"] = _mean_std([r["eval_seconds"] for r in results])
        row["synthesis_share"] = _mean_std([r["synthesis_share"] for r in results])
        rows.append(row)
    rows.sort(key=lambda r: -np.nan_to_num(r["image_auroc"][0], nan=-1.0))
    first = next(iter(runs.values()))[0] if runs else {}
    board = {"run_dir": str(run_dir), "config": first.get("config", {}), "rows": rows,
             "missing": [] if methods is None or seeds is None else
             [f"{m}/seed{s}" for m in methods for s in seeds if not (run_dir / m / f"seed{s}.json").is_file()]}
    _write_json(run_dir / "leaderboard.json", board)
    atomic_write_bytes(run_dir / "leaderboard.md", leaderboard_markdown(board).encode())
    if rows:
        write_image(run_dir / "leaderboard.png", bar_chart(rows))
        curves = {m: r for m, results in runs.items() for r in results[:1] if r.get("checkpoints")}
        if curves:
            write_image(run_dir / "convergence.png", convergence_chart(curves))
        if data is not None:
            grid, per_method = score_map_figures(run_dir, rows, data)
            write_image(run_dir / "score_maps.png", grid)
            for method, image in per_method.items():
                write_image(run_dir / "score_maps" / f"{method}.png", image)
    return board


def _fmt(pair: tuple[float, float], digits: int = 3) -> str:
    mean, std = pair
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def leaderboard_markdown(board: dict[str, Any]) -> str:
    cfg = board.get("config", {})
    lines = [f"Detector `{cfg.get('detector')}` on backbone `{cfg.get('backbone')}`, {cfg.get('size')} px, "
             f"{cfg.get('steps')} steps x batch {cfg.get('batch_size')}; mean ± std over seeds.", "",
             "| method | seeds | " + " | ".join(_LABELS[m] for m in METRICS) + " | train s | synthesis share |",
             "|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for row in board["rows"]:
        name = f"{row['method']} (no synthesis, baseline)" if row["baseline"] else row["method"]
        share = "-" if row["baseline"] else f"{100 * row['synthesis_share'][0]:.0f}%"
        lines.append(f"| {name} | {len(row['seeds'])} | " + " | ".join(_fmt(row[m]) for m in METRICS)
                     + f" | {row['train_seconds'][0]:.0f} | {share} |")
    if board.get("missing"):
        lines += ["", f"Not finished yet: {', '.join(board['missing'])}."]
    return "\n".join(lines) + "\n"


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def bar_chart(rows: list[dict[str, Any]], low: float = 0.5, high: float = 1.0) -> np.ndarray:
    """Horizontal bars of image AUROC (dark) and pixel AUROC (light), mean with ± std whiskers."""
    from PIL import Image, ImageDraw

    label_w, plot_w, row_h, top, bottom = 230, 520, 34, 40, 44
    width, height = label_w + plot_w + 30, top + row_h * len(rows) + bottom
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(14), _font(12)
    x_of = lambda v: label_w + (min(max(v, low), high) - low) / (high - low) * plot_w  # noqa: E731
    draw.text((label_w, 10), "image AUROC (dark), pixel AUROC (light); whiskers: ± std over seeds", fill="black", font=small)
    for tick in np.arange(low, high + 1e-9, 0.1):
        x = x_of(tick)
        draw.line([(x, top - 4), (x, height - bottom + 4)], fill=(220, 220, 220))
        draw.text((x - 10, height - bottom + 8), f"{tick:.1f}", fill="black", font=small)
    for i, row in enumerate(rows):
        y = top + i * row_h
        name = f"{row['method']} (baseline)" if row["baseline"] else row["method"]
        draw.text((8, y + 8), name, fill="black", font=font)
        colours = ((110, 110, 110), (190, 190, 190)) if row["baseline"] else ((31, 100, 180), (140, 185, 230))
        for j, (metric, colour) in enumerate(zip(("image_auroc", "pixel_auroc"), colours)):
            mean, std = row[metric]
            if math.isnan(mean):
                continue
            y0 = y + 4 + j * 13
            draw.rectangle([label_w, y0, x_of(mean), y0 + 11], fill=colour)
            draw.line([(x_of(mean - std), y0 + 5), (x_of(mean + std), y0 + 5)], fill="black", width=1)
            if j == 0:
                draw.text((x_of(mean + std) + 4, y0 - 1), f"{mean:.3f}", fill="black", font=small)
    return np.asarray(img)


_PALETTE = ((31, 100, 180), (214, 96, 28), (44, 150, 60), (180, 40, 40), (120, 80, 170), (120, 120, 120))


def convergence_chart(runs: dict[str, dict[str, Any]]) -> np.ndarray:
    """Training loss (moving average over 20 steps, left) and image AUROC at the checkpoints
    plus the final one (right) against steps, one colour per method."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, pad = 360, 220, 50
    img = Image.new("RGB", (2 * panel_w + 3 * pad, panel_h + 2 * pad + 16 * len(runs)), "white")
    draw = ImageDraw.Draw(img)
    small = _font(12)
    max_step = max(len(r["losses"]) for r in runs.values())
    losses = {m: np.convolve(r["losses"], np.ones(20) / 20, mode="valid") if len(r["losses"]) >= 20
              else np.asarray(r["losses"]) for m, r in runs.items()}
    aurocs = {m: [(c["step"], c["image_auroc"]) for c in r["checkpoints"]]
              + [(len(r["losses"]), r["metrics"]["image_auroc"])] for m, r in runs.items()}
    loss_max = max(float(v.max()) for v in losses.values() if v.size) * 1.05
    all_auc = [a for pts in aurocs.values() for _, a in pts]
    auc_low, auc_high = math.floor(min(all_auc) * 20) / 20, math.ceil(max(all_auc) * 20) / 20
    auc_high = max(auc_high, auc_low + 0.05)
    panels = ((pad, "training loss (moving average, 20 steps)", 0.0, loss_max),
              (2 * pad + panel_w, "image AUROC on the test set", auc_low, auc_high))
    for x0, title, low, high in panels:
        draw.rectangle([x0, pad, x0 + panel_w, pad + panel_h], outline="black")
        draw.text((x0, pad - 18), title, fill="black", font=small)
        draw.text((x0 - 40, pad - 6), f"{high:.2f}", fill="black", font=small)
        draw.text((x0 - 40, pad + panel_h - 6), f"{low:.2f}", fill="black", font=small)
        draw.text((x0 + panel_w - 40, pad + panel_h + 4), f"{max_step} steps", fill="black", font=small)
    to_xy = lambda x0, low, high, step, v: (x0 + step / max_step * panel_w,  # noqa: E731
                                            pad + panel_h - (v - low) / (high - low) * panel_h)
    for k, method in enumerate(runs):
        colour = _PALETTE[k % len(_PALETTE)]
        curve = losses[method]
        offset = (len(runs[method]["losses"]) - curve.size) + 1
        draw.line([to_xy(pad, 0.0, loss_max, i + offset, v) for i, v in enumerate(curve)], fill=colour, width=2)
        points = [to_xy(2 * pad + panel_w, auc_low, auc_high, step, a) for step, a in aurocs[method]]
        draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((pad, pad + panel_h + 24 + 16 * k), f"{method} (seed {runs[method]['seed']})", fill=colour, font=small)
    return np.asarray(img)


def _colour_map(values: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.applyColorMap((np.clip(values, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]


def score_map_figures(run_dir: Path, rows: list[dict[str, Any]], data: MVTecCategory,
                      tile: int = N_EXAMPLE_TILE) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The example grid (rows: image, ground truth, then each method's seed-0 maps) and one
    figure per method."""
    import cv2
    from PIL import Image, ImageDraw

    indices = _example_indices(data)
    resize = lambda a, interp=cv2.INTER_AREA: cv2.resize(a, (tile, tile), interpolation=interp)  # noqa: E731
    images = [resize(data.test[i].permute(1, 2, 0).numpy()) for i in indices]
    truths = [np.repeat(resize(data.test_masks[i].numpy().astype(np.uint8) * 255, cv2.INTER_NEAREST)[..., None], 3, 2)
              for i in indices]
    label_w = 170
    font = _font(12)

    def strip(label: str, tiles: list[np.ndarray]) -> np.ndarray:
        canvas = Image.new("RGB", (label_w + len(tiles) * (tile + 2), tile + 2), "white")
        for k, t in enumerate(tiles):
            canvas.paste(Image.fromarray(np.ascontiguousarray(t)), (label_w + k * (tile + 2), 1))
        ImageDraw.Draw(canvas).text((4, tile // 2 - 6), label, fill="black", font=font)
        return np.asarray(canvas)

    header = [strip("image", images), strip("ground truth", truths)]
    names = [data.test_names[i].split("/")[0] for i in indices]
    title = Image.new("RGB", (header[0].shape[1], 18), "white")
    for k, name in enumerate(names):
        ImageDraw.Draw(title).text((label_w + k * (tile + 2) + 2, 2), name, fill="black", font=font)
    header.insert(0, np.asarray(title))
    method_strips, per_method = [], {}
    for row in rows:
        files = sorted((run_dir / row["method"]).glob("seed*.examples.npy"))
        if not files:
            continue
        maps = np.load(files[0]).astype(np.float32)
        if maps.shape[0] != len(indices):
            continue
        label = f"{row['method']} (baseline)" if row["baseline"] else row["method"]
        s = strip(label, [_colour_map(m) for m in maps])
        method_strips.append(s)
        per_method[row["method"]] = np.concatenate(header + [s])
    grid = np.concatenate(header + method_strips)
    return grid, per_method
