"""The defect bank, the few-shot split and the real-defect methods (copy_paste, defect_transplant)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import defectforge
from defectforge.sources import defects as defects_module
from defectforge.sources.defects import DefectBank, FewShotSplit, parse_few_shot

METHODS = ["copy_paste", "defect_transplant"]
TRAIN_COLOUR = (0, 250, 0)
TEST_COLOUR = (250, 0, 250)


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_category(root, per_type=6, size=64, seed=0):
    """An MVTec-shaped category: 2 defect types, ``per_type`` images each, one blob or scratch per image."""
    g = np.random.default_rng(seed)
    for k in range(3):
        _save(root / "train" / "good" / f"{k:03d}.png", (100 + g.normal(0, 5, (size, size, 3))).clip(0, 255).astype(np.uint8))
    _save(root / "test" / "good" / "000.png", np.full((size, size, 3), 100, np.uint8))
    for t in ("hole", "scratch"):
        for k in range(per_type):
            image = (100 + g.normal(0, 5, (size, size, 3))).clip(0, 255).astype(np.uint8)
            mask = np.zeros((size, size), np.uint8)
            y, x = int(g.integers(12, size - 24)), int(g.integers(12, size - 24))
            if t == "hole":
                mask[y:y + 9, x:x + 7] = 255
            else:
                mask[y:y + 14, x:x + 3] = 255
            image[mask > 0] = (40, 40, 40)
            _save(root / "test" / t / f"{k:03d}.png", image)
            _save(root / "ground_truth" / t / f"{k:03d}_mask.png", mask)
    return root


def normal_batch(n=6, size=64, channels=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (110 + torch.randn(n, channels, size, size, generator=g) * 6).clamp(0, 255).to(torch.uint8)


# --- bank and split ------------------------------------------------------------------------------

def test_parse_few_shot():
    assert parse_few_shot("1/3")[1] == pytest.approx(1 / 3)
    assert parse_few_shot("0.5")[0] == "fraction" and parse_few_shot(4) == ("count", 4)
    for bad in ["0", "1/1", "abc", "-2", "3/2"]:
        with pytest.raises(ValueError, match="few_shot"):
            parse_few_shot(bad)


def test_bank_from_mvtec_category_one_entry_per_component(tmp_path):
    root = make_category(tmp_path / "cat")
    bank = DefectBank.from_folder(root)
    assert bank.types == ["hole", "scratch"] and len(bank) == 12
    entry = bank.of_type("hole")[0]
    assert entry.key == "test/hole/000.png#1" and entry.area == 63 and entry.mask.sum() == 63
    assert entry.crop.shape[:2] == entry.mask.shape and (entry.crop[entry.mask] == 40).all()
    assert not (entry.context & entry.mask).any()
    # two components in one mask, one under the minimum area
    image, mask = np.full((40, 40, 3), 90, np.uint8), np.zeros((40, 40), np.uint8)
    mask[5:15, 5:15] = 255
    mask[30:32, 30:32] = 255
    assert len(DefectBank.from_arrays([image], [mask])) == 1
    assert len(DefectBank.from_arrays([image], [mask], min_area=1)) == 2
    with pytest.raises(ValueError, match="min_area"):
        DefectBank.from_arrays([image], [mask], min_area=1000)


def test_bank_from_folder_of_pairs(tmp_path):
    for t in ("dent", "spot"):
        image, mask = np.full((32, 32, 3), 90, np.uint8), np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        _save(tmp_path / "pairs" / t / "a.png", image)
        _save(tmp_path / "pairs" / t / "a_mask.png", mask)
    bank = DefectBank.from_folder(tmp_path / "pairs")
    assert bank.types == ["dent", "spot"]
    with pytest.raises(ValueError, match="no defect image with a mask"):
        DefectBank.from_folder(_empty(tmp_path))
    with pytest.raises(ValueError, match="defect_types"):
        DefectBank.from_folder(tmp_path / "pairs", defect_types=["dnet"])


def _empty(tmp_path):
    folder = tmp_path / "empty"
    _save(folder / "x.png", np.zeros((8, 8, 3), np.uint8))
    return folder


def test_split_is_deterministic_recorded_and_reused(tmp_path):
    root = make_category(tmp_path / "cat", per_type=9)
    split_file = tmp_path / "out" / "fewshot_split.json"
    bank = DefectBank.from_folder(root, few_shot="1/3", split_file=split_file)
    data = json.loads(split_file.read_text())
    assert data["few_shot"] == "1/3" and {len(v) for v in data["train"].values()} == {3}
    assert {len(v) for v in data["test"].values()} == {6}
    for t in data["train"]:  # split by source image: no file on both sides
        assert not set(data["train"][t]) & set(data["test"][t])
    assert {e.source for e in bank.entries} == {f for v in data["train"].values() for f in v}
    again = DefectBank.from_folder(root, few_shot="1/3", split_file=tmp_path / "other.json")
    assert again.split.train == bank.split.train  # same seed, same split
    assert DefectBank.from_folder(root, few_shot="1/3", split_seed=1).split.train != bank.split.train
    # a recorded split is reused as written, and refused for another spec
    data["train"]["hole"], data["test"]["hole"] = data["test"]["hole"][:3], data["test"]["hole"][3:] + data["train"]["hole"]
    split_file.write_text(json.dumps(data))
    reused = DefectBank.from_folder(root, few_shot="1/3", split_file=split_file)
    assert sorted({e.source for e in reused.of_type("hole")}) == sorted(data["train"]["hole"])
    with pytest.raises(ValueError, match="does not fit"):
        DefectBank.from_folder(root, few_shot="2", split_file=split_file)
    counted = FewShotSplit.make(root, {"a": ["1", "2", "3", "4", "5"]}, "2")
    assert len(counted.train["a"]) == 2 and len(counted.test["a"]) == 3


@pytest.mark.parametrize("name", METHODS)
def test_no_test_split_pixel_reaches_a_training_sample(name, tmp_path, monkeypatch):
    """Test-split files are never read, and changing them changes no synthesised pixel."""
    root = make_category(tmp_path / "cat", per_type=6)
    split_file = tmp_path / "split.json"
    read = []
    real_read = defects_module.read_image
    monkeypatch.setattr(defects_module, "read_image", lambda path, channels=None: read.append(path) or real_read(path, channels))
    bank = DefectBank.from_folder(root, few_shot="1/3", split_file=split_file)
    split = bank.split
    test_files = {root / f for v in split.test.values() for f in v}
    assert test_files and not test_files & set(read)
    x = normal_batch(16)
    first = defectforge.create(name, bank=bank)(x, seed=4)
    # poison every test-split image: a colour no training defect has, a mask covering everything
    for t, files in split.test.items():
        for f in files:
            _save(root / f, np.full((64, 64, 3), TEST_COLOUR, np.uint8))
            _save(root / "ground_truth" / t / (f.split("/")[-1][:-4] + "_mask.png"), np.full((64, 64), 255, np.uint8))
    bank2 = DefectBank.from_folder(root, few_shot="1/3", split_file=split_file)
    second = defectforge.create(name, bank=bank2)(x, seed=4)
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    assert not (second.images.permute(0, 2, 3, 1) == torch.tensor(TEST_COLOUR, dtype=torch.uint8)).all(-1).any()
    used = {p["entry"].split("#")[0] for p in second.params}
    assert used <= {f for v in split.train.values() for f in v}


# --- the methods ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "float"])
def test_mask_is_exactly_the_changed_pixels(name, dtype, tmp_path):
    bank = DefectBank.from_folder(make_category(tmp_path / "cat"))
    x = normal_batch(12)
    if dtype == "float":
        x = x.float() / 255.0
    out = defectforge.create(name, bank=bank)(x, seed=2)
    changed = (out.images != x).any(1, keepdim=True)
    assert torch.equal(changed.float(), out.masks)
    assert (out.labels == 1).all()
    for p in out.params:
        entry = bank.get(p["entry"])
        assert p["defect_type"] == entry.defect_type


@pytest.mark.parametrize("name", METHODS)
def test_zero_shot_transfer_to_another_category(name, tmp_path):
    """A bank from one category on another's normal images (other size, grey)."""
    bank = DefectBank.from_folder(make_category(tmp_path / "cat"), defect_types="scratch")
    other = normal_batch(5, size=96, channels=1, seed=9)
    fg = torch.zeros(5, 1, 96, 96)
    fg[:, :, 20:70, 30:80] = 1
    out = defectforge.create(name, bank=bank)(other, seed=0, foreground=fg)
    assert out.images.shape == other.shape and (out.labels == 1).all()
    assert not (out.masks * (1 - fg)).any(), "defects stay inside the foreground"
    assert all(p["defect_type"] == "scratch" for p in out.params)


