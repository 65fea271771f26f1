"""The whole loop by clicking, in a real browser: upload pairs, train a tiny reward model, run PPO, watch
the plot grow, stop it. Screenshots of every page go to test-artifacts/screenshots/."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from browser import (
    ERROR,
    EXCEPTION,
    NAV_LINK,
    ROOT,
    SUCCESS,
    UPLOADER_INPUT,
    app_button,
    caption_number,
    chromium_page,
    dashboard_server,
    fill_number,
    logged_points,
    nav_link,
    open_page,
    plotted_points,
    screenshot,
    wait_idle,
)

from rlhf_engine.config import ModelConfig, to_dict

SHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
PAIRS = [{"prompt": f"Say something about item {i}.", "chosen": "Lovely, great, wonderful.",
          "rejected": "Awful, bad, terrible."} for i in range(10)]

pytestmark = pytest.mark.skipif(not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists(),
                                reason="no Chromium: `make test` installs Debian's chromium package")


@pytest.fixture
def workspace(tmp_path, tiny_model_dir) -> Path:
    root = tmp_path / "ws"
    (root / "runs").mkdir(parents=True)
    config = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    (root / "model.json").write_text(json.dumps(to_dict(config)))
    return root


def wait_for_points(page, n: int, timeout_s: float = 180) -> list[int]:
    """Poll the charts until the first one plots at least n logged steps."""
    deadline = time.monotonic() + timeout_s
    while True:
        points = plotted_points(page)
        if points and points[0] >= n:
            return points
        assert time.monotonic() < deadline, f"the plot has {points} points, waiting for {n}"
        page.wait_for_timeout(250)


@pytest.mark.slow
def test_the_loop_by_clicking_in_chromium(workspace, tmp_path):
    from playwright.sync_api import expect

    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    broken_file = tmp_path / "broken.jsonl"
    broken_file.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "a", "chosen": "b"}) + "\n")

    with dashboard_server(workspace, tmp_path / "streamlit.log") as url, chromium_page() as page:
        elsewhere = []  # a room without network: nothing may be fetched from anywhere but the dashboard
        page.on("request", lambda r: None if r.url.startswith((url, "data:", "blob:")) else elsewhere.append(r.url))
        # a fresh server's first visit straight to a page still gets the app's own navigation
        open_page(page, f"{url}/runs")
        expect(page.get_by_role("heading", name="Runs")).to_be_visible()
        links = page.locator(NAV_LINK)
        nav = [links.nth(i).inner_text().split("\n")[-1] for i in range(links.count())]
        assert nav == ["Home", "Workshop", "Model", "Preferences", "Reward model", "Policy training", "KL sweep",
                       "Runs"]

        # Home: the loop and the pages
        open_page(page, url)
        expect(page.get_by_role("heading", name="RLHF Workbench")).to_be_visible()
        screenshot(page, SHOTS / "1-home.png")

        # Model: what was loaded
        nav_link(page, "Model").click()
        wait_idle(page)
        expect(page.get_by_text("parameters", exact=True)).to_be_visible()
        screenshot(page, SHOTS / "2-model.png")

        # Preferences: a broken file is refused with its row; a good one previewed, then stored
        open_page(page, f"{url}/preferences")
        page.locator(UPLOADER_INPUT).set_input_files(str(broken_file))
        expect(page.locator(ERROR)).to_contain_text("broken.jsonl: row 2:")
        page.locator(UPLOADER_INPUT).set_input_files(str(pairs_file))
        expect(page.locator(SUCCESS)).to_contain_text("pairs.jsonl: 10 valid pairs")
        page.get_by_role("button", name="Add 10 pairs to the store").click()
        expect(page.locator(SUCCESS, has_text="Stored 10 pairs")).to_be_visible()
        screenshot(page, SHOTS / "3-preferences.png")

        # Reward model: train a tiny one in the background, watch it finish, see its evaluation
        open_page(page, f"{url}/reward_model")
        fill_number(page, "steps", 3)
        started = time.monotonic()
        page.get_by_role("button", name="Train").click()
        expect(page.get_by_text("held-out accuracy")).to_be_visible(timeout=180_000)
        print(f"reward model trained and evaluated {time.monotonic() - started:.1f} s after Train")
        assert caption_number(page, "steps plotted") == 3
        screenshot(page, SHOTS / "4-reward-model.png")

        # PPO: start a long tiny run, see the number of plotted points grow, stop it
        started = time.monotonic()
        open_page(page, f"{url}/ppo")
        fill_number(page, "PPO steps", 1000)
        fill_number(page, "batch (prompts per step)", 2)
        fill_number(page, "response length (tokens)", 4)
        page.get_by_role("button", name="Start").click()
        first = wait_for_points(page, 1)
        print(f"first plotted point {time.monotonic() - started:.1f} s after the page opened")
        wait_for_points(page, first[0] + 2)
        grown = caption_number(page, "steps plotted")
        assert grown >= first[0] + 2
        app_button(page, "Stop").click()
        expect(page.get_by_text("— stopped, step")).to_be_visible(timeout=120_000)
        expect(app_button(page, "Resume")).to_be_visible()  # the job process has ended
        wait_idle(page)
        stopped = logged_points(page)
        page.wait_for_timeout(2500)  # more than two refresh periods: nothing new is plotted after the stop
        assert logged_points(page) == stopped == caption_number(page, "steps plotted")
        screenshot(page, SHOTS / "5-ppo.png")

        # KL sweep and Workshop: the teaching pages draw (their runs are tested through AppTest)
        nav_link(page, "KL sweep").click()
        wait_idle(page)
        expect(page.get_by_role("button", name="Queue the sweep")).to_be_visible()
        nav_link(page, "Workshop").click()
        wait_idle(page)
        expect(page.get_by_role("heading", name="Workshop")).to_be_visible()

        # Runs: both runs, with their states
        nav_link(page, "Runs").click()
        wait_idle(page)
        expect(page.locator(".js-plotly-plot")).to_have_count(2)
        screenshot(page, SHOTS / "6-runs.png")
        assert page.locator(EXCEPTION).count() == 0
        favicon = page.evaluate("() => [...document.querySelectorAll('link[rel~=icon]')].map(l => l.href)")
        assert favicon and all(href.startswith(url) for href in favicon), favicon
    assert elsewhere == [], elsewhere

    ppo_runs = [p for p in (workspace / "runs").iterdir() if p.name.startswith("ppo-")]
    assert len(ppo_runs) == 1
    status = json.loads((ppo_runs[0] / "status.json").read_text())
    assert status["state"] == "stopped" and status["step"] == stopped
    assert sorted(p.name for p in SHOTS.glob("*.png")) >= ["1-home.png", "2-model.png", "3-preferences.png",
                                                           "4-reward-model.png", "5-ppo.png", "6-runs.png"]
