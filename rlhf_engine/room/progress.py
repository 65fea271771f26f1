"""How far a participant got through the Workshop page's steps, read from their workspace only.

The Room page asks this for every participant at every refresh (every few seconds, twenty participants), so it
reads small files only: ``model.json``, one count in the pair store, the run folders' ``status.json`` and
``config.json``, and the probe answers of the over-optimisation run once it exists. No model is loaded and nothing
is written (a workspace without a pair store gets none made).

The Workshop page (``pages/workshop.py``) names its runs with the prefixes below and titles its steps with
``STEPS``: one place for both, so the ticks there and the progress here cannot drift apart.
"""

from __future__ import annotations

from functools import lru_cache

from rlhf_engine.lab import workshop
from rlhf_engine.lab.report import REPORT_FILE
from rlhf_engine.lab.story import overoptimisation
from rlhf_engine.lab.sweep import list_sweeps
from rlhf_engine.runs.runfolder import RunFolder, list_runs
from rlhf_engine.runs.workspace import Workspace

# The Workshop page's run names: <prefix>-<time>
RM_PREFIX, SWEEP_PREFIX, OVEROPT_PREFIX = "workshop-rm", "workshop-sweep", "workshop-overopt"
METHODS_PREFIX = "workshop-methods"  # the methods step's sweep
# The Workshop page's steps, in order; the sixth and seventh are optional
STEPS = ("The model", "Preferences", "Reward model", "PPO with a KL penalty: the sweep", "Read the results",
         "Optional: see over-optimisation", "Optional: every method on one frontier")


@lru_cache(maxsize=1)
def shipped_pairs() -> int:
    """How many simulated pairs step 2 adds (the workshop's shipped file), read once."""
    from rlhf_engine.data.pairs import read_pairs

    return len(read_pairs(workshop.PAIRS_FILE))


def _stored_pairs(ws: Workspace) -> int:
    if not ws.store_path.is_file():
        return 0
    return ws.store().count(source=workshop.PAIRS_SOURCE)


def _ours(runs: list[RunFolder], prefix: str) -> list[RunFolder]:
    return [run for run in runs if run.id.startswith(prefix)]


def _step_state(states: list[str], done: bool) -> str:
    """One word for a step from its runs' states: done, running, waiting, or how its runs ended; "" without runs."""
    if not states:
        return ""
    if done:
        return "done"
    if "running" in states:
        return "running"
    if "queued" in states:
        return "waiting"
    return next((state for state in states if state != "completed"), states[0])


def last_run(ws: Workspace) -> dict | None:
    """The workspace's newest run folder: ``id``, ``kind``, ``state``, ``step``, ``total_steps``; None if none."""
    runs = list_runs(ws.runs)
    if not runs:
        return None
    run = runs[0]
    status = run.status()
    try:
        kind = run.config().get("kind", "?")
    except (OSError, ValueError):
        kind = "?"
    return {"id": run.id, "kind": kind, "state": status.get("state", "unknown"), "step": status.get("step", 0),
            "total_steps": status.get("total_steps")}


def workshop_progress(ws: Workspace) -> dict:
    """Where a participant is in the Workshop page's steps.

    ``steps``: one {number, title, state} per step, ``state`` "done" (ticked as the page ticks it), "running",
    "waiting", "stopped"/"failed"/"interrupted" (its newest run ended so), or "" (not started); ``done``: how many
    of the five steps are done; ``at``: the first step of the five not done (then 6 or 7 if the sweep is read and an
    optional step is not done; None when all seven are); ``assigned``: whether the newest sweep is one run (the
    value the teacher assigned, see pages/workshop.py); ``last_run``: ``last_run(ws)``.
    """
    runs = list_runs(ws.runs)
    every_sweep = list_sweeps(ws.runs)
    sweeps = [s for s in every_sweep if s.id.startswith(SWEEP_PREFIX)]
    latest = sweeps[0] if sweeps else None
    methods = next((s for s in every_sweep if s.id.startswith(METHODS_PREFIX)), None)
    methods_states = list(methods.states().values()) if methods else []
    overopt = _ours(runs, OVEROPT_PREFIX)
    rm_states = [run.status().get("state", "unknown") for run in _ours(runs, RM_PREFIX)]
    sweep_states = list(latest.states().values()) if latest else []
    states = [
        "done" if ws.model_chosen() else "",
        "done" if _stored_pairs(ws) >= shipped_pairs() else "",
        _step_state(rm_states, "completed" in rm_states),
        _step_state(sweep_states, all(state == "completed" for state in sweep_states)),
        "done" if latest is not None and (latest.path / REPORT_FILE).is_file() else "",
        _overopt_state(overopt[0]) if overopt else "",
        _step_state(methods_states, all(state == "completed" for state in methods_states)),
    ]
    steps = [{"number": i + 1, "title": title, "state": state} for i, (title, state) in enumerate(zip(STEPS, states))]
    at = next((step["number"] for step in steps if step["state"] != "done"), None)
    return {"steps": steps, "done": sum(step["state"] == "done" for step in steps[:5]), "at": at,
            "assigned": latest is not None and len(latest.members()) == 1, "last_run": last_run(ws)}


def _overopt_state(run: RunFolder) -> str:
    """Step 6 is done, as the Workshop page ticks it, once the run's probes show over-optimisation; a run that
    completed without showing it is "completed"."""
    if overoptimisation(run.probes()) is not None:
        return "done"
    state = run.status().get("state", "unknown")
    return {"running": "running", "queued": "waiting"}.get(state, state)


def progress_line(progress: dict) -> str:
    """'3/5 · at 4. PPO with a KL penalty: the sweep (running)', or '5/5 · optional steps 6 and 7 done'."""
    at = progress["at"]
    text = f"{progress['done']}/5"
    if at is None:
        return text + " · optional steps 6 and 7 done"
    step = progress["steps"][at - 1]
    return text + f" · at {at}. {step['title']}" + (f" ({step['state']})" if step["state"] else "")
