"""Teaching presets: the workshop's whole loop, and its optional over-optimisation step, sized to the device.

The workshop: simulated preference pairs (made once and shipped, ``assets/workshop_pairs.jsonl``) -> a
reward model -> a KL sweep whose runs train side by side (``rlhf_engine.core.batched``) with best-of-n, from
a fresh clone to the finished sweep plot in about 12 minutes on 2 CPU cores (11.9 measured on a 2-core AMD EPYC
with AVX-512, benchmarks/RESULTS.md). The
story is told on held-out probe prompts answered by the reference and the policy with the same sampling
seed, so a gain of 0.2 in gold score is not lost in the ±0.5 swing of one training batch.

The over-optimisation step: one long run at β = 0 against the same reward model, long enough that the
gold score peaks and falls while the reward model's score still rises (measured on 2 cores: gold 0.44 →
0.55 at step 12, then 0.41 by step 40 while the RM score rose from 0.74 to 1.26; an earlier run drifted into
florid "a touch of luxury, handcrafted" descriptions that the reward model likes and the annotator does not).

The methods step: PPO, GRPO, RLOO and DPO on the sweep's budget and probes, two seeds each, side by side in one
job (``methods_plan``), PPO's first seed and best-of-n taken from the sweep (``methods_reused``).

On a GPU the presets run more steps and larger batches (``preset("cuda")``); the CPU figures are measured,
the GPU ones are not yet (no GPU was lent to the sessions that built this: RESULTS.md says so).
``RLHF_WORKSHOP_PRESET=load`` gives the Workshop page the room load benchmark's tiny sizes instead
(benchmarks/room_load.py): twenty participants' jobs on one core within the benchmark's 45 minutes.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.config import ModelConfig, PPOConfig, RewardConfig
from rlhf_engine.lab.sweep import method_config, plan_methods

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
GROUP_MISSING_EOS_PENALTY = 1.0  # GRPO's and RLOO's in the methods step: at 0.5 RLOO's answers reached the cap in
# both seeds (config.BUNDLED_GROUP_MISSING_EOS_PENALTY says what was measured)
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
    probe_prompts: int  # held-out prompts the reference and each run's last probe answer (paired)
    probe_subset: int  # the first N of them, answered at the probes before the last (the path); 0 = all
    reference_probe_samples: int  # the reference's answers per probe prompt: their mean is the gain's baseline
    best_of_n: int  # best-of-1…n from the reference: the no-training baseline
    best_of_n_prompts: int  # held-out prompts best-of-n samples for: all the probe prompts, so that its first samples
    # are the reference's probe answers (reused, not decoded again) and its points compare with the runs' on the same
    # prompts
    overopt_steps: int  # steps of the over-optimisation run at β = 0
    overopt_minutes: int  # its wall time (measured on CPU, a target on a GPU)
    response_length: int = RESPONSE_LENGTH  # new tokens per answer (PPO's and the reward model's normalisation)
    rm_evals: int = 2  # held-out evaluations of the reward model as it trains (the last at its end)
    norm_samples: int = 32  # base-model answers the reward model's scores are normalised on
    method_seeds: tuple[int, ...] = (0, 1)  # the methods step trains every method once per seed, side by side
    methods_minutes: int = 16  # the methods step's wall time (measured on CPU, a target on a GPU)

    @property
    def probe_points(self) -> int:
        """The policy's probes of one sweep run: every probe_every steps and at the last step."""
        return len(range(self.probe_every, self.ppo_steps, self.probe_every)) + 1

    @property
    def probe_answers(self) -> int:
        """Probe answers of one sweep run, what its path costs: the reference's (every prompt,
        reference_probe_samples times), the policy's at the probes before the last (probe_subset prompts, all
        when 0) and at the last (all)."""
        return (self.probe_prompts * (self.reference_probe_samples + 1)
                + (self.probe_points - 1) * (self.probe_subset or self.probe_prompts))


# Probes, CPU: a path of 5 points per run (the reference; steps 3, 6, 9 on 16 prompts; step 10 on all 54): 108
# reference answers (best-of-n's first samples, decoded once for the whole sweep) + 48 + 54 per run (the Preset's
# probe_answers), against 54 for the two-point segment and 162 for all 54 prompts at each of the 4 steps.
CPU = Preset(device="cpu", minutes=12, rm_steps=20, rm_batch=6, betas=(0.0, 0.05, 0.2), ppo_steps=10, batch_size=8,
             probe_every=3, probe_prompts=54, probe_subset=16, reference_probe_samples=2, best_of_n=8,
             best_of_n_prompts=54, overopt_steps=40, overopt_minutes=12, methods_minutes=16)
# Probes, GPU: 10 points per run (steps 3, 6, ..., 27 on 16 prompts, step 30 on all 48): 192 reference + 144 + 48 = 384
# answers per run, against 480 for 6 points on all 48 prompts (every 5 steps).
GPU = Preset(device="cuda", minutes=5, rm_steps=120, rm_batch=16, betas=(0.0, 0.02, 0.05, 0.2), ppo_steps=30,
             batch_size=32, probe_every=3, probe_prompts=48, probe_subset=16, reference_probe_samples=4,
             best_of_n=16, best_of_n_prompts=48, overopt_steps=100, overopt_minutes=10, methods_minutes=8)