@pytest.mark.parametrize("name", METHODS)
def test_replay_needs_the_same_bank(name, tmp_path):
    bank = DefectBank.from_folder(make_category(tmp_path / "cat"))
    synth = defectforge.create(name, bank=bank)
    x = normal_batch(4)
    out = synth(x, seed=1)
    again = defectforge.create(name, bank=DefectBank.from_folder(tmp_path / "cat")).replay(x, out.params)
    assert torch.equal(again.images, out.images)
    other = defectforge.create(name, bank=DefectBank.from_folder(make_category(tmp_path / "b", seed=5), defect_types="hole"))
    params = [dict(p, entry="test/missing.png#1") for p in out.params]
    with pytest.raises(KeyError, match="replay needs the bank"):
        other.replay(x, params)


def test_transplant_jitters_and_blends(tmp_path):
    bank = DefectBank.from_folder(make_category(tmp_path / "cat"))
    out = defectforge.create("defect_transplant", bank=bank)(normal_batch(8), seed=0)
    angles = [p["angle"] for p in out.params]
    assert len(set(angles)) == 8 and any(a % 90 for a in angles)  # any angle, not only 90s
    assert all(len(p["elastic"]) == 2 for p in out.params)
    paste = defectforge.create("copy_paste", bank=bank)(normal_batch(8), seed=0)
    assert {p["angle"] % 90 for p in paste.params} == {0.0}
    # colour matched: a dark defect on a bright image stays darker than its surround, not at its source value
    bright = torch.full((4, 3, 64, 64), 200, dtype=torch.uint8)
    hard = defectforge.create("copy_paste", bank=bank, defect_types="hole")(bright, seed=0)
    soft = defectforge.create("defect_transplant", bank=bank, defect_types="hole")(bright, seed=0)
    assert hard.images[hard.masks.expand_as(hard.images) > 0].float().mean() < 60
    inside = soft.images[soft.masks.expand_as(soft.images) > 0].float().mean()
    assert 60 < inside < 200


