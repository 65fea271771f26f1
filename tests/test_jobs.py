"""Background jobs on the tiny model: run folders, stop and resume, failures surfaced."""

import dataclasses
import json
import shutil
import time

import pytest
import torch

from rlhf_engine.config import PPOConfig, RewardConfig
from rlhf_engine.core.models import policy_name
from rlhf_engine.data.errors import DataError
from rlhf_engine.data.pairs import PreferencePair
from rlhf_engine.runs.job import Job
from rlhf_engine.runs.policy_job import start_policy_job
from rlhf_engine.runs.resume import resume_job
from rlhf_engine.runs.reward_job import start_reward_job
from rlhf_engine.runs.runfolder import RunFolder, read_jsonl

PPO_METRICS = ("objective/scores", "objective/kl", "objective/non_score_reward", "objective/rlhf_reward",
               "objective/entropy", "policy/approxkl", "policy/clipfrac", "val/clipfrac", "loss/policy",
               "loss/value", "beta", "response_length", "time/step_s", "tokens_per_s", "kl/k1", "kl/k2", "kl/k3")


@pytest.fixture
def reward_dir(trained_tiny_reward_dir, runs_dir):
    """A copy of the session's reward model in this test's runs folder (a test may write beside it)."""
    shutil.copytree(trained_tiny_reward_dir, runs_dir / "rm")
    return runs_dir / "rm"


def _stop_after(job, steps: int) -> int:
    """Stop a background job once it has logged ``steps`` steps; check it stopped at a checkpoint."""
    while len(job.run.metrics()) < steps and job.alive:
        time.sleep(0.02)
    job.stop()
    assert job.join(timeout=120) == "stopped"
    stopped_at = job.run.status()["step"]
    assert stopped_at >= steps
    assert job.run.latest_checkpoint().name == f"step-{stopped_at:06d}"
    return stopped_at


def _ppo_config(model_config, **kw):
    return PPOConfig(model=model_config, batch_size=2, response_length=4, **kw)


def test_reward_job_writes_its_run_folder(reward_dir, tiny_model_config):
    run = RunFolder(reward_dir)
    assert [m["step"] for m in run.metrics()] == [1, 2, 3, 4]
    evaluation = json.loads((reward_dir / "eval.json").read_text())
    assert {"accuracy", "margin_mean", "norm/raw_std"} <= set(evaluation)
    meta = json.loads((reward_dir / "reward_model.json").read_text())
    assert meta["gain"] != 1.0 and meta["normalized_on"] == f"{tiny_model_config.source} (none, float32)"
    assert "started" in run.events() and "completed" in run.events()


def test_bad_data_is_refused_before_any_run_is_created(runs_dir, tiny_model_config, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,chosen\nhi,there\n")
    with pytest.raises(DataError, match="bad.csv"):
        start_reward_job(runs_dir / "rm-bad", RewardConfig(model=tiny_model_config), bad)
    assert not (runs_dir / "rm-bad").exists()


def test_ppo_job_logs_every_metric_and_samples_each_step(runs_dir, tiny_model_config, reward_dir):
    job = start_policy_job(runs_dir / "ppo", _ppo_config(tiny_model_config, steps=3, checkpoint_every=2),
                        reward_dir, background=False)
    assert job.state == "completed", job.run.status()
    metrics = job.run.metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3]
    for name in PPO_METRICS:
        assert all(isinstance(m[name], float) for m in metrics), name
    assert all(m["kl/k1"] == pytest.approx(m["objective/kl"], abs=1e-6) for m in metrics)  # the k1 run's own
    assert all(m["kl/k2"] >= 0 and m["kl/k3"] >= -1e-6 for m in metrics)  # never negative
    samples = job.run.samples()
    assert {s["step"] for s in samples} == {1, 2, 3}
    assert {"prompt", "response", "score", "kl"} <= set(samples[0])
    assert (runs_dir / "ppo" / "policy" / "adapter_model.safetensors").is_file()  # the value head shares its trunk
    assert not (runs_dir / "ppo" / "value").exists()
    assert (runs_dir / "ppo" / "value_head.safetensors").is_file()
    assert (runs_dir / "ppo" / "checkpoints" / "step-000002" / "trainer_state.pt").is_file()
    assert "normalising on its samples" not in job.run.events()  # same policy as the reward model's


