"""Built-in synthesizers; importing this package registers them."""

from . import compose, cutpaste, defectmaker, draem, glass, inpainting, memseg, nsa  # noqa: F401
