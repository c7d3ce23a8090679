"""Issue 19, section 5: errors are one line, and name only options the command has.

Two checks of the options an error names. Statically: every ``--option`` in the text of a CLI
command (its body and the helpers of its module it calls; help texts aside) is an option of that
command, unless the text names another command before it (``generate --defects``). At run time:
a table of faulty invocations per command, many of which fail inside the library (its messages
name options too), each checked the same way on what the user sees.
"""

from __future__ import annotations

import ast
import errno
import re
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()
CLICK = typer.main.get_command(app)
COMMANDS = {name: {opt for p in cmd.params for opt in p.opts + p.secondary_opts if opt.startswith("--")} | {"--help"}
            for name, cmd in CLICK.commands.items()}
FLAG = re.compile(r"--[a-z][a-z0-9-]*")
# text after these names flags of other programs (pip install --no-deps, ray start --head)
FOREIGN = re.compile(r"\b(pip|ray|python|pytest)\b[^;:()]*$")
QUALIFIED = re.compile(r"\b(?:defectforge\s+)?(" + "|".join(map(re.escape, sorted(COMMANDS, key=len, reverse=True)))
                       + r")((?:\s+[A-Za-z0-9_./{}'\"=-]+)*?)\s*$")


def flags_named(text: str, command: str) -> list[tuple[str, str]]:
    """``(command, flag)`` for each option ``text`` names: a flag belongs to the command named
    right before it (``defectforge train ... --on``, ``generate --defects``), else to ``command``."""
    found = []
    for match in FLAG.finditer(text):
        before = text[:match.start()]
        segment = re.split(r"[;(]|: ", before)[-1]
        if FOREIGN.search(segment):
            continue
        owner = command
        qualified = re.search(r"(?:\bdefectforge\s+([a-z-]+)[^;()]*|\b([a-z-]+)\s+)$", segment)
        if qualified:
            name = qualified.group(1) if qualified.group(1) else qualified.group(2)
            if name in COMMANDS and (qualified.group(1) or name != command):
                owner = name
        found.append((owner, match.group()))
    return found


def _strings(node: ast.AST) -> list[str]:
    """String constants under ``node`` (f-strings' literal parts joined), leaving out help texts."""
    out = []
    for child in ast.walk(node):
        if isinstance(child, ast.keyword) and child.arg == "help":
            for sub in ast.walk(child.value):
                sub._help = True  # noqa: SLF001  (marks the help text's nodes to skip them below)
    for child in ast.walk(node):
        if getattr(child, "_help", False):
            continue
        if isinstance(child, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "X" for v in child.values))
            for part in child.values:
                part._help = True  # noqa: SLF001  (read as part of the whole f-string above)
        elif isinstance(child, ast.Constant) and isinstance(child.value, str):
            out.append(child.value)
    return out


def _command_texts() -> dict[str, list[str]]:
    """Per command, the strings of its function and of the functions it calls in its own module or
    in the shared helpers (``cli/common.py``), transitively."""
    import inspect

    from defectforge.cli import common
    from defectforge.cli.main import _commands

    def functions_of(path) -> dict[str, ast.FunctionDef]:
        return {n.name: n for n in ast.parse(Path(path).read_text()).body if isinstance(n, ast.FunctionDef)}

    shared = functions_of(common.__file__)
    texts: dict[str, list[str]] = {}
    for command, function in _commands().items():
        functions = {**shared, **functions_of(inspect.getsourcefile(function))}
        seen, todo = set(), [function.__name__]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            body = functions[name]
            if ast.get_docstring(body):
                body.body[0]._help = True  # noqa: SLF001  (docstrings speak to developers)
                for sub in ast.walk(body.body[0]):
                    sub._help = True  # noqa: SLF001
            todo += [c.func.id for c in ast.walk(body) if isinstance(c, ast.Call)
                     and isinstance(c.func, ast.Name) and c.func.id in functions]
        texts[command] = [s for name in seen for s in _strings(functions[name])]
    return texts


def test_every_cli_message_names_options_its_command_has():
    texts = _command_texts()
    assert set(texts) == set(COMMANDS)
    wrong = sorted({(command, owner, flag, text) for command, strings in texts.items() for text in strings
                    for owner, flag in flags_named(text, command) if flag not in COMMANDS[owner]})
    assert not wrong, "\n".join(f"{c}: {f} is no option of {o}: {t!r}" for c, o, f, t in wrong)


