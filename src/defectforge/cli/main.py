"""The ``defectforge`` command line (typer). Each command lives in its own module of this package."""

from __future__ import annotations

import warnings

import typer

# plain help (rich_markup_mode=None): typer 0.29's rich panels print flags as "<bool>" options
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Industrial anomaly (defect) synthesis: generate, preview, benchmark, evaluate.")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    # users see "warning: <message>", never Python file names and source lines
    return f"warning: {message}\n"


def _register_commands() -> None:
    # Each module adds its commands to ``app`` when imported.
    from . import commands  # noqa: F401


def main() -> None:
    warnings.formatwarning = _one_line_warning
    _register_commands()
    app()
