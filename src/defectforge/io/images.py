"""Reading and writing images: every mode users have (grey, RGB, RGBA, 16-bit), atomically."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.dtype import LUMA_WEIGHTS
from .files import atomic_write_bytes

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "list_images", "read_image", "write_image", "atomic_write_bytes"]

#: Extensions of the image files found in folders (lower case), the one list every command uses:
#: generate's inputs, textures, masks, and evaluate's generated and real sets.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")



class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the fix."""


def list_images(folder: str | os.PathLike, recursive: bool = True, what: str = "image folder") -> list[Path]:
    """Image files under ``folder`` (sorted, so every machine lists them in the same order).

    ``what`` names the folder in errors (``"--textures folder"``, say), so a message blames the
    argument the user gave.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} {folder} does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"{what} {folder} is not a folder")
    pattern = "**/*" if recursive else "*"
    files = [p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: p.as_posix())


def read_image(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """Read an image as ``(H, W, C)`` uint8, C = 1 or 3.

    Grey and RGB images keep their channels unless ``channels`` asks for 1 or 3; RGBA and palette
    images are composited on black / converted to RGB; 16-bit images are scaled to 8 bits.

    Raises
    ------
    ImageReadError
        Unreadable, truncated or oversized (decompression bomb) files.
    """
    path = Path(path)
    try:
        # PIL warns above MAX_IMAGE_PIXELS (about 89 Mpx) and raises above twice that; we refuse
        # at the warning, without touching the caller's warning filters.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                arr = _to_uint8(im)
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: refused, too many pixels for a safe decode ({exc}); "
                             "downscale the file or raise PIL.Image.MAX_IMAGE_PIXELS") from exc
    except Image.DecompressionBombWarning as exc:
        raise ImageReadError(f"{path}: refused, too many pixels for a safe decode ({exc}); "
                             "downscale the file or raise PIL.Image.MAX_IMAGE_PIXELS") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot read this image ({exc}); the file is truncated, "
                             "corrupt or not an image: replace or remove it") from exc
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 1 and arr.shape[2] == 3:
        arr = (arr.astype(np.float32) @ np.array(LUMA_WEIGHTS, np.float32) + 0.5).astype(np.uint8)[..., None]
    return arr


def _to_uint8(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return (np.clip(arr / hi, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None]
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return (np.clip(arr / hi, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None]
    if mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
    if mode in ("LA",):
        la = np.asarray(im, dtype=np.float32)
        return (la[..., :1] * la[..., 1:2] / 255.0 + 0.5).astype(np.uint8)
    if mode in ("RGBA", "PA", "P") or "A" in mode:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        return (rgba[..., :3] * rgba[..., 3:4] / 255.0 + 0.5).astype(np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def encode_png(image: np.ndarray, compress_level: int = 1) -> bytes:
    """PNG bytes of ``(H, W)`` / ``(H, W, 1|3)`` uint8 (OpenCV encoder, deterministic)."""
    import cv2

    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write a uint8 image atomically (PNG for ``.png``, otherwise by extension through PIL)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        atomic_write_bytes(path, encode_png(image))
        return
    import io

    arr = image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    atomic_write_bytes(path, buf.getvalue())
