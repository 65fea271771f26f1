"""How each run looks on every chart: colour = its method, marker = its β, and runs that share both told apart by
shade, dash and legend name; the key that says so in words. One place decides a run's look, so that a reader who
learnt the key on one chart reads every chart of the dashboard and the report (``figures`` draws with these)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rlhf_engine.lab.sweep import split_label
from rlhf_engine.methods import registry

if TYPE_CHECKING:
    from rlhf_engine.runs.runfolder import RunFolder

# One colour per method, in the registry's order (PPO blue, GRPO orange, RLOO green, DPO violet, ...).
METHOD_COLOURS = (("#1f77b4", "blue"), ("#ff7f0e", "orange"), ("#2ca02c", "green"), ("#9467bd", "violet"),
                  ("#8c564b", "brown"), ("#e377c2", "pink"), ("#17becf", "cyan"), ("#bcbd22", "olive"))
UNKNOWN_METHOD_COLOUR = ("#222222", "black")  # a run whose method nothing says (a bare label)
# One marker per β, the smallest β first. Left out: the square (a point from training batches) and the star (a
# run's gold peak on the gold-vs-proxy chart).
BETA_MARKERS = (("circle", "●"), ("diamond", "◆"), ("triangle-up", "▲"), ("triangle-down", "▼"),
                ("pentagon", "⬟"), ("hexagon", "⬢"), ("cross", "✚"), ("x", "✖"))
ADAPTIVE_MARKER = ("hourglass", "⧗")  # adaptive-β runs: their β moves
UNKNOWN_BETA_MARKER = ("circle-x", "⊗")  # a run whose β nothing says
# Runs that share method and β (two seeds; a sweep's β = 0 run and a longer one at β = 0) take these in turn: a
# line dash (charts of one line per run) and a shade of the method's colour (every chart, points included).
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
SHADES = ((0.0, ""), (-0.4, "dark "), (0.45, "light "), (-0.65, "very dark "), (0.7, "very light "))


@dataclass(frozen=True)
class Style:
    """How one run is drawn on every chart of a page: its method's colour and its β's marker, so that a reader who
    learnt the key once reads every chart; a run that shares both with another gets its own shade and dash, and a
    legend name that says what differs."""

    colour: str  # "#rrggbb": the method's colour, shaded for the second, third, ... run of one method and β
    colour_name: str  # that colour in words ("blue", "dark blue"), for captions; "" where a caller gave a bare colour
    marker: str  # plotly marker symbol of the β (BETA_MARKERS), hollow on gold-score points
    marker_char: str  # the same marker as one character (●, ◆, ▲, ...), for captions
    dash: str  # plotly line dash: "solid" for the first run of a method and β, then the next of DASHES
    name: str  # legend and hover name: "PPO, β = 0.05", "PPO, β = 0 (40 steps)", "GRPO, β = 0.04 (seed 2)"
    method: str = ""  # the method's title ("PPO"), "" where unknown
    beta: str = ""  # the β in words ("β = 0.05", "adaptive β"), "" where unknown


BEST_OF_N_STYLE = Style("#7f7f7f", "gray", "circle", "●", "dot", "best-of-n", "best-of-n")  # no training, no β


def method_colour(method: str) -> tuple[str, str]:
    """(colour, its name) of a method's runs: PPO blue, GRPO orange, RLOO green, DPO violet, then the others'."""
    names = registry.names()
    index = names.index(method) if method in names else len(names)
    return METHOD_COLOURS[index % len(METHOD_COLOURS)]


def beta_key(point: dict) -> float | None:
    """The β a point ({beta, adaptive}) is marked by: None for an adaptive β (or none known)."""
    beta = point.get("beta")
    return None if point.get("adaptive") or not isinstance(beta, (int, float)) else float(beta)


def beta_markers(points: Sequence[dict]) -> dict[float | None, tuple[str, str]]:
    """{β: (plotly marker symbol, text character)} of the βs of ``points`` (``beta_key``), the smallest first
    (●, ◆, ▲, ▼, …), and ⧗ for an adaptive β: the same β has the same marker on every chart of one page."""
    betas = sorted({beta_key(p) for p in points} - {None})
    markers = {beta: BETA_MARKERS[i % len(BETA_MARKERS)] for i, beta in enumerate(betas)}
    return {**markers, None: ADAPTIVE_MARKER} if any(beta_key(p) is None for p in points) else markers


def label_facts(label: str) -> dict:
    """What a sweep member's label says of its run, for a chart given labels alone: "ppo-beta-0.05-seed-2" ->
    method ppo, β 0.05, seed 2; "beta-0" (a KL sweep's, whose method is its config's) -> β 0; "adaptive" -> an
    adaptive β; any other label (a run id) -> nothing."""
    if label == "adaptive":
        return {"adaptive": True}
    method, beta, seed = split_label("-" + label if label.startswith("beta-") else label)  # "-beta-0": no method
    if beta is None:
        return {}
    facts = {"method": method, "beta": beta, "seed": seed}
    return {key: value for key, value in facts.items() if value not in (None, "")}


def run_facts(run: RunFolder, label: str | None = None, note: str | None = None) -> dict:
    """{label, method, beta, adaptive, seed, note?} of a run folder from its saved config, what ``run_styles``
    reads; ``note`` names the run apart from others of its method and β ("40 steps"). A run whose config cannot be
    read says what its label says (``label_facts``)."""
    label = label or run.id
    noted = {"note": note} if note else {}
    try:
        saved = run.config()
    except (OSError, ValueError):
        return {"label": label, **label_facts(label), **noted}
    config = saved.get("config", {})
    return {"label": label, "method": saved.get("kind"), "beta": config.get("kl_coef"),
            "adaptive": bool(config.get("adaptive_kl")), "seed": config.get("seed"), **noted}


def run_styles(runs: Sequence[dict]) -> dict[str, Style]:
    """{label: Style} of runs given as {label, method?, beta?, adaptive?, seed?, note?} (``run_facts``,
    ``label_facts``, ``final_point``): the one place a run's look is decided. Colour by method (``method_colour``),
    marker by β (``beta_markers``), so one β has one marker on every chart the styles are used for. Runs that share
    method and β take SHADES and DASHES in turn and are named apart: by their ``note``, else by their seed where the
    seeds differ, else "run 2"; a note given to a run of its own is shown too."""
    markers = beta_markers([run for run in runs if _knows_beta(run)])
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    styles = {}
    for group in groups.values():
        seeds = {run.get("seed") for run in group}
        for index, run in enumerate(group):
            marker = markers[beta_key(run)] if _knows_beta(run) else UNKNOWN_BETA_MARKER
            note = run.get("note") or _default_note(run, index, len(group), len(seeds) > 1)
            styles[run["label"]] = _style(run, marker, index, note)
    return styles


def _knows_beta(run: dict) -> bool:
    """Whether a run's β is known: a number, or adaptive (its marker ⧗)."""
    return beta_key(run) is not None or bool(run.get("adaptive"))


