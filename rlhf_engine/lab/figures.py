"""Plotly figures of runs and sweeps, for the dashboard and the HTML report. Every axis says what it
measures and in which unit. Text from runs (tokens, labels) is shown as plain text, never as markup."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rlhf_engine.lab.sweep import gold_peak
from rlhf_engine.methods import registry
from rlhf_engine.runs.reward_job import REWARD_KIND

# metric name -> short axis label with its unit (the panel titles and README say more)
METRIC_LABELS = {
    "objective/scores": "RM score (normalised)",
    "objective/raw_scores": "RM score (raw)",
    "objective/rlhf_reward": "score − β·KL",
    "objective/non_score_reward": "−β·KL (score units)",
    "objective/kl": "KL (nats / response)",
    "kl/k1": "k1 = log π/π_ref (nats / response)",
    "kl/k2": "k2 = ½ (log π/π_ref)² (nats / response)",
    "kl/k3": "k3 = r − 1 − log r (nats / response)",
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
    # the group methods' metrics, under TRL's names (GRPOTrainer, RLOOTrainer)
    "reward": "RM score (normalised)",
    "reward_std": "score std within a group (score units)",
    "frac_reward_zero_std": "share of groups scored all alike",
    "entropy": "entropy (nats / token)",
    "completions/mean_length": "answer length (tokens)",
    "completions/clipped_ratio": "share cut at the length cap",
    "clip_ratio/region_mean": "clipped share of tokens",
    "kl": "k3 in the loss (nats / token)",
    # DPO's, under TRL's names (DPOTrainer): implicit rewards are β·(log π − log π_ref) of an answer
    "rewards/chosen": "β·log π/π_ref, chosen (score units)",
    "rewards/rejected": "β·log π/π_ref, rejected (score units)",
    "rewards/margins": "chosen − rejected implicit reward",
    "rewards/accuracies": "share of pairs ranked right",
    "logps/chosen": "log π(chosen) (nats / answer)",
    "logps/rejected": "log π(rejected) (nats / answer)",
}
SHARE_METRICS = {"policy/clipfrac", "val/clipfrac", "accuracy", "eval/accuracy", "eos_fraction",
                 "frac_reward_zero_std", "completions/clipped_ratio", "clip_ratio/region_mean", "rewards/accuracies"}

# The charts every method that samples gets beside its own (the registry's ``Method.panels``): the gold score,
# second, where the run logs it, and Schulman 2020's three estimators of the same KL side by side, after the KL's
# chart (the run's penalty uses one of them: objective/kl).
GOLD_PANEL = ("Gold score (the true reward)", ("gold/score",))
KL_ESTIMATORS_PANEL = ("KL estimators k1, k2, k3 (nats / response)", ("kl/k1", "kl/k2", "kl/k3"))


def policy_panels(kind: str, config: dict, has_gold: bool, has_kl_estimators: bool = False) -> tuple:
    """The live panels of a policy run of any method (its kind): the method's charts for a run with this saved
    config (``registry.Method.charts``); for a method that samples its answers, with the gold panel second when
    the run logs the gold score, and the KL estimators' panel after the KL's when it logs them (runs from before
    2026-12-03 do not). A method that learns from pairs measures its KL and scores on the held-out probes, drawn
    apart."""
    method = registry.get(kind)
    panels = tuple(method.charts(config))
    if method.learns_from_pairs:
        return panels
    if has_gold:
        panels = panels[:1] + (GOLD_PANEL,) + panels[1:]
    if has_kl_estimators:
        kl = [i for i, (_, metrics) in enumerate(panels) if "objective/kl" in metrics]
        at = kl[0] + 1 if kl else len(panels)
        panels = panels[:at] + (KL_ESTIMATORS_PANEL,) + panels[at:]
    return panels


def logs_kl_estimators(rows: Sequence[dict]) -> bool:
    """Whether a policy run's metrics carry k1, k2 and k3 (``rlhf_engine.core.rollout.kl_estimates``)."""
    return bool(rows) and all(name in rows[-1] for name in KL_ESTIMATORS_PANEL[1])


RM_PANELS = (
    ("Loss", ("loss",)),
    ("Accuracy (share of pairs)", ("accuracy", "eval/accuracy")),
)


def step_axis(kind: str) -> str:
    """The step axis of a run of ``kind``: "PPO step" (its method's title), "optimiser step" (a reward model's),
    else "step" (runs of several methods on one chart: ``shared_kind``)."""
    if registry.is_policy_kind(kind):
        return f"{registry.get(kind).title} step"
    return "optimiser step" if kind == REWARD_KIND else "step"