# Not for teaching: the room load benchmark's participant (a reward model of 4 steps evaluated once, one PPO run of
# 2 steps of 4 prompts x 16 tokens, no best-of-n), so that 20 participants' jobs fit one core and 45 minutes.
LOAD = Preset(device="cpu", minutes=1, rm_steps=4, rm_batch=6, betas=(0.0, 0.05, 0.2), ppo_steps=2, batch_size=4,
              probe_every=2, probe_prompts=4, probe_subset=0, reference_probe_samples=1, best_of_n=0,
              best_of_n_prompts=4, overopt_steps=4, overopt_minutes=1, response_length=16, rm_evals=1, norm_samples=16,
              methods_minutes=1)
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
                     probe_prompts=sizes.probe_prompts, probe_subset=min(sizes.probe_subset, sizes.probe_prompts),
                     reference_probe_samples=sizes.reference_probe_samples,
                     samples_per_step=4)


def overopt_ppo_config(model: ModelConfig, sizes: Preset | None = None) -> PPOConfig:
    """The over-optimisation run: the sweep's settings at β = 0 for many more steps."""
    sizes = sizes or preset()
    return dataclasses.replace(ppo_config(model, sizes), steps=sizes.overopt_steps, kl_coef=0.0,
                               checkpoint_every=10, probe_every=4, probe_subset=0)  # every probe on all: Gao's curve


EXAMPLE_MAX_CHARS = 140  # the longest answer the Workshop page shows whole in its example pair
UNFIT_WORDS = frozenset({"bitch", "fuck", "shit", "crap", "idiot", "stupid", "dumb", "hate", "ass", "damn"})


def example_pair(pairs: list):
    """The pair the Workshop page shows a room: the first whose answers are short enough to show whole and hold
    no insult (the shipped pairs are the bundled model's own text, and the annotator's least favourite answer is
    sometimes abuse). None when no pair fits."""
    def fit(text: str) -> bool:
        words = {word.strip(".,!?\"'-").lower() for word in text.replace("-", " ").split()}
        return len(text) <= EXAMPLE_MAX_CHARS and not words & UNFIT_WORDS

    return next((pair for pair in pairs if fit(pair.chosen) and fit(pair.rejected)), None)


METHODS = ("ppo", "grpo", "rloo", "dpo")  # the methods step's methods (best-of-n comes from the sweep)


def method_configs(model: ModelConfig, sizes: Preset | None = None) -> dict:
    """Each method of the methods step on the sweep's budget and probes (``ppo_config``): the same answers per
    step, length, sampling, constant LoRA rate and held-out probes; each at its own default β (PPO 0.05, GRPO 0.04,
    RLOO 0.05, DPO 0.1), GRPO with 2 passes per rollout as PPO has, the group methods with their missing-EOS penalty
    (``GROUP_MISSING_EOS_PENALTY``)."""
    ppo = ppo_config(model, sizes)
    same_rate = dict(learning_rate=LEARNING_RATE, lr_schedule="constant")
    group = dict(missing_eos_penalty=GROUP_MISSING_EOS_PENALTY, **same_rate)
    return {"ppo": ppo,
            "grpo": dataclasses.replace(method_config(ppo, "grpo"), epochs=ppo.ppo_epochs, **group),
            "rloo": dataclasses.replace(method_config(ppo, "rloo"), **group),
            "dpo": dataclasses.replace(method_config(ppo, "dpo"), **same_rate)}


def methods_plan(model: ModelConfig, sizes: Preset | None = None) -> list[tuple[str, object]]:
    """(label, config) of the methods step's runs: every method of METHODS at its own β, once per seed of the
    preset, to train side by side in one job."""
    sizes = sizes or preset()
    return plan_methods(method_configs(model, sizes), {}, sizes.method_seeds)


def methods_reused(sweep, model: ModelConfig | None = None, sizes: Preset | None = None) -> list[tuple[str, Path]]:
    """(label, run folder) of the KL sweep's runs that the methods step can take as its own instead of training them
    again: a completed member whose saved config is exactly that of a run of ``methods_plan`` (PPO at its β, first
    seed: the sweep's run at that β is that very run); none when the plan cannot be made (the button says why)."""
    from rlhf_engine.config import to_dict

    try:
        plan = methods_plan(model or ModelConfig(), sizes)
    except ValueError:
        return []
    wanted = {json.dumps(to_dict(config), sort_keys=True): label for label, config in plan}
    reused = []
    for member in sweep.members():
        try:
            saved = member.run.config().get("config", {})
        except (OSError, ValueError):
            continue
        label = wanted.get(json.dumps(saved, sort_keys=True))
        if label and member.run.status().get("state") == "completed":
            reused.append((label, member.run.path))
    return reused


def cli_commands(workspace: str = "workspace", device: str | None = None) -> list[str]:
    """The workshop as commands, one per step (then the optional over-optimisation run and the methods step, which
    on the command line trains PPO's first seed and samples best-of-n anew instead of reusing the sweep's)."""
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
        f"python -m rlhf_engine sweep --reward {workspace}/runs/workshop-rm --out {workspace}/runs/workshop-methods "
        f"--methods {','.join(METHODS)} --seeds {','.join(map(str, sizes.method_seeds))} --steps {ppo.steps} "
        f"{shared} --checkpoint-every {ppo.checkpoint_every} {_set_flags(ppo, ppo_flagged)} "
        f"--set grpo.epochs={ppo.ppo_epochs} " + " ".join(f"--set {m}.missing_eos_penalty={GROUP_MISSING_EOS_PENALTY}"
                                                          for m in ("grpo", "rloo")),
    ]


def _set_flags(config, flagged: tuple[str, ...]) -> str:
    """``--set FIELD=VALUE`` for every field that differs from its default and has no flag of its own."""
    default = type(config)()
    return " ".join(f"--set {f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                    if f.name != "model" and f.name not in flagged
                    and getattr(config, f.name) != getattr(default, f.name))
