"""Issue 19: a user's edits are data, one writer per output folder, records that rebuild a run.

Each test meets the problem where a user meets it: the ``defectforge`` CLI (typer's CliRunner),
or real processes where a second process or ``kill -9`` is the point. All data is built here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defectforge.cli.main import _register_commands, app
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
