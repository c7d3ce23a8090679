"""Reading and writing images: every input read the way an image viewer shows it, written atomically.

:func:`read_image_raw` is the one decode path of the package: normal images, foreground masks,
mask banks, textures, real defect banks and their masks all go through it, so a mask and its
image are always read alike. The rule (docs/datasets.md; docs/reliability.md):

- orientation: the EXIF orientation tag is applied (``PIL.ImageOps.exif_transpose``), so a phone
  photo comes out upright as in a viewer, whatever the format (JPEG, PNG, TIFF, WebP);
- transparency: RGBA, grey+alpha and palette images with a transparent colour are composited
  onto black (a transparent pixel reads as 0, so a transparent mask background is background);
  a file with any non-opaque pixel gets a warning naming it;
- palettes are converted to their colours; 1-bit and grey stay grey (one channel); CMYK is
  converted to RGB by Pillow's plain formula (ICC profiles are not applied to any image), with a
  warning, since a colour-managed viewer may show other colours;
- bit depth: 16-bit grey and colour (PNG, TIFF) keep their 16 bits for :func:`to_uint8`'s
  bit-depth rule (``--bit-depth``); 32-bit integer grey is clipped to 16 bits, float grey read as
  [0, 1] (or [0, 255] when larger);
- size: an image whose width x height exceeds the pixel limit (``--max-pixels``, default PIL's
  ~89 Mpx, :func:`pixel_limit`) is refused before it is decoded, in every format alike;
- several frames (an animated GIF, a multi-page TIFF): the first is read, with a warning.

Every warning is issued once per file and process (:class:`ImageDecodeWarning`).
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..core.dtype import luma_array_uint8
from .files import atomic_write_bytes

#: Held while PIL's global decode limit is lifted for one decode (see read_image_raw).
_PIL_LIMIT = threading.Lock()

__all__ = ["IMAGE_EXTENSIONS", "BIT_DEPTHS", "ImageReadError", "ImageDecodeWarning", "list_images", "read_image",
           "read_image_raw", "read_labels", "image_size", "image_mode", "pixel_limit", "set_pixel_limit", "warn_once",
           "binary_mask", "to_uint8", "bit_depth_of", "write_image", "atomic_write_bytes", "encode_png",
           "decode_png", "png_parameters", "PNG_COMPRESSIONS"]

#: Bit depths a 16-bit container (PNG, TIFF) may hold: 10/12/14-bit sensor data is stored in 16
#: bits with the top bits zero, so dividing by 65535 would make it almost black.
BIT_DEPTHS = (8, 10, 12, 14, 16)

#: Extensions of the image files found in folders (lower case), the one list every command uses:
#: generate's inputs, textures, masks, and evaluate's generated and real sets.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")

#: EXIF / TIFF tag of the orientation.
_ORIENTATION = 0x0112
#: The pixel limit of this process's reads when a caller gives none (set by :func:`pixel_limit`).
_default_max_pixels: int | None = None
#: Warnings already issued by this process (each file is reported once).
_reported: set[str] = set()


class ImageReadError(ValueError):
    """An image file could not be read; the message names the file and the fix."""


class ImageDecodeWarning(UserWarning):
    """A file was read, but not exactly as stored (transparency, CMYK, frames); names the file."""


def warn_once(message: str) -> None:
    """Issue ``message`` as an :class:`ImageDecodeWarning` unless this process already did."""
    if message not in _reported:
        _reported.add(message)
        warnings.warn(message, ImageDecodeWarning, stacklevel=3)


@contextmanager
def pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Every read inside the block refuses images above ``max_pixels`` (``None``: PIL's limit).

    ``generate --max-pixels`` sets it for the whole run, so textures, masks and defect banks obey
    the same limit as the inputs.
    """
    global _default_max_pixels
    saved = _default_max_pixels
    _default_max_pixels = max_pixels
    try:
        yield
    finally:
        _default_max_pixels = saved


