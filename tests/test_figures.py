"""What the charts say on their axes, and which charts a run gets: a chart of several runs names the step of
their method, or none; a run's panels, on its page and in its report, are its method's (the registry's)."""

import pytest

from rlhf_engine.lab import figures, styles
from rlhf_engine.methods import registry
from rlhf_engine.runs.runfolder import RunFolder


def test_runs_side_by_side_count_the_step_of_their_shared_method_or_a_plain_step():
    series = {"a": [{"step": 1, "objective/kl": 0.5}], "b": [{"step": 1, "objective/kl": 0.7}]}
    for kinds, axis in ((["grpo", "grpo"], "GRPO step"), (["ppo", "dpo", "grpo"], "step"), (["ppo"], "PPO step")):
        fig = figures.overlay_figure(series, "objective/kl", figures.shared_kind(kinds))
        assert fig.layout.xaxis.title.text == axis
        assert [len(trace.x) for trace in fig.data] == [1, 1]


def test_axes_name_each_methods_step_and_its_own_meaning_of_a_metric_from_the_registry():
    for method in registry.methods().values():
        assert figures.step_axis(method.name) == f"{method.title} step"
        for metric, text in method.metric_labels.items():
            assert figures.label(metric, method.name) == text
    assert figures.step_axis("reward_model") == "optimiser step" and figures.step_axis("policy") == "step"
    assert figures.label("loss", "reward_model") == "BT loss (nats / pair)"  # a reward model's loss is its own
    assert figures.label("loss", "dpo") == "DPO loss (nats / pair)"


def test_a_runs_panels_are_its_methods_with_gold_and_kl_estimators_where_it_samples():
    for method in registry.methods().values():
        config = {"epochs": 2}
        panels = figures.policy_panels(method.name, config, has_gold=True, has_kl_estimators=True)
        own = method.charts(config)
        assert [p for p in panels if p not in (figures.GOLD_PANEL, figures.KL_ESTIMATORS_PANEL)] == list(own)
        if method.learns_from_pairs:  # its KL and scores come from the held-out probes, drawn apart
            assert panels == own
        else:
            assert panels[1] == figures.GOLD_PANEL
            titles = [title for title, _ in panels]
            assert titles.index(figures.KL_ESTIMATORS_PANEL[0]) == titles.index("KL to the reference") + 1
    clip = "Clipped ratio (share of tokens)"
    assert clip in [t for t, _ in figures.policy_panels("grpo", {"epochs": 2}, False)]
    assert clip not in [t for t, _ in figures.policy_panels("grpo", {"epochs": 1}, False)]  # one pass clips nothing


DPO_ROWS = [{"step": step, "loss": 0.69 - 0.1 * step, "rewards/chosen": 0.1 * step, "rewards/rejected": -0.1 * step,
             "rewards/margins": 0.2 * step, "rewards/accuracies": 0.5 + 0.25 * step, "logps/chosen": -20.0,
             "logps/rejected": -22.0 - step, "time/step_s": 1.5} for step in (1, 2)]


def test_a_dpo_runs_report_draws_its_metric_charts_and_the_pairs_it_learnt_from(tmp_path):
    from rlhf_engine.lab.report import write_report

    run = RunFolder(tmp_path / "dpo-run")
    run.create("dpo", {"config": {"kl_coef": 0.1, "batch_size": 2, "probe_every": 2}, "gold": True,
                       "pairs": str(tmp_path / "pairs.jsonl")}, 2)
    for row in DPO_ROWS:
        run.append_metrics(row)
    run.append_samples([{"step": 2, "prompt": "Say <b>hi</b>.", "chosen": "Lovely.", "rejected": "Awful.",
                         "margin": 0.25}])
    run.set_status("completed", step=2)
    text = write_report(run.path).read_text()
    assert "<h2>Metrics</h2>" in text
    panels = registry.get("dpo").panels
    assert text.count('class="plotly-graph-div"') == len(panels)  # its charts, and no gold chart: it samples none
    for title, _ in panels:
        assert f'"text":"{title}"' in text.replace('": "', '":"'), title
    assert '"text":"DPO step"' in text and '"text":"DPO loss (nats \\u002f pair)"' in text  # its axes (/ escaped)
    assert "Lovely." in text and "Awful." in text and "0.250" in text  # the pairs, with their implicit margin
    assert "Say &lt;b&gt;hi&lt;/b&gt;." in text and "<b>hi</b>" not in text  # run text as text, never as markup