def _group_key(run: dict) -> tuple:
    """The runs drawn alike but for shade, dash and name: one method, one β."""
    return run.get("method"), beta_key(run), bool(run.get("adaptive"))


def _default_note(run: dict, index: int, size: int, seeds_differ: bool) -> str | None:
    """What names a run apart from the others of its method and β when its caller said nothing: its seed, else its
    place ("run 2"); nothing for a run alone."""
    if size == 1:
        return None
    return f"seed {run['seed']}" if seeds_differ and run.get("seed") is not None else f"run {index + 1}"


def _style(run: dict, marker: tuple[str, str], index: int, note: str | None) -> Style:
    """The Style of the ``index``-th run of its method and β (0: the method's own colour, a solid line)."""
    method = run.get("method")
    title = registry.get(method).title if isinstance(method, str) and registry.is_policy_kind(method) else ""
    colour, colour_name = method_colour(method) if title else UNKNOWN_METHOD_COLOUR
    amount, shade_name = SHADES[index % len(SHADES)]
    beta = "adaptive β" if run.get("adaptive") else f"β = {run['beta']:g}" if beta_key(run) is not None else ""
    name = ", ".join(part for part in (title, beta) if part) or plain(run["label"])  # a bare label is its own name
    return Style(colour=_shade(colour, amount), colour_name=shade_name + colour_name, marker=marker[0],
                 marker_char=marker[1], dash=DASHES[index % len(DASHES)],
                 name=f"{name} ({plain(note)})" if note else name, method=title, beta=beta)


def _shade(colour: str, amount: float) -> str:
    """A "#rrggbb" colour mixed with black (amount < 0) or white (amount > 0) by |amount|."""
    rgb = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    towards = 0 if amount < 0 else 255
    return "#" + "".join(f"{round(c + abs(amount) * (towards - c)):02x}" for c in rgb)


def sweep_styles(sweep, extra: Sequence[dict] = ()) -> dict[str, Style]:
    """{label: Style} of a sweep's members (``sweep.Sweep``), from their configs, and of ``extra`` runs drawn beside
    them (``run_facts``: the Workshop's longer run at β = 0). A member that shares method and β with an extra run is
    noted "sweep"; the members of a sweep that varies another setting than β share both, and are noted by it
    ("whiten_advantages off")."""
    vary = sweep.record().get("vary")
    members = [run_facts(m.run, m.label, _setting_note(vary, m.label)) for m in sweep.members()]
    beside = {_group_key(run) for run in extra}
    members = [{**run, "note": "sweep"} if not run.get("note") and _group_key(run) in beside else run
               for run in members]
    return run_styles([*members, *extra])


