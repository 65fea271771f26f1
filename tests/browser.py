"""Drive the real dashboard in Debian's Chromium with Playwright: a server, a page, waits and screenshots.

Shared by the browser test (tiny model) and the UI benchmark (bundled model). Selectors are those of
Streamlit 1.67. Chromium comes from Debian (`make test` installs it); Playwright downloads nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

APP = '[data-testid="stApp"]'
IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
STATUS = '[data-testid="stStatusWidget"]'
NAV_LINK = '[data-testid="stSidebarNav"] [data-testid="stSidebarNavLink"]'
UPLOADER_INPUT = '[data-testid="stFileUploader"] input[type="file"]'
SUCCESS = '[data-testid="stAlertContentSuccess"]'
ERROR = '[data-testid="stAlertContentError"]'
CAPTION = '[data-testid="stCaptionContainer"]'
EXCEPTION = '[data-testid="stException"]'
# points of the first trace (the logged steps) of every plotly chart on the page, in page order; charts
# of a previous run of a fragment, kept on screen while it reruns, are marked stale and skipped
PLOTTED_POINTS = """() => [...document.querySelectorAll('.js-plotly-plot')]
  .filter(gd => !gd.closest('[data-stale="true"]')).map(gd => {
    const trace = (gd.data && gd.data[0]) || {};
    return trace.x ? trace.x.length : 0;
})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    """Until the Streamlit server at url answers its health check; raise if its process ends first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited early ({proc.returncode}): {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the dashboard never answered its health check")
        time.sleep(0.1)


@contextmanager
def dashboard_server(workspace: Path, log_path: Path, env: dict | None = None, address: str | None = "127.0.0.1"):
    """`streamlit run app.py` on a free loopback port with RLHF_WORKSPACE set; yields the base URL.

    ``address=None`` leaves the address to the project's .streamlit/config.toml (what `make run` relies on).
    """
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    if address is not None:
        cmd += ["--server.address", address]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "RLHF_WORKSPACE": str(workspace), **(env or {})})
    try:
        wait_for_health(f"http://127.0.0.1:{port}", proc, log_path, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate a server, killed if it has not ended within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def chromium_page(width: int = 1400, height: int = 900, timeout_ms: int = 30_000):
    """A Playwright page in the system Chromium."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(timeout_ms)
            expect.set_options(timeout=timeout_ms)
            yield page
        finally:
            browser.close()


def wait_idle(page, timeout_ms: float = 60_000) -> None:
    """Streamlit connected, script run finished, no 'Running…' indicator."""
    page.wait_for_selector(APP, timeout=timeout_ms)
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    page.locator(STATUS).wait_for(state="hidden", timeout=timeout_ms)


def open_page(page, url: str) -> None:
    page.goto(url)
    wait_idle(page)


def plotted_points(page) -> list[int]:
    return page.evaluate(PLOTTED_POINTS)


def logged_points(page) -> int:
    """Points of the first chart's logged steps (0 while the charts are being redrawn)."""
    points = plotted_points(page)
    return points[0] if points else 0


def caption_number(page, containing: str) -> int:
    """The leading integer of the first caption containing some text (e.g. '3 steps plotted')."""
    text = page.locator(CAPTION, has_text=containing).first.inner_text()
    return int(text.split()[0])


def nav_link(page, name: str):
    """The sidebar link of a page, by its title."""
    return page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=name, exact=True)


def app_button(page, name: str):
    """A button of the app (not Streamlit's own header buttons, such as its 'Stop' of a script run)."""
    return page.get_by_test_id("stButton").get_by_role("button", name=name)


def fill_number(page, label: str, value) -> None:
    """Type into a number input and leave it, so Streamlit takes the value."""
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Tab")


def select_option(page, label: str, option: str) -> None:
    """Pick an option of a selectbox (scrolled into view first: a click that scrolls closes the list)."""
    box = page.get_by_role("combobox", name=label)
    box.scroll_into_view_if_needed()
    box.click()
    page.get_by_role("option", name=option, exact=True).click()


def screenshot(page, path: Path) -> Path:
    """The whole page: Streamlit scrolls inside stMain, so grow the viewport to its height first."""
    size = page.viewport_size
    page.wait_for_timeout(1000)  # charts below the fold are laid out a moment after the script run ends
    height = page.evaluate("""() => Math.max(...['stMain', 'stAppScrollToBottomContainer', 'stAppViewContainer']
        .map(id => document.querySelector(`[data-testid="${id}"]`)).filter(Boolean).map(el => el.scrollHeight))""")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, 6000))})
    page.wait_for_timeout(400)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
    return path
