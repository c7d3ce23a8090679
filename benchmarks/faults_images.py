"""Try the image files cameras, phones and labelling tools make on ``defectforge generate``.

The companion of ``faults.py`` for issue 19, section 3 (images read as a viewer shows them): each
case builds its files in a temporary folder (with the builders of
``tests/test_viewer_reading.py``), runs the command line in-process through typer's CliRunner
(a subprocess for ``--workers``), and records the exit code, what the user sees (the ``error:``
line, else the printed lines and the ``warning:`` lines of the decode path, each once), what the
script checked afterwards and whether a protected file (the inputs) changed. Prints the markdown
table of docs/reliability.md, "Images as a viewer shows them".

    python benchmarks/faults_images.py > /tmp/faults_images.md
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import faults  # noqa: E402  (the fault table's helpers)
from test_viewer_reading import _declaring_30000_px_a_side, _jpeg_masks, _png16, save_turned  # noqa: E402

from defectforge.cli.main import app  # noqa: E402
from defectforge.io.images import ImageDecodeWarning  # noqa: E402
from defectforge.sources.procedural import surface  # noqa: E402

ROWS: list[tuple] = []


def run(*args, patches=()) -> tuple[int, str]:
    """Exit code and what the user sees: the error line, or the printed lines and warnings."""
    from typer.testing import CliRunner

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mock.patch.multiple(Image, **dict(patches)) if patches else nullcontext():
            r = CliRunner().invoke(app, [str(a) for a in args])
    text = (r.output or "").strip()
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        text = f"TRACEBACK {type(r.exception).__name__}: {r.exception}"
    lines = text.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    notes = sorted({f"warning: {w.message}" for w in caught if issubclass(w.category, ImageDecodeWarning)})
    shown = " ⏎ ".join(errors or lines + notes).replace(str(TMP), "…")
    return r.exit_code, shown[:300] + ("…" if len(shown) > 300 else "")


def case(fault: str, command: str, *args, protect=(), patches=(), check=None) -> None:
    before = faults.snapshot(*protect)
    code, shown = run(*args, patches=patches)
    try:
        extra = check() if check else ""
    except (OSError, ValueError, KeyError) as exc:  # the run wrote nothing to check
        extra = f"nothing to check ({type(exc).__name__})"
    ROWS.append((fault, command, code, shown + (f"; {extra}" if extra else ""), faults.lost(before)))


def inputs_of(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())["inputs"]


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def inside(out: Path, region: np.ndarray) -> str:
    masks = [np.asarray(Image.open(out / r["mask_path"])) > 0 for r in manifest(out)]
    if any(m.shape != region.shape for m in masks):
        return f"masks {masks[0].shape[0]}x{masks[0].shape[1]}, the region drawn {region.shape[0]}x{region.shape[1]}"
    return f"every defect inside its region: {all(m.any() and not (m & ~region).any() for m in masks)}"


def shapes(out: Path) -> str:
    return "written images (h, w): " + ", ".join(sorted({str(np.asarray(Image.open(out / r['image_path'])).shape[:2])
                                                         for r in manifest(out)}))


def main() -> None:
    G = "generate"
    # ---------------- orientation ----------------
    upright = np.ascontiguousarray(surface("wood", 96, seed=1)[:, :64])
    region = np.zeros((96, 64), bool)
    region[:40] = True
    for ext in ("jpg", "png"):
        inp, masks = TMP / f"turned_{ext}", TMP / f"turned_{ext}_masks"
        inp.mkdir(), masks.mkdir()
        for i in range(2):
            save_turned(upright, inp / f"{i}.{ext}")
            Image.fromarray(region.astype(np.uint8) * 255).save(masks / f"{i}.png")
        out = TMP / f"o_turned_{ext}"
        case(f"{ext.upper()} stored 96x64 with EXIF orientation 6 (a viewer shows 64x96), upright 64x96 foreground "
             "masks", "generate in/ out -m cutpaste --foreground-masks m/", G, inp, out, "-m", "cutpaste", "-n", "4",
             "-q", "--foreground-masks", masks, protect=[inp, masks],
             check=lambda out=out: f"{shapes(out)}; {inside(out, region)}")
    # ---------------- transparency, palettes, channels ----------------
    folder = TMP / "alpha"
    folder.mkdir()
    rgba = np.dstack([surface("metal", 64, seed=0), np.full((64, 64), 255, np.uint8)])
    rgba[:, :32, 3] = 0
    Image.fromarray(rgba).save(folder / "rgba.png")
    for i in range(3):
        Image.fromarray(surface("tiles", 64, seed=i)).save(folder / f"{i}.png")
    case("RGBA PNG, left half transparent, among opaque PNGs", "generate in/ out", G, folder, TMP / "o_rgba", "-m",
         "cutpaste", "-n", "2", "-q", protect=[folder])
    folder = TMP / "palette"
    folder.mkdir()
    pal = Image.fromarray(surface("tiles", 64, seed=2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(folder / "palette.png", transparency=int(np.asarray(pal)[0, 0]))
    la = np.stack([surface("wood", 64, seed=1)[..., 0], np.full((64, 64), 255, np.uint8)], -1)
    la[:16, :, 1] = 128
    Image.fromarray(la, "LA").save(folder / "grey_alpha.png")
    case("palette PNG with a transparent colour, and grey+alpha PNG (top quarter half-transparent)",
         "generate in/ out", G, folder, TMP / "o_pal", "-m", "cutpaste", "-n", "2", "-q", protect=[folder])
    folder = TMP / "cmyk"
    folder.mkdir()
    Image.fromarray(surface("wood", 64, seed=4)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(surface("metal", 64, seed=5)).save(folder / "rgb.png")
    case("CMYK JPEG", "generate in/ out", G, folder, TMP / "o_cmyk", "-m", "cutpaste", "-n", "2", "-q",
         protect=[folder])
    folder = TMP / "gif"
    folder.mkdir()
    Image.fromarray(surface("metal", 64, seed=0)).save(folder / "anim.gif", save_all=True,
                                                      append_images=[Image.fromarray(surface("wood", 64, seed=1))])
    case("animated GIF (2 frames)", "generate in/ out", G, folder, TMP / "o_gif", "-m", "cutpaste", "-n", "1", "-q",
         protect=[folder])
    # ---------------- bit depth ----------------
    folder = TMP / "deep"
    folder.mkdir()
    data = surface("metal", 64, seed=0).astype(np.uint16) * 16
    cv2.imwrite(str(folder / "colour.png"), np.ascontiguousarray(data[..., ::-1]))
    cv2.imwrite(str(folder / "colour.tif"), np.ascontiguousarray(data[..., ::-1]))
    Image.fromarray(data[..., 0]).save(folder / "grey.tif")
    ga = np.stack([data[..., 0], np.full((64, 64), 65535, np.uint16)], -1)
    _png16(folder / "grey_alpha16.png", ga, colour_type=4)
    out = TMP / "o_deep"

    def brightness(out=out) -> str:
        config = json.dumps(inputs_of(out)["bit_depth"])
        peaks = {r["source_image"]: int(np.asarray(Image.open(out / r["image_path"])).max()) for r in manifest(out)}
        return f"inputs.bit_depth {config}; brightest written pixel per input {dict(sorted(peaks.items()))}"

    case("16-bit colour PNG and TIFF, 16-bit grey TIFF, 16-bit grey+alpha PNG, all 12-bit data (max 4080)",
         "generate in/ out --normal-ratio 1", G, folder, out, "-m", "cutpaste", "-n", "16", "-q", "--normal-ratio", "1",
         protect=[folder], check=brightness)
    # ---------------- size ----------------
    folder = TMP / "formats"
    folder.mkdir()
    for k, (ext, fmt) in enumerate({"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP", "webp": "WEBP",
                                    "gif": "GIF"}.items()):
        Image.fromarray(surface("metal", 64, seed=k)).save(folder / f"big.{ext}", fmt)
    small_limit = [("MAX_IMAGE_PIXELS", 1000)]
    case("64x64 PNG, JPEG, TIFF, BMP, WebP, GIF above the limit (PIL's limit patched to 1,000 px)",
         "generate in/ out --size 16", G, folder, TMP / "o_fmt1", "-m", "cutpaste", "-n", "1", "-q", "--size", "16",
         protect=[folder], patches=small_limit)
    out = TMP / "o_fmt2"
    case("the same, --max-pixels 5000", "... --max-pixels 5000", G, folder, out, "-m", "cutpaste", "-n", "6", "-q",
         "--max-pixels", "5000", protect=[folder], patches=small_limit,
         check=lambda: f"inputs read: {inputs_of(out)['count']} of 6")
    folder = faults.good("huge_headers")
    for name, data in _declaring_30000_px_a_side().items():
        (folder / name).write_bytes(data)
    out = TMP / "o_huge"
    case("PNG, JPEG, TIFF, BMP whose headers declare 30000x30000 px (files of 1-3 KB)", "generate in/ out", G, folder,
         out, "-m", "cutpaste", "-n", "2", "-q", protect=[folder],
         check=lambda: "skipped: " + ", ".join(s["skipped_input"] for s in inputs_of(out)["skipped"]))
    folder = faults.good("tiny_sized")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "icon.png")
    out = TMP / "o_tiny"
    case("8x8 image among good ones, --size 64", "generate in/ out --size 64", G, folder, out, "-m",
         "cutpaste", "-n", "2", "-q", "--size", "64", protect=[folder],
         check=lambda: f"inputs read: {inputs_of(out)['count']} of 5")
    folder = TMP / "tiny_only"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "icon.png")
    case("only an 8x8 image, --size 64", "generate tiny/ out --size 64", G, folder, TMP / "o_tiny2", "-m", "cutpaste",
         "-n", "1", "-q", "--size", "64", protect=[folder])
    # ---------------- near-binary masks ----------------
    folder = faults.good("masked")
    _jpeg_masks(TMP / "bank", ["shape"])
    case("mask bank of a JPEG mask (grey levels from ringing)", "generate in/ out --mask-bank bank/", G, folder,
         TMP / "o_bank1", "-m", "cutpaste", "-n", "2", "-q", "--mask-bank", TMP / "bank",
         protect=[folder, TMP / "bank"])
    case("the same, --mask-threshold 128", "... --mask-threshold 128", G, folder, TMP / "o_bank2", "-m", "cutpaste",
         "-n", "2", "-q", "--mask-bank", TMP / "bank", "--mask-threshold", "128", protect=[folder, TMP / "bank"])
    jregion = _jpeg_masks(TMP / "fg", [p.stem for p in folder.iterdir()])
    case("JPEG foreground masks", "generate in/ out --foreground-masks fg/", G, folder, TMP / "o_fg1", "-m",
         "cutpaste", "-n", "2", "-q", "--foreground-masks", TMP / "fg", protect=[folder, TMP / "fg"],
         check=lambda: f"OUTPUT created: {(TMP / 'o_fg1').exists()}")
    out = TMP / "o_fg2"
    case("the same, --mask-threshold 128", "... --mask-threshold 128", G, folder, out, "-m", "cutpaste", "-n", "4",
         "-q", "--foreground-masks", TMP / "fg", "--mask-threshold", "128", protect=[folder, TMP / "fg"],
         check=lambda: inside(out, jregion))
    case("--mask-threshold without a mask folder", "generate in/ out --mask-threshold 128", G, folder, TMP / "o_mt",
         "-m", "cutpaste", "-n", "1", "-q", "--mask-threshold", "128", protect=[folder])
    case("--mask-threshold 0", "... --mask-bank bank/ --mask-threshold 0", G, folder, TMP / "o_mt0", "-m", "cutpaste",
         "-n", "1", "-q", "--mask-bank", TMP / "bank", "--mask-threshold", "0", protect=[folder])
    # ---------------- worker processes ----------------
    folder, textures = TMP / "alpha", TMP / "tex"
    textures.mkdir()
    tex = np.dstack([surface("fabric", 48, seed=5), np.full((48, 48), 255, np.uint8)])
    tex[:8, :, 3] = 0
    Image.fromarray(tex).save(textures / "clear.png")
    before = faults.snapshot(folder, textures)
    env = dict(os.environ, PYTHONPATH=str(faults.SRC))
    done = subprocess.run([sys.executable, "-m", "defectforge", G, str(folder), str(TMP / "o_w2"), "-m", "draem",
                           "-n", "8", "-q", "--workers", "2", "--textures", str(textures)],
                          env=env, capture_output=True, text=True, timeout=900)
    lines = done.stderr.strip().splitlines()
    once = {name: sum(f"{name}: has transparent pixels" in line for line in lines)
            for name in ("rgba.png", "clear.png")}
    shown = (" ⏎ ".join(done.stdout.strip().splitlines()) + f"; warning lines per file: {once}; stderr: "
             + " ⏎ ".join(lines)).replace(str(TMP), "…")
    ROWS.append(("RGBA texture read by 2 worker processes, RGBA input", "generate in/ out -m draem --textures t/ -w 2",
                 done.returncode, shown[:300], faults.lost(before)))

    print("| # | input | command | exit | what the user sees | lost |")
    print("|---|---|---|---|---|---|")
    for k, (fault, command, code, message, lost_) in enumerate(ROWS, 1):
        cell = message.replace("|", "/")
        print(f"| I{k} | {fault} | `{command}` | {code} | {cell} | {lost_} |")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        TMP = Path(tmp).resolve()
        faults.TMP = TMP
        main()
