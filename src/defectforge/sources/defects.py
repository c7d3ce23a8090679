"""A bank of real defects (image crop + mask) and the few-shot split that keeps test defects out.

Real defects come from any labelled set :mod:`defectforge.io.annotations` reads, its format
detected or named (``format``): an MVTec-AD category (``test/<type>/<stem>.*`` with
``ground_truth/<type>/<stem>_mask.*``; Bergmann et al., CVPR 2019), a folder of image/mask pairs
(``<stem>.*`` beside ``<stem>_mask.*`` or ``_gt``; the defect type is the name of the folder
holding the pair, ``defect`` for pairs at the top), labelme JSONs, a COCO JSON or a YOLO-seg
folder (the labels' classes are the types). Every connected component (8-connected) of a type's
mask whose area is at least ``min_area`` pixels becomes one :class:`DefectEntry`: its type,
its source file, its component number, the crop around it (with a margin of the surrounding
surface, used for colour matching and blending) and its mask. A component drawn from a box
(COCO ``bbox`` without segmentation, a YOLO detection line, a labelme rectangle) is flagged
``mask_kind = "box"``; the samples made from it record that.

Few-shot split (the generative papers' protocol: AnomalyDiffusion, DualAnoDiff and DFMGAN give
one third of each defect type's real anomalies, image and mask, to the generator and test on the
other two thirds; AnomalyDiffusion, Hu et al., AAAI 2024): per defect type
the *source images* are split, never single components, so no pixel of a test image can reach
synthesis (an image with defects of several types is split as one group, ``combined``, the name
MVTec AD gives such images). The split is a seeded permutation (``split_seed``) of each type's sorted file list,
``floor(fraction * n)`` images (at least 1, and at least 1 left for testing when ``n >= 2``) or
a count per type go to training. It is written as JSON (:meth:`FewShotSplit.save`, by default
``fewshot_split.json`` next to the output) and reused when it exists, so a later run sees the
same split. Only the training images are ever read: the bank never opens a test-split file.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ..core.seeding import Stream, sample_rng
from ..core.validation import check_range
from ..io.images import IMAGE_EXTENSIONS, atomic_write_bytes, list_images, read_image

__all__ = ["DefectEntry", "DefectImage", "DefectBank", "FewShotSplit", "parse_few_shot", "find_defect_pairs",
           "SPLIT_FILE", "DEFAULT_MIN_AREA"]

#: Name of the split file written next to an output folder.
SPLIT_FILE = "fewshot_split.json"
#: Components smaller than this many pixels (at the source resolution) are not entries. Chosen
#: here: smaller blobs are mostly annotation noise and too small to transplant with a boundary.
DEFAULT_MIN_AREA = 16
_MASK_SUFFIX = "_mask"
_SPLIT_STREAM = int(Stream.FEW_SHOT_SPLIT)  # the split permutation's stream


# ---------------------------------------------------------------------------------------------
# the split

def parse_few_shot(spec) -> tuple[str, Fraction | int]:
    """Parse a few-shot spec: a fraction (``"1/3"``, ``"0.5"``, ``Fraction``) or a count per type.

    Returns ``("fraction", Fraction)`` or ``("count", int)``.

    Examples
    --------
    >>> parse_few_shot("1/3")
    ('fraction', Fraction(1, 3))
    >>> parse_few_shot("5")
    ('count', 5)
    """
    text = str(spec).strip()
    hint = "give a fraction such as 1/3 or 0.25 (share of each type's images), or a count such as 5"
    try:
        if "/" in text or "." in text:
            frac = Fraction(text).limit_denominator(1000)
            if not 0 < frac < 1:
                raise ValueError
            return "fraction", frac
        count = int(text)
        if count < 1:
            raise ValueError
        return "count", count
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"few_shot={spec!r} is not a valid few-shot spec; {hint}") from None


@dataclass
class FewShotSplit:
    """Per defect type, which source images feed synthesis (``train``) and which are held out (``test``).

    Paths are relative to ``root`` (POSIX form) so a split file moves with its data.
    """

    root: str
    spec: str
    split_seed: int
    train: dict[str, list[str]] = field(default_factory=dict)
    test: dict[str, list[str]] = field(default_factory=dict)
    group: str | None = None

    @classmethod
    def make(cls, root, files_by_type: dict[str, list[str]], spec, split_seed: int = 0,
             group: str | None = None, stream: int = _SPLIT_STREAM) -> "FewShotSplit":
        """Split each type's files (sorted first) by a permutation seeded with ``split_seed``.

        ``group``: a regular expression searched in each file's stem; files with the same key (its
        first capture group, else the whole match; a file without a match is a group of its own)
        stay on one side of the split, so near-duplicates (one spot photographed repeatedly) never
        sit on both. The groups are permuted instead of the files and taken for training, in that
        order, until the type's training count is reached (at least one group stays for testing).
        ``stream``: the random stream of the permutation (the benchmark's validation protocol
        splits the training part again with another).
        """
        kind, value = parse_few_shot(spec)
        keys = _group_keys(group)
        split = cls(str(root), str(spec), int(split_seed), group=group)
        for k, t in enumerate(sorted(files_by_type)):
            files = sorted(files_by_type[t])
            n = len(files)
            if kind == "fraction":
                n_train = max(1, int(value * n))
            else:
                n_train = int(value)
            if n >= 2:
                n_train = min(n_train, n - 1)
            groups: dict[str, list[int]] = {}
            for i, f in enumerate(files):
                groups.setdefault(keys(f), []).append(i)
            names = sorted(groups)
            order = sample_rng(int(split_seed), k, stream).permutation(len(names))
            chosen: set[int] = set()
            for g in order[:max(1, len(names) - 1)]:  # a group at least stays for testing
                if len(chosen) >= n_train:
                    break
                chosen.update(groups[names[int(g)]])
            split.train[t] = [files[i] for i in sorted(chosen)]
            split.test[t] = [files[i] for i in range(n) if i not in chosen]
        return split

    def as_dict(self) -> dict[str, Any]:
        return {"root": self.root, "few_shot": self.spec, "split_seed": self.split_seed,
                **({"group": self.group} if self.group is not None else {}),
                "protocol": "per defect type, source images split" + (" by group" if self.group else "")
                            + "; train feeds synthesis, test is held out",
                "train": self.train, "test": self.test}

    def save(self, path) -> None:
        atomic_write_bytes(path, (json.dumps(self.as_dict(), indent=1) + "\n").encode())

    @classmethod
    def load(cls, path) -> "FewShotSplit":
        try:
            data = json.loads(Path(path).read_text())
            return cls(data["root"], str(data["few_shot"]), int(data["split_seed"]),
                       {k: list(v) for k, v in data["train"].items()}, {k: list(v) for k, v in data["test"].items()},
                       data.get("group"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a readable few-shot split file ({exc}); delete it to make a new split") from exc

    def check_matches(self, files_by_type: dict[str, list[str]], spec, split_seed: int, path,
                      group: str | None = None) -> None:
        """Refuse a reused split made for other data or another spec."""
        problems = []
        if str(spec) != self.spec:
            problems.append(f"it was made with few_shot={self.spec!r}, not {str(spec)!r}")
        if int(split_seed) != self.split_seed:
            problems.append(f"it was made with split_seed={self.split_seed}, not {split_seed}")
        if group != self.group:
            problems.append(f"it was made with split group {self.group!r}, not {group!r}")
        for t, files in files_by_type.items():
            recorded = set(self.train.get(t, [])) | set(self.test.get(t, []))
            if recorded != set(files):
                problems.append(f"type {t!r} lists other files than the data folder holds")
        if problems:
            raise ValueError(f"{path}: the recorded few-shot split does not fit this run: " + "; ".join(problems)
                             + ". Use the same data and spec, or delete the file to make a new split")


def _group_keys(group: str | None):
    """The function mapping a file path to its split group (see :meth:`FewShotSplit.make`)."""
    if group is None:
        return lambda path: path
    try:
        pattern = re.compile(group)
    except re.error as exc:
        raise ValueError(f"split group {group!r} is not a regular expression ({exc}); e.g. "
                         "'_(\\d+_\\d+)_crop' keeps files that share those digits together") from None

    def key(path: str) -> str:
        stem = PurePosixPath(path).stem
        found = pattern.search(stem)
        if found is None:
            return "\0" + path  # a group of its own
        return found.group(1) if pattern.groups else found.group(0)

    return key


# ---------------------------------------------------------------------------------------------
# finding pairs

def _find_mask(folder: Path, stem: str) -> Path | None:
    if not folder.is_dir():
        return None
    for ext in sorted(IMAGE_EXTENSIONS):
        for candidate in (folder / f"{stem}{_MASK_SUFFIX}{ext}", folder / f"{stem}{_MASK_SUFFIX}{ext.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def find_defect_pairs(root) -> dict[str, list[tuple[str, str]]]:
    """``{type: [(image, mask), ...]}`` (paths relative to ``root``) of an MVTec category or a folder of pairs.

    Raises
    ------
    FileNotFoundError, ValueError
        When ``root`` is missing or holds no image with a mask (the message says the layouts).
    """
    root = Path(root).expanduser()
    hint = ("expected an MVTec-AD category (test/<type>/<stem>.png + ground_truth/<type>/<stem>_mask.png) "
            "or a folder of pairs <stem>.png + <stem>_mask.png (the pair's folder name is its type)")
    if not root.is_dir():
        raise FileNotFoundError(f"defect folder {root} does not exist or is not a folder; {hint}")
    pairs: dict[str, list[tuple[str, str]]] = {}
    if (root / "test").is_dir() and (root / "ground_truth").is_dir():
        for type_dir in sorted(p for p in (root / "test").iterdir() if p.is_dir() and p.name != "good"):
            for image in list_images(type_dir, recursive=False):
                mask = _find_mask(root / "ground_truth" / type_dir.name, image.stem)
                if mask is None:
                    warnings.warn(f"{image}: no mask in {root / 'ground_truth' / type_dir.name}; skipped", stacklevel=2)
                    continue
                pairs.setdefault(type_dir.name, []).append((image.relative_to(root).as_posix(),
                                                            mask.relative_to(root).as_posix()))
    else:
        for image in list_images(root, recursive=True):
            if image.stem.endswith(_MASK_SUFFIX):
                continue
            mask = _find_mask(image.parent, image.stem)
            if mask is None:
                continue
            rel = image.relative_to(root)
            t = rel.parent.name if rel.parent.name else "defect"
            pairs.setdefault(t, []).append((rel.as_posix(), mask.relative_to(root).as_posix()))
    if not pairs:
        raise ValueError(f"{root} holds no defect image with a mask; {hint}")
    return pairs


# ---------------------------------------------------------------------------------------------
# the bank

@dataclass
class DefectEntry:
    """One real defect: a connected component of a real mask, with the surface around it.

    Attributes
    ----------
    key : str
        ``"<source>#<component>"``, unique in a bank; recorded in every sample's params.
    defect_type : str
    source : str
        Image file (relative to the bank's root) or the name given to in-memory arrays.
    component : int
        Component number in the source mask (1-based, OpenCV's labelling order).
    image_size : (int, int)
        ``(H, W)`` of the source image; defects keep their size relative to it when placed.
    area : int
        Pixels of the component.
    crop : np.ndarray
        ``(h, w, 3)`` uint8 crop of the source image around the component (with a margin).
    mask : np.ndarray
        ``(h, w)`` bool: the component inside the crop.
    context : np.ndarray
        ``(h, w)`` bool: crop pixels that belong to no defect of the source image (the surface).
    box : (int, int, int, int)
        ``(y0, x0, y1, x1)`` of the component inside the crop.
    borders : tuple of str
        Sides of the source image the component touches (``"top"``, ``"bottom"``, ``"left"``,
        ``"right"``): a defect cut off by the image's edge (a break at the part's edge, say).
    mask_kind : str
        ``"pixel"`` (an outline or mask) or ``"box"`` (drawn from a bounding box: the mask is a
        rectangle around the defect, not its outline).
    """

    key: str
    defect_type: str
    source: str
    component: int
    image_size: tuple[int, int]
    area: int
    crop: np.ndarray
    mask: np.ndarray
    context: np.ndarray
    box: tuple[int, int, int, int]
    borders: tuple[str, ...] = ()
    mask_kind: str = "pixel"

    def layers(self) -> tuple[np.ndarray, np.ndarray]:
        """``(crop + component as 4 channels, surface + validity + 0 as 3 channels)``, uint8 0/255, cached.

        The warps of the real-defect methods move crop and masks together in one call each.
        """
        cached = self.__dict__.get("_layers")
        if cached is None:
            h, w = self.mask.shape
            first = np.empty((h, w, 4), np.uint8)
            first[..., :3] = self.crop
            first[..., 3] = self.mask * np.uint8(255)
            second = np.zeros((h, w, 3), np.uint8)
            second[..., 0] = self.context * np.uint8(255)
            second[..., 1] = 255
            cached = self.__dict__["_layers"] = (first, second)
        return cached

    def record(self) -> dict[str, Any]:
        """What a manifest line records about the entry (no pixels)."""
        out = {"key": self.key, "type": self.defect_type, "source": self.source,
               "component": self.component, "area": self.area, "borders": list(self.borders)}
        if self.mask_kind != "pixel":
            out["mask_kind"] = self.mask_kind
        return out


def _components(image: np.ndarray, mask: np.ndarray, defect_type: str, source: str, min_area: int,
                margin: float, defects: np.ndarray | None = None, boxes: np.ndarray | None = None,
                key_prefix: str = "") -> list[DefectEntry]:
    """Entries of ``mask``'s components; ``defects`` (default ``mask``): every defect of the image,
    kept out of the surface context; ``boxes``: pixels drawn from boxes (their components are
    ``mask_kind="box"``)."""
    binary = (mask > 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    h_img, w_img = binary.shape
    surface = (binary if defects is None else defects) == 0
    entries = []
    for c in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[c])
        if area < min_area:
            continue
        pad = max(12, int(round(margin * max(h, w))))
        y0, x0 = max(0, y - pad), max(0, x - pad)
        y1, x1 = min(h_img, y + h + pad), min(w_img, x + w + pad)
        own = labels[y0:y1, x0:x1] == c
        borders = tuple(side for side, touches in (("top", y == 0), ("bottom", y + h == h_img), ("left", x == 0),
                                                   ("right", x + w == w_img)) if touches)
        boxed = boxes is not None and bool(boxes[y0:y1, x0:x1][own].any())
        entries.append(DefectEntry(
            key=f"{source}#{key_prefix}{c}", defect_type=defect_type, source=source, component=c,
            image_size=(h_img, w_img), area=area, crop=np.ascontiguousarray(image[y0:y1, x0:x1]),
            mask=own, context=surface[y0:y1, x0:x1], box=(y - y0, x - x0, y - y0 + h, x - x0 + w),
            borders=borders, mask_kind="box" if boxed else "pixel"))
    return entries


@dataclass
class DefectImage:
    """One whole real defect image and its mask (the training split's, at the source resolution)."""

    name: str
    defect_type: str
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool


def _defect_image(image: np.ndarray, mask: np.ndarray, defect_type: str, name: str) -> list[DefectImage]:
    """``[DefectImage]`` when the mask marks any pixel, else ``[]``."""
    binary = mask > 0
    return [DefectImage(str(name), str(defect_type), image, binary)] if binary.any() else []


class DefectBank:
    """Real defects to synthesise from (see the module docstring).

    Build it with :meth:`from_folder` (files) or :meth:`from_arrays` (images and masks in memory).
    Only the *training* entries are held: with a few-shot split, test-split files are never read.

    Parameters
    ----------
    entries : list of DefectEntry
    identity : str
        What the bank was made from (written to configs).
    split : FewShotSplit, optional
        The split the entries come from.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.full((64, 64, 3), 120, np.uint8); mask = np.zeros((64, 64), np.uint8)
    >>> image[20:30, 10:40] = 30; mask[20:30, 10:40] = 255
    >>> bank = DefectBank.from_arrays([image], [mask], ["scratch"])
    >>> len(bank), bank.types
    (1, ['scratch'])
    """

    def __init__(self, entries: list[DefectEntry], identity: str = "arrays", split: FewShotSplit | None = None,
                 skipped: dict[str, int] | None = None, source: dict[str, Any] | None = None,
                 images: list[DefectImage] | None = None):
        if not entries:
            raise ValueError(f"the defect bank ({identity}) holds no defect: no mask component reaches the "
                             "minimum area; lower min_area or check the masks")
        self.entries = list(entries)
        self.identity = identity
        self.split = split
        self.skipped = dict(skipped or {})
        #: The arguments of :meth:`from_folder` that rebuild this bank (``None`` for in-memory banks).
        self.source = source
        #: The whole real images with a non-empty mask the entries were cut from (``real_only`` uses
        #: them as they are), in the bank's order.
        self.images = list(images or [])
        self._by_key = {e.key: e for e in self.entries}
        if len(self._by_key) != len(self.entries):
            raise ValueError("defect bank entries must have unique keys")
        self._by_type: dict[str, list[DefectEntry]] = {}
        for e in self.entries:
            self._by_type.setdefault(e.defect_type, []).append(e)

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        counts = ", ".join(f"{t}: {len(v)}" for t, v in self._by_type.items())
        return f"DefectBank({self.identity}; {counts})"

    @property
    def types(self) -> list[str]:
        """Defect types with at least one entry, sorted."""
        return sorted(self._by_type)

    def of_type(self, defect_type: str) -> list[DefectEntry]:
        """Entries of one type (in a fixed order: source file, then component)."""
        if defect_type not in self._by_type:
            raise ValueError(f"the defect bank has no type {defect_type!r}; it holds {self.types}")
        return self._by_type[defect_type]

    def get(self, key: str) -> DefectEntry:
        """The entry recorded as ``key`` in a sample's params."""
        try:
            return self._by_key[key]
        except KeyError:
            raise KeyError(f"defect bank entry {key!r} is not in this bank ({self.identity}); replay "
                           "needs the bank (and split) the sample was made with") from None

    def describe(self) -> dict[str, Any]:
        """JSON summary for configs: identity, how to rebuild it (``source``), split spec, entries per type.

        :meth:`from_description` rebuilds a folder bank from it (``defectforge.from_config``).
        """
        out: dict[str, Any] = {"bank": self.identity, "source": self.source,
                               "entries": {t: len(v) for t, v in sorted(self._by_type.items())}}
        if self.split is not None:
            out["few_shot"] = self.split.spec
            out["split_seed"] = self.split.split_seed
            out["train_images"] = {t: len(v) for t, v in sorted(self.split.train.items())}
            out["test_images"] = {t: len(v) for t, v in sorted(self.split.test.items())}
        return out

    # --- constructors ---------------------------------------------------------------------
    @classmethod
    def from_description(cls, description: dict[str, Any]) -> "DefectBank":
        """Rebuild a bank from :meth:`describe`'s output (folder banks only)."""
        source = description.get("source") if isinstance(description, dict) else None
        if not source:
            raise ValueError(f"this bank description cannot be rebuilt ({description.get('bank') if isinstance(description, dict) else description!r}): "
                             "only banks read from a folder (DefectBank.from_folder) record their source; pass the bank itself")
        return cls.from_folder(**source)

    @classmethod
    def from_arrays(cls, images, masks, types=None, names=None, min_area: int = DEFAULT_MIN_AREA,
                    margin: float = 0.25) -> "DefectBank":
        """A bank from in-memory ``(H, W, C)`` uint8 images and ``(H, W)`` masks (nonzero = defect)."""
        min_area = check_range("min_area", min_area, 1, None, integer=True)
        types = list(types) if types is not None else ["defect"] * len(images)
        names = list(names) if names is not None else [f"array{i}" for i in range(len(images))]
        if not len(images) == len(masks) == len(types) == len(names):
            raise ValueError("images, masks, types and names must have the same length")
        entries, whole = [], []
        for image, mask, t, name in zip(images, masks, types, names):
            image = np.asarray(image)
            if image.ndim == 2:
                image = image[..., None]
            if image.dtype != np.uint8 or image.shape[2] not in (1, 3):
                raise ValueError(f"{name}: images must be (H, W, 1 or 3) uint8, got {image.shape} {image.dtype}")
            if image.shape[2] == 1:
                image = np.repeat(image, 3, 2)
            mask = np.asarray(mask)
            if mask.ndim == 3:
                mask = mask[..., 0]
            if mask.shape != image.shape[:2]:
                raise ValueError(f"{name}: mask shape {mask.shape} differs from its image {image.shape[:2]}")
            entries += _components(image, mask, str(t), str(name), min_area, margin)
            whole += _defect_image(image, mask, t, name)
        return cls(entries, images=whole)

    @property
    def mask_kinds(self) -> dict[str, str]:
        """``{type: "pixel" | "box" | "mixed"}``: whether each type's masks are outlines or boxes."""
        out = {}
        for t, entries in sorted(self._by_type.items()):
            kinds = {e.mask_kind for e in entries}
            out[t] = kinds.pop() if len(kinds) == 1 else "mixed"
        return out

    @classmethod
    def from_folder(cls, root, few_shot=None, split_file=None, defect_types=None, min_area: int = DEFAULT_MIN_AREA,
                    split_seed: int = 0, margin: float = 0.25, format: str | None = None,
                    split_group: str | None = None, split: FewShotSplit | None = None) -> "DefectBank":
        """A bank from a labelled folder or file: an MVTec-AD category, image/mask pairs, labelme, COCO, YOLO-seg.

        Parameters
        ----------
        root : path-like
            The category (its ``test/<type>`` + ``ground_truth/<type>``), a folder of pairs, a
            labelme or YOLO-seg folder, or a COCO JSON (or its folder).
        few_shot : str or int, optional
            ``"1/3"`` (the papers' protocol), any fraction, or a count per type: only that part of
            each type's images feeds the bank; ``None`` uses every defect (zero-shot transfer to
            other categories, or plain augmentation).
        split_file : path-like, optional
            Where the split is recorded: reused when it exists (and checked against the data and
            spec), written otherwise. Ignored without ``few_shot``.
        defect_types : list of str, optional
            Only these types (default all).
        min_area : int
            Smallest component kept, in source pixels (default :data:`DEFAULT_MIN_AREA`).
        split_seed : int
            Seed of the split permutation (default 0).
        margin : float
            Surface kept around each component, as a share of its larger side (at least 4 px).
        format : str, optional
            ``labelme``, ``coco``, ``yolo-seg``, ``masks`` or ``mvtec``; ``None`` or ``"auto"``
            detects it (:func:`defectforge.io.annotations.detect_format`).
        split_group : str, optional
            A regular expression whose match in a file's stem names its group: a group's images stay
            on one side of the split (see :meth:`FewShotSplit.make`), e.g. one spot photographed
            repeatedly.
        split : FewShotSplit, optional
            Use this split as it is (its ``train`` images feed the bank; the benchmark's validation
            protocol passes the training part split again); ``few_shot`` and ``split_file`` are then
            not used.

        Raises
        ------
        ValueError
            Bad input, one line naming the file and the fix
            (:class:`~defectforge.io.annotations.AnnotationError`).
        """
        from ..io.annotations import AUTO, check_format, read_annotations, read_mask_labels

        min_area = check_range("min_area", min_area, 1, None, integer=True)
        margin = float(check_range("margin", margin, 0.0, 4.0))
        root = Path(root).expanduser()
        asked = check_format(format)
        labelled = read_annotations(root, asked)
        images = labelled.defects
        if not images:
            raise ValueError(f"{root} holds no defect image with a mask or annotation (read as {labelled.format}: "
                             f"{len(labelled.normals)} normal images); label some defects, or name the format "
                             "(--defects-format) if it was detected wrongly")
        found_types = sorted({t for im in images for t in im.types})
        if defect_types:
            wanted = [t.strip() for t in (defect_types.split(",") if isinstance(defect_types, str) else defect_types)]
            unknown = [t for t in wanted if t not in found_types]
            if unknown:
                raise ValueError(f"defect_types {unknown} are not in {root}; it holds {found_types}")
            images = [replace(im, regions=[r for r in im.regions if r.defect_type in wanted]) for im in images]
            found_types = sorted(wanted)
            images = [im for im in images if im.regions]
        by_group: dict[str, list] = {}
        for im in images:
            by_group.setdefault(im.group, []).append(im)
        use = by_group
        if split is not None:
            few_shot = split.spec
            use = {g: [im for im in v if im.name in set(split.train.get(g, []))] for g, v in by_group.items()}
        elif few_shot is not None:
            files = {g: [im.name for im in v] for g, v in by_group.items()}
            if split_file is not None and Path(split_file).is_file():
                split = FewShotSplit.load(split_file)
                split.check_matches(files, few_shot, split_seed, split_file, split_group)
            else:
                split = FewShotSplit.make(root, files, few_shot, split_seed, split_group)
                if split_file is not None:
                    split.save(split_file)
            use = {g: [im for im in v if im.name in set(split.train[g])] for g, v in by_group.items()}
        entries, skipped, whole = [], {}, []
        check_empty = labelled.format != "mvtec"  # an MVTec mask may be empty (counted in skipped, as before)
        for group, items in sorted(use.items()):
            for im in sorted(items, key=lambda im: im.name):
                image = read_image(im.path, channels=3)
                h, w = image.shape[:2]
                masks = im.type_masks(h, w, read_mask_labels, check_empty=check_empty)
                everything = np.logical_or.reduce(list(masks.values()))
                boxes = None
                if any(r.is_box for r in im.regions):
                    boxes = np.logical_or.reduce([r.draw(h, w, read_mask_labels) for r in im.regions if r.is_box])
                found = []
                several = len(masks) > 1
                for t, mask in sorted(masks.items()):
                    # one image with several types: keys carry the type so they stay unique
                    found += _components(image, mask, t, im.name, min_area, margin, defects=everything, boxes=boxes,
                                         key_prefix=f"{t}:" if several else "")
                if not found:
                    skipped[group] = skipped.get(group, 0) + 1
                entries += found
                whole += _defect_image(image, everything, next(iter(masks)) if len(masks) == 1 else group,
                                       im.name)
        fmt = labelled.format
        identity = os.fspath(root) + (f" ({fmt})" if fmt not in _EARLIER_LAYOUTS else "") + \
            (f" (few-shot {few_shot}, split seed {split_seed})" if few_shot is not None else "")
        # how to rebuild it (the split file is an output: a rebuild makes the same split from spec and seed)
        source = {"root": os.fspath(root), "few_shot": None if few_shot is None else str(few_shot),
                  "defect_types": found_types if defect_types else None, "min_area": min_area,
                  "split_seed": int(split_seed), "margin": margin,
                  **({"split_group": split_group} if split_group is not None else {})}
        if fmt not in _EARLIER_LAYOUTS or asked != AUTO:
            source["format"] = fmt
        return cls(entries, identity, split, skipped, source, whole)


#: The layouts banks were read from before other formats were: their records carry no format, so
#: configs written then still compare equal.
_EARLIER_LAYOUTS = ("mvtec", "masks")
