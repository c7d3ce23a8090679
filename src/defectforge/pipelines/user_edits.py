"""A generated file whose bytes changed since the run wrote it is the user's now.

Users open a generated dataset and correct masks by hand; that is labelling work, not damage.
Every manifest record holds the size and SHA-256 of the image and mask the run wrote
(``image_file`` / ``mask_file``), and the atomic writer never leaves a half-written file, so a
file that is there with other bytes was changed by someone. ``--overwrite`` refuses to delete
such files and ``--resume`` keeps them (it remakes only what is missing), unless the user passes
``--discard-edits``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FileState", "RunFiles", "EditedFilesError", "DISCARD_OPTION", "file_state", "check_run_files",
           "listed", "refuse_overwrite", "kept_edits_line"]

#: The option that lets ``--overwrite`` / ``--resume`` replace the files a user edited.
DISCARD_OPTION = "--discard-edits"

#: The two files of a sample: the manifest's path key and the key of its size and hash.
_FILE_KEYS = (("image_path", "image_file"), ("mask_path", "mask_file"))


class EditedFilesError(FileExistsError):
    """``--overwrite`` would delete files the user changed after the run wrote them."""


class FileState:
    """What became of a file the run recorded."""

    INTACT = "intact"
    MISSING = "missing"
    EDITED = "edited"


def file_state(path: Path, expected: dict | None) -> str:
    """:class:`FileState` of ``path`` against its record ``{"bytes", "sha256"}`` (``None``: presence only)."""
    try:
        if not path.is_file():
            return FileState.MISSING
        if expected is None:
            return FileState.INTACT
        if path.stat().st_size != expected.get("bytes"):
            return FileState.EDITED
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return FileState.MISSING
    return FileState.INTACT if digest == expected.get("sha256") else FileState.EDITED


@dataclass
class RunFiles:
    """The recorded samples of a run, sorted by what became of their files.

    Attributes
    ----------
    intact : dict[int, dict]
        Samples whose files are all there as written, or edited with none missing: they are
        not made again (an edited file stays as the user left it).
    incomplete : list[int]
        Samples with a missing file: made again.
    edited : list[str]
        Files (relative POSIX paths) whose bytes differ from the record, sorted.
    """

    intact: dict[int, dict] = field(default_factory=dict)
    incomplete: list[int] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)


def check_run_files(output: Path, records: dict[int, dict], keep_edits: bool = True) -> RunFiles:
    """Check every file the records of ``output`` name (size, then SHA-256 when the size matches).

    With ``keep_edits=False`` (``--discard-edits``) a sample with an edited file is made again
    like one with a missing file.
    """
    found = RunFiles()
    for index, record in sorted(records.items()):
        missing = False
        for path_key, file_key in _FILE_KEYS:
            rel = record.get(path_key)
            if not isinstance(rel, str):
                continue
            state = file_state(output / rel, record.get(file_key))
            if state == FileState.EDITED:
                found.edited.append(rel)
            missing |= state == FileState.MISSING or (state == FileState.EDITED and not keep_edits)
        if missing:
            found.incomplete.append(index)
        else:
            found.intact[index] = record
    found.edited.sort()
    return found


def listed(files: list[str], shown: int = 5) -> str:
    """``a, b, c and 4 more``: a few names of a long list, for a one-line message."""
    text = ", ".join(files[:shown])
    return text + (f" and {len(files) - shown} more" if len(files) > shown else "")


def refuse_overwrite(output: Path, edited: list[str]) -> None:
    """Raise :class:`EditedFilesError` naming the edited files and the option that discards them."""
    raise EditedFilesError(f"--overwrite refused, nothing deleted: {output} holds {len(edited)} file(s) changed "
                           f"since the run wrote them, e.g. masks corrected by hand ({listed(edited)}); move them "
                           f"away, or pass {DISCARD_OPTION} to delete them with the run")


def kept_edits_line(edited: list[str]) -> str:
    """The one line ``--resume`` prints when it kept edited files instead of making them again."""
    return (f"kept {len(edited)} file(s) you changed since the run wrote them ({listed(edited)}); "
            f"{DISCARD_OPTION} replaces them with the generated ones")
