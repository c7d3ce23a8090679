"""Built-in synthesizers; importing this package registers them."""

from . import cutpaste, draem  # noqa: F401
