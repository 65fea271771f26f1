"""Teaching presets: the workshop's whole loop, and the longer over-optimisation demo.

The workshop: simulated pairs -> reward model -> a KL sweep with best-of-n, from a fresh clone to the
sweep plot in about 15 minutes on 2 CPU cores (benchmarks/RESULTS.md). The sizes are far below the
literature's: the point is to see each piece work and how β changes the outcome, not a strong model.

The over-optimisation demo: more pairs, a better reward model and 60-step runs at a constant learning
rate, long enough that at small β the gold score peaks and then falls while the reward model's score
keeps rising (about 1.5 hours on 2 CPU cores, measured in RESULTS.md). The same steps run from the
command line with the flags in ``cli_commands()``.
"""

from __future__ import annotations

import dataclasses

from .config import ModelConfig, PPOConfig, RewardConfig

PAIRS = 40  # simulated preference pairs (4 completions per prompt, the most and least positive paired)
BETAS = (0.0, 0.05, 0.2, 0.5)  # the sweep's β values: wide, so that 5 short steps already tell them apart
ADAPTIVE = False  # no adaptive-β run here (the KL sweep page offers one): it would not fit the 15 minutes
BEST_OF_N = 8  # best-of-1…8 from the reference as the no-training baseline
BEST_OF_N_PROMPTS = 8  # prompts the best-of-n baseline samples for


def reward_config(model: ModelConfig) -> RewardConfig:
    """A reward model trained in a few minutes: mean pooling (it learns sentiment fastest, RESULTS.md)."""
    return RewardConfig(model=model, steps=16, batch_size=8, learning_rate=3e-4, max_length=128, pooling="mean",
                        eval_every=4, norm_samples=32, norm_response_length=16, checkpoint_every=8)


def ppo_config(model: ModelConfig) -> PPOConfig:
    """Short PPO runs: 5 steps of 4 prompts × 16 tokens, 2 epochs (11–15 s a step on 2 cores), and a high
    LoRA rate (1e-3, 10× the default) so that the policy moves far enough in 5 steps for β to matter.

    All runs share the seed, so their first rollout is the same; they part as β·KL starts to count.
    """
    return PPOConfig(model=model, steps=5, batch_size=4, response_length=16, ppo_epochs=2, learning_rate=1e-3,
                     checkpoint_every=5, probe_every=0, samples_per_step=4)


# The over-optimisation demo ------------------------------------------------------------------------------
OVEROPT_PAIRS = 256  # simulated pairs: enough for a reward model that agrees with the annotator ~80 % of the time
OVEROPT_BETAS = (0.0, 0.05, 0.2)  # as measured: β = 0 over-optimises, β = 0.05 and 0.2 stop short of it
OVEROPT_ADAPTIVE = False  # no adaptive run: 20 more minutes on 2 cores (the form can add one)
OVEROPT_BEST_OF_N = 16  # best-of-1…16 from the reference
OVEROPT_BEST_OF_N_PROMPTS = 16  # prompts the best-of-n baseline samples for


def overopt_reward_config(model: ModelConfig) -> RewardConfig:
    """The RESULTS.md reward model: 120 steps at the default rate, mean pooling (80 % held-out agreement)."""
    return RewardConfig(model=model, steps=120, learning_rate=1e-4, pooling="mean")


def overopt_ppo_config(model: ModelConfig) -> PPOConfig:
    """60 steps of 8 prompts × 24 tokens, 2 epochs, lr 5e-4 held constant (~20 s a step on 2 cores).

    A linearly decaying rate over a short run stops the policy before it leaves the region where the
    reward model is right (24 steps: the gold score levels off but does not fall); at a constant rate
    the β = 0 run passes the gold score's peak. β here is the adaptive run's start.
    """
    return PPOConfig(model=model, steps=60, batch_size=8, response_length=24, ppo_epochs=2, learning_rate=5e-4,
                     lr_schedule="constant", kl_coef=0.05, kl_target=3.0, kl_horizon=32, probe_every=0)


def cli_commands(workspace: str = "workspace", preset: str = "workshop") -> list[str]:
    """The command-line equivalent of a preset ("workshop" or "overopt"), one command per step."""
    if preset not in ("workshop", "overopt"):
        raise ValueError(f"unknown preset {preset!r}: workshop or overopt")
    short = preset == "workshop"
    cpu = ModelConfig(quant="none")
    rm = reward_config(cpu) if short else overopt_reward_config(cpu)
    ppo = ppo_config(cpu) if short else overopt_ppo_config(cpu)
    pairs, betas = (PAIRS, BETAS) if short else (OVEROPT_PAIRS, OVEROPT_BETAS)
    adaptive = ADAPTIVE if short else OVEROPT_ADAPTIVE
    best_of_n, bon_prompts = (BEST_OF_N, BEST_OF_N_PROMPTS) if short else (OVEROPT_BEST_OF_N, OVEROPT_BEST_OF_N_PROMPTS)
    name = "workshop" if short else "overopt"
    rm_quant = "none" if short else "4bit"  # as measured: the over-optimisation demo's reward model was 4-bit
    rm_sets = _set_flags(rm, ("steps", "learning_rate", "pooling", "batch_size"))
    ppo_sets = _set_flags(ppo, ("steps", "batch_size", "response_length", "learning_rate", "kl_coef", "kl_target"))
    return [
        f"python -m rlhf_engine make-demo-pairs --n {pairs} --out {workspace}/{name}-pairs.jsonl",
        f"python -m rlhf_engine train-rm --data {workspace}/{name}-pairs.jsonl --out {workspace}/runs/{name}-rm "
        f"--quant {rm_quant} --steps {rm.steps} --batch-size {rm.batch_size} --lr {rm.learning_rate:g} "
        f"--pooling {rm.pooling} {rm_sets}".rstrip(),
        f"python -m rlhf_engine sweep --reward {workspace}/runs/{name}-rm --out {workspace}/runs/{name}-sweep "
        f"--kl-coefs {','.join(format(b, 'g') for b in betas)}{' --adaptive' if adaptive else ''} "
        f"--best-of-n {best_of_n} --best-of-n-prompts {bon_prompts} --quant none --steps {ppo.steps} "
        f"--batch-size {ppo.batch_size} --response-length {ppo.response_length} --lr {ppo.learning_rate:g} "
        f"--kl-coef {ppo.kl_coef:g} --kl-target {ppo.kl_target:g} {ppo_sets}".rstrip(),
        f"python -m rlhf_engine report {workspace}/runs/{name}-sweep",
    ]


def _set_flags(config, flagged: tuple[str, ...]) -> str:
    """``--set FIELD=VALUE`` for every field that differs from its default and has no flag of its own."""
    default = type(config)()
    return " ".join(f"--set {f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                    if f.name != "model" and f.name not in flagged
                    and getattr(config, f.name) != getattr(default, f.name))
