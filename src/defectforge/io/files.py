"""Atomic file writing: the one writer every module uses for files a user keeps.

A file written here is either absent or complete: the data goes to a temporary file in the same
folder, which is then renamed over the target (``os.replace`` is atomic on POSIX and Windows).
A process killed mid-write (``kill -9``) leaves at most a ``.<name>.*.tmp`` file, never a
truncated target; a full disk raises before the target is touched. No ``fsync``: the guarantee
is against process death, not power loss.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "write_json"]

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[IO[bytes]], object]) -> None:
    """Write ``data`` (bytes, or a function writing to a binary stream) to ``path`` atomically.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt"
    >>> atomic_write(target, b"hello")
    >>> target.read_bytes()
    b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming_target(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            if isinstance(data, (bytes, bytearray, memoryview)):
                fh.write(data)
            else:
                data(fh)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (tmp, None):
            raise _naming_target(exc, path) from None
        raise


def _naming_target(exc: OSError, path: Path) -> OSError:
    """The same error naming the file the user asked for, not our hidden temporary file beside it."""
    return type(exc)(exc.errno, exc.strerror, str(path)) if exc.errno is not None else exc


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``atomic_write`` of bytes."""
    atomic_write(path, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """``atomic_write`` of UTF-8 text."""
    atomic_write(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically, sanitised by :func:`~defectforge.core.types.to_jsonable`."""
    import json

    from ..core.types import to_jsonable

    atomic_write_text(path, json.dumps(to_jsonable(data), indent=indent) + "\n")
