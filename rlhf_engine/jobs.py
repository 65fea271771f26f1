"""Background jobs: reward-model training and PPO in a thread, with a stop event and the run folder as output.

``start_reward_job`` / ``start_ppo_job`` check their inputs at once (a bad data file raises before any
thread starts), create the run folder and return a ``Job`` handle. The job writes metrics, samples,
checkpoints and status as it goes; an exception marks the run failed with its message in status.json
and the traceback in events.log. ``resume_job`` continues a stopped, failed or interrupted run from its
last checkpoint.
"""

from __future__ import annotations

import json
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from .config import PPOConfig, RewardConfig, from_dict, to_dict
from .data import read_pairs, read_prompts, write_pairs
from .models import policy_name
from .runfolder import RunFolder, checkpoint_step

REWARD_KIND, PPO_KIND = "reward_model", "ppo"
PPO_NORM_SAMPLES = 64  # policy samples for score normalisation when the RM was normalised on another policy


class Job:
    """A run executing in a background thread; stop() asks it to checkpoint and end."""

    def __init__(self, run: RunFolder, body: Callable[["Job"], str]):
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
            self.error = describe_error(err)
            run.log("failed: " + self.error + "\n" + traceback.format_exc())
            run.set_status("failed", error=self.error)
            return
        run.log(final_state)
        run.set_status(final_state)


def describe_error(err: BaseException) -> str:
    """One line for the user, with a suggestion where there is an obvious one."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return ("out of memory: try a smaller batch size or response length, or 4-bit quantization "
                f"({type(err).__name__})")
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


# ----------------------------------------------------------------------------------------------
# Reward model
# ----------------------------------------------------------------------------------------------

def start_reward_job(run_dir: Path, config: RewardConfig, data_path: Path, background: bool = True) -> Job:
    """Validate the pairs, create the run folder (with a copy of the pairs) and start training."""
    pairs = read_pairs(data_path)  # raises DataError before anything is created
    run = RunFolder(run_dir)
    run.create(REWARD_KIND, {"config": to_dict(config), "data": str(data_path), "pairs": len(pairs)}, config.steps)
    write_pairs(pairs, run.path / "pairs.jsonl")
    return _launch(Job(run, _reward_body), background)


def _reward_body(job: Job) -> str:
    from safetensors.torch import load_file, save_file

    from .reward import normalize_on_policy, train_reward_model, unique_prompts

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
    (run.path / "eval.json").write_text(json.dumps({**result, **norm}, indent=2) + "\n")
    run.set_status("running", step=config.steps, eval_accuracy=result["accuracy"],
                   eval_margin=result["margin_mean"])
    return "completed"


# ----------------------------------------------------------------------------------------------
# PPO
# ----------------------------------------------------------------------------------------------

def start_ppo_job(run_dir: Path, config: PPOConfig, reward_dir: Path, prompts_path: Path | None = None,
                  background: bool = True) -> Job:
    """Check the reward model and prompts, create the run folder and start PPO."""
    from .demo import demo_prompt_split

    reward_dir = Path(reward_dir)
    if not (reward_dir / "reward_model.json").is_file():
        raise FileNotFoundError(f"{reward_dir} holds no trained reward model (no reward_model.json)")
    prompts = read_prompts(prompts_path) if prompts_path else demo_prompt_split()[0]
    run = RunFolder(run_dir)
    run.create(PPO_KIND, {"config": to_dict(config), "reward": str(reward_dir.resolve()),
                          "prompts": str(prompts_path) if prompts_path else "demo"}, config.steps)
    (run.path / "prompts.json").write_text(json.dumps([_jsonable(p) for p in prompts]) + "\n")
    return _launch(Job(run, _ppo_body), background)


def _jsonable(prompt):
    return list(prompt) if isinstance(prompt, tuple) else prompt


def _ppo_body(job: Job) -> str:
    from .ppo import PPOTrainer
    from .reward import RewardModel, normalize_on_policy

    run = job.run
    saved = run.config()
    config = from_dict(PPOConfig, saved["config"])
    prompts = [tuple(p) if isinstance(p, list) else p for p in json.loads((run.path / "prompts.json").read_text())]
    reward_model = RewardModel.load(Path(saved["reward"]))
    trainer = PPOTrainer(config, reward_model, prompts)
    norm_file = run.path / "reward_norm.json"
    if norm_file.is_file():
        norm = json.loads(norm_file.read_text())
        reward_model.gain, reward_model.bias = norm["gain"], norm["bias"]
    elif config.normalize_reward and reward_model.normalized_on != (policy := policy_name(config.model)):
        run.log(f"reward model was normalised on {reward_model.normalized_on}, not on this policy "
                f"({policy}); normalising on its samples")
        normalize_on_policy(reward_model, trainer.model.peft, trainer.tokenizer, prompts, PPO_NORM_SAMPLES,
                            config.response_length, config.temperature, config.model.chat_template)
    norm_file.write_text(json.dumps({"gain": reward_model.gain, "bias": reward_model.bias}) + "\n")

    latest = run.latest_checkpoint()
    if latest is not None:
        trainer.load_checkpoint(latest)
        run.truncate_to_step(checkpoint_step(latest))
        run.log(f"resumed from {latest.name}")
    else:
        run.truncate_to_step(0)
    run.log(f"PPO: beta={trainer.kl_ctl.value:g} ({'adaptive' if config.adaptive_kl else 'fixed'}), "
            f"KL estimator {config.kl_estimator}, {len(prompts)} prompts")
    while trainer.step_count < config.steps:
        if job.stop_event.is_set():
            if trainer.step_count and (latest is None or checkpoint_step(latest) != trainer.step_count):
                run.write_checkpoint(trainer.step_count, trainer.save_checkpoint)
            return "stopped"
        metrics, samples = trainer.step()
        run.append_metrics(metrics)
        run.append_samples(samples)
        run.set_status("running", step=trainer.step_count)
        if trainer.step_count % config.checkpoint_every == 0 and trainer.step_count < config.steps:
            latest = run.write_checkpoint(trainer.step_count, trainer.save_checkpoint)
    trainer.model.save_adapters(run.path)  # final policy/ and value/ adapters at the top of the run folder
    return "completed"


# ----------------------------------------------------------------------------------------------

def resume_job(run_dir: Path, background: bool = True) -> Job:
    """Continue a stopped, failed or interrupted run from its last checkpoint (or from the start)."""
    run = RunFolder(run_dir)
    if not run.exists():
        raise FileNotFoundError(f"no run at {run_dir}")
    state = run.status()["state"]
    if state in ("running", "queued"):
        raise ValueError(f"run {run.id} is still {state}")
    if state == "completed":
        raise ValueError(f"run {run.id} has completed; nothing to resume")
    kind = run.config()["kind"]
    body = {REWARD_KIND: _reward_body, PPO_KIND: _ppo_body}[kind]
    run.set_status("queued")
    return _launch(Job(run, body), background)


def _launch(job: Job, background: bool) -> Job:
    job.start()
    if not background:
        job.join()
    return job
