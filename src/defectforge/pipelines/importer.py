"""``defectforge import FORMAT SRC OUT``: a labelled set written as an MVTec-AD category.

The output is what every command of this library and anomalib's ``Folder`` read::

    OUT/train/good/<name>             normal images: the training share
    OUT/test/good/<name>              normal images: the held-out share
    OUT/test/<type>/<name>            every defect image, under its type (``combined``: several types)
    OUT/ground_truth/<type>/<stem>_mask.png   its mask, 0/255 (every region of the image)
    OUT/import.json                   the record: source, format, split rule, seed, every file's origin

Image files are copied byte for byte (their names kept); an image whose stored orientation is not
the decoded one (an EXIF rotation) is written decoded, as PNG, so the mask and the file agree for
every reader. Masks are drawn by the format's rule (:mod:`defectforge.io.annotations`).

Split of the normal images (defect images are all test images, as in MVTec AD): the normal
images are grouped (``group``: a regular expression searched in each image's file stem; its
first capture group, or the whole match, is the group key; a file without a match is a group of
its own), the groups sorted by key and permuted by ``numpy.random.default_rng(seed)``;
groups go to ``test/good`` in that order until it holds at least ``round(test_fraction * n)``
images (at least one; at least one group stays for training), the rest to ``train/good``. A group
never straddles the split, so near-duplicates named alike (``part12_a.png``, ``part12_b.png`` with
``--group 'part(\\d+)'``) stay on one side.

Everything is read, drawn and checked before the first file is written: a bad input writes
nothing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..io.annotations import IMPORT_RECORD, AnnotatedImage, AnnotationError, read_annotations
from ..io.files import atomic_write, atomic_write_text
from ..io.images import encode_png, read_image

__all__ = ["import_dataset", "split_normals", "DEFAULT_TEST_FRACTION"]

#: Share of the normal images written to ``test/good`` (MVTec AD's categories hold 10-40%).
DEFAULT_TEST_FRACTION = 0.2


def _group_key(name: str, pattern: re.Pattern | None) -> str:
    # searched in the file's stem: the folders a file sits in do not make its group
    found = pattern.search(Path(name).stem) if pattern is not None else None
    if found is None:
        return "\0" + name  # a group of its own
    return found.group(1) if pattern.groups else found.group(0)


def split_normals(names: list[str], test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0,
                  group: str | None = None) -> tuple[list[str], list[str], dict[str, str]]:
    """``(train, test, {name: group key})``: the seeded, grouped split of the normal images (module docstring).

    Examples
    --------
    >>> names = ["p1_a.png", "p1_b.png", "p2_a.png", "p2_b.png", "p3_a.png", "p3_b.png"]
    >>> train, test, keys = split_normals(names, 0.3, seed=0, group=r"p(\\d+)_")
    >>> len(test), {keys[n] for n in test} & {keys[n] for n in train}
    (2, set())
    """
    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test fraction {test_fraction!r} must lie between 0 and 1 (e.g. 0.2)")
    try:
        pattern = re.compile(group) if group else None
    except re.error as exc:
        raise ValueError(f"--group {group!r} is not a regular expression ({exc}); e.g. 'part(\\d+)_'") from None
    keys = {n: _group_key(n, pattern) for n in names}
    groups: dict[str, list[str]] = {}
    for n in sorted(names):
        groups.setdefault(keys[n], []).append(n)
    if len(groups) < 2:
        raise ValueError(f"the {len(names)} normal images form {len(groups)} group(s); train/good and test/good "
                         "need one each: add normal images, or a --group pattern that makes at least 2 groups")
    order = [sorted(groups)[int(i)] for i in np.random.default_rng(int(seed)).permutation(len(groups))]
    target = max(1, int(round(float(test_fraction) * len(names))))
    test: list[str] = []
    for k, key in enumerate(order):
        if len(test) >= target or k == len(order) - 1:
            break
        test += groups[key]
    train = sorted(set(names) - set(test))
    return train, sorted(test), keys


def _check_output(source: Path, output: Path) -> None:
    src, out = source.resolve(), output.resolve()
    src_dir = src if src.is_dir() else src.parent
    if out == src_dir or src_dir in out.parents or out in src_dir.parents:
        raise ValueError(f"OUT {output} is, holds or lies inside the source {source}; give a folder outside it")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"OUT {output} exists and is not empty; give a new folder (nothing was written)")


def _decoded_differs(path: Path, shape: tuple[int, int]) -> bool:
    from PIL import Image

    with Image.open(path) as im:
        return (im.height, im.width) != shape


def import_dataset(source: str | os.PathLike, output: str | os.PathLike, format: str | None = None, *,
                   test_fraction: float = DEFAULT_TEST_FRACTION, seed: int = 0, group: str | None = None,
                   image_root=None) -> dict[str, Any]:
    """Write the labelled set ``source`` (``format``: detected when ``None``) as an MVTec-AD category.

    Returns the record written to ``OUT/import.json``.

    Raises
    ------
    ValueError
        Bad input or output, one line naming the file and the fix; nothing is written.
    """
    source, output = Path(source).expanduser(), Path(output).expanduser()
    _check_output(source, output)
    labelled = read_annotations(source, format, image_root)
    defects, normals = labelled.defects, labelled.normals
    if not defects:
        raise ValueError(f"{labelled.source} holds no annotated defect ({len(normals)} images, read as "
                         f"{labelled.format}); label some, or name the format if it was detected wrongly")
    train, test, keys = split_normals([im.name for im in normals], test_fraction, seed, group)
    test_set = set(test)
    plan: dict[str, AnnotatedImage] = {}
    for im in labelled.images:
        folder = f"test/{im.group}" if not im.normal else ("test/good" if im.name in test_set else "train/good")
        target = f"{folder}/{Path(im.name).name}"
        if target in plan:
            raise AnnotationError(f"{im.path} and {plan[target].path} would both be {target}: images in different "
                                  "folders share a name; rename one")
        plan[target] = im
    # read, draw and check everything before writing anything
    masks: dict[str, bytes] = {}
    decode: set[str] = set()
    kinds: dict[str, set[str]] = {}
    check_empty = labelled.format != "mvtec"
    for target, im in plan.items():
        h, w = read_image(im.path).shape[:2]  # decoded as every command decodes it
        if im.normal:
            if im.size is not None and tuple(im.size) != (h, w):
                raise AnnotationError(f"{im.source}: says the image is {im.size[1]}x{im.size[0]} (w x h), but "
                                      f"{im.path} is {w}x{h}; fix the size in the annotation")
        else:
            drawn = im.type_masks(h, w, check_empty=check_empty)
            union = np.logical_or.reduce(list(drawn.values()))
            if not union.any():
                raise AnnotationError(f"{im.source}: the mask of {im.path} is empty; delete the annotation or "
                                      "redraw it")
            masks[target] = encode_png(union.astype(np.uint8) * 255)
            kinds.setdefault(im.group, set()).add(im.mask_kind)
        if _decoded_differs(im.path, (h, w)):
            decode.add(target)
    files = {}
    for target, im in sorted(plan.items()):
        written = str(Path(target).with_suffix(".png")) if target in decode else target
        if target in decode:
            atomic_write(output / written, encode_png(read_image(im.path)))
        else:
            with open(im.path, "rb") as fh:
                atomic_write(output / written, lambda out, fh=fh: shutil.copyfileobj(fh, out))
        entry: dict[str, Any] = {"source": im.name}
        if not im.normal:
            group_name = Path(target).parent.name
            mask_rel = f"ground_truth/{group_name}/{Path(target).stem}_mask.png"
            atomic_write(output / mask_rel, masks[target])
            entry.update(mask=mask_rel, types=im.types, mask_kind=im.mask_kind)
        elif group:
            entry["group"] = keys[im.name].removeprefix("\0")
        files[written] = entry
    mask_kinds = {t: (k.pop() if len(k) == 1 else "mixed") for t, k in sorted(kinds.items())}
    record = {
        "source": str(Path(labelled.source).resolve()), "format": labelled.format, "classes": labelled.classes,
        "split": {"seed": int(seed), "test_fraction": float(test_fraction), "group": group,
                  "rule": "normal images grouped by --group searched in the file stem (first capture group, or "
                          "the match; no match: a group of its own), groups sorted and permuted by "
                          "numpy.random.default_rng(seed), test/good takes "
                          "groups until it holds round(test_fraction * n) images (at least 1, 1 group left); "
                          "defect images are all test images",
                  "train_good": len(train), "test_good": len(test)},
        "mask_kinds": mask_kinds,
        "files": files,
    }
    atomic_write_text(output / IMPORT_RECORD, json.dumps(record, indent=1) + "\n")
    return record
