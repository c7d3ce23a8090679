"""``defectforge methods | generate | preview | demo``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from .common import (available_image_methods, fail, parse_area_range, parse_count_range, parse_overrides,
                     print_parameters, report_left_out, run_errors)

_SIZE_HELP = "Resize every image to SIZE x SIZE pixels (default: keep each image's size)."
_FOREGROUND_HELP = ("Region defects are placed in: none (whole image), otsu, threshold (with "
                    "--foreground-threshold) or saliency (spectral residual).")


def methods_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
                    markdown: bool = typer.Option(False, "--markdown", help="Print a markdown table (family, level, "
                                                  "source, licence), as in docs/methods.md."),
                    family: Optional[str] = typer.Option(None, help="Only this survey family."),
                    level: Optional[str] = typer.Option(None, help="Only this level (image, feature, latent)."),
                    params: Optional[str] = typer.Option(None, "--params", metavar="METHOD",
                                                         help="List METHOD's parameters instead: kind, default and the "
                                                         "bounds or choices its argument checks accept (as the web "
                                                         "app's widgets; set them with generate --set NAME=VALUE).")):
    """List the registered synthesis methods, or one method's parameters (--params)."""
    import defectforge

    if params is not None:
        print_parameters(params, as_json)
        return

    try:
        names = defectforge.list_methods(family=family, level=level)
    except ValueError as exc:
        fail(str(exc))
    infos = [defectforge.method_info(n).as_dict() for n in names]
    if as_json:
        typer.echo(json.dumps(infos, indent=2))
        return
    if markdown:
        typer.echo("| method | family | level | what it makes | source | licence of the source |")
        typer.echo("|---|---|---|---|---|---|")
        for info in infos:
            cells = [f"`{info['name']}`"] + [str(info[k]).replace("|", "/") for k in
                                              ("family", "level", "description", "source", "licence")]
            typer.echo("| " + " | ".join(cells) + " |")
        return
    width = max(len(n) for n in names) if names else 4
    typer.echo(f"{'method':<{width}}  {'family':<23} {'level':<7} description")
    for info in infos:
        typer.echo(f"{info['name']:<{width}}  {info['family']:<23} {info['level']:<7} {info['description']}")


#: generate's options that say how to run, not what to make: not part of a run's record
RUN_OPTIONS = frozenset({"input", "output", "config", "workers", "engine", "address", "resume", "overwrite",
                         "discard_edits", "quiet"})
#: generate's options recorded under another generator field than their own name
OPTION_FIELDS = {"set_": "overrides", "model": "overrides"}


