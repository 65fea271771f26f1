"""The policy job: one run of any method (``methods.registry``) alone in its process.

``prepare_policy_job`` checks the reward model, the prompts (and the pairs of a method that learns from pairs)
and creates the run folder; ``policy_body`` builds the method's trainer and drives it step by step through a
``PolicyRun``. The inputs and the reward normalisation are shared with the runs of a sweep (``lab.sweep_job``)
and best-of-n (``lab.best_of_n``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from rlhf_engine.config import PolicyConfig, PPOConfig, from_dict, to_dict
from rlhf_engine.core import distributed
from rlhf_engine.core.models import policy_name
from rlhf_engine.core.rollout import POLICY
from rlhf_engine.data.pairs import read_pairs, read_prompts, write_pairs
from rlhf_engine.methods import registry
from rlhf_engine.runs import trackers
from rlhf_engine.runs.job import Job, launch
from rlhf_engine.runs.policy_run import PolicyRun
from rlhf_engine.runs.reward_job import weak_reward_model_warning
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text

PAIRS_FILE = "pairs.jsonl"  # a DPO run's own copy of the pairs it learns from
PPO_NORM_SAMPLES = 64  # policy samples for score normalisation when the RM was normalised on another policy


def prepare_policy_job(run_dir: Path, config: PolicyConfig, reward_dir: Path, prompts_path: Path | None = None,
                       pairs_path: Path | None = None) -> Job:
    """Check the reward model, prompts (and DPO's pairs) and create the run folder (state queued); not started.
    The run's kind is its method's name (``registry.of_config``: a PPOConfig makes a "ppo" run, ...).

    The probe prompts (answered by the reference and, every ``probe_every`` steps, by the policy, with the
    same sampling seed) are the first ``probe_prompts`` held-out demo prompts, or the first prompts of a
    user's prompt file. DPO learns from ``pairs_path`` (default: the pairs the reward model learnt from),
    copied into the run folder; the reward model scores its probe answers, as every method's.
    """
    reward_dir = trained_reward_dir(reward_dir)
    trackers.require(config.report_to)
    prompts, held_out = run_prompts(prompts_path)
    pairs = None
    method = registry.of_config(config)
    if method.learns_from_pairs:
        pairs_path = Path(pairs_path) if pairs_path else reward_dir / "pairs.jsonl"
        pairs = read_pairs(pairs_path)  # a bad file raises here, naming its row, before any folder is made
    elif pairs_path is not None:
        raise ValueError(f"{method.title} samples its own answers: preference pairs are for a method that learns from "
                         "them (and the reward model)")
    probes = held_out[:config.probe_prompts]
    run = RunFolder(run_dir)
    record = {"config": to_dict(config), "reward": str(reward_dir.resolve()),
              "prompts": str(prompts_path) if prompts_path else "demo", "gold": uses_gold_score(config, reward_dir)}
    if pairs is not None:
        record["pairs"] = str(pairs_path)
    run.create(method.name, record, config.steps)
    warn_of_weak_reward_model(run, reward_dir)
    if pairs is not None:
        write_pairs(pairs, run.path / PAIRS_FILE)
    atomic_write_text(run.path / "prompts.json", json.dumps([jsonable(p) for p in prompts]) + "\n")
    atomic_write_text(run.path / "probe_prompts.json", json.dumps([jsonable(p) for p in probes]) + "\n")
    return Job(run, policy_body)


def start_policy_job(run_dir: Path, config: PolicyConfig, reward_dir: Path, prompts_path: Path | None = None,
                     background: bool = True, pairs_path: Path | None = None) -> Job:
    """Check the reward model and prompts, create the run folder and start training."""
    return launch(prepare_policy_job(run_dir, config, reward_dir, prompts_path, pairs_path), background)


def trained_reward_dir(reward_dir: Path) -> Path:
    """``reward_dir`` if it holds a trained reward model, else a FileNotFoundError saying so."""
    reward_dir = Path(reward_dir)
    if not (reward_dir / "reward_model.json").is_file():
        raise FileNotFoundError(f"{reward_dir} holds no trained reward model (no reward_model.json)")
    return reward_dir


def warn_of_weak_reward_model(run: RunFolder, reward_dir: Path) -> None:
    """Say at a run's start, in its events.log and its status's ``warning`` (the pages and the CLI show it), when
    its reward model agrees with its held-out pairs no better than chance: the run still starts (a workshop may
    mean to show what such a reward does), but nobody should read its rising scores as learning."""
    warning = weak_reward_model_warning(reward_dir)
    if warning is None:
        return
    run.log(f"warning: {warning}")
    run.set_status("queued", warning=warning)  # just created: queued until its job starts


def run_prompts(prompts_path: Path | None) -> tuple[list, list]:
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


def jsonable(prompt):
    return list(prompt) if isinstance(prompt, tuple) else prompt


def policy_run_inputs(run: RunFolder, reward_model=None):
    """(saved config.json, its method's config, prompts, reward model, gold scorer or None) of a policy or
    best-of-n run (whose config is a PPOConfig); ``reward_model``: one loaded already (a sweep's runs share it)."""
    from rlhf_engine.core.reward import RewardModel
    from rlhf_engine.lab.demo import gold_score

    saved = run.config()
    prompts = [tuple(p) if isinstance(p, list) else p for p in json.loads((run.path / "prompts.json").read_text())]
    if reward_model is None:
        reward_model = RewardModel.load(Path(saved["reward"]))
    gold_scorer = gold_score if saved.get("gold") else None
    config_class = registry.get(saved["kind"]).config if registry.is_policy_kind(saved["kind"]) else PPOConfig
    return saved, from_dict(config_class, saved["config"]), prompts, reward_model, gold_scorer


def normalise_rewards(run: RunFolder, saved: dict, config: PolicyConfig, reward_model, trainer,
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


def new_trainer(run: RunFolder, saved: dict, config: PolicyConfig, prompts: list, reward_model, gold_scorer,
                 base=None, name: str = POLICY):
    """The trainer of a policy run's method, on its prompts (DPO: on the pairs copied into its run folder);
    ``base`` and ``name``: beside other runs on one base model (a batched sweep)."""
    method = registry.get(saved["kind"])
    data = read_pairs(run.path / PAIRS_FILE) if method.learns_from_pairs else prompts
    return method.trainer_class()(config, reward_model, data, gold_scorer=gold_scorer, base=base, name=name)


def policy_body(job: Job) -> str:
    saved, config, prompts, reward_model, gold_scorer = policy_run_inputs(job.run)
    trainer = new_trainer(job.run, saved, config, prompts, reward_model, gold_scorer)
    normalise_rewards(job.run, saved, config, reward_model, trainer, prompts)
    loop = PolicyRun(job.run, saved, config, trainer)
    while not loop.done:
        if distributed.any_process(job.stop_event.is_set()):  # all processes stop after the same step
            return loop.stop()
        loop.take_step()
        loop.answer_due_probes()
    return loop.finish()
