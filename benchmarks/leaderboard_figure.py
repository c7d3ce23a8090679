"""Redraw the leaderboard bar chart from a markdown table of measured results.

``defectforge benchmark`` draws ``leaderboard.png`` from its run folder; this script draws the
same chart (:func:`defectforge.detectors.benchmark.figures.bar_chart`) from the first table of a
markdown file whose header starts ``| method | image AUROC | pixel AUROC |`` (a ``seeds`` column
after ``method`` allowed, as ``leaderboard.md`` writes it) and whose cells hold ``mean +- std``, so
the published figure can be redrawn without the run folder:

    python benchmarks/leaderboard_figure.py docs/benchmark.md docs/benchmark/leaderboard.png
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from defectforge.detectors.benchmark.figures import bar_chart
from defectforge.io.images import write_image

_HEADER = re.compile(r"^\|\s*method\s*\|(\s*seeds\s*\|)?\s*image AUROC\s*\|\s*pixel AUROC\s*\|")
_VALUE = re.compile(r"([-\d.]+)\s*(?:\+-|±)\s*([-\d.]+)")


def table_rows(markdown: str) -> list[dict]:
    """The rows of the first leaderboard table: method, baseline flag, (mean, std) per AUROC."""
    rows, inside, first = [], False, 1
    for line in markdown.splitlines():
        header = _HEADER.match(line)
        if header and not inside and not rows:
            inside, first = True, 2 if header.group(1) else 1
            continue
        if inside and line.startswith("|---"):
            continue
        if inside and not line.startswith("|"):
            break
        if inside:
            cells = [c.strip() for c in line.strip("|").split("|")]
            name = cells[0].replace("*", "")
            baseline = "baseline" in name
            values = [_VALUE.search(c) for c in cells[first:first + 2]]
            rows.append({"method": name.split(" (")[0].strip(), "baseline": baseline,
                         "image_auroc": tuple(map(float, values[0].groups())),
                         "pixel_auroc": tuple(map(float, values[1].groups()))})
    if not rows:
        raise SystemExit("no '| method | image AUROC | pixel AUROC |' table found")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("markdown", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    rows = table_rows(args.markdown.read_text())
    write_image(args.output, bar_chart(rows))
    print(f"wrote {args.output}: {len(rows)} rows")


if __name__ == "__main__":
    main()
