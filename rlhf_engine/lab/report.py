"""A one-file HTML report of a run (a policy run of any method, or a reward model) or a sweep, to share: plots,
settings, alarms and samples.

The file needs nothing else (plotly.js is inlined once), so it opens offline in any browser. Every
piece of text from a run (prompts, answers, labels, errors) is HTML-escaped: a report never executes
or renders what a model or a data file wrote.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timezone
from pathlib import Path

from rlhf_engine.lab import figures
from rlhf_engine.lab.raised_alarms import alarms_of_run
from rlhf_engine.lab.story import overoptimisation_peaks, penalty_note, sweep_fits, sweep_story
from rlhf_engine.lab.styles import style_key, sweep_styles
from rlhf_engine.lab.sweep import FINAL_STEPS, Sweep, probe_summary
from rlhf_engine.methods import registry
from rlhf_engine.runs.reward_job import REWARD_KIND
from rlhf_engine.runs.runfolder import RunFolder

REPORT_FILE = "report.html"
SAMPLE_ROWS = 8  # samples shown per run: those of its last logged step, up to this many

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } .num { text-align: right; font-variant-numeric: tabular-nums; }
.alarm { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.5em 1em; margin: 0.5em 0; }
.error { background: #fdecea; border-left-color: #d93025; } pre { white-space: pre-wrap; margin: 0; }
"""


def write_report(path: Path, out: Path | None = None) -> Path:
    """Write the report of the run or sweep folder at ``path`` (default ``<path>/report.html``); return its path."""
    path = Path(path)
    sweep, run = Sweep(path), RunFolder(path)
    if sweep.exists():
        title, body = f"Sweep {sweep.id}", _sweep_body(sweep)
    elif run.exists():
        title, body = f"Run {run.id}", _run_body(run)
    else:
        raise FileNotFoundError(f"{path} is neither a run folder nor a sweep folder")
    out = Path(out) if out is not None else path / REPORT_FILE
    out.write_text(render(title, body), encoding="utf-8")
    return out


def render(title: str, parts: list[str]) -> str:
    """The whole HTML document; plotly.js is inlined by the first figure that needs it."""
    made = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>{_e(title)}</h1>\n"
            f"<p>RLHF Workbench report, written {made}.</p>\n" + "\n".join(parts) + "\n</body></html>\n")


class _Figures:
    """Turns plotly figures into HTML, inlining plotly.js in the first one only."""

    def __init__(self):
        self.first = True

    def __call__(self, figure) -> str:
        snippet = figure.to_html(full_html=False, include_plotlyjs=self.first, config={"displaylogo": False})
        self.first = False
        return f"<div>{snippet}</div>"


def _run_body(run: RunFolder) -> list[str]:
    saved, status, rows = run.config(), run.status(), run.metrics()
    config = saved.get("config", {})
    figure = _Figures()
    kind = saved.get("kind")
    policy = isinstance(kind, str) and registry.is_policy_kind(kind)
    what = f"{registry.get(kind).title} policy" if policy else kind
    parts = [f"<p>Kind: {_e(what)} · state: <b>{_e(status.get('state'))}</b> · step "
             f"{_e(status.get('step', 0))} of {_e(status.get('total_steps', '?'))}</p>"]
    if status.get("error"):
        parts.append(f"<div class=\"alarm error\">Error: {_e(status['error'])}</div>")
    parts += _alarms(run, rows, status)
    if policy:
        panels = figures.policy_panels(kind, config, saved.get("gold", False), figures.logs_kl_estimators(rows))
    elif kind == REWARD_KIND:
        panels = figures.RM_PANELS
    else:
        panels = ()
    if rows:
        parts.append("<h2>Metrics</h2>")
        parts += [figure(figures.metric_figure(rows, metrics, title, kind or "policy")) for title, metrics in panels]
    samples = run.samples()
    if samples:
        last = _last_step(samples, SAMPLE_ROWS)
        parts.append(f"<h2>Samples at step {_e(samples[-1]['step'])}</h2>" + _samples_table(last))
        with_tokens = [s for s in last if s.get("tokens")]
        if with_tokens:
            parts.append("<h3>Token view of the first sample</h3>" + figure(figures.token_heatmap(with_tokens[0])))
    parts.append("<h2>Settings</h2>" + _settings_table(config))
    return parts


