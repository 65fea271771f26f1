"""Teaching presets: the workshop's whole loop, and its optional over-optimisation step, sized to the device.

The workshop: simulated preference pairs (made once and shipped, ``assets/workshop_pairs.jsonl``) -> a
reward model -> a KL sweep whose runs train side by side (``rlhf_engine.core.batched``) with best-of-n, from
a fresh clone to the finished sweep plot in about 16 minutes on 2 CPU cores (15.6 measured,
benchmarks/RESULTS.md). The
story is told on held-out probe prompts answered by the reference and the policy with the same sampling
seed, so a gain of 0.2 in gold score is not lost in the ±0.5 swing of one training batch.

The over-optimisation step: one long run at β = 0 against the same reward model, long enough that the
gold score peaks and falls while the reward model's score still rises (measured on 2 cores: gold 0.42 →
0.55 at step 12, then 0.30 by step 32 while the RM score rose from 0.49 to 1.24; the policy drifted into
florid "a touch of luxury, handcrafted" descriptions that the reward model likes and the annotator does not).

On a GPU the presets run more steps and larger batches (``preset("cuda")``); the CPU figures are measured,
the GPU ones are not yet (no GPU was lent to the sessions that built this: RESULTS.md says so).
``RLHF_WORKSHOP_PRESET=load`` gives the Workshop page the room load benchmark's tiny sizes instead
(benchmarks/room_load.py): twenty participants' jobs on one core within the benchmark's 45 minutes.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig

REPOSITORY = Path(__file__).resolve().parents[2]  # the commands name files relative to it
PAIRS_FILE = Path(__file__).resolve().parent / "assets" / "workshop_pairs.jsonl"
PAIRS_SOURCE = "workshop"  # the pair store's source label of the shipped pairs
# How the shipped pairs were made (deterministic on CPU): 8 completions of 48 tokens per training prompt
# of the bundled model, the annotator's favourite paired with its least favourite.
PAIRS_COMMAND = ("python -m rlhf_engine make-demo-pairs --n 210 --completions 8 --response-length 48 --seed 0 "
                 "--out rlhf_engine/assets/workshop_pairs.jsonl")
RESPONSE_LENGTH = 40  # new tokens per answer: most of the base model's answers end (EOS) within it
MISSING_EOS_PENALTY = 0.5  # subtracted from the score of an answer cut off at the cap (TRL's missing_eos_penalty):
# without it the policy drifts to answers that never end (the RM likes long positive text), the length alarm
LEARNING_RATE = 1e-3  # constant LoRA rate, 10x the literature default: the policy moves within a few steps


@dataclass(frozen=True)
class Preset:
    """The workshop's sizes on one kind of device."""

    device: str  # "cpu" or "cuda"
    minutes: int  # clone -> finished sweep plot on such a device: measured on 2 CPU cores, a target on a GPU
    rm_steps: int  # reward-model optimiser steps
    rm_batch: int  # pairs per reward-model step
    betas: tuple[float, ...]  # the sweep's β values: none, moderate, strong
    ppo_steps: int  # PPO steps of each sweep run
    batch_size: int  # prompts per rollout
    probe_every: int  # held-out probe answers every N steps
    probe_prompts: int  # held-out prompts answered at each probe (paired with the reference's)
    reference_probe_samples: int  # the reference's answers per probe prompt: their mean is the gain's baseline
    best_of_n: int  # best-of-1…n from the reference: the no-training baseline
    best_of_n_prompts: int  # held-out prompts best-of-n samples for (the first probe prompts)
    overopt_steps: int  # steps of the over-optimisation run at β = 0
    overopt_minutes: int  # its wall time (measured on CPU, a target on a GPU)
    response_length: int = RESPONSE_LENGTH  # new tokens per answer (PPO's and the reward model's normalisation)
    rm_evals: int = 2  # held-out evaluations of the reward model as it trains (the last at its end)
    norm_samples: int = 32  # base-model answers the reward model's scores are normalised on


CPU = Preset(device="cpu", minutes=16, rm_steps=20, rm_batch=6, betas=(0.0, 0.05, 0.2), ppo_steps=10, batch_size=8,
             probe_every=10, probe_prompts=54, reference_probe_samples=2, best_of_n=8, best_of_n_prompts=8,
             overopt_steps=40, overopt_minutes=17)
GPU = Preset(device="cuda", minutes=5, rm_steps=120, rm_batch=16, betas=(0.0, 0.02, 0.05, 0.2), ppo_steps=30,
             batch_size=32, probe_every=5, probe_prompts=48, reference_probe_samples=4, best_of_n=16,
             best_of_n_prompts=24, overopt_steps=100, overopt_minutes=10)
# Not for teaching: the room load benchmark's participant (a reward model of 4 steps evaluated once, one PPO run of
# 2 steps of 4 prompts x 16 tokens, no best-of-n), so that 20 participants' jobs fit one core and 45 minutes.
LOAD = Preset(device="cpu", minutes=1, rm_steps=4, rm_batch=6, betas=(0.0, 0.05, 0.2), ppo_steps=2, batch_size=4,
              probe_every=2, probe_prompts=4, reference_probe_samples=1, best_of_n=0, best_of_n_prompts=4,
              overopt_steps=4, overopt_minutes=1, response_length=16, rm_evals=1, norm_samples=16)
