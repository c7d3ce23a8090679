"""Issue 19, section 5: the web app speaks in its own terms (gradio-free parts of ``defectforge.ui.app``).

A refusal names the app's controls, never a command-line option the app does not have; a typed
relative folder resolves against a stated folder and is reported as an absolute path; no widget
shows the word ``null``; every widget says what it accepts.
"""

from __future__ import annotations

import re

import pytest
from PIL import Image

import defectforge
from defectforge.realdefect import needs_bank
from defectforge.sources.procedural import surface
from defectforge.ui.app import Session, overrides_of, ui_message, widgets_of

APP_METHODS = [n for n in defectforge.list_methods(level="image") if not needs_bank(n)
               and not getattr(defectforge.method_info(n).cls, "needs_model", False)
               and not defectforge.method_info(n).missing_requirements()]
FLAG = re.compile(r"--[a-z]")


@pytest.fixture
def base(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    for i, kind in enumerate(["metal", "wood"]):
        Image.fromarray(surface(kind, 48, seed=i)).save(good / f"{kind}.png")
    return tmp_path


def test_no_widget_shows_null_and_every_widget_says_its_range():
    for method in APP_METHODS:
        widgets = widgets_of(method)
        for w in widgets:
            assert "null" not in str(w.default) and "null" not in w.info, (method, w)
            if w.kind in ("slider", "number") and w.low is not None and w.high is not None:
                assert f"{w.low:g}" in w.info and f"{w.high:g}" in w.info, (method, w.info)
            if w.kind == "dropdown":
                assert all(str(c) in w.info for c in w.choices), (method, w.info)
        assert overrides_of(widgets, [w.default for w in widgets]) == {}, method  # empty reads back as None
    textures = next(w for w in widgets_of("draem") if w.name == "textures")
    assert textures.default == "" and "empty" in textures.info


def test_a_refusal_names_the_apps_controls_and_the_absolute_folder(base):
    session = Session(base / "work", base=base)
    widgets = widgets_of("cutout")
    values = [w.default for w in widgets]
    summary = session.generate_dataset("made", "cutout", "folder", "good", None, None, 2, 0, widgets, values)
    assert summary["output"] == str(base / "made")                     # relative: from the stated base
    with pytest.raises(FileExistsError) as refused:
        session.generate_dataset("made", "cutout", "folder", "good", None, None, 2, 0, widgets, values)
    assert "--" in str(refused.value)                                  # the library's words name options ...
    said = ui_message(refused.value, "dataset", session.resolve("made"))
    assert not FLAG.search(said) and str(base / "made") in said        # ... the app's do not
    with pytest.raises(ValueError) as refused:
        session.generate_dataset("other", "cutout", "folder", "good", None, 8, 0, 0, widgets, values)
    said = ui_message(refused.value, "dataset")
    assert not FLAG.search(said) and "the 'count' box" in said, said
    with pytest.raises(ValueError) as refused:
        session.render("cutout", "folder", "missing", None, None, 2, 0, widgets, values)
    assert str(base / "missing") in str(refused.value) and str(base) in str(refused.value)
    assert ui_message(ValueError("pass --max-pixels 5"), "preview") == \
        "pass the command line's --max-pixels (not in this app) 5"
