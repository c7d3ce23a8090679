"""Reading and writing images: every mode users have (grey, RGB, RGBA, 16-bit), atomically."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from ..core.dtype import luma_array_uint8
from .files import atomic_write_bytes

#: Held while PIL's global decode limit is lifted for one open (see read_image_raw).
_PIL_LIMIT = threading.Lock()

__all__ = ["IMAGE_EXTENSIONS", "BIT_DEPTHS", "ImageReadError", "list_images", "read_image", "read_image_raw",
           "to_uint8", "bit_depth_of", "write_image", "atomic_write_bytes"]

#: Bit depths a 16-bit container (PNG, TIFF) may hold: 10/12/14-bit sensor data is stored in 16
#: bits with the top bits zero, so dividing by 65535 would make it almost black.
BIT_DEPTHS = (8, 10, 12, 14, 16)

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


def read_image_raw(path: str | os.PathLike, max_pixels: int | None = None, reduce_to: int | None = None) -> np.ndarray:
    """Decode an image as ``(H, W, C)``: uint8 (C = 1 or 3), or uint16 for 16/32-bit grey data.

    ``max_pixels`` is the largest accepted ``width * height`` (default: PIL's
    ``Image.MAX_IMAGE_PIXELS``, about 89 Mpx). ``reduce_to`` lets a JPEG above that limit decode
    at a reduced scale (DCT scaling) when the caller only needs ``reduce_to`` pixels a side.

    Raises
    ------
    ImageReadError
        Unreadable, truncated or oversized files (the message names ``--max-pixels``).
    """
    path = Path(path)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else int(max_pixels)
    try:
        with _PIL_LIMIT:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # checked below, against the caller's limit
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            w, h = im.size
            if limit is not None and w * h > limit:
                if reduce_to is not None and im.format == "JPEG":
                    im.draft(im.mode, (reduce_to, reduce_to))
                    w, h = im.size
                if w * h > limit:
                    raise ImageReadError(
                        f"{path}: refused, too many pixels for a safe decode ({w}x{h} = {w * h / 1e6:.0f} Mpx, "
                        f"limit {limit / 1e6:.0f} Mpx); pass --max-pixels {w * h} if memory allows "
                        f"(about {w * h * 4 / 2**30:.1f} GiB), or downscale the file")
            im.load()
            arr = _decode(im)
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot read this image ({exc}); the file is truncated, "
                             "corrupt or not an image: replace or remove it") from exc
    return arr


def bit_depth_of(arrays) -> int:
    """Smallest of :data:`BIT_DEPTHS` holding the maximum of every uint16 array (8 if there is none)."""
    peak = max((int(a.max()) for a in arrays if a.dtype == np.uint16 and a.size), default=0)
    if peak == 0:
        return 8 if not any(a.dtype == np.uint16 for a in arrays) else 16
    return next(b for b in BIT_DEPTHS if peak <= 2**b - 1)


def to_uint8(arr: np.ndarray, bit_depth: int | str = "auto") -> np.ndarray:
    """A decoded image as uint8: uint16 data divided by ``2**bit_depth - 1`` (``"auto"``: this
    image's own :func:`bit_depth_of`), values above that range clipped."""
    if arr.dtype == np.uint8:
        return arr
    depth = bit_depth_of([arr]) if bit_depth == "auto" else int(bit_depth)
    hi = float(2**depth - 1)
    return (np.clip(arr.astype(np.float64) / hi, 0, 1) * 255 + 0.5).astype(np.uint8)


def read_image(path: str | os.PathLike, channels: int | None = None, bit_depth: int | str = "auto",
               max_pixels: int | None = None) -> np.ndarray:
    """Read an image as ``(H, W, C)`` uint8, C = 1 or 3.

    Grey and RGB images keep their channels unless ``channels`` asks for 1 or 3; RGBA and palette
    images are composited on black / converted to RGB; 16-bit images are scaled by their bit
    depth (``"auto"``: the smallest of 8, 10, 12, 14, 16 bits that holds the image's maximum, so
    12-bit sensor data keeps its contrast).

    Raises
    ------
    ImageReadError
        Unreadable, truncated or oversized (decompression bomb) files.
    """
    arr = to_uint8(read_image_raw(path, max_pixels), bit_depth)
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif channels == 1 and arr.shape[2] == 3:
        arr = luma_array_uint8(arr)
    return arr


def _decode(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16)[..., None]
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
