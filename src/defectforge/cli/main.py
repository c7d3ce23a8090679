"""The ``defectforge`` command line (typer). Each command lives in its own module of this package."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Industrial anomaly (defect) synthesis: generate, preview, benchmark, evaluate.")


def _register_commands() -> None:
    # Each module adds its commands to ``app`` when imported.
    from . import commands  # noqa: F401


def main() -> None:
    _register_commands()
    app()
