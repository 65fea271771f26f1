"""The teaching lab on the tiny model: sweeps, gold logging, best-of-n, token view, ablations, the report."""

from __future__ import annotations

import dataclasses
import html
import itertools
import json
import math
import re
import statistics
import time

import pytest
import torch

from rlhf_engine.cli import main
from rlhf_engine.config import PPOConfig, RewardConfig
from rlhf_engine.data.pairs import PreferencePair, write_pairs
from rlhf_engine.lab.best_of_n import best_of_n_curve, best_of_n_kl, expected_best_of_n
from rlhf_engine.lab.demo import gold_score, labelled_by_gold_annotator
from rlhf_engine.lab.sweep import Sweep, list_sweeps, member_label, parse_values, plan, plan_methods
from rlhf_engine.lab.sweep_job import prepare_sweep
from rlhf_engine.runs.policy_job import start_policy_job
from rlhf_engine.runs.queue import JobQueue
from rlhf_engine.runs.reward_job import start_reward_job
from rlhf_engine.runs.runfolder import RunFolder

SIMULATED = [PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.", "Awful, bad, terrible.")
             for i in range(12)]
# a human might prefer the blunt answer: not the simulated annotator's rule
HUMAN = SIMULATED[:11] + [PreferencePair("Review it.", "It broke on day one.", "What a lovely, wonderful gadget!")]


def _reward_dir(root, model_config, pairs, name="rm"):
    write_pairs(pairs, root / f"{name}.jsonl")
    config = RewardConfig(model=model_config, steps=2, eval_every=2, norm_samples=4, norm_response_length=4)
    job = start_reward_job(root / name, config, root / f"{name}.jsonl", background=False)
    assert job.state == "completed", job.run.status()
    return root / name


@pytest.fixture
def simulated_rm(runs_dir, tiny_model_config):
    return _reward_dir(runs_dir, tiny_model_config, SIMULATED)


def _base(model_config, **kw) -> PPOConfig:
    settings = dict(steps=2, batch_size=2, response_length=5, ppo_epochs=1, probe_every=0)
    return PPOConfig(model=model_config, **{**settings, **kw})


# -- best-of-n ----------------------------------------------------------------------------------

def test_best_of_n_kl_formula_matches_the_exact_kl_of_best_of_n_on_a_fine_distribution():
    """Best-of-n over M equally likely, distinct-scored outcomes picks rank i with probability
    (i/M)^n - ((i-1)/M)^n; its KL to the uniform sampler tends to log n - (n-1)/n as M grows."""
    m = 20000
    for n in (1, 2, 4, 16):
        probs = [(i / m) ** n - ((i - 1) / m) ** n for i in range(1, m + 1)]
        exact = sum(p * math.log(p * m) for p in probs if p > 0)
        assert best_of_n_kl(n) == pytest.approx(exact, abs=2e-3), n
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    with pytest.raises(ValueError):
        best_of_n_kl(0)


def test_expected_best_of_n_equals_the_average_over_every_subset():
    proxy = [0.3, -1.2, 2.5, 0.9, 0.1, -0.4]
    gold = [0.1, 0.2, -0.5, 0.7, 0.0, 0.3]
    for n in range(1, len(proxy) + 1):
        subsets = list(itertools.combinations(range(len(proxy)), n))
        best = [max(s, key=lambda i: proxy[i]) for s in subsets]
        assert expected_best_of_n(proxy, n) == pytest.approx(statistics.fmean(proxy[i] for i in best))
        assert expected_best_of_n(proxy, n, gold) == pytest.approx(statistics.fmean(gold[i] for i in best))
    assert expected_best_of_n(proxy, 1) == pytest.approx(statistics.fmean(proxy))
    assert expected_best_of_n(proxy, len(proxy)) == max(proxy)


def test_best_of_n_curve_rises_with_n_and_uses_the_closed_form_kl():
    rows = best_of_n_curve([[0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 0.0, 5.0]], [[0, 0, 0, 1], [0, 0, 0, 1]])
    assert [r["n"] for r in rows] == [1, 2, 4]
    assert [r["kl"] for r in rows] == [best_of_n_kl(n) for n in (1, 2, 4)]
    assert rows[0]["score"] < rows[1]["score"] < rows[2]["score"] == 4.0
    assert rows[2]["gold"] == 1.0