def test_runs_of_several_methods_take_a_colour_per_method_and_a_marker_per_beta():
    points = [{"beta": 0.2}, {"beta": 0.0}, {"beta": 0.05, "adaptive": True}, {"beta": 0.05}, {"beta": 0.2}]
    markers = styles.beta_markers(points)
    assert list(markers) == [0.0, 0.05, 0.2, None]  # the smallest β first, an adaptive β apart
    assert [symbol for symbol, _ in markers.values()] == ["circle", "diamond", "triangle-up", "hourglass"]
    assert styles.beta_markers([{"beta": 0.05}])[0.05][1] == "●" and None not in styles.beta_markers(points[:2])
    colours = [styles.method_colour(name) for name in registry.names()]
    assert len(set(colours)) == len(colours) and styles.method_colour("ppo") == ("#1f77b4", "blue")


# The convention of every chart of runs: colour = the method, marker = the β; runs that share both differ in shade,
# dash and legend name.

def _frontier_points():
    return [{"label": f"{method}-beta-{beta:g}", "kl": 1.0 + beta, "score": 0.5, "gold": 0.2, "beta": beta,
             "source": "held-out"} for method in ("ppo", "grpo") for beta in (0.0, 0.2)]


def _rm_traces(fig):
    return [t for t in fig.data if t.name.endswith(": RM score")]


def test_a_frontier_of_two_methods_at_two_betas_takes_one_colour_per_method_and_one_marker_per_beta():
    fig = figures.frontier_figure(_frontier_points())
    traces = {t.name: t for t in _rm_traces(fig)}
    assert list(traces) == ["PPO, β = 0: RM score", "PPO, β = 0.2: RM score", "GRPO, β = 0: RM score",
                            "GRPO, β = 0.2: RM score"]
    colours = [t.marker.color for t in traces.values()]
    assert colours == [styles.method_colour("ppo")[0]] * 2 + [styles.method_colour("grpo")[0]] * 2
    assert [t.marker.symbol for t in traces.values()] == ["circle", "diamond"] * 2
    gold = [t.marker.symbol for t in fig.data if t.name.endswith(": gold")]
    assert gold == ["circle-open", "diamond-open"] * 2  # the gold: the same marker, hollow
    assert all(t.text is None for t in fig.data if t.legendgroup)  # runs named in the legend, no text to overlap


def test_runs_of_one_method_and_beta_differ_in_dash_shade_and_name():
    looks = styles.run_styles([{"label": "a", "method": "ppo", "beta": 0.0, "seed": 1},
                                 {"label": "b", "method": "ppo", "beta": 0.0, "seed": 2},
                                 {"label": "c", "method": "ppo", "beta": 0.0, "seed": 2, "note": "40 steps"},
                                 {"label": "d", "method": "ppo", "beta": 0.05, "seed": 1}])
    a, b, c, d = (looks[k] for k in "abcd")
    assert (a.name, b.name, c.name, d.name) == ("PPO, β = 0 (seed 1)", "PPO, β = 0 (seed 2)", "PPO, β = 0 (40 steps)",
                                                "PPO, β = 0.05")
    assert len({a.dash, b.dash, c.dash}) == 3 and len({a.colour, b.colour, c.colour}) == 3
    assert a.colour == d.colour == styles.method_colour("ppo")[0] and a.dash == d.dash == "solid"
    assert a.marker == b.marker == c.marker != d.marker
    assert b.colour_name == "dark blue" and c.colour_name == "light blue"
    fig = figures.overlay_figure({k: [{"step": 1, "objective/kl": 0.5}] for k in "abcd"}, "objective/kl", "ppo",
                                 looks)
    assert [(t.name, t.line.dash) for t in fig.data] == [(s.name, s.dash) for s in (a, b, c, d)]
    key = styles.style_key(looks.values())
    assert key.startswith("Colour: the method (PPO blue); marker: β (● β = 0, ◆ β = 0.05)") and "dash" in key


class _Member:
    def __init__(self, label, run):
        self.label, self.run = label, run


class _Sweep:  # duck-types sweep.Sweep: record() and members()
    def __init__(self, vary, members):
        self.vary, self._members = vary, members

    def record(self):
        return {"vary": self.vary}

    def members(self):
        return self._members


def _run(tmp_path, name, kind="ppo", **config):
    run = RunFolder(tmp_path / name)
    run.create(kind, {"config": config}, 2)
    return run


