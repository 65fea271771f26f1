"""The plumbing every on-policy method shares, so that each method is its loss and its config.

``Policy`` is a LoRA adapter on a base model whose reference is the same base with adapters off.
``PolicyTrainer`` owns what does not depend on the method: the prompts of each step, sampling from the
run's own random stream, scoring, the reference's log-probs (``rollout.ScoredRollout``), the probe answers,
the optimiser and schedule, gradient averaging under data parallelism, NaN checks, the metrics every run
logs, and checkpoints. A method subclasses it with three things: ``advantages`` (a scored rollout into
what its loss needs), ``update`` (its loss, one optimiser step per minibatch via ``optimizer_step``) and
``method_metrics``. PPO (ppo.py), GRPO (grpo.py) and RLOO (rloo.py) are such subclasses.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlhf_engine.config import PolicyConfig
from rlhf_engine.core import distributed
from rlhf_engine.core.batching import batch_indices
from rlhf_engine.core.generation import (
    NonFiniteLogitsError,
    Rollout,
    decode_responses,
    response_logits,
    sample_responses,
    token_entropy,
    token_logprobs,
)
from rlhf_engine.core.heads import new_lora_model
from rlhf_engine.core.lora_fused import fuse_lora_products
from rlhf_engine.core.memory import release_free_memory
from rlhf_engine.core.models import lora_config, set_seed
from rlhf_engine.core.normalisation import normalized
from rlhf_engine.core.rollout import (
    POLICY,
    NonFiniteError,
    ScoredRollout,
    check_finite,
    kl_penalty,
    masked_mean,
    missing_eos_penalized,
    probe_generator,
)
from rlhf_engine.data.pairs import prompt_text


def adapters_on_base(config: PolicyConfig, base, names: Sequence[str]):
    """(PEFT model, tokenizer) with fresh LoRA adapters ``names`` (seeded with config.seed, in that order): on
    ``base`` = (PEFT model, tokenizer) of another run when given (a batched sweep), else on a newly loaded base."""
    with torch.random.fork_rng(devices=[]):  # the same initial adapters alone or beside other runs
        torch.manual_seed(config.seed)
        if base is None:
            peft_model, tokenizer = new_lora_model(config.model, names[0])
            peft_model.eval()  # dropout is off anyway; eval mode also allows mixed-adapter batches
        else:
            peft_model, tokenizer = base
            peft_model.add_adapter(names[0], lora_config(config.model))
        for name in names[1:]:
            peft_model.add_adapter(name, lora_config(config.model))
    fuse_lora_products(peft_model)
    return peft_model, tokenizer


class Policy(nn.Module):
    """A run's policy: one LoRA adapter (``name``) on a base model; the reference is that base, adapters off.

    Several can live on one base model (the runs of a batched sweep), each under its own adapter name.
    A run's adapter is saved as ``policy/`` whatever its name inside the model.
    """

    def __init__(self, peft_model, name: str = POLICY):
        super().__init__()
        self.peft = peft_model
        self.policy_adapter = name

    @property
    def adapters(self) -> dict[str, str]:
        """Saved folder name -> adapter name in the model."""
        return {POLICY: self.policy_adapter}

    @classmethod
    def create(cls, config: PolicyConfig, base=None, name: str = POLICY):
        """A fresh adapter (seeded with config.seed) on ``base`` or a newly loaded base; (policy, tokenizer)."""
        peft_model, tokenizer = adapters_on_base(config, base, [name])
        model = cls(peft_model, name)
        model.use(POLICY)
        return model, tokenizer

    def use(self, role: str) -> None:
        """Make this run's policy adapter the active (and trainable) one."""
        self.peft.set_adapter(self.policy_adapter)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """This run's LoRA weights (requires_grad follows the active adapter, so select by name)."""
        return [p for n, p in self.peft.named_parameters()
                if "lora_" in n and any(f".{adapter}." in n for adapter in self.adapters.values())]

    def policy_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        self.use(POLICY)
        return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        with self.peft.disable_adapter():
            return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    def save_adapters(self, folder: Path) -> None:
        """policy/ (and any other adapter of the run) as standard PEFT adapter folders."""
        from peft.utils import get_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            (folder / saved).mkdir(parents=True, exist_ok=True)
            weights = get_peft_model_state_dict(self.peft, adapter_name=adapter)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                      str(folder / saved / "adapter_model.safetensors"))
            self.peft.peft_config[adapter].save_pretrained(str(folder / saved))

    def load_adapters(self, folder: Path) -> None:
        """Load the adapters written by save_adapters."""
        from peft.utils import set_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            weights = load_file(str(folder / saved / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=adapter)
        self.use(POLICY)


class PolicyTrainer:
    """One run of an on-policy method; each ``step()`` returns (metrics, samples). No file I/O but checkpoints.

    Subclasses set ``model_class`` and implement ``advantages``, ``update`` and ``method_metrics``.
    """

    model_class: type[Policy] = Policy
    method_name = ""  # shown in logs ("PPO", "GRPO", ...)

    def __init__(self, config: PolicyConfig, reward_model, prompts: Sequence,
                 gold_scorer: Callable[[str], float] | None = None, base=None, name: str = POLICY):
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
        self.reuses_rollout_pass = self.can_reuse_rollout_pass()
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

    # Whether the rollout's log-probs and entropy are the sampler's own (read off its logits as it decodes)
    # instead of a policy pass over the sampled answers: a method with no value model (GRPO, RLOO) needs
    # no pass of its own before the update, whose passes then go over a few answers at a time.
    reads_sampler_logprobs = False

    def can_reuse_rollout_pass(self) -> bool:
        """Whether the rollout's policy pass can keep its graph to serve as the update's first pass (it is the
        same pass when the first minibatch is the whole batch and the weights are untouched)."""
        return False

    @property
    def beta(self) -> float:
        """The KL coefficient now."""
        return self.config.kl_coef

    def settings(self) -> str:
        """The run's method and main settings, one line for its log."""
        cfg = self.config
        return f"{self.method_name}: beta={self.beta:g}, KL estimator {cfg.kl_estimator}, {len(self.prompts)} prompts"

    def advantages(self, scored: ScoredRollout):
        raise NotImplementedError

    def update(self, batch) -> dict:
        raise NotImplementedError

    def method_metrics(self, batch) -> dict:
        """The method's own rollout metrics (TRL's names where TRL logs them)."""
        return {}

    def token_view(self, batch, i: int, n: int) -> dict:
        """Per-token lists of answer i's first n tokens shown beside its tokens (beyond its KL)."""
        return {}

    def extra_state(self) -> dict:
        """What the method keeps in a checkpoint beyond adapters, optimiser and schedule."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def after_update(self, rollout_metrics: dict) -> None:
        """Called once a step's update is done (PPO's adaptive β reads the step's KL here)."""

    # -- seeds and memory --------------------------------------------------------------------------
    def _step_seed(self, step: int) -> int:
        return ((self.config.seed * 1_000_003 + step) * 1_009 + self.rank) * 2 % 2**62

    def step_generator(self) -> torch.Generator:
        """The sampling stream of the coming step (seeded from the run's seed, the step and the process)."""
        return self.sampling_generator.manual_seed(self._step_seed(self.step_count + 1))

    def _trim_memory(self) -> None:
        if self.config.trim_memory:
            release_free_memory()

    # -- rollout -----------------------------------------------------------------------------------
    def next_prompts(self) -> list:
        """This process's prompts of the coming step (seeded shuffle per epoch; same on resume), each repeated
        ``answers_per_prompt`` times in a row (a group).

        With several data-parallel processes, each takes every world_size-th prompt of the step's batch, so
        that a group's answers are all on one process.
        """
        cfg = self.config
        idx = batch_indices(len(self.prompts), self.prompts_per_step(cfg), self.step_count + 1, cfg.seed)
        mine = [self.prompts[i] for i in idx][self.rank::self.world_size]
        return [prompt for prompt in mine for _ in range(self.answers_per_prompt(cfg))]

    @torch.no_grad()
    def sample(self, prompts: Sequence) -> Rollout:
        """This step's responses to prompts, from the policy and the step's random stream."""
        cfg = self.config
        self.model.use(POLICY)
        try:
            return sample_responses(self.model.peft, self.tokenizer, prompts, cfg.response_length, cfg.temperature,
                                    cfg.model.chat_template, generators=self.sampling_generator)
        except NonFiniteLogitsError:
            raise NonFiniteError(f"policy logits are NaN or infinite at step {self.step_count} (while sampling); "
                                 "the run was stopped (try a lower learning rate)") from None

    def policy_pass(self, ids, mask, length: int):
        """(logits / T, values or None) of the policy over the answers; PPO's value head adds its values."""
        return self.model.policy_logits(ids, mask, length, self.config.temperature), None

    def rollout_values(self, ids, mask, length: int):
        """Values of a method with a value model whose policy pass gave none (PPO's separate adapter)."""
        return None

    @torch.no_grad()
    def rollout(self, prompts: Sequence, sampled: tuple[Rollout, float] | None = None) -> ScoredRollout:
        """Sample (unless ``sampled`` = (rollout, seconds) was sampled for it already, beside other runs),
        score, and read log-probs, reference log-probs (and values, for PPO) for one batch."""
        times = {}
        started = time.perf_counter()
        if sampled is None:
            roll = self.sample(prompts)
            times["generate"] = time.perf_counter() - started
        else:
            roll, times["generate"] = sampled
        self._trim_memory()
        started = time.perf_counter()
        texts = decode_responses(self.tokenizer, roll)
        scores, raw_scores = self.scores(prompts, texts, roll.has_eos)
        times["reward"] = time.perf_counter() - started
        started = time.perf_counter()
        ids, mask, length = roll.input_ids, roll.attention_mask, roll.response_ids.shape[1]
        ref_logprobs = self.token_logprobs_of(roll, reference=True)
        self._trim_memory()
        first_pass, values = None, None
        if self.reads_sampler_logprobs and roll.logprobs is not None:  # no policy pass: the sampler's own
            logprobs, entropy = roll.logprobs, roll.entropy
        else:
            # The policy's pass last: when it is kept for the first epoch, its graph is held until the update.
            with torch.set_grad_enabled(self.reuses_rollout_pass):
                logits, values = self.policy_pass(ids, mask, length)
                logprobs = token_logprobs(logits, roll.response_ids)
            if self.reuses_rollout_pass:  # kept with its graph: the first epoch's pass, not recomputed
                first_pass = (logprobs, values)
                logprobs = logprobs.detach()
                values = values.detach() if values is not None else None
            entropy = torch.stack([token_entropy(row) for row in logits.detach()])  # a row at a time: less memory
            del logits
            if values is None:
                values = self.rollout_values(ids, mask, length)
        times["forward"] = time.perf_counter() - started
        scores, raw_scores = scores.to(logprobs.device), raw_scores.to(logprobs.device)
        gold = [self.gold_scorer(text) for text in texts] if self.gold_scorer else None
        return ScoredRollout(roll, texts, logprobs, ref_logprobs, entropy, scores.float(), raw_scores.float(),
                             times, values, first_pass, gold)

    def scores(self, prompts: Sequence, texts: Sequence[str], has_eos: torch.Tensor):
        """(scores the method optimises, raw RM scores) of responses: normalised (gain, bias) unless turned off,
        minus the missing-EOS penalty where it is set and the response has no EOS."""
        cfg = self.config
        raw = self.reward_model.score(list(prompts), list(texts), normalized=False).float()
        scores = normalized(raw, self.reward_model) if cfg.normalize_reward else raw
        return missing_eos_penalized(scores, has_eos.cpu(), cfg.missing_eos_penalty), raw

    @torch.no_grad()
    def probe_answers(self, prompts: Sequence, reference: bool = False, sampled: Rollout | None = None,
                      sample: int = 0) -> list[dict]:
        """The policy's (or the reference's) answers to the held-out probe prompts, each scored: RM score,
        gold score (when logged) and KL to the reference (nats, the run's estimator, summed over the answer).

        Sampled with the fixed PROBE_SEED, so the reference and the policy at every step answer with the
        same random numbers: the difference between their answers is what training changed (common random
        numbers make the paired difference far less noisy than two independent draws). ``sample`` i > 0:
        a further answer of the reference, seeded PROBE_SEED + i (``reference_probe_samples``). ``sampled``:
        the answers sampled already, beside other runs'.
        """
        cfg = self.config
        if sampled is None:
            self.model.use(POLICY)
            with self.model.peft.disable_adapter() if reference else contextlib.nullcontext():
                sampled = sample_responses(self.model.peft, self.tokenizer, prompts, cfg.response_length,
                                           cfg.temperature, cfg.model.chat_template,
                                           generators=probe_generator(sample))
        texts = decode_responses(self.tokenizer, sampled)
        scores, _ = self.scores(prompts, texts, sampled.has_eos)
        if reference:
            kl = torch.zeros(len(texts))
        else:
            kl = (kl_penalty(self.token_logprobs_of(sampled), self.token_logprobs_of(sampled, reference=True),
                             cfg.kl_estimator) * sampled.response_mask).sum(1)
        rows = [{"step": self.step_count, "policy": "reference" if reference else "policy",
                 "prompt": prompt_text(prompt), "sample": sample, "response": text, "score": float(score),
                 "kl": float(k), "eos": bool(eos)}
                for prompt, text, score, k, eos in zip(prompts, texts, scores.tolist(), kl.tolist(),
                                                        sampled.has_eos.tolist())]
        if self.gold_scorer is not None:
            for row in rows:
                row["gold"] = self.gold_scorer(row["response"])
        return rows

    # -- update plumbing ---------------------------------------------------------------------------
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

    def token_logprobs_of(self, roll: Rollout, reference: bool = False, temperature: float | None = None):
        """[B, R] log-probs of a rollout's answer tokens under the policy (with their graph where grad is on) or
        the reference (adapters off), from logits / T (the run's T unless given)."""
        args = (roll.input_ids, roll.attention_mask, roll.response_ids.shape[1],
                self.config.temperature if temperature is None else temperature)
        logits = self.model.reference_logits(*args) if reference else self.model.policy_logits(*args)
        return token_logprobs(logits, roll.response_ids)

    def new_logprobs(self, batch: ScoredRollout, rows: torch.Tensor) -> torch.Tensor:
        """The policy's log-probs [b, R] of the rollout's answers ``rows``, with their graph: the rollout's own
        pass the first time when it was kept (``reuses_rollout_pass``), else a new one."""
        if batch.first_pass is not None:
            logprobs = batch.first_pass[0][rows]
            batch.first_pass = None
            return logprobs
        roll = batch.rollout
        logits = self.model.policy_logits(roll.input_ids[rows], roll.attention_mask[rows],
                                          roll.response_ids.shape[1], self.config.temperature)
        return token_logprobs(logits, roll.response_ids[rows])

    # -- one step ----------------------------------------------------------------------------------
    def step(self, on_rollout: Callable[[dict], None] | None = None,
             sampled: tuple[Rollout, float] | None = None) -> tuple[dict, list[dict]]:
        """One iteration: rollout, advantages, update. Returns (metrics, samples).

        ``on_rollout`` receives the metrics known once the rollout is scored (score, KL, entropy, …),
        before the update starts: a live view can show them while the update runs. ``sampled`` =
        (rollout, seconds): this step's responses to ``next_prompts()``, sampled from ``step_generator()``
        beside other runs (a batched sweep); by default the step samples them itself.
        """
        cfg = self.config
        started = time.perf_counter()
        prompts = self.next_prompts()
        if sampled is None:
            self.step_generator()
        self.step_count += 1
        scored = self.rollout(prompts, sampled)
        check_finite("reward-model score", scored.scores, self.step_count)
        check_finite("log-probs", scored.logprobs, self.step_count)
        batch = self.advantages(scored)
        rollout_metrics = {
            "step": self.step_count,
            **scored.metrics(),
            "objective/kl": batch.kl.sum(1).mean().item(),
            **self.method_metrics(batch),
            "beta": self.beta,
            "time/rollout_s": time.perf_counter() - started,
            **{f"time/{phase}_s": seconds for phase, seconds in scored.times.items()},
        }
        if self.world_size > 1:  # the whole batch's means (equal shares per process)
            rollout_metrics = {**distributed.mean_over_processes(rollout_metrics), "step": self.step_count}
        if on_rollout is not None:
            on_rollout(dict(rollout_metrics))
        lr = self.scheduler.get_last_lr()[0]
        update_started = time.perf_counter()
        stats = self.update(batch)
        self.model.use(POLICY)
        update_s = time.perf_counter() - update_started
        self.scheduler.step()
        self.after_update(rollout_metrics)
        elapsed = time.perf_counter() - started
        tokens = scored.mask.sum().item()
        metrics = {**rollout_metrics, **stats, "lr": lr, "time/update_s": update_s, "time/step_s": elapsed,
                   "tokens_per_s": tokens / elapsed,
                   "sequence_tokens": int(scored.rollout.attention_mask.sum().item())}
        if self.world_size > 1:
            local = {k: v for k, v in metrics.items() if k not in rollout_metrics}
            metrics.update(distributed.mean_over_processes(local))
            metrics["tokens_per_s"] *= self.world_size  # each process's tokens per second, summed
            metrics["sequence_tokens"] = int(round(metrics["sequence_tokens"] * self.world_size))
        for name in ("objective/scores", "objective/kl", *(k for k in stats if k.startswith("loss"))):
            if not math.isfinite(metrics[name]):
                raise NonFiniteError(f"{name} is NaN or infinite at step {self.step_count}; the run was stopped")
        samples = [self.sample_row(batch, i, prompts[i]) for i in range(min(cfg.samples_per_step, len(prompts)))]
        return metrics, samples

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
        """Adapters (safetensors) and optimiser/schedule/RNG-free state (torch, tensors only)."""
        folder = Path(folder)
        self.model.save_adapters(folder)
        torch.save({"step": self.step_count, "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), **self.extra_state()}, folder / "trainer_state.pt")

    def load_checkpoint(self, folder: Path) -> None:
        """Restore what save_checkpoint wrote."""
        folder = Path(folder)
        self.model.load_adapters(folder)
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_extra_state(state)
        self.step_count = state["step"]


def in_parts(items, size: int) -> list[tuple[object, float]]:
    """``items`` (a sequence or a tensor's rows) in consecutive parts of at most ``size``, each with its share of
    the whole: a loss that is a mean over items, weighted by the shares and back-propagated part by part, gives
    the whole's gradient with one part's activations held at a time (GRPO's and RLOO's answers, DPO's pairs)."""
    return [(items[start:start + size], min(size, len(items) - start) / len(items))
            for start in range(0, len(items), size)]


def rounded(x: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in x.detach().float().cpu().tolist()]


@dataclass
class GroupBatch:
    """A scored rollout of groups (``group_size`` answers to each prompt, in a row) with each answer's
    reward and advantage [B]: what the group methods' losses need."""

    scored: ScoredRollout  # the sampled, scored answers and their log-probs
    kl: torch.Tensor  # [B, R] per-token KL to the reference by the run's estimator
    rewards: torch.Tensor  # [B] what the group compares: the score (minus beta * KL where KL is in the reward)
    advantages: torch.Tensor  # [B] each answer's advantage, the same on all its tokens

    @property
    def mask(self) -> torch.Tensor:
        return self.scored.mask


class GroupTrainer(PolicyTrainer):
    """A method that samples ``group_size`` answers per prompt and judges each against its group (GRPO, RLOO):
    no value model, one advantage per answer. It logs its rollout with TRL's GRPO/RLOO metric names."""

    @staticmethod
    def answers_per_prompt(config) -> int:
        return config.group_size

    reads_sampler_logprobs = True  # no value model: the update's passes are the only policy passes

    def passes(self, rows: torch.Tensor) -> list[tuple[torch.Tensor, float]]:
        """A minibatch's rows in parts of ``answers_per_pass`` answers (``in_parts``)."""
        return in_parts(rows, self.config.answers_per_pass)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """[B] -> [prompts, group_size] (a group's answers are consecutive rows)."""
        return x.view(-1, self.config.group_size)

    def method_metrics(self, batch: GroupBatch) -> dict:
        scored, mask = batch.scored, batch.mask
        scores = self.grouped(scored.scores)
        return {"reward": scored.scores.mean().item(),
                "reward_std": scores.std(dim=1).mean().item(),
                "frac_reward_zero_std": frac_reward_zero_std(scores),
                "entropy": masked_mean(scored.entropy, mask).item(),
                "completions/mean_length": scored.rollout.response_lengths.float().mean().item(),
                "completions/clipped_ratio": 1.0 - scored.rollout.has_eos.float().mean().item()}

    def token_view(self, batch: GroupBatch, i: int, n: int) -> dict:
        """The answer's reward and advantage (one number each: a group method has no per-token values)."""
        return {"reward": round(batch.rewards[i].item(), 5), "advantage": round(batch.advantages[i].item(), 5)}


def frac_reward_zero_std(scores: torch.Tensor) -> float:
    """Share of prompts whose G answers all scored the same ([P, G]): such groups give every answer a zero
    advantage and teach nothing (TRL's ``frac_reward_zero_std``)."""
    std = scores.std(dim=1)
    return float(torch.isclose(std, torch.zeros_like(std)).float().mean())