# -- gold ---------------------------------------------------------------------------------------

def test_simulated_pairs_are_recognised_and_human_ones_are_not():
    assert labelled_by_gold_annotator(SIMULATED)
    assert not labelled_by_gold_annotator(HUMAN)
    assert not labelled_by_gold_annotator([])


def test_ppo_logs_the_gold_score_of_each_sample_when_the_rm_learnt_simulated_pairs(runs_dir, tiny_model_config,
                                                                                   simulated_rm):
    job = start_policy_job(runs_dir / "ppo", _base(tiny_model_config), simulated_rm, background=False)
    assert job.state == "completed", job.run.status()
    assert job.run.config()["gold"] is True
    samples = job.run.samples()
    assert all(s["gold"] == pytest.approx(gold_score(s["response"])) for s in samples)
    metrics = job.run.metrics()
    assert all(isinstance(m["gold/score"], float) and -1 <= m["gold/score"] <= 1 for m in metrics)


def test_no_gold_score_for_a_reward_model_of_human_pairs_unless_asked(runs_dir, tiny_model_config):
    rm = _reward_dir(runs_dir, tiny_model_config, HUMAN, "rm-human")
    job = start_policy_job(runs_dir / "ppo-human", _base(tiny_model_config, steps=1), rm, background=False)
    assert job.run.config()["gold"] is False
    assert "gold/score" not in job.run.metrics()[0] and "gold" not in job.run.samples()[0]
    forced = start_policy_job(runs_dir / "ppo-forced", _base(tiny_model_config, steps=1, gold_score="on"), rm,
                           background=False)
    assert "gold/score" in forced.run.metrics()[0]


# -- token view and ablations -------------------------------------------------------------------

def test_samples_carry_a_token_view_that_adds_up_to_the_sample(runs_dir, tiny_model_config, simulated_rm):
    job = start_policy_job(runs_dir / "ppo", _base(tiny_model_config, steps=2), simulated_rm, background=False)
    for sample in job.run.samples():
        n = len(sample["tokens"])
        assert 1 <= n <= 5
        assert len(sample["token_kl"]) == len(sample["token_value"]) == len(sample["token_advantage"]) == n
        assert sum(sample["token_kl"]) == pytest.approx(sample["kl"], abs=1e-3)
        assert "".join(sample["tokens"]).strip().startswith(sample["response"][:3].strip())


def test_advantage_whitening_can_be_switched_off(tiny_model_config):
    from rlhf_engine.core.generation import Rollout
    from rlhf_engine.core.rollout import ScoredRollout
    from rlhf_engine.lab.demo import GoldReward
    from rlhf_engine.methods.ppo import PPOTrainer

    trainer = PPOTrainer(_base(tiny_model_config, whiten_advantages=False), GoldReward(), ["a"])
    mask = torch.ones(2, 3)
    rollout = Rollout(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1), torch.ones(2, 3, dtype=torch.long), mask,
                      torch.ones(2, dtype=torch.bool))
    zeros = torch.zeros(2, 3)
    batch = ScoredRollout(rollout, ["", ""], zeros, zeros, zeros, torch.tensor([3.0, 1.0]), torch.tensor([3.0, 1.0]),
                          values=zeros)
    raw = trainer.advantages(batch).advantages
    assert raw[0, -1].item() == pytest.approx(3.0) and raw[1, -1].item() == pytest.approx(1.0)
    trainer.config = dataclasses.replace(trainer.config, whiten_advantages=True)
    whitened = trainer.advantages(batch).advantages
    assert whitened.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert whitened.std().item() == pytest.approx(1.0, abs=1e-3)


# -- sweeps -------------------------------------------------------------------------------------

def test_sweep_values_are_parsed_by_field_and_bad_ones_refused():
    assert parse_values("kl_coef", "0, 0.01,0.2") == [0.0, 0.01, 0.2]
    assert parse_values("whiten_advantages", "on,off") == [True, False]
    assert parse_values("missing_eos_penalty", "none,1.5") == [None, 1.5]
    assert parse_values("kl_estimator", "k1,k3") == ["k1", "k3"]
    for field, text in (("kl_coef", "-1"), ("kl_coef", "0,0"), ("kl_estimator", "k2"), ("cliprange", "0.1"),
                        ("normalize_reward", "maybe"), ("kl_coef", " , ")):
        with pytest.raises(ValueError):
            parse_values(field, text)
    assert member_label("kl_coef", 0.05) == "beta-0.05"
    assert member_label("missing_eos_penalty", None) == "missing_eos_penalty-none"


