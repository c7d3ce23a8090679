"""The README and the pages under ``docs/`` stay true to the code and to each other.

- Every relative link reaches a file, and every ``#anchor`` a heading of the target page under
  both GitHub's and mkdocs' heading ids (they differ on some punctuation), so a link works on
  GitHub and in the built site alike. ``mkdocs build --strict`` (``.ci/run``) checks the site's
  side again; this test needs no mkdocs.
- Every page is in ``mkdocs.yml``'s nav.
- The methods page holds ``defectforge methods --markdown``'s table; the command-line page lists
  every registered command.
- No page, docstring or changelog cites a path of the machine it was written on, or a
  development session or issue number.
- The Python blocks the pages present as self-contained run.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from defectforge.cli.main import _commands, _register_commands, app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def _prose(text: str) -> list[str]:
    """The page's lines outside fenced code blocks (where ``#`` is a comment, not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _heading_text(line: str) -> str:
    text = line.lstrip("#").strip()
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link's text
    return text.replace("`", "").replace("*", "")


def github_id(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def mkdocs_id(heading: str) -> str:
    """Python-Markdown's ``toc`` id (mkdocs' default): ASCII, punctuation dropped, runs of spaces and hyphens one hyphen."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def _ids(page: Path) -> tuple[set[str], set[str]]:
    headings = [_heading_text(line) for line in _prose(page.read_text()) if re.match(r"^#{1,6} ", line)]
    return {github_id(h) for h in headings}, {mkdocs_id(h) for h in headings}


def _links(page: Path) -> list[str]:
    found = []
    for line in _prose(page.read_text()):
        line = re.sub(r"`[^`]*`", "", line)  # code spans hold no links
        found += [m.group(1) for m in _LINK.finditer(line)]
    return [link for link in found if not re.match(r"^[a-z]+:", link)]  # http(s), mailto


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_reaches_a_file_and_every_anchor_a_heading(page):
    broken = []
    for link in _links(page):
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.is_file():
            broken.append(f"{link}: no file {path.relative_to(ROOT) if ROOT in path.parents else path}")
            continue
        if anchor:
            on_github, in_mkdocs = _ids(path)
            if anchor not in on_github or anchor not in in_mkdocs:
                broken.append(f"{link}: no heading with this id on GitHub ({anchor in on_github}) "
                              f"and in mkdocs ({anchor in in_mkdocs})")
    assert not broken, f"{page.name}:\n" + "\n".join(broken)


def test_heading_ids_follow_both_rules():
    """The helpers agree with GitHub and mkdocs on the cases where the two differ."""
    assert github_id("Per-type FID / KID") == "per-type-fid--kid"
    assert mkdocs_id("Per-type FID / KID") == "per-type-fid-kid"
    assert github_id(_heading_text("## Given the normal patches too: `residual_seg`")) == \
        mkdocs_id(_heading_text("## Given the normal patches too: `residual_seg`")) == \
        "given-the-normal-patches-too-residual_seg"


def _nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_page_is_in_the_site_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["docs_dir"] == "docs"
    nav = _nav_pages(config["nav"])
    assert sorted(nav) == sorted(p.name for p in DOCS.glob("*.md")), "mkdocs.yml's nav and docs/*.md differ"
    assert nav[0] == "index.md"


def test_the_methods_page_holds_the_registry_table():
    _register_commands()
    table = CliRunner().invoke(app, ["methods", "--markdown"])
    assert table.exit_code == 0, table.output
    assert table.output.strip() in (DOCS / "methods.md").read_text(), \
        "docs/methods.md's table is not `defectforge methods --markdown`'s output: paste it again"


def test_the_command_line_page_lists_every_command():
    page = (DOCS / "cli.md").read_text()
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", page, flags=re.M))
    helps = set(re.findall(r"^defectforge ([a-z-]+) --help$", page, flags=re.M))
    assert rows == helps == set(_commands()), "docs/cli.md and cli/main.py's command table differ"


#: A path of the machine a page was written on (the repository's own paths are relative).
_MACHINE_PATH = re.compile(r"(?<![\w.~])/(?:work|home|tmp|root|mnt|Users)/")
#: Development history that belongs in CHANGELOG.md or nowhere: sessions, issue numbers.
_HISTORY = re.compile(r"\b(?:this|previous|earlier|that) session\b|\bsession's\b|\bissues? #?\d+\b", re.I)


def _shipped_text() -> list[tuple[Path, str]]:
    files = PAGES + sorted((ROOT / "src").rglob("*.py"))
    return [(path, path.read_text()) for path in files]


def test_no_machine_paths_and_no_session_history_in_shipped_files():
    found = []
    for path, text in _shipped_text():
        for number, line in enumerate(text.splitlines(), 1):
            if _MACHINE_PATH.search(line) or (path.name != "CHANGELOG.md" and _HISTORY.search(line)):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_the_checks_find_what_they_look_for():
    assert _MACHINE_PATH.search("python x.py /work/shared/data/magnetic_tile")
    assert not _MACHINE_PATH.search("defectforge benchmark /path/to/magnetic_tile ~/tmp/x")
    assert _HISTORY.search("measured before issue 22") and _HISTORY.search("at the session's start")
    assert not _HISTORY.search("a training session of the GAN; the issue is the mask")


def _python_blocks(page: Path) -> list[str]:
    blocks, current = [], None
    for line in page.read_text().splitlines():
        if current is None and line.startswith("```python"):
            current = []
        elif current is not None and line.startswith("```"):
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


#: (page, block number): the Python blocks that define everything they use (the others continue
#: from names a reader has: a loader, features, a trained model).
SELF_CONTAINED = [("python_api.md", 0), ("features.md", 0)]


@pytest.mark.parametrize("page, number", SELF_CONTAINED)
def test_self_contained_python_blocks_run(page, number, tmp_path, monkeypatch):
    block = _python_blocks(DOCS / page)[number]
    assert block.startswith("import "), f"{page} block {number} is listed as self-contained but does not begin with its imports"
    monkeypatch.chdir(tmp_path)
    exec(compile(block, f"{page}[{number}]", "exec"), {})
