"""Issue 19, section 3: every input is read as an image viewer shows it, by one decode path.

Each test failed on the code before the fix (checked by running it against that code) and meets
the problem where a user meets it: the ``defectforge`` CLI (typer's CliRunner, or a subprocess
where the printed warnings matter), the library otherwise. Every file is built here with Pillow
(EXIF through ``Image.Exif()``; 16-bit colour through OpenCV, which Pillow cannot write).
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image, ImageOps
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.io.images import ImageDecodeWarning, image_size, read_image, read_image_raw
from defectforge.sources.procedural import surface
from test_reliability import good  # noqa: F401  (the fixture: four 64 px surfaces)

_register_commands()
runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def skipped_reasons(out: Path) -> str:
    return " ".join(s["reason"] for s in yaml.safe_load((out / "config.yaml").read_text())["inputs"]["skipped"])


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def save_turned(upright: np.ndarray, path: Path, **options) -> None:
    """Store ``upright`` turned a quarter left with EXIF orientation 6, as a phone held upright
    does: a viewer turns it back, so it shows ``upright``."""
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(path, exif=exif_orientation(6), **options)


# --- orientation ------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_turned_photo_and_its_upright_foreground_mask_line_up(tmp_path, ext):
    upright = np.ascontiguousarray(surface("wood", 96, seed=1)[:, :64])  # 96 tall, 64 wide as a viewer shows it
    inp, masks = tmp_path / "in", tmp_path / "masks"
    inp.mkdir(), masks.mkdir()
    for i in range(2):
        save_turned(upright, inp / f"{i}.{ext}", **({"quality": 95} if ext == "jpg" else {}))
        region = np.zeros((96, 64), np.uint8)
        region[:40] = 255  # the part: the top of the upright picture
        Image.fromarray(region).save(masks / f"{i}.png")
    out = tmp_path / "out"
    r = cli("generate", inp, out, "-m", "cutpaste", "-n", "4", "-q", "--foreground-masks", masks)
    assert r.exit_code == 0, r.output
    with Image.open(inp / f"0.{ext}") as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))  # what a viewer shows
    for rec in manifest(out):
        image = np.asarray(Image.open(out / rec["image_path"]))
        mask = np.asarray(Image.open(out / rec["mask_path"])) > 0
        assert image.shape[:2] == (96, 64)  # upright, not sideways
        assert mask.any() and not mask[40:].any()  # the defect stays on the part the mask marks
        assert np.array_equal(image[~mask], shown[~mask])  # the picture itself, as the viewer shows it


def test_mvtec_masks_are_checked_against_their_image_as_shown(tmp_path):
    from defectforge.io.mvtec import check_mvtec_category

    root = tmp_path / "cat"
    for sub in ("train/good", "test/good", "test/crack", "ground_truth/crack"):
        (root / sub).mkdir(parents=True)
    upright = np.ascontiguousarray(surface("metal", 80, seed=0)[:, :48])
    Image.fromarray(upright).save(root / "train/good/000.png")
    Image.fromarray(upright).save(root / "test/good/000.png")
    save_turned(upright, root / "test/crack/000.jpg", quality=95)
    mask = np.zeros((80, 48), np.uint8)
    mask[10:20, 10:20] = 255
    Image.fromarray(mask).save(root / "ground_truth/crack/000_mask.png")
    found = check_mvtec_category(root)
    assert [defect for _, defect, _ in found["test"]] == ["crack", "good"]
    assert image_size(root / "test/crack/000.jpg") == (48, 80)
    assert read_image(root / "test/crack/000.jpg").shape == (80, 48, 3)


def test_label_maps_keep_their_indices_and_turn_like_their_image(tmp_path):
    from defectforge.io.images import read_labels

    labels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    stored = Image.fromarray(labels, "P")
    stored.putpalette([v for i in range(256) for v in (i * 10 % 256, i * 3 % 256, i)])  # distinct colours
    stored.save(tmp_path / "labels.png", exif=exif_orientation(6))
    assert np.array_equal(read_labels(tmp_path / "labels.png"), np.rot90(labels, -1))  # classes, turned
    assert image_size(tmp_path / "labels.png") == (2, 3)
    assert image_size(tmp_path / "labels.png", oriented=False) == (3, 2)
    from defectforge.io.images import image_mode

    assert image_mode(tmp_path / "labels.png") == "P"


def test_orientation_of_every_value_matches_pillow(tmp_path):
    """The numpy turn used for 16-bit colour (which OpenCV decodes) agrees with Pillow's."""
    from defectforge.io.images import _orient

    stored = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    for value in range(1, 9):
        turned = np.asarray(ImageOps.exif_transpose(_with_orientation(stored, value, tmp_path)))
        assert np.array_equal(_orient(stored, value), turned), value


