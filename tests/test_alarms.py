"""Health alarms over synthetic PPO metric streams: each alarm fires on its own trouble and stays quiet otherwise."""

from __future__ import annotations

import math

import pytest

from rlhf_engine.lab.alarms import ALARM_CODES, Alarm, check, new_alarms

STEPS = 10


def healthy(steps: int = STEPS) -> list[dict]:
    """A run going well: KL rising slowly 0.1 -> 2, proxy and gold rising, steady entropy, few clips, EOS 60%."""
    rows = []
    for i in range(steps):
        t = i / (steps - 1)
        rows.append({
            "step": i + 1,
            "objective/kl": 0.1 + 1.9 * t,
            "objective/scores": 0.2 + 0.5 * t,
            "gold/score": 0.1 + 0.3 * t,
            "objective/entropy": 40.0 + (0.5 if i % 2 else -0.5),
            "response_length": 32.0,
            "eos_fraction": 0.6,
            "policy/clipfrac": 0.05,
            "loss/value": 1.0 / (i + 1),
        })
    return rows


def with_values(rows: list[dict], key: str, values: list[float]) -> list[dict]:
    """``rows`` with ``key`` replaced by ``values`` in the last len(values) rows."""
    rows = [dict(row) for row in rows]
    for row, value in zip(rows[-len(values):], values):
        row[key] = value
    return rows


def codes(alarms: list[Alarm]) -> set[str]:
    return {alarm.code for alarm in alarms}


def only(alarms: list[Alarm], code: str) -> Alarm:
    assert codes(alarms) == {code}
    return alarms[0]


def test_healthy_stream_raises_nothing():
    assert check(healthy()) == []
    assert check(healthy(), {"kl_estimator": "k3", "response_length": 32}, {"state": "running"}) == []


def test_nan_metric_is_an_error_at_its_step():
    rows = with_values(healthy(), "loss/value", [float("nan"), 0.1, 0.1])
    alarm = only(check(rows), "nan")
    assert alarm.severity == "error"
    assert alarm.step == STEPS - 2
    assert "loss/value" in alarm.message and f"step {STEPS - 2}" in alarm.message
    assert "stopped" in alarm.message
    assert "learning rate" in alarm.suggestion


def test_infinite_metric_is_a_nan_alarm():
    rows = with_values(healthy(), "objective/kl", [math.inf])
    assert codes(check(rows)) == {"nan"}


def test_nan_from_failed_status():
    status = {"state": "failed",
              "error": "NonFiniteError: policy loss is NaN or infinite at step 7; the run was stopped"}
    alarm = only(check(healthy()[:7], status=status), "nan")
    assert alarm.step == 7 and "step 7" in alarm.message
    assert alarm.severity == "error"


def test_failed_status_for_another_reason_is_not_nan():
    status = {"state": "failed", "error": "OSError: disk full"}
    assert check(healthy(), status=status) == []
    assert check(healthy(), status={"state": "done", "error": "NaN at step 3"}) == []


def test_kl_negative_with_k1_only():
    rows = with_values(healthy(), "objective/kl", [-1.2, -1.3, -1.4])
    alarm = only(check(rows), "kl_negative")
    assert "-1.30" in alarm.message and f"step {STEPS}" in alarm.message
    assert alarm.step == STEPS and alarm.severity == "warning"
    assert "k3" in alarm.suggestion
    assert check(rows, {"kl_estimator": "k3"}) == []
    assert codes(check(rows, {"kl_estimator": "k1"})) == {"kl_negative"}


def test_kl_slightly_negative_is_fine():
    rows = with_values(healthy(), "objective/kl", [-0.1, 0.2, -0.3])
    assert check(rows) == []


def test_kl_runaway():
    rows = with_values(healthy(), "objective/kl", [3.0, 5.0, 4.8, 9.0, 14.0])
    alarm = only(check(rows), "kl_runaway")
    assert "14.00" in alarm.message and "3.00" in alarm.message
    assert alarm.step == STEPS
    assert "β" in alarm.suggestion


def test_kl_runaway_needs_steady_growth_and_size():
    two_dips = with_values(healthy(), "objective/kl", [3.0, 2.0, 5.0, 4.0, 14.0])
    assert check(two_dips) == []
    small = with_values(healthy(), "objective/kl", [2.0, 3.0, 4.0, 5.0, 6.0])
    assert check(small) == []
    not_doubled = with_values(healthy(), "objective/kl", [8.0, 9.0, 10.0, 11.0, 12.0])
    assert check(not_doubled) == []


def test_kl_runaway_waits_out_the_first_steps_and_leaves_beta_0_alone():
    rising = [3.0, 5.0, 4.8, 9.0, 14.0]
    first_steps = with_values(healthy(5), "objective/kl", rising)  # every run's KL rises from 0 at its start
    assert check(first_steps) == []
    assert only(check(with_values(healthy(), "objective/kl", rising), {"kl_coef": 0.05}), "kl_runaway")
    # at a fixed β of 0 nothing is meant to hold the policy (a sweep's baseline); adaptive β starting at 0 is
    # meant to, so it still warns
    assert check(with_values(healthy(), "objective/kl", rising), {"kl_coef": 0.0}) == []
    assert only(check(with_values(healthy(), "objective/kl", rising), {"kl_coef": 0.0, "adaptive_kl": True}),
                "kl_runaway")


