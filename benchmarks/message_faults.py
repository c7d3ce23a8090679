"""Try the messages and exports of issue 19 (sections 5 and 6): what a user sees, and whether anything was lost.

The same recording as ``benchmarks/faults.py`` (tiny data in a temporary folder, the command
line in-process through typer's CliRunner, a subprocess where the output must be seen while the
process runs); prints the markdown table of docs/reliability.md's "Messages and exports".

    python benchmarks/message_faults.py > /tmp/messages.md
"""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import faults  # noqa: E402  (the recording helpers of benchmarks/faults.py)
from faults import ROWS, case, good, record, run, snapshot, lost  # noqa: E402


def defects(name: str) -> Path:
    root = faults.TMP / name
    for kind in ("scratch", "hole"):
        (root / kind).mkdir(parents=True)
        for i in range(3):
            image = np.full((64, 64, 3), 120, np.uint8)
            mask = np.zeros((64, 64), np.uint8)
            mask[20 + i:34 + i, 10:40] = 255 if kind == "scratch" else 0
            mask[24:40, 24:40] = 255 if kind == "hole" else mask[24:40, 24:40]
            image[mask > 0] = 30
            Image.fromarray(image).save(root / kind / f"d{i}.png")
            Image.fromarray(mask).save(root / kind / f"d{i}_mask.png")
    return root


def refuse_temporary_files(*args, dir=None, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".config.yaml.k3j2.tmp"))


def label_iou(mask: np.ndarray, lines: list[str]) -> float:
    import cv2

    h, w = mask.shape
    drawn = np.zeros((h, w), np.uint8)
    for line in lines:
        xy = np.array(line.split()[1:], float).reshape(-1, 2)
        cv2.fillPoly(drawn, [np.round(xy * [w, h]).astype(np.int32)], 1)
    return float((mask & (drawn > 0)).sum() / max((mask | (drawn > 0)).sum(), 1))