def test_sweep_plan_changes_only_the_varied_setting(tiny_model_config):
    base = _base(tiny_model_config, seed=7)
    members = plan(base, "kl_coef", [0.0, 0.2], adaptive=True)
    assert [label for label, _ in members] == ["beta-0", "beta-0.2", "adaptive"]
    for label, config in members:
        differing = {f.name for f in dataclasses.fields(PPOConfig) if getattr(config, f.name) != getattr(base, f.name)}
        assert differing <= {"kl_coef", "adaptive_kl"}, label
        assert config.seed == 7
    assert members[2][1].adaptive_kl and members[2][1].kl_coef == base.kl_coef


def test_a_sweep_queues_its_runs_and_they_run_one_after_another(runs_dir, tiny_model_config, simulated_rm):
    jobs = prepare_sweep(runs_dir / "sw", _base(tiny_model_config), simulated_rm, "kl_coef", [0.0, 0.2],
                         adaptive=True, best_of_n=4, best_of_n_prompts=3, batched=False)
    assert [j.run.id for j in jobs] == ["sw-best-of-4", "sw-beta-0", "sw-beta-0.2", "sw-adaptive"]
    assert all(j.run.status()["state"] == "queued" for j in jobs)
    queue = JobQueue()
    for job in jobs:
        queue.submit(job)
    assert queue.position(jobs[-1]) == 3
    assert queue.wait_idle(timeout=300)
    sweep = Sweep(runs_dir / "sw")
    assert set(sweep.states().values()) == {"completed"}
    started = [json.loads((j.run.path / "status.json").read_text())["created_at"] for j in jobs]
    ended = [j.run.events().splitlines()[-1][:25] for j in jobs]
    # each run's first line once it runs (a warning about the tiny reward model is written when it is queued)
    firsts = [next(line for line in j.run.events().splitlines() if "warning:" not in line)[:25] for j in jobs]
    assert all(ended[i] <= firsts[i + 1] for i in range(len(jobs) - 1)), (started, firsts, ended)
    assert [m.label for m in sweep.members()] == ["beta-0", "beta-0.2", "adaptive"]
    assert [m.run.metrics()[-1]["beta"] for m in sweep.members()][:2] == [0.0, 0.2]
    # same seed, prompts and normalisation: the first rollout is identical in every run
    first = [m.run.samples()[0]["response"] for m in sweep.members()]
    assert len(set(first)) == 1
    frontier = sweep.frontier()
    assert [p["label"] for p in frontier] == ["beta-0", "beta-0.2", "adaptive"]
    assert all({"kl", "score", "gold"} <= set(p) for p in frontier)
    bon = sweep.best_of_n()
    assert [r["n"] for r in bon] == [1, 2, 4] and bon[2]["kl"] == pytest.approx(math.log(4) - 0.75)
    assert list_sweeps(runs_dir) and list_sweeps(runs_dir)[0].id == "sw"


