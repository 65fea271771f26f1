"""The whole workshop path, timed as a participant lives it (run by hand, not in CI).

clone → `make run` (fresh venv from requirements.txt, fresh model cache) → the Workshop page in Chromium:
"Use the bundled model", "Simulate N pairs", "Train the reward model", "Run the KL sweep" → the sweep's
plots drawn with every run finished. Each button is clicked as soon as the step before it has ended.

    .venv/bin/python benchmarks/workshop_path.py --out /tmp/workshop-bench [--screenshots docs]

Writes OUT/results.json (seconds from the start for each milestone) and a screenshot of the finished page.
Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from rlhf_engine import workshop  # noqa: E402
from browser import (  # noqa: E402
    app_button,
    chromium_page,
    free_port,
    nav_link,
    open_page,
    screenshot,
    wait_for_health,
    wait_idle,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: clone, workspace, cache, logs, results")
    parser.add_argument("--screenshots", type=Path, help="save the finished Workshop page here (e.g. docs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    clone, workspace, cache = args.out / "clone", args.out / "workspace", args.out / "cache"
    env = {**os.environ, "RLHF_WORKSPACE": str(workspace), "RLHF_WORKBENCH_CACHE": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    marks: dict[str, float] = {}
    start = time.monotonic()

    def mark(name: str) -> None:
        marks[name] = round(time.monotonic() - start, 1)
        print(f"{marks[name]:7.1f} s  {name}", flush=True)

    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    mark("cloned")
    port = free_port()
    log = open(args.out / "make-run.log", "w")
    server = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, server, args.out / "make-run.log", timeout=1800)
        mark("make run: dashboard answers")
        with chromium_page(1400, 900, 900_000) as page:
            open_page(page, url)
            nav_link(page, "Workshop").click()
            wait_idle(page)
            mark("Workshop page open")
            app_button(page, "Use the bundled model").click()
            wait_idle(page)
            app_button(page, f"Simulate {workshop.PAIRS} pairs").click()
            mark("clicked Simulate")
            _wait(lambda: _stored_pairs(workspace) >= workshop.PAIRS)
            mark(f"{workshop.PAIRS} pairs stored")
            _click_when_enabled(page, "Train the reward model")
            mark("clicked Train")
            _wait(lambda: _completed(workspace, "reward_model"))
            mark("reward model trained")
            _click_when_enabled(page, "Run the KL sweep")
            mark("clicked Run the KL sweep")
            _wait(lambda: _sweep_done(workspace))
            mark("sweep: every run completed")
            page.reload()
            wait_idle(page)
            page.locator(".js-plotly-plot").nth(1).wait_for()
            mark("sweep plots drawn")
            if args.screenshots:
                screenshot(page, args.screenshots / "workshop.png")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    sweep = next(p for p in (workspace / "runs").iterdir() if (p / "sweep.json").is_file())
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "seconds": marks, "sweep": str(sweep), "rm_eval": _rm_eval(workspace)}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


def _wait(predicate, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("step did not finish")
        time.sleep(1.0)


def _click_when_enabled(page, label: str) -> None:
    """The page reruns when a step ends; click the next step's button once it is enabled."""
    button = app_button(page, label)
    deadline = time.monotonic() + 120
    while not button.is_enabled():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{label!r} stayed disabled")
        page.wait_for_timeout(500)
    button.click()
    wait_idle(page)


def _stored_pairs(workspace: Path) -> int:
    store = workspace / "pairs.sqlite"
    if not store.is_file():
        return 0
    try:
        with sqlite3.connect(store) as db:
            return db.execute("select count(*) from pairs").fetchone()[0]
    except sqlite3.Error:
        return 0


def _states(workspace: Path, kind: str) -> list[str]:
    states = []
    for folder in (workspace / "runs").glob("*"):
        try:
            if json.loads((folder / "config.json").read_text())["kind"] == kind:
                states.append(json.loads((folder / "status.json").read_text())["state"])
        except (OSError, ValueError, KeyError):
            continue
    return states


def _completed(workspace: Path, kind: str) -> bool:
    return "completed" in _states(workspace, kind)


def _sweep_done(workspace: Path) -> bool:
    sweeps = [p for p in (workspace / "runs").glob("*") if (p / "sweep.json").is_file()]
    if not sweeps:
        return False
    record = json.loads((sweeps[0] / "sweep.json").read_text())
    runs = [m["run"] for m in record["members"]] + ([record["best_of_n"]["run"]] if record["best_of_n"] else [])
    for run in runs:
        try:
            if json.loads((workspace / "runs" / run / "status.json").read_text())["state"] == "failed":
                raise RuntimeError(f"{run} failed")
            if json.loads((workspace / "runs" / run / "status.json").read_text())["state"] != "completed":
                return False
        except (OSError, ValueError):
            return False
    return True


def _rm_eval(workspace: Path) -> dict:
    for folder in (workspace / "runs").glob("*"):
        if (folder / "eval.json").is_file():
            data = json.loads((folder / "eval.json").read_text())
            return {k: data[k] for k in ("accuracy", "margin_mean") if k in data}
    return {}


if __name__ == "__main__":
    sys.exit(main())
