"""The whole workshop path, timed as a participant lives it (run by hand, not in CI).

clone → `make run` (fresh venv from requirements.txt, fresh model cache) → the Workshop page in Chromium:
"Use the bundled model", "Add the … simulated pairs", "Train the reward model", "Run the KL sweep" → the
sweep's plots drawn with every run finished; then, with --overopt, the optional sixth step ("Run … steps at
β = 0") to its end. Each button is clicked as soon as the step before it has ended.

    .venv/bin/python benchmarks/workshop_path.py --out /tmp/workshop-bench [--overopt] [--screenshots docs]

Writes OUT/results.json and benchmarks/results/workshop-path.json: seconds from the start for each
milestone and what the plots showed (the keys of issue 17: total_minutes, rm_heldout_agreement,
rm_heldout_pairs, gold_gain, gold_gain_se, gold_prompts, final_kl_by_beta, heldout_kl_by_beta,
overopt_minutes, overopt_gold_peak_step, overopt_gold_drop), read from the run folders. Keys another
benchmark wrote there (sweep_batched.py's ratio) are kept. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import ROOT, TESTS, machine_line, on_path, write_json

on_path(TESTS)

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

from rlhf_engine.lab import workshop  # noqa: E402
from rlhf_engine.lab.sweep import Sweep, final_value, gold_peak, overoptimisation_sentence, probe_summary, sweep_story
from rlhf_engine.runs.runfolder import RunFolder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "workshop-path.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: clone, workspace, cache, logs, results")
    parser.add_argument("--overopt", action="store_true", help="also run the optional over-optimisation step")
    parser.add_argument("--screenshots", type=Path, help="save the finished Workshop page here (e.g. docs)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    clone, workspace, cache = args.out / "clone", args.out / "workspace", args.out / "cache"
    env = {**os.environ, "RLHF_WORKSPACE": str(workspace), "RLHF_WORKBENCH_CACHE": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    marks: dict[str, float] = {}
    start = time.monotonic()
    sizes = workshop.preset()  # the one the page uses on this machine (CPU or GPU)
    shipped = len(workshop.PAIRS_FILE.read_text().splitlines())

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
            _click_when_enabled(page, "Use the bundled model")
            _click_when_enabled(page, f"Add the {shipped} simulated pairs")
            mark("pairs stored")
            _click_when_enabled(page, "Train the reward model")
            mark("clicked Train")
            _wait(lambda: _completed(workspace, "workshop-rm"))
            mark("reward model trained")
            _click_when_enabled(page, "Run the KL sweep")
            mark("clicked Run the KL sweep")
            _wait(lambda: _sweep_done(workspace))
            mark("sweep: every run completed")
            page.reload()
            wait_idle(page)
            page.locator(".js-plotly-plot").nth(1).wait_for()
            mark("sweep plots drawn")
            finished = marks["sweep plots drawn"]
            if args.screenshots:
                screenshot(page, args.screenshots / "workshop.png")
            if args.overopt:
                _click_when_enabled(page, f"Run {sizes.overopt_steps} steps at β = 0")
                mark("clicked the over-optimisation run")
                _wait(lambda: _completed(workspace, "workshop-overopt"), timeout=7200)
                mark("over-optimisation run completed")
                page.reload()
                wait_idle(page)
                if args.screenshots:
                    screenshot(page, args.screenshots / "workshop-overopt.png")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    results = {"machine": machine_line(),
               "seconds": marks, "total_minutes": round(finished / 60, 2), **_what_it_showed(workspace)}
    if args.overopt:
        results["overopt_minutes"] = round((marks["over-optimisation run completed"]
                                            - marks["clicked the over-optimisation run"]) / 60, 2)
    write_json(args.out / "results.json", results)
    kept = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    write_json(RESULTS, {**{k: v for k, v in kept.items() if k.startswith("sweep_batched")}, **results})
    print(json.dumps(results, indent=2))
    return 0


def _what_it_showed(workspace: Path) -> dict:
    """The issue's numbers, read from the run folders as the pages read them."""
    runs = workspace / "runs"
    rm = next(RunFolder(p) for p in sorted(runs.iterdir()) if p.name.startswith("workshop-rm"))
    evaluation = rm.eval()
    sweep = next(Sweep(p) for p in runs.iterdir() if (p / "sweep.json").is_file())
    shown = {"rm_heldout_agreement": evaluation["accuracy"], "rm_heldout_pairs": evaluation["held_out_pairs"],
             "final_kl_by_beta": {}, "heldout_kl_by_beta": {}}
    points = {p["label"]: p for p in sweep.frontier()}
    for member in sweep.members():
        beta = member.run.config()["config"]["kl_coef"]
        shown["final_kl_by_beta"][str(float(beta))] = final_value(member.run.metrics(), "objective/kl")
        shown["heldout_kl_by_beta"][str(float(beta))] = points[member.label]["kl"]
    smallest = min(sweep.members(), key=lambda m: m.run.config()["config"]["kl_coef"])
    point = points[smallest.label]
    shown.update(gold_gain=point["gold_gain"], gold_gain_se=point["gold_gain_se"], gold_prompts=point["prompts"],
                 gold_before=probe_summary(smallest.run.probes())[0]["gold"], gold_after=point["gold"])
    shown["alarms_by_run"] = {run.id: run.status().get("alarms", []) for run in sweep.runs()}
    shown["story"] = sweep_story(sweep)  # the sentences the Workshop page shows under its plots
    overopt = [p for p in runs.iterdir() if p.name.startswith("workshop-overopt")]
    if overopt:
        summary = probe_summary(RunFolder(overopt[0]).probes())
        proxy, gold = [s["score"] for s in summary], [s["gold"] for s in summary]
        peak = gold_peak(proxy, gold)
        shown["overopt_probes"] = [{k: s.get(k) for k in ("step", "kl", "score", "gold")} for s in summary]
        shown["overopt_gold_peak_step"] = summary[peak]["step"] if peak is not None else None
        shown["overopt_gold_drop"] = (gold[peak] - min(gold[peak:])) if peak is not None else None
        shown["overopt_alarms"] = RunFolder(overopt[0]).status().get("alarms", [])
        shown["overopt_sentence"] = overoptimisation_sentence("At β = 0", summary)
    return shown


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


def _completed(workspace: Path, prefix: str) -> bool:
    """Whether a run whose name starts with prefix completed (raises if it failed)."""
    for folder in (workspace / "runs").glob(f"{prefix}*"):
        state = RunFolder(folder).status().get("state")
        if state == "failed":
            raise RuntimeError(f"{folder.name} failed: {RunFolder(folder).status().get('error')}")
        if state == "completed":
            return True
    return False


def _sweep_done(workspace: Path) -> bool:
    sweeps = [Sweep(p) for p in (workspace / "runs").glob("*") if (p / "sweep.json").is_file()]
    if not sweeps:
        return False
    states = sweeps[0].states()
    if "failed" in states.values():
        raise RuntimeError(f"a sweep run failed: {states}")
    return set(states.values()) == {"completed"}


if __name__ == "__main__":
    sys.exit(main())
