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


from test_reliability import cli, good, manifest, tree  # noqa: E402,F401 - the same helpers and fixture


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
#: second writer meets it mid-run however loaded the machine; everything else is the real command
#: line.
SLOW_CLI = """
import sys, time
import defectforge.pipelines.sample_writer as writer
real = writer.SampleWriter.run
def slow(self, indices):
    if indices[0] > 0:  # the first chunk is written; the writer is killed long before the rest
        time.sleep(600.0)
    return real(self, indices)
writer.SampleWriter.run = slow
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
        second = subprocess.run([sys.executable, "-m", "defectforge", *map(str, args), "--resume"], text=True,
                                env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, timeout=300)
        assert second.returncode == 2 and second.stdout == "", (second.stdout, second.stderr)
        assert len(second.stderr.strip().splitlines()) == 1 and f"pid {writer.pid}" in second.stderr, second.stderr
        for flag in ("--resume", "--overwrite"):  # the same in-process, where every line is seen
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
    import defectforge.pipelines.output_folder as folder

    out = tmp_path / "out"
    seen = []
    real_prepare, real_manifest_write = gen.prepare_output, folder.atomic_write_bytes

    def prepare(output, *a, **k):  # before the first file of the folder is read
        assert_locked(output)
        seen.append("prepare")
        return real_prepare(output, *a, **k)

    def write(path, data):
        if Path(path).name == "manifest.jsonl":  # the last write of the run
            assert_locked(out)
            seen.append("manifest")
        real_manifest_write(path, data)

    monkeypatch.setattr(gen, "prepare_output", prepare)
    monkeypatch.setattr(folder, "atomic_write_bytes", write)
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
    from defectforge.ui.app import Session, ui_message

    out = tmp_path / "out"
    with lock_output(out, command="defectforge generate (another run)"):
        with pytest.raises(OutputLockedError, match="another run") as refused:
            Session(tmp_path / "work").generate_dataset(str(out), "cutpaste", "folder", str(good), None, None, 2, 0,
                                                        [], [])
    shown = ui_message(refused.value, "dataset", out)  # in the app's terms: its dataset folder box
    assert "dataset folder" in shown and "another run" in shown and "OUTPUT" not in shown and "--" not in shown


# --- 4. records that rebuild the run anywhere ----------------------------------------------------

@pytest.fixture
def folders(tmp_path):
    """Every folder an option of generate may name: textures, region masks, defect shapes, real defects."""
    from test_realdefect import make_category

    made = {"textures": tmp_path / "tex", "masks": tmp_path / "fgmasks", "shapes": tmp_path / "shapes"}
    for name in ("metal", "wood", "tiles", "fabric"):
        Image.fromarray(surface(name, 64, seed=7)).save((made["textures"].mkdir(exist_ok=True), made["textures"])[1]
                                                        / f"{name}.png")
        mask = np.zeros((64, 64), np.uint8)
        mask[8:56, 8:56] = 255
        Image.fromarray(mask).save((made["masks"].mkdir(exist_ok=True), made["masks"])[1] / f"{name}.png")
    shape = np.zeros((32, 32), np.uint8)
    shape[10:22, 6:26] = 255
    made["shapes"].mkdir()
    Image.fromarray(shape).save(made["shapes"] / "bar.png")
    made["defects"] = make_category(tmp_path / "cat", per_type=3)
    return made


#: For every option of ``generate`` that describes a run: the arguments that set it beside
#: ``--config`` (``{name}`` is a folder of the ``folders`` fixture) and what the new record must hold.
OVERRIDES = {
    "method": (["-m", "draem"], {"method": "draem"}),
    "mix": (["--mix", "cutpaste:0.5,cutout:0.5"], {"method": "mix", "mix": "cutpaste:0.5,cutout:0.5"}),
    "count": (["-n", "3"], {"count": 3}),
    "seed": (["-s", "5"], {"seed": 5}),
    "size": (["--size", "48"], {"size": 48}),
    "textures": (["-m", "draem", "--textures", "{textures}"], {"textures": "{textures}"}),
    "set_": (["--set", "color_jitter=0.3"], {"overrides": {"color_jitter": 0.3}}),
    "normal_ratio": (["--normal-ratio", "0.5"], {"normal_ratio": 0.5}),
    "foreground": (["--foreground", "otsu"], {"foreground": "otsu"}),
    "foreground_threshold": (["--foreground", "threshold", "--foreground-threshold", "0.4"],
                             {"foreground": "threshold", "foreground_threshold": 0.4}),
    "foreground_invert": (["--foreground", "otsu", "--foreground-invert"], {"foreground_invert": True}),
    "foreground_masks": (["--foreground-masks", "{masks}"], {"foreground_masks": "{masks}"}),
    "defect_count": (["--defect-count", "2"], {"defect_count": [2, 2]}),
    "area_range": (["--area-range", "0.01,0.2"], {"area_range": [0.01, 0.2]}),
    "mask_bank": (["--mask-bank", "{shapes}"], {"mask_bank": "{shapes}"}),
    "mask_threshold": (["--mask-bank", "{shapes}", "--mask-threshold", "128"],
                       {"mask_bank": "{shapes}", "mask_threshold": 128}),
    "bit_depth": (["--bit-depth", "12"], {"bit_depth": "12"}),
    "output_bit_depth": (["--output-bit-depth", "16"], {"output_bit_depth": 16}),
    "png_compression": (["--png-compression", "level9"], {"png_compression": "level9"}),
    "max_pixels": (["--max-pixels", "1000000"], {"max_pixels": 1000000}),
    "min_contrast": (["--min-contrast", "0.004"], {"min_contrast": 0.004}),
    "defects": (["-m", "copy_paste", "--defects", "{defects}"], {"method": "copy_paste", "defects": "{defects}"}),
    "defects_format": (["-m", "copy_paste", "--defects", "{defects}", "--defects-format", "mvtec"],
                       {"defects_format": "mvtec"}),
    "defect_types": (["-m", "copy_paste", "--defects", "{defects}", "--defect-types", "hole"],
                     {"defect_types": ["hole"]}),
    "few_shot": (["-m", "copy_paste", "--defects", "{defects}", "--few-shot", "1"], {"few_shot": "1"}),
    # a model is a method parameter (--set model=PATH): on cutpaste it is refused by name, not dropped
    "model": (["--model", "{masks}"], None),
}


def generate_options() -> set[str]:
    """Every option of ``generate`` that describes the run (not how to run it)."""
    import typer

    from defectforge.cli.synthesis import RUN_OPTIONS

    command = typer.main.get_command(app).commands["generate"]
    return {p.name for p in command.params} - RUN_OPTIONS


def test_every_option_of_generate_has_an_override_case():
    assert generate_options() == set(OVERRIDES)  # a new option needs its row above


@pytest.mark.parametrize("option", sorted(OVERRIDES))
def test_an_option_beside_config_overrides_the_record_and_is_recorded(good, tmp_path, folders, option):
    import yaml

    args, expected = OVERRIDES[option]
    args = [a.format(**folders) for a in args]
    base = ["-m", "cutpaste", "-n", "2", "-s", "1", "-q"]
    assert cli("generate", good, tmp_path / "a", *base).exit_code == 0
    r = cli("generate", "--config", tmp_path / "a" / "config.yaml", tmp_path / "b", *args, "-q")
    if expected is None:
        assert r.exit_code == 2 and "model" in r.output and len(r.output.strip().splitlines()) == 1, r.output
        return
    assert r.exit_code == 0, r.output
    generator = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["generator"]
    for key, value in expected.items():
        value = str(Path(value.format(**folders)).resolve()) if isinstance(value, str) and "{" in value else value
        assert generator[key] == value, (key, generator[key])
    # the same as the run made with these options in one go
    own = [a for a in base if not (any(x in args for x in ("-m", "--mix")) and a in ("-m", "cutpaste"))]
    assert cli("generate", good, tmp_path / "direct", *own, *args).exit_code == 0
    assert tree(tmp_path / "b") == tree(tmp_path / "direct")
    if option == "few_shot":
        assert (tmp_path / "b" / "fewshot_split.json").is_file()


def test_config_rebuilds_from_any_working_directory_with_its_split(tmp_path, monkeypatch, folders):
    from test_realdefect import make_category

    make_category(tmp_path / "work" / "cat", per_type=3)
    monkeypatch.chdir(tmp_path / "work")
    args = ["cat", "a", "-m", "copy_paste", "--defects", "cat", "--few-shot", "1", "-n", "3", "-q"]
    assert cli("generate", *args).exit_code == 0
    record = (tmp_path / "work" / "a" / "config.yaml").read_text()
    assert str(tmp_path / "work" / "cat") in record and "root: cat" not in record
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    r = cli("generate", "--config", tmp_path / "work" / "a" / "config.yaml", "b", "-q")
    assert r.exit_code == 0, r.output
    assert tree(tmp_path / "elsewhere" / "b") == tree(tmp_path / "work" / "a")  # fewshot_split.json included
    assert (tmp_path / "elsewhere" / "b" / "fewshot_split.json").is_file()


@pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")
def test_evaluate_of_a_few_shot_run_scores_against_the_held_out_defects_per_type(tmp_path, monkeypatch):
    import torch
    from test_evaluate_cli import TinyFeatures
    from test_realdefect import make_category

    weights = tmp_path / "fid.pt"
    torch.jit.save(torch.jit.script(TinyFeatures()), str(weights))
    monkeypatch.setenv("DEFECTFORGE_FID_INCEPTION", str(weights))
    monkeypatch.setenv("DEFECTFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEFECTFORGE_WEIGHTS_CONFIG", str(tmp_path / "none.yaml"))
    cat = make_category(tmp_path / "cat", per_type=3)
    out = tmp_path / "out"
    assert cli("generate", cat, out, "-m", "copy_paste", "--defects", cat, "--few-shot", "1", "-n", "8",
               "-q").exit_code == 0
    split = json.loads((out / "fewshot_split.json").read_text())
    trained = sorted(f for files in split["train"].values() for f in files)
    assert len(trained) == 2  # one image of each of the 2 types
    types = {rec["defect"]["type"] for rec in manifest(out)}
    r = cli("evaluate", out, "--real", cat, "--metrics", "fid,kid", "--kid-subsets", "3", "--kid-subset-size", "2",
            "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert "2 real defect image(s) that fed synthesis" in r.output and "4 held-out" in r.output, r.output
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["n_real"] == 4 and result["real_left_out_fed_synthesis"] == 2
    assert result["real_counts"] == {"hole": 2, "scratch": 2}
    assert set(result["groups"]) == {"overall"} | (types if len(types) > 1 else set())
    assert types <= {"hole", "scratch"}  # groups are defect types, not the method's name


def test_without_flock_the_holder_record_decides(tmp_path, monkeypatch):
    """Some network file systems cannot flock: a dead holder on this host is stale, a live or remote one is not."""
    import errno

    import defectforge.io.output_lock as output_lock

    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(output_lock.fcntl, "flock", no_flock)
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname(),
                                                 "started": "then", "command": "defectforge generate a b"}))
        with pytest.raises(OutputLockedError, match=f"pid {sleeper.pid} on {socket.gethostname()}"):
            lock_output(out).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    with lock_output(out) as lock:  # the same record, its process gone (kill -9): stale, taken over
        assert lock.stale["pid"] == sleeper.pid
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-host", "started": "then", "command": "x"}))
    with pytest.raises(OutputLockedError, match="another-host.*delete"):
        lock_output(out).acquire()
