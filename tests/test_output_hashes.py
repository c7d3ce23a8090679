"""Generated datasets stay byte-identical: every image-level method that needs no trained model
(the real-defect ones with the tests' tiny bank), and the generator's own options, against the
SHA-256 of each written image, mask and manifest line stored in ``output_hashes.json``, and of
each image's and mask's decoded pixels (``pixels:<path>``), which no change of the PNG encoder
may alter.

The stored hashes were made by the generator before its split into a package; a refactor of the
run engine must not change one byte. A deliberate change of the written bytes (a new encoder, a
new draw) regenerates them with ``python tests/test_output_hashes.py --write`` and says why in
its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import defectforge
from defectforge.pipelines.generate import generate
from defectforge.sources.procedural import surface

STORED = Path(__file__).with_name("output_hashes.json")

#: Methods that write a dataset without a trained model (the real-defect ones take the tiny bank).
BANK_METHODS = ("copy_paste", "defect_transplant", "real_only")

#: Runs beyond one per method: name -> (generate's keyword arguments, workers).
OPTION_CASES = {
    "mix_normals": (dict(mix="cutpaste:0.3,draem:0.4,nsa:0.3", count=8, normal_ratio=0.25), 1),
    "control_foreground": (dict(method="glass_las", count=4, foreground="otsu", defect_count=[1, 3],
                                area_range=[0.01, 0.1]), 1),
    "draem_16bit_min_contrast": (dict(method="draem", count=4, output_bit_depth=16, min_contrast=0.03), 1),
    "draem_size_batch": (dict(method="draem", count=5, size=48, batch_size=2), 1),
    # the PNG encoding of runs before --png-compression fast: the bytes the stored "draem" case had then
    "draem_png_level1": (dict(method="draem", count=4, png_compression="level1"), 1),
    # two spawned workers write the same bytes as one (the generator's guarantee)
    "mix_two_workers": (dict(mix="cutpaste:0.3,draem:0.4,nsa:0.3", count=8, normal_ratio=0.25), 2),
}


def dataset_methods() -> list[str]:
    """Image-level registry methods that need no trained model and no optional package missing here."""
    names = []
    for name in defectforge.list_methods():
        info = defectforge.method_info(name)
        if info.level == "image" and not getattr(info.cls, "needs_model", False):
            names.append(name)
    return names


def cases() -> dict[str, tuple[dict, int]]:
    out = {name: (dict(method=name, count=4), 1) for name in dataset_methods()}
    out.update(OPTION_CASES)
    return out


def _write_inputs(root: Path) -> tuple[Path, Path]:
    """Three procedural surfaces (64 px, RGB) and the tests' bank of three real defects."""
    from conftest import _write_tiny_bank

    good = root / "good"
    good.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles"]):
        Image.fromarray(surface(kind, 64, seed=i)).save(good / f"{kind}.png")
    bank = root / "bank"
    bank.mkdir()
    _write_tiny_bank(bank)
    return good, bank


def run_hashes(root: Path, good: Path, bank: Path, name: str, kwargs: dict, workers: int) -> dict[str, str]:
    """Run one case into ``root/name``; the SHA-256 of every image and mask, and of each manifest
    line with the temporary folder's path replaced by ``<tmp>``."""
    kwargs = dict(kwargs)
    if kwargs.get("method") in BANK_METHODS:
        kwargs["defects"] = str(bank)
    out = root / name
    generate(str(good), out, seed=3, workers=workers, progress=False, **kwargs)
    hashes = {}
    for path in sorted(out.rglob("*.png")):
        data = path.read_bytes()
        hashes[path.relative_to(out).as_posix()] = hashlib.sha256(data).hexdigest()
        hashes[f"pixels:{path.relative_to(out).as_posix()}"] = pixel_hash(data)
    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    for k, line in enumerate(lines):
        line = line.replace(str(root.resolve()), "<tmp>").replace(str(root), "<tmp>")
        hashes[f"manifest.jsonl:{k}"] = hashlib.sha256(line.encode()).hexdigest()
    return hashes


def pixel_hash(png: bytes) -> str:
    """SHA-256 of a PNG's decoded pixels with their shape and type (8- or 16-bit, as stored)."""
    pixels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    return hashlib.sha256(f"{pixels.shape} {pixels.dtype} ".encode() + pixels.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hashes")
    good, bank = _write_inputs(root)
    return root, good, bank


def test_every_dataset_method_has_stored_hashes():
    stored = json.loads(STORED.read_text())
    missing = sorted(set(cases()) - set(stored))
    assert not missing, f"no stored hashes for {missing}: run python tests/test_output_hashes.py --write"


@pytest.mark.parametrize("name", sorted(cases()))
def test_written_bytes_match_stored_hashes(inputs, name):
    stored = json.loads(STORED.read_text())
    if name not in stored:
        pytest.skip("reported by test_every_dataset_method_has_stored_hashes")
    root, good, bank = inputs
    kwargs, workers = cases()[name]
    got = run_hashes(root, good, bank, name, kwargs, workers)
    expected = stored[name]
    differ = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
    pixels = [k for k in differ if k.startswith("pixels:")]
    assert not pixels, f"{name}: the decoded pixels of {len(pixels)} files differ, e.g. {pixels[:5]}"
    assert not differ, f"{name}: {len(differ)} of {len(expected)} files/lines differ, e.g. {differ[:5]}"


def _write_stored() -> None:
    """Regenerate ``output_hashes.json`` from the code as it is now."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        good, bank = _write_inputs(root)
        stored = {name: run_hashes(root, good, bank, name, kwargs, workers)
                  for name, (kwargs, workers) in sorted(cases().items())}
    STORED.write_text(json.dumps(stored, indent=1, sort_keys=True) + "\n")
    print(f"wrote {STORED}: {len(stored)} runs, {sum(len(v) for v in stored.values())} hashes")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_output_hashes.py --write   (regenerates the stored hashes)")
    _write_stored()