def set_pixel_limit(max_pixels: int | None) -> None:
    """Set this process's limit for good (a worker process of a run; see :func:`pixel_limit`)."""
    global _default_max_pixels
    _default_max_pixels = max_pixels


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


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    # PIL's own bomb check runs at open and, for TIFF, again at load: lifted for the whole decode
    # (the caller's limit is checked instead), under a lock since the setting is global
    with _PIL_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:
                yield im
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _reading(path: Path) -> Iterator[Image.Image]:
    """:func:`_opened`, with every decoding failure as one :class:`ImageReadError` naming the file."""
    try:
        with _opened(path) as im:
            yield im
    except ImageReadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: cannot read this image ({exc}); the file is truncated, "
                             "corrupt or not an image: replace or remove it") from exc


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1  # unreadable EXIF: shown as stored, as viewers do
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _limit(max_pixels: int | None) -> int | None:
    if max_pixels is not None:
        return int(max_pixels)
    return _default_max_pixels if _default_max_pixels is not None else Image.MAX_IMAGE_PIXELS


def _pixels(n: int) -> str:
    return f"{n / 1e6:.0f} Mpx" if n >= 10**7 else f"{n / 1e6:.1f} Mpx" if n >= 10**5 else f"{n} px"


def _memory(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GiB" if n_bytes >= 2**29 else f"{max(1, round(n_bytes / 2**20))} MiB"


def image_size(path: str | os.PathLike, oriented: bool = True) -> tuple[int, int]:
    """``(width, height)`` of an image as :func:`read_image_raw` reads it (orientation applied;
    ``oriented=False``: as stored in the file), from its header alone.

    Raises
    ------
    ImageReadError
        Unreadable files.
    """
    with _reading(Path(path)) as im:
        width, height = im.size
        stored = (im.tag_v2.get(256), im.tag_v2.get(257)) if im.format == "TIFF" else (width, height)
        if stored != (width, height):  # PIL's TIFF reader turns the image at open
            width, height = stored
        if oriented and _orientation(im) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def read_image_raw(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Decode an image as a viewer shows it (module docstring): ``(H, W, C)``, C = 1 or 3, uint8,
    or uint16 for 16-bit data (scale it with :func:`to_uint8`).

    ``max_pixels`` is the largest accepted ``width * height`` (default: the :func:`pixel_limit` in
    force, else PIL's ``Image.MAX_IMAGE_PIXELS``, about 89 Mpx), checked before decoding, for
    every format.

    Raises
    ------
    ImageReadError
        Unreadable, truncated or oversized files (the message names ``--max-pixels``), and colour
        modes with no RGB reading.
    """
    path = Path(path)
    limit = _limit(max_pixels)
    notes: list[str] = []
    with _reading(path) as im:
        w, h = im.size
        if limit is not None and w * h > limit:
            raise ImageReadError(
                f"{path}: refused, too many pixels for a safe decode ({w}x{h} = {_pixels(w * h)}, "
                f"limit {_pixels(limit)}); pass --max-pixels {w * h} if memory allows "
                f"(about {_memory(w * h * 4)}), or downscale the file")
        frames = getattr(im, "n_frames", 1)
        if frames > 1:
            notes.append(f"holds {frames} frames (an animation or pages); only the first is read")
        arr = _decode(im, path, notes)
    for note in notes:
        warn_once(f"{path}: {note}")
    return arr


def image_mode(path: str | os.PathLike) -> str:
    """PIL's mode of an image file as stored (``"P"`` for a palette, ``"RGBA"``, ...), from its header.

    Raises
    ------
    ImageReadError
        Unreadable files.
    """
    with _reading(Path(path)) as im:
        return im.mode


def read_labels(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """A label map or mask as ``(H, W)`` uint8: a palette file's indices (an index is a class, not
    a colour), any other file's grey levels (:func:`read_image`); turned by its orientation and
    under the pixel limit as every read, so labels line up with their image.

    Raises
    ------
    ImageReadError
        As :func:`read_image_raw`.
    """
    path = Path(path)
    limit = _limit(max_pixels)
    with _reading(path) as im:
        # above the limit: refused below, with the message every read gives
        if im.mode == "P" and (limit is None or im.size[0] * im.size[1] <= limit):
            im.load()
            ImageOps.exif_transpose(im, in_place=True)
            return np.asarray(im, dtype=np.uint8).copy()
    return read_image(path, channels=1, max_pixels=max_pixels)[..., 0]


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """``arr`` (H, W, C) turned as ``ImageOps.exif_transpose`` turns an image of that orientation."""
    if orientation in (5, 6, 7, 8):
        arr = np.swapaxes(arr, 0, 1)  # transpose; then 6 = flip left-right, 8 = flip top-bottom
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    return np.ascontiguousarray(arr)


def _rawmode(im: Image.Image) -> str:
    if not im.tile:
        return ""
    args = im.tile[0][3]
    return args if isinstance(args, str) else str(args[0]) if args else ""


def _flatten(colour: np.ndarray, alpha: np.ndarray, top: float, path: Path, notes: list[str]) -> np.ndarray:
    """``colour`` composited onto black by ``alpha`` (both float32, ``top`` = opaque)."""
    clear = float((alpha < top).mean())
    if clear > 0:
        notes.append(f"has transparent pixels ({clear:.1%} of the image not opaque); they are composited onto "
                     "black (transparent reads as 0): flatten the file onto another background to change that")
    dtype = np.uint8 if top == 255.0 else np.uint16
    return (colour * alpha / top + 0.5).astype(dtype)


def _decode_deep(path: Path, im: Image.Image, grey: bool, notes: list[str]) -> np.ndarray | None:
    """A 16-bit colour or grey+alpha PNG/TIFF with its 16 bits (PIL keeps only the high bytes)."""
    import cv2

    arr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[2] not in (3, 4) or \
            arr.shape[:2] not in ((im.size[1], im.size[0]), im.size):
        return None
    arr = _orient(arr, _orientation(im))  # OpenCV's unchanged reading leaves the orientation to us
    colour = arr[..., :1] if grey else arr[..., 2::-1]
    if arr.shape[2] == 3:
        return np.ascontiguousarray(colour)
    return _flatten(colour.astype(np.float32), arr[..., 3:4].astype(np.float32), 65535.0, path, notes)


def _decode(im: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    rawmode = _rawmode(im)  # before anything loads the pixels (PNG's EXIF lies after them) and clears it
    grey_alpha = rawmode.startswith("LA")  # PIL reads 16-bit grey+alpha as RGBA
    if im.format in ("PNG", "TIFF") and ";16" in rawmode and im.mode in ("RGB", "RGBA", "LA"):
        deep = _decode_deep(path, im, grey_alpha, notes)
        if deep is not None:
            return deep
        notes.append("16-bit colour that only its 8 high bits could be read of")
    im.load()
    ImageOps.exif_transpose(im, in_place=True)  # TIFF: PIL has already turned it while loading
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im)
        return np.clip(arr, 0, 65535).astype(np.uint16)[..., None]
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return (np.clip(arr / hi, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None]
    if mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.uint8)[..., None]
    if mode == "LA" or (mode == "RGBA" and grey_alpha):
        la = np.asarray(im.convert("LA"), dtype=np.float32)
        return _flatten(la[..., :1], la[..., 1:2], 255.0, path, notes)
    if mode in ("RGBA", "PA") or (mode == "P" and "transparency" in im.info) or "A" in mode:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
        return _flatten(rgba[..., :3], rgba[..., 3:4], 255.0, path, notes)
    if mode == "CMYK":
        notes.append("is CMYK: converted to RGB by the plain formula without a colour profile, so colours may "
                     "differ from a colour-managed viewer; save it as RGB for exact colours")
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise ImageReadError(f"{path}: its colour mode {mode} has no RGB reading ({exc}); save it as RGB or "
                             "grey") from exc


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
    """Read an image as ``(H, W, C)`` uint8, C = 1 or 3, by :func:`read_image_raw`'s rule.

    Grey and RGB images keep their channels unless ``channels`` asks for 1 or 3; 16-bit images
    are scaled by their bit depth (``"auto"``: the smallest of 8, 10, 12, 14, 16 bits that holds
    the image's maximum, so 12-bit sensor data keeps its contrast).

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


def binary_mask(grey: np.ndarray, path: str | os.PathLike, threshold: int | None = None,
                what: str = "mask") -> np.ndarray:
    """A user's mask (``(H, W)`` uint8 grey, as :func:`read_image` reads it) as bool.

    Without ``threshold`` the file must be binary (at most two grey levels, 0 the background):
    a mask with more levels (JPEG-compressed, anti-aliased) is refused, and the message names
    ``--mask-threshold``. With it, pixels ``>= threshold`` are the shape.

    Examples
    --------
    >>> m = np.array([[0, 3, 250, 255]], np.uint8)
    >>> binary_mask(m, "m.jpg", 128).tolist()
    [[False, False, True, True]]
    """
    if threshold is not None:
        return grey >= threshold
    levels = np.unique(grey)
    if len(levels) > 2 or (len(levels) == 2 and levels[0] != 0):
        shown = ", ".join(str(v) for v in levels[:6]) + (", ..." if len(levels) > 6 else "")
        raise ValueError(f"{what} {path} is not binary ({len(levels)} grey levels: {shown}), as a JPEG-compressed "
                         "or anti-aliased mask is; pass --mask-threshold 128 (Python: mask_threshold=128) to take "
                         "pixels >= 128 as the shape, or save it with 0 for background and 255 for the shape")
    return grey > 0


#: Named PNG encodings of a dataset run (``generate --png-compression``). Every one decodes to the
#: same pixels; they trade encoding time against file size. CPU ms per 256 px file and mean size,
#: OpenCV 5.1, one thread (``benchmarks/png_encodings.py``; docs/speed.md): grey draem samples
#: ``fast`` 0.67 ms / 33.8 KiB, ``level1`` 1.27 / 38.6, ``level9`` 4.8 / 37.0; their masks 0.10 /
#: 1.0, 0.35 / 1.9, 2.5 / 1.0; RGB photos 2.5 / 92.7, 3.6 / 90.8, 52 / 82.5.
#:
#: ``fast``
#:     zlib's run-length strategy, which the zlib manual (``deflateInit2``) describes as "designed
#:     to be almost as fast as Z_HUFFMAN_ONLY, but give better compression for PNG image data";
#:     images choose each row's filter among libpng's fast filters (none, sub, up), masks (0/255,
#:     rows of runs) are not filtered. The default.
#: ``level1``
#:     zlib level 1 with its default strategy, every row filter tried: the encoding of
#:     defectforge's runs before ``fast`` (a run recorded without ``png_compression`` used it).
#: ``level9``
#:     zlib level 9, every row filter tried: the smallest files, 4 to 50 times slower than level1.
PNG_COMPRESSIONS = ("fast", "level1", "level9")


def png_parameters(compression: str = "level1", binary: bool = False) -> list[int]:
    """OpenCV ``imencode`` parameters of the named PNG encoding (:data:`PNG_COMPRESSIONS`);
    ``binary``: for a 0/255 mask.

    Every parameter is given, so the bytes do not follow OpenCV's own defaults (which changed
    between versions).

    Examples
    --------
    >>> a = np.arange(64, dtype=np.uint8).reshape(8, 8)
    >>> decoded = [decode_png(encode_png(a, parameters=png_parameters(c))) for c in PNG_COMPRESSIONS]
    >>> all((d == a).all() for d in decoded)
    True
    """
    import cv2

    if compression not in PNG_COMPRESSIONS:
        raise ValueError(f"PNG compression must be one of {list(PNG_COMPRESSIONS)}, got {compression!r}")
    if compression == "fast":
        row_filter = cv2.IMWRITE_PNG_FILTER_NONE if binary else cv2.IMWRITE_PNG_FAST_FILTERS
        return [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
                cv2.IMWRITE_PNG_FILTER, row_filter]
    return [cv2.IMWRITE_PNG_COMPRESSION, 1 if compression == "level1" else 9,
            cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_DEFAULT,
            cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_ALL_FILTERS]


def encode_png(image: np.ndarray, compress_level: int = 1, parameters: list[int] | None = None) -> bytes:
    """PNG bytes of ``(H, W)`` / ``(H, W, 1|3)`` uint8 or uint16 (OpenCV encoder, deterministic).

    ``compress_level``: zlib level, default strategy, every row filter tried; ``parameters``
    (from :func:`png_parameters`) replace it.
    """
    import cv2

    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    elif arr.ndim == 3 and arr.shape[2] == 3:
        arr = arr[..., ::-1]
    if parameters is None:
        parameters = [cv2.IMWRITE_PNG_COMPRESSION, compress_level]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr), parameters)
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def decode_png(data: bytes) -> np.ndarray:
    """The pixels of PNG bytes as stored: ``(H, W)`` grey or ``(H, W, 3)`` RGB, 8- or 16-bit."""
    import cv2

    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError("not PNG data")
    return pixels[..., ::-1] if pixels.ndim == 3 else pixels


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
