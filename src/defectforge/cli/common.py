"""What the command modules share: the one-line error exit, the parsers of option values, and
which image-level methods a command can run here, and the timer of the speed commands."""

from __future__ import annotations

import time

import typer
import yaml

__all__ = ["fail", "run_errors", "parse_overrides", "parse_count_range", "parse_area_range",
           "available_image_methods", "report_left_out", "time_callable", "print_parameters"]


def available_image_methods() -> list[str]:
    """Image-level methods whose optional dependencies (``cls.requires``) are installed.

    Methods that need a bank of real defects (``copy_paste``, ``defect_transplant``) are left out:
    they run only when given defects (``--defects``).
    Methods that sample a trained model (``realnet_sdas``, ``masked_diffusion``: ``needs_model``)
    are left out: they run only when given one (``--set model=PATH``).
    """
    import defectforge

    from ..realdefect import needs_bank

    return [n for n in defectforge.list_methods(level="image") if not needs_bank(n)
            and not defectforge.method_info(n).capabilities["needs_model"]
            and not defectforge.method_info(n).missing_requirements()]


def report_left_out(used: list[str], defects_option: str = "generate --defects") -> None:
    """Say which image-level methods a command leaves out, and why (a missing optional package).

    ``defects_option`` is how the command itself takes real defects (``--defects`` for
    ``preview``); a command without one points at ``generate --defects``.
    """
    import defectforge

    from ..pipelines.run_config import EXTRAS
    from ..realdefect import needs_bank

    for name in defectforge.list_methods(level="image"):
        if name not in used and needs_bank(name):
            typer.echo(f"left out {name}: it places real defects ({defects_option} CATEGORY_OR_FOLDER)", err=True)
        elif name not in used and defectforge.method_info(name).capabilities["needs_model"]:
            typer.echo(f"left out {name}: needs a trained model (generate --model PATH; see defectforge train)", err=True)
        elif name not in used:
            missing = defectforge.method_info(name).missing_requirements()
            typer.echo(f"left out {name}: needs the optional package(s) {', '.join(missing)}: "
                       f"{'; '.join(EXTRAS.get(m, 'pip install ' + m) for m in missing)}", err=True)


def fail(message: str) -> None:
    """Print ``error: message`` (one line, red, on stderr) and exit with status 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def print_parameters(method: str, as_json: bool = False) -> None:
    """Print ``method``'s parameter schema (:func:`defectforge.core.schema.parameter_schema`)."""
    import json

    from ..core.schema import parameter_schema

    try:
        specs = parameter_schema(method)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps([s.as_dict() for s in specs], indent=2, default=str))
        return
    width = max((len(s.name) for s in specs), default=4)
    for spec in specs:
        accepted = ""
        if spec.choices:
            accepted = "  one of " + ", ".join(str(c) for c in spec.choices)
        elif spec.low is not None or spec.high is not None:
            low = "-inf" if spec.low is None else f"{spec.low:g}"
            high = "inf" if spec.high is None else f"{spec.high:g}"
            accepted = f"  from {low} to {high}" + (" (each end)" if spec.kind == "range" else "")
        typer.echo(f"{spec.name:<{width}}  {spec.kind:<6} default {spec.default!r}{accepted}")


def run_errors(exc: BaseException, output=None, resumable: bool = True) -> str:
    """One line for an error a user caused: the argument at fault and what to do.

    ``resumable``: the command continues with ``--resume`` (only ``generate`` has it).
    """
    from ..pipelines.output_folder import describe_os_error

    if isinstance(exc, OSError) and not isinstance(exc, FileExistsError) and exc.errno is not None:
        return describe_os_error(exc, output, resumable)
    return str(exc)


def parse_overrides(items: list[str] | None, flag: str = "--set") -> dict:
    """``["key=value", ...]`` given as ``flag`` to a dict; values are YAML (numbers, lists, booleans, strings)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"{flag} expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            # YAML's own message spans several lines with a caret; the user gets one line
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise typer.BadParameter(f"{flag} {item!r}: the value is not valid YAML ({problem}); quote strings, "
                                     "close lists like [1, 2]") from None
    return out


def parse_count_range(text: str | None) -> tuple[int, int] | None:
    """``"2"`` -> (2, 2); ``"1-3"`` or ``"1,3"`` -> (1, 3)."""
    if text is None:
        return None
    parts = [p for p in text.replace(",", "-").split("-") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise typer.BadParameter(f"--defect-count expects N or MIN-MAX (e.g. 1-3), got {text!r}") from None
    if len(values) not in (1, 2):
        raise typer.BadParameter(f"--defect-count expects N or MIN-MAX (e.g. 1-3), got {text!r}")
    return (values[0], values[-1])


def parse_area_range(text: str | None) -> tuple[float, float] | None:
    """``"0.01,0.1"`` -> (0.01, 0.1): total defect area as a fraction of the image."""
    if text is None:
        return None
    try:
        values = [float(p) for p in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"--area-range expects MIN,MAX fractions (e.g. 0.01,0.1), got {text!r}") from None
    if len(values) != 2:
        raise typer.BadParameter(f"--area-range expects MIN,MAX fractions (e.g. 0.01,0.1), got {text!r}")
    return (values[0], values[1])


def time_callable(fn, min_time: float, max_iterations: int) -> tuple[float, int]:
    """Seconds per call of ``fn(k)`` after one warm-up call, over at least ``min_time`` seconds."""
    fn(0)
    start, k = time.perf_counter(), 0
    while True:
        k += 1
        fn(k)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or k >= max_iterations:
            return elapsed / k, k
