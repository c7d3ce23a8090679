"""The web app: pick a method, move its parameters, see the samples a dataset run would write.

Every picture on screen is made by :func:`defectforge.pipelines.generate.generate` itself (into a
run folder under the app's work folder), so the samples shown are byte for byte those that
``defectforge generate --config config.yaml OUT`` writes from the downloaded configuration, and
the command shown reproduces them too. Each parameter widget comes from the method's parameter
schema (:func:`defectforge.core.schema.parameter_schema`): ranges become sliders where the method
bounds them, choices become dropdowns, ``*_range`` pairs become a min and a max.

The logic (:class:`Session`) needs no gradio; :func:`build_app` imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

__all__ = ["Session", "Widget", "widgets_of", "build_app", "launch", "SOURCES", "ui_message"]

#: Where the pictures come from.
SOURCES = ("built-in surfaces", "folder", "upload")
#: Sliders for bounded numbers whose span is at most this (wider ones get a number box).
_SLIDER_SPAN = 1000.0


@dataclass(frozen=True)
class Widget:
    """One on-screen control: parameter ``name`` (``part`` 0/1 = min/max of a ``*_range``)."""

    method: str
    name: str
    kind: str            # slider | number | checkbox | dropdown | text
    default: Any
    low: float | None = None
    high: float | None = None
    integer: bool = False
    choices: tuple | None = None
    part: int | None = None

    @property
    def elem_id(self) -> str:
        suffix = "" if self.part is None else ("-min", "-max")[self.part]
        return f"param-{self.method}-{self.name}{suffix}"

    @property
    def label(self) -> str:
        return self.name if self.part is None else f"{self.name} ({('min', 'max')[self.part]})"

    @property
    def info(self) -> str:
        """What the control accepts and where it starts, in words (shown under the control)."""
        if self.kind == "checkbox":
            return f"on or off; starts {'on' if self.default else 'off'}"
        if self.kind == "dropdown":
            return f"one of {', '.join(map(str, self.choices))}; starts at {self.default}"
        if self.kind == "text":
            return (f"a YAML value such as a list [1, 2] or a word; empty = none (the method's own source); "
                    f"starts {'empty' if self.default == '' else 'at ' + str(self.default)}")
        what = "a whole number" if self.integer else "a number"
        if self.low is not None and self.high is not None:
            span = f"{what} from {self.low:g} to {self.high:g}"
        elif self.low is not None:
            span = f"{what}, at least {self.low:g}"
        elif self.high is not None:
            span = f"{what}, at most {self.high:g}"
        else:
            span = f"{what}, any value"
        if self.part is not None:
            span += ", " + ("not above the max" if self.part == 0 else "not below the min")
        return f"{span}; starts at {self.default:g}" if isinstance(self.default, (int, float)) else span


def widgets_of(method: str) -> list[Widget]:
    """The controls of ``method``, one per parameter (two per ``*_range``), from its schema.

    Each starts at the value a dataset run uses (``generate``'s overlay included: every sample
    anomalous, empty masks redrawn, unless the method's preset defines otherwise).
    """
    from dataclasses import replace

    from ..core.schema import parameter_schema
    from ..pipelines.build import build_synthesizer

    effective = build_synthesizer(method).config()
    out = []
    for spec in parameter_schema(method):
        value = effective.get(spec.name, spec.default)
        spec = replace(spec, default=list(value) if isinstance(value, tuple) else value)
        bounded = spec.low is not None and spec.high is not None and 0 < spec.high - spec.low <= _SLIDER_SPAN
        numeric = "slider" if bounded else "number"
        if spec.kind == "bool":
            out.append(Widget(method, spec.name, "checkbox", spec.default))
        elif spec.kind in ("int", "float"):
            out.append(Widget(method, spec.name, numeric, spec.default, spec.low, spec.high, spec.integer))
        elif spec.kind == "choice":
            out.append(Widget(method, spec.name, "dropdown", spec.default, choices=spec.choices))
        elif spec.kind == "range":
            for part in (0, 1):
                out.append(Widget(method, spec.name, numeric, spec.default[part], spec.low, spec.high, spec.integer,
                                  part=part))
        else:  # None shows as an empty box, never as the word null
            out.append(Widget(method, spec.name, "text", "" if spec.default is None else json.dumps(spec.default)))
    return out


def _value(widget: Widget, raw: Any) -> Any:
    if widget.kind == "text":
        return (yaml.safe_load(raw) if raw.strip() else None) if isinstance(raw, str) else raw
    if widget.kind in ("slider", "number"):
        if raw is None:
            return widget.default
        return int(round(float(raw))) if widget.integer else float(raw)
    return raw


def overrides_of(widgets: list[Widget], values: list[Any]) -> dict[str, Any]:
    """The parameters whose on-screen value differs from the method's default (``--set`` items)."""
    merged: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for w, raw in zip(widgets, values):
        value = _value(w, raw)
        if w.part is None:
            merged[w.name], defaults[w.name] = value, _value(w, w.default)
        else:
            merged.setdefault(w.name, [None, None])[w.part] = value
            defaults.setdefault(w.name, [None, None])[w.part] = w.default
    return {k: v for k, v in merged.items() if v != defaults[k]}


#: The app's words for what the library's messages call by their command-line options, per action
#: (the preview's "samples" slider and the dataset's "count" box both give ``--count``).
_CONTROLS = {
    "--method": "the 'method' list", "--seed": "the 'seed' box", "--size": "the 'size (px)' box",
    "--set": "the method's parameters", "--textures": "the 'textures' parameter",
}
_COUNT_CONTROL = {"preview": "the 'samples' slider", "dataset": "the 'count' box next to 'dataset folder'"}


def ui_message(exc: BaseException, action: str = "preview", output: Path | None = None) -> str:
    """A refusal in the app's terms: its controls, never a command-line option it does not have.

    ``action`` is ``"preview"`` (the pictures) or ``"dataset"`` ("generate dataset" into ``output``).
    """
    from ..io.output_lock import OutputLockedError
    from ..pipelines.output_folder import OutputExistsError

    if isinstance(exc, OutputLockedError) and output is not None:
        return (f"nothing written or deleted: the dataset folder {output} is being written by {exc.holder}; wait "
                "for that run to end, or type a new dataset folder")
    if isinstance(exc, OutputExistsError) and output is not None:
        # the app neither continues nor replaces a run: both belong to the command line, where they are explicit
        return (f"nothing written or deleted: the dataset folder {output} already holds a run or other "
                "files; type a new dataset folder (to continue or replace that run, use defectforge generate "
                "on the command line)")
    text = str(exc) if not isinstance(exc, OSError) or exc.filename is None else \
        f"{exc.filename}: {exc.strerror or exc}"
    controls = dict(_CONTROLS, **{"--count": _COUNT_CONTROL[action]})

    def control(match: re.Match) -> str:
        flag = match.group(0)
        return controls.get(flag, f"the command line's {flag} (not in this app)")

    return re.sub(r"--[a-z][a-z0-9-]*", control, text)


class Session:
    """Inputs, runs and files of one app (a work folder holding surfaces, uploads and runs).

    Relative folders typed into the app (images, dataset) start at ``base``: the folder the app
    was started in, unless given; the app shows it beside those boxes and reports absolute paths.
    """

    def __init__(self, workdir: str | os.PathLike | None = None, base: str | os.PathLike | None = None):
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="defectforge-ui-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base = Path(base or os.getcwd()).resolve()

    def resolve(self, folder: str | os.PathLike) -> Path:
        """A typed folder as an absolute path (``~`` expanded; relative ones start at :attr:`base`)."""
        path = Path(str(folder).strip()).expanduser()
        return path if path.is_absolute() else self.base / path

    def surfaces(self) -> Path:
        """The built-in procedural surfaces (metal, fabric, wood, tiles; two of each), written once."""
        from ..io.images import write_image
        from ..sources.procedural import SURFACE_KINDS, surface

        folder = self.workdir / "surfaces"
        if not folder.is_dir():
            tmp = self.workdir / ".surfaces.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            for kind in SURFACE_KINDS:
                for i in range(2):
                    write_image(tmp / f"{kind}_{i}.png", surface(kind, 256, seed=i))
            tmp.rename(folder)
        return folder

    def uploads(self, files: list[str] | None) -> Path:
        """Uploaded files copied into one folder named by their content."""
        if not files:
            raise ValueError("upload at least one image, or pick another source")
        digest = hashlib.sha1()
        for f in sorted(map(str, files)):
            digest.update(Path(f).read_bytes())
        folder = self.workdir / "uploads" / digest.hexdigest()[:12]
        if not folder.is_dir():
            for k, f in enumerate(sorted(map(str, files))):
                target = folder / f"{k:03d}_{Path(f).name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
        return folder

    def input_folder(self, source: str, folder: str | None, files: list[str] | None) -> Path:
        if source == "folder":
            if not folder or not str(folder).strip():
                raise ValueError("type the path of a folder of normal images")
            path = self.resolve(folder)
            if not path.is_dir():
                raise ValueError(f"no folder {path} (relative paths start at {self.base})")
            return path
        if source == "upload":
            return self.uploads(files)
        return self.surfaces()

    def run(self, input_folder: Path, method: str, count: int, seed: int, size: int | None,
            overrides: dict[str, Any]) -> Path:
        """The samples ``0..count-1`` written by ``generate`` (cached by configuration)."""
        from ..pipelines.generate import generate

        key = json.dumps([str(input_folder.resolve()), method, count, seed, size, overrides], sort_keys=True)
        out = self.workdir / "runs" / hashlib.sha1(key.encode()).hexdigest()[:16]
        if not (out / "manifest.jsonl").exists():
            generate(input_folder, out, method, count, seed=seed, size=size, overrides=overrides,
                     overwrite=True, progress=False)
        return out

    def render(self, method: str, source: str, folder: str | None, files: list[str] | None, size: float | None,
               count: float, seed: float, widgets: list[Widget], values: list[Any]) -> dict[str, Any]:
        """Everything the page shows for one state of the controls."""
        from ..io.images import read_image
        from ..pipelines.preview import overlay

        size_i = int(size) if size else None
        count_i, seed_i = int(count), int(seed)
        overrides = overrides_of(widgets, values)
        input_folder = self.input_folder(source, folder, files)
        run = self.run(input_folder, method, count_i, seed_i, size_i, overrides)
        samples = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines() if line.strip()]
        samples = [s for s in samples if "index" in s]
        columns, gallery = [], []
        for s in samples:
            image = read_image(run / s["image_path"], channels=3)
            mask = (read_image(run / s["mask_path"], channels=1)[..., 0] > 127) if s.get("mask_path") else \
                np.zeros(image.shape[:2], bool)
            tiles = [image, overlay(image, mask, fill=False), overlay(image, mask)]
            columns.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], 0))
            gallery.append((str(run / s["image_path"]), f"sample {s['index']}: {s['method']}"))
        grid = np.concatenate(columns, 1)
        command = ["defectforge", "generate", str(input_folder), "out", "--method", method, "--count", str(count_i),
                   "--seed", str(seed_i)]
        if size_i:
            command += ["--size", str(size_i)]
        for k, v in sorted(overrides.items()):
            command += ["--set", f"{k}={json.dumps(v)}"]
        params = {str(s["index"]): s["params"] for s in samples}
        return {"grid": grid, "gallery": gallery, "params": json.dumps(params, indent=1, sort_keys=True),
                "command": shlex.join(command), "config": str(run / "config.yaml"), "run": run}

    def generate_dataset(self, output: str, method: str, source: str, folder: str | None, files, size, count, seed,
                         widgets: list[Widget], values: list[Any], overwrite: bool = False) -> dict:
        from ..pipelines.generate import generate

        if not output or not str(output).strip():
            raise ValueError("type a dataset folder")
        return generate(self.input_folder(source, folder, files), self.resolve(output), method, int(count),
                        seed=int(seed),
                        size=int(size) if size else None, overrides=overrides_of(widgets, values),
                        overwrite=overwrite, progress=True)