def test_the_check_finds_a_foreign_option():
    assert flags_named("give --batch-size", "generate") == [("generate", "--batch-size")]
    assert flags_named("it places real defects (generate --defects X)", "demo") == [("generate", "--defects")]
    assert flags_named("pip install --no-deps lpips", "evaluate") == []
    assert flags_named("see 'defectforge train ddpm DATA OUT --on defects'", "generate") == [("train", "--on")]


# --- what the user sees ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("msg")
    good = root / "good"
    good.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles"]):
        Image.fromarray(surface(kind, 48, seed=i)).save(good / f"{kind}.png")
    defects = root / "defects" / "scratch"
    defects.mkdir(parents=True)
    for i in range(3):
        image, mask = surface("metal", 48, seed=10 + i).copy(), np.zeros((48, 48), np.uint8)
        mask[10:20, 12 + i:30] = 255
        image[mask > 0] = 20
        Image.fromarray(image).save(defects / f"d{i}.png")
        Image.fromarray(mask).save(defects / f"d{i}_mask.png")
    config = root / "edited.yaml"
    out = root / "run"
    assert runner.invoke(app, ["generate", str(good), str(out), "-m", "cutout", "-n", "2"]).exit_code == 0
    config.write_text((out / "config.yaml").read_text().replace("batch_size: 32", "batch_size: 0"))
    return {"good": good, "defects": root / "defects", "root": root, "config": config, "run": out}