def label(metric: str, kind: str = "") -> str:
    """A metric's axis label with its unit (in a run of ``kind``, where a name means another thing there: the
    method's ``metric_labels``; a reward model's "loss" is its BT loss)."""
    method_labels = registry.get(kind).metric_labels if registry.is_policy_kind(kind) else {}
    return method_labels.get(metric) or METRIC_LABELS.get(metric, metric)


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
    fig = _layout(fig, title, step_axis(kind), label(metrics[0], kind) if len(metrics) == 1 else "")
    last_step = max((r["step"] for r in rows), default=0)
    fig.update_xaxes(tickformat="d", dtick=1 if last_step <= 10 else None)  # whole steps only
    if set(metrics) <= SHARE_METRICS:
        fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def shared_kind(kinds: Sequence[str]) -> str:
    """The kind of runs drawn on one chart: their method when they share one, else "policy" (a plain step axis)."""
    distinct = set(kinds)
    return distinct.pop() if len(distinct) == 1 else "policy"


def overlay_figure(series: dict[str, Sequence[dict]], metric: str, kind: str = "policy",
                   colours: dict[str, str] | None = None) -> go.Figure:
    """One metric across several runs of ``kind`` (``shared_kind``): {run label: metric rows}; ``colours``:
    {label: colour} (runs_colours)."""
    fig = go.Figure()
    colours = colours or {}
    seen: dict[str, int] = {}
    for run_id, rows in series.items():
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
        colour = colours.get(run_id)
        dash = DASHES[seen.get(colour, 0) % len(DASHES)] if colour else None  # runs of one colour: other dashes
        seen[colour] = seen.get(colour, 0) + 1
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=plain(run_id), line=dict(color=colour, dash=dash)))
    return _layout(fig, label(metric, kind), step_axis(kind), label(metric, kind), height=420)


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
DASHES = ("solid", "dot", "dash", "dashdot")

# One colour per β wherever a run is drawn (sweep page, Runs, report): hot for a free policy (β = 0), cool
# for a held one; between these anchors the colour is interpolated on a log scale of β, so every β has
# exactly one colour and the order of the colours is the order of the βs.
BETA_ANCHORS = ((0.0, "#d62728"), (0.01, "#ff7f0e"), (0.05, "#2ca02c"), (0.2, "#1f77b4"), (1.0, "#6a3d9a"))
ADAPTIVE_COLOUR = "#222222"  # adaptive-β runs: their β moves
CATEGORICAL = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _beta_position(beta: float) -> float:
    """0 at β = 0, then log10 β from 0.001 (0.1) to 1 (1.0) and beyond (clipped)."""
    return 0.0 if beta <= 0 else min(1.0, 0.1 + 0.3 * (math.log10(max(beta, 1e-3)) + 3))


def beta_colour(beta: float | None, adaptive: bool = False) -> str:
    """The colour of a run of this (fixed) β ("rgb(r, g, b)"), or ADAPTIVE_COLOUR."""
    if adaptive or beta is None:
        return ADAPTIVE_COLOUR
    position = _beta_position(float(beta))
    anchors = [(_beta_position(b), [int(colour[i:i + 2], 16) for i in (1, 3, 5)]) for b, colour in BETA_ANCHORS]
    for (low, low_rgb), (high, high_rgb) in zip(anchors, anchors[1:]):
        if position <= high:
            break
    t = min(1.0, (position - low) / (high - low))  # past the last anchor: its colour
    rgb = [round(a + t * (b - a)) for a, b in zip(low_rgb, high_rgb)]
    return f"rgb({rgb[0]}, {rgb[1]}, {rgb[2]})"


def runs_colours(points: Sequence[dict], by_beta: bool = True) -> dict[str, str]:
    """{label: colour} of runs given as {label, beta, adaptive}: by β (a KL sweep, the Runs page), or one
    categorical colour each in order (a sweep that varies another setting, where every run has one β)."""
    if by_beta:
        return {p["label"]: beta_colour(p.get("beta"), p.get("adaptive", False)) for p in points}
    return {p["label"]: CATEGORICAL[i % len(CATEGORICAL)] for i, p in enumerate(points)}


# Where runs of several methods share a chart (the room's frontier): one colour per method, in the registry's order,
# and one marker per β, the smallest β first; best-of-n (no training) keeps its gray dotted line. The square is
# left out of the markers: it marks a point from training batches.
METHOD_COLOURS = (("#1f77b4", "blue"), ("#ff7f0e", "orange"), ("#2ca02c", "green"), ("#9467bd", "violet"),
                  ("#8c564b", "brown"), ("#e377c2", "pink"), ("#17becf", "cyan"), ("#bcbd22", "olive"))
