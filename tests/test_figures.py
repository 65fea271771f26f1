"""What the charts say on their axes, and which charts a run gets: a chart of several runs names the step of
their method, or none; a run's panels, on its page and in its report, are its method's (the registry's)."""

from rlhf_engine.lab import figures
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
    markers = figures.beta_markers(points)
    assert list(markers) == [0.0, 0.05, 0.2, None]  # the smallest β first, an adaptive β apart
    assert [symbol for symbol, _ in markers.values()] == ["circle", "diamond", "triangle-up", "hourglass"]
    assert figures.beta_markers([{"beta": 0.05}])[0.05][1] == "●" and None not in figures.beta_markers(points[:2])
    colours = [figures.method_colour(name) for name in registry.names()]
    assert len(set(colours)) == len(colours) and figures.method_colour("ppo") == ("#1f77b4", "blue")
