"""The web app: widgets from the parameter schema, samples identical to `generate --config`, and the
whole page driven in a real headless Chromium (Playwright with Debian's chromium via executable_path)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from defectforge.ui.app import Session, overrides_of, widgets_of

#: CI (.ci/run) sets this: there the browser test must run, never skip.
REQUIRED = os.environ.get("DEFECTFORGE_REQUIRE_BROWSER") == "1"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cli(args):
    from typer.testing import CliRunner

    from defectforge.cli.main import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_widgets_come_from_the_schema():
    widgets = {w.elem_id: w for w in widgets_of("draem")}
    low, high = widgets["param-draem-opacity_range-min"], widgets["param-draem-opacity_range-max"]
    assert (low.kind, low.default, low.low, low.high, high.default) == ("slider", 0.2, 0.0, 1.0, 1.0)
    assert widgets["param-draem-augmentations"].choices == ("draem", "anomalib", "none")
    # the values a dataset run uses: every sample anomalous, empty masks redrawn
    assert widgets["param-draem-anomaly_probability"].default == 1.0
    assert widgets["param-draem-empty_mask_policy"].default == "retry"
    assert widgets["param-draem-dual_mask"].kind == "checkbox"
    ws = widgets_of("cutpaste")
    values = [w.default for w in ws]
    assert overrides_of(ws, values) == {}
    values[[w.elem_id for w in ws].index("param-cutpaste-area_ratio_range-max")] = 0.3
    assert overrides_of(ws, values) == {"area_ratio_range": [0.02, 0.3]}


def test_app_builds_for_every_method(tmp_path):
    import defectforge

    for name in defectforge.list_methods(level="image"):
        if getattr(defectforge.method_info(name).cls, "needs_model", False):
            continue  # realnet_sdas, masked_diffusion: not offered by the app (they need model=)
        for w in widgets_of(name):
            assert w.kind != "slider" or w.low < w.high, w  # destseg fixes augmentations_per_sample to 0..0
    if not REQUIRED:
        pytest.importorskip("gradio", reason='the web app needs the ui extra: pip install -e ".[ui]"')
    from defectforge.ui.app import build_app

    app = build_app(Session(tmp_path))  # every available method's widgets
    assert app is not None


def test_screen_samples_are_what_generate_config_writes(tmp_path):
    session = Session(tmp_path / "work")
    ws = widgets_of("cutpaste")
    values = [w.default for w in ws]
    values[[w.elem_id for w in ws].index("param-cutpaste-color_jitter")] = 0.3
    shown = session.render("cutpaste", "built-in surfaces", None, None, 64, 3, 5, ws, values)
    assert shown["grid"].shape == (3 * 68, 3 * 68, 3)
    assert "--set color_jitter=0.3" in shown["command"]
    result = _cli(["generate", "--config", shown["config"], tmp_path / "again", "-q"])
    assert result.exit_code == 0, result.output
    for path, _ in shown["gallery"]:
        rel = Path(path).relative_to(shown["run"])
        assert (tmp_path / "again" / rel).read_bytes() == Path(path).read_bytes()
    # the command shown reproduces them too
    result = _cli(shown["command"].replace("defectforge generate ", "generate ").replace(" out ", f" {tmp_path / 'cmd'} ")
                  .split(" ") + ["-q"])
    assert result.exit_code == 0, result.output
    for path, _ in shown["gallery"]:
        assert (tmp_path / "cmd" / Path(path).relative_to(shown["run"])).read_bytes() == Path(path).read_bytes()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_browser_end_to_end(tmp_path, monkeypatch):
    chromium = _chromium()
    if chromium is None and not REQUIRED:
        pytest.skip("no chromium executable on PATH (apt-get install chromium); .ci/run installs it")
    if not REQUIRED:
        pytest.importorskip("gradio", reason='the web app needs the ui extra: pip install -e ".[ui]"')
        pytest.importorskip("playwright", reason='the browser test needs the ui extra: pip install -e ".[ui]"')
    assert chromium is not None, "DEFECTFORGE_REQUIRE_BROWSER=1 but no chromium on PATH"
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import sync_playwright

    from defectforge.ui.app import build_app

    session = Session(tmp_path / "work")
    app = build_app(session, methods=["draem", "cutpaste", "cutout"])
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
               allowed_paths=[str(session.workdir)])
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.set_default_timeout(60_000)
            page.goto(f"http://127.0.0.1:{port}/")
            grid = page.locator("#grid img")
            grid.wait_for()
            first = grid.get_attribute("src")

            def changed_from(src):
                page.wait_for_function("([sel, old]) => { const i = document.querySelector(sel); "
                                       "return i && i.getAttribute('src') && i.getAttribute('src') !== old; }",
                                       arg=["#grid img", src])
                return grid.get_attribute("src")

            # change the method: its widgets appear, the picture changes
            page.locator("#method input").click()
            page.get_by_role("option", name="cutpaste", exact=True).click()
            second = changed_from(first)
            slider = page.locator("#param-cutpaste-area_ratio_range-max input[type=number]")
            slider.wait_for(state="visible")
            # move a slider: the picture changes again
            slider.fill("0.4")
            slider.press("Enter")
            third = changed_from(second)
            assert len({first, second, third}) == 3
            command = page.locator("#command textarea").input_value()
            assert "--method cutpaste" in command and "area_ratio_range=[0.02, 0.4]" in command
            # the first sample as the page shows it
            src = page.locator("#samples img").first.get_attribute("src")
            url = page.evaluate("s => new URL(s, location.href).href", src)
            on_screen = page.request.get(url).body()
            with page.expect_download() as download:
                page.locator("#download-config").click()
            config = tmp_path / "config.yaml"
            download.value.save_as(config)
            # "generate dataset" writes a folder (with a progress bar while it runs)
            page.locator("#output textarea, #output input").first.fill(str(tmp_path / "dataset"))
            count = page.locator("#dataset-count input")
            count.fill("6")
            count.press("Enter")
            page.locator("#generate").click()
            page.wait_for_function("() => { const t = document.querySelector('#status textarea'); "
                                   "return t && t.value.startsWith('wrote'); }")
            if os.environ.get("DEFECTFORGE_UI_SCREENSHOT"):
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=os.environ["DEFECTFORGE_UI_SCREENSHOT"], full_page=False)
            browser.close()
    finally:
        app.close()
    result = _cli(["generate", "--config", config, tmp_path / "out", "-q"])
    assert result.exit_code == 0, result.output
    written = (tmp_path / "out" / "test" / "cutpaste" / "000000.png").read_bytes()
    assert written == on_screen  # byte for byte
    assert (tmp_path / "dataset" / "test" / "cutpaste" / "000000.png").read_bytes() == on_screen
    assert len((tmp_path / "dataset" / "manifest.jsonl").read_text().splitlines()) == 6