def test_a_batched_sweep_trains_its_runs_side_by_side_in_one_job_and_resumes(runs_dir, tiny_model_config,
                                                                            simulated_rm):
    from rlhf_engine.lab.story import sweep_story
    from rlhf_engine.runs.resume import prepare_resume

    base = _base(tiny_model_config, steps=3, probe_every=2, probe_prompts=3, checkpoint_every=1)
    (job,) = prepare_sweep(runs_dir / "sw", base, simulated_rm, "kl_coef", [0.0, 0.5], adaptive=True,
                           best_of_n=4, best_of_n_prompts=3)
    assert job.run.id == "sw" and job.run.config()["kind"] == "sweep"
    sweep = Sweep(runs_dir / "sw")
    assert set(sweep.states().values()) == {"queued"}
    job.start()
    while len(sweep.members()[0].run.metrics()) < 1:
        time.sleep(0.05)
    job.stop()
    assert job.join(timeout=300) == "stopped"
    stopped = {m.label: m.run.status() for m in sweep.members()}
    assert {s["state"] for s in stopped.values()} == {"stopped"}, stopped
    assert sweep.best_of_n_run().status()["state"] == "completed"
    steps_at_stop = [len(m.run.metrics()) for m in sweep.members()]
    assert len(set(steps_at_stop)) == 1  # the runs step together
    resumed = prepare_resume(runs_dir / "sw")
    resumed.start()
    assert resumed.join(timeout=300) == "completed"
    assert set(sweep.states().values()) == {"completed"}
    for member in sweep.members():
        assert [m["step"] for m in member.run.metrics()] == [1, 2, 3], member.label  # every step once
        assert sorted({(r["policy"], r["step"]) for r in member.run.probes()}) == [
            ("policy", 2), ("policy", 3), ("reference", 0)]
        assert (member.run.path / "policy" / "adapter_model.safetensors").is_file()
        assert "side by side" in member.run.events()
    assert [m.run.metrics()[-1]["beta"] for m in sweep.members()][:2] == [0.0, 0.5]
    first = [m.run.samples()[0]["response"] for m in sweep.members()]
    assert len(set(first)) == 1  # same seed and prompts: the same first rollout
    frontier = sweep.frontier()
    assert [p["source"] for p in frontier] == ["held-out"] * 3 and all(p["prompts"] == 3 for p in frontier)
    assert [r["n"] for r in sweep.best_of_n()] == [1, 2, 4]
    story = sweep_story(sweep)
    assert story and any("held-out prompts" in line for line in story)
    assert any(line.startswith(("Above best-of-n's gold score", "No PPO run clearly beat best-of-4")) for line in story)


def test_a_sweep_with_a_clashing_name_or_bad_input_creates_nothing(runs_dir, tiny_model_config, simulated_rm):
    RunFolder(runs_dir / "sw-beta-0").create("ppo", {}, 1)
    before = sorted(p.name for p in runs_dir.iterdir())
    with pytest.raises(FileExistsError):
        prepare_sweep(runs_dir / "sw", _base(tiny_model_config), simulated_rm, "kl_coef", [0.0, 0.2])
    with pytest.raises(FileNotFoundError):
        prepare_sweep(runs_dir / "other", _base(tiny_model_config), runs_dir / "no-rm", "kl_coef", [0.0])
    with pytest.raises(ValueError):
        prepare_sweep(runs_dir / "bad name!", _base(tiny_model_config), simulated_rm, "kl_coef", [0.0])
    assert sorted(p.name for p in runs_dir.iterdir()) == before


