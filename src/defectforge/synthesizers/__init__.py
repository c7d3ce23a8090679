"""Built-in synthesizers; importing this package registers them."""

from . import cutpaste, defectmaker, draem, glass, inpainting, memseg, nsa  # noqa: F401
