"""The output folder of a dataset run and its records: ``config.yaml``, the per-sample records
(``.records/``, then ``manifest.jsonl``), what ``--resume`` keeps and ``--overwrite`` may delete
(only what the earlier run wrote), where OUTPUT may be, and one line for a file-system error."""

from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..io.files import atomic_write_bytes
from ..io.inputs import NormalImages
from ..io.output_lock import LOCK_NAME
from .build import SPLIT_FILE
from .rebuild import resolve_recorded_paths
from .run_config import GenerateConfig
from .user_edits import check_run_files, listed, refuse_overwrite

__all__ = ["OutputExistsError", "load_run_config", "prepare_output", "write_manifest", "describe_os_error",
           "check_location", "config_dict"]


class OutputExistsError(FileExistsError):
    """The output folder holds another run or other files."""


def config_dict(cfg: GenerateConfig, synth, images: NormalImages) -> dict:
    return {
        "defectforge_version": __version__,
        "generator": asdict(cfg),
        "synthesizer": synth.config(),
        "inputs": {"root": str(images.root), "count": len(images), "bit_depth": images.bit_depth,
                   "skipped": [dict(s) for s in images.skipped]},
    }


def _flatten(value, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _differences(old: dict, new: dict) -> list[str]:
    """``field: old -> new`` for every field that differs (version and count ignored)."""
    a, b = _flatten(old), _flatten(new)
    ignored = {"defectforge_version", "generator.count"}
    out = []
    for k in sorted((set(a) | set(b)) - ignored):
        if a.get(k) is None and b.get(k) is None:  # a field added since the run, at its default (None)
            continue
        if k not in a or k not in b or json.dumps(a[k], sort_keys=True, default=str) != \
                json.dumps(b[k], sort_keys=True, default=str):
            out.append(f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}")
    return out


def load_run_config(path: str | os.PathLike) -> dict | None:
    """A defectforge ``config.yaml`` as a dict, or ``None`` when ``path`` is not one of ours."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(data, dict) or "generator" not in data or "defectforge_version" not in data:
        return None
    return data


def _read_records(output: Path) -> dict[int, dict]:
    """Sample records of the run in ``output`` (manifest, then the per-sample records of a killed run)."""
    done: dict[int, dict] = {}
    manifest = output / "manifest.jsonl"
    if manifest.is_file():
        for line in manifest.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a damaged line: the sample is made again
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done[record["index"]] = record
    records = output / ".records"
    if records.is_dir():
        for f in records.glob("*.json"):
            try:
                record = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(record, dict) and isinstance(record.get("index"), int):
                done[record["index"]] = record
    return done


def _our_files(output: Path, config: dict, records: dict[int, dict]):
    """A predicate: was this file (relative POSIX path) written by the run ``config`` describes?"""
    named = {"config.yaml", "manifest.jsonl", "skipped.jsonl", SPLIT_FILE}
    for r in records.values():
        named.update(p for p in (r.get("image_path"), r.get("mask_path")) if isinstance(p, str))
    generator = config.get("generator", {})
    methods = {"good"}
    try:
        methods.update(GenerateConfig.from_dict(generator).methods())
    except (TypeError, ValueError):
        pass
    methods.update(r.get("method") for r in records.values() if isinstance(r.get("method"), str))
    methods.update(r["defect"]["type"] for r in records.values() if isinstance(r.get("defect"), dict))
    names = "|".join(re.escape(m) for m in sorted(methods))
    # a run killed between writing a sample's files and its record leaves files named by the scheme
    scheme = re.compile(rf"(test/({names})/\d{{6,}}\.png|ground_truth/({names})/\d{{6,}}_mask\.png|"
                        rf"\.records/\d{{6,}}\.json)")

    def ours(rel: str) -> bool:
        return rel in named or bool(scheme.fullmatch(rel)) or _partial_write(rel)

    return ours


def _partial_write(rel: str) -> bool:
    """Is ``rel`` the temporary file of an atomic write into the run's own folders, left by a killed process?"""
    return bool(re.fullmatch(r"(.*/)?\.[^/]+\.tmp", rel)) and (
        rel.startswith(("test/", "ground_truth/", ".records/")) or "/" not in rel)


def _all_files(output: Path) -> list[str]:
    # the lock file is the running writer's, neither the earlier run's nor the user's
    return sorted(p.relative_to(output).as_posix() for p in output.rglob("*")
                  if (not p.is_dir() or p.is_symlink()) and p.relative_to(output).as_posix() != LOCK_NAME)


def _remove_run(output: Path, config: dict) -> None:
    """Delete the earlier run in ``output``, after checking that every file there is its own."""
    records = _read_records(output)
    ours = _our_files(output, config, records)
    files = _all_files(output)
    foreign = [f for f in files if not ours(f)]
    if foreign:
        raise OutputExistsError(f"--overwrite refused, nothing deleted: {output} holds {len(foreign)} file(s) "
                                f"this tool did not write ({listed(foreign)}); move them away or choose "
                                "another OUTPUT")
    for f in files:
        (output / f).unlink()
    for d in sorted((p for p in output.rglob("*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: len(p.parts), reverse=True):
        rel = d.relative_to(output).as_posix()
        if rel.split("/")[0] in ("test", "ground_truth", ".records") and not any(d.iterdir()):
            d.rmdir()


def check_location(output: Path, given_input: Path, input_root: Path) -> None:
    """OUTPUT must be neither INPUT, nor inside it, nor around it."""
    out = output.resolve()
    inputs = [given_input.resolve(), input_root.resolve()]
    if out in inputs:
        raise OutputExistsError(f"OUTPUT {output} is the INPUT folder; choose a new folder outside it")
    for inp in inputs:
        if inp in out.parents:
            raise OutputExistsError(f"OUTPUT {output} is inside INPUT {given_input}; its images would be read as "
                                    "inputs next time: choose a folder outside INPUT")
        if out in inp.parents:
            raise OutputExistsError(f"OUTPUT {output} contains INPUT {given_input}; choose a new folder that "
                                    "does not hold your images")


def prepare_output(output: Path, config: dict, resume: bool, overwrite: bool, count: int,
                    discard_edits: bool = False) -> tuple[dict, int, list[str]]:
    """Check (and with ``overwrite`` empty) the output folder; returns the verified finished
    samples of a resumed run, how many had a missing file, and the files the user edited
    (kept, unless ``discard_edits``: see :mod:`defectforge.pipelines.user_edits`)."""
    if output.exists() and not output.is_dir():
        raise OutputExistsError(f"OUTPUT {output} is a file, not a folder; choose a folder")
    if resume and overwrite:
        raise ValueError("give --resume (continue the run in OUTPUT) or --overwrite (replace it), not both")
    done: dict[int, dict] = {}
    repaired, edited = 0, []
    if output.is_dir() and any(p.name != LOCK_NAME for p in output.iterdir()):
        previous = load_run_config(output / "config.yaml")
        if overwrite:
            if previous is None:
                files = _all_files(output)
                raise OutputExistsError(f"--overwrite refused, nothing deleted: {output} holds no run of this tool "
                                        f"(no config.yaml of defectforge) but {len(files)} file(s) this tool did "
                                        f"not write ({listed(files)}); choose a new or empty OUTPUT")
            changed = check_run_files(output, _read_records(output)).edited
            if changed and not discard_edits:
                refuse_overwrite(output, changed)
            _remove_run(output, previous)
        elif resume:
            if previous is None:
                raise OutputExistsError(f"cannot --resume: {output} holds no config.yaml of an earlier run; "
                                        "choose a new or empty OUTPUT")
            diffs = _differences(resolve_recorded_paths(previous), config)
            if diffs:
                raise OutputExistsError(f"cannot --resume: {output / 'config.yaml'} describes a different run ("
                                        + "; ".join(diffs[:6]) + (f"; {len(diffs) - 6} more" if len(diffs) > 6 else "")
                                        + "); use the same options, or a new OUTPUT")
            records = _read_records(output)
            beyond = sorted(i for i in records if i >= count)
            if beyond:
                raise OutputExistsError(f"cannot --resume with --count {count}: {output} already holds "
                                        f"{max(beyond) + 1} samples; --resume can extend a run, not shrink it")
            found = check_run_files(output, records, keep_edits=not discard_edits)
            done, repaired, edited = found.intact, len(found.incomplete), found.edited
            # a process killed inside an atomic write leaves its temporary file; the sample is made again
            for rel in _all_files(output):
                if _partial_write(rel):
                    (output / rel).unlink()
        else:
            what = "another run" if previous is not None else "other files"
            raise OutputExistsError(f"OUTPUT {output} already holds {what}; pass --resume to continue that run, "
                                    "--overwrite to replace it, or choose a new folder")
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(output / "config.yaml", yaml.safe_dump(config, sort_keys=True).encode())
    return done, repaired, edited


def describe_os_error(exc: OSError, output: str | os.PathLike | None = None, resumable: bool = True) -> str:
    """One line for a file-system error: what failed, and what to do.

    ``resumable``: the command keeps finished work and continues with ``--resume``
    (``generate``); other commands are told to run again.
    """
    where = exc.filename or output or ""
    again = (" then run the same command with --resume to continue (finished samples are kept)" if resumable
             else " then run the same command again")
    if exc.errno == errno.ENOSPC:
        return f"disk full while writing {where}: free some space,{again}"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {where} (permission denied or read-only file system): choose another OUTPUT, "
                f"or make it writable and{again.replace(' then', '')}")
    if exc.errno == errno.ENOTDIR:
        return f"cannot write {where}: part of that path is a file, not a folder; choose another OUTPUT"
    if exc.errno == errno.EDQUOT:
        return f"disk quota exceeded while writing {where}: free some space,{again}"
    reason = exc.strerror or str(exc)
    return f"{where}: {reason}" if where else reason


def write_manifest(output: Path, records: dict[int, dict], count: int) -> None:
    """Assemble ``manifest.jsonl`` (one line per sample, in index order) and drop the per-sample records."""
    lines = [json.dumps(records[i], sort_keys=True) for i in range(count)]
    atomic_write_bytes(output / "manifest.jsonl", ("\n".join(lines) + "\n").encode())
    folder = output / ".records"
    if folder.is_dir():
        for f in sorted(folder.glob("*.json")):
            f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
