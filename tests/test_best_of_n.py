"""Best-of-n compared fairly: the runs' held-out probe prompts, standard errors, and the reference's probe answers
as its first samples (the same random streams), so its n = 1 point is the runs' reference point."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from rlhf_engine.cli import main
from rlhf_engine.config import PPOConfig, RewardConfig
from rlhf_engine.data.pairs import PreferencePair, write_pairs
from rlhf_engine.lab.best_of_n import best_of_n_curve, expected_best_of_n
from rlhf_engine.lab.best_of_n_job import prepare_best_of_n_job
from rlhf_engine.lab.story import best_of_n_sentences
from rlhf_engine.lab.sweep import Sweep, probe_summary
from rlhf_engine.runs.reward_job import start_reward_job

PAIRS = [PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.", "Awful, bad, terrible.")
         for i in range(12)]


@pytest.fixture
def simulated_rm(runs_dir, tiny_model_config):
    """A reward model on the tiny model, from pairs the demo's gold annotator agrees with (so runs log gold)."""
    write_pairs(PAIRS, runs_dir / "rm.jsonl")
    config = RewardConfig(model=tiny_model_config, steps=2, eval_every=2, norm_samples=4, norm_response_length=4)
    job = start_reward_job(runs_dir / "rm", config, runs_dir / "rm.jsonl", background=False)
    assert job.state == "completed", job.run.status()
    return runs_dir / "rm"


# -- the curve's numbers --------------------------------------------------------------------------

