"""anomalib 2.x for real: the export read by ``Folder``, DRAEM trained by anomalib's ``Engine`` with
:class:`AnomalibAugmenter`, and the synthetic split made by :func:`use_synthetic_split`."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml

import defectforge
from defectforge.integrations.anomalib import AnomalibAugmenter, synthetic_dataset, use_synthetic_split
from defectforge.io.images import read_image, write_image
from defectforge.pipelines.export import export
from defectforge.pipelines.generate import generate

from .conftest import require, write_surfaces

pytestmark = pytest.mark.integration

MIX = "draem:0.5,cutpaste:0.5"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """8 real training normals, a synthetic test set from 10 held-out normals (two methods, a quarter
    normal), and its anomalib export."""
    require("anomalib.data")
    root = tmp_path_factory.mktemp("anomalib-export")
    write_surfaces(root / "train" / "good", 8)
    write_surfaces(root / "held", 10, first_seed=100)
    generate(root / "held", root / "synthetic", None, 16, mix=MIX, normal_ratio=0.25, seed=0, progress=False)
    summary = export(root / "synthetic", root / "synthetic-anomalib", "anomalib", train_dir=root / "train" / "good")
    return root, summary


def _folder(exported_root, **options):
    from anomalib.data import Folder

    init_args = yaml.safe_load((exported_root / "synthetic-anomalib" / "folder.yaml").read_text())["data"]["init_args"]
    return Folder(**init_args, train_batch_size=2, eval_batch_size=4, num_workers=0, seed=0, **options)


def _resolved(path):
    from pathlib import Path

    return Path(path).resolve()


def _chw(path) -> torch.Tensor:
    """An image file as a (3, H, W) uint8 tensor."""
    return torch.from_numpy(read_image(path, channels=3).copy()).permute(2, 0, 1)


def _mask(path) -> np.ndarray:
    return read_image(path, channels=1)[..., 0] > 127


def test_folder_reads_the_export_with_its_labels_masks_and_splits(exported):
    from anomalib.data import Folder

    root, summary = exported
    assert summary["arguments"]["abnormal_dir"] == ["test/cutpaste", "test/draem"]
    datamodule = _folder(root)
    datamodule.setup()
    train = datamodule.train_data.samples
    assert sorted(train.image_path.map(lambda p: p.rsplit("/", 1)[1])) == [f"n{k:03d}.png" for k in range(8)]
    assert (train.label_index == 0).all()
    manifest = [json.loads(line) for line in (root / "synthetic" / "manifest.jsonl").read_text().splitlines()]
    expected = {str((root / "synthetic" / r["image_path"]).resolve()): r for r in manifest}
    # Folder's default split: half of the test set (label-aware) becomes the validation set
    evaluated = [datamodule.val_data, datamodule.test_data]
    seen = {}
    for dataset in evaluated:
        for k in range(len(dataset)):
            item = dataset[k]
            record = expected[str(_resolved(item.image_path))]
            assert int(item.gt_label) == record["label"]
            want = _mask(root / "synthetic" / record["mask_path"]) if record["label"] else np.zeros((64, 64), bool)
            assert np.array_equal(item.gt_mask.numpy().astype(bool), want), record["image_path"]
            seen[str(_resolved(item.image_path))] = dataset
    assert sorted(seen) == sorted(expected)  # every sample once, in validation or test
    labels = [r["label"] for r in manifest]
    assert 0 < sum(labels) < len(labels)
    for dataset in evaluated:  # label-aware: both splits hold normal and anomalous samples
        assert set(dataset.samples.label_index) == {0, 1}
    # folder.py builds the same datamodule
    namespace: dict = {}
    exec((root / "synthetic-anomalib" / "folder.py").read_text(), namespace)
    assert isinstance(namespace["datamodule"], Folder)
    assert _resolved(namespace["datamodule"].root) == (root / "synthetic").resolve()


def _draem(textures, image_size=64):
    from anomalib.models import Draem

    return Draem(dtd_dir=str(textures), pre_processor=Draem.configure_pre_processor((image_size, image_size)),
                 visualizer=False)


def _engine(root, max_steps):
    from anomalib.engine import Engine

    return Engine(max_steps=max_steps, accelerator="cpu", devices=1, default_root_dir=str(root), logger=False,
                  enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=1, limit_test_batches=1)


def test_draem_trains_through_the_engine_and_resumes_the_augmenter(exported, tmp_path, no_network):
    require("anomalib.engine")
    root, _ = exported
    textures = tmp_path / "dtd"  # an existing folder: anomalib would download DTD otherwise
    write_image(textures / "t.png", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    model = _draem(textures)
    model.augmenter = AnomalibAugmenter("cutpaste", seed=3)
    weights_before = model.model.state_dict()["reconstructive_subnetwork.encoder.block1.0.weight"].clone()
    engine = _engine(tmp_path / "run", max_steps=3)
    engine.fit(model, datamodule=_folder(root))
    assert engine.trainer.global_step == 3
    assert int(model.augmenter.position) == 6 and model.augmenter.last_indices == [4, 5]  # 3 steps of 2
    assert not torch.equal(weights_before,
                           model.model.state_dict()["reconstructive_subnetwork.encoder.block1.0.weight"])
    checkpoint = tmp_path / "draem.ckpt"
    engine.trainer.save_checkpoint(checkpoint)
    assert int(torch.load(checkpoint, weights_only=False)["state_dict"]["augmenter.position"]) == 6
    # a new process's model: anomalib's Engine restores the checkpoint, the augmenter continues at index 6
    resumed = _draem(textures)
    resumed.augmenter = AnomalibAugmenter("cutpaste", seed=3)
    _engine(tmp_path / "resumed", max_steps=5).fit(resumed, datamodule=_folder(root), ckpt_path=str(checkpoint))
    assert int(resumed.augmenter.position) == 10 and resumed.augmenter.last_indices == [8, 9]
    assert not no_network


def test_synthetic_split_through_the_datamodule(tmp_path):
    require("anomalib.data")
    from anomalib.data import Folder
    from anomalib.data.utils.split import random_split

    write_surfaces(tmp_path / "bottle" / "train" / "good", 12)

    def datamodule(name):
        dm = Folder(name="surfaces", root=tmp_path / "bottle", normal_dir="train/good", val_split_mode="synthetic",
                    test_split_mode="synthetic", test_split_ratio=0.34, val_split_ratio=0.5, seed=0,
                    train_batch_size=2, eval_batch_size=4, num_workers=0)
        return use_synthetic_split(dm, "cutpaste", seed=1, root=tmp_path / name)

    dm = datamodule("synthetic")
    dm.setup()
    test, val = dm.test_data.samples, dm.val_data.samples
    assert type(dm.test_data).__name__ == type(dm.val_data).__name__ == "DefectforgeSyntheticDataset"
    assert (len(dm.train_data), len(test), len(val)) == (4, 4, 4)  # 12 - 4 for testing, then half for validation
    assert (test.label_index == 1).sum() == 2 and (val.label_index == 1).sum() == 2
    assert not set(dm.train_data.samples.image_path) & (set(test.image_path) | set(val.image_path))
    cutpaste = defectforge.create("cutpaste", anomaly_probability=1.0)
    indices = []
    for dataset in (dm.test_data, dm.val_data):
        for k in range(len(dataset)):
            item = dataset[k]
            if int(item.gt_label) == 0:
                assert not item.gt_mask.any()
                continue
            index = int(str(item.image_path).rsplit("/", 1)[1][:-4])
            indices.append(index)
            mask = item.gt_mask.numpy().astype(bool)
            assert mask.any() and mask.shape == (64, 64)
            assert np.array_equal(mask, _mask(item.mask_path))
    assert sorted(indices) == [0, 1, 2, 3]  # the test split's anomalies, then the validation split's
    # each anomaly is the method's sample of that index, made from a normal image of the split
    sources = {}
    for path in dm.test_data.samples.image_path.tolist() + dm.val_data.samples.image_path.tolist():
        if "abnormal" not in path:
            continue
        index = int(path.rsplit("/", 1)[1][:-4])
        made = _chw(path)
        matches = [p for p in sorted((tmp_path / "bottle" / "train" / "good").glob("*.png"))
                   if torch.equal(cutpaste(_chw(p)[None], seed=1, indices=[index]).images[0], made)]
        assert len(matches) == 1, path
        sources[index] = matches[0]
    assert len(set(sources.values())) == 4
    # the datamodule's loaders give anomalib batches with masks
    batch = next(iter(dm.test_dataloader()))
    assert batch.gt_mask.shape == (4, 64, 64) and int(batch.gt_label.sum()) == 2
    assert int(batch.gt_mask.flatten(1).any(1).sum()) == 2
    # seeded: a second datamodule writes the same files (a copy of it, which splits itself)
    again = copy.deepcopy(datamodule("again"))
    again.setup()
    assert type(again.test_data).__name__ == "DefectforgeSyntheticDataset"
    for name in ("test", "val"):
        first = sorted((tmp_path / "synthetic" / name).rglob("*.png"))
        second = sorted((tmp_path / "again" / name).rglob("*.png"))
        assert [p.relative_to(tmp_path / "synthetic") for p in first] == \
               [p.relative_to(tmp_path / "again") for p in second]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first, second))
    # the dataset on its own: any anomalous ratio, refuses anomalous sources
    normal, _ = random_split(dm.train_data, 0.5, seed=0)
    whole = synthetic_dataset(normal, "cutout", seed=0, anomalous_ratio=1.0, root=tmp_path / "whole")
    assert (whole.samples.label_index == 1).all()
    with pytest.raises(ValueError, match="normal images only"):
        synthetic_dataset(dm.test_data, "cutout")
