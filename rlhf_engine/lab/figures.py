"""Plotly figures of runs and sweeps, for the dashboard and the HTML report. Every axis says what it
measures and in which unit. Text from runs (tokens, labels) is shown as plain text, never as markup."""

from __future__ import annotations

import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

# How each run looks is rlhf_engine.lab.styles' job. Re-exported (``X as X``) for the files that read them from
# figures and that others edit: rlhf_engine/lab/report.py (sweep_colours), pages/workshop.py and tests/test_lab.py
# (beta_colour and its anchors), dashboard/lab.py (sweep_styles, style_key), tests/test_room_pages.py (method_colour).
from rlhf_engine.lab.styles import ADAPTIVE_COLOUR as ADAPTIVE_COLOUR
from rlhf_engine.lab.styles import BEST_OF_N_STYLE, Style, bare_style, label_facts, labels_facts, plain, resolve_styles
from rlhf_engine.lab.styles import BETA_ANCHORS as BETA_ANCHORS
from rlhf_engine.lab.styles import beta_colour as beta_colour
from rlhf_engine.lab.styles import method_colour as method_colour
from rlhf_engine.lab.styles import style_key as style_key
from rlhf_engine.lab.styles import sweep_colours as sweep_colours
from rlhf_engine.lab.styles import sweep_styles as sweep_styles
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
                   styles: dict | None = None) -> go.Figure:
    """One metric across several runs of ``kind`` (``shared_kind``): {run label: metric rows}, each run a line in
    its style (``styles``: {label: Style}, ``styles.run_styles``; or {label: colour}; none: what the labels say), so
    runs of one method and β differ in dash and shade."""
    styles = resolve_styles(labels_facts(series), styles)
    axis = label(metric, kind)
    fig = go.Figure()
    for run_label, rows in series.items():
        style = styles[run_label]
        points = [(r["step"], r[metric]) for r in rows if r.get(metric) is not None]
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=style.name, line=dict(color=style.colour, dash=style.dash),
                                 marker=dict(symbol=style.marker, size=7, color=style.colour),
                                 hovertemplate=f"{style.name}<br>step %{{x}}<br>{plain(axis)} %{{y:.3f}}"
                                               "<extra></extra>"))
    return _layout(fig, axis, step_axis(kind), axis, height=420)


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


SWEEP_OVERLAYS = ("objective/scores", "gold/score", "objective/kl", "beta", "objective/entropy", "response_length")

# ----------------------------------------------------------------------------------------------
# The teaching lab's charts: reward vs KL, gold vs proxy against √KL, held-out probes, token view
# ----------------------------------------------------------------------------------------------

FRONTIER_X = "KL to the reference (nats per answer) at each run's last held-out probe"
SQRT_KL_X = "√KL, KL in nats per answer (Gao et al.'s d)"
FINAL_POINT_NOTE = ("each run's point is its last held-out probe (the same prompts and sampling seed at every "
                    "probe), ± 1 standard error")
SUBSET_NOTE = "subset of prompts"  # legend words of probes of a fixed subset of the held-out prompts (full False)


def frontier_figure(points: Sequence[dict], best_of_n: Sequence[dict] = (), styles: dict | None = None,
                    gold: bool = True) -> go.Figure:
    """Reward vs KL: each run's final point (sweep.final_point) and the best-of-n curve from the reference.

    points: [{label, kl, score, gold?, *_se?, source, method?, beta?, adaptive?}]; best_of_n: [{n, kl, score,
    gold?, score_se?, gold_se?}]. ``styles``: {label: Style} (``styles.run_styles``, ``styles.sweep_styles``), or
    {label: colour} (``styles.bare_style``); none: each point's own method and β say. RM scores are
    filled markers, gold scores the same marker hollow on the right-hand axis; each run is named in the legend (no
    text on the chart: run labels there overlapped and were cut at its edges). A run whose point comes from training
    batches (no probe answers) is a square and says so. ``gold`` False: RM scores only (the room's frontier draws
    the gold on a chart of its own).
    """
    styles = resolve_styles([_point_facts(p) for p in points], styles)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    has_gold = gold and (any("gold" in p for p in points) or any("gold" in r for r in best_of_n))
    if best_of_n:
        _add_best_of_n(fig, best_of_n, [r["kl"] for r in best_of_n], score=True, gold=has_gold, gold_secondary=True,
                       n_labels=True)
    for p in points:
        style = styles[p["label"]]
        training = p.get("source") == "training"
        name = style.name + (" (training batches)" if training else "")
        symbol = "square" if training else style.marker
        fig.add_trace(go.Scatter(
            x=[p["kl"]], y=[p["score"]], mode="markers", marker=dict(size=12, color=style.colour, symbol=symbol),
            error_x=_error(p.get("kl_se")), error_y=_error(p.get("score_se")), name=f"{name}: RM score",
            legendgroup=p["label"],
            hovertemplate=f"{name}<br>KL %{{x:.2f}} nats<br>RM score %{{y:.3f}}<extra></extra>"))
        if has_gold and "gold" in p:
            fig.add_trace(go.Scatter(
                x=[p["kl"]], y=[p["gold"]], mode="markers", error_y=_error(p.get("gold_se")),
                marker=dict(size=12, symbol=_open(symbol), color=style.colour, line=dict(width=2)),
                name=f"{name}: gold", legendgroup=p["label"], showlegend=False,  # the RM entry toggles both
                hovertemplate=f"{name}<br>KL %{{x:.2f}} nats<br>gold %{{y:.3f}}<extra></extra>"),
                secondary_y=True)
    _layout(fig, "Reward vs KL", FRONTIER_X, "RM score (normalised)", height=460)
    if has_gold:
        fig.update_yaxes(title_text="gold score (hollow markers)", tickformat=".2f", secondary_y=True)
    return fig


