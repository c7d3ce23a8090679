"""Issue 19: a user's edits are data, one writer per output folder, records that rebuild a run.

Each test meets the problem where a user meets it: the ``defectforge`` CLI (typer's CliRunner),
or real processes where a second process or ``kill -9`` is the point. All data is built here.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
from defectforge.io.output_lock import LOCK_NAME, OutputLockedError, lock_output
from defectforge.sources.procedural import surface

_register_commands()
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def good(tmp_path):
    folder = tmp_path / "good"
    folder.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles", "fabric"]):
        Image.fromarray(surface(kind, 64, seed=i)).save(folder / f"{kind}.png")
    return folder


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def correct_by_hand(path: Path) -> bytes:
    """What a labelling tool does to a mask: a few pixels painted, saved again as PNG."""
    mask = np.array(Image.open(path))
    mask[:8, :8] = 255 - mask[:8, :8]
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


# --- 1. a user's edit is data --------------------------------------------------------------------

def test_overwrite_refuses_a_hand_corrected_mask_and_deletes_nothing(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q").exit_code == 0
    edited = manifest(out)[2]["mask_path"]
    correct_by_hand(out / edited)
    before = tree(out)
    r = cli("generate", good, out, "-m", "draem", "-n", "4", "-q", "--overwrite")
    assert r.exit_code == 2 and "nothing deleted" in r.output and edited in r.output, r.output
    assert "--discard-edits" in r.output and len(r.output.strip().splitlines()) == 1
    assert tree(out) == before
    r = cli("generate", good, out, "-m", "draem", "-n", "4", "-q", "--overwrite", "--discard-edits")
    assert r.exit_code == 0, r.output
    assert not (out / edited).exists() and (out / "test/draem/000002.png").is_file()


def test_resume_keeps_edited_files_names_them_and_repairs_missing_ones(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "draem", "-n", "6", "-q").exit_code == 0
    original = tree(out)
    records = manifest(out)
    (out / records[1]["image_path"]).unlink()  # missing: made again
    mine = {records[4]["mask_path"]: correct_by_hand(out / records[4]["mask_path"])}
    # a sample with a missing image and an edited mask: the image is made again, the mask kept
    (out / records[2]["image_path"]).unlink()
    mine[records[2]["mask_path"]] = correct_by_hand(out / records[2]["mask_path"])
    r = cli("generate", good, out, "-m", "draem", "-n", "6", "-q", "--resume")
    assert r.exit_code == 0, r.output
    kept = [line for line in r.output.splitlines() if line.startswith("kept")]
    assert len(kept) == 1 and all(path in kept[0] for path in mine) and "--discard-edits" in kept[0], r.output
    assert "repaired 2" in r.output
    after = tree(out)
    assert {p: after[p] for p in mine} == mine
    assert {p: b for p, b in after.items() if p not in mine} == {p: b for p, b in original.items() if p not in mine}
    assert manifest(out) == records  # the record still says what the run wrote
    # still the user's on the next resume; --discard-edits makes the run's own files again
    r = cli("generate", good, out, "-m", "draem", "-n", "6", "-q", "--resume")
    assert r.exit_code == 0 and "kept 2" in r.output and tree(out) == after, r.output
    r = cli("generate", good, out, "-m", "draem", "-n", "6", "-q", "--resume", "--discard-edits")
    assert r.exit_code == 0 and "repaired 2" in r.output and "kept" not in r.output, r.output
    assert tree(out) == original


# --- 2. one writer per output folder -------------------------------------------------------------

SRC = Path(__file__).resolve().parents[1] / "src"

#: A real ``defectforge generate`` process made slow (each chunk of samples waits), so that a
#: second writer meets it mid-run; everything else is the real command line.
SLOW_CLI = """
import sys, time
import defectforge.pipelines.generate as gen
real = gen._Worker.run
def slow(self, indices):
    time.sleep(1.0)
    return real(self, indices)