def test_ppo_renormalises_the_reward_on_a_policy_that_samples_differently(runs_dir, tiny_model_config, reward_dir):
    """Ziegler et al.: scores have mean 0, std 1 on the initial policy; another dtype is another policy."""
    model_config = dataclasses.replace(tiny_model_config, dtype="bfloat16")
    assert policy_name(model_config) != policy_name(tiny_model_config)
    job = start_policy_job(runs_dir / "ppo-bf16", _ppo_config(model_config, steps=1), reward_dir, background=False)
    assert job.state == "completed", job.run.status()
    assert "normalising on its samples" in job.run.events()
    norm = json.loads((runs_dir / "ppo-bf16" / "reward_norm.json").read_text())
    stored = json.loads((reward_dir / "reward_model.json").read_text())
    assert (norm["gain"], norm["bias"]) != (stored["gain"], stored["bias"])


def test_stop_then_resume_continues_from_the_checkpoint(runs_dir, tiny_model_config, reward_dir):
    config = _ppo_config(tiny_model_config, steps=4, checkpoint_every=1)
    job = start_policy_job(runs_dir / "ppo-stop", config, reward_dir)
    stopped_at = _stop_after(job, 2)
    assert stopped_at < 4
    resumed = resume_job(runs_dir / "ppo-stop", background=False)
    assert resumed.state == "completed", resumed.run.status()
    assert [m["step"] for m in resumed.run.metrics()] == [1, 2, 3, 4]
    assert "resumed from" in resumed.run.events()


def test_an_interrupted_run_reads_as_interrupted_and_resumes_with_intact_metrics(runs_dir, tiny_model_config,
                                                                                 reward_dir):
    job = start_policy_job(runs_dir / "ppo-crash", _ppo_config(tiny_model_config, steps=3, checkpoint_every=1),
                        reward_dir, background=False)
    run = job.run
    # simulate a crash after step 2's checkpoint: step 3 logged half a line, status still "running"
    # with a process id that no longer exists
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    (run.path / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    status = json.loads((run.path / "status.json").read_text())
    status.update(state="running", pid=2**22 + 12345)
    (run.path / "status.json").write_text(json.dumps(status))
    assert run.status()["state"] == "interrupted"
    assert [m["step"] for m in read_jsonl(run.path / "metrics.jsonl")] == [1, 2]
    resumed = resume_job(run.path, background=False)
    assert resumed.state == "completed"
    assert [m["step"] for m in run.metrics()] == [1, 2, 3]


def test_a_failing_run_is_marked_failed_with_its_reason(runs_dir, tiny_model_config, reward_dir, monkeypatch):
    from rlhf_engine.core.reward import RewardModel

    def nan_scores(self, prompts, responses, normalized=True, batch_size=16):
        return torch.full((len(prompts),), float("nan"))

    monkeypatch.setattr(RewardModel, "score", nan_scores)
    job = start_policy_job(runs_dir / "ppo-nan", _ppo_config(tiny_model_config, steps=2, normalize_reward=False),
                        reward_dir, background=False)
    status = job.run.status()
    assert status["state"] == "failed"
    assert "reward-model score is NaN or infinite at step 1" in status["error"]
    assert "Traceback" in job.run.events()


# ---------------------------------------------------------------------------------------------- numerical faults

def test_nan_logits_while_sampling_stop_the_run_naming_them_and_the_step(runs_dir, tiny_model_config, reward_dir,
                                                                         monkeypatch):
    from rlhf_engine.methods.ppo import PPOTrainer

    sample = PPOTrainer.rollout

    def rollout_after_a_blow_up(self, prompts, *args, **kwargs):
        if self.step_count == 2:  # the weights blow up between step 1 and step 2
            with torch.no_grad():
                self.model.peft.get_base_model().model.norm.weight.fill_(float("nan"))
        return sample(self, prompts, *args, **kwargs)

    monkeypatch.setattr(PPOTrainer, "rollout", rollout_after_a_blow_up)
    job = start_policy_job(runs_dir / "ppo-nan-logits", _ppo_config(tiny_model_config, steps=3), reward_dir,
                        background=False)
    status = job.run.status()
    assert status["state"] == "failed"
    assert status["error"].startswith("NonFiniteError: policy logits are NaN or infinite at step 2 (while sampling)")
    assert [m["step"] for m in job.run.metrics()] == [1]


def test_a_nan_policy_loss_stops_the_run_at_its_step(runs_dir, tiny_model_config, reward_dir, monkeypatch):
    import rlhf_engine.methods.ppo as ppo

    exact = ppo.policy_loss
    monkeypatch.setattr(ppo, "policy_loss", lambda *a, **k: (exact(*a, **k)[0] * float("inf"), 0.0, 0.0))
    job = start_policy_job(runs_dir / "ppo-inf-loss", _ppo_config(tiny_model_config, steps=2), reward_dir,
                        background=False)
    assert "policy loss is NaN or infinite at step 1" in job.run.status()["error"]


def test_a_nan_reward_model_loss_stops_training_at_its_step(runs_dir, tiny_model_config, pairs_file, monkeypatch):
    import rlhf_engine.core.reward as reward

    calls = []
    exact = reward.bradley_terry_loss

    def nan_at_step_3(chosen, rejected):
        calls.append(1)
        return exact(chosen, rejected) * (float("nan") if len(calls) == 3 else 1.0)

    monkeypatch.setattr(reward, "bradley_terry_loss", nan_at_step_3)
    config = RewardConfig(model=tiny_model_config, steps=6, eval_every=100, norm_samples=4, norm_response_length=4)
    job = start_reward_job(runs_dir / "rm-nan", config, pairs_file, background=False)
    status = job.run.status()
    assert status["state"] == "failed"
    assert "reward-model loss is NaN or infinite at step 3; the run was stopped (try a lower learning rate)" \
        in status["error"]
    assert [m["step"] for m in job.run.metrics()] == [1, 2]


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                   MemoryError()])
def test_out_of_memory_is_reported_with_its_step_and_what_to_change(runs_dir, tiny_model_config, reward_dir,
                                                                    monkeypatch, error):
    from rlhf_engine.methods.ppo import PPOTrainer

    update = PPOTrainer.update

    def update_that_runs_out(self, batch):
        if self.step_count == 2:
            raise error
        return update(self, batch)

    monkeypatch.setattr(PPOTrainer, "update", update_that_runs_out)
    job = start_policy_job(runs_dir / f"ppo-oom-{type(error).__name__}", _ppo_config(tiny_model_config, steps=3),
                        reward_dir, background=False)
    status = job.run.status()
    assert status["state"] == "failed"
    assert status["error"] == ("out of memory in step 2: try a smaller batch size or response length, or 4-bit "
                               f"quantization ({type(error).__name__})")
    assert job.run.latest_checkpoint() is not None or status["step"] == 1  # step 1 kept; Resume offered


