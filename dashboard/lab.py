"""Teaching-lab views shared by the Sweep, Runs and Workshop pages: a sweep's live state, its reward-vs-KL
frontier with best-of-n, gold vs proxy against √KL, and the one-file HTML report."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from rlhf_engine.lab import figures
from rlhf_engine.lab.raised_alarms import alarm_titles
from rlhf_engine.lab.story import overoptimisation_peaks, penalty_note, sweep_fits, sweep_story
from rlhf_engine.lab.sweep import Sweep, probe_summary
from rlhf_engine.runs.runfolder import ACTIVE_STATES

from .state import file_signature, is_live
from .widgets import flash, job_controls, mark_started, md, queue_position, status_line

SWEEP_REFRESH_S = 2.0  # seconds between refreshes of a live sweep's progress lines (light: several runs)


def submit_sweep(sweep_id: str, jobs: list, picker_key: str) -> None:
    """Queue a sweep's job (its runs side by side) or its runs' jobs (one after another); show the sweep in
    the picker; say so."""
    from .state import submit_run

    queued = [submit_run(job.run) for job in jobs]
    mark_started(sweep_id)
    st.session_state[picker_key] = sweep_id
    ahead = queue_position(queued[0])
    how = "Queued the sweep: its runs train side by side in one process" if len(queued) == 1 else \
        f"Queued {len(queued)} runs; they run one after another"
    flash(how + (f", after the {ahead} job(s) already waiting." if ahead else ", starting now."))


def placement_phrase(status: dict) -> str:
    """Where Ray placed a run's task, from its status.json: "on node 10.0.0.5 (gpu-2): 2 CPUs, 0.25 GPU, attempt 1"
    (", no GPU" when it has none),
    or "waiting for the cluster" with what the task asks for; "" for a run Ray never placed."""
    place = status.get("placement")
    if place:
        host = f" ({place['host']})" if place.get("host") and place["host"] != place.get("node") else ""
        cpus = int(place.get("cpus") or 0)
        gpu = f", {float(place['gpus']):g} GPU" if place.get("gpus") else ", no GPU"
        return (f"on node {place.get('node', '?')}{host}: {cpus} CPU{'s' * (cpus != 1)}{gpu}, "
                f"attempt {place.get('attempt', 1)}")
    asks = (status.get("ray") or {}).get("asks")
    if asks and status.get("state") in ACTIVE_STATES:
        from rlhf_engine.cluster.placement import TaskResources

        return f"waiting for the cluster, asking for {TaskResources(**asks).describe()}"
    return ""


def sweep_picker(sweeps: list[Sweep], key: str) -> Sweep | None:
    if not sweeps:
        return None
    by_id = {s.id: s for s in sweeps}
    return by_id.get(st.selectbox("Sweep", list(by_id), key=key))


def _sweep_signature(sweep: Sweep) -> tuple:
    """Changes when a run of the sweep logs a step or changes state: only then are the plots redrawn (a
    sweep's plots redrawn on every rollout would take the CPU its runs need)."""
    return tuple((file_signature(run.path / "metrics.jsonl"), file_signature(run.path / "best_of_n.json"),
                  run.status().get("state")) for run in sweep.runs())


def sweep_live_status(sweep: Sweep, key: str) -> None:
    """One line per run of the sweep (state, step, alarms), refreshed every 2 s while any is live; the
    page reruns when a run logs a step, so the plots below are redrawn only then."""
    drawn = f"drawn.{sweep.path}"
    st.session_state[drawn] = _sweep_signature(sweep)
    live = any(is_live(run) for run in sweep.runs())

    def refresh() -> None:
        lines = []
        for run in sweep.runs():
            status = run.status()
            line = status_line(run, status)
            where = placement_phrase(status)
            if where:
                line += f" · {md(where)}"
            if status.get("alarms"):
                line += (f" · :orange[**alarm: {md(alarm_titles(status['alarms']))}**] "
                         "(details on the Policy training page)")
            lines.append(line)
        st.markdown("  \n".join(lines))
        if st.session_state.get(drawn) != _sweep_signature(sweep):
            st.rerun(scope="app")

    st.fragment(refresh, run_every=SWEEP_REFRESH_S if live else None)()


def _cluster_note(ray: dict) -> str:
    """sweep.json's ``ray``: where ``sweep --ray`` sent the runs."""
    tasks = len(ray.get("tasks") or [])
    where = "a local Ray" if ray.get("cluster") == "auto" else f"the Ray cluster at {ray.get('cluster')}"
    return f"Ran on {where} as {tasks} task{'s' * (tasks != 1)}; each run's line says where its task was placed."


def sweep_view(sweep: Sweep, key: str, story: bool = True) -> None:
    """Everything a sweep shows: its runs, what they showed in words, the frontier, gold vs proxy, overlays
    and the report."""
    record = sweep.record()
    members = sweep.members()
    styles = figures.sweep_styles(sweep)
    st.caption(f"Varies **{md(record['vary'])}** over {md(' · '.join(styles[m.label].name for m in members))}; "
               "same seed, prompts, reward model and reward normalisation"
               + ("; trained side by side in one process." if record.get("batched") else ".")
               + (f" {md(_cluster_note(record['ray']))}" if record.get("ray") else ""))
    sweep_live_status(sweep, key)
    if sweep.job_run() is not None:  # one job trains every run: Stop and Resume act on them all
        job_controls(sweep.job_run(), f"{key}.job")
    frontier = sweep.frontier()
    bon = sweep.best_of_n()
    if not frontier and not bon:
        st.caption("The plots appear once the first run has logged a step.")
        return
    if story:
        lines = sweep_story(sweep)
        if lines:
            st.markdown("\n".join(f"- {md(line)}" for line in lines))
    # side by side for a few runs; one above the other, full width, for many (a methods step's eight: their legends)
    col_frontier, col_gold = st.columns(2) if len(members) <= 4 else (st.container(), st.container())
    col_frontier.plotly_chart(figures.frontier_figure(frontier, bon, styles), key=f"{key}.frontier")
    note, style_key = figures.FINAL_POINT_NOTE, figures.style_key(styles.values())
    col_frontier.caption(f"{note[:1].upper()}{note[1:]}." + (f" {style_key}." if style_key else "")
                         + (" Gray dotted: best-of-n from the reference on the same prompts: no training, "
                            "KL = log n − (n−1)/n." if bon else ""))
    rows = {m.label: m.run.probes() for m in members}
    probes = {label: probe_summary(answers) for label, answers in rows.items()}
    fits, fit_lines = sweep_fits(sweep)
    col_gold.plotly_chart(figures.gold_proxy_figure(probes, bon, styles, fits=fits,
                                                    peaks=overoptimisation_peaks(rows)), key=f"{key}.gold")
    subset = any(not row.get("full", True) for rows in probes.values() for row in rows)
    col_gold.caption("Gao et al. 2022 plot reward against √KL, their d (the KL in nats per answer, square-rooted: "
                     "on this axis their fitted gold curves are simple), here at every held-out probe. While both "
                     "rise, optimising the reward model helps; where the RM score (solid, filled) still rises but "
                     "the gold score (dashed, hollow) falls, the policy exploits the reward model's mistakes: "
                     "over-optimisation (★)."
                     + (" Small markers: a probe of a fixed subset of the prompts between the probes of all of them, "
                        "placed at the reference's mean on every prompt plus the subset's paired gain."
                        if subset else "")
                     + " A run's legend entry shows or hides both its lines."
                     + (" Dotted: Gao et al.'s curves fitted to these points (below)." if fits else ""))
    penalties = penalty_note(sweep)
    if penalties:
        st.caption(penalties)
    if fit_lines:
        st.markdown("**Gao et al.'s curves, fitted to what these runs measured**\n"
                    + "\n".join(f"- {md(line)}" for line in fit_lines))
    series = {m.label: m.run.metrics() for m in members}
    names = [m for m in figures.SWEEP_OVERLAYS if any(r.get(m) is not None for rows in series.values() for r in rows)]
    if names:
        metric = st.selectbox("Compare runs on (training batches, each step)", names, key=f"{key}.metric",
                              format_func=figures.label)
        kind = figures.shared_kind([m.run.config().get("kind", "policy") for m in members])
        st.plotly_chart(figures.overlay_figure(series, metric, kind, styles), key=f"{key}.overlay")
    report_button(sweep.path, key, waiting=any(is_live(run) for run in sweep.runs()))


def report_button(path: Path, key: str, waiting: bool = False) -> None:
    """Write the one-file HTML report of a run or sweep, then offer it for download; ``waiting``: its runs are
    still training, so the button rests until they end (a report of half a sweep tells half its story)."""
    from rlhf_engine.lab.report import REPORT_FILE, write_report

    col_write, col_get = st.columns([1, 3])
    if col_write.button("Write HTML report", key=f"{key}.report", disabled=waiting,
                        help="Once every run has ended" if waiting else
                        "Plots, settings, alarms and samples in one file that opens offline"):
        write_report(path)
        st.rerun()  # what depends on the report (the Workshop's last tick, the download) is drawn anew
    report = Path(path) / REPORT_FILE
    if report.is_file():
        col_get.download_button(f"Download {report.name} ({report.stat().st_size / 1e6:.1f} MB)",
                                report.read_bytes(), file_name=f"{Path(path).name}-report.html",
                                mime="text/html", key=f"{key}.download")
