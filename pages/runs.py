"""Runs: every run with its state; one metric overlaid across runs; reward against KL across policy runs; sweeps."""

import pandas as pd
import streamlit as st

from dashboard.lab import sweep_picker, sweep_view
from dashboard.state import require_app_shell, workspace
from dashboard.widgets import export_panel, job_controls, run_picker
from rlhf_engine.lab import figures, styles
from rlhf_engine.lab.raised_alarms import alarm_titles
from rlhf_engine.lab.sweep import FINAL_STEPS, final_point, list_sweeps
from rlhf_engine.methods import registry
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import list_runs

require_app_shell()

POLICY_KINDS = registry.names()  # every method's runs train a policy
METHOD_TITLES = ", ".join(method.title for method in registry.methods().values())
ws = workspace()
st.title("Runs")
runs = list_runs(ws.runs)
if not runs:
    st.info(f"No runs in {ws.runs} yet.")
    st.stop()


def kind_of(run) -> str:
    try:
        return run.config().get("kind", "?")
    except (OSError, ValueError):
        return "?"


def table():
    rows = []
    for run in runs:
        status = run.status()
        rows.append({"run": run.id, "kind": kind_of(run), "state": status.get("state"),
                     "step": f"{status.get('step', 0)}/{status.get('total_steps', '?')}",
                     "alarms": alarm_titles(status.get("alarms", [])),  # what the run raised: the Policy page says more
                     "created": status.get("created_at", ""), "error": status.get("error") or ""})
    return pd.DataFrame(rows)


st.dataframe(table(), hide_index=True)
with st.expander("Stop or resume a run"):
    picked = run_picker(runs, "Run", "runs.control")
    if picked is not None:
        job_controls(picked, "runs")

with st.expander("Export a model (for plain transformers, no PEFT)"):
    export_panel([r for r in runs if kind_of(r) in (*POLICY_KINDS, REWARD_KIND)])

st.subheader("Compare a metric")
policy_runs = [r for r in runs if kind_of(r) in POLICY_KINDS]  # every method's: they share score, KL and gold
# One look per policy run on both charts (colour = method, marker = β), each named by its id too: the table's name
policy_styles = styles.run_styles([styles.run_facts(run, note=run.id) for run in policy_runs])
POLICY = "policy"  # the runs of every policy method, compared together
kinds = sorted({POLICY if kind_of(r) in POLICY_KINDS else kind_of(r) for r in runs
                if kind_of(r) in (*POLICY_KINDS, REWARD_KIND)})
if kinds:
    kind = st.radio("Runs of kind", kinds, horizontal=True, key="runs.kind",
                    format_func=lambda k: f"policy ({METHOD_TITLES})" if k == POLICY else k)
    of_kind = policy_runs if kind == POLICY else [r for r in runs if kind_of(r) == kind]
    selected = st.multiselect("Runs", [r.id for r in of_kind], default=[r.id for r in of_kind[:4]], key="runs.sel")
    chosen = [r for r in of_kind if r.id in selected]
    series = {r.id: r.metrics() for r in chosen}
    names = sorted({k for rows in series.values() for row in rows for k in row
                    if k != "step" and isinstance(row[k], (int, float))})
    if names:
        default = "objective/scores" if "objective/scores" in names else names[0]
        metric = st.selectbox("Metric", names, index=names.index(default), key="runs.metric",
                              format_func=lambda m: f"{m} — {figures.label(m)}" if m in figures.METRIC_LABELS else m)
        drawn = figures.shared_kind([kind_of(r) for r in chosen]) if kind == POLICY else kind
        st.plotly_chart(figures.overlay_figure(series, metric, drawn, policy_styles if kind == POLICY else None),
                        key="runs.overlay")

st.subheader("Reward vs KL")
points = [{"label": run.id, **point} for run in policy_runs if (point := final_point(run)) is not None]
if points:
    st.plotly_chart(figures.frontier_figure(points, styles=policy_styles), key="runs.scatter")
    style_words = styles.style_key([policy_styles[p["label"]] for p in points], lines=False)
    st.caption(f"One point per policy run ({METHOD_TITLES}): {figures.FINAL_POINT_NOTE} (runs without probe "
               f"answers: the mean of their last {FINAL_STEPS} training batches, as squares)."
               + (f" {style_words}, as on every chart of runs." if style_words else ""))
else:
    st.caption("Policy runs appear here once they have logged a step.")

sweeps = list_sweeps(ws.runs)
if sweeps:
    st.subheader("Sweeps")
    sweep_view(sweep_picker(sweeps, "runs.sweep"), "runs.sweep")