gen._Worker.run = slow
sys.argv = ["defectforge", *sys.argv[1:]]
from defectforge.cli.main import main
main()
"""


def start_writer(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.Popen([sys.executable, "-c", SLOW_CLI, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_records(process: subprocess.Popen, out: Path, n: int = 1) -> None:
    deadline = time.monotonic() + 120
    while len(list((out / ".records").glob("*.json"))) < n if (out / ".records").is_dir() else True:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the writer made no sample in 120 s"
        time.sleep(0.05)


def test_a_second_writer_is_refused_naming_the_running_one_and_a_killed_one_does_not_block(good, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = ("generate", good, out, "-m", "cutpaste", "-n", "40", "-q")
    writer = start_writer(*args)
    try:
        wait_for_records(writer, out)
        for flag in ("--resume", "--overwrite"):
            r = cli(*args, flag)
            lines = r.output.strip().splitlines()
            assert r.exit_code == 2 and len(lines) == 1, r.output
            assert f"pid {writer.pid} on {socket.gethostname()}" in lines[0] and "started" in lines[0], r.output
            assert "generate" in lines[0] and "cutpaste" in lines[0], r.output
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
    finally:
        if writer.poll() is None:
            writer.kill()
    assert (out / LOCK_NAME).is_file()  # left behind by kill -9: stale, not an obstacle
    r = cli(*args, "--resume")
    assert r.exit_code == 0 and "resumed" in r.output, r.output
    assert not (out / LOCK_NAME).exists()
    assert cli("generate", good, reference, "-m", "cutpaste", "-n", "40", "-q").exit_code == 0
    assert tree(out) == tree(reference)


def assert_locked(out: Path) -> None:
    with pytest.raises(OutputLockedError, match=f"pid {os.getpid()}"):
        lock_output(out).acquire()


@pytest.mark.parametrize("workers", [1, 2])
def test_every_local_engine_holds_the_lock_for_the_whole_run(good, tmp_path, monkeypatch, workers):
    import defectforge.pipelines.generate as gen

    out = tmp_path / "out"
    seen = []
    real_prepare, real_manifest_write = gen._prepare_output, gen.atomic_write_bytes

    def prepare(output, *a, **k):  # before the first file of the folder is read
        assert_locked(output)
        seen.append("prepare")
        return real_prepare(output, *a, **k)

    def write(path, data):
        if Path(path).name == "manifest.jsonl":  # the last write of the run
            assert_locked(out)
            seen.append("manifest")
        real_manifest_write(path, data)

    monkeypatch.setattr(gen, "_prepare_output", prepare)
    monkeypatch.setattr(gen, "atomic_write_bytes", write)
    r = cli("generate", good, out, "-m", "cutpaste", "-n", "4", "-q", "--workers", workers)
    assert r.exit_code == 0 and seen == ["prepare", "manifest"], r.output
    assert not (out / LOCK_NAME).exists()


def test_the_lock_file_is_neither_a_user_file_nor_data(good, tmp_path):
    out = tmp_path / "out"
    assert cli("generate", good, out, "-m", "cutpaste", "-n", "3", "-q").exit_code == 0
    (out / LOCK_NAME).write_text('{"pid": 999999999, "host": "x"}')  # as a kill -9'd run leaves it
    r = cli("generate", good, out, "-m", "draem", "-n", "3", "-q", "--overwrite")
    assert r.exit_code == 0, r.output
    assert LOCK_NAME not in (out / "manifest.jsonl").read_text() and not (out / LOCK_NAME).exists()
    r = cli("export", out, "--format", "coco", "--output", tmp_path / "coco")
    assert r.exit_code == 0, r.output
    assert LOCK_NAME not in "".join(p.name for p in (tmp_path / "coco").rglob("*"))
    # a refused run leaves neither a lock file nor a folder behind
    r = cli("generate", tmp_path / "nothing", tmp_path / "new" / "o", "-m", "cutpaste", "-q")
    assert r.exit_code == 2 and not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    r = cli("generate", good, tmp_path / "mine", "-m", "cutpaste", "-q")
    assert r.exit_code == 2 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_the_ui_generate_dataset_takes_the_same_lock(good, tmp_path):
    from defectforge.ui.app import Session

    out = tmp_path / "out"
    with lock_output(out, command="defectforge generate (another run)"):
        with pytest.raises(OutputLockedError, match="another run"):
            Session(tmp_path / "work").generate_dataset(str(out), "cutpaste", "folder", str(good), None, None, 2, 0,
                                                        [], [])
