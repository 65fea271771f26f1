"""The methods step's ranking: two methods are ordered only when their difference stands clear of the seeds."""

from rlhf_engine.config import PPOConfig
from rlhf_engine.lab.method_ranking import compare, gain_line, method_results, ranking_lines
from rlhf_engine.lab.sweep import plan_methods, split_label


def _point(label, gain, se=0.05, kl=5.0):
    return {"label": label, "gold_gain": gain, "gold_gain_se": se, "kl": kl, "prompts": 54, "source": "held-out"}


def test_seeds_are_labelled_and_parsed():
    members = plan_methods({"ppo": PPOConfig(steps=2)}, {"ppo": [0.0, 0.2]}, seeds=(3, 4))
    assert [label for label, _ in members] == ["ppo-beta-0-seed-3", "ppo-beta-0-seed-4", "ppo-beta-0.2-seed-3",
                                               "ppo-beta-0.2-seed-4"]
    assert [c.seed for _, c in members] == [3, 4, 3, 4]
    assert split_label("grpo-beta-0.04-seed-2") == ("grpo", 0.04, 2)
    assert split_label("beta-0") == ("beta-0", None, None)
    assert [label for label, _ in plan_methods({"ppo": PPOConfig()}, {}, seeds=(0,))] == ["ppo-beta-0.05"]


def test_rank_only_beyond_the_spread_between_seeds():
    results = method_results([_point("dpo-beta-0.1-seed-0", 0.50), _point("dpo-beta-0.1-seed-1", 0.46),
                              _point("grpo-beta-0.04-seed-0", 0.20), _point("grpo-beta-0.04-seed-1", 0.16),
                              _point("rloo-beta-0.05-seed-0", 0.27), _point("rloo-beta-0.05-seed-1", -0.12)])
    by = {r.method: r for r in results}
    assert compare(by["dpo"], by["grpo"]) is None  # 0.30 apart, spreads 0.04: ranked
    assert "spread between RLOO" in compare(by["grpo"], by["rloo"])  # 0.10 apart, RLOO's seeds 0.39 apart
    lines = ranking_lines(results)
    assert lines[-1].startswith("In order of mean gold gain: DPO at β 0.1 > GRPO at β 0.04 ≈ RLOO at β 0.05")
    assert "ranks above" in lines[0] and "not ranked" in lines[1]


def test_close_means_within_the_noise_are_not_ranked():
    results = method_results([_point("ppo-beta-0.05-seed-0", 0.20, se=0.07), _point("ppo-beta-0.05-seed-1", 0.20),
                              _point("grpo-beta-0.04-seed-0", 0.10, se=0.07), _point("grpo-beta-0.04-seed-1", 0.11)])
    assert "standard errors" in compare(*results)
    one_seed = method_results([_point("ppo-beta-0.05", 0.5), _point("grpo-beta-0.04", 0.0)])
    assert "one seed" in compare(*one_seed)


def test_gain_line_says_which_seed_is_clear():
    (result,) = method_results([_point("rloo-beta-0.05-seed-0", 0.27, se=0.06),
                                _point("rloo-beta-0.05-seed-1", -0.05, se=0.07)])
    line = gain_line(result)
    assert "+0.27 ± 0.06 (seed 0) and -0.05 ± 0.07 (seed 1)" in line
    assert "a clear gain in seed 0; within the noise in seed 1." in line
    (both,) = method_results([_point("dpo-beta-0.1-seed-0", 0.5), _point("dpo-beta-0.1-seed-1", 0.4)])
    assert gain_line(both).endswith("a clear gain in both seeds.")