def given_options(ctx: typer.Context) -> set[str]:
    """The GenerateConfig fields of the options given on the command line (not left at their default)."""
    # by the enum's name: typer may bring its own copy of click, whose ParameterSource is another class
    given = {name for name in ctx.params
             if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    return {OPTION_FIELDS.get(name, name) for name in given - RUN_OPTIONS}


def config_from_options(options: dict, **converted):
    """The :class:`~defectforge.pipelines.run_config.GenerateConfig` of ``generate``'s options.

    Every option named like a configuration field is that field; the options given in another
    form (``--defect-count 1-3``, ``--area-range 0.01,0.1``, ``--count`` left out) are converted
    here, and ``converted`` gives the fields the command derives itself (input, overrides).
    """
    from dataclasses import fields

    from ..pipelines.run_config import GenerateConfig

    names = {f.name for f in fields(GenerateConfig)}
    values = {name: value for name, value in options.items() if name in names}
    values.update(count=100 if options["count"] is None else options["count"],
                  defect_count=parse_count_range(options["defect_count"]),
                  area_range=parse_area_range(options["area_range"]), **converted)
    return GenerateConfig(**values)


def generate_command(
    ctx: typer.Context,
    input: Optional[Path] = typer.Argument(None, help="Folder of normal images, or an MVTec-AD category (uses "
                                           "train/good). With --config: optional, replaces the recorded input."),
    output: Optional[Path] = typer.Argument(None, help="Output folder (MVTec-style tree, manifest.jsonl, config.yaml)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Rebuild the run a config.yaml describes "
                                          "(`defectforge generate --config old/config.yaml NEW_OUTPUT`); every "
                                          "option given beside it overrides the record."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Registry name (see `defectforge methods`)."),
    count: Optional[int] = typer.Option(None, "--count", "-n", help="Number of samples to write [default: 100]."),
    seed: int = typer.Option(0, "--seed", "-s", help="Run seed; sample i depends on (seed, i) only."),
    size: Optional[int] = typer.Option(None, "--size", help=_SIZE_HELP),
    textures: Optional[Path] = typer.Option(None, "--textures", help="Texture folder (e.g. DTD images/), 'skimage' "
                                            "(scikit-image's brick/grass/gravel); default: built-in bank."),
    foreground: str = typer.Option("none", "--foreground", help=_FOREGROUND_HELP),
    foreground_threshold: Optional[float] = typer.Option(None, "--foreground-threshold",
                                                         help="Grey threshold in [0, 1] for --foreground threshold."),
    foreground_invert: bool = typer.Option(False, "--foreground-invert", is_flag=True,
                                           help="Take the dark side of the threshold."),
    foreground_masks: Optional[Path] = typer.Option(None, "--foreground-masks",
                                                    help="Folder of per-image region masks (same file names)."),
    mix: Optional[str] = typer.Option(None, "--mix", help="Mixture of methods, e.g. 'draem:0.5,cutpaste:0.5' (instead of -m)."),
    defect_count: Optional[str] = typer.Option(None, "--defect-count", help="Defects per image: N or MIN-MAX."),
    area_range: Optional[str] = typer.Option(None, "--area-range",
                                             help="Allowed total defect area, MIN,MAX fractions of the image."),
    mask_bank: Optional[Path] = typer.Option(None, "--mask-bank", help="Folder of binary defect-shape PNGs."),
    mask_threshold: Optional[int] = typer.Option(None, "--mask-threshold", help="Grey level (1-255) from which a "
                                                 "pixel of a --mask-bank or --foreground-masks mask is shape, for "
                                                 "near-binary masks (JPEG, anti-aliased), e.g. 128; default: masks "
                                                 "must be binary."),
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes (Ray: tasks in flight); files are "
                                "identical for any count."),
    engine: str = typer.Option("local", "--engine", help="local (processes on this machine) or ray (Ray tasks; "
                               "same files)."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the cluster to join (e.g. auto, "
                                          "or HEAD_IP:6379 of `ray start --head`); default: a local Ray."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Method parameter, key=value (repeatable)."),
    model: Optional[Path] = typer.Option(None, "--model", help="The model of a generative method, a local folder "
                                         "(the same as --set model=PATH): realnet_sdas / masked_diffusion: a "
                                         "'train ddpm' run, a UNet2DModel or a latent diffusion (vqvae/ or vae/ + "
                                         "unet/ + scheduler/) folder; gan_transplant: a 'train gan' run; "
                                         "prompt_inpaint: a Stable Diffusion text-to-image folder; "
                                         "prompt_inpaint_sdinpaint: an inpainting one. A run costs "
                                         "samples x denoising steps network passes (realnet_sdas: 20 respaced DDPM "
                                         "steps; masked_diffusion 200, masked_diffusion_adabldm and prompt_inpaint "
                                         "50, prompt_inpaint only the last strength of them): --set "
                                         "num_inference_steps=20 --set scheduler=ddim, or a smaller --count, "
                                         "makes it shorter; long runs say their cost before they start."),
    normal_ratio: float = typer.Option(0.0, "--normal-ratio", help="Share of samples left normal (test/good)."),
    bit_depth: str = typer.Option("auto", "--bit-depth", help="Bits of data in 16-bit inputs: auto (from the "
                                  "inputs' maximum), 8, 10, 12, 14 or 16."),
    output_bit_depth: int = typer.Option(8, "--output-bit-depth", help="8, or 16: write 16-bit PNGs scaled to the "
                                         "inputs' bit depth (for pipelines that read 16-bit; 8-bit precision)."),
    png_compression: str = typer.Option("fast", "--png-compression", help="PNG encoding of images and masks, "
                                        "same pixels either way: fast (zlib's run-length strategy), level1 (the "
                                        "encoding of runs before 'fast'; about 2x slower), level9 (smallest files, "
                                        "slowest)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Largest input image (width x height) to "
                                             "decode [default: PIL's ~89 Mpx]."),
    min_contrast: Optional[float] = typer.Option(None, "--min-contrast", help="Redraw anomalies whose mean absolute "
                                                 "change inside the mask is below this (0-0.5, e.g. 0.008 = 2/255; "
                                                 "off by default, as in the papers)."),
    defects: Optional[Path] = typer.Option(None, "--defects", help="Real defects for the methods that place them "
                                           "(copy_paste, defect_transplant, real_only, and --mix rows with one): "
                                           "an MVTec-AD category, a labelme folder, a COCO JSON (or its folder), a "
                                           "YOLO-seg folder (data.yaml) or a mask folder (<name>.png + <name>_mask.png "
                                           "or _gt; folder name = type); the format is detected."),
    defects_format: Optional[str] = typer.Option(None, "--defects-format", help="Name the --defects format: "
                                                 "labelme, coco, yolo-seg, masks or mvtec [default: detected]."),
    defect_types: Optional[str] = typer.Option(None, "--defect-types", help="Only these defect types, comma-separated."),
    few_shot: Optional[str] = typer.Option(None, "--few-shot", help="Use only this part of each type's real defects "
                                           "(1/3 = the papers' protocol, any fraction, or a count); the split is "
                                           "written to OUTPUT/fewshot_split.json."),
    resume: bool = typer.Option(False, "--resume", is_flag=True, help="Continue (or extend, with a larger --count) "
                                "the run in OUTPUT; missing files are made again (changed ones are yours: kept)."),
    overwrite: bool = typer.Option(False, "--overwrite", is_flag=True, help="Replace an earlier run in OUTPUT "
                                   "(refused if OUTPUT holds files this tool did not write)."),
    discard_edits: bool = typer.Option(False, "--discard-edits", is_flag=True, help="With --overwrite or --resume: "
                                       "also replace the images and masks changed since the run wrote them (by "
                                       "default they are yours: --overwrite refuses, --resume keeps them)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", is_flag=True, help="No progress bar."),
):
    """Turn a folder of good images into a labelled synthetic-defect dataset."""
    options = dict(locals())  # every option, by its parameter name: the configuration is derived from them
    from ..pipelines.generate import generate, load_run_config
    from ..pipelines.rebuild import merge_given_options
    from ..pipelines.user_edits import kept_edits_line

    synthesizer = None
    try:
        if config is not None and output is None:
            input, output = None, input
        if input is None and config is None or output is None:
            fail("--config needs an OUTPUT folder: defectforge generate --config config.yaml OUTPUT" if config
                 else "give INPUT and OUTPUT folders: defectforge generate INPUT OUTPUT -m METHOD")
        if config is None and (method is None) == (mix is None):
            fail("give a method (--method NAME) or a mixture (--mix 'a:0.5,b:0.5'), not both and not neither")
        overrides = parse_overrides(set_)
        if model is not None:
            if "model" in overrides:
                fail("give the model once: --model PATH or --set model=PATH, not both")
            if not model.expanduser().exists():
                fail(f"--model {model} does not exist; pass a local model folder (nothing is downloaded)")
            overrides["model"] = str(model)
        cfg = config_from_options(options, input=str(input or ""), overrides=overrides)
        if config is not None:
            recorded = load_run_config(config)
            if recorded is None:
                fail(f"--config {config} is not a config.yaml written by defectforge generate")
            given = given_options(ctx) | ({"input"} if input is not None else set())
            cfg, rebuild = merge_given_options(recorded["generator"], cfg, given)
            synthesizer = None if rebuild else recorded["synthesizer"]
        summary = generate(cfg, output, workers=workers, resume=resume, overwrite=overwrite,
                           progress=not quiet and sys.stderr.isatty(), engine=engine, ray_address=address,
                           synthesizer=synthesizer, discard_edits=discard_edits)
    except typer.Exit:
        raise
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(run_errors(exc, output))
    except KeyboardInterrupt:
        fail(f"interrupted; finished samples are kept: run the same command with --resume to continue")
    extra = [f"resumed {summary['resumed']}"] if summary["resumed"] else []
    if summary["repaired"]:
        extra.append(f"repaired {summary['repaired']} with missing files" if summary["kept_edits"]
                     else f"repaired {summary['repaired']} missing or damaged")
    typer.echo(f"wrote {summary['written']} samples ({summary['anomalous']} anomalous, {summary['normal']} normal"
               f"{', ' + ', '.join(extra) if extra else ''}) to {summary['output']}")
    if summary["kept_edits"]:
        typer.echo(kept_edits_line(summary["kept_edits"]))
    if summary["skipped_inputs"]:
        typer.echo(f"skipped {summary['skipped_inputs']} unusable input files (listed in config.yaml, inputs.skipped)")
    if summary["failed"]:
        typer.echo(f"{summary['failed']} samples stayed unresolved after every redraw (marked 'failed' in manifest.jsonl)")


def _pick_inputs(input: Path, count: int, seed: int, size: int,
                 max_pixels: int | None = None) -> tuple[np.ndarray, list[str]]:
    """``count`` input images picked by ``seed`` and their names (file names without the extension)."""
    from ..core.seeding import Stream, sample_rng
    from ..io.inputs import load_normal_images

    images = load_normal_images(input, size, max_pixels=max_pixels)
    rng = sample_rng(seed, 0, stream=Stream.PREVIEW_PICK)
    order = rng.permutation(len(images))[:count] if len(images) >= count else rng.integers(len(images), size=count)
    picked = [images.images[i] for i in order]
    channels = max(p.shape[2] for p in picked)
    return (np.stack([np.repeat(p, 3, 2) if p.shape[2] < channels else p for p in picked]),
            [Path(images.relative(int(i))).stem for i in order])


def write_png(path: Path, image: np.ndarray) -> None:
    """A picture for people: smallest PNG (compression 9), written atomically."""
    from ..io.images import atomic_write_bytes, encode_png

    atomic_write_bytes(path, encode_png(image, compress_level=9))


def preview_command(
    input: Path = typer.Argument(..., help="Folder of normal images, or an MVTec-AD category."),
    output: Path = typer.Argument(..., help="PNG file to write."),
    method: list[str] = typer.Option(["draem"], "--method", "-m",
                                     help="Method(s), repeatable or comma-separated; 'all' for every image-level method."),
    count: int = typer.Option(8, "--count", "-n", min=1, max=256, help="Images per row."),
    seed: int = typer.Option(0, "--seed", "-s", min=0),
    size: int = typer.Option(128, "--size", min=16, max=4096, help="Tile size in pixels."),
    compact: bool = typer.Option(False, "--compact", is_flag=True, help="One overlay row per method."),
    foreground: str = typer.Option("none", "--foreground", help=_FOREGROUND_HELP),
    foreground_threshold: Optional[float] = typer.Option(None, "--foreground-threshold",
                                                         help="Grey threshold in [0, 1] for --foreground threshold."),
    foreground_invert: bool = typer.Option(False, "--foreground-invert", is_flag=True,
                                           help="Take the dark side of the threshold."),
    layout: Optional[str] = typer.Option(None, "--layout", help="full (normal | synthetic | mask | overlay rows), "
                                         "compact (one outlined row per method, the same as --compact) or "
                                         "side-by-side (each synthetic image beside its outlined copy) "
                                         "[default: full]."),
    defects: Optional[Path] = typer.Option(None, "--defects", help="Real defects for copy_paste, "
                                           "defect_transplant or real_only (as generate --defects): an MVTec-AD category, a labelme, COCO, "
                                           "YOLO-seg or mask folder; the format is detected."),
    defects_format: Optional[str] = typer.Option(None, "--defects-format", help="Name the --defects format: "
                                                 "labelme, coco, yolo-seg, masks or mvtec [default: detected]."),
    defect_types: Optional[str] = typer.Option(None, "--defect-types", help="Only these defect types, comma-separated."),
    few_shot: Optional[str] = typer.Option(None, "--few-shot", help="Use only this part of each type's real defects "
                                           "(1/3 = the papers' protocol, any fraction, or a count)."),
    png_compression: str = typer.Option("fast", "--png-compression", help="PNG encoding of images and masks, "
                                        "same pixels either way: fast (zlib's run-length strategy), level1 (the "
                                        "encoding of runs before 'fast'; about 2x slower), level9 (smallest files, "
                                        "slowest)."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=1, help="Largest input image (width x "
                                             "height) to decode [default: PIL's ~89 Mpx]."),
):
    """Write a PNG grid of normal | synthetic | mask | overlay rows (every method on the same inputs)."""
    import defectforge

    from ..pipelines.build import build_synthesizer
    from ..pipelines.run_config import check_foreground_options
    from ..pipelines.preview import LAYOUTS, preview_grid
    from ..realdefect import needs_bank
    from ..sources.foreground import parse_foreground

    names = [m.strip() for item in method for m in item.split(",") if m.strip()]
    if output.suffix.lower() != ".png":
        fail(f"OUTPUT {output}: the preview is a PNG; give a .png file name")
    if layout is not None and layout not in LAYOUTS:
        fail(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if compact and layout not in (None, "compact"):
        fail(f"--compact is --layout compact; give one of them, not --compact with --layout {layout}")
    rows = layout or ("compact" if compact else "full")
    if defects is None and (defect_types or few_shot is not None or defects_format):
        fail("--defect-types, --few-shot and --defects-format choose among real defects: give --defects "
             "CATEGORY_OR_FOLDER")
    for n in names:
        if n != "all":
            try:
                defectforge.method_info(n)
            except (KeyError, ValueError) as exc:
                fail(str(exc).strip("'\""))
    if defects is None and any(needs_bank(n) for n in names if n != "all"):
        fail(f"{', '.join(n for n in names if n != 'all' and needs_bank(n))} place(s) real defects: give --defects "
             "CATEGORY_OR_FOLDER (an MVTec-AD category or a folder of image/mask pairs)")
    if names == ["all"]:
        names = available_image_methods() + ([n for n in defectforge.list_methods(level="image") if needs_bank(n)]
                                             if defects is not None else [])
        report_left_out(names, defects_option="--defects")
    try:
        for n in names:
            if defectforge.method_info(n).capabilities["needs_model"]:
                fail(f"{n} samples a trained model, which preview does not load; try it with "
                     f"defectforge generate INPUT OUT -m {n} --model PATH -n 8")
        synthesizers = {}
        if defects is not None:
            from ..sources.defects import DefectBank

            real = [n for n in names if needs_bank(n)]
            if not real:
                fail(f"--defects is for methods that place real defects "
                     f"({', '.join(n for n in defectforge.list_methods() if needs_bank(n))}); "
                     f"{', '.join(names)} do(es) not take it")
            bank = DefectBank.from_folder(defects, few_shot=few_shot, defect_types=defect_types,
                                          format=defects_format)
            synthesizers = {n: build_synthesizer(n, {"bank": bank}) for n in real}
        check_foreground_options(foreground, foreground_threshold, foreground_invert)
        spec = parse_foreground(foreground, foreground_threshold, foreground_invert)
        picked, files = _pick_inputs(input, count, seed, size, max_pixels)
        grid = preview_grid(picked, names, seed=seed, rows=rows, synthesizers=synthesizers, foreground=spec,
                            column_labels=files)
        write_png(output, grid)
    except typer.Exit:
        raise
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(run_errors(exc, output, resumable=False))
    typer.echo(f"wrote {output} ({len(names)} method(s) x {count} images)")


# one or two per kind of synthesis: Perlin textures, patches, shapes, other images (Poisson), structure
DEMO_METHODS = ("draem", "destseg", "cutpaste", "cutpaste_scar", "glass_las", "memseg", "defectmaker", "nsa")
_DEMO_MARKER = ".defectforge-demo"


def demo_command(
    output: Path = typer.Argument(Path("defectforge-demo"), help="Folder for the demo's data and results."),
    count: int = typer.Option(24, "--count", "-n", min=1, max=10000, help="Samples per method."),
    seed: int = typer.Option(0, "--seed", "-s", min=0),
    discard_edits: bool = typer.Option(False, "--discard-edits", is_flag=True, help="Also replace the demo "
                                       "datasets' images and masks changed since the demo wrote them."),
):
    """Run the whole pipeline on built-in surfaces (metal, fabric, wood, tiles): no input needed."""
    from ..pipelines.output_folder import OutputExistsError

    try:
        _demo(output, count, seed, discard_edits)
    except typer.Exit:
        raise
    except OutputExistsError as exc:  # generate's words name --overwrite, which demo applies itself
        fail("demo cannot replace its earlier dataset, " + (str(exc).partition("refused, ")[2] or str(exc)))
    except (ValueError, TypeError, OSError, ImportError) as exc:
        fail(run_errors(exc, output, resumable=False))


def _demo(output: Path, count: int, seed: int, discard_edits: bool = False) -> None:
    from ..io.files import atomic_write_text
    from ..io.images import write_image
    from ..pipelines.generate import generate
    from ..sources.procedural import SURFACE_KINDS, surface

    if output.exists() and not output.is_dir():
        fail(f"OUTPUT {output} is a file; choose a folder for the demo")
    if output.exists() and any(output.iterdir()) and not (output / _DEMO_MARKER).exists():
        fail(f"{output} exists and is not a defectforge demo folder; choose another OUTPUT")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / _DEMO_MARKER, "made by `defectforge demo`; safe to delete\n")
    normal = output / "normal"
    typer.echo(f"1/3 making built-in normal surfaces in {normal}")
    for kind in SURFACE_KINDS:
        for i in range(6):
            write_image(normal / kind / f"{kind}_{i:02d}.png", surface(kind, 256, seed=i))
    typer.echo("2/3 generating datasets")
    datasets = output / "datasets"
    for name in DEMO_METHODS:
        # --overwrite removes only the earlier demo run's own files (and refuses if you added any)
        summary = generate(normal, datasets / name, name, count, seed=seed, overwrite=True,
                           discard_edits=discard_edits, progress=sys.stderr.isatty())
        typer.echo(f"    {name:<14} {summary['written']} image/mask pairs -> {datasets / name}")
    typer.echo("3/3 writing the preview")
    kinds = SURFACE_KINDS * 2
    picks = np.stack([surface(kind, 128, seed=100 + i) for i, kind in enumerate(kinds)])
    from ..pipelines.preview import preview_grid

    methods = available_image_methods()
    report_left_out(methods)
    write_png(output / "preview.png", preview_grid(picks, methods, seed=seed, rows="compact", column_labels=kinds))
    typer.echo(f"done. preview: {output / 'preview.png'}; datasets: {datasets}; manifest per dataset: manifest.jsonl")
