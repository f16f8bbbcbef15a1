"""The real app in a real browser: `streamlit run` on a free port, Debian's Chromium through
Playwright. Setup installs what is missing (apt-get chromium, pip playwright). Screenshots of
every page land in tests/output/ (the README shows them)."""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from retrieval.config import Settings
from ui.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "tests" / "output"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
]

# every image of the page loaded and decoded, not just its <img> element present
ALL_IMAGES_DRAWN = (
    "[...document.querySelectorAll('[data-testid=\"stImage\"] img')].every(i => i.complete && i.naturalWidth > 0)"
)


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
        subprocess.run([*sudo, *install], check=True, env=env)
        found = shutil.which("chromium")
    assert found, "Debian's chromium package did not install"
    return found


def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], check=True)
        from playwright.sync_api import sync_playwright
    return sync_playwright


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def running_app(tmp_path):
    home = tmp_path / "home"
    prepare(Settings.resolve(home=home, encoder="fake"))
    port = free_port()
    env = dict(os.environ, HASHLENS_HOME=str(home), HASHLENS_ENCODER="fake")
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py"), "--server.headless", "true",
         "--server.port", str(port), "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            pass
        assert time.time() < deadline and server.poll() is None, (tmp_path / "streamlit.log").read_text()
        time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=20)
    log.close()


def test_search_and_annotate_in_chromium(running_app, tmp_path):
    executable = chromium_path()
    sync_playwright = playwright_api()
    OUTPUT.mkdir(exist_ok=True)
    upload = tmp_path / "upload.png"
    Image.new("RGB", (320, 240), (200, 60, 40)).save(upload)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(running_app, wait_until="networkidle")

        # Search: type a tag into the tag box, pick it, see the grid.
        page.get_by_text("DEMO ENCODER").first.wait_for(timeout=60_000)
        box = page.locator('[data-testid="stMultiSelect"] input').first
        box.click()
        box.fill("cat")
        page.get_by_role("option", name="cat", exact=True).first.click()
        page.keyboard.press("Escape")
        grid = page.locator('[data-testid="stImage"] img')
        page.wait_for_function("document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 12")
        assert grid.count() >= 12
        page.get_by_text("Hamming").first.wait_for()
        # every thumbnail drawn, not just its <img> in the page: the screenshot shows photos
        page.wait_for_function(ALL_IMAGES_DRAWN, timeout=60_000)
        loaded = page.evaluate(
            "[...document.querySelectorAll('[data-testid=\"stImage\"] img')].filter(i => i.naturalWidth > 0).length"
        )
        assert loaded == grid.count() >= 12
        page.screenshot(path=str(OUTPUT / "search.png"), full_page=True)

        # Annotate: upload a photo, see suggested tags with scores.
        page.get_by_role("link", name="Annotate").click()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(upload))
        page.get_by_text("Suggested tags").wait_for(timeout=60_000)
        suggestions = page.locator('[data-testid="stCheckbox"]').filter(has_text="·")  # not the XMP option
        suggestions.nth(9).wait_for()
        assert suggestions.count() == 10 and "·" in suggestions.first.inner_text()
        page.wait_for_function(ALL_IMAGES_DRAWN)
        page.screenshot(path=str(OUTPUT / "annotate.png"), full_page=True)

        for name in ("Library", "Evaluation"):
            page.get_by_role("link", name=name).click()
            page.get_by_role("heading", name="Figures" if name == "Library" else "Evaluation").wait_for()
            page.wait_for_timeout(1500)  # images and tables finish drawing
            page.screenshot(path=str(OUTPUT / f"{name.lower()}.png"), full_page=True)
        browser.close()
    assert all((OUTPUT / f"{n}.png").stat().st_size > 10_000 for n in ("search", "annotate", "library", "evaluation"))
