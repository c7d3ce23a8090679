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


def _one_line_usage_error(self, file=None) -> None:
    # a bad option value or a missing argument is one line, like every other error of ours
    hint = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
    message = f"error: {self.format_message()}{hint}"
    if file is None:
        typer.echo(message, err=True)
    else:
        typer.echo(message, file=file)


# typer's vendored click prints usage, a hint and the error on three lines; we print one
typer._click.exceptions.UsageError.show = _one_line_usage_error


def _register_commands() -> None:
    # Each module adds its commands to ``app`` when imported.
    from . import commands  # noqa: F401


def main() -> None:
    warnings.formatwarning = _one_line_warning
    _register_commands()
    app()


if __name__ == "__main__":  # python -m defectforge.cli.main: the commands register on the package's module
    from defectforge.cli.main import main as _package_main

    _package_main()
