"""The trainer every method shares: it owns a step, and a method supplies its advantages and its loss.

A step has three phases you can point to (CleanRL's): ``begin`` samples answers to the step's prompts from
the run's own random stream, scores them and reads the reference (``rollout.ScoredRollout``), then the
method turns them into a batch (``advantages``); ``update`` is the one loop of every method:

    for each of plan.epochs passes, for each of plan.minibatches minibatches (one optimiser step each):
        for each part of the minibatch (plan.rows_per_part rows; the whole minibatch by default):
            loss, metrics = method.loss(batch, rows)
            (loss * the part's share of the minibatch).backward()
        average gradients over processes, clip, step

``finish`` runs it and returns the step's metrics and samples. Taking a minibatch's gradient in parts holds one
part's activations at a time and gives the same gradient (each part weighted by its share of the rows).

Two optimisations sit behind one seam each: the rollout's own policy pass, kept with its graph, is the update's
first pass when the first minibatch is the whole batch in one part (``reuses_rollout_pass``,
``policy_forward``); and a model with a separate value adapter takes two passes inside ``Policy.forward``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from rlhf_engine.config import PolicyConfig
from rlhf_engine.core import distributed
from rlhf_engine.core.batching import batch_indices
from rlhf_engine.core.generation import (
    NonFiniteLogitsError,
    Rollout,
    decode_responses,
    sample_responses,
    token_entropy,
    token_logprobs,
)
from rlhf_engine.core.kl_control import FixedKLController
from rlhf_engine.core.memory import release_free_memory
from rlhf_engine.core.models import set_seed
from rlhf_engine.core.policy import Policy
from rlhf_engine.core.rollout import (
    POLICY,
    Beside,
    NonFiniteError,
    ScoredRollout,
    check_finite,
    kl_penalty,
    policy_scores,
    probe_generators,
)
from rlhf_engine.data.pairs import prompt_text


@dataclass(frozen=True)
class UpdatePlan:
    """How a method's update goes over a step's batch."""

    epochs: int = 1  # passes over the batch
    minibatches: int = 1  # minibatches per pass, one optimiser step each
    rows_per_part: int | None = None  # a minibatch's gradient in parts of this many rows (None: in one part)


@dataclass
class Step:
    """A step between its two phases: the batch the update reads and what is known before the update."""

    batch: object  # the method's batch (advantages() of a scored rollout; DPO's pairs)
    metrics: dict  # the step's metrics known before the update (score, KL, ...): a live view shows them
    started: float  # perf_counter() when the step began
    prompts: list = field(default_factory=list)  # this process's prompts of the step, row by row


class PolicyTrainer:
    """One run of a method; ``step()`` = ``finish(begin())`` returns (metrics, samples). No file I/O but checkpoints.

    A method subclasses it with ``advantages`` (a scored rollout into its batch), ``loss`` (a batch's rows into
    (loss, metrics)) and ``update_plan``, and may add ``method_metrics``, ``token_view`` and ``settings``.
    """

    model_class: type[Policy] = Policy
    method_name = ""  # shown in logs ("PPO", "GRPO", ...)
    # Whether the rollout's log-probs and entropy are the sampler's own (read off its logits as it decodes)
    # instead of a policy pass over the sampled answers: a method with no value model needs no pass before
    # its update, whose passes then go over a few answers at a time.
    reads_sampler_logprobs = False
    # Metrics of ``loss`` that are means over the rows' answer tokens: the parts of a minibatch are weighted by
    # their share of its tokens (the others by their share of its rows).
    token_mean_metrics: tuple[str, ...] = ()

    def __init__(self, config: PolicyConfig, reward_model, prompts: Sequence,
                 gold_scorer=None, base=None, name: str = POLICY):
        """``gold_scorer`` (text -> score), when given, is a true reward logged beside the RM's (demo data).

        ``base`` = (PEFT model, tokenizer) of another trainer puts this run's adapters on that model's base
        weights under the adapter name ``name`` (the runs of a batched sweep).
        """
        if not prompts:
            raise ValueError(f"{self.method_name} needs at least one prompt")
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if self.prompts_per_step(config) % self.world_size:
            raise ValueError(f"the {self.prompts_per_step(config)} prompts of a step must be divisible by the "
                             f"{self.world_size} processes")
        self.config = config
        self.reward_model = reward_model
        self.prompts = list(prompts)
        self.gold_scorer = gold_scorer
        set_seed(config.seed)
        self.model, self.tokenizer = self.model_class.create(config, base, name)
        self.params = self.model.trainable_parameters()
        if hasattr(reward_model, "share_base") and reward_model.same_base(config.model):
            reward_model.share_base(self.model.peft)  # one copy of the base weights for every role
            self.model.use(POLICY)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, eps=1e-5)
        total = config.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            (lambda s: max(0.0, 1.0 - s / total)) if config.lr_schedule == "linear" else (lambda s: 1.0),
        )
        self.kl_ctl = FixedKLController(config.kl_coef)  # PPO may adapt it (Ziegler et al.)
        # The seam of one optimisation: the rollout's policy pass keeps its graph to serve as the update's first
        # pass. It is the same pass when the first minibatch is the whole batch in one part and the model takes
        # one pass: one forward pass fewer a step (docs/performance.md measures it).
        plan = self.update_plan()
        self.reuses_rollout_pass = (not self.reads_sampler_logprobs and self.model.single_pass
                                    and plan.minibatches == 1 and plan.rows_per_part is None)
        self.step_count = 0
        # This run's own random streams, for sampling and for the minibatch order, seeded anew each step from
        # (seed, step, process): a step draws the same numbers alone, beside other runs, or after a resume.
        self.sampling_generator, self.shuffle_generator = torch.Generator(), torch.Generator()

    # -- what a method defines ---------------------------------------------------------------------
    @staticmethod
    def answers_per_prompt(config: PolicyConfig) -> int:
        """Answers sampled per prompt in a step (1; a group method's group size)."""
        return 1

    @classmethod
    def prompts_per_step(cls, config: PolicyConfig) -> int:
        return config.batch_size // cls.answers_per_prompt(config)

    def update_plan(self) -> UpdatePlan:
        """Epochs, minibatches and parts of the update (one pass over the batch in one part by default)."""
        return UpdatePlan()

    def advantages(self, scored: ScoredRollout):
        """A scored rollout into the batch the method's loss reads."""
        raise NotImplementedError

    def loss(self, batch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss, metrics) of the batch's ``rows``, the loss with its graph (a mean over the rows)."""
        raise NotImplementedError

    def method_metrics(self, batch) -> dict:
        """The method's own rollout metrics (TRL's names where TRL logs them)."""
        return {}

    def token_view(self, batch, i: int, n: int) -> dict:
        """Per-token lists of answer i's first n tokens shown beside its tokens (beyond its KL)."""
        return {}

    def settings(self) -> str:
        """The run's method and main settings, one line for its log."""
        cfg = self.config
        return f"{self.method_name}: beta={self.beta:g}, KL estimator {cfg.kl_estimator}, {len(self.prompts)} prompts"

    @property
    def beta(self) -> float:
        """The KL coefficient now."""
        return self.kl_ctl.value


    # -- seeds and memory --------------------------------------------------------------------------
    def _step_seed(self, step: int) -> int:
        return ((self.config.seed * 1_000_003 + step) * 1_009 + self.rank) * 2 % 2**62

    def step_generator(self) -> torch.Generator:
        """The sampling stream of the coming step (seeded from the run's seed, the step and the process)."""
        return self.sampling_generator.manual_seed(self._step_seed(self.step_count + 1))

    def _trim_memory(self) -> None:
        if self.config.trim_memory:
            release_free_memory()

    # -- phase 1: rollout --------------------------------------------------------------------------
    def step_indices(self, n_items: int) -> list[int]:
        """This process's share of the coming step's items (a seeded shuffle per epoch of ``n_items``; the same
        on resume). With several data-parallel processes, each takes every world_size-th item of the step."""
        idx = batch_indices(n_items, self.prompts_per_step(self.config), self.step_count + 1, self.config.seed)
        return idx[self.rank::self.world_size]

    def next_prompts(self) -> list:
        """This process's prompts of the coming step, each repeated ``answers_per_prompt`` times in a row (a
        group: a group's answers are all on one process)."""
        return [self.prompts[i] for i in self.step_indices(len(self.prompts))
                for _ in range(self.answers_per_prompt(self.config))]

    @torch.no_grad()
    def sample(self, prompts: Sequence, generator: torch.Generator | None = None) -> Rollout:
        """Responses to prompts from the policy, drawn from ``generator`` (the run's sampling stream as it stands
        by default)."""
        cfg = self.config
        self.model.use(POLICY)
        try:
            return sample_responses(self.model.peft, self.tokenizer, prompts, cfg.response_length, cfg.temperature,
                                    cfg.model.chat_template, generators=generator or self.sampling_generator)
        except NonFiniteLogitsError:
            raise NonFiniteError("policy logits", self.step_count, "while sampling") from None

    @torch.no_grad()
    def rollout(self, prompts: Sequence, sampled: tuple[Rollout, float] | None = None,
                generator: torch.Generator | None = None, beside: Beside | None = None) -> ScoredRollout:
        """Sample from ``generator`` (the run's sampling stream as it stands by default), unless ``sampled`` =
        (rollout, seconds) was sampled for it already, beside other runs; score and read the reference's log-probs
        (unless ``beside`` has them, read beside those runs'); read log-probs (and values, for PPO) for one batch."""
        times = {}
        started = time.perf_counter()
        if sampled is None:
            roll = self.sample(prompts, generator)
            times["generate"] = time.perf_counter() - started
        else:
            roll, times["generate"] = sampled
        self._trim_memory()
        started = time.perf_counter()
        texts = decode_responses(self.tokenizer, roll)
        scores, raw_scores = self.scores(prompts, texts, roll.has_eos, beside)
        times["reward"] = time.perf_counter() - started if beside is None else beside.score_s
        started = time.perf_counter()
        ref_logprobs = self.reference_logprobs(roll, beside)
        self._trim_memory()
        logprobs, entropy, values, first_pass = self._rollout_pass(roll)
        times["forward"] = time.perf_counter() - started + (beside.reference_s if beside is not None else 0.0)
        scores, raw_scores = scores.to(logprobs.device), raw_scores.to(logprobs.device)
        gold = [self.gold_scorer(text) for text in texts] if self.gold_scorer else None
        return ScoredRollout(roll, texts, logprobs, ref_logprobs, entropy, scores.float(), raw_scores.float(),
                             times, values, first_pass, gold)

    def _rollout_pass(self, roll: Rollout):
        """(log-probs, entropy, values, kept pass) of the sampled answers under the policy: the sampler's own when
        the method reads them (no pass), else one pass, kept with its graph when the update will reuse it."""
        if self.reads_sampler_logprobs and roll.logprobs is not None:
            return roll.logprobs, roll.entropy, None, None
        keep = self.reuses_rollout_pass
        with torch.set_grad_enabled(keep):  # the pass last: when kept, its graph is held until the update
            logits, values = self.model.forward(roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                                                self.config.temperature)
            logprobs = token_logprobs(logits, roll.response_ids)
        first_pass = (logprobs, values) if keep else None
        entropy = torch.stack([token_entropy(row) for row in logits.detach()])  # a row at a time: less memory
        return logprobs.detach(), entropy, values.detach() if values is not None else None, first_pass

    def scores(self, prompts: Sequence, texts: Sequence[str], has_eos: torch.Tensor, beside: Beside | None = None):
        """(scores the method optimises, raw RM scores) of responses (``policy_scores``; raw from ``beside``)."""
        raw = None if beside is None else torch.tensor(beside.raw)
        return policy_scores(self.reward_model, self.config, prompts, texts, has_eos, raw)

    def reference_logprobs(self, roll: Rollout, beside: Beside | None = None) -> torch.Tensor:
        """[B, R] the reference's log-probs of the answer tokens (``beside``'s, when read beside other runs)."""
        if beside is not None and beside.ref_logprobs is not None:
            return beside.ref_logprobs.to(roll.response_ids.device)
        return self.token_logprobs_of(roll, reference=True)

    @torch.no_grad()
    def probe_answers(self, prompts: Sequence, reference: bool = False, sampled: Rollout | None = None,
                      sample: int = 0, beside: Beside | None = None) -> list[dict]:
        """The policy's (or the reference's) answers to the held-out probe prompts, each scored: RM score,
        gold score (when logged) and KL to the reference (nats, the run's estimator, summed over the answer).

        ``prompts``: the first len(prompts) probe prompts. Each prompt draws from its own fixed stream
        (``probe_generators``), so the reference and the policy at every step answer it with the same random
        numbers, whether the probe asks all the prompts or a subset: the difference between their answers is what
        training changed (common random numbers make the paired difference far less noisy than two independent
        draws). ``sample`` i > 0: a further answer of the reference, from streams of its own
        (``reference_probe_samples``). ``sampled``: the answers sampled already, beside other runs'; ``beside``:
        their scores (and reference log-probs) read beside those runs' or best-of-n's.
        """
        cfg = self.config
        if sampled is None:
            self.model.use(POLICY)
            with self.model.peft.disable_adapter() if reference else contextlib.nullcontext():
                sampled = sample_responses(self.model.peft, self.tokenizer, prompts, cfg.response_length,
                                           cfg.temperature, cfg.model.chat_template,
                                           generators=probe_generators(len(prompts), sample))
        texts = decode_responses(self.tokenizer, sampled)
        scores, _ = self.scores(prompts, texts, sampled.has_eos, beside)
        if reference:
            kl = torch.zeros(len(texts))
        else:  # the policy's log-probs are the sampler's own (logits / T, as token_logprobs_of reads them): one
            # forward pass of every answer fewer, a quarter of a probe's cost; the reference's need their pass
            policy = sampled.logprobs if sampled.logprobs is not None else self.token_logprobs_of(sampled)
            kl = (kl_penalty(policy, self.reference_logprobs(sampled, beside), cfg.kl_estimator)
                  * sampled.response_mask).sum(1)
        rows = [{"step": self.step_count, "policy": "reference" if reference else "policy",
                 "prompt": prompt_text(prompt), "sample": sample, "response": text, "score": float(score),
                 "kl": float(k), "eos": bool(eos)}
                for prompt, text, score, k, eos in zip(prompts, texts, scores.tolist(), kl.tolist(),
                                                        sampled.has_eos.tolist())]
        gold = beside.gold if beside is not None else None
        if self.gold_scorer is not None:
            for i, row in enumerate(rows):
                row["gold"] = gold[i] if gold is not None else self.gold_scorer(row["response"])
        return rows

    def token_logprobs_of(self, roll: Rollout, reference: bool = False, temperature: float | None = None):
        """[B, R] log-probs of a rollout's answer tokens under the policy (with their graph where grad is on) or
        the reference (adapters off), from logits / T (the run's T unless given)."""
        args = (roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                self.config.temperature if temperature is None else temperature)
        logits = self.model.reference_logits(*args) if reference else self.model.policy_logits(*args)
        return token_logprobs(logits, roll.response_ids)

    def policy_forward(self, scored: ScoredRollout, rows: torch.Tensor):
        """(log-probs [b, R], values [b, R] or None) of the rollout's answers ``rows`` under the policy, with
        their graph: the rollout's own pass the first time when it was kept (``reuses_rollout_pass``), else a
        new pass."""
        if scored.first_pass is not None:
            logprobs, values = scored.first_pass
            scored.first_pass = None
            return logprobs[rows], values[rows] if values is not None else None
        roll = scored.rollout
        logits, values = self.model.forward(roll.input_ids[rows], roll.attention_mask[rows],
                                            roll.response_ids.shape[1], self.config.temperature)
        return token_logprobs(logits, roll.response_ids[rows]), values

    # -- one step ----------------------------------------------------------------------------------
    def step(self, sampled: tuple[Rollout, float] | None = None) -> tuple[dict, list[dict]]:
        """One iteration: ``begin`` (rollout and advantages), then ``finish`` (the update). (metrics, samples)."""
        return self.finish(self.begin(sampled))

    def begin(self, sampled: tuple[Rollout, float] | None = None, beside: Beside | None = None) -> Step:
        """Phases 1 and 2: this step's answers to ``next_prompts()``, scored, and the method's batch of them.
        ``sampled`` = (rollout, seconds): the answers sampled from ``step_generator()`` beside other runs (a
        batched sweep), and ``beside``: what was read of them beside those runs'; by default the step does it all. The
        Step's metrics are those known before the update (score, KL, ...), which a live view shows as it runs."""
        started = time.perf_counter()
        prompts = self.next_prompts()
        generator = self.step_generator() if sampled is None else None  # seeded for the coming step
        self.step_count += 1
        rollout = self.rollout(prompts, sampled, generator, beside)
        check_finite("reward-model score", rollout.scores, self.step_count)
        check_finite("log-probs", rollout.logprobs, self.step_count)
        batch = self.advantages(rollout)
        metrics = {
            "step": self.step_count,
            **rollout.metrics(),
            "objective/kl": batch.kl.sum(1).mean().item(),
            **self.method_metrics(batch),
            "beta": self.beta,
            "time/rollout_s": time.perf_counter() - started,
            **{f"time/{phase}_s": seconds for phase, seconds in rollout.times.items()},
        }
        if self.world_size > 1:  # the whole batch's means (equal shares per process)
            metrics = {**distributed.mean_over_processes(metrics), "step": self.step_count}
        return Step(batch, metrics, started, prompts)

    def finish(self, step: Step) -> tuple[dict, list[dict]]:
        """Phase 3: the update, then the step's metrics (the rollout's, the update's, time and throughput) and
        samples."""
        lr = self.scheduler.get_last_lr()[0]
        update_started = time.perf_counter()
        stats = self.update(step.batch)
        self.model.use(POLICY)
        update_s = time.perf_counter() - update_started
        self.scheduler.step()
        if "objective/kl" in step.metrics:  # PPO's adaptive β reads the step's KL (a fixed β ignores it)
            self.kl_ctl.update(step.metrics["objective/kl"], self.config.batch_size)
        elapsed = time.perf_counter() - step.started
        metrics = {**step.metrics, **stats, "lr": lr, "time/update_s": update_s, "time/step_s": elapsed,
                   "tokens_per_s": step.batch.answer_tokens / elapsed, "sequence_tokens": step.batch.sequence_tokens}
        if self.world_size > 1:
            local = {k: v for k, v in metrics.items() if k not in step.metrics}
            metrics.update(distributed.mean_over_processes(local))
            metrics["tokens_per_s"] *= self.world_size  # each process's tokens per second, summed
            metrics["sequence_tokens"] = int(round(metrics["sequence_tokens"] * self.world_size))
        for name in ("objective/scores", "objective/kl", *(k for k in stats if k.startswith("loss"))):
            if name in metrics:
                check_finite(name, metrics[name], self.step_count)
        return metrics, self.sample_rows(step)

    # -- phase 3: the update -----------------------------------------------------------------------
    def update(self, batch) -> dict:
        """The method's update (``update_plan``): each minibatch's gradient, part by part, then one optimiser step.
        Returns the mean over minibatches of each metric of ``loss`` (parts weighted by their share) and of
        the gradient norm."""
        plan = self.update_plan()
        steps = []
        for rows in self.minibatches(len(batch), plan.minibatches, plan.epochs):
            totals: dict[str, float] = {}
            tokens = float(batch.mask[rows].sum().clamp(min=1)) if self.token_mean_metrics else 1.0
            for part, share in in_parts(rows, plan.rows_per_part or len(rows)):
                loss, metrics = self.loss(batch, part)
                check_finite("policy loss", loss, self.step_count)
                (loss * share).backward()
                del loss  # its spent graph let go before the next pass: PPO's peak RSS 3.04 -> 2.7 GiB (RESULTS.md)
                token_share = float(batch.mask[part].sum()) / tokens if self.token_mean_metrics else share
                for name, value in metrics.items():
                    weight = token_share if name in self.token_mean_metrics else share
                    totals[name] = totals.get(name, 0.0) + value * weight
            totals["grad_norm"] = self.optimizer_step()
            steps.append(totals)
        return {name: sum(s[name] for s in steps) / len(steps) for name in steps[0]}

    def minibatches(self, size: int, num_mini_batches: int, epochs: int) -> Iterator[torch.Tensor]:
        """Row indices of each minibatch: ``epochs`` passes over ``size`` rows, each in a new order drawn from
        the step's shuffle stream (the same alone, beside other runs, or after a resume)."""
        self.shuffle_generator.manual_seed(self._step_seed(self.step_count) + 1)
        mb_size = size // num_mini_batches
        for _ in range(epochs):
            order = torch.randperm(size, generator=self.shuffle_generator)
            for start in range(0, size, mb_size):
                yield order[start:start + mb_size]

    def optimizer_step(self) -> float:
        """After backward: average gradients over processes, clip, step, clear; returns the gradient norm."""
        distributed.average_gradients(self.params)  # data parallel: every replica takes the same step
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._trim_memory()
        return float(grad_norm)

    # -- samples -----------------------------------------------------------------------------------
    def sample_rows(self, step: Step) -> list[dict]:
        """The step's first ``samples_per_step`` answers, logged with their token view."""
        count = min(self.config.samples_per_step, len(step.prompts))
        return [self.sample_row(step.batch, i, step.prompts[i]) for i in range(count)]

    def sample_row(self, batch, i: int, prompt) -> dict:
        """One logged sample with its token view: each answer token with its KL (and the method's own view)."""
        scored: ScoredRollout = batch.scored
        n = int(scored.rollout.response_mask[i].sum().item())
        ids = scored.rollout.response_ids[i, :n].tolist()
        row = {"step": self.step_count, "prompt": prompt_text(prompt), "response": scored.texts[i],
               "score": scored.scores[i].item(), "kl": batch.kl[i].sum().item(),
               "tokens": [self.tokenizer.decode([t]) for t in ids], "token_kl": rounded(batch.kl[i, :n]),
               **self.token_view(batch, i, n)}
        if scored.gold is not None:
            row["gold"] = scored.gold[i]
        return row

    # -- checkpoints -------------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path) -> None:
        """Adapters (safetensors) and optimiser, schedule and β (torch, tensors only)."""
        folder = Path(folder)
        self.model.save_adapters(folder)
        torch.save({"step": self.step_count, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "beta": self.kl_ctl.value}, folder / "trainer_state.pt")

    def load_checkpoint(self, folder: Path) -> None:
        """Restore what save_checkpoint wrote (a checkpoint without β, from before it was kept for every method,
        keeps the configured one)."""
        folder = Path(folder)
        self.model.load_adapters(folder)
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.value = state.get("beta", self.kl_ctl.value)
        self.step_count = state["step"]


@dataclass
class SampledBatch:
    """What every sampling method's batch has: the scored rollout and its per-token KL; a method's batch adds
    its advantages."""

    scored: ScoredRollout  # the sampled, scored answers and their log-probs
    kl: torch.Tensor  # [B, R] per-token KL to the reference by the run's estimator

    def __len__(self) -> int:
        return len(self.scored.texts)

    @property
    def mask(self) -> torch.Tensor:
        return self.scored.mask

    @property
    def answer_tokens(self) -> int:
        """Answer tokens of the batch (what tokens_per_s counts)."""
        return int(self.scored.mask.sum().item())

    @property
    def sequence_tokens(self) -> int:
        """Prompt and answer tokens of the batch."""
        return int(self.scored.rollout.attention_mask.sum().item())


def in_parts(items, size: int) -> list[tuple[object, float]]:
    """``items`` (a sequence or a tensor's rows) in consecutive parts of at most ``size``, each with its share of
    the whole: a loss that is a mean over items, weighted by the shares and back-propagated part by part, gives
    the whole's gradient with one part's activations held at a time."""
    return [(items[start:start + size], min(size, len(items) - start) / len(items))
            for start in range(0, len(items), size)]


def rounded(x: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in x.detach().float().cpu().tolist()]