def _point_facts(point: dict) -> dict:
    """What a frontier point says of its run (its known values over its label's)."""
    return {**label_facts(point["label"]), **{k: v for k, v in point.items() if v is not None}}


def _add_best_of_n(fig: go.Figure, rows: Sequence[dict], x: list[float], score: bool, gold: bool,
                   gold_secondary: bool, n_labels: bool = False) -> None:
    """The best-of-n baseline in its own gray, dotted: RM score (filled) and gold (hollow), each ± its standard
    error where the rows carry one (``score_se``, ``gold_se``); ``n_labels``: "n=4" beside each point."""
    colour, ns = BEST_OF_N_STYLE.colour, [r["n"] for r in rows]
    if score:
        fig.add_trace(go.Scatter(x=x, y=[r["score"] for r in rows], mode="lines+markers+text" if n_labels else
                                 "lines+markers", text=[f"n={n}" for n in ns], textposition="bottom right",
                                 cliponaxis=False, customdata=ns, error_y=_errors(rows, "score_se"),
                                 name="best-of-n: RM score", line=dict(dash="dot", color=colour),
                                 marker=dict(color=colour),
                                 hovertemplate="best-of-%{customdata}<br>RM score %{y:.3f}<extra></extra>"))
    if gold and any("gold" in r for r in rows):
        fig.add_trace(go.Scatter(x=x, y=[r.get("gold") for r in rows], mode="lines+markers", customdata=ns,
                                 error_y=_errors(rows, "gold_se"), name="best-of-n: gold",
                                 line=dict(dash="dot", color=colour), marker=dict(symbol="diamond-open", color=colour),
                                 hovertemplate="best-of-%{customdata}<br>gold %{y:.3f}<extra></extra>"),
                      secondary_y=gold_secondary)


def _open(symbol: str) -> str:
    """The hollow marker of a symbol (gold scores are hollow, RM scores filled)."""
    return symbol if symbol.endswith("-open") else f"{symbol}-open"


def _number(value) -> bool:
    """Whether a value is a number to draw (not None, not NaN)."""
    return isinstance(value, (int, float)) and value == value


def _error(se: float | None) -> dict | None:
    """Error bars of ± se, or none where se is missing or NaN."""
    return dict(type="data", array=[se], thickness=1.2, width=3) if _number(se) else None


def _errors(rows: Sequence[dict], key: str) -> dict | None:
    """Error bars of ± each row's ``key`` (none on a row without it), or none where no row has one."""
    values = [r.get(key) if _number(r.get(key)) else None for r in rows]
    return dict(type="data", array=values, thickness=1.2, width=3) if any(v is not None for v in values) else None