def test_the_sweeps_beta_0_run_and_a_longer_one_at_beta_0_are_told_apart(tmp_path):
    members = [_Member(f"beta-{b:g}", _run(tmp_path, f"s-{b:g}", kl_coef=b, seed=0)) for b in (0.0, 0.05)]
    longer = styles.run_facts(_run(tmp_path, "long", kl_coef=0.0, seed=0), "β = 0, 40 steps", note="40 steps")
    looks = styles.sweep_styles(_Sweep("kl_coef", members), [longer])
    assert looks["beta-0"].name == "PPO, β = 0 (sweep)" and looks["β = 0, 40 steps"].name == "PPO, β = 0 (40 steps)"
    assert looks["beta-0.05"].name == "PPO, β = 0.05"  # alone at its β: no note
    assert looks["beta-0"].colour != looks["β = 0, 40 steps"].colour
    assert looks["beta-0"].marker == looks["β = 0, 40 steps"].marker  # one β, one marker
    other = styles.sweep_styles(_Sweep("whiten_advantages", [
        _Member(f"whiten_advantages-{v}", _run(tmp_path, f"w-{v}", kl_coef=0.05, whiten_advantages=v == "on"))
        for v in ("on", "off")]))
    assert [s.name for s in other.values()] == ["PPO, β = 0.05 (whiten_advantages on)",
                                                "PPO, β = 0.05 (whiten_advantages off)"]


def test_no_legend_or_hover_says_beta_dash():
    labels = ["beta-0", "beta-0.05", "adaptive", "grpo-beta-0.04-seed-1", "grpo-beta-0.04-seed-2"]
    rows = [{"step": s, "kl": 0.5 * s, "score": 0.1 * s, "gold": 0.1, "objective/kl": 0.5} for s in (0, 1, 2)]
    points = [{"label": label, "kl": 1.0, "score": 0.5, "gold": 0.2, "beta": 0.05 if "0.05" in label else None,
               "adaptive": label == "adaptive"} for label in labels]
    figs = [figures.frontier_figure(points), figures.gold_proxy_figure({label: rows for label in labels}),
            figures.overlay_figure({label: rows for label in labels}, "objective/kl")]
    text = " ".join(f"{t.name} {t.hovertemplate}" for fig in figs for t in fig.data)
    assert "beta-" not in text and "β = 0.04 (seed 2)" in text and "adaptive β" in text and "β = 0:" in text


def test_subset_probes_stand_on_the_path_by_their_paired_gain_with_small_markers():
    """A subset's plain mean sits as far off the path as its prompts are easier than the rest (here its gold means
    are 0.5 lower than the full set's would be): placed at the reference's full mean plus its paired gain, the run
    draws one path through every probe."""
    rows = [{"step": 0, "kl": 0.0, "score": 0.0, "gold": 0.1, "prompts": 54, "full": True},
            *({"step": s, "kl": 0.4 * s, "score": 0.2 * s - 0.5, "gold": 0.05 * s - 0.4, "prompts": 12, "full": False,
               "score_gain": 0.2 * s, "score_gain_se": 0.05, "gold_gain": 0.05 * s, "gold_gain_se": 0.04}
              for s in (2, 4, 6)),
            {"step": 8, "kl": 3.0, "score": 1.5, "gold": 0.4, "prompts": 54, "full": True}]
    fig = figures.gold_proxy_figure({"ppo-beta-0": rows})
    by_name = {t.name: t for t in fig.data}
    score, gold = by_name["PPO, β = 0: RM score"], by_name["PPO, β = 0: gold"]
    assert [c[0] for c in score.customdata] == [0, 2, 4, 6, 8]  # one path through every probe
    assert score.y == pytest.approx((0.0, 0.4, 0.8, 1.2, 1.5)) and gold.y == pytest.approx((0.1, 0.2, 0.3, 0.4, 0.4))
    assert list(score.marker.size) == [8, 5, 5, 5, 8] and score.marker.symbol[1] == "circle-open"
    assert "subset of prompts (12)" in score.customdata[1][1]  # the hover says how the point was placed
    assert [t.name for t in fig.data if "subset" in (t.name or "")] == [
        "small markers: a probe of a subset of prompts (12), placed by its paired gain"]
    probes = figures.probe_figure(rows, styles.run_styles([{"label": "r", "method": "ppo", "beta": 0.0}])["r"])
    assert [t.name for t in probes.data][:2] == ["RM score", "gold"]
    assert probes.data[0].error_y.array[1] == 0.05  # a placed subset point carries its paired gain's error


