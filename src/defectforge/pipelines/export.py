"""Export a generated dataset for other tools: COCO, YOLO segmentation, anomalib's ``Folder``.

The input is a folder written by :func:`defectforge.pipelines.generate.generate` (its
``manifest.jsonl`` lists every sample, its image, mask, label and method). Each format:

``coco``
    One ``annotations.json`` (COCO instance segmentation, Lin et al., ECCV 2014, format of
    cocodataset.org "Data format"): one image entry per sample (normal samples included, without
    annotations), one annotation per 8-connected component of each mask, its ``segmentation`` a
    compressed RLE made by ``pycocotools.mask.encode``, ``bbox`` ``[x, y, w, h]`` and ``area`` from
    that RLE, ``iscrowd`` 0. Categories (``categories``): ``type``, the defect types of a
    real-defect run (the manifest's ``defect.type``; other samples keep their method), ``method``
    (one per method of a ``--mix`` run), a single ``anomaly``, or ``auto`` (the default: ``type``
    when the run recorded defect types, else ``method``). ``file_name`` is relative to the dataset folder, which is the image root.
``yolo-seg``
    Ultralytics' segmentation layout (docs.ultralytics.com/datasets/segment): ``images/{train,val}/``
    (hard links to the dataset's PNGs where the file system allows, copies otherwise),
    ``labels/{train,val}/<name>.txt`` with one line ``class x1 y1 x2 y2 ...`` per connected
    component (its outer contour with each hole joined by a zero-width bridge, so the polygon
    rasterises with its holes; coordinates divided by the image width / height), empty files for
    normal images (background images), and ``data.yaml`` (``path``, ``train``, ``val``, ``names``).
    The split is a seeded permutation of the samples.
``anomalib``
    The arguments of anomalib 2.x's ``anomalib.data.Folder``: the real training normals as
    ``normal_dir`` (in anomalib 2.x ``normal_dir`` is the *training* set), ``test/good`` as
    ``normal_test_dir``, and the synthetic anomalies and masks as lists of folders (one per
    method), written as ``folder.yaml`` (``data: class_path / init_args``, the LightningCLI form)
    and as the Python call in ``folder.py``.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.validation import check_choice, check_probability
from ..io.files import atomic_write_text, write_json
from .dataset_objects import (category_names, category_of, component_polygon, image_size_hw, mask_components,
                              progress_over, read_manifest, read_mask, resolve_categories)

# read_manifest, mask_components and component_polygon were first defined here; callers keep importing them
__all__ = ["FORMATS", "read_manifest", "export", "export_coco", "export_yolo_seg", "export_anomalib",
           "mask_components", "component_polygon", "SameImagesWarning"]

FORMATS = ("coco", "yolo-seg", "anomalib")


class SameImagesWarning(UserWarning):
    """The synthetic samples were made from the images that will train the model."""


def _require_pycocotools():
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise ImportError("the COCO export encodes masks with pycocotools, which is not installed; "
                          "pip install 'defectforge[export]' (or pip install pycocotools)") from None
    return mask_utils


def export_coco(dataset: str | os.PathLike, output: str | os.PathLike, categories: str = "auto",
                progress: bool = False) -> dict:
    """Write ``output/annotations.json`` (COCO instance segmentation, RLE); returns a summary.

    Images are not copied: ``file_name`` is relative to ``dataset`` (pass it as the image root).
    """
    mask_utils = _require_pycocotools()
    dataset, output = Path(dataset), Path(output)
    samples, _ = read_manifest(dataset)
    categories = resolve_categories(samples, categories)
    names = category_names(samples, categories)
    category_id = {n: k + 1 for k, n in enumerate(names)}
    images, annotations = [], []
    for sample in progress_over(samples, progress, "export coco"):
        image_path = dataset / sample["image_path"]
        h, w = image_size_hw(image_path)
        image_id = int(sample["index"]) + 1
        images.append({"id": image_id, "file_name": sample["image_path"], "height": h, "width": w,
                       "defectforge_label": int(sample["label"]), "defectforge_method": sample["method"]})
        if not (sample.get("label") and sample.get("mask_path")):
            continue
        cat = category_id[category_of(sample, categories)]
        for component in mask_components(read_mask(dataset / sample["mask_path"])):
            rle = mask_utils.encode(np.asfortranarray(component.astype(np.uint8)))
            bbox = [float(v) for v in mask_utils.toBbox(rle)]
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                "segmentation": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)), "bbox": bbox, "iscrowd": 0,
            })
    coco = {
        "info": {"description": f"defectforge synthetic defects exported from {dataset}",
                 "image_root": str(dataset.resolve())},
        "images": images, "annotations": annotations,
        "categories": [{"id": category_id[n], "name": n, "supercategory": "defect"} for n in names],
    }
    output.mkdir(parents=True, exist_ok=True)
    write_json(output / "annotations.json", coco, indent=None)
    return {"format": "coco", "output": str(output / "annotations.json"), "images": len(images),
            "annotations": len(annotations), "categories": names}


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def export_yolo_seg(dataset: str | os.PathLike, output: str | os.PathLike, val_fraction: float = 0.2,
                    seed: int = 0, categories: str = "auto", progress: bool = False) -> dict:
    """Write an Ultralytics YOLO segmentation dataset (images, labels, ``data.yaml``) to ``output``."""
    import yaml

    check_probability("val_fraction", val_fraction)
    dataset, output = Path(dataset), Path(output)
    samples, _ = read_manifest(dataset)
    categories = resolve_categories(samples, categories)
    names = category_names(samples, categories)
    class_id = {n: k for k, n in enumerate(names)}
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = int(round(val_fraction * len(samples)))
    val = {int(samples[k]["index"]) for k in order[:n_val]}
    counts = {"train": 0, "val": 0}
    polygons = 0
    for sample in progress_over(samples, progress, "export yolo-seg"):
        split = "val" if int(sample["index"]) in val else "train"
        counts[split] += 1
        # one flat name per sample: the method folder joins the index (test/draem/000012.png -> draem_000012)
        stem = Path(sample["image_path"]).parent.name + "_" + Path(sample["image_path"]).stem
        _link_or_copy(dataset / sample["image_path"], output / "images" / split / (stem + ".png"))
        lines = []
        if sample.get("label") and sample.get("mask_path"):
            mask = read_mask(dataset / sample["mask_path"])
            h, w = mask.shape
            cls = class_id[category_of(sample, categories)]
            for component in mask_components(mask):
                poly = component_polygon(component).astype(np.float64) / np.array([w, h], np.float64)
                lines.append(" ".join([str(cls)] + [f"{v:.6f}" for v in poly.reshape(-1)]))
        polygons += len(lines)
        atomic_write_text(output / "labels" / split / (stem + ".txt"), "".join(line + "\n" for line in lines))
    data = {"path": str(output.resolve()), "train": "images/train", "val": "images/val",
            "names": {k: n for k, n in enumerate(names)}}
    atomic_write_text(output / "data.yaml", yaml.safe_dump(data, sort_keys=False))
    return {"format": "yolo-seg", "output": str(output / "data.yaml"), "train": counts["train"], "val": counts["val"],
            "polygons": polygons, "categories": names}


def _same_images(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def anomalib_folder_arguments(dataset: str | os.PathLike, train_dir: str | os.PathLike,
                              name: str = "defectforge") -> dict[str, Any]:
    """The keyword arguments of anomalib 2.x ``Folder`` for a generated dataset and real training normals.

    Warns (:class:`SameImagesWarning`) when the synthetic samples were made from the images in
    ``train_dir``: the model then trains on the very images its test anomalies (and test normals)
    were made from, which inflates every test metric.
    """
    from ..io.inputs import resolve_input_folder

    dataset, train_dir = Path(dataset).resolve(), Path(train_dir)
    if not train_dir.is_dir():
        raise NotADirectoryError(f"--train-dir {train_dir} is not a folder; give the folder of real normal "
                                 "training images (an MVTec category's train/good)")
    train_dir = resolve_input_folder(train_dir).resolve()
    samples, config = read_manifest(dataset)
    methods = sorted({s["method"] for s in samples if s.get("label") and s.get("mask_path")})
    has_good = any(not s.get("label") for s in samples)
    source = (config.get("inputs") or {}).get("root")
    if source and _same_images(Path(source), train_dir):
        warnings.warn(f"the synthetic samples in {dataset} were made from {source}, the same images as "
                      f"--train-dir {train_dir}: the model would train on the images its test set was made "
                      "from. Generate from held-out normal images (or train on others)", SameImagesWarning,
                      stacklevel=2)
    if not has_good:
        warnings.warn(f"{dataset} holds no normal test images (test/good): anomalib will split "
                      "normal_split_ratio of the training normals off for testing; run generate "
                      "--normal-ratio 0.2 (say) for synthetic-run test normals", UserWarning, stacklevel=2)
    args: dict[str, Any] = {
        "name": name, "root": str(dataset), "normal_dir": str(train_dir),
        "abnormal_dir": [f"test/{m}" for m in methods],
        "mask_dir": [f"ground_truth/{m}" for m in methods],
    }
    if has_good:
        args["normal_test_dir"] = "test/good"
    return args


def export_anomalib(dataset: str | os.PathLike, output: str | os.PathLike, train_dir: str | os.PathLike,
                    name: str = "defectforge") -> dict:
    """Write ``folder.yaml`` and ``folder.py`` (anomalib 2.x ``Folder`` datamodule) to ``output``."""
    import yaml

    output = Path(output)
    args = anomalib_folder_arguments(dataset, train_dir, name)
    atomic_write_text(output / "folder.yaml",
                      yaml.safe_dump({"data": {"class_path": "anomalib.data.Folder", "init_args": args}},
                                     sort_keys=False))
    call = ",\n    ".join(f"{k}={v!r}" for k, v in args.items())
    atomic_write_text(output / "folder.py", "from anomalib.data import Folder\n\n"
                      f"datamodule = Folder(\n    {call},\n)\n")
    return {"format": "anomalib", "output": str(output / "folder.yaml"), "arguments": args}


def export(dataset: str | os.PathLike, output: str | os.PathLike, format: str, *, train_dir=None,
           val_fraction: float = 0.2, seed: int = 0, categories: str = "auto", progress: bool = False) -> dict:
    """Export ``dataset`` to ``output`` in ``format`` (one of :data:`FORMATS`); returns a summary."""
    check_choice("format", format, FORMATS)
    if format == "coco":
        return export_coco(dataset, output, categories, progress)
    if format == "yolo-seg":
        return export_yolo_seg(dataset, output, val_fraction, seed, categories, progress)
    if train_dir is None:
        raise ValueError("--format anomalib needs --train-dir: the real normal images the model trains on "
                         "(anomalib 2.x's Folder takes them as normal_dir)")
    return export_anomalib(dataset, output, train_dir)