BETA_MARKERS = (("circle", "●"), ("diamond", "◆"), ("triangle-up", "▲"), ("star", "★"), ("pentagon", "⬟"),
                ("hexagon", "⬢"), ("cross", "✚"), ("x", "✖"))
ADAPTIVE_MARKER = ("hourglass", "⧗")  # adaptive-β runs: their β moves


def method_colour(method: str) -> tuple[str, str]:
    """(colour, its name) of a method's runs where several methods share a chart: PPO blue, GRPO orange, RLOO
    green, DPO violet, then the others'."""
    names = registry.names()
    index = names.index(method) if method in names else len(names)
    return METHOD_COLOURS[index % len(METHOD_COLOURS)]


def beta_key(point: dict) -> float | None:
    """The β a point ({beta, adaptive}) is marked by: None for an adaptive β (or none known)."""
    beta = point.get("beta")
    return None if point.get("adaptive") or not isinstance(beta, (int, float)) else float(beta)


def beta_markers(points: Sequence[dict]) -> dict[float | None, tuple[str, str]]:
    """{β: (plotly marker symbol, text character)} of the βs of ``points`` (``beta_key``), the smallest first
    (●, ◆, ▲, ★, …), and ⧗ for an adaptive β: the same β has the same marker on every chart of one page."""
    betas = sorted({beta_key(p) for p in points} - {None})
    markers = {beta: BETA_MARKERS[i % len(BETA_MARKERS)] for i, beta in enumerate(betas)}
    return {**markers, None: ADAPTIVE_MARKER} if any(beta_key(p) is None for p in points) else markers


def sweep_colours(sweep) -> dict[str, str]:
    """{member label: colour} of a sweep (``sweep.Sweep``): by β in a KL sweep, else one colour each in order."""
    points = []
    for member in sweep.members():
        config = member.run.config()["config"]
        points.append({"label": member.label, "beta": config.get("kl_coef"), "adaptive": config.get("adaptive_kl")})
    return runs_colours(points, by_beta=sweep.record().get("vary") == "kl_coef")


def plain(text: str) -> str:
    """Text shown literally by plotly, which otherwise reads tags such as <b> or <a> in labels."""
    return html.escape(str(text), quote=False)


FRONTIER_X = "KL to the reference (nats per answer) at each run's last held-out probe"
FINAL_POINT_NOTE = ("each run's point is its last held-out probe (the same prompts and sampling seed at every "
                    "probe), ± 1 standard error")


def frontier_figure(points: Sequence[dict], best_of_n: Sequence[dict] = (),
                    colours: dict[str, str] | None = None, symbols: dict[str, str] | None = None,
                    gold: bool = True) -> go.Figure:
    """Reward vs KL: each run's final point (sweep.final_point) and the best-of-n curve from the reference.

    points: [{label, kl, score, gold?, *_se?, source}]; best_of_n: [{n, kl, score, gold?}]. RM scores are
    filled markers, gold scores hollow diamonds on the right-hand axis, each run in its colour. A run whose
    point comes from training batches (no probe answers) is a square and says so in the legend. ``symbols``:
    {label: marker} (``beta_markers``), the gold's then hollow; ``gold`` False: RM scores only (the room's
    frontier draws the gold on a chart of its own).
    """
    colours = colours or runs_colours(points)
    symbols = symbols or {}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    has_gold = gold and (any("gold" in p for p in points) or any("gold" in r for r in best_of_n))
    if best_of_n:
        fig.add_trace(go.Scatter(x=[r["kl"] for r in best_of_n], y=[r["score"] for r in best_of_n],
                                 mode="lines+markers+text", text=[f"n={r['n']}" for r in best_of_n],
                                 textposition="bottom right", name="best-of-n: RM score",
                                 line=dict(dash="dot", color="gray")))
        if has_gold:
            fig.add_trace(go.Scatter(x=[r["kl"] for r in best_of_n], y=[r.get("gold") for r in best_of_n],
                                     mode="lines+markers", name="best-of-n: gold",
                                     line=dict(dash="dot", color="goldenrod"), marker=dict(symbol="diamond-open")),
                          secondary_y=True)
    for p in points:
        colour = colours.get(p["label"], "royalblue")
        training = p.get("source") == "training"
        name = plain(p["label"]) + (" (training batches)" if training else "")
        symbol = "square" if training else symbols.get(p["label"], "circle")
        fig.add_trace(go.Scatter(
            x=[p["kl"]], y=[p["score"]], mode="markers+text", text=[plain(p["label"])], textposition="top center",
            marker=dict(size=12, color=colour, symbol=symbol),
            error_x=_error(p.get("kl_se")), error_y=_error(p.get("score_se")), name=f"{name}: RM score",
            legendgroup=p["label"],
            hovertemplate=f"{plain(p['label'])}<br>KL %{{x:.2f}} nats<br>RM score %{{y:.3f}}<extra></extra>"))
        if has_gold and "gold" in p:
            fig.add_trace(go.Scatter(
                x=[p["kl"]], y=[p["gold"]], mode="markers", error_y=_error(p.get("gold_se")),
                marker=dict(size=12, symbol=_open(symbols.get(p["label"], "diamond")), color=colour,
                            line=dict(width=2)),
                name=f"{name}: gold", legendgroup=p["label"],
                hovertemplate=f"{plain(p['label'])}<br>KL %{{x:.2f}} nats<br>gold %{{y:.3f}}<extra></extra>"),
                secondary_y=True)
    _layout(fig, "Reward vs KL", FRONTIER_X, "RM score (normalised)", height=460)
    if has_gold:
        fig.update_yaxes(title_text="gold score (◇)", tickformat=".2f", secondary_y=True)
    return fig


