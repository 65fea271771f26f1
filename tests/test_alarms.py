"""Health alarms over synthetic PPO metric streams and probe histories: each alarm fires on its own trouble and stays
quiet otherwise; what a run raised shows on every page that shows the run."""

from __future__ import annotations

import json
import math
import random

import pytest

from rlhf_engine.lab.alarms import ALARM_CODES, Alarm, check, new_alarms, probe_peak_comparison, probe_reward_hacking
from rlhf_engine.lab.raised_alarms import RunAlarm, alarm_titles, log_line, run_alarms

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


# ---------------------------------------------------------------------------------------------- held-out probes

PROBE_PROMPTS = 24


def probe_history(means: dict[int, tuple[float, float]], noise: float = 0.05, prompts: int = PROBE_PROMPTS,
                  subset: dict[int, int] | None = None) -> list[dict]:
    """probes.jsonl rows: at each step (0: the reference) every prompt answered with {step: (gold, RM score)}'s
    means, plus a per-prompt offset shared by every step (prompts differ; pairing cancels it) and answer noise.
    ``subset``: {step: number of the first prompts answered there}."""
    rng = random.Random(0)
    offsets = [rng.gauss(0, 0.3) for _ in range(prompts)]
    rows = []
    for step, (gold, score) in means.items():
        for i in range((subset or {}).get(step, prompts)):
            rows.append({"step": step, "policy": "reference" if step == 0 else "policy", "prompt": f"Review {i}:",
                         "sample": 0, "response": "ok", "kl": 0.1 * step, "eos": True,
                         "gold": gold + offsets[i] + rng.gauss(0, noise),
                         "score": score + offsets[i] + rng.gauss(0, noise)})
    return rows


OVER_OPTIMISED = {0: (0.30, 0.0), 4: (0.45, 0.4), 8: (0.55, 0.6), 12: (0.50, 0.9), 16: (0.30, 1.2)}


def test_reward_hacking_on_probes_fires_on_an_over_optimised_probe_history():
    probes = probe_history(OVER_OPTIMISED)
    found = probe_reward_hacking(probes)
    assert (found["peak_step"], found["step"], found["prompts"]) == (8, 16, PROBE_PROMPTS)
    assert found["gold_drop"] == pytest.approx(0.25, abs=0.03) and found["gold_drop_se"] < 0.03
    assert found["score_rise"] == pytest.approx(0.6, abs=0.03) and found["score_rise_se"] < 0.03
    alarm = only(check(healthy(), {"probe_every": 4}, probes=probes), "reward_hacking")
    assert alarm.step == 16
    assert f"On the {PROBE_PROMPTS} held-out probe prompts" in alarm.message  # names what it read
    assert f"gold {found['peak_gold']:.2f} at step 8 → {found['gold']:.2f} at step 16" in alarm.message
    assert f"({-found['gold_drop']:+.2f} ± {found['gold_drop_se']:.2f})" in alarm.message
    assert "training batches" not in alarm.message
    assert "step 8" in alarm.suggestion


def test_reward_hacking_on_probes_is_not_raised_by_noisy_batches_when_the_probes_gained():
    """GRPO as a participant met it: 3-step means of training batches fell (gold 0.71 → 0.54, RM rising), yet the
    held-out probes gained clearly; with probes, the probes judge."""
    batches = hacked()
    on_batches = only(check(batches), "reward_hacking")  # no probes: the training-batch rule, and it says so
    assert "3-step means of the training batches" in on_batches.message
    probes = probe_history({0: (0.30, 0.0), 5: (0.42, 0.3), 10: (0.50, 0.5)})
    assert probe_reward_hacking(probes) is None
    assert check(batches, {"probe_every": 5}, probes=probes) == []
    reference_only = probe_history({0: (0.30, 0.0)})  # at step 7, before the policy's first probe: it waits
    assert check(batches, {"probe_every": 5}, probes=reference_only) == []
    assert check(batches, {"probe_every": 5}, probes=[]) == []
    assert codes(check(batches, {"probe_every": 0}, probes=[])) == {"reward_hacking"}  # a run with no probes


