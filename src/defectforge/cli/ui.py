"""``defectforge ui``: the local web app (needs the ``ui`` extra: gradio)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import fail


def ui_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 exposes the app to your network."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    workdir: Optional[Path] = typer.Option(None, "--workdir",
                                           help="Folder for the app's surfaces, uploads and runs (default: a temporary folder)."),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in a browser."),
):
    """Tune a method in the browser: parameters as widgets, samples as `generate` writes them."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        fail('the web app needs gradio: pip install -e ".[ui]"')
    from ..ui.app import launch

    typer.echo(f"defectforge ui on http://{host}:{port} (Ctrl+C stops it)")
    launch(host=host, port=port, workdir=None if workdir is None else str(workdir), open_browser=open_browser)
