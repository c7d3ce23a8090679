"""Anomaly-source textures: a folder of images (e.g. DTD) or the built-in procedural bank.

A texture source is indexed (``len(source)``, ``source.get(indices, h, w, device)``); a
synthesizer records the index it drew, so a sample replays from its params. Each texture is
decoded once and resized once per requested size (cached), so no file is read per sample.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch

from ..io.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from .procedural import procedural_texture

__all__ = ["TextureSource", "FolderTextures", "ProceduralTextures", "SkimageTextures", "resolve_textures",
           "TEXTURE_RESIZE", "center_crop"]

#: How a texture is brought to an image's size (see :meth:`TextureSource.get_uint8`).
TEXTURE_RESIZE = ("stretch", "bilinear", "cover")


def center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``(height, width)`` of ``img`` (H, W, C); offsets ``int(round((H - h) / 2))`` as
    torchvision's ``CenterCrop``.

    Examples
    --------
    >>> center_crop(np.arange(12).reshape(3, 4, 1), 1, 2)[..., 0]
    array([[5, 6]])
    """
    top = int(round((img.shape[0] - height) / 2.0))
    left = int(round((img.shape[1] - width) / 2.0))
    return img[top:top + height, left:left + width]


class TextureSource:
    """Base class: an indexed collection of RGB textures, resized and cached on demand."""

    #: A short identity written to configs (folder path, "procedural:64", ...).
    identity: str = ""

    def __init__(self, cache_bytes: int = 512 * 2**20):
        self._cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    def __len__(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> np.ndarray:
        """The texture ``(H, W, 3)`` uint8 at its own size."""
        raise NotImplementedError

    def get_uint8(self, index: int, height: int, width: int, resize: str = "stretch") -> np.ndarray:
        """Texture ``index`` resized for a ``(height, width)`` image, ``(h, w, 3)`` uint8 (cached; do
        not modify it in place).

        ``resize`` (see :data:`TEXTURE_RESIZE`): ``"stretch"`` to exactly ``(height, width)``, area
        interpolation when shrinking, bilinear when enlarging; ``"bilinear"`` to exactly
        ``(height, width)``, bilinear both ways (OpenCV's ``cv2.resize`` default, as DRAEM's loader);
        ``"cover"`` keeps the aspect ratio and scales the texture so that it covers
        ``(height, width)`` (its shorter side fits, as torchvision's ``Resize(int)`` in GLASS; area interpolation when
        shrinking, as Pillow's antialiased bilinear): the result may be larger, and the caller
        centre-crops it (:func:`center_crop`).
        """
        if resize not in TEXTURE_RESIZE:
            raise ValueError(f"resize={resize!r} is not one of {list(TEXTURE_RESIZE)}")
        key = (index, height, width, resize)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        img = self._load(index)
        th, tw = height, width
        if resize == "cover":
            scale = max(height / img.shape[0], width / img.shape[1])
            # the longer side truncated, as torchvision's Resize(int): int(size * long / short)
            th = max(height, int(img.shape[0] * scale))
            tw = max(width, int(img.shape[1] * scale))
        if img.shape[:2] != (th, tw):
            shrinking = img.shape[0] > th or img.shape[1] > tw
            linear = resize == "bilinear" or not shrinking
            img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_LINEAR if linear else cv2.INTER_AREA)
        img = np.ascontiguousarray(img)
        img.setflags(write=False)
        self._cache[key] = img
        self._cached += img.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return img

    def preload(self, height: int, width: int, resize: str = "stretch") -> int:
        """Load and cache textures at ``(height, width)``, as many as the cache holds; returns how many.

        Benchmarks call it so that the first use of a texture (file decoding, procedural
        generation) is not timed as synthesis.
        """
        count = min(len(self), max(1, self._cache_bytes // (height * width * 3 * (2 if resize == "cover" else 1))))
        for index in range(count):
            self.get_uint8(index, height, width, resize)
        return count

    def get(self, indices, height: int, width: int, device=None) -> torch.Tensor:
        """Textures ``indices`` as ``(n, 3, height, width)`` float32 in ``[0, 1]``."""
        stack = np.stack([self.get_uint8(int(i), height, width) for i in indices])
        return torch.from_numpy(stack).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class ProceduralTextures(TextureSource):
    """The built-in bank: ``count`` procedural textures (noise, stripes, cells, marble, checker, dots).

    Used when no texture folder is given; needs no files.

    Examples
    --------
    >>> bank = ProceduralTextures(count=6)
    >>> tuple(bank.get([0, 5], 32, 48).shape)
    (2, 3, 32, 48)
    """

    def __init__(self, count: int = 60, seed: int = 0, base_size: int = 256):
        super().__init__()
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count, self.seed, self.base_size = int(count), int(seed), int(base_size)
        self.identity = f"procedural:{self.count}:{self.seed}"
        self._base: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.count

    def _load(self, index: int) -> np.ndarray:
        if index not in self._base:
            self._base[index] = procedural_texture(index, self.base_size, self.seed)
        return self._base[index]

    @property
    def key(self) -> tuple:
        """What makes two banks the same textures (count, seed, base size)."""
        return self.count, self.seed, self.base_size

    def made(self) -> dict[int, np.ndarray]:
        """Every texture at the base size, made now where not yet: for another process's bank of the
        same :attr:`key` to :meth:`adopt` instead of making them again."""
        for index in range(self.count):
            self._load(index)
        return dict(self._base)

    def adopt(self, made: dict[int, np.ndarray]) -> None:
        """Take the textures :meth:`made` returned for a bank of the same :attr:`key`."""
        self._base.update(made)


class FolderTextures(TextureSource):
    """Every image under ``folder`` (recursive, any extension PIL reads), e.g. DTD's ``images/``.

    Unreadable files are skipped with a warning when first listed as unusable.
    """

    def __init__(self, folder: str | os.PathLike, recursive: bool = True):
        super().__init__()
        self.folder = Path(folder)
        self.files = list_images(self.folder, recursive=recursive, what="--textures folder")
        if not self.files:
            raise ValueError(f"texture folder {self.folder} holds no images "
                             f"(looked for {'/'.join(IMAGE_EXTENSIONS)}, recursively); "
                             "point --textures at a folder of texture images such as DTD's images/")
        self.identity = str(self.folder)

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, index: int) -> np.ndarray:
        try:
            return read_image(self.files[index], channels=3)
        except ImageReadError as exc:
            warnings.warn(f"{exc}; using a flat grey texture in its place", stacklevel=3)
            return np.full((8, 8, 3), 128, np.uint8)


class SkimageTextures(TextureSource):
    """scikit-image's bundled textures ``brick``, ``grass`` and ``gravel`` (512x512 grey, CC0).

    They ship inside the scikit-image wheel, so no download is needed; grey is replicated to RGB.
    """

    NAMES = ("brick", "grass", "gravel")

    def __init__(self):
        super().__init__()
        try:
            from skimage import data
        except ImportError as exc:
            raise ImportError("textures='skimage' needs scikit-image: pip install 'defectforge[textures]'") from exc
        self._data = data
        self.identity = "skimage:" + ",".join(self.NAMES)

    def __len__(self) -> int:
        return len(self.NAMES)

    def _load(self, index: int) -> np.ndarray:
        img = np.asarray(getattr(self._data, self.NAMES[index])())
        if img.dtype != np.uint8:
            img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3]


def resolve_textures(textures) -> TextureSource:
    """``None`` / ``"procedural"`` -> the procedural bank; ``"skimage"`` -> :class:`SkimageTextures`;
    a path -> :class:`FolderTextures`; a source -> itself."""
    if textures is None:
        return ProceduralTextures()
    if isinstance(textures, TextureSource):
        return textures
    if isinstance(textures, (str, os.PathLike)):
        if str(textures) == "procedural":
            return ProceduralTextures()
        if str(textures) == "skimage":
            return SkimageTextures()
        return FolderTextures(textures)
    raise TypeError(f"textures must be None, a folder path or a TextureSource, got {type(textures).__name__}")