def _setting_note(vary: str | None, label: str) -> str | None:
    """A member label of a sweep over another setting than β or the method, in words: "whiten_advantages-off" ->
    "whiten_advantages off"."""
    if not vary or vary in ("kl_coef", "method") or not label.startswith(f"{vary}-"):
        return None
    return f"{vary} {label[len(vary) + 1:]}"


def style_key(styles: Iterable[Style], lines: bool = True) -> str:
    """The key under a chart of these runs, in words: "Colour: the method (PPO blue, GRPO orange); marker: β (● β = 0,
    ◆ β = 0.2)", methods in the registry's order and βs from the smallest whatever the runs' order, and, where runs
    share both, what tells them apart: shade and dash (``lines`` False, a chart of points: shade alone)."""
    styles = list(styles)
    titles = [method.title for method in registry.methods().values()]
    firsts = sorted((s for s in styles if s.method and s.dash == DASHES[0]), key=lambda s: _rank(titles, s.method))
    colours = dict.fromkeys(f"{s.method} {s.colour_name}" for s in firsts)
    chars = [char for _, char in (*BETA_MARKERS, ADAPTIVE_MARKER, UNKNOWN_BETA_MARKER)]
    marked = sorted((s for s in styles if s.beta), key=lambda s: _rank(chars, s.marker_char))
    markers = dict.fromkeys(f"{s.marker_char} {s.beta}" for s in marked)
    parts = [f"colour: the method ({', '.join(colours)})"] if colours else []
    parts += [f"marker: β ({', '.join(markers)})"] if markers else []
    if any(s.dash != DASHES[0] for s in styles):
        apart = "shade and dash" if lines else "shade"
        parts.append(f"runs of one method and β differ in {apart}, and the legend says how")
    text = "; ".join(parts)
    return text[:1].upper() + text[1:]


def _rank(order: Sequence[str], item: str) -> int:
    """Where ``item`` stands in ``order`` (past its end when absent), for sorting a key's parts."""
    return order.index(item) if item in order else len(order)


def bare_style(colour: str | None, name: str = "") -> Style:
    """The Style of a run a caller gave a bare colour ("#rrggbb", "rgb(...)"; None: plotly's first): the first β
    marker, a solid line, and ``name`` as given (plain text); it says nothing of method or β, so ``style_key`` leaves
    it out."""
    return Style(colour, "", BETA_MARKERS[0][0], "", DASHES[0], plain(name))


def resolve_styles(facts: Sequence[dict], styles: dict | None) -> dict[str, Style]:
    """{label: Style} of the runs a chart draws (``facts``: {label, ...what it knows}): the caller's Style
    (``run_styles``); a caller's bare colour (``bare_style``, named by its label); else ``run_styles`` of what the
    run's point or label says, so a chart given nothing still follows the convention."""
    styles = styles or {}
    derived = run_styles([f for f in facts if not isinstance(styles.get(f["label"]), (Style, str))])
    resolved = {}
    for fact in facts:
        label, given = fact["label"], styles.get(fact["label"])
        resolved[label] = (given if isinstance(given, Style) else bare_style(given, label) if isinstance(given, str)
                           else derived[label])
    return resolved


def labels_facts(labels: Iterable[str]) -> list[dict]:
    """{label, ...label_facts} of runs a chart knows by their labels alone (what ``resolve_styles`` reads)."""
    return [{"label": label, **label_facts(label)} for label in labels]


# The older colours, one per β, that pages/workshop.py still calls (beta_colour): hot for a free policy (β = 0), cool
# for a held one, interpolated on a log scale of β between these anchors.
BETA_ANCHORS = ((0.0, "#d62728"), (0.01, "#ff7f0e"), (0.05, "#2ca02c"), (0.2, "#1f77b4"), (1.0, "#6a3d9a"))
ADAPTIVE_COLOUR = "#222222"  # adaptive-β runs: their β moves


def _beta_position(beta: float) -> float:
    """0 at β = 0, then log10 β from 0.001 (0.1) to 1 (1.0) and beyond (clipped)."""
    return 0.0 if beta <= 0 else min(1.0, 0.1 + 0.3 * (math.log10(max(beta, 1e-3)) + 3))


def beta_colour(beta: float | None, adaptive: bool = False) -> str:
    """The older colour of a run of this (fixed) β ("rgb(r, g, b)"), or ADAPTIVE_COLOUR; ``run_styles`` is the
    convention now."""
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


def sweep_colours(sweep) -> dict[str, Style]:
    """Alias of ``sweep_styles`` for rlhf_engine/lab/report.py until it calls that."""
    return sweep_styles(sweep)


def plain(text: str) -> str:
    """Text shown literally by plotly, which otherwise reads tags such as <b> or <a> in labels."""
    return html.escape(str(text), quote=False)
