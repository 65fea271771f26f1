"""Background jobs: reward-model and policy training (PPO, GRPO, RLOO) in a thread, with a stop event and the run
folder as output.

``start_reward_job`` / ``start_policy_job`` check their inputs at once (a bad data file raises before any
thread starts), create the run folder and return a ``Job`` handle. The job writes metrics, samples,
checkpoints and status as it goes; an exception marks the run failed with its message in status.json
and the traceback in events.log. ``resume_job`` continues a stopped, failed or interrupted run from its
last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from rlhf_engine.core import distributed
from rlhf_engine.runs import trackers
from rlhf_engine.lab.alarms import check, new_alarms
from rlhf_engine.config import METHOD_CONFIGS, ModelConfig, PolicyConfig, PPOConfig, RewardConfig, from_dict, to_dict
from rlhf_engine.data.pairs import read_pairs, read_prompts, write_pairs
from rlhf_engine.core.models import load_model_and_tokenizer, policy_name
from rlhf_engine.core.rollout import POLICY
from rlhf_engine.runs.runfolder import ReplicaRunFolder, RunFolder, atomic_write_text, checkpoint_step

REWARD_KIND, PPO_KIND, DEMO_PAIRS_KIND, BEST_OF_N_KIND = "reward_model", "ppo", "demo_pairs", "best_of_n"
POLICY_KINDS = tuple(METHOD_CONFIGS)  # runs that train a policy, one kind per method: ppo, grpo, rloo, dpo
DPO_PAIRS_FILE = "pairs.jsonl"  # a DPO run's own copy of the pairs it learns from
PPO_NORM_SAMPLES = 64  # policy samples for score normalisation when the RM was normalised on another policy


class Job:
    """A run executing in a background thread; stop() asks it to checkpoint and end."""

    def __init__(self, run: RunFolder, body: Callable[["Job"], str]):
        if not distributed.is_main():  # a data-parallel replica: process 0 writes the run folder
            run = ReplicaRunFolder(run.path)
        self.run = run
        self._body = body
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._main, name=f"job-{run.id}", daemon=True)
        self.error: str | None = None

    def start(self) -> "Job":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> str:
        self.thread.join(timeout)
        return self.state

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")

    def _main(self) -> None:
        run = self.run
        run.set_status("running", error=None)
        run.log("started")
        try:
            final_state = self._body(self)
        except BaseException as err:  # noqa: BLE001 - every failure must reach the run folder
            self.error = describe_error(err, step=int(run.status().get("step", 0)) + 1)
            run.log("failed: " + self.error + "\n" + traceback.format_exc())
            run.set_status("failed", error=self.error)
            return
        finally:
            _close_trackers(run)
        run.log(final_state)
        run.set_status(final_state)


def _close_trackers(run: RunFolder) -> None:
    """The trackers of a run that ended (and of a sweep's runs): their last metrics flushed."""
    from rlhf_engine.lab.sweep import SWEEP_FILE, Sweep

    trackers.close(run.path)
    if (run.path / SWEEP_FILE).is_file():
        for member in Sweep(run.path).runs():
            trackers.close(member.path)


class ProcessJob:
    """A prepared run folder executed by ``python -m rlhf_engine run-job <folder>`` in a process of its own.

    The dashboard runs jobs this way: its own threads (one script run a second per open page) would
    otherwise compete with training for the GIL, and a job that crashes or runs out of memory cannot take
    the server with it. stop() sends SIGINT, which the job answers as Ctrl-C: checkpoint, then end.
    Same interface as Job, so a JobQueue holds either.
    """

    def __init__(self, run: RunFolder):
        self.run = run
        self.stop_event = threading.Event()
        self.process: subprocess.Popen | None = None
        self.error: str | None = None

    def start(self) -> "ProcessJob":
        package_parent = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH"))
                                                           if p)}
        with open(self.run.path / "process.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "rlhf_engine", "run-job", str(self.run.path)],
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.alive:
            self.process.send_signal(signal.SIGINT)

    def join(self, timeout: float | None = None) -> str:
        if self.process is not None:
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.state
            if self.run.status().get("state") in ("queued", "running", "interrupted"):
                # the process ended without recording an end (killed, or stopped before it began)
                if self.stop_event.is_set():
                    end_run(self.run, "stopped")
                elif code < 0:  # killed by a signal: nothing wrong with the run, which resumes from its checkpoint
                    self.error = describe_kill(-code)
                    end_run(self.run, "interrupted", self.error)
                else:
                    self.error = f"the job process ended with exit code {code}; see process.log in the run folder"
                    end_run(self.run, "failed", self.error)
        return self.state

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def state(self) -> str:
        return self.run.status().get("state", "unknown")


def end_run(run: RunFolder, state: str, error: str | None = None) -> None:
    """Record that a run's job ended without saying so itself (killed, failed to start, stopped in the queue);
    a sweep's members that had not ended end with it."""
    run.set_status(state, **({"error": error} if error else {}))
    try:
        kind = run.config().get("kind")
    except (OSError, ValueError):
        return
    if kind == SWEEP_KIND:
        from rlhf_engine.lab.sweep import Sweep

        for member in Sweep(run.path).runs():
            if member.status().get("state") in ("queued", "running", "interrupted"):
                member.set_status(state, **({"error": error} if error else {}))


def describe_kill(signal_number: int) -> str:
    """Why a job process that a signal ended stopped, for the run's status line."""
    try:
        name = signal.Signals(signal_number).name
    except ValueError:
        name = f"signal {signal_number}"
    why = " (often the system running out of memory)" if signal_number == signal.SIGKILL else ""
    return f"the job process was killed by {name}{why}; Resume continues from the last checkpoint"


def describe_error(err: BaseException, step: int | None = None) -> str:
    """One line for the user, with a suggestion where there is an obvious one; ``step``: the step it failed in."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        where = f" in step {step}" if step else ""
        return (f"out of memory{where}: try a smaller batch size or response length, or 4-bit quantization "
                f"({type(err).__name__})")
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------------

def prepare_reward_job(run_dir: Path, config: RewardConfig, data_path: Path) -> Job:
    """Validate the pairs and create the run folder (state queued, with a copy of the pairs); not started."""
    pairs = read_pairs(data_path)  # raises DataError before anything is created
    trackers.require(config.report_to)
    run = RunFolder(run_dir)
    run.create(REWARD_KIND, {"config": to_dict(config), "data": str(data_path), "pairs": len(pairs)}, config.steps)
    write_pairs(pairs, run.path / "pairs.jsonl")
    return Job(run, _reward_body)


def start_reward_job(run_dir: Path, config: RewardConfig, data_path: Path, background: bool = True) -> Job:
    """Validate the pairs, create the run folder and start training."""
    return _launch(prepare_reward_job(run_dir, config, data_path), background)


def _reward_body(job: Job) -> str:
    from safetensors.torch import load_file, save_file

    from rlhf_engine.core.reward import held_out_scores, normalize_on_policy, split_pairs, train_reward_model, unique_prompts

    run = job.run
    config = from_dict(RewardConfig, run.config()["config"])
    pairs = read_pairs(run.path / "pairs.jsonl")
    resume = None
    latest = run.latest_checkpoint()
    if latest is not None:
        resume = {"model": load_file(str(latest / "trainable.safetensors")),
                  **torch.load(latest / "trainer_state.pt", weights_only=True)}
        run.truncate_to_step(resume["step"])
        run.log(f"resuming from {latest.name}")
    else:
        run.truncate_to_step(0)

    def on_metrics(metrics: dict) -> None:
        run.append_metrics(metrics)
        run.set_status("running", step=metrics["step"])

    def on_checkpoint(rm, state: dict) -> None:
        def write(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in state["model"].items()}, str(folder / "trainable.safetensors"))
            torch.save({k: state[k] for k in ("optimizer", "scheduler", "step")}, folder / "trainer_state.pt")
        run.write_checkpoint(state["step"], write)

    rm, result = train_reward_model(config, pairs, on_metrics, job.stop_event.is_set, on_checkpoint, resume)
    if result is None:
        return "stopped"
    run.log(f"held-out accuracy {result['accuracy']:.3f}, mean margin {result['margin_mean']:.3f}; "
            f"normalising scores on {config.norm_samples} samples of the base model")
    # the initial policy is the RM's own base model: sample with the adapter off, score with it on
    norm = normalize_on_policy(rm, rm.backbone, rm.tokenizer, unique_prompts(pairs), config.norm_samples,
                               config.norm_response_length, config.norm_temperature, config.model.chat_template,
                               policy_context=rm.backbone.disable_adapter)
    rm.normalized_on = policy_name(config.model)
    rm.save(run.path)
    held_out = split_pairs(pairs, config.eval_fraction, config.seed)[1]
    result["held_out"] = held_out_scores(rm, held_out)
    atomic_write_text(run.path / "eval.json", json.dumps({**result, **norm}, indent=2) + "\n")
    run.set_status("running", step=config.steps, eval_accuracy=result["accuracy"],
                   eval_margin=result["margin_mean"])
    return "completed"


# ----------------------------------------------------------------------------------------------
# Policy training: PPO, GRPO, RLOO
# ----------------------------------------------------------------------------------------------

def trainer_class(kind: str):
    """The trainer of a policy run's method (its kind: "ppo", "grpo", "rloo" or "dpo")."""
    if kind == "dpo":
        from rlhf_engine.methods.dpo import DPOTrainer

        return DPOTrainer
    if kind == "grpo":
        from rlhf_engine.methods.grpo import GRPOTrainer

        return GRPOTrainer
    if kind == "rloo":
        from rlhf_engine.methods.rloo import RLOOTrainer

        return RLOOTrainer
    from rlhf_engine.methods.ppo import PPOTrainer

    return PPOTrainer


def prepare_policy_job(run_dir: Path, config: PolicyConfig, reward_dir: Path, prompts_path: Path | None = None,
                       pairs_path: Path | None = None) -> Job:
    """Check the reward model, prompts (and DPO's pairs) and create the run folder (state queued); not started.
    The run's kind is its method's (``config.METHOD``: a PPOConfig makes a PPO run, a DPOConfig a DPO run, ...).

    The probe prompts (answered by the reference and, every ``probe_every`` steps, by the policy, with the
    same sampling seed) are the first ``probe_prompts`` held-out demo prompts, or the first prompts of a
    user's prompt file. DPO learns from ``pairs_path`` (default: the pairs the reward model learnt from),
    copied into the run folder; the reward model scores its probe answers, as every method's.
    """
    reward_dir = _trained_reward_dir(reward_dir)
    trackers.require(config.report_to)
    prompts, held_out = _prompts(prompts_path)
    pairs = None
    if config.LEARNS_FROM_PAIRS:
        pairs_path = Path(pairs_path) if pairs_path else reward_dir / "pairs.jsonl"
        pairs = read_pairs(pairs_path)  # a bad file raises here, naming its row, before any folder is made
    elif pairs_path is not None:
        raise ValueError(f"{config.METHOD} samples its own answers: preference pairs are for DPO (and the reward "
                         "model)")
    probes = held_out[:config.probe_prompts]
    run = RunFolder(run_dir)
    record = {"config": to_dict(config), "reward": str(reward_dir.resolve()),
              "prompts": str(prompts_path) if prompts_path else "demo", "gold": uses_gold_score(config, reward_dir)}
    if pairs is not None:
        record["pairs"] = str(pairs_path)
    run.create(config.METHOD, record, config.steps)
    if pairs is not None:
        write_pairs(pairs, run.path / DPO_PAIRS_FILE)
    atomic_write_text(run.path / "prompts.json", json.dumps([_jsonable(p) for p in prompts]) + "\n")
    atomic_write_text(run.path / "probe_prompts.json", json.dumps([_jsonable(p) for p in probes]) + "\n")
    return Job(run, _policy_body)


def start_policy_job(run_dir: Path, config: PolicyConfig, reward_dir: Path, prompts_path: Path | None = None,
                     background: bool = True, pairs_path: Path | None = None) -> Job:
    """Check the reward model and prompts, create the run folder and start training."""
    return _launch(prepare_policy_job(run_dir, config, reward_dir, prompts_path, pairs_path), background)


def _trained_reward_dir(reward_dir: Path) -> Path:
    """``reward_dir`` if it holds a trained reward model, else a FileNotFoundError saying so."""
    reward_dir = Path(reward_dir)
    if not (reward_dir / "reward_model.json").is_file():
        raise FileNotFoundError(f"{reward_dir} holds no trained reward model (no reward_model.json)")
    return reward_dir


def _prompts(prompts_path: Path | None) -> tuple[list, list]:
    """(training prompts, held-out prompts): a user's prompt file serves as both; else the demo's split."""
    if prompts_path:
        prompts = read_prompts(prompts_path)
        return prompts, prompts
    from rlhf_engine.lab.demo import demo_prompt_split

    return demo_prompt_split()


def uses_gold_score(config: PolicyConfig, reward_dir: Path) -> bool:
    """Whether a policy run logs the gold score: on, off, or auto = the RM learnt from simulated pairs."""
    if config.gold_score != "auto":
        return config.gold_score == "on"
    from rlhf_engine.lab.demo import labelled_by_gold_annotator

    pairs_file = Path(reward_dir) / "pairs.jsonl"
    return pairs_file.is_file() and labelled_by_gold_annotator(read_pairs(pairs_file))


def reward_normalisation(reward_model, reward_dir: Path, policy_model, tokenizer, prompts: list, config: PolicyConfig,
                         run: RunFolder, policy_context=contextlib.nullcontext) -> None:
    """Set the RM's gain/bias for this policy; normalise on the policy's samples only when needed.

    A reward model is normalised on its own base model when trained. A policy that samples differently
    (another quantization or dtype) needs its own normalisation; it is kept in the RM folder
    (``policy_norms.json``), so the runs of a sweep, which share their initial policy, score alike and
    pay for it once.
    """
    from rlhf_engine.core.reward import normalize_on_policy

    policy = policy_name(config.model)
    if not config.normalize_reward or reward_model.normalized_on == policy:
        return
    key = f"{policy}, T {config.temperature:g}, {config.response_length} tokens, seed {config.seed}"
    cache = Path(reward_dir) / "policy_norms.json"
    norms = json.loads(cache.read_text()) if cache.is_file() else {}
    if key in norms:
        reward_model.gain, reward_model.bias = norms[key]["gain"], norms[key]["bias"]
        run.log(f"reward normalisation for {key} read from {cache}")
        return
    run.log(f"reward model was normalised on {reward_model.normalized_on}, not on this policy "
            f"({policy}); normalising on its samples")
    with torch.random.fork_rng(devices=[]):  # the same samples whichever job asks first
        torch.manual_seed(config.seed)
        normalize_on_policy(reward_model, policy_model, tokenizer, prompts, PPO_NORM_SAMPLES,
                            config.response_length, config.temperature, config.model.chat_template,
                            policy_context=policy_context)
    if not distributed.is_main():  # every process computed the same numbers (same seed, weights, prompts)
        return
    norms = json.loads(cache.read_text()) if cache.is_file() else {}
    norms[key] = {"gain": reward_model.gain, "bias": reward_model.bias}
    atomic_write_text(cache, json.dumps(norms, indent=2) + "\n")


def _jsonable(prompt):
    return list(prompt) if isinstance(prompt, tuple) else prompt


def _policy_run_inputs(run: RunFolder, reward_model=None):
    """(saved config.json, its method's config, prompts, reward model, gold scorer or None) of a policy or
    best-of-n run (whose config is a PPOConfig); ``reward_model``: one loaded already (a sweep's runs share it)."""
    from rlhf_engine.lab.demo import gold_score
    from rlhf_engine.core.reward import RewardModel

    saved = run.config()
    prompts = [tuple(p) if isinstance(p, list) else p for p in json.loads((run.path / "prompts.json").read_text())]
    if reward_model is None:
        reward_model = RewardModel.load(Path(saved["reward"]))
    gold_scorer = gold_score if saved.get("gold") else None
    config_class = METHOD_CONFIGS.get(saved["kind"], PPOConfig)
    return saved, from_dict(config_class, saved["config"]), prompts, reward_model, gold_scorer


def _normalise_rewards(run: RunFolder, saved: dict, config: PolicyConfig, reward_model, trainer,
                       prompts: list) -> None:
    """The RM's gain and bias for this run: as the run recorded them (a resume), else for its initial policy."""
    norm_file = run.path / "reward_norm.json"
    if norm_file.is_file():
        norm = json.loads(norm_file.read_text())
        reward_model.gain, reward_model.bias = norm["gain"], norm["bias"]
    else:
        reward_normalisation(reward_model, Path(saved["reward"]), trainer.model.peft, trainer.tokenizer, prompts,
                             config, run)
    if distributed.is_main():
        atomic_write_text(norm_file, json.dumps({"gain": reward_model.gain, "bias": reward_model.bias}) + "\n")


class PolicyRun:
    """One policy run's bookkeeping around its trainer: resume, metrics, samples, alarms, probes, checkpoints.

    The loop that drives it is ``_policy_body``'s (the run alone) or ``_sweep_body``'s (beside the other runs of
    a batched sweep); both do the same per step, in this order: ``begin_step``, the trainer's step,
    ``end_step``, then the probe answers that ``probes_due`` asks for.
    """

    def __init__(self, run: RunFolder, saved: dict, config: PolicyConfig, trainer):
        self.run, self.saved, self.config, self.trainer = run, saved, config, trainer
        self.latest = run.latest_checkpoint()
        if self.latest is not None:
            trainer.load_checkpoint(self.latest)
            run.truncate_to_step(checkpoint_step(self.latest))
            run.log(f"resumed from {self.latest.name}")
        else:
            run.truncate_to_step(0)
        run.log(trainer.settings())
        if trainer.world_size > 1:
            run.log(f"data parallel over {trainer.world_size} processes, "
                    f"{config.batch_size // trainer.world_size} {'pairs' if config.LEARNS_FROM_PAIRS else 'answers'} "
                    "each per step")
        main = distributed.is_main()
        self.probe_prompts = _load_probes(run) if config.probe_every and main else []  # answered by process 0
        self.reference_answered = any(r["policy"] == "reference" for r in run.probes())
        self.raised = set(run.status().get("alarms", []))
        self.history = run.metrics()  # the steps kept after the truncation above; the alarms read this

    @property
    def done(self) -> bool:
        return self.trainer.step_count >= self.config.steps

    def begin_step(self) -> None:
        self.run.set_status("running", phase="rollout", rollout=None)

    def on_rollout(self, rollout: dict) -> None:
        """The step's score and KL, shown while its update runs."""
        self.run.set_status("running", phase="update", rollout=rollout)

    def end_step(self, metrics: dict, samples: list[dict]) -> None:
        run, trainer = self.run, self.trainer
        run.append_metrics(metrics)
        run.append_samples(samples)
        self.history.append(metrics)
        for alarm in new_alarms(check(self.history, self.saved["config"]), self.raised):  # each alarm logged once
            run.log(f"alarm at step {alarm.step}: {alarm.message} Suggestion: {alarm.suggestion}")
            self.raised.add(alarm.code)
        run.set_status("running", step=trainer.step_count, phase="rollout", rollout=None, alarms=sorted(self.raised))
        if trainer.step_count % self.config.checkpoint_every == 0 and not self.done:
            self.latest = run.write_checkpoint(trainer.step_count, trainer.save_checkpoint)

    def probes_due(self) -> list[bool]:
        """Which probe answers are due after this step: [the reference's, the policy's]. The reference answers
        after step 1 (the first plotted point should not wait for them), the policy every probe_every steps
        and at the end."""
        if not self.probe_prompts:
            return [False, False]
        step = self.trainer.step_count
        return [not self.reference_answered, step % self.config.probe_every == 0 or step == self.config.steps]

    def answer_probes(self, reference: bool) -> list[dict]:
        """This run's answers to its probe prompts, alone (a sweep's runs answer side by side:
        batched.probe_side_by_side): the policy's once, the reference's ``reference_probe_samples`` times."""
        samples = range(self.config.reference_probe_samples if reference else 1)
        return [row for i in samples for row in self.trainer.probe_answers(self.probe_prompts, reference, sample=i)]

    def add_probes(self, rows: list[dict], reference: bool) -> None:
        for row in rows:
            row["step"] = 0 if reference else self.trainer.step_count
        self.run.append_probes(rows)
        self.reference_answered |= reference

    def stop(self) -> str:
        """Checkpoint the last finished step (unless it has one) and end as stopped."""
        step = self.trainer.step_count
        if step and (self.latest is None or checkpoint_step(self.latest) != step):
            self.run.write_checkpoint(step, self.trainer.save_checkpoint)
        return "stopped"

    def finish(self) -> str:
        trainer = self.trainer
        if trainer.world_size > 1:
            in_sync = distributed.replicas_in_sync(trainer.params)
            self.run.log(f"replicas in sync after {trainer.step_count} steps: {'yes' if in_sync else 'NO'}")
            self.run.set_status("running", processes=trainer.world_size, replicas_in_sync=in_sync)
        if distributed.is_main():
            trainer.model.save_adapters(self.run.path)  # final policy/ (and value/) adapters, top of the run folder
        return "completed"


def _new_trainer(run: RunFolder, saved: dict, config: PolicyConfig, prompts: list, reward_model, gold_scorer,
                 base=None, name: str = POLICY):
    """The trainer of a policy run's method, on its prompts (DPO: on the pairs copied into its run folder);
    ``base`` and ``name``: beside other runs on one base model (a batched sweep)."""
    data = read_pairs(run.path / DPO_PAIRS_FILE) if config.LEARNS_FROM_PAIRS else prompts
    return trainer_class(saved["kind"])(config, reward_model, data, gold_scorer=gold_scorer, base=base,
                                        name=name)


def _policy_body(job: Job) -> str:
    saved, config, prompts, reward_model, gold_scorer = _policy_run_inputs(job.run)
    trainer = _new_trainer(job.run, saved, config, prompts, reward_model, gold_scorer)
    _normalise_rewards(job.run, saved, config, reward_model, trainer, prompts)
    loop = PolicyRun(job.run, saved, config, trainer)
    while not loop.done:
        if distributed.any_process(job.stop_event.is_set()):  # all processes stop after the same step
            return loop.stop()
        loop.begin_step()
        loop.end_step(*trainer.step(loop.on_rollout))
        for reference, due in zip((True, False), loop.probes_due()):
            if due:
                loop.add_probes(loop.answer_probes(reference), reference)
    return loop.finish()


SWEEP_KIND = "sweep"


def _sweep_body(job: Job) -> str:
    """The runs of a sweep side by side in this process (``batched``): the best-of-n baseline first, then
    every run not completed yet, one step of each at a time on one base model, the rollouts of the methods
    that sample (PPO, GRPO, RLOO) and every run's probe answers decoded as one batch (DPO steps on its pairs
    alone). Each member's run folder is written as if it ran alone."""
    from rlhf_engine.core.batched import probe_side_by_side, step_side_by_side
    from rlhf_engine.lab.sweep import Sweep

    if distributed.world_size() > 1:
        raise ValueError("a batched sweep trains its runs side by side in one process, not data-parallel: resume it "
                         "without accelerate launch, or resume its runs one by one under it")
    sweep = Sweep(job.run.path)
    todo = [m.run for m in sweep.members() if m.run.status().get("state") != "completed"]
    bon = sweep.best_of_n_run()
    bon = bon if bon is not None and bon.status().get("state") != "completed" else None
    for run in todo + ([bon] if bon else []):
        run.set_status("queued")  # this process's id: if it dies, they read as interrupted
    loops: list[PolicyRun] = []
    live: list[RunFolder] = []
    reward_model = None
    try:
        first = None
        for i, run in enumerate(todo):
            saved, config, prompts, rm, gold_scorer = _policy_run_inputs(run, reward_model)
            reward_model = rm
            base = None if first is None else (first.model.peft, first.tokenizer)
            trainer = _new_trainer(run, saved, config, prompts, reward_model, gold_scorer, base,
                                   POLICY if first is None else f"{POLICY}{i}")
            first = first or trainer
            _normalise_rewards(run, saved, config, reward_model, trainer, prompts)
            loops.append(PolicyRun(run, saved, config, trainer))
        if bon is not None:
            live = [bon]
            bon.set_status("running", error=None)
            bon.log("started (in the sweep's process)")
            if first is None:
                model, tokenizer = load_model_and_tokenizer(from_dict(PPOConfig, bon.config()["config"]).model)
                context = contextlib.nullcontext
            else:
                model, tokenizer, context = first.model.peft, first.tokenizer, first.model.peft.disable_adapter
            state = _best_of_n(job, bon, model, tokenizer,
                               reward_model or _policy_run_inputs(bon)[3], context)
            bon.log(state)
            bon.set_status(state)
            if state == "stopped":
                return "stopped"
        live = [loop.run for loop in loops]
        for loop in loops:
            loop.run.set_status("running", error=None)
            loop.run.log(f"started (side by side with {len(loops) - 1} other runs of sweep {sweep.id})")
        while any(not loop.done for loop in loops):
            going = [loop for loop in loops if not loop.done]
            if job.stop_event.is_set():
                for loop in going:
                    loop.run.log(loop.stop())
                    loop.run.set_status("stopped")
                return "stopped"
            for loop in going:
                loop.begin_step()
            sampling = [loop for loop in going if not loop.config.LEARNS_FROM_PAIRS]  # DPO samples nothing
            results = step_side_by_side([loop.trainer for loop in sampling],
                                        lambda i, rollout: sampling[i].on_rollout(rollout)) if sampling else []
            for loop, result in zip(sampling, results):
                loop.end_step(*result)
            for loop in going:
                if loop.config.LEARNS_FROM_PAIRS:
                    loop.end_step(*loop.trainer.step(loop.on_rollout))
            for column, reference in enumerate((True, False)):
                due = [loop for loop in going if loop.probes_due()[column]]
                for group in _same_probe_prompts(due):
                    answers = probe_side_by_side([loop.trainer for loop in group], group[0].probe_prompts, reference)
                    for loop, rows in zip(group, answers):
                        loop.add_probes(rows, reference)
            job.run.set_status("running", step=max(loop.trainer.step_count for loop in loops))
            for loop in going:
                if loop.done:
                    loop.run.log(loop.finish())
                    loop.run.set_status("completed")
                    live.remove(loop.run)
        return "completed"
    except BaseException as err:  # every member still going fails with the sweep, saying why
        error = describe_error(err)
        for run in live:
            if run.status().get("state") in ("queued", "running"):
                run.log("failed: " + error)
                run.set_status("failed", error=error)
        raise
    finally:
        for run in todo + ([bon] if bon else []):
            if run.status().get("state") == "queued":  # never reached (an earlier failure or a stop)
                run.set_status("stopped")


def _same_probe_prompts(loops: list) -> list[list]:
    """Runs grouped by their probe prompts and reference answers per prompt (a sweep's runs share them: one
    group)."""
    groups: dict[str, list] = {}
    for loop in loops:
        groups.setdefault(json.dumps([loop.probe_prompts, loop.config.reference_probe_samples]), []).append(loop)
    return list(groups.values())


def _load_probes(run: RunFolder) -> list:
    path = run.path / "probe_prompts.json"
    if not path.is_file():
        return []
    return [tuple(p) if isinstance(p, list) else p for p in json.loads(path.read_text())]


class _Stopped(Exception):
    """Raised from a progress callback when the job was asked to stop."""


def _progress_or_stop(job: Job, run: RunFolder) -> Callable[[int, int], None]:
    """A progress callback (done, total): the run's step is ``done``; raises _Stopped once Stop was asked."""
    def progress(done: int, total: int) -> None:
        run.set_status("running", step=done)
        if job.stop_event.is_set():
            raise _Stopped

    return progress


# ----------------------------------------------------------------------------------------------
# Best-of-n from the reference: the no-training baseline of a sweep
# ----------------------------------------------------------------------------------------------

def prepare_best_of_n_job(run_dir: Path, config: PPOConfig, reward_dir: Path, n: int, n_prompts: int = 16,
                          prompts_path: Path | None = None) -> Job:
    """Create the run folder of a best-of-n job: ``n`` reference samples for each of ``n_prompts`` prompts.

    ``config`` is the PPO config of the runs it is compared with: same model, response length,
    temperature, seed and reward normalisation. The result is ``best_of_n.json`` (one row per n).
    """
    if n < 2:
        raise ValueError(f"best-of-n needs n >= 2, got {n}")
    from rlhf_engine.core.batching import batch_indices

    reward_dir = _trained_reward_dir(reward_dir)
    # The PPO runs' probe prompts (held out, the first of them), so their answers and best-of-n's are
    # scored on the same prompts; from a user's prompt file, a seeded choice as before.
    prompts, held_out = _prompts(prompts_path)
    if prompts_path:
        chosen = [prompts[i] for i in batch_indices(len(prompts), min(n_prompts, len(prompts)), 1, config.seed)]
    else:
        chosen = held_out[:n_prompts]
    run = RunFolder(run_dir)
    run.create(BEST_OF_N_KIND, {"config": to_dict(config), "reward": str(reward_dir.resolve()), "n": n,
                                "gold": uses_gold_score(config, reward_dir)}, len(chosen) * n)
    atomic_write_text(run.path / "prompts.json", json.dumps([_jsonable(p) for p in chosen]) + "\n")
    return Job(run, _best_of_n_body)


def _best_of_n_body(job: Job) -> str:
    from rlhf_engine.core.models import set_seed

    _, config, _, reward_model, _ = _policy_run_inputs(job.run)
    set_seed(config.seed)
    model, tokenizer = load_model_and_tokenizer(config.model)
    return _best_of_n(job, job.run, model, tokenizer, reward_model)


def _best_of_n(job: Job, run: RunFolder, model, tokenizer, reward_model, policy_context=contextlib.nullcontext) -> str:
    """Sample and score the best-of-n run's answers from ``model`` (the reference, entered with
    ``policy_context``), write best_of_n.json; "completed", or "stopped" when the job was asked to stop."""
    from rlhf_engine.lab.best_of_n import best_of_n_curve, sample_and_score

    saved, config, prompts, reward_model, gold_scorer = _policy_run_inputs(run, reward_model)
    reward_normalisation(reward_model, Path(saved["reward"]), model, tokenizer, prompts, config, run,
                         policy_context)

    progress = _progress_or_stop(job, run)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            proxy, gold = sample_and_score(model, tokenizer, prompts, saved["n"], reward_model, config.response_length,
                                           config.temperature, config.model.chat_template, gold_scorer,
                                           on_progress=progress, policy_context=policy_context)
    except _Stopped:
        return "stopped"
    rows = best_of_n_curve(proxy, gold)
    atomic_write_text(run.path / "best_of_n.json", json.dumps({"rows": rows, "proxy": proxy, "gold": gold}) + "\n")
    run.log("best-of-n: " + ", ".join(f"n={r['n']} KL {r['kl']:.2f} score {r['score']:.3f}" for r in rows))
    return "completed"


# ----------------------------------------------------------------------------------------------
# Simulated preference pairs (the gold annotator), stored in a PairStore when complete
# ----------------------------------------------------------------------------------------------

def prepare_demo_pairs_job(run_dir: Path, n: int, store_path: Path, model_config: ModelConfig | None = None,
                           seed: int = 0) -> Job:
    """Create the run folder of a make-demo-pairs job (progress = pairs made); not started."""
    run = RunFolder(run_dir)
    run.create(DEMO_PAIRS_KIND, {"config": {"n": n, "seed": seed, "model": to_dict(model_config or ModelConfig())},
                                 "store": str(Path(store_path).resolve())}, n)
    return Job(run, _demo_pairs_body)


def _demo_pairs_body(job: Job) -> str:
    from rlhf_engine.data.pairs import PairStore
    from rlhf_engine.lab.demo import make_demo_pairs

    run = job.run
    saved = run.config()
    model_config = from_dict(ModelConfig, saved["config"]["model"])

    progress = _progress_or_stop(job, run)
    try:
        pairs = make_demo_pairs(saved["config"]["n"], model_config, seed=saved["config"]["seed"], on_progress=progress)
    except _Stopped:
        return "stopped"  # nothing stored: the store gets all the pairs or none
    write_pairs(pairs, run.path / "pairs.jsonl")
    PairStore(saved["store"]).add_many(pairs, source="simulated")
    run.log(f"stored {len(pairs)} simulated pairs in {saved['store']}")
    run.set_status("running", step=len(pairs))
    return "completed"


# ----------------------------------------------------------------------------------------------

def resume_job(run_dir: Path, background: bool = True) -> Job:
    """Continue a stopped, failed or interrupted run from its last checkpoint (or from the start)."""
    return _launch(prepare_resume(run_dir), background)


def prepare_resume(run_dir: Path) -> Job:
    """The Job that continues a stopped, failed or interrupted run (state set to queued); not started."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"no run at {run_dir}")
    state = run.status()["state"]
    if state in ("running", "queued"):
        raise ValueError(f"run {run.id} is still {state}")
    if state == "completed":
        raise ValueError(f"run {run.id} has completed; nothing to resume")
    run.set_status("queued")
    return prepared_job(run_dir)


def prepared_job(run_dir: Path) -> Job:
    """The Job of a run folder that prepare_* or prepare_resume left queued (what ``run-job`` executes)."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"no run at {run_dir}")
    kind = run.config()["kind"]
    bodies = {REWARD_KIND: _reward_body, DEMO_PAIRS_KIND: _demo_pairs_body, BEST_OF_N_KIND: _best_of_n_body,
              SWEEP_KIND: _sweep_body, **dict.fromkeys(POLICY_KINDS, _policy_body)}
    return Job(run, bodies[kind])


def _launch(job: Job, background: bool) -> Job:
    job.start()
    if not background:
        job.join()
    return job


class JobQueue:
    """One heavy job per device at a time: submitted jobs wait (state queued) and run in submission order.

    The dashboard keeps one queue per server process; the CLI runs one job per process and needs none.
    A job stopped while it waits is marked stopped and never starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._pending: deque[Job] = deque()
        self._current: Job | None = None
        self._worker: threading.Thread | None = None

    def submit(self, job: Job) -> Job:
        """Queue a prepared (not started) job; it starts when the jobs before it have ended."""
        with self._lock:
            if any(j.run.path.resolve() == job.run.path.resolve() for j in self.jobs()):
                raise ValueError(f"run {job.run.id} is already queued or running")
            self._pending.append(job)
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._work, name="job-queue", daemon=True)
                self._worker.start()
            self._lock.notify_all()
        return job

    def jobs(self) -> list[Job]:
        """The running job (if any) followed by the waiting ones."""
        with self._lock:
            return ([self._current] if self._current is not None else []) + list(self._pending)

    def find(self, run_path: Path) -> Job | None:
        """The queued or running job of a run folder, if this queue holds one."""
        target = Path(run_path).resolve()
        return next((j for j in self.jobs() if j.run.path.resolve() == target), None)

    def position(self, job: Job) -> int:
        """0 for the running job, 1 for the next one, and so on; -1 if not held."""
        jobs = self.jobs()
        return jobs.index(job) if job in jobs else -1

    def stop(self, job: Job) -> None:
        """Stop a running job (it checkpoints and ends) or take a waiting one off the queue."""
        with self._lock:
            waiting = job in self._pending
            if waiting:
                self._pending.remove(job)
        job.stop()
        if waiting:
            _mark_stopped_before_start(job)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no job is running or waiting; return whether that happened in time."""
        with self._lock:
            return self._lock.wait_for(lambda: self._current is None and not self._pending, timeout)

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._worker = None
                    self._lock.notify_all()
                    return
                job = self._current = self._pending.popleft()
            if job.stop_event.is_set():
                _mark_stopped_before_start(job)
            else:
                job.start()
                job.join()
            with self._lock:
                self._current = None
                self._lock.notify_all()


def _mark_stopped_before_start(job) -> None:
    job.run.log("stopped before it started")
    end_run(job.run, "stopped")