def test_reward_hacking_on_probes_needs_both_changes_beyond_the_noise():
    noisy = probe_history(OVER_OPTIMISED, noise=0.6)  # the same means; paired SE ~0.17, the drop 0.25
    assert probe_reward_hacking(noisy) is None and probe_peak_comparison(noisy)["peak_step"] > 0
    flat_rm = probe_history({**OVER_OPTIMISED, 16: (0.30, 0.6)})  # gold fell but the RM score did not rise
    assert probe_reward_hacking(flat_rm) is None
    assert probe_reward_hacking(probe_history({0: (0.3, 0.0), 4: (0.1, 0.9)})) is not None  # below the reference
    assert "for the reference" in only(check([], probes=probe_history({0: (0.3, 0.0), 4: (0.1, 0.9)})),
                                       "reward_hacking").message


def test_the_probe_rule_calls_a_change_clear_as_the_pages_do():
    from rlhf_engine.lab.noise import CLEAR_SE
    from rlhf_engine.lab.probe_hacking import PROBE_CLEAR_SE

    assert PROBE_CLEAR_SE == CLEAR_SE


def test_reward_hacking_on_probes_pairs_the_prompts_both_steps_answered():
    probes = probe_history(OVER_OPTIMISED, subset={4: 10, 8: 10, 12: 10})  # in-between probes: the first 10
    found = probe_reward_hacking(probes)
    assert (found["peak_step"], found["step"], found["prompts"]) == (8, 16, 10)
    assert "On the 10 held-out probe prompts" in only(check([], probes=probes), "reward_hacking").message


def test_run_alarms_keep_what_the_run_raised_and_say_whether_it_still_holds():
    raised = Alarm("reward_hacking", 7, "warning", "On 3-step means of the training batches, ...", "Raise β.")
    events = f"2026-01-01T00:00:00+00:00 {log_line(raised)}\n2026-01-01T00:00:01+00:00 step 8 done\n"
    status = {"state": "completed", "alarms": ["reward_hacking"]}
    [item] = run_alarms(healthy(), {}, status, None, events)
    assert item == RunAlarm(raised, False, 7)  # raised, no longer found: shown as logged
    rows = with_values(healthy(), "eos_fraction", [0.0, 0.0, 0.0])
    shown = run_alarms(rows, {}, status, None, events)
    assert [(i.alarm.code, i.holds, i.raised_step) for i in shown] == [("reward_hacking", False, 7),
                                                                        ("length_cap", True, None)]
    still = run_alarms(hacked(), {}, status, None, events)  # found again: the latest numbers, first raised at 7
    assert [(i.alarm.code, i.holds, i.raised_step, i.alarm.step) for i in still] == [("reward_hacking", True, 7, STEPS)]
    legacy = "2026-01-01T00:00:00+00:00 alarm at step 21: The reward model's score keeps rising. Suggestion: Stop.\n"
    [old] = run_alarms(healthy(), {}, status, None, legacy)  # logged before codes were: shown as it was logged
    assert (old.alarm.message, old.alarm.suggestion, old.holds, old.raised_step) == (
        "The reward model's score keeps rising.", "Stop.", False, 21)
    assert alarm_titles(["length_cap", "reward_hacking", "bogus"]) == "reward hacking, answers cut at the length cap"


class FakeTrainer:
    """What PolicyRun asks of a trainer when it neither trains nor checkpoints."""

    world_size, step_count = 1, 0

    def settings(self) -> str:
        return "fake trainer"


