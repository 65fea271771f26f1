"""The whole workshop path, timed as a participant lives it (run by hand, not in CI).

clone → `make run` (fresh venv from requirements.txt, fresh model cache) → the Workshop page in Chromium:
"Use the bundled model", "Add the … simulated pairs", "Train the reward model", "Run the KL sweep" → the
sweep's plots drawn with every run finished; then, with --overopt, the optional sixth step ("Run … steps at
β = 0") to its end, and with --methods the optional seventh (every method, two seeds, side by side). Each button
is clicked as soon as the step before it has ended.

    .venv/bin/python benchmarks/workshop_path.py --out /tmp/workshop-bench [--overopt] [--methods] \
        [--screenshots docs] [--isa avx2]

``--isa avx2`` runs the server and its jobs with torch's and oneDNN's kernels held to AVX2 (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA) on a CPU that has AVX-512: the same machine without its widest vectors, an approximation of a
CPU without AVX-512 (whose clock and memory may differ too).

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
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import ROOT, TESTS, machine, machine_line, on_path, write_json

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
from rlhf_engine.lab.method_ranking import method_results  # noqa: E402
from rlhf_engine.lab.story import overoptimisation, overoptimisation_sentence, run_fit, sweep_fits, sweep_story
from rlhf_engine.lab.sweep import Sweep, final_value, probe_summary  # noqa: E402
from rlhf_engine.runs.runfolder import RunFolder  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "workshop-path.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder: clone, workspace, cache, logs, results")
    parser.add_argument("--overopt", action="store_true", help="also run the optional over-optimisation step")
    parser.add_argument("--methods", action="store_true", help="also run the optional methods step (step 7)")
    parser.add_argument("--screenshots", type=Path, help="save the finished Workshop page here (e.g. docs)")
    parser.add_argument("--isa", choices=("avx2",), help="hold torch and oneDNN to AVX2 kernels (see above)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the figures go (default: the committed "
                        "benchmarks/results/workshop-path.json)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=False)
    clone, workspace, cache = args.out / "clone", args.out / "workspace", args.out / "cache"
    env = {**os.environ, "RLHF_WORKSPACE": str(workspace), "RLHF_WORKBENCH_CACHE": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    if args.isa:
        env.update(ATEN_CPU_CAPABILITY=args.isa, ONEDNN_MAX_CPU_ISA=args.isa.upper())
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
                _chart(page, 1, args.screenshots / "workshop-paths.png")  # the sweep's gold vs √KL: paths
            if args.overopt:
                _click_when_enabled(page, f"Run {sizes.overopt_steps} steps at β = 0")
                mark("clicked the over-optimisation run")
                _wait(lambda: _completed(workspace, "workshop-overopt"), timeout=7200)
                mark("over-optimisation run completed")
                page.reload()
                wait_idle(page)
                if args.screenshots:
                    screenshot(page, args.screenshots / "workshop-overopt.png")
                    _chart(page, 3, args.screenshots / "workshop-gao-fit.png")  # step 6's chart with Gao's curve
            if args.methods:
                _click_when_enabled(page, "Train PPO, GRPO, RLOO, DPO side by side")
                mark("clicked the methods step")
                _wait(lambda: _methods_done(workspace), timeout=7200)
                mark("methods step completed")
                page.reload()
                wait_idle(page)
                if args.screenshots:
                    screenshot(page, args.screenshots / "workshop-methods-page.png")
                    charts = page.locator(".js-plotly-plot").count()
                    _chart(page, charts - 3, args.screenshots / "workshop-methods-frontier.png")
                    _chart(page, charts - 2, args.screenshots / "workshop-methods-gold.png")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
        log.close()
    results = {"machine": machine_line() + (f"; torch and oneDNN held to {args.isa.upper()}" if args.isa else ""),
               "cpu": machine(),  # the CPU model and its vector flags: AVX-512 or not is worth ~2x here
               "seconds": marks, "total_minutes": round(finished / 60, 2), **_what_it_showed(workspace)}
    if args.overopt:
        results["overopt_minutes"] = round((marks["over-optimisation run completed"]
                                            - marks["clicked the over-optimisation run"]) / 60, 2)
    if args.methods:
        results["methods_minutes"] = round(
            (marks["methods step completed"] - marks["clicked the methods step"]) / 60, 2)
    write_json(args.out / "results.json", results)
    kept = json.loads(args.results.read_text()) if args.results.is_file() else {}
    write_json(args.results, {**{k: v for k, v in kept.items() if k.startswith("sweep_batched")}, **results})
    print(json.dumps(results, indent=2))
    return 0


def _what_it_showed(workspace: Path) -> dict:
    """The issue's numbers, read from the run folders as the pages read them."""
    runs = workspace / "runs"
    rm = next(RunFolder(p) for p in sorted(runs.iterdir()) if p.name.startswith("workshop-rm"))
    evaluation = rm.eval()
    sweep = next(Sweep(p) for p in runs.glob("workshop-sweep*") if (p / "sweep.json").is_file())
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
    shown["probe_points_by_run"] = {m.label: [{k: s.get(k) for k in ("step", "prompts", "full", "kl", "gold")}
                                              for s in probe_summary(m.run.probes())] for m in sweep.members()}
    shown["best_of_n"] = sweep.best_of_n()
    _, shown["sweep_fits"] = sweep_fits(sweep)
    overopt = [p for p in runs.iterdir() if p.name.startswith("workshop-overopt")]
    if overopt:
        shown.update(_overopt_showed(RunFolder(overopt[0])))
    methods = [Sweep(p) for p in runs.glob("workshop-methods*") if (p / "sweep.json").is_file()]
    if methods:
        shown.update(_methods_showed(methods[0]))
    return shown