def gold_proxy_figure(series: dict[str, Sequence[dict]], best_of_n: Sequence[dict] = (),
                      styles: dict | None = None, proxy: bool = True, fits: dict | None = None,
                      peaks: dict[str, int] | None = None) -> go.Figure:
    """Gold and proxy reward against √KL, the axis of Gao et al. 2022 ("Scaling Laws for Reward Model
    Overoptimization"): where the proxy keeps rising and the gold turns down, optimising the RM stopped helping.

    series: {run label: probe summary rows (sweep.probe_summary: step, kl, score, gold, full?)}, the reference's
    (step 0, KL 0) first; each run draws one path through its probes, its RM score (solid, filled) and gold
    (dashed, hollow) in its style (``styles`` as in ``frontier_figure``), and a star at its gold peak where ``peaks``
    ({label: probe step}, ``story.overoptimisation_peaks``) names one: the probes showed over-optimisation there.
    A probe of a subset of the prompts (``full`` False) stands on the path at the reference's mean on every prompt
    plus its paired gain on its subset (``subset_on_full_scale``), with a small marker: a subset's plain mean would
    sit as far from the path as its prompts are easier or harder than the rest. ``fits``: {label: a fit with
    ``curve() -> (ds, golds)``, ``form`` ("rl"/"bon") and ``label``} (``gao.GaoFit``), each a dotted line in its
    run's colour (best-of-n's gray for a "bon" fit of no run). ``proxy`` False: the gold alone, on the left-hand axis
    (the room's frontier, whose other chart has the RM scores); a run of one point (the room's) draws its gold ±
    ``gold_se``.
    """
    fits = fits or {}
    labels = [*series, *(label for label, fit in fits.items() if label not in series and fit.form != "bon")]
    styles = resolve_styles(labels_facts(labels), styles)
    peaks = peaks or {}
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    subset_sizes = set()
    for label, rows in series.items():
        points = subset_on_full_scale([r for r in rows if _number(r.get("kl")) and _number(r.get("score"))])
        if points:
            _add_probe_path(fig, points, styles[label], label, proxy, alone=len(points) == 1,
                            peak_step=peaks.get(label))
            subset_sizes |= {r.get("prompts") for r in points if not r.get("full", True)}
    if subset_sizes:
        _add_subset_key(fig, subset_sizes)
    if best_of_n:
        _add_best_of_n(fig, best_of_n, [math.sqrt(max(r["kl"], 0.0)) for r in best_of_n], score=proxy, gold=True,
                       gold_secondary=proxy)
    for label, fit in fits.items():
        _add_fit(fig, fit, styles.get(label, BEST_OF_N_STYLE), label, secondary=proxy)
    _layout(fig, "Gold vs proxy against √KL" if proxy else "Gold against √KL", SQRT_KL_X,
            "RM score (normalised)" if proxy else "gold score (hollow)", height=460)
    if proxy:
        fig.update_yaxes(title_text="gold score (hollow, dashed)", tickformat=".2f", secondary_y=True)
    else:
        fig.update_yaxes(tickformat=".2f")
    return fig


def subset_on_full_scale(rows: Sequence[dict]) -> list[dict]:
    """A run's probe summary with each subset probe's RM and gold score put on the scale of the full probes: the
    reference's mean over every prompt plus the subset's paired gain over the reference on its own prompts (an
    estimate of the full mean whose noise is the paired gain's, not the subset's spread of prompts; its ``*_se`` is
    the gain's). Rows without a full reference (step 0) or without gains stay as they are."""
    reference = next((r for r in rows if r.get("step") == 0 and r.get("full", True)), None)
    placed = []
    for row in rows:
        row = dict(row)
        if not row.get("full", True) and reference is not None:
            for key in ("score", "gold"):
                if _number(row.get(f"{key}_gain")) and _number(reference.get(key)):
                    row[key] = reference[key] + row[f"{key}_gain"]
                    row[f"{key}_se"] = row.get(f"{key}_gain_se")  # its noise: the paired gain's
        placed.append(row)
    return placed


def _add_probe_path(fig: go.Figure, rows: Sequence[dict], style: Style, group: str, proxy: bool,
                    alone: bool, peak_step: int | None = None) -> None:
    """One run's path on the gold-vs-proxy chart: its RM scores (when ``proxy``) and its gold scores at every probe,
    a subset probe's point small (hollow on the RM line), and a star at ``peak_step``."""
    x = [math.sqrt(max(r["kl"], 0.0)) for r in rows]
    steps, scores = [r["step"] for r in rows], [r["score"] for r in rows]
    subset = [not r.get("full", True) for r in rows]
    notes = [f", {SUBSET_NOTE} ({r.get('prompts', '?')}): the reference's mean on every prompt + the paired gain"
             if small else "" for r, small in zip(rows, subset)]
    big = None if proxy else 14  # the room's one point: big
    sizes = [5 if small else big or 8 for small in subset] if any(subset) else big
    hover = f"{style.name}, step %{{customdata[0]}}%{{customdata[1]}}<br>√KL %{{x:.2f}}<br>"
    data = [[step, note] for step, note in zip(steps, notes)]
    if proxy:
        symbols = [_open(style.marker) if small else style.marker for small in subset]
        fig.add_trace(go.Scatter(x=x, y=scores, mode="lines+markers", name=f"{style.name}: RM score",
                                 line=dict(color=style.colour, width=2), customdata=data, legendgroup=group,
                                 marker=dict(symbol=symbols, size=sizes, color=style.colour),
                                 hovertemplate=hover + "RM score %{y:.3f}<extra></extra>"))
    if not all(_number(r.get("gold")) for r in rows):
        return
    gold = [r["gold"] for r in rows]
    fig.add_trace(go.Scatter(x=x, y=gold, mode="lines+markers", name=f"{style.name}: gold",
                             line=dict(color=style.colour, dash="dash", width=2), showlegend=not proxy,
                             marker=dict(symbol=_open(style.marker), size=sizes, color=style.colour),
                             error_y=_error(rows[0].get("gold_se")) if alone else None,  # one point: its ± 1 SE
                             customdata=data, legendgroup=group, hovertemplate=hover + "gold %{y:.3f}<extra></extra>"),
                  secondary_y=proxy)
    peak = steps.index(peak_step) if peak_step in steps else None
    if peak is not None:
        fig.add_trace(go.Scatter(x=[x[peak]], y=[gold[peak]], mode="markers", showlegend=False,
                                 name=f"{style.name}: gold peak", legendgroup=group,
                                 marker=dict(symbol="star", size=15, color=style.colour, line=dict(width=1)),
                                 hovertemplate=f"{style.name}: gold peak, step {steps[peak]}<br>√KL %{{x:.2f}}<br>"
                                               "gold %{y:.3f}<extra></extra>"),
                      secondary_y=proxy)


