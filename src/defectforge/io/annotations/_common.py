"""What every annotation reader returns, and how each kind of region becomes pixels.

A reader turns a labelled folder (or file) into an :class:`AnnotationSet`: one
:class:`AnnotatedImage` per image, each with its :class:`Region` objects (no region: a normal
image). Regions stay symbolic (points, run lengths, a mask file and value) until
:meth:`AnnotatedImage.type_masks` draws them at the image's size, so listing a set never decodes
an image and a few-shot bank reads only its training images.

Rasterisation rules (each the labelling tool's own, so a mask is what the tool showed):

``labelme``
    PIL ``ImageDraw.polygon(points, fill=1, outline=1)`` on the JSON's coordinates, as labelme's
    own ``labelme.utils.shape_to_mask`` draws them: integer coordinates are pixel centres, and
    the outline's pixels are part of the mask. A polygon with integer vertices and axis-parallel
    sides covers every pixel centre inside or on it (a rectangle from ``(x0, y0)`` to ``(x1, y1)``:
    ``(x1 - x0 + 1) * (y1 - y0 + 1)`` pixels).
``yolo``
    ``cv2.fillPoly`` on the normalised coordinates times the image's width / height, rounded to
    the nearest pixel (Ultralytics' ``polygon2mask`` truncates instead; rounding is what makes
    coordinates written as ``x / W`` with six decimals come back to pixel ``x``).
``coco``
    Polygons: ``pycocotools.mask.frPyObjects`` + ``decode``, what the COCO API's ``annToMask``
    gives (needs the ``export`` extra). Run-length encodings (``iscrowd`` 0 or 1, counts as a
    list or as COCO's compressed string) are decoded here, without pycocotools.
``box``
    The smallest pixel rectangle that covers the box (``floor`` of its start, ``ceil`` of its end,
    in COCO's corner convention, where pixel ``x`` spans ``[x, x + 1)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..images import read_image

__all__ = ["AnnotationError", "Region", "AnnotatedImage", "AnnotationSet", "COMBINED", "rle_decode",
           "rle_counts_from_string", "read_mask_labels"]

#: The group of an image holding defects of several types (MVTec AD's name for such images).
COMBINED = "combined"


class AnnotationError(ValueError):
    """A labelled folder or file cannot be read as it is; the message names the file and the fix."""


def rle_counts_from_string(text: str) -> list[int]:
    """Run lengths of COCO's compressed RLE string (the COCO API's ``rleToString`` format).

    Each count is written in 5-bit groups (LSB first) as characters from ``0`` (48), bit 6 marks
    a continued number, bit 5 of the last group is the sign; from the third count on, the value is
    stored as the difference to the count two places before.

    Examples
    --------
    >>> rle_counts_from_string("52203")  # a 2x2 square in a 4x4 mask, as pycocotools encodes it
    [5, 2, 2, 2, 5]
    """
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(text):
                raise ValueError("the compressed RLE string ends inside a number")
            group = ord(text[pos]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def rle_decode(segmentation: dict, where: str) -> np.ndarray:
    """A COCO run-length encoding (``{"size": [h, w], "counts": list or str}``) as an ``(h, w)`` bool mask.

    Runs alternate background / foreground from the background, in column-major order (COCO's).

    Examples
    --------
    >>> rle_decode({"size": [2, 3], "counts": [1, 2, 3]}, "example").astype(int).tolist()
    [[0, 1, 0], [1, 0, 0]]
    """
    try:
        h, w = (int(v) for v in segmentation["size"])
        counts = segmentation["counts"]
        if isinstance(counts, (str, bytes)):
            counts = rle_counts_from_string(counts.decode("ascii") if isinstance(counts, bytes) else counts)
        counts = np.asarray([int(c) for c in counts], np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}: not a COCO run-length encoding ({exc}); it needs size [h, w] and "
                              "counts (a list of run lengths or the compressed string)") from None
    if (counts < 0).any() or int(counts.sum()) != h * w:
        raise AnnotationError(f"{where}: its run lengths cover {int(counts.sum())} pixels, its size {h}x{w} "
                              f"has {h * w}; re-export the annotation from the labelling tool")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(w, h).T.copy()


def read_mask_labels(path: Path) -> np.ndarray:
    """A mask file as ``(H, W)`` labels: palette indices for a palette PNG, grey levels otherwise."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode == "P":
                return np.asarray(im, dtype=np.uint8).copy()
    except OSError:
        pass  # read_image below names the file and the fix
    return read_image(path, channels=1)[..., 0]


def _draw_labelme(points: np.ndarray, height: int, width: int, shape: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    xy = [(float(x), float(y)) for x, y in points]
    if shape == "rectangle":
        (x0, y0), (x1, y1) = xy
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=1, outline=1)
    elif shape == "circle":
        (cx, cy), (px, py) = xy
        r = float(np.hypot(cx - px, cy - py))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1, outline=1)
    else:
        draw.polygon(xy, fill=1, outline=1)
    return np.asarray(canvas, dtype=bool)