def test_a_run_folder_is_never_overwritten(runs_dir, tiny_model_config, reward_dir):
    with pytest.raises(FileExistsError):
        start_policy_job(reward_dir, _ppo_config(tiny_model_config), reward_dir)


def test_completed_runs_cannot_be_resumed_and_missing_runs_are_reported(reward_dir, tmp_path):
    with pytest.raises(ValueError, match="completed"):
        resume_job(reward_dir)
    with pytest.raises(FileNotFoundError):
        resume_job(tmp_path / "nothing")


def test_reward_job_stops_and_resumes_from_its_checkpoint(runs_dir, tiny_model_config, pairs_file):
    config = RewardConfig(model=tiny_model_config, steps=30, eval_every=10, checkpoint_every=2, norm_samples=4,
                          norm_response_length=4)
    job = start_reward_job(runs_dir / "rm-stop", config, pairs_file)
    stopped_at = _stop_after(job, 3)
    assert stopped_at < 30
    resumed = resume_job(runs_dir / "rm-stop", background=False)
    assert resumed.state == "completed", resumed.run.status()
    assert [m["step"] for m in resumed.run.metrics()] == list(range(1, 31))
    assert (runs_dir / "rm-stop" / "reward_model.json").is_file()


# ---------------------------------------------------------------------------------------------- queue

def _waiting_job(run_dir, release):
    """A job whose body waits for ``release``."""
    run = RunFolder(run_dir)
    run.create("test", {}, 1)

    def body(job):
        release.wait(30)
        return "completed"

    return Job(run, body)