def _with_orientation(stored: np.ndarray, value: int, folder: Path) -> Image.Image:
    path = folder / f"o{value}.png"
    Image.fromarray(stored).save(path, exif=exif_orientation(value))
    return Image.open(path)


# --- transparency, palettes, channels ---------------------------------------------------------

def _transparent_inputs(folder: Path) -> list[str]:
    folder.mkdir()
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = surface("metal", 64, seed=0)
    rgba[..., 3] = 255
    rgba[:, :32, 3] = 0
    Image.fromarray(rgba).save(folder / "rgba.png")
    la = np.stack([surface("wood", 64, seed=1)[..., 0], np.full((64, 64), 255, np.uint8)], -1)
    la[:16, :, 1] = 128
    Image.fromarray(la, "LA").save(folder / "grey_alpha.png")
    palette = Image.fromarray(surface("tiles", 64, seed=2)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    index = int(np.asarray(palette)[0, 0])
    palette.save(folder / "palette.png", transparency=index)
    Image.fromarray(surface("fabric", 64, seed=3)).save(folder / "opaque.png")
    return ["rgba.png", "grey_alpha.png", "palette.png"]


def test_transparent_inputs_warn_once_each_and_read_as_black(tmp_path):
    names = _transparent_inputs(tmp_path / "in")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = cli("generate", tmp_path / "in", tmp_path / "out", "-m", "cutpaste", "-n", "2", "-q")
    assert r.exit_code == 0, r.output
    notes = [str(w.message) for w in caught if issubclass(w.category, ImageDecodeWarning)]
    for name in names:
        mine = [n for n in notes if f"{name}: has transparent pixels" in n]
        assert len(mine) == 1 and "composited onto black" in mine[0], notes
    assert not any("opaque.png" in n for n in notes)
    assert read_image(tmp_path / "in/rgba.png")[:, :32].max() == 0  # transparent reads as 0
    assert read_image(tmp_path / "in/grey_alpha.png").shape == (64, 64, 1)  # grey stays grey


def test_warnings_print_once_per_file_across_worker_processes(tmp_path):
    """A texture read by two worker processes is reported once, in the user's format."""
    _transparent_inputs(tmp_path / "in")
    textures = tmp_path / "tex"
    textures.mkdir()
    tex = np.zeros((48, 48, 4), np.uint8)
    tex[..., :3] = surface("fabric", 48, seed=5)
    tex[..., 3] = 255
    tex[:8, :, 3] = 0
    Image.fromarray(tex).save(textures / "clear.png")
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run([sys.executable, "-m", "defectforge", "generate", str(tmp_path / "in"), str(tmp_path / "out"),
                           "-m", "draem", "-n", "8", "-q", "--workers", "2", "--textures", str(textures)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    for name in ("clear.png", "rgba.png", "grey_alpha.png", "palette.png"):
        mine = [line for line in lines if f"{name}: has transparent pixels" in line]
        assert len(mine) == 1 and mine[0].startswith("warning: "), done.stderr


def test_cmyk_jpeg_reads_as_its_colours_with_a_warning(tmp_path):
    rgb = surface("wood", 64, seed=4)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    with pytest.warns(ImageDecodeWarning, match="cmyk.jpg: is CMYK: converted to RGB .*colour profile"):
        image = read_image(tmp_path / "cmyk.jpg")
    assert image.shape == (64, 64, 3) and np.abs(image.astype(int) - rgb).mean() < 4


def test_animation_reads_its_first_frame_with_a_warning(tmp_path):
    first, second = surface("metal", 32, seed=0), surface("wood", 32, seed=1)
    Image.fromarray(first).save(tmp_path / "a.gif", save_all=True, append_images=[Image.fromarray(second)])
    with pytest.warns(ImageDecodeWarning, match="a.gif: holds 2 frames"):
        image = read_image(tmp_path / "a.gif")
    with Image.open(tmp_path / "a.gif") as im:
        assert np.array_equal(image, np.asarray(im.convert("RGB")))


# --- bit depth --------------------------------------------------------------------------------

def test_16_bit_colour_keeps_its_bits_like_16_bit_grey(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    data = (surface("metal", 64, seed=0).astype(np.uint16) * 16)  # 12-bit data in 16-bit containers
    for ext in ("png", "tif"):
        cv2.imwrite(str(inp / f"colour.{ext}"), np.ascontiguousarray(data[..., ::-1]))  # OpenCV writes BGR
    Image.fromarray(data[..., 0]).save(inp / "grey.tif")
    out = tmp_path / "out"
    r = cli("generate", inp, out, "-m", "cutpaste", "-n", "6", "-q", "--normal-ratio", "1")
    assert r.exit_code == 0, r.output
    assert yaml.safe_load((out / "config.yaml").read_text())["inputs"]["bit_depth"] == 12
    expected = (data.astype(np.float64) / 4095 * 255 + 0.5).astype(np.uint8)
    written = {rec["source_image"]: np.asarray(Image.open(out / rec["image_path"])) for rec in manifest(out)}
    for name in ("colour.png", "colour.tif"):
        assert np.array_equal(written[name], expected), name  # not the dark high bytes
    assert np.array_equal(written["grey.tif"], expected[..., 0])


def test_16_bit_grey_alpha_and_turned_16_bit_colour(tmp_path):
    values = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 300)
    grey_alpha = np.stack([values, np.full_like(values, 65535)], -1)
    grey_alpha[0, 1, 1] = 0
    _png16(tmp_path / "ga.png", grey_alpha, colour_type=4)
    with pytest.warns(ImageDecodeWarning, match="transparent"):
        ga = read_image_raw(tmp_path / "ga.png")
    assert ga.dtype == np.uint16 and ga.shape == (3, 4, 1) and ga[0, 1, 0] == 0 and ga[2, 3, 0] == 3300
    colour = np.stack([values, values // 2, values // 4], -1)
    _png16(tmp_path / "turned.png", colour, colour_type=2, exif=exif_orientation(6).tobytes()[6:])
    turned = read_image_raw(tmp_path / "turned.png")
    assert np.array_equal(turned, np.rot90(colour, -1)) and image_size(tmp_path / "turned.png") == (3, 4)


def _png16(path: Path, arr: np.ndarray, colour_type: int, exif: bytes | None = None) -> None:
    """A 16-bit PNG of ``arr`` (H, W, C) written chunk by chunk (Pillow writes no 16-bit colour)."""
    import zlib

    height, width = arr.shape[:2]
    rows = arr.reshape(height, -1).astype(">u2").tobytes()
    stride = len(rows) // height
    raw = b"".join(b"\x00" + rows[y * stride:(y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0))
    body += chunk(b"eXIf", exif) if exif is not None else b""
    body += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


# --- very large and very small images ---------------------------------------------------------

FORMATS = {"png": "PNG", "jpg": "JPEG", "tif": "TIFF", "bmp": "BMP", "webp": "WEBP", "gif": "GIF"}


@pytest.fixture
def each_format(tmp_path):
    folder = tmp_path / "formats"
    folder.mkdir()
    for k, (ext, fmt) in enumerate(FORMATS.items()):
        Image.fromarray(surface("metal", 64, seed=k)).save(folder / f"big.{ext}", fmt)  # 4,096 px each
    return folder


def test_pixel_limit_holds_for_every_format(each_format, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # PIL's limit, as if these were 100 Mpx images
    out = tmp_path / "refused"
    r = cli("generate", each_format, out, "-m", "cutpaste", "-n", "1", "-q", "--size", "16")
    assert r.exit_code == 2 and "--max-pixels 4096" in r.output, r.output  # a JPEG too: not decoded reduced
    out = tmp_path / "raised"
    r = cli("generate", each_format, out, "-m", "cutpaste", "-n", "6", "-q", "--max-pixels", "5000")
    assert r.exit_code == 0 and "skipped" not in r.output, r.output  # a TIFF too: PIL's own check is lifted
    assert {rec["source_image"] for rec in manifest(out)} <= {f"big.{ext}" for ext in FORMATS}
    assert len(yaml.safe_load((out / "config.yaml").read_text())["inputs"]["skipped"]) == 0


def test_huge_declared_sizes_are_refused_before_decoding(tmp_path, good):
    for name, data in _declaring_30000_px_a_side().items():
        (good / name).write_bytes(data)
    out = tmp_path / "out"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "2", "-q")
    assert r.exit_code == 0 and "skipped 4" in r.output, r.output
    reasons = skipped_reasons(out)
    for name in ("huge.png", "huge.jpg", "huge.tif", "huge.bmp"):
        assert re.search(rf"{re.escape(name)}: refused, too many pixels .*30000x30000.*--max-pixels 900000000",
                         reasons), reasons


def _declaring_30000_px_a_side() -> dict[str, bytes]:
    """Small files whose headers declare 30000 x 30000 pixels (900 Mpx, ~2.5 GiB decoded)."""
    import io
    import zlib

    small = surface("metal", 32, seed=0)
    files = {}
    for ext, fmt in (("png", "PNG"), ("jpg", "JPEG"), ("tif", "TIFF"), ("bmp", "BMP")):
        buffer = io.BytesIO()
        Image.fromarray(small).save(buffer, fmt)
        files[ext] = bytearray(buffer.getvalue())
    png = files["png"]
    png[16:24] = struct.pack(">II", 30000, 30000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])) & 0xFFFFFFFF)
    jpg = files["jpg"]
    sof = jpg.index(b"\xff\xc0")
    jpg[sof + 5:sof + 9] = struct.pack(">HH", 30000, 30000)
    bmp = files["bmp"]
    bmp[18:26] = struct.pack("<ii", 30000, 30000)
    tif = files["tif"]
    little = tif[:2] == b"II"
    order = "<" if little else ">"
    ifd = struct.unpack(order + "I", tif[4:8])[0]
    for k in range(struct.unpack(order + "H", tif[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack(order + "HH", tif[entry:entry + 4])
        if tag in (256, 257):
            tif[entry + 8:entry + 12] = struct.pack(order + ("H2x" if kind == 3 else "I"), 30000)
    return {f"huge.{ext}": bytes(data) for ext, data in files.items()}


def test_tiny_images_stay_skipped_with_size(good, tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good / "icon.png")
    out = tmp_path / "out"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q", "--size", "64")
    assert r.exit_code == 0 and "skipped 1" in r.output, r.output
    assert "icon.png: image is 8x8 px" in skipped_reasons(out)
    assert "skipped with or without --size" in skipped_reasons(out)
    assert "icon.png" not in {rec["source_image"] for rec in manifest(out)}
    only = tmp_path / "only"
    only.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(only / "icon.png")
    r = cli("generate", only, tmp_path / "o2", "-m", "cutpaste", "-n", "1", "-q", "--size", "64")
    assert r.exit_code == 2 and "with or without --size" in r.output and "pass --size" not in r.output, r.output


# --- near-binary masks ------------------------------------------------------------------------

def _jpeg_masks(folder: Path, names, shape=(64, 64)) -> np.ndarray:
    folder.mkdir()
    binary = np.zeros(shape, np.uint8)
    binary[8:40, 12:44] = 255
    for name in names:
        Image.fromarray(binary).save(folder / f"{name}.jpg", quality=75)  # ringing: grey levels near 0 and 255
    return binary > 0


def test_jpeg_mask_bank_refusal_names_the_threshold_option(good, tmp_path):
    _jpeg_masks(tmp_path / "bank", ["shape"])
    r = cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "2", "-q", "--mask-bank", tmp_path / "bank")
    assert r.exit_code == 2 and "shape.jpg is not binary" in r.output and "--mask-threshold 128" in r.output, r.output
    out = tmp_path / "o2"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "3", "-q", "--mask-bank", tmp_path / "bank",
            "--mask-threshold", "128")
    assert r.exit_code == 0, r.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["generator"]["mask_threshold"] == 128 and config["synthesizer"]["mask_bank"]["mask_threshold"] == 128
    again = tmp_path / "o3"
    r = cli("generate", "--config", out / "config.yaml", again)
    assert r.exit_code == 0, r.output
    assert [rec["mask_file"] for rec in manifest(again)] == [rec["mask_file"] for rec in manifest(out)]


def test_jpeg_foreground_masks_refused_then_thresholded(good, tmp_path):
    region = _jpeg_masks(tmp_path / "fg", [p.stem for p in good.iterdir()])
    r = cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "2", "-q", "--foreground-masks", tmp_path / "fg")
    assert r.exit_code == 2 and "foreground mask" in r.output and "--mask-threshold" in r.output, r.output
    assert not (tmp_path / "o").exists()  # refused before anything was written
    out = tmp_path / "o2"
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q", "--foreground-masks", tmp_path / "fg",
            "--mask-threshold", "128")
    assert r.exit_code == 0, r.output
    for rec in manifest(out):
        mask = np.asarray(Image.open(out / rec["mask_path"])) > 0
        assert mask.any() and not (mask & ~region).any()


def test_mask_threshold_python_arguments_and_misuse(good, tmp_path):
    from defectforge import MaskBank
    from defectforge.sources.foreground import MaskFolder

    region = _jpeg_masks(tmp_path / "m", ["a"])
    assert np.array_equal(MaskFolder(tmp_path / "m", mask_threshold=128).read("a.png"), region)
    bank = MaskBank(tmp_path / "m", mask_threshold=128)
    assert bank.shapes[0].shape == (32, 32) and bank.shapes[0].all()
    with pytest.raises(ValueError, match="--mask-threshold"):
        MaskBank(tmp_path / "m")
    r = cli("generate", good, tmp_path / "o", "-m", "cutpaste", "-n", "1", "-q", "--mask-threshold", "128")
    assert r.exit_code == 2 and "--mask-threshold applies only with --mask-bank or --foreground-masks" in r.output


def test_resume_of_a_run_recorded_before_the_threshold_option(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "cutpaste", "-n", "2", "-q").exit_code == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    del config["generator"]["mask_threshold"]  # as written by the version before the option
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "3", "-q", "--resume")
    assert r.exit_code == 0 and "resumed 2" in r.output, r.output


# --- one decode path --------------------------------------------------------------------------

def test_every_image_file_is_decoded_by_the_one_path():
    """No module but io/images.py opens image files itself: score maps are data, read raw, and a
    labelme mask is a PNG inside the JSON, placed by its points (no file, no orientation)."""
    root = SRC / "defectforge"
    pattern = re.compile(r"Image\.open\(|cv2\.imread\(|cv2\.imdecode\(|imageio|tifffile")
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and rel != "io/images.py":
                found.append(f"{rel}:{number}")
    assert [where.split(":")[0] for where in found] == ["io/annotations/labelme.py", "metrics/detection_io.py"], found
