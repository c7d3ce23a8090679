"""The dataset generator: a folder of good images in, an MVTec-style defect dataset out.

Layout written under ``OUTPUT`` (anomalib's ``Folder`` / MVTec readers take it as it is)::

    test/<method>/000012.png                 synthetic anomalies
    ground_truth/<method>/000012_mask.png    their masks, 0/255
    test/good/000013.png                     normal samples (only with normal_ratio > 0)
    manifest.jsonl                           one line per sample, in index order (samples only)
    config.yaml                              the full run configuration; skipped inputs and why

Sample ``i`` depends on ``(seed, i)`` alone: its source image, whether it is normal, and every
synthesis parameter. So the files are byte-identical whatever the number of workers, and an
interrupted run resumed with ``resume=True`` ends exactly as an uninterrupted one (and a larger
``count`` extends it). Every file is written atomically (temporary file + rename); finished
samples are recorded one file each under ``.records/`` until the manifest is assembled, with the
size and SHA-256 of their image and mask, which ``resume`` checks: missing files are made
again, and a file whose bytes changed (a mask corrected by hand) is the user's and kept
(:mod:`defectforge.pipelines.user_edits`). One run at a time writes a folder: every run holds
the lock of :mod:`defectforge.io.output_lock` from before it reads the folder until it ends.

Nothing the tool did not write is ever deleted: ``overwrite`` removes only the files the earlier
run's own records name (or its naming scheme, for a run killed between writing a file and its
record), and refuses, deleting nothing, when the folder holds anything else or a file the user
changed. An output folder
equal to, inside or containing the input is refused before anything is read.

The run is a small package, one module per job; this one is :func:`generate` itself:

- :mod:`.run_config`: the configuration (:class:`GenerateConfig`) and the checks before any write;
- :mod:`.build`: the synthesizer built from a configuration (also used outside datasets);
- :mod:`.sample_writer`: the per-sample work (plan, synthesis, redraws, encoding, records);
- :mod:`.chunks`: running chunks of sample indices in this process, a process pool or Ray;
- :mod:`.output_folder`: the output folder, ``config.yaml``, the records and the manifest.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..core.validation import check_choice, check_range
from ..io.images import pixel_limit
from ..io.inputs import load_normal_images, resolve_input_folder
from ..io.output_lock import lock_output
from .build import (DATASET_OVERLAY, SPLIT_FILE, build_from_config, build_synthesizer, defect_bank,
                    synthesizer_from_config)
from .chunks import chunk_runner, plan_chunks, start_worker_imports
from .output_folder import (OutputExistsError, check_location, config_dict, describe_os_error, load_run_config,
                            prepare_output, write_manifest)
from .rebuild import bank_of
from .run_config import EXTRAS, GenerateConfig, MissingDependencyError, check_foreground_options, check_requirements
from .sample_record import mask_contrast

# the names callers had from this module before it became a package of jobs
__all__ = ["GenerateConfig", "generate", "build_synthesizer", "build_from_config", "synthesizer_from_config",
           "OutputExistsError", "MissingDependencyError", "load_run_config", "describe_os_error", "EXTRAS",
           "DATASET_OVERLAY", "check_foreground_options", "mask_contrast", "run_cost", "LongRunWarning"]


#: Network passes (samples x denoising steps) from which a run says what it will cost before it starts:
#: about 4 minutes at the 12.5 ms a pass of the 0.79 M-parameter UNet measured on one CPU thread
#: (docs/generative.md, few-shot detection); larger models take longer per pass.
LONG_RUN_PASSES = 20_000


class LongRunWarning(UserWarning):
    """A run of a generative method that will take long (said before the first sample)."""


def run_cost(synth, samples: int) -> str | None:
    """What a run of ``samples`` samples will cost, when it is long (at least :data:`LONG_RUN_PASSES`).

    Generative methods report their network passes per sample (``network_passes()``: denoising
    steps, or one generator pass); the others cost milliseconds and give ``None``.
    """
    inner, per_defect = synth, 1
    while not hasattr(inner, "network_passes") and hasattr(inner, "inner"):  # control(...): up to N defects
        per_defect *= max(getattr(inner, "defect_count", (1, 1)))
        inner = inner.inner
    if not hasattr(inner, "network_passes"):
        return None
    steps = inner.network_passes()
    total = samples * steps * per_defect
    if total < LONG_RUN_PASSES:
        return None
    name = getattr(inner, "method_name", type(inner).__name__)
    if steps == 1:
        return (f"{name}: {samples:,} samples = {total:,} generator passes before the run ends; "
                "fewer samples (--count) make it shorter")
    return (f"{name}: {samples:,} samples x {steps:,} denoising steps{f' x {per_defect} defects' if per_defect > 1 else ''}"
            f" = {total:,} network passes before the run ends (a small UNet on one CPU thread: about 12 ms a "
            "pass); fewer steps (--set num_inference_steps=20 --set scheduler=ddim) or fewer samples (--count) "
            "make it shorter")


# --- the run --------------------------------------------------------------------------------------

def generate(cfg: GenerateConfig | str | os.PathLike, output: str | os.PathLike | None = None,
             method: str | None = None, count: int | None = None, *, workers: int = 1, resume: bool = False,
             overwrite: bool = False, progress: bool = True, synthesizer: dict | None = None,
             engine: str = "local", ray_address: str | None = None, discard_edits: bool = False,
             **fields_) -> dict:
    """Write a synthetic defect dataset (see the module docstring); returns a summary dict.

    Call it with a :class:`GenerateConfig` (as the CLI does) or, as a shortcut, with the
    config's fields: ``generate(input, output, method, count, seed=..., ...)``.
    ``synthesizer`` is a synthesizer's ``config()`` (``config.yaml``'s section) to use instead of
    building one from ``cfg``: a run rebuilt from its record. ``engine="ray"`` runs the same
    chunks as Ray tasks (:mod:`defectforge.pipelines.ray_engine`; ``ray_address`` names a
    cluster), writing the same files. A file the user changed after the run wrote it is kept by
    ``resume`` and refused by ``overwrite`` unless ``discard_edits``.

    Examples
    --------
    >>> import tempfile, numpy as np, pathlib
    >>> from defectforge.io.images import write_image
    >>> src, out = pathlib.Path(tempfile.mkdtemp()), pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> write_image(src / "a.png", np.full((64, 64, 3), 128, np.uint8))
    >>> generate(GenerateConfig(str(src), "cutpaste", count=2), out, progress=False)["written"]
    2
    """
    if not isinstance(cfg, GenerateConfig):
        cfg = GenerateConfig(input=str(cfg), method=method, count=100 if count is None else count, **fields_)
    elif method is not None or count is not None or fields_:
        raise TypeError("give a GenerateConfig or its fields, not both")
    if output is None:
        raise TypeError("generate() needs an output folder")
    output = Path(output)
    spec = cfg.validate()
    check_range("workers", workers, 1, 256, integer=True)
    check_choice("engine", engine, ("local", "ray"))
    if engine == "ray":
        from .ray_engine import require_ray

        require_ray()  # before any file is written
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in OUTPUT) or --overwrite (replace it), not both")
    # everything is checked before the first file is written
    input_root = resolve_input_folder(cfg.input)
    check_location(output, Path(cfg.input), input_root)
    check_requirements(cfg)
    start_worker_imports(engine, workers)  # the workers' imports run while this process reads the inputs
    # one writer per folder, from before anything there is read or deleted; textures, masks and
    # defect banks obey --max-pixels as the inputs do
    with lock_output(output), pixel_limit(cfg.max_pixels):
        return _write_run(cfg, output, spec, workers=workers, resume=resume, overwrite=overwrite, progress=progress,
                          synthesizer=synthesizer, engine=engine, ray_address=ray_address, discard_edits=discard_edits)


def _write_run(cfg: GenerateConfig, output: Path, spec, *, workers: int, resume: bool, overwrite: bool,
               progress: bool, synthesizer: dict | None, engine: str, ray_address: str | None,
               discard_edits: bool) -> dict:
    """:func:`generate`'s work once its options are checked, under the output folder's lock."""
    bank = defect_bank(cfg, output / SPLIT_FILE if resume else None) if synthesizer is None else None
    synth = build_from_config(cfg, bank) if synthesizer is None else synthesizer_from_config(synthesizer)
    if synthesizer is not None and synth.config() != synthesizer:
        raise ValueError("config.yaml's synthesizer section does not rebuild to the same synthesizer "
                         "(written by another defectforge version?); rerun with the original options")
    bank = bank if bank is not None else bank_of(synth)  # a rebuilt few-shot run records its split too
    images = load_normal_images(cfg.input, cfg.size, progress=progress, bit_depth=cfg.bit_depth,
                                max_pixels=cfg.max_pixels)
    if spec is not None and hasattr(spec, "path_for"):
        for i in range(len(images)):
            spec.read(images.relative(i))  # every image has its foreground mask, binary or thresholded
    config = config_dict(cfg, synth, images)
    done, repaired, edited = prepare_output(output, config, resume, overwrite, cfg.count, discard_edits)
    keep = frozenset(edited) if not discard_edits else frozenset()
    if bank is not None and bank.split is not None:  # next to the output: which real defects fed synthesis
        bank.split.save(output / SPLIT_FILE)

    pending = [i for i in range(cfg.count) if i not in done]
    cost = run_cost(synth, round(len(pending) * (1 - cfg.normal_ratio)))
    if cost:
        warnings.warn(cost, LongRunWarning, stacklevel=2)
    chunks = plan_chunks(pending, cfg.batch_size, workers)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.count, initial=cfg.count - len(pending), desc=f"generating {cfg.method}", unit="img")
    records = dict(done)
    # pool and Ray workers rebuild the synthesizer from the same arguments; this process reuses its own
    runner = chunk_runner(engine, workers, (cfg, str(output), images, spec, synthesizer, keep), synth, ray_address)
    for chunk, result in runner.run(chunks):
        for r in result:
            records[r["index"]] = r
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    write_manifest(output, records, cfg.count)
    labels = [records[i]["label"] for i in range(cfg.count)]
    return {
        "output": str(output), "written": cfg.count, "resumed": len(done), "repaired": repaired,
        "kept_edits": sorted(keep),
        "anomalous": sum(1 for v in labels if v), "normal": sum(1 for v in labels if not v),
        "skipped_inputs": len(images.skipped),
        "failed": sum(1 for i in range(cfg.count) if "failed" in records[i]),
        "low_contrast": sum(1 for i in range(cfg.count)
                            if records[i].get("contrast") is not None and records[i]["contrast"] < 2 / 255),
    }