def test_cli_sweep_varies_an_ablation_and_the_report_escapes_run_text(runs_dir, tiny_model_dir, simulated_rm,
                                                                      capsys):
    code = main(["sweep", "--reward", str(simulated_rm), "--out", str(runs_dir / "ab"), "--vary", "whiten_advantages",
                 "--values", "on,off", "--model", tiny_model_dir, "--quant", "none", "--steps", "1",
                 "--batch-size", "2", "--response-length", "4", "--set", "probe_every=0"])
    assert code == 0, capsys.readouterr().err
    sweep = Sweep(runs_dir / "ab")
    assert [m.label for m in sweep.members()] == ["whiten_advantages-on", "whiten_advantages-off"]
    assert [m.run.config()["config"]["whiten_advantages"] for m in sweep.members()] == [True, False]
    # a model answer with markup must reach the report as text, never as HTML
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    member = sweep.members()[0].run
    rows = member.samples()
    rows[-1]["response"] = evil
    (member.path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(runs_dir / "ab")]) == 0
    text = (runs_dir / "ab" / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<html") == 1
    assert evil not in text and html.escape(evil) in text
    assert "Reward vs KL" in text and "whiten_advantages-off" in text and "Gold vs proxy" in text
    assert len(re.findall(r"<script", text)) >= 3  # plotly.js once, then one script per figure
    assert main(["report", str(runs_dir / "ab-whiten_advantages-on"), "--out", str(runs_dir / "one.html")]) == 0
    assert "Samples at step 1" in (runs_dir / "one.html").read_text()
    assert main(["report", str(runs_dir / "nothing-here")]) == 2
    assert "neither a run folder nor a sweep folder" in capsys.readouterr().err


# -- presets and figures ------------------------------------------------------------------------

@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_workshops_commands_build_exactly_its_configs(device):
    """The README's command-line route and the Workshop page's buttons must train the same things."""
    import shlex

    from rlhf_engine import cli
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.data.pairs import read_pairs
    from rlhf_engine.lab import workshop

    pairs_cmd, rm_cmd, sweep_cmd, report_cmd, overopt_cmd, methods_cmd = [
        cli.build_parser().parse_args(shlex.split(c)[3:]) for c in workshop.cli_commands("ws", device)]
    sizes = workshop.preset(device)
    model = ModelConfig(quant="none" if device == "cpu" else "4bit")
    assert read_pairs(workshop.REPOSITORY / pairs_cmd.file) == read_pairs(workshop.PAIRS_FILE)
    assert pairs_cmd.file == rm_cmd.data
    assert cli._reward_config(rm_cmd) == workshop.reward_config(model, sizes)
    assert str(sweep_cmd.reward) == str(rm_cmd.out)
    assert cli._ppo_config(sweep_cmd) == workshop.ppo_config(model, sizes)
    assert tuple(parse_values("kl_coef", sweep_cmd.kl_coefs)) == sizes.betas
    assert sweep_cmd.best_of_n == sizes.best_of_n and sweep_cmd.best_of_n_prompts == sizes.best_of_n_prompts
    assert not sweep_cmd.one_at_a_time
    assert str(report_cmd.path) == str(sweep_cmd.out)
    assert cli._ppo_config(overopt_cmd) == workshop.overopt_ppo_config(model, sizes)
    from rlhf_engine.cli.train import _method_members  # the methods step: the same runs, seed for seed

    assert _method_members(methods_cmd) == workshop.methods_plan(model, sizes)


def test_the_shipped_pairs_follow_the_annotator_and_hold_out_enough_for_the_reward_model():
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.reward import split_pairs
    from rlhf_engine.data.pairs import read_pairs
    from rlhf_engine.lab import workshop
    from rlhf_engine.lab.demo import demo_prompt_split

    pairs = read_pairs(workshop.PAIRS_FILE)
    assert labelled_by_gold_annotator(pairs)  # so every PPO run on them logs the gold score
    held_out = split_pairs(pairs, workshop.reward_config(ModelConfig(), workshop.CPU).eval_fraction, 0)[1]
    assert len(held_out) >= 40
    assert not {p.prompt for p in pairs} & set(demo_prompt_split()[1])  # the probe prompts stay unseen


def test_the_overoptimisation_run_is_the_sweeps_run_at_beta_0_for_longer():
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.lab import workshop

    for sizes in (workshop.CPU, workshop.GPU):
        short, long = workshop.ppo_config(ModelConfig(), sizes), workshop.overopt_ppo_config(ModelConfig(), sizes)
        assert long.kl_coef == 0.0 and long.lr_schedule == short.lr_schedule == "constant"
        assert long.steps >= 3 * short.steps and long.batch_size == short.batch_size
        assert 0.0 in sizes.betas and len(sizes.betas) >= 3


def test_the_gold_vs_proxy_plot_stars_the_gold_peak_only_where_the_probes_show_over_optimisation():
    """The ★ and the story's sentence read one rule (the reward-hacking alarm's, on the probes): the gold score
    clearly (2 SE, paired by prompt) below its peak while the RM score is clearly above its value there."""
    from rlhf_engine.lab.figures import gold_proxy_figure
    from rlhf_engine.lab.story import overoptimisation_peaks, overoptimisation_sentence
    from rlhf_engine.lab.sweep import probe_summary

    def rows(gold, score=None, spread=0.05):  # probes.jsonl rows of 12 prompts: the reference (step 0), then steps
        score = score or [0.1 * i for i in range(len(gold))]
        def noise(p, step, salt):  # a fixed scatter, different for every prompt and step, mean about 0
            return spread * (((p * 7 + step * 13 + salt) % 11) - 5) / 5

        return [{"step": step, "policy": "reference" if step == 0 else "policy", "prompt": f"p{p}", "sample": 0,
                 "kl": float(step * step), "score": score[step] + noise(p, step, 3),
                 "gold": gold[step] + noise(p, step, 0)}
                for step in range(len(gold)) for p in range(12)]

    def stars(history):
        fig = gold_proxy_figure({"a": probe_summary(history)}, peaks=overoptimisation_peaks({"a": history}))
        return [t for t in fig.data if getattr(t.marker, "symbol", None) == "star"]

    assert stars(rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])) == []
    assert stars(rows([0.1, 0.3, 0.6, 0.55, 0.58, 0.56], spread=0.6)) == []  # a fall within the noise
    both_fell = rows([0.1, 0.3, 0.6, 0.5, 0.4, 0.3], score=[0.0, -0.1, -0.2, -0.3, -0.4, -0.5])
    assert stars(both_fell) == [] and overoptimisation_sentence("β = 0", both_fell) is None  # the proxy fell too
    turned = rows([0.1, 0.3, 0.6, 0.5, 0.4, 0.3])
    (star,) = stars(turned)
    assert star.x == (2.0,) and abs(star.y[0] - 0.6) < 0.02  # step 2: KL 4, √KL 2
    assert "step 2" in star.hovertemplate
    assert overoptimisation_sentence("β = 0", turned).startswith("β = 0: over-optimisation. The gold score peaked at "
                                                                 "step 2")