def test_a_policy_run_raises_reward_hacking_once_when_its_probes_show_it(tmp_path):
    from rlhf_engine.config import PPOConfig
    from rlhf_engine.runs.policy_run import PolicyRun
    from rlhf_engine.runs.runfolder import RunFolder

    config = PPOConfig(steps=16, probe_every=4, checkpoint_every=100, probe_prompts=PROBE_PROMPTS)
    saved = {"config": {"probe_every": 4, "kl_coef": 0.0}}
    run = RunFolder(tmp_path / "overopt")
    run.create("ppo", saved, 16)
    (run.path / "probe_prompts.json").write_text(json.dumps([f"Review {i}:" for i in range(PROBE_PROMPTS)]))
    loop = PolicyRun(run, saved, config, FakeTrainer())
    history = probe_history(OVER_OPTIMISED)
    batches = hacked() + healthy(6)  # noisy batches: they would raise the alarm at step 10 on their own
    for step in range(1, 17):
        loop.trainer.step_count = step
        loop.end_step({**batches[step - 1], "step": step}, [])
        for reference, due in zip((True, False), loop.probes_due()):
            if due:
                loop.add_probes([dict(r) for r in history if r["step"] == (0 if reference else step)], reference)
        if step == 11:  # the batches' rule would have fired at step 10; the probes (peak at step 8) have not
            assert run.status()["alarms"] == []
        if step == 12:  # checked as soon as the probe's answers are in, not at the next step
            assert run.status()["alarms"] == ["reward_hacking"]
    lines = [line for line in run.events().splitlines() if "[reward_hacking]" in line]
    assert len(lines) == 1  # raised by the probe at step 12 (0.55 → 0.50, RM 0.6 → 0.9), logged once
    assert "alarm at step 12 [reward_hacking]: On the 24 held-out probe prompts" in lines[0]
    assert run.status()["alarms"] == ["reward_hacking"]


# ---------------------------------------------------------------------------------------------- on the pages

@pytest.fixture
def page_workspace(tmp_path, monkeypatch):
    """A workspace the pages read (no model is loaded by the pages under test)."""
    from rlhf_engine.config import ModelConfig, to_dict

    root = tmp_path / "ws"
    (root / "runs").mkdir(parents=True)
    (root / "model.json").write_text(json.dumps(to_dict(ModelConfig())))
    monkeypatch.setenv("RLHF_WORKSPACE", str(root))
    return root


def raised_run(root, name: str = "ppo-overopt"):
    """A finished run that raised reward hacking at step 21 (status and events.log) though its metrics, rechecked
    now, no longer show it: what the Policy page said "No health alarm" about."""
    from test_app import _fake_ppo_run

    run = _fake_ppo_run(root, name, healthy(), config={"kl_estimator": "k3"})
    alarm = Alarm("reward_hacking", 21, "warning", "On the 54 held-out probe prompts, gold 0.55 at step 12 → 0.30.",
                  "Raise β.")
    run.log(log_line(alarm))
    run.set_status("completed", alarms=["reward_hacking"])
    return run


def test_the_runs_table_has_an_alarm_column(page_workspace):
    from test_app import open_page

    raised_run(page_workspace)
    at = open_page("pages/runs.py")
    table = at.dataframe[0].value
    assert table.set_index("run").loc["ppo-overopt", "alarms"] == "reward hacking"


def test_the_policy_page_shows_the_alarm_the_run_raised(page_workspace):
    from test_app import open_page, plain, texts

    raised_run(page_workspace)
    at = open_page("pages/ppo.py")
    warnings = [plain(w.value) for w in at.warning]
    assert any("Raised at step 21" in w and "gold 0.55 at step 12" in w and "Raise β" in w for w in warnings), warnings
    assert "No health alarm" not in texts(at)


def test_the_room_frontier_names_the_alarms_of_each_run(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from test_room_pages import ROOT, two_finished_runs

    from dashboard.room import IDENTITY_KEY, Identity
    from dashboard.state import APP_SHELL_KEY
    from rlhf_engine.room.room import Room
    from rlhf_engine.runs.runfolder import RunFolder

    room = Room.open(tmp_path / "room")
    room.join("Alice")
    room.join("Bob")
    monkeypatch.setenv("RLHF_ROOM", str(room.folder))
    two_finished_runs(room)
    RunFolder(room.workspace(room.participants()[0].id).runs / "workshop-sweep-1-beta-0").set_status(
        "completed", alarms=["reward_hacking"])
    at = AppTest.from_file(str(ROOT / "pages/frontier.py"), default_timeout=60)
    at.session_state[APP_SHELL_KEY] = True
    at.session_state[IDENTITY_KEY] = Identity("projector", "", "projector", "view", "x")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    lines = " ".join(m.value for m in at.markdown).split("  \n")
    assert any("Alice" in line and "alarm: reward hacking" in line for line in lines), lines
    assert not any("Bob" in line and "alarm" in line for line in lines), lines