def test_bank_is_required_with_a_clear_message():
    with pytest.raises(ValueError, match="needs a bank of real defects"):
        defectforge.create("copy_paste")
    with pytest.raises(ValueError, match="defect_types"):
        defectforge.create("copy_paste", bank=_tiny(), defect_types=["nope"])
    cfg = defectforge.create("defect_transplant", bank=_tiny()).config()
    assert cfg["bank"]["entries"] == {"blob": 2, "scratch": 1}
    json.dumps(cfg)


def _tiny():
    from conftest import tiny_defect_bank

    return tiny_defect_bank()


def test_blend_keeps_the_defects_contrast():
    """The Poisson blend keeps a small dark defect as dark against its surround as a paste does
    (the defect's own gradients guide its edge; before, an eroded guidance region faded it)."""
    # a 24 px hole in a 256 px image lands at 64 px as 6 px with 3 px of its surround (crop margin 12 px)
    g = np.random.default_rng(0)
    image = (100 + g.normal(0, 5, (256, 256, 3))).clip(0, 255).astype(np.uint8)
    mask = np.zeros((256, 256), np.uint8)
    mask[100:124, 90:114] = 255
    image[mask > 0] = 40
    bank = DefectBank.from_arrays([image], [mask], ["hole"])
    x = normal_batch(8)
    paste = defectforge.create("defect_transplant", bank=bank, blend="paste", tolerance=254)(x, seed=4)
    mixed = defectforge.create("defect_transplant", bank=bank, tolerance=254)(x, seed=4)
    sel = paste.masks.expand_as(x) > 0
    drop_paste = (x.float() - paste.images.float())[sel].mean()
    drop_mixed = (x.float() - mixed.images.float())[sel].mean()
    assert drop_paste > 30 and drop_mixed > 0.8 * drop_paste


def _edge_bank(side: str):
    """One dark defect cut off by its image's ``side`` edge."""
    image = (100 + np.random.default_rng(0).normal(0, 4, (64, 64, 3))).clip(0, 255).astype(np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    rows, cols = {"bottom": (slice(50, 64), slice(20, 40)), "left": (slice(20, 40), slice(0, 14))}[side]
    mask[rows, cols] = 255
    image[mask > 0] = 40
    return DefectBank.from_arrays([image], [mask], ["break"])


@pytest.mark.parametrize("side", ["bottom", "left"])
def test_transplant_keeps_edge_defects_at_the_edge(side):
    bank = _edge_bank(side)
    assert bank.entries[0].borders == (side,)
    x = torch.full((6, 3, 80, 80), 180, dtype=torch.uint8)
    out = defectforge.create("defect_transplant", bank=bank)(x, seed=0)
    edge = out.masks[:, 0, -1, :] if side == "bottom" else out.masks[:, 0, :, 0]
    assert edge.flatten(1).any(1).all(), "every defect reaches the same edge of the target"
    assert all(p["anchor"] == {"source_side": side, "side": side} for p in out.params)
    assert {p["angle"] for p in out.params} <= {0.0, 180.0}
    # the cut side is a free (mirrored) Poisson boundary: the defect keeps its level up to the edge
    # instead of being pulled to the target's value there (colour match: 180 - 60 * gain >= 0.75)
    inside = out.images[:, 0][out.masks[:, 0] > 0].float()
    assert inside.mean() < 150
    # copy_paste (the papers' baseline) places anywhere
    paste = defectforge.create("copy_paste", bank=bank)(x, seed=0)
    assert "anchor" not in paste.params[0]
    # anchor_edges=False: the old behaviour (any angle, anywhere)
    free = defectforge.create("defect_transplant", bank=bank, anchor_edges=False)(x, seed=0)
    assert any(p["angle"] % 90 for p in free.params)


def test_grey_is_rounded_alike_when_read_and_when_a_crop_is_converted(tmp_path):
    # before: read_image(channels=1) rounded half up and to_target_channels half to even, so a
    # pixel of luma 28.5 (0, 0, 250) became 29 from a file and 28 from a bank crop
    from defectforge.io.images import read_image, write_image
    from defectforge.realdefect._common import to_target_channels

    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgb[0, :4] = [[0, 0, 250], [20, 0, 180], [40, 0, 110], [150, 0, 225]]  # luma 28.5, 26.5, 24.5, 70.5
    write_image(tmp_path / "rgb.png", rgb)
    from_file = read_image(tmp_path / "rgb.png", channels=1)
    assert from_file[0, :4, 0].tolist() == [28, 26, 24, 70]
    assert np.array_equal(from_file, to_target_channels(rgb, 1))