def main() -> None:
    G = "generate"
    src = good("in")
    bank = defects("defects")
    for value in ("opacity_range=[0.5,1", "opacity_range={0.5", 'textures="dtd'):
        case("option", "malformed --set value", f"generate in/ out -m draem --set {value}", G, src, faults.TMP / "s1",
             "-m", "draem", "-n", "2", "--set", value, protect=[src])
    run(G, src, faults.TMP / "rec", "-m", "cutout", "-n", "2")
    edited = faults.TMP / "edited.yaml"
    edited.write_text((faults.TMP / "rec/config.yaml").read_text().replace("batch_size: 32", "batch_size: 0"))
    case("option", "config.yaml edited to batch_size 0", "generate --config edited.yaml out", G, "--config", edited,
         faults.TMP / "s2", protect=[src, faults.TMP / "rec"])
    case("option", "preview a real-defect method without defects", "preview in/ p.png -m copy_paste", "preview", src,
         faults.TMP / "p1.png", "-m", "copy_paste", "-n", "2", protect=[src])
    case("option", "preview with real defects, few-shot 1/3", "preview in/ p.png -m copy_paste,defect_transplant "
         "--defects d/ --few-shot 1/3", "preview", src, faults.TMP / "p2.png", "-m", "copy_paste,defect_transplant",
         "--defects", bank, "--few-shot", "1/3", "-n", "2", protect=[src, bank])
    case("option", "preview --layout side-by-side (the README's command)", "preview in/ pairs.png -m draem,cutpaste "
         "--layout side-by-side", "preview", src, faults.TMP / "p3.png", "-m", "draem,cutpaste", "--layout",
         "side-by-side", "-n", "2", protect=[src])
    case("option", "preview of a method that needs a trained model", "preview in/ p.png -m realnet_sdas", "preview",
         src, faults.TMP / "p4.png", "-m", "realnet_sdas", protect=[src])
    for command, target in ((G, faults.TMP / "s3"), ("preview", faults.TMP / "p5.png")):
        case("output", "the temporary file cannot be created (EACCES)", f"{command} in/ {target.name} -m cutout", command,
             src, target, "-m", "cutout", "-n", "1", protect=[src],
             patches=[mock.patch("tempfile.mkstemp", refuse_temporary_files)])
    demo = faults.TMP / "demo"
    with mock.patch("defectforge.cli.synthesis.DEMO_METHODS", ("cutpaste",)), \
            mock.patch("defectforge.cli.synthesis.available_image_methods", lambda: ["cutpaste"]):
        run("demo", demo, "-n", "1")
        mine = demo / "datasets/cutpaste/test/cutpaste/labelled.png"
        mine.write_bytes(b"mine")
        case("output", "demo re-run with a user file in its dataset", "demo demo/", "demo", demo, "-n", "1",
             protect=[mine])

    real = faults.TMP / "real"
    run(G, src, real, "-m", "copy_paste", "--defects", bank, "-n", "8")
    case("export", "YOLO-seg of a real-defect run (default classes)", "export real/ --format yolo-seg", "export", real,
         "--format", "yolo-seg", "--output", faults.TMP / "y1", protect=[real])
    case("export", "COCO of a real-defect run, --categories type", "export real/ --format coco --categories type",
         "export", real, "--format", "coco", "--categories", "type", "--output", faults.TMP / "c1", protect=[real])
    nsa = faults.TMP / "nsa"
    run(G, good("in256", n=8, size=256), nsa, "-m", "nsa", "-n", "32")
    code, message = run("export", nsa, "--format", "yolo-seg", "--output", faults.TMP / "y2")
    samples = [json.loads(x) for x in (nsa / "manifest.jsonl").read_text().splitlines()]
    ious = []
    for s in samples:
        stem = s["image_path"].split("/")[1] + "_" + Path(s["image_path"]).stem
        label = next((faults.TMP / "y2/labels").glob(f"*/{stem}.txt"))
        mask = np.asarray(Image.open(nsa / s["mask_path"])) > 127
        ious.append(label_iou(mask, label.read_text().splitlines()))
    record("export", "YOLO-seg of 32 nsa masks at 256 px (holes)", "export nsa/ --format yolo-seg", code,
           f"{message}; polygons filled back: IoU min {min(ious):.3f}, mean {np.mean(ious):.3f}", "no")

    from defectforge.generative.models import tiny_unet

    model = faults.TMP / "ddpm"
    tiny_unet(16, 3, seed=0).save(model)
    process = faults.subprocess_cli(G, src, faults.TMP / "long", "-m", "masked_diffusion", "--model", model, "-n", "500")
    started, first = time.time(), ""
    while not first and time.time() - started < 600:
        first = process.stderr.readline().strip()
    written = len(list((faults.TMP / "long").rglob("*.png")))
    process.kill()
    process.communicate()
    record("option", "a long generative run (500 samples x 200 DDIM steps)", "generate in/ out -m masked_diffusion "
           "--model m/ -n 500", "killed", f"{first.replace(str(faults.TMP), '…')}; samples written when it was said: "
           f"{written}", "no")

    from defectforge.ui.app import Session, ui_message, widgets_of

    session = Session(faults.TMP / "ui", base=faults.TMP)
    widgets = widgets_of("cutout")
    values = [w.default for w in widgets]
    before = snapshot(faults.TMP / "rec")
    try:
        session.generate_dataset("rec", "cutout", "folder", "in", None, None, 2, 0, widgets, values)
        said = "wrote"
    except (ValueError, OSError) as exc:
        said = ui_message(exc, "dataset", session.resolve("rec"))
    record("ui", "generate dataset into a folder holding a run", "UI: dataset folder 'rec', generate dataset", "-",
           "status: refused: " + said.replace(str(faults.TMP), "…"), lost(before))
    summary = session.generate_dataset("fresh", "cutout", "folder", "in", None, None, 2, 0, widgets, values)
    record("ui", "relative folders typed into the app", "UI: images 'in', dataset folder 'fresh'", "-",
           f"status: wrote {summary['written']} samples to {summary['output'].replace(str(faults.TMP), '…')}", "no")

    print("| # | kind | case | command | exit | what the user sees | lost |")
    print("|---|---|---|---|---|---|---|")
    for k, (kind, fault, command, code, message, lost_) in enumerate(ROWS, 1):
        print(f"| M{k} | {kind} | {fault} | `{command}` | {code} | {message.replace('|', '/')} | {lost_} |")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        faults.TMP = Path(tmp).resolve()
        main()
