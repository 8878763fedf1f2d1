"""The web UI in a real headless Chromium (Debian's package) driven by Playwright, against a running server."""

from __future__ import annotations

import json
import re
import os
import shutil
import zipfile
from pathlib import Path

import httpx
import pytest
from serve_support import PHOTO, PLAN, GatedEditor, make_service, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); the browser test needs it")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def test_ui_runs_an_edit_and_shows_every_step(browser, tmp_path):
    from playwright import sync_api

    editor = GatedEditor(delay=0.1)
    with serve(make_service(editor=editor), ui=True) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/ui/", wait_until="networkidle")
        page.locator("#mira-image input[type=file]").set_input_files(str(PHOTO))
        page.locator("#mira-instruction textarea").fill("make the cup red, the saucer blue and the table black")
        page.get_by_text("Settings").click()
        steps_box = page.locator("#mira-max-steps input[type=number]")
        steps_box.fill("2")
        steps_box.press("Enter")
        page.locator("#mira-run").click()

        try:
            sync_api.expect(page.locator("#mira-status textarea")).to_have_value(re.compile("^done"), timeout=30_000)
        finally:
            page.screenshot(path=str(tmp_path / "mira-ui.png"), full_page=True)
        # the status, gallery and result render in separate updates: wait for each rather than read it once
        sync_api.expect(page.locator("#mira-gallery img")).to_have_count(3, timeout=10_000)  # original + 2 steps
        sync_api.expect(page.locator("#mira-gallery").get_by_text(f"1: {PLAN[0]}").first).to_be_visible()
        sync_api.expect(page.locator("#mira-gallery").get_by_text(f"2: {PLAN[1]}").first).to_be_visible()
        assert page.locator("#mira-status textarea").input_value() == "done: max_steps after 2 step(s)"
        sync_api.expect(page.locator("#mira-result img")).to_have_count(1, timeout=10_000)
        table = page.locator("#mira-steps").inner_text()
        assert PLAN[0] in table and "Planned edit 2 of 3." in table
        assert [call[0] for call in editor.calls] == PLAN[:2]

        with page.expect_download() as download:
            page.locator("#mira-archive a").first.click()
        archive = tmp_path / "run.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            trajectory = json.loads(zf.read("trajectory.json"))
        assert {"original.png", "step_001.png", "step_002.png", "final.png", "report.html"} <= names
        assert [s["action"] for s in trajectory["steps"]] == PLAN[:2]

        shot = tmp_path / "mira-ui.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("MIRA_SCREENSHOT_DIR"):
            shutil.copy(shot, Path(os.environ["MIRA_SCREENSHOT_DIR"]) / shot.name)
        page.close()


def test_ui_asks_for_the_api_key_when_one_is_set():
    with serve(make_service(), api_key="ui-key", ui=True) as url:
        assert httpx.get(f"{url}/ui/config").status_code == 401
        wrong = httpx.post(f"{url}/ui/login", data={"username": "me", "password": "nope"})
        assert wrong.status_code >= 400
        right = httpx.post(f"{url}/ui/login", data={"username": "me", "password": "ui-key"})
        assert right.status_code == 200
        assert httpx.get(f"{url}/ui/config", cookies=right.cookies).status_code == 200
        assert httpx.get(f"{url}/", follow_redirects=False).headers["location"] == "/ui/"