def test_the_curve_has_standard_errors_over_prompts_and_gains_paired_against_n_1():
    proxy = [[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 5.0], [2.0, 0.0, 1.0, 1.0]]
    gold = [[0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0]]
    rows = best_of_n_curve(proxy, gold)
    assert [r["n"] for r in rows] == [1, 2, 4] and all(r["prompts"] == 3 for r in rows)
    for row in rows:
        for key, values in (("score", proxy), ("gold", gold)):
            after = [expected_best_of_n(p, row["n"], v) for p, v in zip(proxy, values)]
            diffs = [a - statistics.fmean(v) for a, v in zip(after, values)]
            assert row[key] == pytest.approx(statistics.fmean(after))
            assert row[f"{key}_se"] == pytest.approx(statistics.stdev(after) / math.sqrt(3))
            assert row[f"{key}_gain"] == pytest.approx(statistics.fmean(diffs))
            assert row[f"{key}_gain_se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(3), abs=1e-12)
    assert rows[0]["gold_gain"] == 0 and rows[0]["gold_gain_se"] == 0


def test_n_1_is_the_mean_of_the_reference_samples_and_every_gain_is_measured_from_it():
    proxy = [[0.0, 2.0, 4.0, 6.0], [1.0, 3.0, 0.0, 0.0]]
    rows = best_of_n_curve(proxy, reference_samples=2)
    baseline = [1.0, 2.0]  # each prompt's first two samples: the reference's probe answers
    assert rows[0]["score"] == pytest.approx(statistics.fmean(baseline)) and "gold" not in rows[0]
    best_of_4 = [6.0, 3.0]
    assert rows[-1]["score"] == pytest.approx(4.5)
    assert rows[-1]["score_gain"] == pytest.approx(statistics.fmean(b - r for b, r in zip(best_of_4, baseline)))


# -- what the sweep says ------------------------------------------------------------------------------

def _row(gold, gold_se, gain, gain_se, n=8):
    return {"n": n, "kl": math.log(n) - (n - 1) / n, "prompts": 54, "score": 1.2, "score_se": 0.1, "score_gain": 0.9,
            "score_gain_se": 0.1, "gold": gold, "gold_se": gold_se, "gold_gain": gain, "gold_gain_se": gain_se}


def _point(beta, gold, gold_se, kl):
    return {"label": f"beta-{beta:g}", "beta": beta, "gold": gold, "gold_se": gold_se, "kl": kl}


def test_the_sentences_give_standard_errors_and_say_within_the_noise():
    clear, noisy = best_of_n_sentences([_row(0.61, 0.04, 0.19, 0.03)], []), best_of_n_sentences(
        [_row(0.45, 0.04, 0.03, 0.03)], [])
    assert clear == ["Best-of-8 from the reference, no training (1.20 nats): gold score 0.42 → 0.61 on 54 held-out "
                     "prompts, +0.19 ± 0.03 (6.3 standard errors): the true reward rose. Gold 0.61 ± 0.04, RM score "
                     "1.20 ± 0.10; n = 1 is the reference's probe answers."]
    assert "within the noise" in noisy[0] and "+0.03 ± 0.03" in noisy[0]


def test_a_run_is_above_best_of_n_only_by_two_standard_errors_of_the_difference():
    bon = [_row(0.60, 0.03, 0.18, 0.03)]
    # 0.71 - 0.60 = 0.11 against sqrt(0.04² + 0.03²) = 0.05: 2.2 standard errors, clearly above
    above = best_of_n_sentences(bon, [_point(0.0, 0.71, 0.04, 20.0), _point(0.2, 0.66, 0.04, 5.0)])
    assert above[1].startswith("Above best-of-n's gold score (0.60 ± 0.03)") and "β = 0 (0.71 ± 0.04" in above[1]
    assert "β 0.2" not in above[1]  # 0.06 is 1.2 standard errors: not above
    noisy = best_of_n_sentences(bon, [_point(0.2, 0.66, 0.04, 5.0)])
    assert noisy[1].startswith("No PPO run clearly beat best-of-8's gold score (0.60 ± 0.03)")
    assert "where the runs moved 5.0–5.0" in noisy[1]
    legacy = best_of_n_sentences([{"n": 4, "kl": 0.64, "score": 1.0, "gold": 0.5}], [_point(0.0, 0.9, 0.01, 9.0)])
    assert legacy[0].endswith("RM score 1.00, gold 0.50.") and legacy[1].startswith("No PPO run clearly beat")


# -- on the tiny model ------------------------------------------------------------------------------

def _sweep_flags(runs_dir, tiny_model_dir, rm, name):
    return ["sweep", "--reward", str(rm), "--out", str(runs_dir / name), "--kl-coefs", "0", "--best-of-n", "4",
            "--model", tiny_model_dir, "--quant", "none", "--steps", "1", "--batch-size", "2",
            "--response-length", "5", "--set", "probe_every=1", "--set", "probe_prompts=3",
            "--set", "reference_probe_samples=2", "--set", "ppo_epochs=1"]


def test_best_of_n_n_1_is_the_runs_reference_point_on_their_probe_prompts(runs_dir, tiny_model_dir, tiny_model_config,
                                                                         simulated_rm, capsys):
    """A batched sweep: best-of-n answers all the runs' probe prompts, its first two samples of each are the
    reference's probe answers (taken by the run, not decoded again), so its n = 1 point is the run's reference's.
    Alone, best-of-n samples all n itself from the same streams: the same answers."""
    assert main(_sweep_flags(runs_dir, tiny_model_dir, simulated_rm, "sw")) == 0, capsys.readouterr().err
    sweep = Sweep(runs_dir / "sw")
    assert set(sweep.states().values()) == {"completed"}
    bon_run, (member,) = sweep.best_of_n_run(), sweep.members()
    saved = json.loads((bon_run.path / "best_of_n.json").read_text())
    bon = sweep.best_of_n()
    assert [r["n"] for r in bon] == [1, 2, 4] and bon[0]["prompts"] == 3 and saved["reference_samples"] == 2
    probes = json.loads((member.run.path / "probe_prompts.json").read_text())
    assert json.loads((bon_run.path / "prompts.json").read_text()) == probes
    assert "taken from best-of-n" in member.run.events()
    reference = probe_summary(member.run.probes())[0]
    assert reference["step"] == 0 and reference["answers"] == 6
    assert bon[0]["score"] == pytest.approx(reference["score"], rel=1e-9, abs=1e-12)
    assert bon[0]["gold"] == pytest.approx(reference["gold"], rel=1e-9, abs=1e-12)
    by_answer = {(r["prompt"], r["sample"]): r for r in member.run.probes() if r["policy"] == "reference"}
    for p, prompt in enumerate(probes):
        for i in range(2):
            assert (by_answer[(prompt, i)]["score"], by_answer[(prompt, i)]["gold"]) == (saved["proxy"][p][i],
                                                                                         saved["gold"][p][i])

    config = PPOConfig(model=tiny_model_config, steps=1, batch_size=2, response_length=5, probe_every=1,
                       probe_prompts=3, reference_probe_samples=2)
    job = prepare_best_of_n_job(runs_dir / "alone", config, simulated_rm, 4)
    job.start()
    assert job.join(timeout=120) == "completed"
    alone = json.loads((runs_dir / "alone" / "best_of_n.json").read_text())
    assert alone["gold"] == saved["gold"]
    assert sum(alone["proxy"], []) == pytest.approx(sum(saved["proxy"], []), abs=1e-5)
