"""Plotly figures of runs and sweeps, for the dashboard and the HTML report. Every axis says what it
measures and in which unit. Text from runs (tokens, labels) is shown as plain text, never as markup."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .alarms import HACK_MIN_DROP

STEP_AXIS = {"ppo": "PPO step", "reward_model": "optimiser step"}

# metric name -> short axis label with its unit (the panel titles and README say more)
METRIC_LABELS = {
    "objective/scores": "RM score (normalised)",
    "objective/raw_scores": "RM score (raw)",
    "objective/rlhf_reward": "score − β·KL",
    "objective/non_score_reward": "−β·KL (score units)",
    "objective/kl": "KL (nats / response)",
    "gold/score": "gold score (sentiment − repetition)",
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
GOLD_PANEL = ("Gold score (the simulated annotator's true reward)", ("gold/score",))


def ppo_panels(has_gold: bool) -> tuple:
    """The PPO panels; with the gold panel second when the run logs the gold score."""
    return (PPO_PANELS[0], GOLD_PANEL) + PPO_PANELS[1:] if has_gold else PPO_PANELS


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


# ----------------------------------------------------------------------------------------------
# The teaching lab: sweeps, best-of-n, gold vs proxy, token view
# ----------------------------------------------------------------------------------------------

SWEEP_OVERLAYS = ("objective/scores", "gold/score", "objective/kl", "beta", "objective/entropy", "response_length")


def plain(text: str) -> str:
    """Text shown literally by plotly, which otherwise reads tags such as <b> or <a> in labels."""
    return html.escape(str(text), quote=False)


def frontier_figure(points: Sequence[dict], best_of_n: Sequence[dict] = ()) -> go.Figure:
    """Reward vs KL: each sweep run's final point, and the best-of-n curve from the reference.

    points: [{label, kl, score, gold?}] (Sweep.frontier); best_of_n: [{n, kl, score, gold?}].
    Proxy scores are filled markers, gold scores hollow ones on the right-hand axis.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    has_gold = any("gold" in p for p in points) or any("gold" in r for r in best_of_n)
    if best_of_n:
        fig.add_trace(go.Scatter(x=[r["kl"] for r in best_of_n], y=[r["score"] for r in best_of_n],
                                 mode="lines+markers+text", text=[f"n={r['n']}" for r in best_of_n],
                                 textposition="bottom right", name="best-of-n, RM score",
                                 line=dict(dash="dot", color="gray")))
        if has_gold:
            fig.add_trace(go.Scatter(x=[r["kl"] for r in best_of_n], y=[r.get("gold") for r in best_of_n],
                                     mode="lines+markers", name="best-of-n, gold score",
                                     line=dict(dash="dot", color="goldenrod"), marker=dict(symbol="circle-open")),
                          secondary_y=True)
    fig.add_trace(go.Scatter(x=[p["kl"] for p in points], y=[p["score"] for p in points], mode="markers+text",
                             text=[plain(p["label"]) for p in points], textposition="top center",
                             marker=dict(size=12, color="royalblue"), name="PPO run, RM score"))
    if has_gold:
        gold = [p for p in points if "gold" in p]
        fig.add_trace(go.Scatter(x=[p["kl"] for p in gold], y=[p["gold"] for p in gold], mode="markers",
                                 marker=dict(size=12, symbol="circle-open", color="darkorange", line=dict(width=2)),
                                 name="PPO run, gold score"), secondary_y=True)
    _layout(fig, "Reward vs KL: PPO runs (mean of the last steps) and best-of-n", "KL to the reference (nats per response)",
            "RM score (normalised)", height=440)
    if has_gold:
        fig.update_yaxes(title_text="gold score (sentiment − repetition)", tickformat=".2f", secondary_y=True)
    return fig


def running_mean(values: Sequence[float], width: int) -> list[float]:
    """Mean of each value with up to width - 1 values before it (one batch per step is noisy)."""
    return [sum(values[max(0, i - width + 1):i + 1]) / len(values[max(0, i - width + 1):i + 1])
            for i in range(len(values))]


