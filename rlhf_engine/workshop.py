"""The workshop preset: the whole RLHF loop sized for a class on a 2-core laptop.

Simulated pairs -> reward model -> a KL sweep with best-of-n, from a fresh clone to the sweep plot in
about 15 minutes on 2 CPU cores (benchmarks/RESULTS.md). The sizes are far below the literature's:
the point is to see each piece work and how β changes the outcome, not a strong model. The same steps
run from the command line with the flags in ``cli_commands()``.
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


def cli_commands(workspace: str = "workspace") -> list[str]:
    """The command-line equivalent of the workshop page, one command per step."""
    rm, ppo = reward_config(ModelConfig(quant="none")), ppo_config(ModelConfig(quant="none"))
    defaults = PPOConfig()
    ppo_sets = " ".join(f"--set {f.name}={getattr(ppo, f.name)}" for f in dataclasses.fields(PPOConfig)
                        if f.name not in ("model", "steps", "batch_size", "response_length", "learning_rate")
                        and getattr(ppo, f.name) != getattr(defaults, f.name))
    return [
        f"python -m rlhf_engine make-demo-pairs --n {PAIRS} --out {workspace}/workshop-pairs.jsonl",
        f"python -m rlhf_engine train-rm --data {workspace}/workshop-pairs.jsonl --out {workspace}/runs/workshop-rm "
        f"--quant none --steps {rm.steps} --lr {rm.learning_rate:g} --pooling {rm.pooling} --set max_length={rm.max_length} "
        f"--set eval_every={rm.eval_every} --set norm_samples={rm.norm_samples} "
        f"--set norm_response_length={rm.norm_response_length} --set checkpoint_every={rm.checkpoint_every}",
        f"python -m rlhf_engine sweep --reward {workspace}/runs/workshop-rm --out {workspace}/runs/workshop-sweep "
        f"--kl-coefs {','.join(format(b, 'g') for b in BETAS)}{' --adaptive' if ADAPTIVE else ''} --best-of-n {BEST_OF_N} "
        f"--best-of-n-prompts {BEST_OF_N_PROMPTS} --quant none --steps {ppo.steps} --batch-size {ppo.batch_size} "
        f"--response-length {ppo.response_length} --lr {ppo.learning_rate:g} {ppo_sets}",
        f"python -m rlhf_engine report {workspace}/runs/workshop-sweep",
    ]