def test_kl_runaway_with_adaptive_kl_mentions_target():
    rows = with_values(healthy(), "objective/kl", [3.0, 5.0, 7.0, 9.0, 14.0])
    alarm = only(check(rows, {"adaptive_kl": True, "kl_target": 6.0}), "kl_runaway")
    assert "6.0" in alarm.suggestion


def hacked() -> list[dict]:
    """Proxy keeps rising through the end while gold peaks at step 5 and then falls."""
    rows = healthy()
    for i, row in enumerate(rows):
        row["objective/scores"] = 0.2 + 0.1 * i
        row["gold/score"] = 0.1 + 0.05 * i if i <= 4 else 0.3 - 0.04 * (i - 4)
    return rows


def test_reward_hacking():
    rows = hacked()
    alarm = only(check(rows), "reward_hacking")
    assert alarm.step == STEPS
    # 3-step means: best gold (0.25 + 0.3 + 0.26) / 3 = 0.27 ending at step 6; last (0.18 + 0.14 + 0.1) / 3 = 0.14
    assert "0.27" in alarm.message and "0.14" in alarm.message
    assert "step 6" in alarm.suggestion  # near the checkpoint with the best gold score


def test_reward_hacking_needs_gold_score():
    rows = [{k: v for k, v in row.items() if k != "gold/score"} for row in hacked()]
    assert check(rows) == []


def test_reward_hacking_is_not_raised_by_one_noisy_batch():
    rows = healthy()
    for i, row in enumerate(rows):  # proxy rising; gold flat at 0.5 but for a single bad batch at the end
        row["objective/scores"] = 0.2 + 0.1 * i
        row["gold/score"] = 0.5
    rows[-1]["gold/score"] = 0.3
    assert check(rows) == []


def test_reward_hacking_needs_a_real_drop():
    rows = healthy()
    for i, row in enumerate(rows):  # gold dips by only 0.02 from its best
        row["objective/scores"] = 0.2 + 0.1 * i
        row["gold/score"] = 0.5 - 0.005 * max(0, i - 5)
    assert check(rows) == []


def test_entropy_collapse():
    rows = with_values(healthy(), "objective/entropy", [20.0, 8.0, 6.0, 4.0])
    alarm = only(check(rows), "entropy_collapse")
    assert alarm.step == STEPS
    assert "1.24" in alarm.message  # ~40 nats over 32 tokens at the start
    assert "temperature" in alarm.suggestion


def test_entropy_is_per_token():
    """Entropy per response halving because responses got half as long is not a collapse."""
    rows = with_values(healthy(), "objective/entropy", [10.0, 10.0, 10.0])
    rows = with_values(rows, "response_length", [8.0, 8.0, 8.0])
    assert check(rows) == []
    zero_length = with_values(healthy(), "response_length", [0.0, 0.0, 0.0])
    assert check(zero_length) == []


def test_clipfrac_high():
    rows = with_values(healthy(), "policy/clipfrac", [0.4, 0.5, 0.45])
    alarm = only(check(rows), "clipfrac_high")
    assert "45%" in alarm.message and f"step {STEPS}" in alarm.message
    assert "ppo_epochs" in alarm.suggestion


def test_clipfrac_high_names_the_settings_of_the_runs_own_method():
    """A group method has epochs, not ppo_epochs or num_mini_batches (nor adaptive β): its saved config tells."""
    grpo = {"epochs": 2, "group_size": 4, "cliprange": 0.2, "kl_coef": 0.04}
    rows = [{k: v for k, v in row.items() if k not in ("policy/clipfrac", "loss/value")} for row in healthy()]
    rows = with_values([{**row, "clip_ratio/region_mean": 0.05} for row in rows], "clip_ratio/region_mean",
                       [0.4, 0.5, 0.45])
    for config in (grpo, None):  # without a config, the clip metric it logs tells (clip_ratio: a group method's)
        alarm = only(check(rows, config), "clipfrac_high")
        assert "45%" in alarm.message and "PPO" not in alarm.message
        assert "epochs" in alarm.suggestion and "learning rate" in alarm.suggestion
        assert "ppo_epochs" not in alarm.suggestion and "num_mini_batches" not in alarm.suggestion
    ppo = {"ppo_epochs": 4, "num_mini_batches": 1, "adaptive_kl": False}
    alarm = only(check(with_values(healthy(), "policy/clipfrac", [0.4, 0.5, 0.45]), ppo), "clipfrac_high")
    assert "ppo_epochs" in alarm.suggestion and "num_mini_batches" in alarm.suggestion
    runaway = only(check(with_values(healthy(), "objective/kl", [3.0, 5.0, 4.8, 9.0, 14.0]), grpo), "kl_runaway")
    assert "β" in runaway.suggestion and "adaptive" not in runaway.suggestion


