"""The ``defectforge`` command line (typer). Each command is a function in a module of this package,
registered here by name (:func:`_register_commands`); the command modules never import this one."""

from __future__ import annotations

import warnings
from collections.abc import Callable

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


def _commands() -> dict[str, Callable]:
    """Every command of the ``defectforge`` line, by name, in the order ``--help`` lists them."""
    from . import bench, benchmark, evaluate, export, importer, synthesis, train, ui

    return {
        "methods": synthesis.methods_command, "generate": synthesis.generate_command,
        "preview": synthesis.preview_command, "demo": synthesis.demo_command, "import": importer.import_command,
        "export": export.export_command,
        "evaluate": evaluate.evaluate, "evaluate-detection": evaluate.evaluate_detection,
        "benchmark": benchmark.benchmark_command, "bench": bench.bench_command, "train": train.train_command,
        "ui": ui.ui_command,
    }


def _register_commands() -> None:
    """Add every command to ``app`` (once; the command modules import their heavy packages lazily)."""
    registered = {info.name for info in app.registered_commands}
    for name, function in _commands().items():
        if name not in registered:
            app.command(name)(function)


def main() -> None:
    warnings.formatwarning = _one_line_warning
    _register_commands()
    app()


if __name__ == "__main__":
    main()