def test_every_beta_has_one_colour_and_the_colours_follow_the_order_of_beta():
    from rlhf_engine.lab.figures import ADAPTIVE_COLOUR, BETA_ANCHORS, beta_colour

    betas = [0.0, 0.001, 0.01, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0]
    colours = [beta_colour(b) for b in betas]
    assert len(set(colours)) == len(colours)  # between the anchors too (0.03, 0.1, 0.5)
    assert all(re.fullmatch(r"rgb\(\d+, \d+, \d+\)", c) for c in colours)
    for beta, anchor in BETA_ANCHORS:  # an anchor's β gets the anchor's colour
        assert beta_colour(beta) == "rgb({}, {}, {})".format(*(int(anchor[i:i + 2], 16) for i in (1, 3, 5)))
    assert beta_colour(3.0) == beta_colour(1.0) and beta_colour(0.05) == beta_colour(0.05)
    assert beta_colour(0.05, adaptive=True) == beta_colour(None) == ADAPTIVE_COLOUR


def test_a_gain_is_clear_from_two_standard_errors_and_never_without_one():
    from rlhf_engine.lab.noise import is_clear, standard_errors
    from rlhf_engine.lab.story import gain_sentence

    assert is_clear(0.2, 0.1) and is_clear(-0.2, 0.1) and not is_clear(0.19, 0.1)
    assert is_clear(0.1, 0.0) and not is_clear(0.0, 0.0) and standard_errors(0.1, 0.0) == math.inf
    assert not is_clear(0.5, float("nan"))  # one prompt: no standard error, no verdict
    assert gain_sentence("β = 0", 0.3, 0.8, 0.5, float("nan"), 1).endswith("within the noise, no clear change yet.")
    assert gain_sentence("β = 0", 0.3, 0.1, -0.2, 0.05, 30).endswith("the true reward fell.")


# -- probes of a subset: a path of points, the frontier on every prompt ----------------------------

def _probe_row(policy, step, prompt, gold, subset=False):
    row = {"policy": policy, "step": step, "prompt": prompt, "sample": 0, "score": gold, "kl": float(step),
           "gold": gold}
    return {**row, "subset": True} if subset else row


def test_a_subset_probe_is_paired_by_prompt_and_only_full_probes_make_the_final_point(runs_dir):
    from rlhf_engine.lab.sweep import final_point, probe_summary

    reference = [_probe_row("reference", 0, p, g) for p, g in zip("abc", (0.0, 0.2, 0.4))]
    subset = [_probe_row("policy", 2, p, g, subset=True) for p, g in zip("ab", (0.5, 0.5))]
    full = [_probe_row("policy", 4, p, g) for p, g in zip("abc", (1.0, 1.0, 1.0))]
    late_subset = [_probe_row("policy", 6, "a", 2.0, subset=True)]
    summary = probe_summary(reference + subset + full + late_subset)
    assert [(s["step"], s["prompts"], s["full"]) for s in summary] == [(0, 3, True), (2, 2, False), (4, 3, True),
                                                                       (6, 1, False)]
    assert summary[1]["gold_gain"] == pytest.approx(0.4)  # over the prompts it answered: 0.5 - 0.0, 0.5 - 0.2
    assert summary[2]["gold_gain"] == pytest.approx(0.8)
    assert summary[3]["gold_gain"] == pytest.approx(2.0) and math.isnan(summary[3]["gold_gain_se"])
    torn = probe_summary(reference + full[:2])  # a full probe still being written is not full
    assert torn[1]["full"] is False and torn[1]["prompts"] == 2

    run = RunFolder(runs_dir / "path")
    run.create("ppo", {"config": {}}, 6)
    for step in range(1, 7):
        run.append_metrics({"step": step, "objective/kl": 0.1, "objective/scores": 0.2, "beta": 0.0})
    run.append_probes(reference + subset)
    assert final_point(run)["source"] == "training"  # only a subset probe so far: no point on the frontier
    run.append_probes(full + late_subset)
    point = final_point(run)
    assert (point["source"], point["probe_step"], point["prompts"]) == ("held-out", 4, 3)
    assert point["gold"] == pytest.approx(1.0) and "full" not in point


