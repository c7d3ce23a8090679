"""Built-in synthesizers; importing this package registers them."""

from . import cutpaste, draem, glass, memseg  # noqa: F401
