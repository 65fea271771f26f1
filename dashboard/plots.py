"""Plotly figures of run metrics. Every axis says what it measures and in which unit."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

STEP_AXIS = {"ppo": "PPO step", "reward_model": "optimiser step"}

# metric name -> short axis label with its unit (the panel titles and README say more)
METRIC_LABELS = {
    "objective/scores": "RM score (normalised)",
    "objective/raw_scores": "RM score (raw)",
    "objective/rlhf_reward": "score − β·KL",
    "objective/non_score_reward": "−β·KL (score units)",
    "objective/kl": "KL (nats / response)",
    "objective/entropy": "entropy (nats / response)",
    "beta": "β (score units / nat)",
    "policy/clipfrac": "policy clip fraction",
    "val/clipfrac": "value clip fraction",
    "policy/approxkl": "approx. KL (nats / token)",
    "loss/policy": "policy loss",
    "loss/value": "value loss (score units²)",
    "time/step_s": "step time (s)",
    "time/rollout_s": "rollout time (s)",
    "tokens_per_s": "tokens / s",
    "response_length": "response length (tokens)",
    "eos_fraction": "share ending with EOS",
    "grad_norm": "gradient norm",
    "lr": "learning rate",
    "loss": "BT loss (nats / pair)",
    "accuracy": "accuracy (share of pairs)",
    "eval/accuracy": "held-out accuracy (share)",
    "margin": "margin (raw score units)",
    "eval/margin": "held-out margin (raw units)",
}
SHARE_METRICS = {"policy/clipfrac", "val/clipfrac", "accuracy", "eval/accuracy", "eos_fraction"}

# the PPO page's live panels: (title, metrics drawn on one set of axes)
PPO_PANELS = (
    ("Score and RLHF reward (score units)", ("objective/scores", "objective/rlhf_reward")),
    ("KL to the reference", ("objective/kl",)),
    ("β (KL coefficient)", ("beta",)),
    ("Entropy", ("objective/entropy",)),
    ("Clip fraction (share of tokens)", ("policy/clipfrac", "val/clipfrac")),
    ("Value loss", ("loss/value",)),
    ("Step time (s)", ("time/step_s", "time/rollout_s")),
)
RM_PANELS = (
    ("Loss", ("loss",)),
    ("Accuracy (share of pairs)", ("accuracy", "eval/accuracy")),
)


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _layout(fig: go.Figure, title: str, x_title: str, y_title: str, height: int = 300) -> go.Figure:
    fig.update_layout(title=title, height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0})
    fig.update_xaxes(title_text=x_title)
    fig.update_yaxes(title_text=y_title)
    return fig


def metric_figure(rows: Sequence[dict], metrics: Sequence[str], title: str, kind: str = "ppo",
                  pending: dict | None = None) -> go.Figure:
    """Lines of one or more metrics against step; one marker per logged step.

    ``pending`` holds the metrics of a step whose rollout is scored but whose update still runs: its
    values are drawn as hollow markers, and replaced by the logged step once it ends.
    """
    fig = go.Figure()
    for metric in metrics:
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=metric))
    for metric in metrics:
        if pending and pending.get(metric) is not None:
            fig.add_trace(go.Scatter(x=[pending["step"]], y=[pending[metric]], mode="markers",
                                     marker=dict(symbol="circle-open", size=10),
                                     name=f"{metric}, step {pending['step']} (update running)"))
    fig = _layout(fig, title, STEP_AXIS.get(kind, "step"), label(metrics[0]) if len(metrics) == 1 else "")
    last_step = max((r["step"] for r in rows), default=0)
    fig.update_xaxes(tickformat="d", dtick=1 if last_step <= 10 else None)  # whole steps only
    if set(metrics) <= SHARE_METRICS:
        fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def overlay_figure(series: dict[str, Sequence[dict]], metric: str, kind: str = "ppo") -> go.Figure:
    """One metric across several runs: {run id: metric rows}."""
    fig = go.Figure()
    for run_id, rows in series.items():
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=run_id))
    return _layout(fig, label(metric), STEP_AXIS.get(kind, "step"), label(metric), height=420)


def reward_kl_scatter(points: Sequence[dict]) -> go.Figure:
    """Runs as points: final KL (x) against final score (y); points = [{run, kl, score, beta}]."""
    fig = go.Figure(go.Scatter(
        x=[p["kl"] for p in points], y=[p["score"] for p in points], mode="markers+text",
        text=[p["run"] for p in points], textposition="top center", marker=dict(size=12),
        customdata=[[p["beta"]] for p in points],
        hovertemplate="%{text}<br>KL %{x:.3f} nats<br>score %{y:.3f}<br>β %{customdata[0]:g}<extra></extra>",
    ))
    return _layout(fig, "Reward vs KL (mean of each run's last 5 steps)", "KL to reference (nats per response)",
                   "RM score (normalised: mean 0, std 1 on the initial policy)", height=420)


def margin_histogram(margins: Sequence[float]) -> go.Figure:
    """Held-out margins: right of 0 means the reward model agrees with the label."""
    fig = go.Figure(go.Histogram(x=list(margins), nbinsx=30))
    fig.add_vline(x=0, line_dash="dash")
    return _layout(fig, "Held-out margins", "score(chosen) − score(rejected) (raw units)", "pairs (count)")


def score_length_scatter(rows: Sequence[dict]) -> go.Figure:
    """Held-out responses: normalised score against length, to spot a length bias."""
    fig = go.Figure()
    for which in ("chosen", "rejected"):
        fig.add_trace(go.Scatter(x=[r[f"{which}_tokens"] for r in rows], y=[r[f"{which}_score"] for r in rows],
                                 mode="markers", name=which))
    return _layout(fig, "Score vs response length (held-out pairs)", "response length (tokens)",
                   "score (normalised)")