def _draw_yolo(polygons: list[np.ndarray], height: int, width: int) -> np.ndarray:
    import cv2

    canvas = np.zeros((height, width), np.uint8)
    scale = np.array([width, height], np.float64)
    pts = [np.rint(p * scale).astype(np.int32) for p in polygons]
    cv2.fillPoly(canvas, pts, 1)
    return canvas.astype(bool)


def _draw_coco_polygons(polygons: list[list[float]], height: int, width: int, where: str) -> np.ndarray:
    try:
        from pycocotools import mask as mask_utils
    except ImportError:
        raise AnnotationError(f"{where}: COCO polygons are rasterised by pycocotools (what the COCO API's "
                              "annToMask gives), which is not installed; pip install 'defectforge[export]' "
                              "(or export the masks as RLE)") from None
    rles = mask_utils.frPyObjects([list(map(float, p)) for p in polygons], height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def _draw_box(box: tuple[float, float, float, float], height: int, width: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = np.zeros((height, width), bool)
    canvas[max(0, int(np.floor(y0))):min(height, int(np.ceil(y1))),
           max(0, int(np.floor(x0))):min(width, int(np.ceil(x1)))] = True
    return canvas


@dataclass
class Region:
    """One labelled defect region, kept symbolic until :meth:`draw`.

    Attributes
    ----------
    defect_type : str
        Its class (labelme label, COCO category name, YOLO ``names`` entry, mask folder or index).
    kind : str
        ``"labelme"`` (points + ``shape``), ``"yolo"`` (normalised polygons), ``"coco-polygon"``,
        ``"rle"``, ``"box"`` (``(x0, y0, x1, y1)`` pixels, corner convention; divided by the width and
        height when ``shape`` is ``"normalised"``), ``"placed"`` (``(x0, y0, bool array)``: labelme's
        mask shape) or ``"mask"`` (a
        mask file; ``value`` ``None``: every nonzero pixel, else that palette index).
    data : Any
        The points, polygons, RLE dict, box, or mask file path.
    where : str
        File and place in it, for messages (``"a.json: shape 2"``).
    shape : str
        labelme's ``shape_type`` (``polygon``, ``rectangle``, ``circle``).
    value : int, optional
        Palette index of a ``"mask"`` region.
    """

    defect_type: str
    kind: str
    data: Any
    where: str
    shape: str = "polygon"
    value: int | None = None

    @property
    def is_box(self) -> bool:
        """A box, not an outline: its mask is a rectangle around the defect (``mask_kind: box``)."""
        return self.kind == "box" or self.shape == "box" or (self.kind == "labelme" and self.shape == "rectangle")

    def draw(self, height: int, width: int, mask_file: Callable[[Path], np.ndarray] | None = None) -> np.ndarray:
        """The region as an ``(height, width)`` bool mask (see the module docstring for each rule).

        ``mask_file`` reads a ``"mask"`` region's file (default :func:`read_mask_labels`).
        """
        if self.kind == "labelme":
            return _draw_labelme(self.data, height, width, self.shape)
        if self.kind == "yolo":
            return _draw_yolo(self.data, height, width)
        if self.kind == "coco-polygon":
            return _draw_coco_polygons(self.data, height, width, self.where)
        if self.kind == "rle":
            mask = rle_decode(self.data, self.where)
            if mask.shape != (height, width):
                raise AnnotationError(f"{self.where}: its RLE size {mask.shape[0]}x{mask.shape[1]} (h x w) differs "
                                      f"from the image's {height}x{width}; re-export it at the image's size")
            return mask
        if self.kind == "box":
            x0, y0, x1, y1 = self.data
            if self.shape == "normalised":  # YOLO: divided by the width and height
                x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
            return _draw_box((x0, y0, x1, y1), height, width)
        if self.kind == "placed":  # a small mask whose top-left pixel is at (x0, y0)
            x0, y0, small = self.data
            canvas = np.zeros((height, width), bool)
            sy, sx = max(0, -y0), max(0, -x0)
            ey, ex = min(small.shape[0], height - y0), min(small.shape[1], width - x0)
            if ey > sy and ex > sx:
                canvas[y0 + sy:y0 + ey, x0 + sx:x0 + ex] = small[sy:ey, sx:ex]
            return canvas
        if self.kind == "mask":
            labels = (mask_file or read_mask_labels)(self.data)
            if labels.shape != (height, width):
                raise AnnotationError(f"{self.data}: size {labels.shape[1]}x{labels.shape[0]} differs from its "
                                      f"image's {width}x{height}; a mask must have its image's size")
            return labels > 0 if self.value is None else labels == self.value
        raise ValueError(f"unknown region kind {self.kind!r}")


@dataclass
class AnnotatedImage:
    """An image of a labelled set with its regions (none: a normal image).

    Attributes
    ----------
    name : str
        The image's path relative to the set's root (POSIX): its key in splits and records.
    path : Path
        The image file.
    regions : list of Region
    size : (int, int), optional
        ``(H, W)`` the annotation declares (labelme ``imageHeight``/``imageWidth``, COCO
        ``height``/``width``); checked against the decoded image.
    source : str
        The annotation file, for messages.
    fixed_group : str, optional
        The group when the format says it (an MVTec category's folder); otherwise :attr:`group` is
        the single type of its regions, or :data:`COMBINED` when they have several.
    """

    name: str
    path: Path
    regions: list[Region] = field(default_factory=list)
    size: tuple[int, int] | None = None
    source: str = ""
    fixed_group: str | None = None

    @property
    def normal(self) -> bool:
        return not self.regions

    @property
    def types(self) -> list[str]:
        """The defect types of its regions, sorted."""
        return sorted({r.defect_type for r in self.regions})

    @property
    def group(self) -> str:
        """The type the image is filed under (few-shot split, ``test/<type>`` of an import)."""
        if self.fixed_group is not None:
            return self.fixed_group
        types = self.types
        return types[0] if len(types) == 1 else COMBINED

    @property
    def mask_kind(self) -> str:
        """``"pixel"`` (outlines or masks), ``"box"`` (only boxes) or ``"mixed"``."""
        boxes = [r.is_box for r in self.regions]
        return "box" if boxes and all(boxes) else "mixed" if any(boxes) else "pixel"

    def type_masks(self, height: int, width: int, mask_file: Callable[[Path], np.ndarray] | None = None,
                   check_empty: bool = True) -> dict[str, np.ndarray]:
        """``{type: (height, width) bool}``: the union of each type's regions, drawn at the image's size.

        Raises
        ------
        AnnotationError
            The declared size differs from ``(height, width)``; a region covers no pixel (with
            ``check_empty``).
        """
        if self.size is not None and tuple(self.size) != (height, width):
            raise AnnotationError(f"{self.source}: says the image is {self.size[1]}x{self.size[0]} (w x h), but "
                                  f"{self.path} is {width}x{height}; fix the size in the annotation (or "
                                  "annotate the image it was made for)")
        out: dict[str, np.ndarray] = {}
        for region in self.regions:
            drawn = region.draw(height, width, mask_file)
            if check_empty and not drawn.any():
                raise AnnotationError(f"{region.where}: covers no pixel of the {width}x{height} image (an empty "
                                      "mask); redraw it or delete it")
            out[region.defect_type] = out[region.defect_type] | drawn if region.defect_type in out else drawn
        return out


@dataclass
class AnnotationSet:
    """A labelled set: its images (defect and normal), the format and the class names.

    Attributes
    ----------
    root : Path
        Folder every :attr:`AnnotatedImage.name` is relative to.
    format : str
        One of :data:`defectforge.io.annotations.FORMATS`.
    images : list of AnnotatedImage
        Sorted by name.
    classes : list of str
        The defect types the annotation file declares (COCO categories, YOLO ``names``), or those
        found.
    source : str
        What was read (the folder or the annotation file).
    """

    root: Path
    format: str
    images: list[AnnotatedImage]
    classes: list[str]
    source: str = ""

    @property
    def defects(self) -> list[AnnotatedImage]:
        return [im for im in self.images if not im.normal]

    @property
    def normals(self) -> list[AnnotatedImage]:
        return [im for im in self.images if im.normal]


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as POSIX text (the path itself when it lies outside)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return Path(os.path.abspath(path)).as_posix()
