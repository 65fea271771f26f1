"""The runs of a sweep trained side by side in one process: one copy of the base weights, one decoding batch.

Each run keeps everything that makes it a run of its own: its LoRA adapter, value head, optimiser, KL
controller and random streams (a ``trainer.PolicyTrainer`` each, built on the first one's base model). What
they share is the base weights and the decoding. Every step the runs' prompts are sampled as one batch, each
row through its own run's adapter (``lora_fused.rows_through_adapters``) and drawing from its own run's
random stream, so each run gets exactly the tokens it would get alone; then each run scores its own
rollout and takes its own update (``PolicyTrainer.begin`` with ``sampled=``, then ``finish``). Decoding a
batch is bound by reading the weights, so four runs' rows cost far less than four decodings (RESULTS.md);
scoring and updating are arithmetic and stay one run at a time.

A batched sweep's runs fail together; a workshop group's (``runs.group_job``) pass ``on_error``, and a run whose
step fails then fails alone while the others take theirs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from rlhf_engine.core.generation import NonFiniteLogitsError, Rollout, sample_responses
from rlhf_engine.core.rollout import POLICY, NonFiniteError, probe_generators
from rlhf_engine.core.trainer import PolicyTrainer


def sample_side_by_side(trainers: Sequence[PolicyTrainer], prompts: Sequence[Sequence],
                        generators: Sequence[torch.Generator | Sequence[torch.Generator]],
                        reference: bool = False) -> list[Rollout]:
    """Each trainer's responses to its prompts, decoded as one batch: trainer i's rows through its policy
    adapter (or, with ``reference``, through none) and its generators: one for all its rows (a step's rollout)
    or one per row (probe answers, a stream per prompt). Returns one Rollout per trainer, as narrow as sampling
    it alone gives."""
    first = trainers[0]
    cfg = first.config
    for trainer in trainers[1:]:
        if trainer.model.peft is not first.model.peft:
            raise ValueError("runs decoded side by side must share one base model")
        other = trainer.config
        if (other.response_length, other.temperature, other.model.chat_template) != (
                cfg.response_length, cfg.temperature, cfg.model.chat_template):
            raise ValueError("runs decoded side by side must share response length, temperature and chat template")
    rows, row_generators, adapters, bounds = [], [], [], []
    for trainer, batch, generator in zip(trainers, prompts, generators):
        bounds.append((len(rows), len(rows) + len(batch)))
        rows += list(batch)
        row_generators += _per_row(generator, len(batch))
        adapters += ["__base__" if reference else trainer.model.policy_adapter] * len(batch)
    first.model.use(POLICY)
    try:
        together = sample_responses(first.model.peft, first.tokenizer, rows, cfg.response_length, cfg.temperature,
                                    cfg.model.chat_template, generators=row_generators, adapter_names=adapters)
    except NonFiniteLogitsError:
        step = max(t.step_count for t in trainers) + 1
        beside = f", {len(trainers)} runs side by side" if len(trainers) > 1 else ""
        raise NonFiniteError("policy logits", step, f"while sampling{beside}") from None
    return [together.rows(slice(start, stop)) for start, stop in bounds]


def _per_row(generators: torch.Generator | Sequence[torch.Generator], rows: int) -> list[torch.Generator]:
    """A block's generator for each of its ``rows`` rows: the one it shares, or its own one per row."""
    if isinstance(generators, torch.Generator):
        return [generators] * rows
    if len(generators) != rows:
        raise ValueError(f"{rows} rows need as many generators, got {len(generators)}")
    return list(generators)


def step_side_by_side(trainers: Sequence[PolicyTrainer], on_begin=None,
                      on_error=None) -> list[tuple[dict, list[dict]] | None]:
    """One step of every trainer that samples (PPO, GRPO, RLOO), their rollouts decoded as one batch; then each run
    begins its step on its own answers and finishes it before the next run begins (one run's update held at a
    time). Returns (metrics, samples) of each.

    ``on_begin(i, metrics)`` gets run i's metrics known before its update (``PolicyTrainer.begin``'s).
    ``time/generate_s`` of each run is the shared decoding's time.

    ``on_error(i, error)``: run i's failure (non-finite logits, score or loss, out of memory, ...) is handed to it,
    its result is None, and the others go on. When the batch's logits are not finite, each run is decoded again
    alone, from the same random stream, to find whose they are (the others get the tokens the batch gave them).
    Without it the first failure is raised.
    """
    started = time.perf_counter()
    prompts = [t.next_prompts() for t in trainers]
    try:
        rollouts = sample_side_by_side(trainers, prompts, [trainer.step_generator() for trainer in trainers])
    except NonFiniteError:
        if on_error is None or len(trainers) == 1:
            raise
        rollouts = _sampled_one_by_one(trainers, prompts, on_error)
    seconds = time.perf_counter() - started
    results = []
    for i, (trainer, rollout) in enumerate(zip(trainers, rollouts)):
        try:
            if rollout is None:  # its sampling failed (on_error has it)
                results.append(None)
                continue
            step = trainer.begin(sampled=(rollout, seconds))
            if on_begin is not None:
                on_begin(i, dict(step.metrics))
            results.append(trainer.finish(step))
        except Exception as err:  # noqa: BLE001 - one run's failure, handed to on_error
            if on_error is None:
                raise
            on_error(i, err)
            results.append(None)
    return results


def _sampled_one_by_one(trainers: Sequence[PolicyTrainer], prompts: Sequence[Sequence], on_error) -> list:
    """Each trainer's rollout of the coming step decoded alone (None for one whose logits are not finite, handed to
    ``on_error``)."""
    rollouts: list[Rollout | None] = []
    for i, (trainer, batch) in enumerate(zip(trainers, prompts)):
        try:
            rollouts += sample_side_by_side([trainer], [batch], [trainer.step_generator()])
        except NonFiniteError as err:
            on_error(i, err)
            rollouts.append(None)
    return rollouts


def scoring_key(trainer: PolicyTrainer) -> tuple:
    """What a run's score of an answer depends on: its reward model (and so its normalisation), its
    normalisation switch, its missing-EOS penalty and whether it logs a gold score. Two runs with the same key give
    the same answers the same scores."""
    cfg = trainer.config
    return id(trainer.reward_model), cfg.normalize_reward, cfg.missing_eos_penalty, trainer.gold_scorer is not None


def probe_side_by_side(trainers: Sequence[PolicyTrainer], prompts: Sequence,
                       reference: bool = False) -> list[list[dict]]:
    """Each trainer's scored answers to the same probe prompts (``PolicyTrainer.probe_answers``: the first
    len(prompts) of the probe set), decoded as one batch, each run's rows with streams of their own, one per prompt
    (``probe_generators``): the same random numbers as alone, and as in a probe of all the prompts. The reference's
    answers (``reference_probe_samples`` per prompt, answer i from the streams of sample i) are the same for every
    run (same base, prompts and seeds): decoded once, then scored once by each group of runs that score alike
    (``scoring_key``: their settings may differ)."""
    if reference:
        samples = range(trainers[0].config.reference_probe_samples)
        if any(t.config.reference_probe_samples != len(samples) for t in trainers):
            raise ValueError("runs probed side by side must share reference_probe_samples")
        answers = sample_side_by_side(trainers[:1] * len(samples), [prompts] * len(samples),
                                      [probe_generators(len(prompts), i) for i in samples], reference=True)
        scored: dict[tuple, list[dict]] = {}  # runs that score alike score these answers once (scoring_key)
        for trainer in trainers:
            if scoring_key(trainer) not in scored:
                scored[scoring_key(trainer)] = [
                    row for i, rollout in zip(samples, answers)
                    for row in trainer.probe_answers(prompts, reference=True, sampled=rollout, sample=i)]
        return [[dict(row) for row in scored[scoring_key(trainer)]] for trainer in trainers]
    answers = sample_side_by_side(trainers, [prompts] * len(trainers),
                                  [probe_generators(len(prompts)) for _ in trainers])
    return [trainer.probe_answers(prompts, sampled=rollout) for trainer, rollout in zip(trainers, answers)]
