"""Training sources of the benchmark: a method, or a weighted mixture of methods (a *recipe*).

A row of ``defectforge benchmark -m`` is one training source. ``-m`` separates rows by commas; a
row joins members with ``+`` and gives each an optional weight after ``:``
(``"real_only:0.5+defect_transplant:0.3+glass_las:0.2"``; no weights: equal shares). Each
synthetic slot of a training batch is drawn from one member by its weight, from the sample's
``(seed, index)`` as every draw of the library (:class:`~defectforge.synthesizers.compose.MixtureSynthesizer`),
and recorded (``params["method"]``). ``real_only`` is the user's few real training defects with
standard augmentation (:mod:`defectforge.realdefect.real_only`), so ``real_only+defect_transplant``
trains on the real defects *and* synthesis.
"""

from __future__ import annotations

from typing import Any

__all__ = ["split_rows", "row_members", "is_mixture", "row_folder", "check_rows", "build_source"]


def split_rows(items) -> list[str]:
    """``-m`` values (repeatable, comma-separated) as rows, spaces around ``+`` and ``:`` removed.

    Examples
    --------
    >>> split_rows(["real_only, real_only:0.5 + glass_las:0.5", "draem"])
    ['real_only', 'real_only:0.5+glass_las:0.5', 'draem']
    """
    rows = []
    for item in items or []:
        for row in str(item).split(","):
            row = "+".join(":".join(p.strip() for p in m.split(":")) for m in row.split("+")).strip("+")
            if row and row not in rows:
                rows.append(row)
    return rows


def row_members(row: str) -> tuple[list[str], list[float]]:
    """The member names and weights of a row (:func:`~defectforge.synthesizers.compose.parse_mix`)."""
    from ...synthesizers.compose import parse_mix

    return parse_mix(row)


def is_mixture(row: str) -> bool:
    """Whether a row names several members (or weights)."""
    return "+" in row or ":" in row


def row_folder(row: str) -> str:
    """The folder name of a row's runs (``:`` is not allowed in Windows file names)."""
    return row.replace(":", "=")


def check_rows(rows: list[str], check_member) -> list[str]:
    """Rows whose every member passes ``check_member(name)`` (which raises with the reason)."""
    for row in rows:
        names, _ = row_members(row)
        if len(set(names)) != len(names):
            raise ValueError(f"training source {row!r} names a member twice")
        for name in names:
            check_member(name)
    return rows


def build_source(row: str, make_member) -> Any:
    """The synthesizer of a row: ``make_member(name)`` for one member, else their mixture."""
    from ...synthesizers.compose import mix

    names, weights = row_members(row)
    if len(names) == 1:
        return make_member(names[0])
    return mix([make_member(n) for n in names], weights)
