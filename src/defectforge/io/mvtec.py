"""The MVTec-AD folder layout: the one reader every module uses (generate, detectors, metrics, banks).

Layout (MVTec AD, Bergmann et al., CVPR 2019)::

    CATEGORY/train/good/*.png                       normal training images
    CATEGORY/test/good/*.png                        normal test images
    CATEGORY/test/<defect>/<stem>.png               anomalous test images
    CATEGORY/ground_truth/<defect>/<stem>_mask.png  their masks (0 / 255)

Every problem (a missing folder, no images, a defect image without its mask, a mask whose size
differs from its image, a mask without an image) is reported with the paths involved.
"""

from __future__ import annotations

import os
from pathlib import Path

from .images import ImageReadError, image_size, list_images

__all__ = ["MVTecLayoutError", "MASK_SUFFIX", "is_mvtec_category", "mask_path", "defect_folders",
           "check_mvtec_category"]

#: Suffix of a ground-truth mask's stem: ``<stem>_mask.png`` for image ``<stem>.png``.
MASK_SUFFIX = "_mask"


def is_mvtec_category(path: str | os.PathLike) -> bool:
    """``True`` when ``path`` holds ``train/good`` (an MVTec-AD category)."""
    return (Path(path) / "train" / "good").is_dir()


def mask_path(root: str | os.PathLike, defect: str, image: str | os.PathLike) -> Path | None:
    """The ground-truth mask of test image ``image`` of type ``defect`` (any image extension), or ``None``.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "ground_truth" / "crack").mkdir(parents=True)
    >>> _ = (root / "ground_truth" / "crack" / "003_mask.png").write_bytes(b"")
    >>> mask_path(root, "crack", "test/crack/003.png").name
    '003_mask.png'
    >>> mask_path(root, "good", "test/good/000.png") is None
    True
    """
    if defect == "good":
        return None
    folder = Path(root) / "ground_truth" / defect
    if not folder.is_dir():
        return None
    stem = Path(image).stem
    exact = folder / f"{stem}{MASK_SUFFIX}.png"
    if exact.is_file():
        return exact
    candidates = sorted(folder.glob(f"{stem}{MASK_SUFFIX}.*"))
    return candidates[0] if candidates else None


def defect_folders(root: str | os.PathLike, include_good: bool = False) -> list[Path]:
    """The ``test/<defect>`` folders of a category, sorted by name (``good`` only if asked)."""
    test = Path(root) / "test"
    if not test.is_dir():
        return []
    return sorted(d for d in test.iterdir() if d.is_dir() and (include_good or d.name != "good"))


class MVTecLayoutError(ValueError):
    """A data folder is not an MVTec-AD-shaped category."""


def _image_size(path: Path) -> tuple[int, int]:
    # as the image is read (orientation applied), so a mask is compared with its image as both are used
    try:
        return image_size(path)
    except ImageReadError as exc:
        raise MVTecLayoutError(str(exc)) from exc


def check_mvtec_category(root: str | os.PathLike) -> dict[str, list]:
    """Check the layout of an MVTec-AD category without decoding the images.

    Returns ``{"train": [paths], "test": [(path, defect, mask_path or None)]}``.

    Raises
    ------
    MVTecLayoutError
        Naming the path and what was expected.
    """
    root = Path(root).expanduser()
    hint = ("an MVTec-AD category holds train/good/, test/good/, test/<defect>/ and "
            "ground_truth/<defect>/<stem>_mask.png")
    if not root.is_dir():
        raise MVTecLayoutError(f"data folder {root} does not exist or is not a folder; {hint}")
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise MVTecLayoutError(f"{root} is not MVTec-shaped: missing {train_dir}; {hint}")
    train = list_images(train_dir, recursive=False)
    if not train:
        raise MVTecLayoutError(f"{train_dir} holds no images (png/jpg/bmp/tif); {hint}")
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise MVTecLayoutError(f"{root} is not MVTec-shaped: missing {test_dir}; {hint}")
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    if "good" not in defects:
        raise MVTecLayoutError(f"{root} is not MVTec-shaped: missing {test_dir / 'good'} (normal test images); {hint}")
    if len(defects) < 2:
        raise MVTecLayoutError(f"{test_dir} has no defect folder besides good/; {hint}")
    gt_dir = root / "ground_truth"
    test: list[tuple[Path, str, Path | None]] = []
    problems: list[str] = []
    for defect in defects:
        images = list_images(test_dir / defect, recursive=False)
        if not images:
            problems.append(f"{test_dir / defect} holds no images")
        for path in images:
            mask = None
            if defect != "good":
                mask = mask_path(root, defect, path)
                if mask is None:
                    problems.append(f"{path}: no mask {gt_dir / defect / (path.stem + MASK_SUFFIX + '.png')}")
                    continue
                if _image_size(mask) != _image_size(path):
                    problems.append(f"{mask}: size {_image_size(mask)} does not match its image {path} "
                                    f"{_image_size(path)}")
                    continue
            test.append((path, defect, mask))
        if defect != "good" and (gt_dir / defect).is_dir():
            stems = {p.stem for p in images}
            for mask in list_images(gt_dir / defect, recursive=False):
                stem = mask.stem.removesuffix(MASK_SUFFIX)
                if stem not in stems:
                    problems.append(f"{mask}: mask without an image {test_dir / defect / stem}.*")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise MVTecLayoutError(f"{root} is not a valid MVTec-AD category ({len(problems)} problems):\n  {shown}{more}\n"
                               f"Expected: {hint} (same size as its image)")
    return {"train": train, "test": test}
