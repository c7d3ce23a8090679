"""The rules the base class owns, checked for every registered image-level method.

The registry matrix: foreground (a random region, an empty one), a user's mask bank, donors,
``control`` / ``mix`` wrapping, and config round-trips. A method is checked the moment it
registers; no method implements these rules for itself.
"""

import json

import cv2
import numpy as np
import pytest
import torch

import defectforge
from defectforge.core.base import EMPTY_REGION_NOTE, CAPABILITIES, ApplyResult
from defectforge.io.images import write_image

IMAGE_METHODS = defectforge.list_methods(level="image")


def _synth(name, **kw):
    missing = defectforge.method_info(name).missing_requirements()
    if missing:
        pytest.skip(f"{name} needs {missing}")
    from conftest import method_for_tests  # real-defect methods get a tiny bank, model methods a tiny model

    return method_for_tests(name, anomaly_probability=1.0, **kw)


def _blob_region(b, h, w):
    """A random-looking region per sample: an off-centre disc plus a bar (never the whole image)."""
    fg = np.zeros((b, h, w), np.uint8)
    rng = np.random.default_rng(5)
    for k in range(b):
        cy, cx = rng.integers(h // 3, 2 * h // 3), rng.integers(w // 3, 2 * w // 3)
        cv2.circle(fg[k], (int(cx), int(cy)), h // 4, 1, -1)
        fg[k, h // 8:h // 8 + h // 10, :] = 1
    return torch.from_numpy(fg)[:, None].float()


@pytest.fixture
def bank_dir(tmp_path):
    disc = np.zeros((40, 40), np.uint8)
    cv2.circle(disc, (20, 20), 15, 255, -1)
    bar = np.zeros((12, 40), np.uint8)
    bar[2:10, :] = 255
    write_image(tmp_path / "disc.png", disc)
    write_image(tmp_path / "bar.png", bar)
    return tmp_path


def _labels_agree_with_masks(out):
    nonempty = out.masks.flatten(1).amax(1) > 0
    assert torch.equal(out.labels > 0, nonempty), "label must be 0 exactly where the mask is empty"
    for p, anomalous in zip(out.params, nonempty.tolist()):
        assert p["anomalous"] == anomalous


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_masks_stay_inside_a_random_region(name, surface_batch):
    synth = _synth(name)
    fg = _blob_region(*surface_batch.shape[:1], *surface_batch.shape[2:])
    out = synth(surface_batch, seed=2, foreground=fg)
    _labels_agree_with_masks(out)
    if not synth.foreground_is_hint:
        assert not ((out.masks > 0) & (fg == 0)).any(), "mask outside the region"
    else:  # a hint: the defect must still touch the region
        for k in range(len(out)):
            if out.labels[k] > 0:
                assert (out.masks[k] * fg[k]).sum() > 0
    again = synth.replay(surface_batch, out.params, foreground=fg)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_empty_region_falls_back_to_the_whole_image_the_same_way(name, surface_batch):
    """One rule for all: an empty foreground is recorded and the defect placed anywhere."""
    synth = _synth(name)
    fg = torch.zeros(surface_batch.shape[0], 1, *surface_batch.shape[2:])
    out = synth(surface_batch, seed=4, foreground=fg)
    _labels_agree_with_masks(out)
    for p in out.params:
        assert p.get("region_fallback") == EMPTY_REGION_NOTE
    # every method makes a visible anomaly on most samples (DRAEM keeps ~5% of empty Perlin masks normal)
    assert int((out.labels > 0).sum()) >= len(out) - 1
    changed = (out.images != surface_batch).flatten(1).any(1)
    assert bool(changed[out.labels > 0].all()), "a sample labelled anomalous must differ from its input"
    again = synth.replay(surface_batch, out.params, foreground=fg)
    assert torch.equal(again.images, out.images)


def test_cutpaste_with_an_empty_foreground_is_anomalous_not_an_unchanged_label_1(surface_batch):
    # before: label 1, an empty mask and an unchanged image
    out = defectforge.create("cutpaste")(surface_batch, seed=0, foreground=torch.zeros(4, 1, 96, 96))
    assert (out.labels == 1).all() and (out.masks.flatten(1).sum(1) > 0).all()
    assert (out.images != surface_batch).flatten(1).any(1).all()


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_mask_bank_bounds_every_method(name, bank_dir, surface_batch):
    """``control(..., mask_bank=)`` confines the defect to the placed shapes, NSA included."""
    if defectforge.method_info(name).missing_requirements():
        pytest.skip("optional dependency missing")
    from conftest import method_or_name

    synth = defectforge.control(method_or_name(name), mask_bank=bank_dir)
    out = synth(surface_batch, seed=9)
    _labels_agree_with_masks(out)
    h, w = surface_batch.shape[2:]
    for k, p in enumerate(out.params):
        if not p["anomalous"]:
            continue
        shape = torch.from_numpy(synth.mask_bank.render(p["defects"][0]["shape"], h, w))
        assert not ((out.masks[k, 0] > 0) & ~shape).any(), "mask outside the user's shape"
        changed = (out.images[k] != surface_batch[k]).any(0)
        assert not (changed & ~shape).any(), "pixels changed outside the user's shape"


def test_nsa_with_a_mask_bank_stays_inside_the_shapes(bank_dir, surface_batch):
    # before: NSA treated the shape as a placement hint and pasted outside it
    synth = defectforge.control("nsa", mask_bank=bank_dir)
    out = synth(surface_batch, seed=1, donors=surface_batch)
    for k, p in enumerate(out.params):
        shape = torch.from_numpy(synth.mask_bank.render(p["defects"][0]["shape"], 96, 96))
        assert not ((out.masks[k, 0] > 0) & ~shape).any()
        assert not ((out.images[k] != surface_batch[k]).any(0) & ~shape).any()
        soft = out.extras["soft_mask"][k, 0]
        assert not ((soft > 0) & ~shape).any()


@pytest.mark.parametrize("name", [n for n in IMAGE_METHODS if defectforge.method_info(n).capabilities["uses_donors"]])
def test_donor_methods_use_the_pool_and_replay_with_it(name, surface_batch):
    synth = _synth(name)
    images = surface_batch.repeat(3, 1, 1, 1)  # 12 samples: some draw a fill that cuts from a donor
    donors = torch.flip(surface_batch, dims=[0])
    out = synth(images, seed=3, donors=donors)
    _labels_agree_with_masks(out)
    again = synth.replay(images, out.params, donors=donors)
    assert torch.equal(again.images, out.images)
    assert "donor" in json.dumps(out.params), "no sample recorded which donor it cut from"
    if not defectforge.method_info(name).cpu_bound:  # Poisson blending may hide a donor's pixels
        alone = synth(images, seed=3)
        assert not torch.equal(alone.images, out.images), "the donor pool made no difference"


@pytest.mark.parametrize("name", IMAGE_METHODS)
@pytest.mark.parametrize("wrap", ["control", "mix"])
def test_wrapped_methods_replay_and_are_batch_independent(name, wrap, surface_batch):
    if defectforge.method_info(name).missing_requirements():
        pytest.skip("optional dependency missing")
    from conftest import method_or_name

    method = method_or_name(name)
    synth = (defectforge.control(method, defect_count=(1, 2)) if wrap == "control"
             else defectforge.mix([method, "cutout" if name != "cutout" else "riad"], [0.5, 0.5]))
    out = synth(surface_batch, seed=6)
    _labels_agree_with_masks(out)
    again = synth.replay(surface_batch, out.params)
    assert torch.equal(again.images, out.images) and torch.equal(again.masks, out.masks)
    part = synth(surface_batch[1:3], seed=6, indices=[1, 2])
    assert torch.equal(part.images, out.images[1:3]) and part.params == out.params[1:3]
    assert json.loads(json.dumps(out.params)) == out.params


def _same_outputs(a, b, images, **kw):
    x, y = a(images, seed=8, **kw), b(images, seed=8, **kw)
    assert torch.equal(x.images, y.images) and torch.equal(x.masks, y.masks) and x.params == y.params


@pytest.mark.parametrize("name", defectforge.list_methods(level="image"))
def test_config_round_trips_and_holds_every_default(name, surface_batch):
    synth = _synth(name)
    cfg = synth.config()
    assert json.loads(json.dumps(cfg)) == cfg
    import inspect

    init = inspect.signature(type(synth).__init__)
    for p in list(init.parameters.values())[1:]:
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            assert p.name in cfg, f"config() misses the resolved default of {p.name!r}"
    again = defectforge.from_config(cfg)
    assert again.config() == cfg
    _same_outputs(synth, again, surface_batch)


def test_control_and_mix_configs_round_trip(bank_dir, surface_batch):
    synth = defectforge.mix([defectforge.control("cutpaste", defect_count=(1, 3), area_range=(0.01, 0.3),
                                                 mask_bank=bank_dir),
                             defectforge.create("draem", opacity_range=(0.5, 1.0))], [0.25, 0.75])
    cfg = synth.config()
    again = defectforge.from_config(json.loads(json.dumps(cfg)))
    assert again.config() == cfg
    _same_outputs(synth, again, surface_batch)
    with pytest.raises(ValueError, match="'method' key"):
        defectforge.from_config({"defect_count": 2})


@pytest.mark.parametrize("name", defectforge.list_methods())
def test_capabilities_are_typed_and_exposed(name):
    caps = defectforge.method_info(name).capabilities
    assert set(caps) == set(CAPABILITIES) | {"cpu_bound"}
    for key, value in caps.items():
        if key == "requires":
            assert isinstance(value, list)
        elif key == "model_kind":
            assert value is None if not caps["needs_model"] else isinstance(value, str)
        elif key == "detector":
            level = defectforge.method_info(name).level
            assert value is None if level == "image" else isinstance(value, str)
        else:
            assert isinstance(value, bool)
    assert json.loads(json.dumps(defectforge.method_info(name).as_dict()))["capabilities"] == caps


@pytest.mark.parametrize("name", IMAGE_METHODS)
def test_an_instance_reports_its_capabilities_as_its_method_info_does(name):
    # before: synth.capabilities was a method of other keys (no cpu_bound) than the property
    # method_info(name).capabilities of the same name
    info_caps = defectforge.method_info(name).capabilities
    synth_caps = _synth(name).capabilities
    assert isinstance(synth_caps, dict) and set(synth_caps) == set(info_caps)
    assert synth_caps["cpu_bound"] == info_caps["cpu_bound"]
    assert {k: type(v) for k, v in synth_caps.items()} == {k: type(v) for k, v in info_caps.items()}


def test_an_instance_may_narrow_its_class_capabilities():
    assert defectforge.method_info("defectmaker").capabilities["uses_donors"] is True
    assert defectforge.create("defectmaker", fills=["noise"]).capabilities["uses_donors"] is False


def test_apply_results_do_not_share_their_extras():
    # before: ApplyResult.extras defaulted to one dict shared by every result
    first = ApplyResult(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    first.extras["soft_mask"] = torch.ones(1)
    second = ApplyResult(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    assert second.extras == {} and first.extras is not second.extras
    assert ApplyResult.of((torch.zeros(1), torch.zeros(1), torch.zeros(1))).extras == {}


def test_the_registry_is_complete_without_a_loader():
    # registry._ensure_loaded was a no-op: importing any defectforge module imports the package,
    # whose __init__ imports every method package, so nothing is left to load on first use
    import subprocess
    import sys

    code = "from defectforge.core.registry import list_methods; print(','.join(list_methods()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == defectforge.list_methods()


def test_defectmaker_without_cut_fills_uses_no_donors():
    # before: a @staticmethod @property made ``uses_donors`` a truthy property object
    assert defectforge.create("defectmaker").uses_donors is True
    assert defectforge.create("defectmaker", fills=["noise"]).uses_donors is False


def test_overlay_is_explicit_recorded_and_never_replaces_a_preset_or_the_user():
    from defectforge.pipelines.generate import DATASET_OVERLAY

    draem = defectforge.create("draem", overlay=DATASET_OVERLAY)
    assert draem.anomaly_probability == 1.0 and draem.overlay_applied["anomaly_probability"] == 1.0
    assert draem.config()["anomaly_probability"] == 1.0  # the record rebuilds the same synthesizer
    three_way = defectforge.create("cutpaste_3way", overlay=DATASET_OVERLAY)
    assert abs(three_way.anomaly_probability - 2 / 3) < 1e-9 and "anomaly_probability" not in three_way.overlay_applied
    assert defectforge.create("draem_anomalib", overlay=DATASET_OVERLAY).empty_mask_policy == "rescale"
    user = defectforge.create("draem", overlay=DATASET_OVERLAY, anomaly_probability=0.3)
    assert user.anomaly_probability == 0.3 and "anomaly_probability" not in user.overlay_applied
    assert "empty_mask_policy" not in defectforge.create("cutpaste", overlay=DATASET_OVERLAY).overlay_applied


def _standalone_image_methods():
    """Image-level methods that build without extra inputs (a real-defect bank, a trained model)."""
    names = []
    for name in IMAGE_METHODS:
        if defectforge.method_info(name).missing_requirements():
            continue
        try:
            defectforge.create(name)
        except (TypeError, ValueError):
            continue
        names.append(name)
    return names


def test_every_method_writes_byte_identical_datasets_with_one_or_two_workers(tmp_path):
    """The workers axis of the matrix: one generate run mixing every standalone method."""
    from PIL import Image

    from defectforge.pipelines.generate import generate
    from defectforge.sources.procedural import surface

    folder = tmp_path / "good"
    folder.mkdir()
    for i, kind in enumerate(["metal", "wood", "tiles", "fabric"]):
        Image.fromarray(surface(kind, 48, seed=i)).save(folder / f"{kind}.png")
    names = _standalone_image_methods()
    spec = ",".join(names)  # equal shares
    count = 12 * len(names)
    for workers, sub in ((1, "one"), (2, "two")):
        generate(folder, tmp_path / sub, None, count=count, seed=5, mix=spec, workers=workers, progress=False)
    manifest = [json.loads(line) for line in (tmp_path / "one" / "manifest.jsonl").read_text().splitlines()]
    assert {r["method"] for r in manifest if r["label"] > 0} == set(names), "some method made no sample"

    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "config.yaml"}

    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []


def test_named_streams_are_distinct_and_only_the_listed_ones_lie_in_the_redraw_range():
    # the overlap rule of core.seeding.Stream: new streams avoid the redraw streams; these predate it
    from defectforge.core.seeding import MAX_RETRIES, Stream, retry_stream

    redraws = {retry_stream(a) for a in range(1, MAX_RETRIES + 1)}
    assert len({int(s) for s in Stream}) == len(Stream) == len(Stream.__members__)
    others = [s for s in Stream if s is not Stream.RETRY_FIRST]
    assert {s.name for s in others if int(s) in redraws} == {"REALISM_NORMALS", "FEW_SHOT_SPLIT", "PREVIEW_PICK"}
    assert (Stream.SYNTHESIS, Stream.PLAN, Stream.DONORS, Stream.REALISM_NORMALS, Stream.FEW_SHOT_SPLIT,
            Stream.PREVIEW_PICK, Stream.RETRY_FIRST) == (0, 1, 2, 5, 7, 9, 21)


def test_random_streams_are_named_in_core_seeding_only():
    # a bare stream number (sample_rng(seed, i, 5)) or a hand-made Philox outside core/seeding.py
    # is how two consumers came to share draws
    import re
    from pathlib import Path

    root = Path(defectforge.__file__).parent
    bare_stream = re.compile(r"sample_rng\([^()]*,\s*(stream=)?\d+\s*\)")
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "seeding.py" and path.parent.name == "core":
            continue
        text = path.read_text()
        found += [f"{path.relative_to(root)}: {m.group(0)}" for m in bare_stream.finditer(text)]
        found += [f"{path.relative_to(root)}: Philox" for _ in re.finditer(r"\bPhilox\(", text)]
    assert not found, found


def test_the_schema_reads_bounds_and_choices_from_the_checks_not_their_messages(monkeypatch):
    # before: the schema parsed the interval and the choices out of the error messages
    from defectforge.core import schema
    from defectforge.core.validation import NotAChoice, OutOfRange, check_choice, check_range

    with pytest.raises(OutOfRange) as out:
        check_range("k", 5, 0, 1, high_inclusive=False)
    assert (out.value.name, out.value.low, out.value.high, out.value.high_inclusive) == ("k", 0, 1, False)
    with pytest.raises(NotAChoice) as choice:
        check_choice("mode", "b", ["a", "c"])
    assert choice.value.choices == ("a", "c")
    monkeypatch.setattr(OutOfRange, "__str__", lambda self: "")
    monkeypatch.setattr(NotAChoice, "__str__", lambda self: "")
    schema._schema.cache_clear()
    try:
        spec = {s.name: s for s in schema.parameter_schema("draem")}
    finally:
        schema._schema.cache_clear()
    assert (spec["opacity_range"].low, spec["opacity_range"].high) == (0.0, 1.0)
    assert spec["augmentations"].choices == ("draem", "anomalib", "none")