def test_queue_runs_one_job_at_a_time_in_order(runs_dir):
    import threading

    from rlhf_engine.runs.queue import JobQueue

    queue = JobQueue()
    first_release, second_release = threading.Event(), threading.Event()
    first = queue.submit(_waiting_job(runs_dir / "a", first_release))
    second = queue.submit(_waiting_job(runs_dir / "b", second_release))
    deadline = time.time() + 10
    while first.state != "running" and time.time() < deadline:
        time.sleep(0.01)
    assert first.state == "running" and second.state == "queued"
    assert queue.position(first) == 0 and queue.position(second) == 1
    assert queue.find(runs_dir / "b") is second
    with pytest.raises(ValueError, match="already queued or running"):  # a second Start of the same run
        queue.submit(Job(RunFolder(runs_dir / "b"), lambda job: "completed"))
    first_release.set()
    second_release.set()
    assert queue.wait_idle(timeout=10)
    assert first.state == second.state == "completed"
    assert queue.jobs() == []


def test_queue_stop_takes_a_waiting_job_off_the_queue(runs_dir):
    import threading

    from rlhf_engine.runs.queue import JobQueue

    queue = JobQueue()
    release = threading.Event()
    first = queue.submit(_waiting_job(runs_dir / "a", release))
    second = queue.submit(_waiting_job(runs_dir / "b", threading.Event()))
    queue.stop(second)
    assert second.state == "stopped" and queue.jobs() == [first]
    release.set()
    assert queue.wait_idle(timeout=10)
    assert first.state == "completed" and second.state == "stopped"
    assert not second.thread.is_alive() and "stopped before it started" in second.run.events()


def test_ppo_job_answers_probe_prompts(reward_dir, runs_dir, tiny_model_config):
    from rlhf_engine.lab.demo import demo_prompt_split
    from rlhf_engine.lab.sweep import probe_summary

    config = _ppo_config(tiny_model_config, steps=3, probe_every=2, probe_prompts=4, reference_probe_samples=2)
    job = start_policy_job(runs_dir / "probes", config, reward_dir, background=False)
    assert job.state == "completed"
    probes = job.run.probes()
    prompts = json.loads((job.run.path / "probe_prompts.json").read_text())
    assert prompts == demo_prompt_split()[1][:4]  # held-out prompts, never trained on
    by_step = {}
    for row in probes:
        by_step.setdefault((row["policy"], row["step"], row["sample"]), []).append(row["prompt"])
    # the reference twice (two seeds) at the start, the policy at step 2 (probe_every) and at the last step
    assert sorted(by_step) == [("policy", 2, 0), ("policy", 3, 0), ("reference", 0, 0), ("reference", 0, 1)]
    assert all(v == prompts for v in by_step.values())
    reference = {i: [r["response"] for r in probes if r["policy"] == "reference" and r["sample"] == i] for i in (0, 1)}
    assert reference[0] != reference[1]  # another seed, other answers
    assert all(isinstance(r["score"], float) and isinstance(r["kl"], float) for r in probes)
    assert all(r["kl"] == 0.0 for r in probes if r["policy"] == "reference")
    summary = probe_summary(probes)
    assert [s["step"] for s in summary] == [0, 2, 3] and all(s["prompts"] == 4 for s in summary)
    assert [s["answers"] for s in summary] == [8, 4, 4]
    ref = [r for r in probes if r["policy"] == "reference"]
    baseline = [(a["score"] + b["score"]) / 2 for a, b in zip(ref[:4], ref[4:])]  # each prompt's mean
    gains = [p["score"] - b for p, b in zip([r for r in probes if r["step"] == 3], baseline)]
    assert summary[2]["score_gain"] == pytest.approx(sum(gains) / 4)
    assert summary[0]["score"] == pytest.approx(sum(baseline) / 4)


def test_probe_summary_counts_a_prompt_once_with_the_mean_of_the_references_answers():
    from rlhf_engine.lab.sweep import probe_summary

    def row(policy, step, prompt, sample, gold):
        return {"policy": policy, "step": step, "prompt": prompt, "sample": sample, "score": gold, "kl": 0.0,
                "gold": gold}

    rows = [row("reference", 0, "a", 0, 0.0), row("reference", 0, "b", 0, 0.2),
            row("reference", 0, "a", 1, 0.4), row("reference", 0, "b", 1, 0.6),
            row("policy", 5, "a", 0, 0.5), row("policy", 5, "b", 0, 1.0)]
    reference, policy = probe_summary(rows)
    assert (reference["prompts"], reference["answers"]) == (2, 4)
    assert reference["gold"] == pytest.approx(0.3)  # prompt means 0.2 and 0.4
    assert reference["gold_se"] == pytest.approx(0.1)  # stdev of (0.2, 0.4) / sqrt(2)
    assert policy["gold_gain"] == pytest.approx(0.45)  # gains 0.5 - 0.2 and 1.0 - 0.4
    assert policy["gold_gain_se"] == pytest.approx(0.15)  # stdev of (0.3, 0.6) / sqrt(2)


