"""anomalib 2.x: DRAEM's augmenter and the synthetic validation / test split, with any defectforge method.

**DRAEM's augmenter.**

anomalib 2.x's ``Draem.training_step`` calls ``augmented_image, anomaly_mask = self.augmenter(images)``
on the float ``(B, C, H, W)`` training batch (anomalib's ``PerlinAnomalyGenerator`` by default).
:class:`AnomalibAugmenter` has that call signature::

    from anomalib.models import Draem
    from defectforge.integrations.anomalib import AnomalibAugmenter

    model = Draem(dtd_dir="/data/dtd")   # an existing folder: anomalib downloads DTD otherwise
    model.augmenter = AnomalibAugmenter("glass_las", seed=0)

It detaches the batch (synthesis is not differentiable), synthesises in float32 (half and bfloat16
batches are cast there and back), returns masks ``(B, 1, H, W)`` in the batch's dtype and device,
and takes new sample indices on every call (an :class:`~defectforge.pipelines.stream.AnomalyStream`),
offset by the distributed rank so that no two processes make the same sample. The position is a
buffer, so it is saved in (and restored from) the model's checkpoints.

**The synthetic split.** When a dataset has no real anomalies, anomalib's datamodules can make a
validation or test split of synthetic ones (``val_split_mode="synthetic"``,
``test_split_mode="synthetic"``): anomalib 2.x takes normal images (``val_split_ratio`` of the training
set; for the test split the dataset's normal test images, or ``test_split_ratio`` of the training set),
turns half of them (an unseeded choice) into anomalies with its Perlin generator and writes them to a
temporary folder. :func:`use_synthetic_split` makes a datamodule do the same with a defectforge method,
seeded: the same files every time, a mask for every anomaly::

    from anomalib.data import Folder
    from defectforge.integrations.anomalib import use_synthetic_split

    datamodule = Folder(name="bottle", root="/data/bottle", normal_dir="train/good",
                        val_split_mode="synthetic", test_split_mode="synthetic", test_split_ratio=0.2)
    use_synthetic_split(datamodule, "glass_las", seed=0)   # before setup(): anomalib's Engine calls it

:func:`synthetic_dataset` is the step on its own: an anomalib dataset of normal images in, the same
images with a share turned into anomalies (image and mask files) out.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..pipelines.stream import AnomalyStream

__all__ = ["AnomalibAugmenter", "synthetic_dataset", "use_synthetic_split"]


def _synthesizer(synthesizer, overrides: dict):
    """A built synthesizer, or one made from a registry name (every sample anomalous unless overridden)."""
    if isinstance(synthesizer, str):
        from ..core.registry import create

        overrides.setdefault("anomaly_probability", 1.0)
        return create(synthesizer, **overrides)
    if overrides:
        raise TypeError("constructor arguments go with a method name, not a built synthesizer")
    return synthesizer


class AnomalibAugmenter(torch.nn.Module):
    """``augmented, mask = augmenter(images)`` with any defectforge method (see the module docstring).

    Parameters
    ----------
    synthesizer : Synthesizer or str
        A synthesizer or a registry name. Names are built with ``anomaly_probability=1`` unless
        ``overrides`` say otherwise (anomalib's generator also makes every sample anomalous).
    seed : int
        Run seed; sample ``i`` depends on ``(seed, i)`` only.
    mean, std : sequence of float, optional
        When the batch is normalised (``(x - mean) / std``), the values used, so that the
        synthesis sees ``[0, 1]`` images; the result is normalised again.
    rank, world_size : int, optional
        Fixed share of the index space; by default ``torch.distributed``'s at each call.
    **overrides
        Constructor arguments of the method.

    Examples
    --------
    >>> import torch
    >>> aug = AnomalibAugmenter("cutpaste", seed=0)
    >>> images = torch.rand(2, 3, 64, 64, requires_grad=True)
    >>> augmented, mask = aug(images)
    >>> augmented.requires_grad, tuple(mask.shape), int(aug.position)
    (False, (2, 1, 64, 64), 2)
    >>> sorted(aug.state_dict())
    ['position']
    """

    def __init__(self, synthesizer="draem", seed: int = 0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, rank: int | None = None, world_size: int | None = None,
                 **overrides):
        super().__init__()
        synthesizer = _synthesizer(synthesizer, overrides)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std (the batch's normalisation), or neither")
        self._stream = AnomalyStream(synthesizer, seed=seed, rank=rank, world_size=world_size)
        self.register_buffer("position", torch.zeros((), dtype=torch.long))
        self._norm = None if mean is None else (torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                                                 torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def synthesizer(self):
        return self._stream.synthesizer

    @property
    def last_indices(self) -> list[int]:
        """Global sample indices of the last call's batch."""
        return self._stream.last_indices

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not torch.is_tensor(images) or images.dim() != 4:
            raise ValueError(f"images must be a (B, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"anomalib passes float batches; got {images.dtype} (convert with images.float() / 255)")
        x = images.detach().to(torch.float32)
        if self._norm is not None:
            mean, std = (t.to(x.device) for t in self._norm)
            x = x * std + mean
        x = x.clamp(0.0, 1.0)
        self._stream.position = int(self.position)  # a loaded checkpoint sets the buffer
        out = self._stream(x)
        self.position.fill_(self._stream.position)
        augmented = out.images
        if self._norm is not None:
            augmented = (augmented - mean) / std
        return augmented.to(images.dtype), out.masks.to(device=images.device, dtype=images.dtype)


_DATASET_CLASS = []


def _dataset_class():
    """``DefectforgeSyntheticDataset``, an ``AnomalibDataset`` subclass, defined on first use (anomalib is
    optional) under this module's name, so that pickling datasets (DataLoader workers) finds it."""
    if not _DATASET_CLASS:
        from anomalib.data.datasets.base.image import AnomalibDataset

        class DefectforgeSyntheticDataset(AnomalibDataset):
            """Normal images and defectforge's synthetic anomalies made from some of them."""

        DefectforgeSyntheticDataset.__module__ = __name__
        DefectforgeSyntheticDataset.__qualname__ = "DefectforgeSyntheticDataset"
        _DATASET_CLASS.append(DefectforgeSyntheticDataset)
    return _DATASET_CLASS[0]


def __getattr__(name: str):
    if name == "DefectforgeSyntheticDataset":
        return _dataset_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _temporary_root() -> Path:
    """A folder for synthetic files, removed when the interpreter exits."""
    import atexit
    import shutil
    import tempfile

    root = tempfile.mkdtemp(prefix="defectforge-anomalib-")
    atexit.register(shutil.rmtree, root, True)
    return Path(root)


def synthetic_dataset(normal_dataset, synthesizer="draem", seed: int = 0, anomalous_ratio: float = 0.5,
                      root: str | os.PathLike | None = None, first_index: int = 0, **overrides):
    """An anomalib dataset: ``normal_dataset`` with a seeded share of its images made anomalous, with masks.

    Parameters
    ----------
    normal_dataset : anomalib.data.datasets.base.AnomalibDataset
        Normal images only (``label_index`` 0).
    synthesizer : Synthesizer or str
        A synthesizer or a registry name (built with ``anomaly_probability=1`` unless ``overrides``
        say otherwise).
    seed : int
        Run seed: which images become anomalies and every random choice of their synthesis.
    anomalous_ratio : float
        Share of the images turned into anomalies (anomalib's synthetic split uses 0.5).
    root : path, optional
        Where the anomalous images (``abnormal/``) and masks (``ground_truth/``) are written; by
        default a temporary folder removed when Python exits.
    first_index : int
        Sample index of the first anomalous image (the ``k``-th is ``first_index + k``, in the order
        of the dataset's image paths): two splits with different ranges never share an anomaly.
    **overrides
        Constructor arguments of the method.

    Returns
    -------
    anomalib.data.datasets.base.AnomalibDataset
        A segmentation dataset with the normal dataset's augmentations: the untouched images as
        normal samples, the anomalous ones with ``label_index`` 1 and a mask. A sample the method
        left normal (an ``anomaly_probability`` below 1) stays a normal sample of the original image.
    """
    import pandas as pd

    from ..core.validation import check_probability
    from ..io.images import read_image, write_image

    check_probability("anomalous_ratio", anomalous_ratio)
    synth = _synthesizer(synthesizer, dict(overrides))
    samples = normal_dataset.samples
    if "label_index" in samples and (samples["label_index"] == 1).any():
        raise ValueError("the source dataset holds anomalous samples: give normal images only")
    source = samples.filter(["image_path", "label", "label_index", "mask_path", "split"]).sort_values(
        "image_path", ignore_index=True)
    n_anomalous = int(anomalous_ratio * len(source))
    chosen = sorted(np.random.default_rng(seed).permutation(len(source))[:n_anomalous].tolist())
    index_of = {position: first_index + k for k, position in enumerate(chosen)}
    root = Path(root) if root is not None else _temporary_root()
    rows = []
    for k, row in enumerate(source.itertuples(index=False)):
        record = row._asdict()
        record.setdefault("label", "normal")
        record.setdefault("label_index", 0)
        record.setdefault("mask_path", "")
        if k in index_of:
            index = index_of[k]
            image = torch.from_numpy(read_image(record["image_path"], channels=3).copy()).permute(2, 0, 1)[None]
            out = synth(image, seed=seed, indices=[index])
            if int(out.labels[0]):
                name = f"{index:06d}.png"
                write_image(root / "abnormal" / name, out.images[0].permute(1, 2, 0).numpy())
                write_image(root / "ground_truth" / name, (out.masks[0, 0].numpy() > 0).astype(np.uint8) * 255)
                record.update(image_path=str(root / "abnormal" / name), label="abnormal", label_index=1,
                              mask_path=str(root / "ground_truth" / name))
        rows.append(record)
    dataset = _dataset_class()(augmentations=normal_dataset.augmentations)
    frame = pd.DataFrame(rows, columns=["image_path", "label", "label_index", "mask_path", "split"])
    frame.attrs["task"] = "segmentation"
    dataset.samples = frame
    dataset.samples.attrs["task"] = "segmentation"  # the setter sorts, and a sorted copy may drop attrs
    return dataset


def use_synthetic_split(datamodule, synthesizer="draem", seed: int = 0, anomalous_ratio: float = 0.5,
                        root: str | os.PathLike | None = None, **overrides):
    """Make ``datamodule``'s synthetic validation / test splits with a defectforge method.

    Call it before ``setup()`` (anomalib's ``Engine`` calls ``setup``). The splits that are
    ``"synthetic"`` take their normal images as anomalib 2.x does (see the module docstring) and are
    made by :func:`synthetic_dataset`: the test split's anomalies are sample indices ``0, 1, ...``,
    the validation split's continue after them. Other split modes are left to anomalib.

    Parameters
    ----------
    datamodule : anomalib.data.datamodules.base.AnomalibDataModule
        An image datamodule (``Folder``, ``MVTecAD`` ...), not set up yet.
    synthesizer, seed, anomalous_ratio, root, **overrides
        As in :func:`synthetic_dataset` (``root`` gets ``test/`` and ``val/`` subfolders).

    Returns
    -------
    The same datamodule.
    """
    import types

    from anomalib.data.utils.split import TestSplitMode, ValSplitMode, random_split, split_by_label

    synth = _synthesizer(synthesizer, dict(overrides))
    base = Path(root) if root is not None else None
    anomalib_steps = type(datamodule)

    def split_root(name: str):
        return None if base is None else base / name

    # methods of the instance (not closures over it), so that a copied datamodule splits itself
    def create_test_split(self) -> None:
        self._defectforge_test_anomalies = 0
        if TestSplitMode(self.test_split_mode) != TestSplitMode.SYNTHETIC:
            anomalib_steps._create_test_split(self)
            return
        if self.test_data.has_normal:
            normal, _real_anomalies = split_by_label(self.test_data)  # anomalib's synthetic split drops them too
        elif self.test_split_ratio:
            self.train_data, normal = random_split(self.train_data, self.test_split_ratio, seed=self.seed)
        else:
            raise ValueError("test_split_mode='synthetic' needs normal test images or a test_split_ratio")
        self.test_data = synthetic_dataset(normal, synth, seed, anomalous_ratio, split_root("test"))
        self._defectforge_test_anomalies = int(anomalous_ratio * len(normal.samples))

    def create_val_split(self) -> None:
        if ValSplitMode(self.val_split_mode) != ValSplitMode.SYNTHETIC:
            anomalib_steps._create_val_split(self)
            return
        self.train_data, normal = random_split(self.train_data, self.val_split_ratio, seed=self.seed)
        self.val_data = synthetic_dataset(normal, synth, seed, anomalous_ratio, split_root("val"),
                                          first_index=getattr(self, "_defectforge_test_anomalies", 0))

    datamodule._create_test_split = types.MethodType(create_test_split, datamodule)
    datamodule._create_val_split = types.MethodType(create_val_split, datamodule)
    return datamodule