def build_app(session: Session | None = None, methods: list[str] | None = None, default_method: str = "draem"):
    """The gradio ``Blocks`` of the app."""
    import gradio as gr

    from ..core.registry import list_methods, method_info

    session = session or Session()
    from ..realdefect import needs_bank  # the app has no way to give a bank of real defects

    methods = methods or [n for n in list_methods(level="image")
                          if not method_info(n).missing_requirements() and not needs_bank(n)
                          and not method_info(n).capabilities["needs_model"]]  # those need model=
    default_method = default_method if default_method in methods else methods[0]
    groups, all_widgets, components = {}, [], []
    with gr.Blocks(title="defectforge", analytics_enabled=False) as app:
        gr.Markdown("# defectforge\nPick a method, move its parameters: the samples below are those "
                    "`defectforge generate` writes with this configuration.")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                method = gr.Dropdown(methods, value=default_method, label="method", elem_id="method")
                source = gr.Radio(list(SOURCES), value=SOURCES[0], label="images", elem_id="source")
                folder = gr.Textbox(label="folder of normal images (source: folder)", elem_id="folder",
                                    info=f"absolute, or relative to {session.base}")
                files = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                label="upload (source: upload)", elem_id="upload")
                with gr.Row():
                    size = gr.Number(128, label="size (px)", precision=0, minimum=16, elem_id="size",
                                     info="side of every image, at least 16; empty keeps each image's size")
                    count = gr.Slider(1, 8, value=4, step=1, label="samples", elem_id="count",
                                      info="samples shown, 1 to 8")
                    seed = gr.Number(0, label="seed", precision=0, minimum=0, elem_id="seed",
                                     info="a whole number, at least 0; sample i depends on (seed, i) only")
                for name in methods:
                    with gr.Group(visible=name == default_method) as group:
                        gr.Markdown(f"**{name}** parameters")
                        for w in widgets_of(name):
                            components.append(_component(gr, w))
                            all_widgets.append(w)
                    groups[name] = group
            with gr.Column(scale=2):
                grid = gr.Image(label="image | outline | overlay (one column per sample)", type="numpy",
                                format="png", interactive=False, elem_id="grid")
                gallery = gr.Gallery(label="samples as written", columns=4, height="auto", elem_id="samples",
                                     format="png")
                command = gr.Textbox(label="CLI command", buttons=["copy"], interactive=False, elem_id="command")
                config = gr.DownloadButton("download config.yaml", elem_id="download-config")
                params = gr.Code(label="recorded parameters (per sample)", language="json", elem_id="params")
                with gr.Row():
                    output = gr.Textbox(label="dataset folder", elem_id="output", scale=3,
                                        info=f"a new folder: absolute, or relative to {session.base}")
                    dataset_count = gr.Number(100, label="count", precision=0, minimum=1, elem_id="dataset-count",
                                              info="samples to write, at least 1")
                    make = gr.Button("generate dataset", elem_id="generate")
                status = gr.Textbox(label="status", interactive=False, elem_id="status")

        common = [method, source, folder, files, size, count, seed]

        def on_change(method_v, source_v, folder_v, files_v, size_v, count_v, seed_v, *values):
            idx = [i for i, w in enumerate(all_widgets) if w.method == method_v]
            try:
                shown = session.render(method_v, source_v, folder_v, files_v, size_v, count_v, seed_v,
                                       [all_widgets[i] for i in idx], [values[i] for i in idx])
            except (ValueError, TypeError, OSError) as exc:  # the pictures stay; the status box says why
                return (gr.update(),) * 5 + (f"refused: {ui_message(exc, 'preview')}",)
            return shown["grid"], shown["gallery"], shown["command"], shown["config"], shown["params"], ""

        outputs = [grid, gallery, command, config, params, status]
        gr.on([c.change for c in common + components], on_change, inputs=common + components, outputs=outputs,
              trigger_mode="always_last")
        app.load(on_change, inputs=common + components, outputs=outputs)
        method.change(lambda m: [gr.update(visible=n == m) for n in methods], inputs=method,
                      outputs=[groups[n] for n in methods])

        def on_generate(out, n, method_v, source_v, folder_v, files_v, size_v, _count, seed_v, *values,
                        progress=gr.Progress(track_tqdm=True)):
            idx = [i for i, w in enumerate(all_widgets) if w.method == method_v]
            try:
                summary = session.generate_dataset(out, method_v, source_v, folder_v, files_v, size_v, n, seed_v,
                                                   [all_widgets[i] for i in idx], [values[i] for i in idx])
            except (ValueError, TypeError, OSError) as exc:
                target = session.resolve(out) if out and str(out).strip() else None
                return f"refused: {ui_message(exc, 'dataset', target)}"
            return f"wrote {summary['written']} samples to {summary['output']}"

        make.click(on_generate, inputs=[output, dataset_count] + common + components, outputs=status)
    return app


