"""Built-in synthesizers; importing this package registers them."""

from . import cutpaste, defectmaker, draem, glass, memseg, nsa  # noqa: F401