def test_reward_eval_has_held_out_scores_and_lengths(reward_dir):
    evaluation = json.loads((reward_dir / "eval.json").read_text())
    rows = evaluation["held_out"]
    assert len(rows) == evaluation["held_out_pairs"] == len(evaluation["margins"])
    assert all(r["chosen_tokens"] > 0 and r["rejected_tokens"] > 0 for r in rows)


def test_demo_pairs_job_stores_all_pairs_or_none(tmp_path, monkeypatch, tiny_model_config):
    import rlhf_engine.lab.demo as demo
    from rlhf_engine.data.store import PairStore
    from rlhf_engine.lab.demo_job import prepare_demo_pairs_job

    def fake(n, model_config, seed=0, on_progress=lambda done, total: None, **kw):
        made = []
        for i in range(n):
            made.append(PreferencePair(f"p{i}", "good", "bad"))
            on_progress(len(made), n)
            time.sleep(0.05)
        return made

    monkeypatch.setattr(demo, "make_demo_pairs", fake)
    store = tmp_path / "pairs.sqlite"
    done = prepare_demo_pairs_job(tmp_path / "runs" / "a", 4, store, tiny_model_config).start()
    assert done.join(30) == "completed" and PairStore(store).count() == 4
    assert done.run.status()["step"] == 4 and len(read_jsonl(done.run.path / "pairs.jsonl")) == 4
    stopped = prepare_demo_pairs_job(tmp_path / "runs" / "b", 200, store, tiny_model_config).start()
    while stopped.run.status().get("step", 0) < 2:
        time.sleep(0.01)
    stopped.stop()
    assert stopped.join(30) == "stopped"
    assert PairStore(store).count() == 4  # nothing of the stopped job was stored


@pytest.mark.slow
def test_a_process_job_runs_stops_on_sigint_even_when_ignored_and_reads_as_interrupted_when_killed(
        runs_dir, tiny_model_config, reward_dir):
    """The dashboard's job processes, one lifecycle: a PPO run in a process of its own, started with SIGINT
    ignored (`nohup make run &` starts the server so, and children inherit it: the job must take SIGINT
    back, or Stop would do nothing), logging to its process.log, stopped at a checkpoint; resumed, then
    SIGKILLed, which reads as interrupted (not the run's fault: it resumes from its checkpoint). A reward
    model's job process is the same `run-job` command: test_crash_and_concurrency and test_browser run one."""
    import os
    import signal

    from rlhf_engine.runs.job import ProcessJob
    from rlhf_engine.runs.policy_job import prepare_policy_job
    from rlhf_engine.runs.resume import prepare_resume

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        job = ProcessJob(prepare_policy_job(runs_dir / "ppo-process", _ppo_config(tiny_model_config, steps=500),
                                         reward_dir).run).start()
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 300
    while len(job.run.metrics()) < 2:
        assert time.time() < deadline and job.alive, (job.run.path / "process.log").read_text()
        time.sleep(0.1)
    assert job.run.status()["pid"] not in (None, os.getpid())
    job.stop()  # SIGINT: the job answers as to Ctrl-C
    assert job.join(timeout=120) == "stopped"
    stopped_at = job.run.status()["step"]
    assert stopped_at < 500 and job.run.latest_checkpoint().name == f"step-{stopped_at:06d}"
    assert "step 2" in (job.run.path / "process.log").read_text()  # the engine's log lines reach the file

    killed = ProcessJob(prepare_resume(job.run.path).run).start()
    while killed.run.status()["state"] != "running":
        time.sleep(0.05)
    killed.process.send_signal(signal.SIGKILL)
    assert killed.join(timeout=60) == "interrupted"
    assert "killed by SIGKILL (often the system running out of memory)" in killed.run.status()["error"]