def _open(symbol: str) -> str:
    """The hollow marker of a symbol (gold scores are hollow, RM scores filled)."""
    return symbol if symbol.endswith("-open") else f"{symbol}-open"


def _error(se: float | None) -> dict | None:
    """Error bars of ± se, or none where se is missing or NaN."""
    if not isinstance(se, (int, float)) or se != se:
        return None
    return dict(type="data", array=[se], thickness=1.2, width=3)


def gold_proxy_figure(series: dict[str, Sequence[dict]], best_of_n: Sequence[dict] = (),
                      colours: dict[str, str] | None = None, symbols: dict[str, str] | None = None,
                      proxy: bool = True) -> go.Figure:
    """Gold and proxy reward against √KL, the axis of Gao et al. 2022 ("Scaling Laws for Reward Model
    Overoptimization"): where the proxy keeps rising and the gold turns down, optimising the RM stopped helping.

    series: {run label: probe summary rows (sweep.probe_summary: step, kl, score, gold)}, the reference's
    (step 0, KL 0) first; each run draws its RM score (solid) and gold (dashed) in its colour, and a star
    at its gold peak when the gold score later fell by the reward-hacking alarm's margin
    (alarms.HACK_MIN_DROP) while the RM score stood higher than at the peak. ``symbols``: {label: marker}
    (``beta_markers``), the gold's hollow; ``proxy`` False: the gold alone, on the left-hand axis (the room's
    frontier, whose other chart has the RM scores). A run of one point (the room's) draws its gold ± ``gold_se``.
    """
    colours, symbols = colours or {}, symbols or {}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for name, rows in series.items():
        colour = colours.get(name)
        points = [r for r in rows if isinstance(r.get("kl"), (int, float)) and isinstance(r.get("score"), (int, float))]
        if not points:
            continue
        x = [math.sqrt(max(r["kl"], 0.0)) for r in points]
        steps = [r["step"] for r in points]
        scores = [r["score"] for r in points]
        if proxy:
            fig.add_trace(go.Scatter(x=x, y=scores, mode="lines+markers", name=f"{plain(name)}: RM score",
                                     line=dict(color=colour), customdata=steps, legendgroup=name,
                                     marker=dict(symbol=symbols.get(name, "circle")),
                                     hovertemplate="step %{customdata}<br>√KL %{x:.2f}<br>"
                                                   "RM score %{y:.3f}<extra></extra>"))
        if all(isinstance(r.get("gold"), (int, float)) for r in points):
            gold = [r["gold"] for r in points]
            marker = dict(symbol=_open(symbols.get(name, "diamond")), size=None if proxy else 14)  # one point: big
            alone = _error(points[0].get("gold_se")) if len(points) == 1 else None  # one point: its ± 1 SE
            fig.add_trace(go.Scatter(x=x, y=gold, mode="lines+markers", name=f"{plain(name)}: gold",
                                     line=dict(color=colour, dash="dash"), marker=marker, error_y=alone,
                                     customdata=steps, legendgroup=name,
                                     hovertemplate=f"{plain(name)}, step %{{customdata}}<br>√KL %{{x:.2f}}<br>"
                                                   "gold %{y:.3f}<extra></extra>"),
                          secondary_y=proxy)
            peak = gold_peak(scores, gold)
            if peak is not None:
                fig.add_trace(go.Scatter(x=[x[peak]], y=[gold[peak]], mode="markers", showlegend=False,
                                         name=f"{plain(name)}: gold peak", legendgroup=name,
                                         marker=dict(symbol="star", size=15, color=colour, line=dict(width=1)),
                                         hovertemplate=f"gold peak, step {steps[peak]}<br>√KL %{{x:.2f}}<br>"
                                                       "gold %{y:.3f}<extra></extra>"),
                              secondary_y=proxy)
    if best_of_n:
        x = [math.sqrt(r["kl"]) for r in best_of_n]
        if proxy:
            fig.add_trace(go.Scatter(x=x, y=[r["score"] for r in best_of_n], mode="lines+markers",
                                     name="best-of-n: RM score", line=dict(color="gray", dash="dot")))
        if any("gold" in r for r in best_of_n):
            fig.add_trace(go.Scatter(x=x, y=[r.get("gold") for r in best_of_n], mode="lines+markers",
                                     name="best-of-n: gold", line=dict(color="goldenrod", dash="dot"),
                                     marker=dict(symbol="diamond-open")), secondary_y=proxy)
    _layout(fig, "Gold vs proxy against √KL" if proxy else "Gold against √KL",
            "√KL to the reference (√nats per answer)", "RM score (normalised)" if proxy else "gold score (hollow)",
            height=460)
    if proxy:
        fig.update_yaxes(title_text="gold score (◇, dashed)", tickformat=".2f", secondary_y=True)
    else:
        fig.update_yaxes(tickformat=".2f")
    return fig


