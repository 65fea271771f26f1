"""What the charts say on their axes: a chart of several runs names the step of their method, or none."""

from rlhf_engine.lab import figures


def test_runs_side_by_side_count_the_step_of_their_shared_method_or_a_plain_step():
    series = {"a": [{"step": 1, "objective/kl": 0.5}], "b": [{"step": 1, "objective/kl": 0.7}]}
    for kinds, axis in ((["grpo", "grpo"], "GRPO step"), (["ppo", "dpo", "grpo"], "step"), (["ppo"], "PPO step")):
        fig = figures.overlay_figure(series, "objective/kl", figures.shared_kind(kinds))
        assert fig.layout.xaxis.title.text == axis
        assert [len(trace.x) for trace in fig.data] == [1, 1]