def test_value_loss_diverging():
    rows = with_values(healthy(), "loss/value", [0.5, 1.0, 2.0, 5.0])
    alarm = only(check(rows), "value_loss_diverging")
    assert alarm.step == STEPS and "5" in alarm.message
    assert "vf_coef" in alarm.suggestion
    stalled = with_values(healthy(), "loss/value", [0.5, 1.0, 0.9, 5.0])
    assert check(stalled) == []
    tiny = [{"step": i + 1, "loss/value": v} for i, v in enumerate([1e-6, 1e-5, 1e-4, 5e-4, 9e-4])]
    assert check(tiny) == []


def test_length_cap():
    rows = with_values(healthy(), "eos_fraction", [0.02, 0.0, 0.01])
    alarm = only(check(rows, {"response_length": 48}), "length_cap")
    assert "48-token" in alarm.message and f"step {STEPS}" in alarm.message
    assert "missing_eos_penalty" in alarm.suggestion and "already" not in alarm.suggestion
    penalised = only(check(rows, {"missing_eos_penalty": -1.0}), "length_cap")
    assert "already" in penalised.suggestion and "-1" in penalised.suggestion


def test_groups_that_all_scored_alike():
    rows = [{**row, "frac_reward_zero_std": 0.25} for row in healthy()]
    assert check(rows) == []
    rows = with_values(rows, "frac_reward_zero_std", [0.5, 0.75, 0.75])
    alarm = only(check(rows, {"group_size": 4}), "zero_std_groups")
    assert "67%" in alarm.message and "all 4 answers" in alarm.message and f"step {STEPS}" in alarm.message
    assert "group_size" in alarm.suggestion and "temperature" in alarm.suggestion


def test_length_drifting_steadily_up_or_down_but_not_noise_or_one_jump():
    steps = 12
    growing = with_values(healthy(steps), "response_length", [12.0 + 1.5 * i + (0.8 if i % 2 else -0.8)
                                                              for i in range(steps)])
    alarm = only(check(growing), "length_drift")
    assert "grew steadily" in alarm.message and f"step {steps}" in alarm.message
    assert "dr_grpo" in alarm.suggestion
    shrinking = with_values(healthy(steps), "response_length", [30.0 - 1.5 * i for i in range(steps)])
    assert "shrank steadily" in only(check(shrinking), "length_drift").message
    noisy = with_values(healthy(steps), "response_length", [20.0 + (4.0 if i % 2 else -4.0) for i in range(steps)])
    assert check(noisy) == []
    small = with_values(healthy(steps), "response_length", [30.0 + 0.2 * i for i in range(steps)])
    assert check(small) == []  # 2 tokens on 30: a drift of under 30 %
    jump = with_values(healthy(steps), "response_length", [12.0] * 8 + [30.0] * 4)
    assert check(jump) == []  # one jump, not a steady trend


@pytest.mark.parametrize("metrics", [
    [],
    [{}],
    [{"step": 1}, {"step": 2, "objective/kl": None}],
    [{"step": "x", "objective/kl": "nan", "eos_fraction": "0", "loss/value": [1.0], "policy/clipfrac": True}] * 8,
    [None, 3, "row"],
])
def test_messy_streams_do_not_crash(metrics):
    assert check(metrics) == []
    assert check(metrics, config={"kl_estimator": None, "response_length": "big"}, status={"state": None}) == []


def test_missing_keys_in_some_rows_are_skipped():
    rows = healthy()
    for i, row in enumerate(rows):
        if i % 2:
            row.pop("objective/kl")
            row.pop("eos_fraction")
    assert check(rows) == []
    rows = with_values(rows, "eos_fraction", [0.0] * 6)
    assert codes(check(rows)) == {"length_cap"}


def test_order_is_errors_first_then_code_order():
    rows = with_values(healthy(), "eos_fraction", [0.0, 0.0, 0.0])
    rows = with_values(rows, "policy/clipfrac", [0.9, 0.9, 0.9])
    rows = with_values(rows, "objective/kl", [-2.0, -2.0, -2.0])
    status = {"state": "failed", "error": "NonFiniteError: objective/kl is NaN or infinite at step 10"}
    alarms = check(rows, status=status)
    assert [a.code for a in alarms] == ["nan", "kl_negative", "clipfrac_high", "length_cap"]
    assert [a.severity for a in alarms] == ["error", "warning", "warning", "warning"]
    assert all(a.code in ALARM_CODES for a in alarms)


def test_new_alarms_filters_by_code():
    rows = with_values(healthy(), "eos_fraction", [0.0, 0.0, 0.0])
    rows = with_values(rows, "policy/clipfrac", [0.9, 0.9, 0.9])
    alarms = check(rows)
    assert [a.code for a in new_alarms(alarms, set())] == ["clipfrac_high", "length_cap"]
    assert [a.code for a in new_alarms(alarms, {"clipfrac_high"})] == ["length_cap"]
    assert new_alarms(alarms, {"clipfrac_high", "length_cap"}) == []