FAULTS = [  # (command and arguments with {good}, {defects}, {root}, {config}, {run} filled in)
    "generate {good} {root}/o1 -m draem -n 2 --set opacity_range=[1,2",
    "generate {good} {root}/o2 -m draem -n 2 --set opacity_range={{",
    'generate {good} {root}/o3 -m draem -n 2 --set name="x',
    "generate {good} {root}/o4 -m draem -n 2 --set novalue",
    "generate --config {config} {root}/o5",
    "generate {good} {root}/o6 -m copy_paste -n 2",
    "generate {good} {root}/o7 -m draem -n 2 --defects {defects}",
    "generate {good} {root}/o8 -m draem -n 2 --few-shot 1/3",
    "generate {good} {root}/o9 -m draem -n 2 --foreground-threshold 0.5",
    "generate {good} {root}/o10 -m draem -n 2 --foreground-invert",
    "generate {good} {root}/o11 --mix draem:0.5,cutpaste:0.5 --set a=1 -n 2",
    "generate {good} {root}/o12 -m simplenet -n 2",
    "generate {good} {root}/o13 -m cutout -n 2 --textures {good}",
    "generate {good} {run} -m cutout -n 2",
    "generate {good} {run} -m cutout -n 1 --resume",
    "generate {good} {root}/o14 -m draem -n 2 --size 8",
    "generate {good} {root}/o15 -m realnet_sdas -n 2",
    "preview {good} {root}/p.png -m copy_paste -n 2",
    "preview {good} {root}/p.png -m draem -n 2 --defects {defects}",
    "preview {good} {root}/p.png -m draem -n 2 --few-shot 1/3",
    "preview {good} {root}/p.png -m draem -n 2 --layout grid",
    "preview {good} {root}/p.png -m draem -n 2 --compact --layout side-by-side",
    "preview {good} {root}/p.png -m draem -n 2 --foreground-threshold 0.5",
    "preview {good} {root}/p.png -m realnet_sdas -n 2",
    "preview {good} {root}/p.png -m simplenet -n 2",
    "preview {good} {root}/p.jpg -m draem -n 2",
    "export {root}/o1 --format coco",
    "export {run} --format anomalib",
    "export {run} --format yolo-seg --categories nothing",
    "export {run} --format yolo",
    "train ddpm {good} {root}/r1 --on defects --steps 1",
    "train vqvae {good} {root}/r2 --on defects",
    "train gan {good} {root}/r3 --on normal",
    "benchmark {good} --set a=1",
    "benchmark {good} --detector-option nope=1",
    "benchmark {good} --detector glass --detector-option mode=sideways",
    "evaluate {root}/nothing --real {good}",
    "evaluate-detection {good} --ground-truth {good}",
    "bench -m copy_paste --min-time 0.1",
    "methods --level pixel",
    "demo {good}",
]


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_is_one_line_naming_only_options_of_the_command(data, fault):
    args = fault.format(**{k: str(v) for k, v in data.items()}).split()
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (fault, result.output, result.exception)
    lines = [x for x in result.output.splitlines() if x.strip() and not x.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    wrong = [(o, f) for o, f in flags_named(result.output, args[0]) if f not in COMMANDS[o]]
    assert not wrong, (result.output, wrong)


def test_warnings_name_only_options_of_the_command(data):
    result = runner.invoke(app, ["export", str(data["run"]), "--format", "anomalib", "--train-dir", str(data["good"]),
                                 "--output", str(data["root"] / "anomalib")])
    assert result.exit_code == 0 and "warning:" in result.output, result.output
    wrong = [(o, f) for o, f in flags_named(result.output, "export") if f not in COMMANDS[o]]
    assert not wrong, (result.output, wrong)


def test_a_failed_temporary_file_is_reported_as_the_users_file(data, tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".config.yaml.k3j2.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "mine"
    result = runner.invoke(app, ["generate", str(data["good"]), str(out), "-m", "cutout", "-n", "1"])
    assert result.exit_code == 2 and ".tmp" not in result.output and str(out / "config.yaml") in result.output
    result = runner.invoke(app, ["preview", str(data["good"]), str(tmp_path / "p.png"), "-m", "cutout", "-n", "1"])
    assert result.exit_code == 2 and ".tmp" not in result.output and str(tmp_path / "p.png") in result.output
    assert "--resume" not in result.output  # preview has no --resume to advise


def test_preview_shows_the_real_defect_methods_in_every_layout(data, tmp_path):
    for layout in ("full", "compact", "side-by-side"):
        out = tmp_path / f"{layout}.png"
        result = runner.invoke(app, ["preview", str(data["good"]), str(out), "-m", "copy_paste,defect_transplant",
                                     "--defects", str(data["defects"]), "--few-shot", "1", "--layout", layout,
                                     "-n", "2", "--size", "32"])
        assert result.exit_code == 0, result.output
        assert Image.open(out).size[1] > 32
    result = runner.invoke(app, ["preview", str(data["good"]), str(tmp_path / "all.png"), "-m", "all",
                                 "--defects", str(data["defects"]), "--compact", "-n", "1", "--size", "24"])
    assert result.exit_code == 0 and "left out copy_paste" not in result.output, result.output


# --- what a long generative run costs ---------------------------------------------------------------

def test_a_long_generative_run_says_its_cost_first_and_help_says_how_to_shorten_it(data, tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    from defectforge.generative.models import tiny_unet
    from defectforge.pipelines import generate as generate_module

    model = tmp_path / "ddpm"
    tiny_unet(16, 3, seed=2).save(model)
    help_text = " ".join(runner.invoke(app, ["generate", "--help"]).output.split())
    assert "--set num_inference_steps=20 --set scheduler=ddim" in help_text and "samples x denoising steps" in help_text
    import defectforge

    synth = defectforge.create("masked_diffusion", model=str(model))      # 200 DDIM steps by default
    assert "500 samples x 200 denoising steps = 100,000 network passes" in generate_module.run_cost(synth, 500)
    assert generate_module.run_cost(synth, 10) is None                    # 2,000 passes: not long
    assert generate_module.run_cost(defectforge.create("draem"), 10**6) is None
    monkeypatch.setattr(generate_module, "LONG_RUN_PASSES", 4)            # a short run, said as a long one would be
    out, said = tmp_path / "out", []

    def show(message, category, *args, **kwargs):  # what the CLI prints as "warning: ...", and when
        said.append((str(message), category, sorted(p.name for p in out.rglob("*.png"))))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        monkeypatch.setattr(warnings, "showwarning", show)
        result = runner.invoke(app, ["generate", str(data["good"]), str(out), "-m", "masked_diffusion",
                                     "--model", str(model), "-n", "2", "--set", "num_inference_steps=2"])
    assert result.exit_code == 0, result.output
    costs = [(m, pngs) for m, c, pngs in said if c is generate_module.LongRunWarning]
    assert len(costs) == 1 and costs[0][1] == [], said                   # said once, before any sample
    assert costs[0][0].startswith("masked_diffusion: 2 samples x 2 denoising steps = 4 network passes"), costs


def test_demo_refusing_to_replace_its_datasets_names_no_option_demo_lacks(tmp_path, monkeypatch):
    import defectforge.cli.synthesis as syn

    monkeypatch.setattr(syn, "DEMO_METHODS", ("cutpaste",))
    monkeypatch.setattr(syn, "available_image_methods", lambda: ["cutpaste"])
    out = tmp_path / "demo"
    assert runner.invoke(app, ["demo", str(out), "-n", "1"]).exit_code == 0
    (out / "datasets/cutpaste/test/cutpaste/labelled_by_me.png").write_bytes(b"mine")
    result = runner.invoke(app, ["demo", str(out), "-n", "1"])
    assert result.exit_code == 2 and "labelled_by_me.png" in result.output, result.output
    wrong = [(o, f) for o, f in flags_named(result.output, "demo") if f not in COMMANDS[o]]
    assert not wrong, (result.output, wrong)