def _component(gr, w: Widget):
    common = dict(label=w.label, elem_id=w.elem_id, info=w.info)
    if w.kind == "checkbox":
        return gr.Checkbox(bool(w.default), **common)
    if w.kind == "dropdown":
        return gr.Dropdown(list(w.choices), value=w.default, **common)
    if w.kind == "slider":
        step = _step(w)
        if step is not None:
            return gr.Slider(w.low, w.high, value=w.default, step=step, **common)
    if w.kind in ("slider", "number"):
        return gr.Number(w.default, precision=0 if w.integer else None, minimum=w.low, maximum=w.high, **common)
    return gr.Textbox(str(w.default), **common)


def _step(w: Widget) -> float | None:
    """A slider step on whose grid the default lies (a slider snaps its value to the grid), or None."""
    if w.integer:
        return 1
    span = w.high - w.low
    for step in (0.01, 0.1, 1.0) if span > 1 else (0.01, 0.005, 0.001):
        if span / step <= 2000:
            ticks = (w.default - w.low) / step
            if abs(ticks - round(ticks)) < 1e-6:
                return step
    return None


def launch(host: str = "127.0.0.1", port: int = 7860, workdir: str | None = None, open_browser: bool = False,
           block: bool = True):
    """Serve the app on ``host:port`` (127.0.0.1 unless told otherwise); returns the app."""
    session = Session(workdir)
    app = build_app(session)
    app.launch(server_name=host, server_port=port, inbrowser=open_browser, share=False, quiet=True,
               prevent_thread_lock=not block, allowed_paths=[str(session.workdir)])
    return app
