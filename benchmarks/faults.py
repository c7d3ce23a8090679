"""Try bad inputs, options, output folders and process faults on ``defectforge generate``.

Each fault sets up tiny data in a temporary folder, runs the command line (in-process through
typer's CliRunner, or as a subprocess where the process itself is killed), and records the exit
code, the first line the user sees and whether anything was lost: a protected file (the
inputs, the user's own files, an earlier run's samples) changed or deleted. Prints the markdown
table of ``docs/reliability.md``.

    python benchmarks/faults.py > faults.md
    PYTHONPATH=tests python benchmarks/faults.py --edits > faults_edits.md   # rows 86 on: edits, writers, --config
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.sources.procedural import surface

_register_commands()
ROWS: list[tuple] = []
SRC = Path(__file__).resolve().parents[1] / "src"


def snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        if root.is_file():
            out[str(root)] = hashlib.sha1(root.read_bytes()).hexdigest()
        elif root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def lost(before: dict[str, str]) -> str:
    gone = [p for p, h in before.items() if not Path(p).is_file() or hashlib.sha1(Path(p).read_bytes()).hexdigest() != h]
    return "no" if not gone else f"YES ({len(gone)} files)"


def run(*args, patches=()) -> tuple[int, str]:
    with ExitStack() as stack, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in patches:
            stack.enter_context(p)
        r = CliRunner().invoke(app, [str(a) for a in args])
    text = (r.output or "").strip()
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        text = f"TRACEBACK {type(r.exception).__name__}: {r.exception}"
    lines = [line.replace(str(TMP), "…") for line in text.splitlines()]
    errors = [line for line in lines if line.startswith("error:")]
    shown = " ⏎ ".join(errors or lines)
    return r.exit_code, shown[:260] + ("…" if len(shown) > 260 else "")


def subprocess_cli(*args, **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    # a background shell starts children with SIGINT ignored; give them Ctrl-C back
    return subprocess.Popen([sys.executable, "-m", "defectforge", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def record(kind: str, fault: str, command: str, code: int, message: str, lost_: str) -> None:
    ROWS.append((kind, fault, command, code, message, lost_))


def good(name: str, n: int = 4, size: int = 64) -> Path:
    folder = TMP / name
    folder.mkdir(parents=True)
    kinds = ["metal", "wood", "tiles", "fabric"]
    for i in range(n):
        Image.fromarray(surface(kinds[i % 4], size, seed=i)).save(folder / f"{i:03d}.png")
    return folder


def category(name: str) -> Path:
    root = TMP / name
    g = good(f"{name}/train/good")
    (root / "test/crack").mkdir(parents=True)
    (root / "ground_truth/crack").mkdir(parents=True)
    Image.fromarray(surface("metal", 64, seed=9)).save(root / "test/crack/000.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / "ground_truth/crack/000_mask.png")
    assert g.is_dir()
    return root


def case(kind, fault, command_text, *args, protect=(), patches=(), check=None):
    before = snapshot(*protect)
    code, msg = run(*args, patches=patches)
    extra = check() if check else ""
    record(kind, fault, command_text, code, msg + (f"; {extra}" if extra else ""), lost(before))


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def main() -> None:
    G = "generate"
    # ---------------- input faults ----------------
    case("input", "INPUT does not exist", "generate missing/ out -m draem", G, TMP / "missing", TMP / "o1", "-m", "draem", "-q")
    f = TMP / "afile.png"
    Image.fromarray(surface("metal", 64)).save(f)
    case("input", "INPUT is a file", "generate a.png out -m draem", G, f, TMP / "o2", "-m", "draem", "-q", protect=[f])
    (TMP / "empty").mkdir()
    case("input", "INPUT is an empty folder", "generate empty/ out", G, TMP / "empty", TMP / "o3", "-m", "draem", "-q")
    txt = TMP / "texts"
    txt.mkdir()
    (txt / "readme.txt").write_text("x")
    case("input", "INPUT holds no image files", "generate texts/ out", G, txt, TMP / "o4", "-m", "draem", "-q", protect=[txt])
    g = good("in_corrupt")
    (g / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    case("input", "corrupted PNG among good images", "generate in/ out", G, g, TMP / "o5", "-m", "cutpaste", "-n", "4", "-q", protect=[g])
    g = good("in_trunc")
    buf = Path(g / "cut.jpg")
    Image.fromarray(surface("wood", 128)).save(buf, quality=90)
    buf.write_bytes(buf.read_bytes()[:600])
    case("input", "truncated JPEG", "generate in/ out", G, g, TMP / "o6", "-m", "cutpaste", "-n", "4", "-q", protect=[g])
    g = good("in_zero")
    (g / "zero.png").write_bytes(b"")
    case("input", "zero-byte .png", "generate in/ out", G, g, TMP / "o7", "-m", "cutpaste", "-n", "4", "-q", protect=[g])
    bad = TMP / "all_bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"{i}.png").write_bytes(b"not an image")
    case("input", "every input corrupt", "generate bad/ out", G, bad, TMP / "o8", "-m", "cutpaste", "-q", protect=[bad],
         check=lambda: f"OUTPUT created: {(TMP / 'o8').exists()}")
    deep = TMP / "deep12"
    deep.mkdir()
    for i in range(3):
        Image.fromarray(surface("metal", 64, seed=i)[..., 0].astype(np.uint16) * 16).save(deep / f"{i}.png")

    def bright(out):
        return lambda: f"max grey of a written image {np.asarray(Image.open(next((TMP / out / 'test').rglob('*.png')))).max()}"
    case("input", "16-bit PNG holding 12-bit data", "generate deep/ out", G, deep, TMP / "o9", "-m", "cutpaste", "-n", "3", "-q",
         protect=[deep], check=bright("o9"))
    case("input", "16-bit PNG holding 12-bit data, --bit-depth 16 (old rule)", "generate deep/ out --bit-depth 16", G, deep,
         TMP / "o9b", "-m", "cutpaste", "-n", "3", "-q", "--bit-depth", "16", protect=[deep], check=bright("o9b"))
    case("input", "12-bit data, 16-bit output wanted", "--output-bit-depth 16", G, deep, TMP / "o9c", "-m", "cutpaste", "-n", "2",
         "-q", "--output-bit-depth", "16", protect=[deep],
         check=lambda: f"written PNG max {np.asarray(Image.open(next((TMP / 'o9c/test').rglob('*.png')))).max()} (uint16)")
    modes = TMP / "modes"
    modes.mkdir()
    rgb = surface("wood", 80, seed=0)
    Image.fromarray(rgb).convert("P").save(modes / "palette.png")
    Image.fromarray(np.dstack([rgb, np.full((80, 80), 128, np.uint8)])).save(modes / "rgba.png")
    Image.fromarray(rgb[..., 0]).convert("LA").save(modes / "grey_alpha.png")
    Image.fromarray(rgb[:48]).save(modes / "small_rgb.jpg")
    Image.fromarray(rgb[..., 1]).save(modes / "UPPER.PNG")
    case("input", "palette, RGBA, grey+alpha, JPEG, upper-case .PNG, mixed sizes", "generate modes/ out", G, modes, TMP / "o10",
         "-m", "draem", "-n", "8", "-q", protect=[modes])
    huge = TMP / "huge"
    huge.mkdir()
    Image.fromarray(np.full((9500, 9500), 90, np.uint8)).save(huge / "huge.png")  # 90.25 Mpx > PIL's 89.5 Mpx
    Image.fromarray(surface("metal", 64)).save(huge / "ok.png")
    case("input", "9500x9500 image (above PIL's bomb limit)", "generate huge/ out --size 256", G, huge, TMP / "o11", "-m",
         "cutpaste", "-n", "2", "--size", "256", "-q", protect=[huge])
    case("input", "the same, --max-pixels 100000000", "... --max-pixels 100000000", G, huge, TMP / "o12", "-m", "cutpaste",
         "-n", "2", "--size", "256", "--max-pixels", "100000000", "-q", protect=[huge])
    g = good("in_tiny")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(g / "tiny.png")
    case("input", "8x8 image among good ones", "generate in/ out", G, g, TMP / "o13", "-m", "draem", "-n", "3", "-q", protect=[g])
    tiny = TMP / "tiny_only"
    tiny.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tiny / "t.png")
    case("input", "only an 8x8 image", "generate tiny/ out", G, tiny, TMP / "o14", "-m", "draem", "-q", protect=[tiny])
    cat = category("mvtec/bottle")
    case("input", "INPUT is an MVTec-AD category", "generate bottle/ out", G, cat, TMP / "o15", "-m", "cutpaste", "-n", "3", "-q",
         protect=[cat], check=lambda: "inputs read from " + __import__('yaml').safe_load((TMP / 'o15/config.yaml').read_text())['inputs']['root'].replace(str(TMP), "…"))
    category("mvtec/screw")
    case("input", "INPUT is a dataset root (several categories)", "generate mvtec/ out", G, TMP / "mvtec", TMP / "o16", "-m",
         "cutpaste", "-q", protect=[TMP / "mvtec"])
    g = good("in_nested")
    run(G, g, TMP / "o17run", "-m", "cutpaste", "-n", "3", "-q")
    (TMP / "o17run").rename(g / "old_run")
    case("input", "an earlier output nested inside INPUT", "generate in/ out", G, g, TMP / "o17", "-m", "cutpaste", "-n", "3", "-q",
         protect=[g], check=lambda: f"inputs read: {__import__('yaml').safe_load((TMP / 'o17/config.yaml').read_text())['inputs']['count']} (the 4 images, not the run's 3 samples)")
    case("input", "INPUT is an earlier output", "generate out1/ out2", G, g / "old_run", TMP / "o18", "-m", "cutpaste", "-q",
         protect=[g])
    g = good("in_gt")
    (g / "ground_truth/crack").mkdir(parents=True)
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(g / "ground_truth/crack/000_mask.png")
    case("input", "ground_truth/ masks inside INPUT", "generate in/ out", G, g, TMP / "o19", "-m", "cutpaste", "-n", "2", "-q",
         protect=[g], check=lambda: f"inputs read: {__import__('yaml').safe_load((TMP / 'o19/config.yaml').read_text())['inputs']['count']} of 5 files")
    g = good("in_loop")
    os.symlink(g, g / "loop")
    case("input", "symlink loop inside INPUT", "generate in/ out", G, g, TMP / "o20", "-m", "cutpaste", "-n", "2", "-q")
    g = good("in_disguised")
    Image.fromarray(surface("tiles", 64)).save(g / "really_a_jpeg.png", format="JPEG")
    case("input", "a JPEG named .png", "generate in/ out", G, g, TMP / "o21", "-m", "cutpaste", "-n", "2", "-q", protect=[g])

    # ---------------- option faults ----------------
    g = good("opts")
    O = TMP / "opt_out"
    opt = [
        ("unknown method (typo)", ["-m", "cutpast"]),
        ("unknown method parameter", ["-m", "draem", "--set", "opacity=0.5"]),
        ("parameter out of range", ["-m", "draem", "--set", "opacity_range=[2, 1]"]),
        ("--set without '='", ["-m", "draem", "--set", "opacity_range"]),
        ("--count 0", ["-m", "draem", "-n", "0"]),
        ("--count -5", ["-m", "draem", "-n", "-5"]),
        ("--seed -1", ["-m", "draem", "-s", "-1"]),
        ("--size 8", ["-m", "draem", "--size", "8"]),
        ("--normal-ratio 1.5", ["-m", "draem", "--normal-ratio", "1.5"]),
        ("--workers 0", ["-m", "draem", "--workers", "0"]),
        ("neither --method nor --mix", []),
        ("--method and --mix together", ["-m", "draem", "--mix", "cutpaste:1"]),
        ("--mix with a bad probability", ["--mix", "draem:x,cutpaste:0.5"]),
        ("--mix probabilities not summing to 1", ["--mix", "draem:0.2,cutpaste:0.2"]),
        ("--defect-count 3-1", ["-m", "cutpaste", "--defect-count", "3-1"]),
        ("--defect-count abc", ["-m", "cutpaste", "--defect-count", "abc"]),
        ("--area-range 0.5,0.1", ["-m", "cutpaste", "--area-range", "0.5,0.1"]),
        ("--foreground-threshold without --foreground threshold", ["-m", "memseg", "--foreground-threshold", "0.4"]),
        ("--foreground-invert with --foreground none", ["-m", "memseg", "--foreground-invert"]),
        ("--foreground banana", ["-m", "memseg", "--foreground", "banana"]),
        ("--foreground and --foreground-masks together", ["-m", "memseg", "--foreground", "otsu", "--foreground-masks", str(g)]),
        ("--textures folder that does not exist", ["-m", "draem", "--textures", str(TMP / "no_dtd")]),
        ("--textures on a method without textures", ["-m", "cutpaste", "--textures", str(g)]),
        ("--mask-bank with a grey (non-binary) image", ["-m", "cutpaste", "--mask-bank", str(g)]),
        ("--bit-depth 9", ["-m", "draem", "--bit-depth", "9"]),
        ("--output-bit-depth 12", ["-m", "draem", "--output-bit-depth", "12"]),
        ("--min-contrast 2", ["-m", "draem", "--min-contrast", "2"]),
        ("--max-pixels 0", ["-m", "draem", "--max-pixels", "0"]),
        ("--resume and --overwrite together", ["-m", "draem", "--resume", "--overwrite"]),
    ]
    for fault, extra in opt:
        case("option", fault, "generate in/ out " + " ".join(extra).replace(str(TMP), "…"), G, g, O, *extra, "-q", protect=[g],
             check=lambda: f"OUTPUT created: {O.exists()}")
    masks = TMP / "fgmasks"
    masks.mkdir()
    Image.fromarray(np.full((64, 64), 255, np.uint8)).save(masks / "000.png")
    case("option", "--foreground-masks missing a mask for 3 of 4 images", "generate in/ out --foreground-masks m/", G, g, O,
         "-m", "memseg", "--foreground-masks", masks, "-q", protect=[g], check=lambda: f"OUTPUT created: {O.exists()}")
    no_skimage = mock.patch.object(importlib.util, "find_spec",
                                   side_effect=lambda n, *a, _f=importlib.util.find_spec: None if n == "skimage" else _f(n, *a))
    case("option", "sami without scikit-image (find_spec patched)", "generate in/ out -m sami", G, g, O, "-m", "sami", "-q",
         protect=[g], patches=[no_skimage], check=lambda: f"OUTPUT created: {O.exists()}")
    no_skimage2 = mock.patch.object(importlib.util, "find_spec",
                                    side_effect=lambda n, *a, _f=importlib.util.find_spec: None if n == "skimage" else _f(n, *a))
    case("option", "--textures skimage without scikit-image", "generate in/ out -m draem --textures skimage", G, g, O, "-m",
         "draem", "--textures", "skimage", "-q", protect=[g], patches=[no_skimage2], check=lambda: f"OUTPUT created: {O.exists()}")
    case("option", "preview --count 0", "preview in/ p.png -n 0", "preview", g, TMP / "p.png", "-n", "0")
    case("option", "preview to a .jpg", "preview in/ p.jpg", "preview", g, TMP / "p.jpg")
    case("option", "--config that is not ours", "generate --config notes.yaml out", G, "--config", txt / "readme.txt", O)

    # ---------------- output faults ----------------
    cat = category("out_cat")
    for fault, out, extra in [("OUTPUT == INPUT (MVTec category)", cat, []),
                              ("OUTPUT == INPUT, --overwrite", cat, ["--overwrite"]),
                              ("OUTPUT inside INPUT", cat / "synthetic", []),
                              ("OUTPUT containing INPUT, --overwrite", TMP, ["--overwrite"])]:
        case("output", fault, f"generate cat/ {'cat/' if out == cat else '…'} {' '.join(extra)}", G, cat, out, "-m", "cutpaste",
             "-n", "2", "-q", *extra, protect=[cat])
    case("output", "OUTPUT is a file", "generate in/ a.png", G, g, f, "-m", "cutpaste", "-q", protect=[f])
    case("output", "OUTPUT under a file", "generate in/ a.png/sub", G, g, f / "sub", "-m", "cutpaste", "-q", protect=[f])
    run_dir = TMP / "run"
    run(G, g, run_dir, "-m", "cutpaste", "-n", "4", "-q")
    (run_dir / "test/cutpaste/mine.png").write_bytes(b"user file")
    case("output", "user file in out/test/<method>/, --overwrite", "generate in/ out -m draem --overwrite", G, g, run_dir, "-m",
         "draem", "-n", "4", "-q", "--overwrite", protect=[run_dir])
    (run_dir / "test/cutpaste/mine.png").unlink()
    case("output", "same command again, no flag", "generate in/ out -m cutpaste -n 4", G, g, run_dir, "-m", "cutpaste", "-n", "4",
         "-q", protect=[run_dir])
    user = TMP / "userdir"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    case("output", "OUTPUT holds other files, --overwrite", "generate in/ mine/ --overwrite", G, g, user, "-m", "cutpaste", "-q",
         "--overwrite", protect=[user])
    case("output", "--resume with another seed and parameter", "... --resume -s 4 --set color_jitter=0.2", G, g, run_dir, "-m",
         "cutpaste", "-n", "4", "-s", "4", "--set", "color_jitter=0.2", "-q", "--resume", protect=[run_dir])
    case("output", "--resume with a smaller --count", "... --resume -n 2", G, g, run_dir, "-m", "cutpaste", "-n", "2", "-q",
         "--resume", protect=[run_dir])
    case("output", "--resume with a larger --count", "... --resume -n 7", G, g, run_dir, "-m", "cutpaste", "-n", "7", "-q",
         "--resume", protect=[run_dir / "test"])
    rec = [__import__("json").loads(x) for x in (run_dir / "manifest.jsonl").read_text().splitlines()]
    (run_dir / rec[1]["image_path"]).unlink()
    m = run_dir / rec[2]["mask_path"]
    m.write_bytes(m.read_bytes()[:-16] + b"\0" * 16)
    case("output", "one image deleted, one mask damaged, then --resume", "... --resume -n 7", G, g, run_dir, "-m", "cutpaste",
         "-n", "7", "-q", "--resume")
    lines = (run_dir / "manifest.jsonl").read_text().splitlines()
    (run_dir / "manifest.jsonl").write_text("\n".join(lines[:3] + ["{garbled"] + lines[4:]) + "\n")
    case("output", "garbled manifest line, then --resume", "... --resume -n 7", G, g, run_dir, "-m", "cutpaste", "-n", "7", "-q",
         "--resume")
    ro = TMP / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    case("output", f"read-only OUTPUT folder (chmod 555; uid {os.getuid()})", "generate in/ ro/", G, g, ro / "o", "-m",
         "cutpaste", "-n", "2", "-q")
    import defectforge.pipelines.output_folder as folder
    import defectforge.pipelines.sample_writer as writer

    def rofs(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))
    case("output", "read-only file system (EROFS simulated)", "generate in/ out", G, g, TMP / "o_rofs", "-m", "cutpaste", "-q",
         patches=[mock.patch.object(folder, "atomic_write_bytes", rofs), mock.patch.object(writer, "atomic_write_bytes", rofs)])
    real = writer.atomic_write_bytes
    calls = {"n": 0}

    def full(path, data):
        calls["n"] += 1
        if calls["n"] > 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)
    dfull = TMP / "o_full"
    case("output", "disk full after 6 writes (ENOSPC simulated)", "generate in/ out -n 8", G, g, dfull, "-m", "draem", "-n", "8",
         "-q", patches=[mock.patch.object(folder, "atomic_write_bytes", full), mock.patch.object(writer, "atomic_write_bytes", full)])
    run(G, g, TMP / "o_full_ref", "-m", "draem", "-n", "8", "-q")
    case("output", "... then --resume", "generate in/ out -n 8 --resume", G, g, dfull, "-m", "draem", "-n", "8", "-q", "--resume",
         check=lambda: f"identical to an uninterrupted run: {tree(dfull) == tree(TMP / 'o_full_ref')}")
    import defectforge.cli.synthesis as syn

    demo = TMP / "demo"
    with mock.patch.object(syn, "DEMO_METHODS", ("cutpaste",)):
        run("demo", demo, "-n", "2")
        (demo / "datasets/cutpaste/test/cutpaste/labelled.png").write_bytes(b"mine")
        case("output", "demo re-run with a user file in datasets/*/test/", "demo demo/", "demo", demo, "-n", "2",
             protect=[demo / "datasets"])
    case("output", "demo into a folder that is not a demo", "demo mine/", "demo", user, protect=[user])

    # ---------------- process faults ----------------
    big = good("proc_in", n=8, size=256)
    ref = TMP / "proc_ref"
    n = "1000"
    run(G, big, ref, "-m", "draem", "-n", n, "-q")
    for sig, name in ((signal.SIGKILL, "kill -9"), (signal.SIGINT, "Ctrl-C (SIGINT)")):
        out = TMP / f"proc_{sig}"
        p = subprocess_cli(G, big, out, "-m", "draem", "-n", n, "-q")
        while p.poll() is None and (not (out / ".records").is_dir()
                                    or len(list((out / ".records").glob("*.json"))) < 40):
            time.sleep(0.02)
        p.send_signal(sig)
        _, err = p.communicate()
        done = len(list((out / ".records").glob("*.json"))) if (out / ".records").is_dir() else "all"
        last = (err.strip().splitlines() or ["(nothing printed)"])[-1].replace(str(TMP), "…")
        record("process", f"{name} after {done} samples", f"generate in/ out -m draem -n {n}", p.returncode, last[:200], "no")
        code, msg = run(G, big, out, "-m", "draem", "-n", n, "-q", "--resume")
        record("process", f"... then --resume", "same command + --resume", code,
               msg + f"; identical to an uninterrupted run: {tree(out) == tree(ref)}", "no")
    out = TMP / "proc_kill_over"
    p = subprocess_cli(G, big, out, "-m", "draem", "-n", n, "-q")
    while p.poll() is None and (not (out / ".records").is_dir() or len(list((out / ".records").glob("*.json"))) < 20):
        time.sleep(0.02)
    p.kill()
    p.communicate()
    case("process", "kill -9, then --overwrite with another method", "generate in/ out -m cutpaste --overwrite", G, big, out, "-m",
         "cutpaste", "-n", "3", "-q", "--overwrite", protect=[big])
    (out / "config.yaml").unlink()
    case("process", "config.yaml deleted by hand, then --resume", "... --resume", G, big, out, "-m", "cutpaste", "-n", "3", "-q",
         "--resume", protect=[out])
    a, b = TMP / "w1", TMP / "w2"
    run(G, big, a, "-m", "nsa", "-n", "12", "-q")
    code, msg = run(G, big, b, "-m", "nsa", "-n", "12", "-q", "-w", "2")
    record("process", "--workers 2 against --workers 1 (nsa, donors)", "generate ... -w 2", code,
           msg.replace(str(TMP), "…") + f"; byte-identical: {tree(a) == tree(b)}", "no")

    print_rows(1)


def print_rows(first: int) -> None:
    print("| # | kind | fault | command | exit | what the user sees | lost |")
    print("|---|---|---|---|---|---|---|")
    for k, (kind, fault, command, code, message, lost_) in enumerate(ROWS, first):
        cell = message.replace("|", "/")
        print(f"| {k} | {kind} | {fault} | `{command}` | {code} | {cell} | {lost_} |")


def edits_and_writers() -> None:
    """Rows 86 on: a user's edits, a second writer, a killed writer, options beside --config."""
    import json

    import yaml

    G = "generate"
    g = good("i19_in")

    def records(out):
        return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]

    def correct_by_hand(path):
        mask = np.array(Image.open(path))
        mask[:8, :8] = 255 - mask[:8, :8]
        Image.fromarray(mask).save(path)

    out = TMP / "i19_edit"
    run(G, g, out, "-m", "cutpaste", "-n", "4", "-q")
    rec = records(out)
    correct_by_hand(out / rec[2]["mask_path"])
    case("output", "a mask corrected by hand, then --overwrite", "generate in/ out -m draem --overwrite", G, g, out, "-m",
         "draem", "-n", "4", "-q", "--overwrite", protect=[out])
    (out / rec[1]["image_path"]).unlink()
    case("output", "... and an image deleted, then --resume", "... -m cutpaste --resume", G, g, out, "-m", "cutpaste", "-n",
         "4", "-q", "--resume", protect=[out / rec[2]["mask_path"]],
         check=lambda: f"deleted image back: {(out / rec[1]['image_path']).is_file()}")
    case("output", "... then --resume --discard-edits", "... --resume --discard-edits", G, g, out, "-m", "cutpaste", "-n",
         "4", "-q", "--resume", "--discard-edits", check=lambda: "the edited mask replaced (asked for)")
    correct_by_hand(out / rec[3]["mask_path"])
    case("output", "a mask corrected by hand, --overwrite --discard-edits", "... --overwrite --discard-edits", G, g, out,
         "-m", "draem", "-n", "4", "-q", "--overwrite", "--discard-edits", protect=[g],
         check=lambda: "the edited mask deleted (asked for)")

    # a second writer while a real run writes; then that run killed
    big = good("i19_big", n=8, size=256)
    n = "300"
    ref = TMP / "i19_ref"
    run(G, big, ref, "-m", "draem", "-n", n, "-q")
    for workers in ("1", "2"):
        out = TMP / f"i19_busy{workers}"
        p = subprocess_cli(G, big, out, "-m", "draem", "-n", n, "-q", "-w", workers)
        while p.poll() is None and (not (out / ".records").is_dir() or len(list((out / ".records").glob("*.json"))) < 10):
            time.sleep(0.02)
        for flag in ("--resume", "--overwrite"):
            case("process", f"{flag} while a run (--workers {workers}) writes OUTPUT", f"... {flag}", G, big, out, "-m",
                 "draem", "-n", n, "-q", flag, protect=[big])
        if workers == "1":
            case("process", "a fresh run into OUTPUT while another writes it", "generate in/ out -m cutpaste", G, big, out,
                 "-m", "cutpaste", "-n", "3", "-q", protect=[big])
            p.kill()
            p.communicate()
            done = len(list((out / ".records").glob("*.json")))
            record("process", f"kill -9 of that run after {done} samples (its lock file stays)",
                   f"generate in/ out -m draem -n {n}", p.returncode, f"lock file left: {(out / '.defectforge.lock').is_file()}",
                   "no")
            code, msg = run(G, big, out, "-m", "draem", "-n", n, "-q", "--resume")
            record("process", "... then --resume", "same command + --resume", code,
                   msg + f"; identical to an uninterrupted run: {tree(out) == tree(ref)}; lock file left: "
                   f"{(out / '.defectforge.lock').is_file()}", "no")
        else:
            p.wait()

    # options beside --config
    a = TMP / "i19_a"
    run(G, g, a, "-m", "cutpaste", "-n", "3", "-q")
    for extra, label in ((["-s", "5", "--normal-ratio", "0.5"], "--seed 5 --normal-ratio 0.5"),
                         (["-m", "draem", "--set", "opacity_range=[0.5,1.0]", "--foreground", "otsu"],
                          "-m draem --set opacity_range=[0.5,1.0] --foreground otsu"),
                         (["--defect-count", "2", "--area-range", "0.01,0.2", "--min-contrast", "0.004"],
                          "--defect-count 2 --area-range 0.01,0.2 --min-contrast 0.004")):
        b = TMP / ("i19_b" + str(len(ROWS)))

        def recorded(b=b, extra=extra):
            gen = yaml.safe_load((b / "config.yaml").read_text())["generator"]
            shown = {k: gen[k] for k in ("seed", "normal_ratio", "method", "overrides", "foreground", "defect_count",
                                         "area_range", "min_contrast") if gen[k] not in (None, 0, 0.0, {}, "cutpaste")}
            return f"recorded: {shown}"
        case("option", f"--config with {label}", f"generate --config a/config.yaml b {label}", G, "--config",
             a / "config.yaml", b, *extra, "-q", protect=[a], check=recorded)
    from test_realdefect import make_category  # the tests' tiny MVTec-shaped category

    work = TMP / "i19_cwd"
    make_category(work / "cat", per_type=3)
    old = os.getcwd()
    os.chdir(work)
    try:
        run(G, "cat", "fs", "-m", "copy_paste", "--defects", "cat", "--few-shot", "1", "-n", "4", "-q")
    finally:
        os.chdir(old)
    elsewhere = TMP / "i19_elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    try:
        case("option", "--config of a few-shot run made with relative paths, from another folder",
             "cd elsewhere; generate --config ../cwd/fs/config.yaml fs2", G, "--config", work / "fs" / "config.yaml", "fs2",
             "-q", protect=[work],
             check=lambda: f"identical to the recorded run, fewshot_split.json included: "
                           f"{tree(elsewhere / 'fs2') == tree(work / 'fs')}")
    finally:
        os.chdir(old)
    import torch
    from test_evaluate_cli import TinyFeatures  # a tiny network stands in for Inception (none downloaded)

    weights = TMP / "i19_fid.pt"
    torch.jit.save(torch.jit.script(TinyFeatures()), str(weights))
    with mock.patch.dict(os.environ, {"DEFECTFORGE_FID_INCEPTION": str(weights), "DEFECTFORGE_CACHE_DIR": str(TMP / "c"),
                                      "DEFECTFORGE_WEIGHTS_CONFIG": str(TMP / "none.yaml")}):
        r = CliRunner().invoke(app, ["evaluate", str(work / "fs"), "--real", str(work / "cat"), "--metrics", "fid", "-q"])
        note = next((line for line in r.output.splitlines() if "fed synthesis" in line), r.output[-200:])
        record("option", "evaluate of a few-shot run against its own category (tiny stand-in network)",
               "evaluate fs/ --real cat/", r.exit_code, note.replace(str(TMP), "…"), "no")
    print_rows(FIRST_ROW)


#: the rows of edits_and_writers continue the table of main (85 rows)
FIRST_ROW = 86

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        TMP = Path(tmp).resolve()
        edits_and_writers() if "--edits" in sys.argv else main()
