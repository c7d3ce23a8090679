"""Parsing of the command line's compact strings (``--mix``) into library arguments."""

from __future__ import annotations

import math

__all__ = ["parse_mix"]


def parse_mix(text: str) -> tuple[list[str], list[float]]:
    """``"draem:0.5,cutpaste:0.5"`` -> names and probabilities (``"a,b"`` means equal shares).

    Examples
    --------
    >>> parse_mix("draem:0.25, cutpaste:0.75")
    (['draem', 'cutpaste'], [0.25, 0.75])
    """
    names, probs = [], []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        name, _, weight = item.partition(":")
        names.append(name.strip())
        try:
            probs.append(float(weight) if weight else float("nan"))
        except ValueError:
            raise ValueError(f"--mix entry {item!r}: the probability after ':' must be a number") from None
    if not names:
        raise ValueError("--mix needs entries like 'draem:0.5,cutpaste:0.5'")
    if all(math.isnan(p) for p in probs):
        probs = [1.0 / len(names)] * len(names)
    elif any(math.isnan(p) for p in probs):
        raise ValueError("--mix: give a probability for every method or for none")
    return names, probs
