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

__all__ = ["TextureSource", "FolderTextures", "ProceduralTextures", "SkimageTextures", "resolve_textures"]


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

    def get_uint8(self, index: int, height: int, width: int) -> np.ndarray:
        """Texture ``index`` as ``(height, width, 3)`` uint8 (cached; do not modify it in place)."""
        key = (index, height, width)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        img = self._load(index)
        if img.shape[:2] != (height, width):
            shrinking = img.shape[0] > height or img.shape[1] > width
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
        img = np.ascontiguousarray(img)
        img.setflags(write=False)
        self._cache[key] = img
        self._cached += img.nbytes
        while self._cached > self._cache_bytes and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cached -= old.nbytes
        return img

    def preload(self, height: int, width: int) -> int:
        """Load and cache textures at ``(height, width)``, as many as the cache holds; returns how many.

        Benchmarks call it so that the first use of a texture (file decoding, procedural
        generation) is not timed as synthesis.
        """
        count = min(len(self), max(1, self._cache_bytes // (height * width * 3)))
        for index in range(count):
            self.get_uint8(index, height, width)
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