def test_the_workshop_presets_draw_each_runs_path_and_say_what_it_costs():
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.lab import workshop

    for sizes in (workshop.CPU, workshop.GPU):
        config = workshop.ppo_config(ModelConfig(), sizes)
        assert sizes.probe_points >= 4 and config.probe_subset == sizes.probe_subset < config.probe_prompts
        assert workshop.overopt_ppo_config(ModelConfig(), sizes).probe_subset == 0  # Gao's curve: every prompt
    cpu = workshop.CPU
    assert (cpu.probe_points, cpu.probe_answers) == (4, 54 * 2 + 3 * 16 + 54)  # the cost its comment gives
    assert workshop.GPU.probe_answers == 48 * 4 + 9 * 16 + 48
    assert workshop.overopt_ppo_config(ModelConfig(), cpu).steps // 4 == 10  # probes of the over-optimisation run
    small = dataclasses.replace(cpu, probe_prompts=3)  # a preset shrunk for a test answers all at every probe
    assert workshop.ppo_config(ModelConfig(), small).probe_subset == 3


@pytest.mark.parametrize("subset", [-1, 4])
def test_a_probe_subset_outside_the_probe_prompts_is_refused(subset):
    with pytest.raises(ValueError, match="probe_subset"):
        PPOConfig(probe_prompts=3, probe_subset=subset)


def test_a_batched_sweeps_runs_probe_a_subset_between_and_every_prompt_at_the_end(runs_dir, tiny_model_config,
                                                                                 simulated_rm):
    from rlhf_engine.lab.sweep import probe_summary

    base = _base(tiny_model_config, steps=2, probe_every=1, probe_prompts=3, probe_subset=1, checkpoint_every=2)
    (job,) = prepare_sweep(runs_dir / "sw", base, simulated_rm, "kl_coef", [0.0, 0.5])
    job.start()
    assert job.join(timeout=300) == "completed"
    for member in Sweep(runs_dir / "sw").members():
        rows = member.run.probes()
        prompts = json.loads((member.run.path / "probe_prompts.json").read_text())
        asked = {}
        for row in rows:
            asked.setdefault((row["policy"], row["step"], bool(row.get("subset"))), []).append(row["prompt"])
        assert asked == {("reference", 0, False): prompts, ("policy", 1, True): prompts[:1],
                         ("policy", 2, False): prompts}
        assert [(s["step"], s["full"]) for s in probe_summary(rows)] == [(0, True), (1, False), (2, True)]
    assert [(p["probe_step"], p["prompts"]) for p in Sweep(runs_dir / "sw").frontier()] == [(2, 3), (2, 3)]


def test_the_charts_say_when_runs_subtract_different_missing_eos_penalties(runs_dir, tiny_model_config, simulated_rm):
    """The RM score drawn is the score each run optimises, penalty included: a methods sweep whose group methods
    subtract more for an answer cut at the cap says so (their reference point stands lower); a β sweep says nothing."""
    from rlhf_engine.config import GRPOConfig
    from rlhf_engine.lab.story import penalty_note

    base = dataclasses.replace(_base(tiny_model_config), missing_eos_penalty=0.5)
    members = plan_methods({"ppo": base, "grpo": GRPOConfig(model=tiny_model_config, steps=1, batch_size=4,
                                                           group_size=2, missing_eos_penalty=1.0)}, {})
    prepare_sweep(runs_dir / "methods", base, simulated_rm, methods=members)
    note = penalty_note(Sweep(runs_dir / "methods"))
    assert note is not None and "(PPO 0.5, GRPO 1.0)" in note
    prepare_sweep(runs_dir / "betas", base, simulated_rm, "kl_coef", [0.0, 0.2])
    assert penalty_note(Sweep(runs_dir / "betas")) is None