def probe_figure(summary: Sequence[dict], colour: str | None = None, kind: str = "ppo") -> go.Figure:
    """A run's held-out probes step by step (sweep.probe_summary): RM score (●, left) and gold score (◇, right),
    ± 1 standard error; step 0 is the reference."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    steps = [s["step"] for s in summary]
    fig.add_trace(go.Scatter(x=steps, y=[s.get("score") for s in summary], mode="lines+markers", name="RM score",
                             line=dict(color=colour), error_y=dict(array=[s.get("score_se") for s in summary])))
    if all("gold" in s for s in summary):
        fig.add_trace(go.Scatter(x=steps, y=[s["gold"] for s in summary], mode="lines+markers", name="gold",
                                 line=dict(color=colour, dash="dash"), marker=dict(symbol="diamond-open"),
                                 error_y=dict(array=[s.get("gold_se") for s in summary])), secondary_y=True)
        fig.update_yaxes(title_text="gold score (◇)", tickformat=".2f", secondary_y=True)
    _layout(fig, "Held-out probes", f"{step_axis(kind)} (0 = the reference)", "RM score (normalised)",
            height=300)
    fig.update_xaxes(tickformat="d")
    return fig


TOKEN_ROWS = (("token_kl", "KL (nats)"), ("token_value", "value (score units)"),
              ("token_advantage", "advantage (whitened)"))


def token_heatmap(sample: dict) -> go.Figure:
    """One logged sample, token by token: KL to the reference and, for PPO, the value estimate and the
    advantage (a group method's sample has one advantage for the whole answer: it is in the title).

    Blue is negative, red positive, white zero; each row has its own scale.
    """
    tokens = sample.get("tokens") or []
    positions = list(range(len(tokens)))
    ticks = [plain(t.replace("\n", "⏎")) or "∅" for t in tokens]
    rows = [(key, title) for key, title in TOKEN_ROWS if key == "token_kl" or key in sample]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[title for _, title in rows])
    for row, (key, title) in enumerate(rows, start=1):
        values = sample.get(key) or [0.0] * len(tokens)
        scale = max((abs(v) for v in values), default=1.0) or 1.0
        fig.add_trace(go.Heatmap(z=[values], x=positions, y=[title], zmin=-scale, zmax=scale, colorscale="RdBu_r",
                                 text=[ticks], texttemplate="%{text}", textfont={"size": 10},
                                 colorbar=dict(len=0.84 / len(rows), y=1 - (row - 0.5) / len(rows), thickness=10),
                                 hovertemplate="token %{x}: %{text}<br>" + title + " %{z:.4f}<extra></extra>"),
                      row=row, col=1)
        fig.update_yaxes(showticklabels=False, row=row, col=1)
    fig.update_xaxes(title_text="response token (position)", row=len(rows), col=1)
    title = None
    if "advantage" in sample:  # a group method: one reward and advantage per answer
        title = (f"reward {sample.get('reward', 0.0):+.3f} · advantage {sample['advantage']:+.3f} (against its "
                 "group; the same on every token)")
    fig.update_layout(height=120 + 80 * len(rows), margin={"l": 10, "r": 10, "t": 60 if title else 40, "b": 10},
                      title=title)
    return fig
