"""Dashboard latency on the bundled model, measured in a real browser (run by hand, not in CI).

Drives `streamlit run app.py` in Debian's Chromium the way a workshop participant would: upload the
demo pairs, train a reward model, click Start on the PPO page. Measures

* seconds from clicking Start to the first plotted point: the step's rollout point (score and KL,
  drawn while the update runs) and the first completed step;
* page response time while the run goes: sidebar click to the page fully drawn, every page, 3 rounds;

and saves a screenshot of each page (``--screenshots docs``) for the README.

    .venv/bin/python benchmarks/ui_latency.py --pairs pairs.jsonl --out /tmp/ui-bench [--screenshots docs]

``--pairs``: a preference file such as `python -m rlhf_engine make-demo-pairs --n 256 --out pairs.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from bench import TESTS, machine_line, on_path, write_json

on_path(TESTS)

from browser import (  # noqa: E402
    CAPTION,
    SUCCESS,
    UPLOADER_INPUT,
    app_button,
    chromium_page,
    dashboard_server,
    fill_number,
    logged_points,
    nav_link,
    open_page,
    screenshot,
    select_option,
    wait_idle,
)

PAGES = ("Home", "Model", "Preferences", "Reward model", "PPO", "Runs")


def pending_point_shown(page) -> bool:
    return page.locator(CAPTION, has_text="rollout (hollow marker").count() > 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the workspace, logs and results.json")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of each page here (e.g. docs)")
    parser.add_argument("--rm-steps", type=int, default=30)
    parser.add_argument("--ppo-steps", type=int, default=30)
    parser.add_argument("--shot-after", type=int, default=3, help="PPO steps before the PPO screenshot")
    args = parser.parse_args()
    from rlhf_engine.config import ModelConfig, to_dict

    workspace = args.out / "workspace"
    (workspace / "runs").mkdir(parents=True, exist_ok=False)
    (workspace / "model.json").write_text(json.dumps(to_dict(ModelConfig(quant="none"))))  # the CPU default
    shots = args.screenshots or args.out / "screenshots"
    results: dict = {"machine": machine_line(len(os.sched_getaffinity(0))), "pages": {}}

    with dashboard_server(workspace, args.out / "streamlit.log") as url, chromium_page(1400, 900, 600_000) as page:
        open_page(page, url)
        screenshot(page, shots / "1-home.png")

        nav_link(page, "Model").click()
        wait_idle(page)
        page.get_by_text("parameters", exact=True).wait_for()
        chat = page.get_by_placeholder("Ask the model something")
        chat.fill("Write one sentence about autumn.")
        chat.press("Enter")
        page.locator('[data-testid="stChatMessage"]').nth(1).wait_for()
        wait_idle(page)
        screenshot(page, shots / "2-model.png")

        nav_link(page, "Preferences").click()
        wait_idle(page)
        page.locator(UPLOADER_INPUT).set_input_files(str(args.pairs))
        page.locator(SUCCESS).first.wait_for()
        add = page.get_by_role("button", name="to the store")
        add.click()
        page.locator(SUCCESS, has_text="Stored").wait_for()
        wait_idle(page)
        screenshot(page, shots / "3-preferences.png")

        nav_link(page, "Reward model").click()
        wait_idle(page)
        fill_number(page, "steps", args.rm_steps)
        select_option(page, "pooling", "mean")
        started = time.monotonic()
        page.get_by_role("button", name="Train").click()
        page.get_by_text("held-out accuracy").wait_for(timeout=3_600_000)
        results["reward_model_s"] = round(time.monotonic() - started, 1)
        wait_idle(page)
        screenshot(page, shots / "4-reward-model.png")

        nav_link(page, "PPO").click()
        wait_idle(page)
        fill_number(page, "PPO steps", args.ppo_steps)
        clicked = time.monotonic()
        page.get_by_role("button", name="Start").click()
        while not pending_point_shown(page) and not logged_points(page):
            page.wait_for_timeout(250)
        results["start_to_rollout_point_s"] = round(time.monotonic() - clicked, 1)
        while not logged_points(page):
            page.wait_for_timeout(250)
        results["start_to_first_step_point_s"] = round(time.monotonic() - clicked, 1)
        save(args.out, results)

        for _ in range(3):  # page response time while the run goes
            for name in PAGES:
                t = time.monotonic()
                nav_link(page, name).click()
                page.get_by_role("heading", name="RLHF Workbench" if name == "Home" else name, exact=True).wait_for()
                wait_idle(page)
                results["pages"].setdefault(name, []).append(round(time.monotonic() - t, 2))
        results["page_median_s"] = {k: statistics.median(v) for k, v in results["pages"].items()}
        results["page_max_s"] = max(max(v) for v in results["pages"].values())
        save(args.out, results)

        nav_link(page, "PPO").click()
        wait_idle(page)
        while logged_points(page) < args.shot_after:
            page.wait_for_timeout(1000)
        wait_idle(page)
        screenshot(page, shots / "5-ppo.png")
        nav_link(page, "Runs").click()
        wait_idle(page)
        screenshot(page, shots / "6-runs.png")
        nav_link(page, "PPO").click()
        wait_idle(page)
        app_button(page, "Stop").click()
        page.get_by_text("— stopped, step").wait_for(timeout=600_000)

    metrics = [json.loads(line) for run in (workspace / "runs").glob("ppo-*")
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    results["ppo_step_s"] = [round(m["time/step_s"], 1) for m in metrics]
    results["ppo_rollout_s"] = [round(m["time/rollout_s"], 1) for m in metrics]
    save(args.out, results)
    print(json.dumps(results, indent=2))
    return 0


def save(out: Path, results: dict) -> None:
    write_json(out / "results.json", results)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    sys.exit(main())