def test_the_probe_charts_right_axis_names_the_gold_score_it_carries():
    summary = [{"step": s, "score": 0.1 * s, "score_se": 0.05, "gold": 0.2, "gold_se": 0.04} for s in (0, 2)]
    fig = figures.probe_figure(summary, "#1f77b4")
    assert fig.layout.yaxis.title.text == "RM score (normalised)"
    assert fig.layout.yaxis2.title.text.startswith("gold score")


class _Fit:  # duck-types gao.GaoFit
    form, label = "rl", "gold ≈ d(1.0 − 0.5 log d)"

    def curve(self):
        return [0.5, 1.0, 2.0], [0.3, 0.5, 0.4]


class _BonFit(_Fit):
    form, label = "bon", "gold ≈ d(1.0 − 0.5 d)"


def test_gao_fits_are_dotted_lines_in_their_runs_colour_and_best_of_n_rows_carry_error_bars():
    rows = [{"step": s, "kl": float(s), "score": 0.1 * s, "gold": 0.1} for s in (0, 1, 4)]
    bon = [{"n": n, "kl": kl, "score": 0.1 * n, "gold": 0.05 * n, "score_se": 0.02, "gold_se": 0.03}
           for n, kl in ((1, 0.0), (4, 0.64))]
    fig = figures.gold_proxy_figure({"ppo-beta-0": rows}, bon, fits={"ppo-beta-0": _Fit(), "best-of-n": _BonFit()})
    by_name = {t.name: t for t in fig.data}
    fit = by_name["Gao fit (RL form), PPO, β = 0"]
    assert fit.line.dash == "dot" and fit.line.color == styles.method_colour("ppo")[0] and fit.x == (0.5, 1.0, 2.0)
    assert fit.yaxis == "y2"  # absolute gold, on the gold axis
    assert by_name["Gao fit (best-of-n form), best-of-n"].line.color == styles.BEST_OF_N_STYLE.colour
    assert by_name["best-of-n: RM score"].error_y.array == (0.02, 0.02)
    assert by_name["best-of-n: gold"].error_y.array == (0.03, 0.03)
    frontier = figures.frontier_figure([], bon)
    assert {t.name: t.error_y.array for t in frontier.data} == {"best-of-n: RM score": (0.02, 0.02),
                                                                "best-of-n: gold": (0.03, 0.03)}
    assert fig.layout.xaxis.title.text == figures.SQRT_KL_X and "nats per answer" in figures.SQRT_KL_X


def test_the_style_key_reads_methods_in_the_registrys_order_and_betas_from_the_smallest_whatever_the_runs_order():
    runs = [{"label": "g", "method": "grpo", "beta": 0.2}, {"label": "p2", "method": "ppo", "beta": 0.2},
            {"label": "p1", "method": "ppo", "beta": 0.0}, {"label": "p1b", "method": "ppo", "beta": 0.0}]
    looks = styles.run_styles(runs)
    key = styles.style_key(looks.values())
    assert key.startswith("Colour: the method (PPO blue, GRPO orange); marker: β (● β = 0, ◆ β = 0.2)")
    assert key.endswith("differ in shade and dash, and the legend says how")
    assert "dash" not in styles.style_key(looks.values(), lines=False)  # a chart of points draws no dash
    assert styles.style_key([styles.bare_style("#123456", "x")]) == ""  # a bare colour says nothing of method or β


def test_a_bare_colour_draws_in_that_colour_under_its_label():
    rows = [{"step": s, "kl": float(s), "score": 0.1 * s, "gold": 0.1} for s in (0, 1)]
    fig = figures.gold_proxy_figure({"β = 0 <b>": rows}, styles={"β = 0 <b>": "rgb(1, 2, 3)"})
    assert {t.line.color for t in fig.data} == {"rgb(1, 2, 3)"}
    assert [t.name for t in fig.data] == ["β = 0 &lt;b&gt;: RM score", "β = 0 &lt;b&gt;: gold"]  # plain text


def test_figures_still_answers_for_the_style_names_its_callers_read_from_it():
    # rlhf_engine/lab/report.py, pages/workshop.py, dashboard/lab.py and tests/test_lab.py, test_room_pages.py
    for name in ("sweep_colours", "sweep_styles", "style_key", "beta_colour", "BETA_ANCHORS", "ADAPTIVE_COLOUR",
                 "method_colour"):
        assert getattr(figures, name) is getattr(styles, name), name
    assert not hasattr(styles, "runs_colours") and not hasattr(figures, "runs_colours")  # its caller uses run_styles
