"""One writer per output folder: an OS lock on ``OUTPUT/.defectforge.lock`` for the whole run.

Two runs writing the same folder (a ``--resume`` or ``--overwrite`` started while another run
writes there) leave a ``config.yaml`` describing one run and a manifest describing the other.
So every writer (``generate`` with any engine, the UI's "generate dataset", ``demo``) holds an
exclusive ``flock`` on ``OUTPUT/.defectforge.lock`` from before it reads or deletes anything
there until it is done. The kernel releases the lock when its process dies, ``kill -9``
included, so a killed run never blocks the ``--resume`` that continues it; the file also holds a
record of its holder (pid, host, start time, command), which the refusal names.

Where the file system has no ``flock`` (some network file systems), the record alone decides:
a holder on this host whose pid is no longer alive is stale and taken over; a holder on another
host cannot be checked, so the refusal says which file to delete once that process is gone.

The lock file is the tool's own: ``--overwrite`` neither counts it as a user's file nor deletes
it, and the manifest never names it. It is removed when the run ends; a ``kill -9`` leaves it
behind, and the next run takes it over.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path

__all__ = ["LOCK_NAME", "OutputLock", "OutputLockedError", "lock_output"]

#: The lock file inside an output folder.
LOCK_NAME = ".defectforge.lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; the holder record decides (see the module docstring)
    fcntl = None

#: flock errors that mean "this file system cannot lock", not "someone holds it".
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class OutputLockedError(FileExistsError):
    """Another process is writing the output folder; ``holder`` says which (pid, host, start, command)."""

    def __init__(self, message: str, holder: str = ""):
        super().__init__(message)
        self.holder = holder


def _holder_record(command: str | None) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": command if command is not None else shlex.join(_command_line())}


def _command_line() -> list[str]:
    # "defectforge generate ..." rather than the interpreter and the module path
    argv = list(sys.argv) or ["python"]
    if Path(argv[0]).name in ("main.py", "__main__.py", "defectforge"):
        argv[0] = "defectforge"
    return argv


def _read_holder(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive_here(holder: dict) -> bool:
    """The holder runs on this host and its pid is alive (a zombie or a reused pid counts as alive)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (it has not recorded itself yet)"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command')}")


class OutputLock:
    """The exclusive lock of one output folder; use :func:`lock_output` (a context manager).

    Parameters
    ----------
    output : path
        The output folder; made (with its parents) if missing, and removed again on release
        when it was made here and nothing but the lock was written into it.
    command : str, optional
        What the record names as the holder's command (default: this process's command line).
    """

    def __init__(self, output: str | os.PathLike, command: str | None = None):
        self.output = Path(output)
        self.path = self.output / LOCK_NAME
        self.command = command
        self.fd: int | None = None
        self.made: list[Path] = []  # folders made for the lock, deepest first
        #: the record of a holder that died without releasing the lock (``kill -9``), if any
        self.stale: dict | None = None

    def acquire(self) -> OutputLock:
        """Take the lock, or raise :class:`OutputLockedError` naming the process that holds it."""
        if self.output.exists() and not self.output.is_dir():
            raise OutputLockedError(f"OUTPUT {self.output} is a file, not a folder; choose a folder")
        missing = [p for p in (self.output, *self.output.parents) if not p.exists()]
        self.output.mkdir(parents=True, exist_ok=True)
        self.made = missing
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                locked = self._flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if not locked:
                os.close(fd)
                self._refuse(_read_holder(self.path))
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the previous holder removed the file between our open and our lock: again
        self.fd = fd
        previous = _read_holder(self.path)
        if previous:  # the file outlived its holder: a run killed before it could remove it
            self.stale = previous
        data = json.dumps(_holder_record(self.command)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return self

    def _flock(self, fd: int) -> bool:
        """True when this process now holds the lock; False when a live process does."""
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    raise
        holder = _read_holder(self.path)  # no flock here: the record decides
        if holder:
            if holder.get("host") != socket.gethostname():
                raise OutputLockedError(
                    f"OUTPUT {self.output} is being written by {_describe(holder)}; this file system cannot "
                    f"lock, so if that process has ended, delete {self.path} and run again", _describe(holder))
            return not _alive_here(holder)
        return True

    def _refuse(self, holder: dict | None) -> None:
        raise OutputLockedError(f"OUTPUT {self.output} is being written by {_describe(holder)}; wait for it to "
                                "end (or stop it) and run again, or choose another OUTPUT", _describe(holder))

    def release(self) -> None:
        """Remove the lock file, then unlock; remove OUTPUT too when it was made here and is empty."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)  # closing the last descriptor releases the flock
        self.fd = None
        for folder in self.made:
            try:
                folder.rmdir()  # only if empty: a run refused before writing leaves no folder behind
            except OSError:
                break

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_output(output: str | os.PathLike, command: str | None = None) -> OutputLock:
    """A context manager holding the lock of ``output`` (see the module docstring).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> with lock_output(out, command="example"):
    ...     (out / LOCK_NAME).is_file()
    True
    >>> out.exists()
    False
    """
    return OutputLock(output, command)