def _add_subset_key(fig: go.Figure, sizes: set) -> None:
    """One legend entry for every run's small markers: the probes of a subset of the prompts."""
    count = f" ({sizes.pop()})" if len(sizes) == 1 and None not in sizes else ""
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip",
                             name=f"small markers: a probe of a {SUBSET_NOTE}{count}, placed by its paired gain",
                             marker=dict(symbol="circle-open", size=5, color="#555555")))


def _add_fit(fig: go.Figure, fit, style: Style, group: str, secondary: bool) -> None:
    """A Gao et al. fit of the gold score against √KL (``fit.curve() -> (ds, golds)``), dotted in its run's colour."""
    ds, golds = fit.curve()
    form = "RL form" if fit.form == "rl" else "best-of-n form"
    fig.add_trace(go.Scatter(x=[float(d) for d in ds], y=[float(g) for g in golds], mode="lines",
                             line=dict(color=style.colour, dash="dot", width=2), legendgroup=group,
                             name=f"Gao fit ({form}), {style.name}",
                             hovertemplate=f"{plain(fit.label)}<br>√KL %{{x:.2f}}<br>gold %{{y:.3f}}<extra></extra>"),
                  secondary_y=secondary)


def probe_figure(summary: Sequence[dict], colour: Style | str | None = None, kind: str = "ppo") -> go.Figure:
    """A run's held-out probes step by step (sweep.probe_summary): RM score (filled, left) and gold score (hollow,
    dashed, right), ± 1 standard error; step 0 is the reference. ``colour``: the run's Style
    (``styles.run_styles``) or a bare colour. A probe of a subset of the prompts (``full`` False) stands on the path
    by its paired gain (``subset_on_full_scale``, ± the gain's standard error), with a small marker."""
    style = colour if isinstance(colour, Style) else bare_style(colour)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    entries = subset_on_full_scale(summary)
    has_gold = bool(entries) and all("gold" in s for s in entries)
    if entries:
        steps = [s["step"] for s in entries]
        subset = [not s.get("full", True) for s in entries]
        sizes = [5 if small else 8 for small in subset] if any(subset) else None
        fig.add_trace(go.Scatter(x=steps, y=[s.get("score") for s in entries], mode="lines+markers", name="RM score",
                                 line=dict(color=style.colour, width=2),
                                 marker=dict(symbol=[_open(style.marker) if small else style.marker
                                                     for small in subset], size=sizes),
                                 error_y=_errors(entries, "score_se")))
        if has_gold:
            fig.add_trace(go.Scatter(x=steps, y=[s["gold"] for s in entries], mode="lines+markers", name="gold",
                                     line=dict(color=style.colour, dash="dash", width=2),
                                     marker=dict(symbol=_open(style.marker), size=sizes),
                                     error_y=_errors(entries, "gold_se")), secondary_y=True)
        if any(subset):
            _add_subset_key(fig, {s.get("prompts") for s, small in zip(entries, subset) if small})
    _layout(fig, "Held-out probes", f"{step_axis(kind)} (0 = the reference)", "RM score (normalised)", height=300)
    if has_gold:  # after _layout, which titles every y axis
        fig.update_yaxes(title_text="gold score (hollow, dashed)", tickformat=".2f", secondary_y=True)
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