def _sweep_body(sweep: Sweep) -> list[str]:
    record = sweep.record()
    members = sweep.members()
    figure = _Figures()
    states = sweep.states()
    parts = [f"<p>Varied: <b>{_e(record['vary'])}</b> over {_e(', '.join(m.label for m in members))}; reward "
             f"model {_e(record['reward'])}. Runs share the seed, prompts and reward normalisation.</p>"]
    story = sweep_story(sweep)
    if story:
        parts.append("<h2>What the runs showed</h2><ul>" + "".join(f"<li>{_e(line)}</li>" for line in story) + "</ul>")
    frontier = sweep.frontier()
    if frontier:
        has_gold = any("gold" in p for p in frontier)
        head = "<tr><th>run</th><th>state</th><th>steps</th><th>final β</th><th>KL (nats)</th><th>RM score</th>" \
               + ("<th>gold score</th><th>gold gain over the reference</th>" if has_gold else "") \
               + f"<th>training KL, last {FINAL_STEPS} steps</th><th>measured on</th></tr>"
        body = "".join(
            f"<tr><td>{_e(p['label'])}</td><td>{_e(p['state'])}</td><td class=num>{p['steps']}</td>"
            f"<td class=num>{_num(p['beta'])}</td><td class=num>{_pm(p, 'kl')}</td><td class=num>{_pm(p, 'score')}</td>"
            + (f"<td class=num>{_pm(p, 'gold')}</td><td class=num>{_pm(p, 'gold_gain')}</td>" if has_gold else "")
            + f"<td class=num>{_num(p.get('train_kl'))}</td>"
            f"<td>{_e(_source(p))}</td></tr>" for p in frontier)
        parts.append(f"<h2>Where each run ended</h2><table>{head}{body}</table>")
    not_done = {run: state for run, state in states.items() if state != "completed"}
    if not_done:
        parts.append("<p>Not completed: " + _e(", ".join(f"{r} ({s})" for r, s in not_done.items())) + "</p>")
    bon = sweep.best_of_n()
    styles = sweep_styles(sweep)
    parts.append("<h2>Reward vs KL</h2>" + figure(figures.frontier_figure(frontier, bon, styles))
                 + f"<p>{_e(figures.FINAL_POINT_NOTE.capitalize())}. {_e(style_key(styles.values(), lines=False))}</p>")
    rows = {m.label: m.run.probes() for m in members}
    fits, fit_lines = sweep_fits(sweep)
    probes = {label: probe_summary(answers) for label, answers in rows.items()}
    parts.append("<h2>Gold vs proxy against √KL</h2>" + figure(figures.gold_proxy_figure(
        probes, bon, styles, fits=fits, peaks=overoptimisation_peaks(rows))))
    penalties = penalty_note(sweep)
    if penalties:
        parts.append(f"<p>{_e(penalties)}</p>")
    if fit_lines:
        parts.append("<h3>Gao et al.'s curves, fitted to these probes</h3><ul>"
                     + "".join(f"<li>{_e(line)}</li>" for line in fit_lines) + "</ul>")
    series = {m.label: m.run.metrics() for m in members}
    parts.append("<h2>Runs side by side (training batches)</h2>")
    kind = figures.shared_kind([m.run.config().get("kind", "policy") for m in members])
    for metric in figures.SWEEP_OVERLAYS:
        if any(r.get(metric) is not None for rows in series.values() for r in rows):
            parts.append(figure(figures.overlay_figure(series, metric, kind, styles)))
    for member in members:
        alarms = _alarms(member.run, series[member.label])
        if alarms:
            parts.append(f"<h3>Alarms of {_e(member.label)}</h3>" + "".join(alarms))
    for member in members:
        samples = member.run.samples()
        if samples:
            last = _last_step(samples, SAMPLE_ROWS // 2)
            parts.append(f"<h3>{_e(member.label)}: samples at step {_e(samples[-1]['step'])}</h3>"
                         + _samples_table(last))
    parts.append("<h2>Shared settings</h2>" + _settings_table(record["base"]))
    return parts


def _last_step(samples: list[dict], limit: int) -> list[dict]:
    """Up to ``limit`` samples of the last logged step."""
    return [s for s in samples if s["step"] == samples[-1]["step"]][:limit]


def _alarms(run: RunFolder, rows: list[dict], status: dict | None = None) -> list[str]:
    """What the run raised, checked again on its metrics and probes (``raised_alarms``), as the pages show it."""
    parts = []
    for item in alarms_of_run(run, rows, status):
        alarm = item.alarm
        when = (f"Raised at step {item.raised_step}; the latest check no longer finds it. " if not item.holds
                else f"Raised at step {item.raised_step if item.raised_step is not None else alarm.step}. ")
        parts.append(f"<div class=\"alarm{' error' if alarm.severity == 'error' else ''}\">{_e(when)}"
                     f"<b>{_e(alarm.message)}</b><br>{_e(alarm.suggestion)}</div>")
    return parts


def _samples_table(samples: list[dict]) -> str:
    if any("chosen" in s for s in samples):  # a method that learns from pairs logs the pairs of its steps
        return _pairs_table(samples)
    has_gold = any("gold" in s for s in samples)
    head = "<tr><th>prompt</th><th>response</th><th>RM score</th><th>KL (nats)</th>" + \
           ("<th>gold</th>" if has_gold else "") + "</tr>"
    body = "".join(
        f"<tr><td><pre>{_e(s.get('prompt'))}</pre></td><td><pre>{_e(s.get('response'))}</pre></td>"
        f"<td class=num>{_num(s.get('score'))}</td><td class=num>{_num(s.get('kl'))}</td>"
        + (f"<td class=num>{_num(s.get('gold'))}</td>" if has_gold else "") + "</tr>" for s in samples)
    return f"<table>{head}{body}</table>"


def _pairs_table(samples: list[dict]) -> str:
    """The pairs of a step with the margin of their implicit rewards, β·(log π/π_ref of the chosen − of the
    rejected): positive when the policy prefers the chosen answer more than the reference does."""
    head = "<tr><th>prompt</th><th>chosen</th><th>rejected</th><th>implicit margin</th></tr>"
    body = "".join(
        f"<tr><td><pre>{_e(s.get('prompt'))}</pre></td><td><pre>{_e(s.get('chosen'))}</pre></td>"
        f"<td><pre>{_e(s.get('rejected'))}</pre></td><td class=num>{_num(s.get('margin'))}</td></tr>" for s in samples)
    return f"<table>{head}{body}</table>"


def _settings_table(config: dict) -> str:
    rows = "".join(f"<tr><th>{_e(key)}</th><td>{_e(json.dumps(value) if isinstance(value, dict) else value)}</td></tr>"
                   for key, value in config.items())
    return f"<table>{rows}</table>"


def _e(value) -> str:
    return html.escape(str(value))


def _pm(point: dict, key: str) -> str:
    """'0.53 ± 0.11' (value ± standard error), or the value alone."""
    se = point.get(f"{key}_se")
    return _num(point.get(key)) + (f" ± {se:.3f}" if isinstance(se, (int, float)) and se == se else "")


def _source(point: dict) -> str:
    if point.get("source") == "held-out":
        return f"{point['prompts']} held-out prompts at step {point['probe_step']}"
    return f"training batches, last {FINAL_STEPS} steps"


def _num(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"

