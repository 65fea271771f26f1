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

import contextlib
import time
from collections.abc import Sequence

import torch

from rlhf_engine.core.generation import NonFiniteLogitsError, Rollout, decode_responses, sample_responses
from rlhf_engine.core.lora_fused import rows_can_take_adapters
from rlhf_engine.core.prompt_cache import shared_prompt_logprobs
from rlhf_engine.core.rollout import POLICY, Beside, NonFiniteError, probe_generators
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
        if not rows_can_take_adapters(first.model.peft):  # a quantised base: each run's block decoded alone
            return [_sampled_alone(trainer, rows[start:stop], row_generators[start:stop], reference)
                    for trainer, (start, stop) in zip(trainers, bounds)]
        together = sample_responses(first.model.peft, first.tokenizer, rows, cfg.response_length, cfg.temperature,
                                    cfg.model.chat_template, generators=row_generators, adapter_names=adapters)
    except NonFiniteLogitsError:
        step = max(t.step_count for t in trainers) + 1
        beside = f", {len(trainers)} runs side by side" if len(trainers) > 1 else ""
        raise NonFiniteError("policy logits", step, f"while sampling{beside}") from None
    return [together.rows(slice(start, stop)) for start, stop in bounds]


def _sampled_alone(trainer: PolicyTrainer, prompts: list, generators: list, reference: bool) -> Rollout:
    """One run's block of a side-by-side decoding, decoded alone (through its policy adapter, or none)."""
    cfg = trainer.config
    trainer.model.use(POLICY)
    with trainer.model.peft.disable_adapter() if reference else contextlib.nullcontext():
        return sample_responses(trainer.model.peft, trainer.tokenizer, prompts, cfg.response_length, cfg.temperature,
                                cfg.model.chat_template, generators=generators)


def _per_row(generators: torch.Generator | Sequence[torch.Generator], rows: int) -> list[torch.Generator]:
    """A block's generator for each of its ``rows`` rows: the one it shares, or its own one per row."""
    if isinstance(generators, torch.Generator):
        return [generators] * rows
    if len(generators) != rows:
        raise ValueError(f"{rows} rows need as many generators, got {len(generators)}")
    return list(generators)


def step_side_by_side(trainers: Sequence[PolicyTrainer], on_begin=None,
                      on_error=None) -> list[tuple[dict, list[dict]] | None]:
    """One step of every trainer that samples (PPO, GRPO, RLOO), their rollouts decoded as one batch and scored in one
    call per reward model and one pass of the reference (``read_together``); then each run begins its step on its own
    answers and finishes it before the next run begins (one run's update held at a time). Returns (metrics, samples)
    of each.

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
    read = read_together(trainers, prompts, rollouts)
    results = []
    for i, (trainer, rollout) in enumerate(zip(trainers, rollouts)):
        try:
            if rollout is None:  # its sampling failed (on_error has it)
                results.append(None)
                continue
            step = trainer.begin(sampled=(rollout, seconds), beside=read[i])
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
    (``probe_generators``): the same random numbers as alone, and as in a probe of all the prompts. Every run's
    answers are scored and read by the reference together (``read_together``). The reference's answers
    (``reference_probe_samples`` per prompt, answer i from the streams of sample i) are the same for every run (same
    base, prompts and seeds): decoded and scored once, then written by each group of runs that score alike
    (``scoring_key``: their settings may differ)."""
    if reference:
        samples = range(trainers[0].config.reference_probe_samples)
        if any(t.config.reference_probe_samples != len(samples) for t in trainers):
            raise ValueError("runs probed side by side must share reference_probe_samples")
        answers = sample_side_by_side(trainers[:1] * len(samples), [prompts] * len(samples),
                                      [probe_generators(len(prompts), i) for i in samples], reference=True)
        scored: dict[tuple, list[dict]] = {}  # runs that score alike write these answers once (scoring_key)
        for trainer in trainers:
            if scoring_key(trainer) not in scored:
                read = read_together([trainer] * len(samples), [prompts] * len(samples), answers, reference=False)
                scored[scoring_key(trainer)] = [
                    row for i, rollout in zip(samples, answers)
                    for row in trainer.probe_answers(prompts, reference=True, sampled=rollout, sample=i,
                                                     beside=read[i])]
        return [[dict(row) for row in scored[scoring_key(trainer)]] for trainer in trainers]
    answers = sample_side_by_side(trainers, [prompts] * len(trainers),
                                  [probe_generators(len(prompts)) for _ in trainers])
    read = read_together(trainers, [prompts] * len(trainers), answers)
    return [trainer.probe_answers(prompts, sampled=rollout, beside=beside)
            for trainer, rollout, beside in zip(trainers, answers, read)]


def read_together(trainers: Sequence[PolicyTrainer], prompts: Sequence[Sequence], answers: Sequence[Rollout | None],
                  reference: bool = True) -> list[Beside | None]:
    """What each trainer needs of its answers (``answers[i]`` to ``prompts[i]``) beyond its own policy, read for all
    the runs together: the raw RM scores, one call per reward model, and (``reference``) the reference's log-probs,
    one pass per base model (every run's reference is its base with adapters off). A prompt that several runs
    answered then passes through each model once for all of them (``prompt_cache``). None for a trainer without
    answers; all None when reading fails (each run then reads its own, and meets its own error)."""
    try:
        started = time.perf_counter()
        raw = _together(trainers, answers, lambda t: (id(t.reward_model.backbone), t.reward_model.adapter_name,
                                                      id(t.reward_model.head)),
                        lambda members: _raw_scores(trainers, prompts, answers, members))
        scored = time.perf_counter()
        ref = _together(trainers, answers, lambda t: (id(t.model.peft), t.config.temperature),
                        lambda members: _reference_logprobs(trainers, answers, members)) if reference else None
        read = time.perf_counter()
    except Exception:  # noqa: BLE001 - out of memory or a model that fails: each run finds out for itself, alone
        return [None] * len(trainers)
    return [None if raw[i] is None else Beside(raw[i], None if ref is None else ref[i], score_s=scored - started,
                                               reference_s=read - scored) for i in range(len(trainers))]


def _together(trainers: Sequence[PolicyTrainer], answers: Sequence, key, read) -> list:
    """``read(members)`` of each group of trainers with answers that share ``key(trainer)``: one result per trainer."""
    groups: dict[tuple, list[int]] = {}
    for i, trainer in enumerate(trainers):
        if answers[i] is not None:
            groups.setdefault(key(trainer), []).append(i)
    results: list = [None] * len(trainers)
    for members in groups.values():
        for i, result in zip(members, read(members)):
            results[i] = result
    return results


def _raw_scores(trainers, prompts, answers, members: list[int]) -> list[list[float]]:
    """The raw RM scores of these trainers' answers, in one call of their (one) reward model."""
    texts = [text for i in members for text in decode_responses(trainers[i].tokenizer, answers[i])]
    scores = trainers[members[0]].reward_model.score([p for i in members for p in prompts[i]], texts,
                                                     normalized=False).float().tolist()
    out = []
    for i in members:
        out.append(scores[:len(prompts[i])])
        scores = scores[len(prompts[i]):]
    return out


def _reference_logprobs(trainers, answers, members: list[int]) -> list:
    """The reference's log-probs of these trainers' answers, in one pass of their (one) base model with adapters off
    (``shared_prompt_logprobs``), or each trainer's own pass where its cache cannot be shared."""
    first = trainers[members[0]]
    with first.model.peft.disable_adapter():
        together = shared_prompt_logprobs(first.model.peft, [answers[i] for i in members], first.config.temperature)
    return together if together is not None else [None] * len(members)