def _overopt_showed(run: RunFolder) -> dict:
    """Step 6's numbers: its probes, where the gold peaked and fell (the probes' 2-SE rule), Gao's RL fit."""
    rows = run.probes()
    summary = probe_summary(rows)
    found = overoptimisation(rows)
    shown = {"overopt_probes": [{k: s.get(k) for k in ("step", "kl", "score", "gold", "gold_gain", "gold_gain_se")}
                                for s in summary],
             "overopt_gold_peak_step": found["peak_step"] if found else None,
             "overopt_gold_drop": found["gold_drop"] if found else None,
             "overopt_gold_drop_se": found["gold_drop_se"] if found else None,
             "overopt_alarms": run.status().get("alarms", []),
             "overopt_sentence": overoptimisation_sentence("At β = 0", rows)}
    fit, lines = run_fit(run, "the over-optimisation run")
    shown["gao_sentences"] = lines
    if fit is not None:
        shown.update(gao_rl_a=fit.a, gao_rl_a_se=fit.a_se, gao_rl_b=fit.b, gao_rl_b_se=fit.b_se, gao_rl_r2=fit.r2,
                     gao_predicted_peak_sqrt_kl=fit.predicted_peak_d, gao_predicted_peak_interval=fit.peak_interval,
                     gao_observed_peak_sqrt_kl=fit.observed_peak_d, gao_points=len(fit.points))
    return shown


def _methods_showed(sweep: Sweep) -> dict:
    """Step 7's numbers: each method's held-out gold gain over the reference (mean over seeds, and each seed's), its
    standard error and KL, best-of-n's, and the sentences the page shows."""
    shown = {"methods_story": sweep_story(sweep), "gold_gain_by_method": {}, "gold_gain_se_by_method": {},
             "kl_by_method": {}, "gold_gain_by_method_seed": {}}
    for result in method_results(sweep.frontier()):
        name = f"{result.method} (β {result.beta:g})"
        shown["gold_gain_by_method"][name] = result.mean
        shown["gold_gain_se_by_method"][name] = result.se
        shown["kl_by_method"][name] = statistics.fmean(result.kls)
        shown["gold_gain_by_method_seed"][name] = {f"seed {seed}": [gain, se] for seed, gain, se
                                                   in zip(result.seeds, result.gains, result.ses)}
    bon = sweep.best_of_n()
    if bon and "gold_gain" in bon[-1]:
        name = f"best-of-{bon[-1]['n']}"
        shown["gold_gain_by_method"][name] = bon[-1]["gold_gain"]
        shown["gold_gain_se_by_method"][name] = bon[-1]["gold_gain_se"]
        shown["kl_by_method"][name] = bon[-1]["kl"]
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


def _chart(page, index: int, path: Path) -> None:
    """One plotly chart of the page (the index-th, top to bottom), as it is drawn, for the teacher's guide."""
    chart = page.locator(".js-plotly-plot").nth(index)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(800)
    path.parent.mkdir(parents=True, exist_ok=True)
    chart.screenshot(path=str(path))


def _done(workspace: Path, prefix: str) -> bool:
    """Whether the first sweep named ``prefix``* has every run completed (raises if one failed)."""
    sweeps = [Sweep(p) for p in (workspace / "runs").glob(f"{prefix}*") if (p / "sweep.json").is_file()]
    if not sweeps:
        return False
    states = sweeps[0].states()
    if "failed" in states.values():
        raise RuntimeError(f"a run of {sweeps[0].id} failed: {states}")
    return set(states.values()) == {"completed"}


def _methods_done(workspace: Path) -> bool:
    return _done(workspace, "workshop-methods")


def _sweep_done(workspace: Path) -> bool:
    return _done(workspace, "workshop-sweep")


if __name__ == "__main__":
    sys.exit(main())
