"""Capabilities: what a synthesizer class declares about itself, in one list.

A caller that needs to know whether a method takes donors, needs a bank of real defects or a
trained model reads it from :func:`capabilities_of` (as ``method_info(name).capabilities`` or
``synth.capabilities``), never by probing a class for an attribute, so every capability has one
declared name, type and default here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CAPABILITIES", "capabilities_of"]

#: Every capability a caller may read, with the value of a class that does not declare it: the
#: typed class attributes of :class:`Synthesizer`, reported by :func:`capabilities_of` (and so by
#: ``method_info(name).capabilities`` and ``synth.capabilities``). Callers read them there, never
#: by probing a class for an attribute.
CAPABILITIES: dict[str, Any] = {
    "any_dtype": False,
    "changes_outside_mask": False,
    "uses_donors": False,
    "requires": (),
    "foreground_is_hint": False,
    "needs_bank": False,
    "needs_model": False,
    "model_kind": None,
    "detector": None,
}


def capabilities_of(target, cpu_bound: bool = False) -> dict[str, Any]:
    """The capabilities of a synthesizer class or instance as plain JSON values (``requires`` a list).

    An instance may narrow its class's values in ``__init__`` (DefectMaker without cut fills uses
    no donors), so an instance reports its own. ``cpu_bound`` is the registry preset's flag.

    Examples
    --------
    >>> caps = capabilities_of(object)
    >>> caps["uses_donors"], caps["requires"], caps["model_kind"]
    (False, [], None)
    """
    caps: dict[str, Any] = {}
    for name, default in CAPABILITIES.items():
        value = getattr(target, name, default)
        if isinstance(default, tuple):
            caps[name] = list(value)
        elif isinstance(default, bool):
            caps[name] = bool(value)
        else:
            caps[name] = value
    caps["cpu_bound"] = bool(cpu_bound)
    return caps