def gold_proxy_figure(series: dict[str, Sequence[dict]], best_of_n: Sequence[dict] = (), smooth: int = 3) -> go.Figure:
    """Gold and proxy reward against sqrt(KL), the axis of Gao et al. 2022 ("Scaling Laws for Reward Model
    Overoptimization"): where the proxy keeps rising and the gold turns down, optimising the RM stopped helping.

    series: {run label: metric rows}; each run draws its proxy (solid) and gold (dashed) in one colour,
    and a star at its gold peak when the gold score later fell by the reward-hacking alarm's margin
    (alarms.HACK_MIN_DROP) while the proxy stood higher than at the peak. KL, proxy and gold are
    running means over ``smooth`` steps; a negative k1 mean is drawn at sqrt(0).
    """
    colours = ("royalblue", "darkorange", "seagreen", "crimson", "purple", "saddlebrown", "deeppink", "gray")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, (name, rows) in enumerate(series.items()):
        colour = colours[i % len(colours)]
        points = [r for r in rows if isinstance(r.get("objective/kl"), (int, float))
                  and isinstance(r.get("objective/scores"), (int, float))]
        if not points:
            continue
        x = [math.sqrt(max(v, 0.0)) for v in running_mean([r["objective/kl"] for r in points], smooth)]
        steps = [r["step"] for r in points]
        proxy = running_mean([r["objective/scores"] for r in points], smooth)
        fig.add_trace(go.Scatter(x=x, y=proxy,
                                 mode="lines+markers", name=f"{plain(name)}: RM score", line=dict(color=colour),
                                 customdata=steps,
                                 hovertemplate="step %{customdata}<br>√KL %{x:.2f}<br>RM score %{y:.3f}<extra></extra>"))
        if all(isinstance(r.get("gold/score"), (int, float)) for r in points):
            gold = running_mean([r["gold/score"] for r in points], smooth)
            fig.add_trace(go.Scatter(x=x, y=gold, mode="lines+markers", name=f"{plain(name)}: gold",
                                     line=dict(color=colour, dash="dash"), marker=dict(symbol="circle-open"),
                                     customdata=steps,
                                     hovertemplate="step %{customdata}<br>√KL %{x:.2f}<br>gold %{y:.3f}<extra></extra>"),
                          secondary_y=True)
            peak = max(range(len(gold)), key=gold.__getitem__)
            later = range(peak + 1, len(gold))
            if any(gold[j] <= gold[peak] - HACK_MIN_DROP and proxy[j] > proxy[peak] for j in later):
                # later the gold score fell clearly below its best while the RM score was higher: mark the best
                fig.add_trace(go.Scatter(x=[x[peak]], y=[gold[peak]], mode="markers", showlegend=False,
                                         name=f"{plain(name)}: gold peak",
                                         marker=dict(symbol="star", size=14, color=colour, line=dict(width=1)),
                                         hovertemplate=f"gold peak, step {steps[peak]}<br>√KL %{{x:.2f}}<br>"
                                                       "gold %{y:.3f}<extra></extra>"),
                              secondary_y=True)
    if best_of_n:
        x = [math.sqrt(r["kl"]) for r in best_of_n]
        fig.add_trace(go.Scatter(x=x, y=[r["score"] for r in best_of_n], mode="lines+markers", name="best-of-n: RM score",
                                 line=dict(color="black", dash="dot")))
        if any("gold" in r for r in best_of_n):
            fig.add_trace(go.Scatter(x=x, y=[r.get("gold") for r in best_of_n], mode="lines+markers",
                                     name="best-of-n: gold", line=dict(color="goldenrod", dash="dot"),
                                     marker=dict(symbol="circle-open")), secondary_y=True)
    title = "Gold vs proxy reward against √KL (Gao et al. 2022)" + (f"; {smooth}-step running means" if smooth > 1 else "")
    _layout(fig, title, "√KL to the reference (√nats per response)", "RM score (normalised)", height=460)
    fig.update_yaxes(title_text="gold score (sentiment − repetition)", tickformat=".2f", secondary_y=True)
    return fig


TOKEN_ROWS = (("token_kl", "KL (nats)"), ("token_value", "value (score units)"),
              ("token_advantage", "advantage (whitened)"))


def token_heatmap(sample: dict) -> go.Figure:
    """One logged sample, token by token: KL to the reference, the value estimate and the advantage.

    Blue is negative, red positive, white zero; each row has its own scale.
    """
    tokens = sample.get("tokens") or []
    positions = list(range(len(tokens)))
    ticks = [plain(t.replace("\n", "⏎")) or "∅" for t in tokens]
    fig = make_subplots(rows=len(TOKEN_ROWS), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[title for _, title in TOKEN_ROWS])
    for row, (key, title) in enumerate(TOKEN_ROWS, start=1):
        values = sample.get(key) or [0.0] * len(tokens)
        scale = max((abs(v) for v in values), default=1.0) or 1.0
        fig.add_trace(go.Heatmap(z=[values], x=positions, y=[title], zmin=-scale, zmax=scale, colorscale="RdBu_r",
                                 text=[ticks], texttemplate="%{text}", textfont={"size": 10},
                                 colorbar=dict(len=0.28, y=1 - (row - 0.5) / len(TOKEN_ROWS), thickness=10),
                                 hovertemplate="token %{x}: %{text}<br>" + title + " %{z:.4f}<extra></extra>"),
                      row=row, col=1)
        fig.update_yaxes(showticklabels=False, row=row, col=1)
    fig.update_xaxes(title_text="response token (position)", row=len(TOKEN_ROWS), col=1)
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 40, "b": 10})
    return fig