PRESET_ENV = "RLHF_WORKSHOP_PRESET"  # "load": the Workshop page (and the room's slot plan) use LOAD
NAMED = {"load": LOAD}


def preset(device: str | None = None) -> Preset:
    """The preset for ``device`` ("cpu" or "cuda"), by default the one named in ``$RLHF_WORKSHOP_PRESET``, else the
    one for the device this machine trains on."""
    named = os.environ.get(PRESET_ENV, "").strip()
    if device is None and named:
        if named not in NAMED:
            raise ValueError(f"{PRESET_ENV}={named!r}: no such workshop preset (known: {', '.join(NAMED)})")
        return NAMED[named]
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return GPU if device == "cuda" else CPU


def reward_config(model: ModelConfig, sizes: Preset | None = None) -> RewardConfig:
    """A reward model that learns the annotator's taste in a few minutes: mean pooling (the 135M model does
    not gather an answer's sentiment into its EOS state, RESULTS.md), a high constant-ish rate."""
    sizes = sizes or preset()
    return RewardConfig(model=model, steps=sizes.rm_steps, batch_size=sizes.rm_batch, learning_rate=4e-4,
                        max_length=128, pooling="mean", eval_every=max(sizes.rm_steps // sizes.rm_evals, 1),
                        norm_samples=sizes.norm_samples,
                        norm_response_length=sizes.response_length, checkpoint_every=sizes.rm_steps)


def ppo_config(model: ModelConfig, sizes: Preset | None = None) -> PPOConfig:
    """The sweep's runs: short, at a high constant LoRA rate, 2 PPO epochs; probes on held-out prompts.

    All runs share the seed, so their first rollout is the same; they part as β·KL starts to count.
    """
    sizes = sizes or preset()
    return PPOConfig(model=model, steps=sizes.ppo_steps, batch_size=sizes.batch_size,
                     response_length=sizes.response_length,
                     ppo_epochs=2, learning_rate=LEARNING_RATE, lr_schedule="constant",
                     missing_eos_penalty=MISSING_EOS_PENALTY,
                     checkpoint_every=sizes.ppo_steps, probe_every=sizes.probe_every,
                     probe_prompts=sizes.probe_prompts, reference_probe_samples=sizes.reference_probe_samples,
                     samples_per_step=4)


def overopt_ppo_config(model: ModelConfig, sizes: Preset | None = None) -> PPOConfig:
    """The over-optimisation run: the sweep's settings at β = 0 for many more steps."""
    sizes = sizes or preset()
    return dataclasses.replace(ppo_config(model, sizes), steps=sizes.overopt_steps, kl_coef=0.0,
                               checkpoint_every=10, probe_every=4)


def cli_commands(workspace: str = "workspace", device: str | None = None) -> list[str]:
    """The workshop as commands, one per step (the last is the optional over-optimisation run)."""
    sizes = preset(device)
    model = ModelConfig(quant="none" if sizes.device == "cpu" else "4bit")
    rm, ppo, long = reward_config(model, sizes), ppo_config(model, sizes), overopt_ppo_config(model, sizes)
    rm_flagged = ("steps", "learning_rate", "pooling", "batch_size")
    ppo_flagged = ("steps", "batch_size", "response_length", "learning_rate", "kl_coef", "checkpoint_every")
    shared = (f"--quant {model.quant} --batch-size {ppo.batch_size} --response-length {ppo.response_length} "
              f"--lr {ppo.learning_rate:g}")
    return [
        f"python -m rlhf_engine pairs add {PAIRS_FILE.relative_to(REPOSITORY)}",
        f"python -m rlhf_engine train-rm --data {PAIRS_FILE.relative_to(REPOSITORY)} "
        f"--out {workspace}/runs/workshop-rm --quant {model.quant} --steps {rm.steps} --batch-size {rm.batch_size} "
        f"--lr {rm.learning_rate:g} --pooling {rm.pooling} {_set_flags(rm, rm_flagged)}".rstrip(),
        f"python -m rlhf_engine sweep --reward {workspace}/runs/workshop-rm --out {workspace}/runs/workshop-sweep "
        f"--kl-coefs {','.join(format(b, 'g') for b in sizes.betas)} --best-of-n {sizes.best_of_n} "
        f"--best-of-n-prompts {sizes.best_of_n_prompts} --steps {ppo.steps} {shared} "
        f"--checkpoint-every {ppo.checkpoint_every} {_set_flags(ppo, ppo_flagged)}".rstrip(),
        f"python -m rlhf_engine report {workspace}/runs/workshop-sweep",
        f"python -m rlhf_engine ppo --reward {workspace}/runs/workshop-rm --out {workspace}/runs/workshop-overopt "
        f"--kl-coef 0 --steps {long.steps} {shared} --checkpoint-every {long.checkpoint_every} "
        f"{_set_flags(long, ppo_flagged)}".rstrip(),
    ]


def _set_flags(config, flagged: tuple[str, ...]) -> str:
    """``--set FIELD=VALUE`` for every field that differs from its default and has no flag of its own."""
    default = type(config)()
    return " ".join(f"--set {f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                    if f.name != "model" and f.name not in flagged
                    and getattr(config, f.name) != getattr(default, f.name))
