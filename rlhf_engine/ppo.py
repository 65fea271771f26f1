"""PPO with a per-token KL penalty to the frozen reference policy (Ziegler et al. 2019; Ouyang et al. 2022).

One copy of the base weights serves three roles: the policy (LoRA adapter "policy"), the reference
(the same base with adapters disabled) and the value function (LoRA adapter "value" + a linear head).
Each iteration has three phases you can point to:

1. rollout (no grad): sample responses at temperature T, score them with the reward model, read
   policy/reference log-probs (logits / T) and values;
2. advantages: per-token reward = -beta * KL_t, plus the normalised RM score on the last token;
   GAE backwards over the response (gamma, lambda), advantages whitened;
3. update: ``ppo_epochs`` passes over minibatches with the clipped policy loss and clipped value loss.

The pure functions at the top are the algorithm; ``PPOTrainer`` wires them to the models.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from . import distributed
from .batching import batch_indices
from .config import PPOConfig
from .data import prompt_text
from .generation import (
    NonFiniteLogitsError,
    Rollout,
    decode_responses,
    last_hidden_state,
    response_logits,
    sample_responses,
    token_entropy,
    token_logprobs,
)
from .heads import load_head, new_head, new_lora_model, save_head
from .lora_fused import fuse_lora_products
from .memory import release_free_memory
from .models import lora_config, set_seed
from .normalisation import normalized

POLICY, VALUE = "policy", "value"
VALUE_HEAD_FILE = "value_head.safetensors"
PROBE_SEED = 1234  # sampling seed of every probe answer: the policy's differ from the reference's only by training
PHASES = ("generate", "forward", "reward", "update")  # timed parts of an iteration, logged as time/<phase>_s


def probe_generator(sample: int = 0) -> torch.Generator:
    """The random stream of probe answer ``sample`` (PROBE_SEED + sample): answer 0 of the reference and every
    answer of the policy share PROBE_SEED; the reference's further answers steady the baseline."""
    return torch.Generator().manual_seed(PROBE_SEED + sample)


# ----------------------------------------------------------------------------------------------
# The algorithm: pure tensor functions, each unit-tested against hand-computed numbers.
# ----------------------------------------------------------------------------------------------

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over positions where mask is 1."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
           all_sum: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """(x - mean) / std over the mask; with shift_mean=False the mean is added back (rewards keep their sign).

    ``all_sum`` (a sum over data-parallel processes) makes mean and unbiased variance those of the whole batch.
    """
    total = all_sum or (lambda t: t)
    n = total(mask.sum())
    mean = total((x * mask).sum()) / n.clamp(min=1)
    var = total((((x - mean) ** 2) * mask).sum()) / (n - 1).clamp(min=1)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens.

    k1 = log pi(y) - log pi_ref(y)  (unbiased, can be negative per token)
    k2 = 0.5 * (log pi(y) - log pi_ref(y))^2  (biased, low variance, never negative)
    k3 = (r - 1) - log r with r = pi_ref(y) / pi(y)  (unbiased, never negative)
    (Schulman 2020, "Approximating KL divergence".)
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}")


def kl_estimates(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """KL(policy || reference) per answer (nats, summed over its tokens, mean over answers) by each of k1,
    k2 and k3, to be logged side by side."""
    return {name: float((kl_penalty(logprobs, ref_logprobs, name) * mask).sum(1).mean()) for name in ("k1", "k2", "k3")}


def per_token_rewards(kl: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, beta: float):
    """Reward per token: -beta * KL_t on every response token, plus the RM score on the last one.

    Returns (rewards, non_score_rewards), both [B, R] and zero past the end of each response.
    """
    non_score = -beta * kl * mask
    last = (mask.sum(1) - 1).clamp(min=0).long()
    rewards = non_score.clone()
    rewards[torch.arange(len(scores), device=scores.device), last] += scores
    return rewards, non_score


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation, backwards over the response; returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  returns = A + V.
    Positions past the end of a response have zero reward and value, so they add nothing.
    """
    values = values * mask
    rewards = rewards * mask
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    returns = advantages + values
    return advantages * mask, returns * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, cliprange: float):
    """Clipped surrogate objective (Schulman et al. 2017), as a loss; also clip fraction and approx KL."""
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean((ratio - 1) - log_ratio, mask)
    return loss, clipfrac, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float):
    """Clipped value loss: 0.5 * max((V - R)^2, (V_clipped - R)^2), V clipped around the rollout values."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


class FixedKLController:
    """beta stays as set."""

    def __init__(self, beta: float):
        self.value = beta

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


def missing_eos_penalized(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Scores with ``penalty`` subtracted where the response has no EOS (cut at the length cap), as TRL's
    missing_eos_penalty; unchanged when the penalty is None."""
    if penalty is None:
        return scores
    return torch.where(has_eos, scores, scores - penalty)


class AdaptiveKLController:
    """Ziegler et al. 2019: e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n_steps / horizon)."""

    def __init__(self, beta: float, target: float, horizon: int):
        self.value = beta
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


class NonFiniteError(FloatingPointError):
    """NaN or inf in a loss, reward or log-prob: the run stops with this message."""


def check_finite(name: str, x: torch.Tensor, step: int) -> None:
    """Stop the run with a clear message if x holds NaN or inf.

    Under data parallelism it is decided on every process at once: one process stopping alone would leave
    the others waiting for it forever.
    """
    if distributed.any_process(not bool(torch.isfinite(x).all())):
        raise NonFiniteError(f"{name} is NaN or infinite at step {step}; the run was stopped "
                             "(try a lower learning rate or a smaller beta)")


def _rounded(x: torch.Tensor) -> list[float]:
    return [round(v, 5) for v in x.detach().float().cpu().tolist()]


# ----------------------------------------------------------------------------------------------
# The models: policy + value adapters on one base; reference = adapters disabled.
# ----------------------------------------------------------------------------------------------

def value_adapter_name(policy_adapter: str) -> str:
    """The separate value adapter's name beside a run's policy adapter ("value" beside "policy")."""
    return VALUE if policy_adapter == POLICY else f"{policy_adapter}-{VALUE}"


class PolicyAndValue(nn.Module):
    """One base model: the policy (a LoRA adapter), the reference (adapters disabled) and the value.

    ``shared``: the value head reads the policy's own last hidden state, as in Ziegler et al.'s code
    (lm-human-preferences) and TRL's original value-head model, so one pass gives log-probs and values
    and the value loss also shapes the policy adapter (weighted by vf_coef). Otherwise the value function
    has its own LoRA adapter on the same base: no shared gradients, but two passes per update.

    Several of them can live on one base model (the runs of a batched sweep): each then has adapters of
    its own names (``name``, and ``name``-value), a value head of its own, and the base weights are shared.
    A run's adapters are saved as ``policy/`` (and ``value/``) whatever their names inside the model.
    """

    def __init__(self, peft_model, value_head: nn.Linear, shared: bool, name: str = POLICY):
        super().__init__()
        self.peft = peft_model
        self.value_head = value_head
        self.shared = shared
        self.policy_adapter = name
        self.value_adapter = value_adapter_name(name)

    @property
    def adapters(self) -> dict[str, str]:
        """Saved folder name -> adapter name in the model."""
        names = {POLICY: self.policy_adapter}
        if not self.shared:
            names[VALUE] = self.value_adapter
        return names

    @classmethod
    def create(cls, config: PPOConfig, base=None, name: str = POLICY):
        """Fresh adapters (seeded with config.seed) and a zero value head; on ``base`` = (PEFT model,
        tokenizer) of another run's base when given (a batched sweep), else on a newly loaded base."""
        with torch.random.fork_rng(devices=[]):  # the same initial adapter alone or beside other runs
            torch.manual_seed(config.seed)
            if base is None:
                peft_model, tokenizer = new_lora_model(config.model, name)
                peft_model.eval()  # dropout is off anyway; eval mode also allows mixed-adapter batches
            else:
                peft_model, tokenizer = base
                peft_model.add_adapter(name, lora_config(config.model))
            shared = config.value_model == "shared"
            if not shared:
                peft_model.add_adapter(value_adapter_name(name), lora_config(config.model))
        fuse_lora_products(peft_model)
        # Zero-initialised, as in Ziegler et al.'s code (lm-human-preferences: value head scale 0): the
        # first advantages are then the discounted scores, not the noise of a random head.
        model = cls(peft_model, new_head(peft_model, random_init=False), shared, name)
        model.use(POLICY)
        return model, tokenizer

    def use(self, role: str) -> None:
        """Make this run's policy or value adapter the active (and trainable) one."""
        self.peft.set_adapter(self.policy_adapter if role == POLICY else self.value_adapter)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapters and the value head (requires_grad follows the active adapter, so select by name)."""
        params = [p for n, p in self.peft.named_parameters()
                  if "lora_" in n and any(f".{adapter}." in n for adapter in self.adapters.values())]
        return params + list(self.value_head.parameters())

    def policy_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        self.use(POLICY)
        return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    def policy_logits_and_values(self, input_ids, attention_mask, response_length: int, temperature: float):
        """(logits / T [B, R, V], values [B, R]) in one pass; values only with a shared value head, else None."""
        if not self.shared:
            return self.policy_logits(input_ids, attention_mask, response_length, temperature), None
        self.use(POLICY)
        logits, hidden = response_logits(self.peft, input_ids, attention_mask, response_length, temperature,
                                         with_hidden=True)
        return logits, self._head(hidden)

    @torch.no_grad()
    def reference_logits(self, input_ids, attention_mask, response_length: int, temperature: float):
        with self.peft.disable_adapter():
            return response_logits(self.peft, input_ids, attention_mask, response_length, temperature)

    def values(self, input_ids, attention_mask, response_length: int):
        """V(s_t) for each response token t: the value head on the hidden state that predicts token t."""
        self.use(POLICY if self.shared else VALUE)
        hidden = last_hidden_state(self.peft, input_ids, attention_mask)
        return self._head(hidden[:, -response_length - 1:-1])

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def save_adapters(self, folder: Path) -> None:
        """policy/ (and value/) as standard PEFT adapter folders; the value head (VALUE_HEAD_FILE)."""
        from peft.utils import get_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            (folder / saved).mkdir(parents=True, exist_ok=True)
            weights = get_peft_model_state_dict(self.peft, adapter_name=adapter)
            save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                      str(folder / saved / "adapter_model.safetensors"))
            self.peft.peft_config[adapter].save_pretrained(str(folder / saved))
        save_head(self.value_head, folder / VALUE_HEAD_FILE)

    def load_adapters(self, folder: Path) -> None:
        """Load adapters and value head written by save_adapters."""
        from peft.utils import set_peft_model_state_dict

        folder = Path(folder)
        for saved, adapter in self.adapters.items():
            weights = load_file(str(folder / saved / "adapter_model.safetensors"))
            set_peft_model_state_dict(self.peft, weights, adapter_name=adapter)
        load_head(folder / VALUE_HEAD_FILE, self.value_head)
        self.use(POLICY)


# ----------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------

class PPOTrainer:
    """Runs PPO iterations; each ``step()`` returns (metrics, samples). Does no file I/O except checkpoints."""

    def __init__(self, config: PPOConfig, reward_model, prompts: Sequence,
                 gold_scorer: Callable[[str], float] | None = None, base=None, name: str = POLICY):
        """``gold_scorer`` (text -> score), when given, is a true reward logged beside the RM's (demo data).

        ``base`` = (PEFT model, tokenizer) of another trainer puts this run's adapters and value head on
        that model's base weights under the adapter name ``name`` (the runs of a batched sweep).
        """
        if not prompts:
            raise ValueError("PPO needs at least one prompt")
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} must be divisible by the {self.world_size} processes")
        self.config = config
        self.reward_model = reward_model
        self.prompts = list(prompts)
        self.gold_scorer = gold_scorer
        set_seed(config.seed)
        self.model, self.tokenizer = PolicyAndValue.create(config, base, name)
        self.params = self.model.trainable_parameters()
        if hasattr(reward_model, "share_base") and reward_model.same_base(config.model):
            reward_model.share_base(self.model.peft)  # one copy of the base weights for all four roles
            self.model.use(POLICY)
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, eps=1e-5)
        total = config.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            (lambda s: max(0.0, 1.0 - s / total)) if config.lr_schedule == "linear" else (lambda s: 1.0),
        )
        # With a shared value head and one minibatch, the first PPO epoch's forward pass would repeat the
        # rollout's exactly (same weights, same batch): the rollout keeps its graph and the update uses it.
        self.reuses_rollout_pass = config.value_model == "shared" and config.num_mini_batches == 1
        self.kl_ctl = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                       if config.adaptive_kl else FixedKLController(config.kl_coef))
        self.step_count = 0
        # This run's own random streams, for sampling and for the minibatch order, seeded anew each step from
        # (seed, step, process): a step draws the same numbers alone, beside other runs, or after a resume.
        self.sampling_generator, self.shuffle_generator = torch.Generator(), torch.Generator()

    def _step_seed(self, step: int) -> int:
        return ((self.config.seed * 1_000_003 + step) * 1_009 + self.rank) * 2 % 2**62

    def step_generator(self) -> torch.Generator:
        """The sampling stream of the coming step (seeded from the run's seed, the step and the process)."""
        return self.sampling_generator.manual_seed(self._step_seed(self.step_count + 1))

    def _trim_memory(self) -> None:
        if self.config.trim_memory:
            release_free_memory()

    # -- phase 1 ------------------------------------------------------------------------------
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

    @torch.no_grad()
    def rollout(self, prompts: Sequence, sampled: tuple[Rollout, float] | None = None) -> dict:
        """Sample (unless ``sampled`` = (rollout, seconds) was sampled for it already, beside other runs),
        score, and read log-probs, reference log-probs and values for one batch."""
        cfg = self.config
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
        ref_logprobs = token_logprobs(self.model.reference_logits(ids, mask, length, cfg.temperature),
                                      roll.response_ids)
        self._trim_memory()
        # The policy's pass last: when it is kept for the first epoch, its graph is held from here to the update.
        first_pass = None
        with torch.set_grad_enabled(self.reuses_rollout_pass):
            logits, values = self.model.policy_logits_and_values(ids, mask, length, cfg.temperature)
            logprobs = token_logprobs(logits, roll.response_ids)
        if self.reuses_rollout_pass:  # kept with its graph: the first epoch's pass, not recomputed
            first_pass = (logprobs, values)
            logprobs, values = logprobs.detach(), values.detach()
        entropy = torch.stack([token_entropy(row) for row in logits.detach()])  # a row at a time: less memory
        del logits
        if values is None:
            values = self.model.values(ids, mask, length)
        times["forward"] = time.perf_counter() - started
        scores, raw_scores = scores.to(logprobs.device), raw_scores.to(logprobs.device)
        return {"rollout": roll, "texts": texts, "logprobs": logprobs, "ref_logprobs": ref_logprobs,
                "entropy": entropy, "values": values, "scores": scores.float(), "raw_scores": raw_scores.float(),
                "times": times, "first_pass": first_pass}

    def scores(self, prompts: Sequence, texts: Sequence[str], has_eos: torch.Tensor):
        """(scores PPO optimises, raw RM scores) of responses: normalised (gain, bias) unless turned off, minus
        the missing-EOS penalty where it is set and the response has no EOS."""
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
            ids, mask, length = sampled.input_ids, sampled.attention_mask, sampled.response_ids.shape[1]
            logprobs = token_logprobs(self.model.policy_logits(ids, mask, length, cfg.temperature),
                                      sampled.response_ids)
            ref_logprobs = token_logprobs(self.model.reference_logits(ids, mask, length, cfg.temperature),
                                          sampled.response_ids)
            kl = (kl_penalty(logprobs, ref_logprobs, cfg.kl_estimator) * sampled.response_mask).sum(1)
        rows = [{"step": self.step_count, "policy": "reference" if reference else "policy",
                 "prompt": prompt_text(prompt), "sample": sample, "response": text, "score": float(score),
                 "kl": float(k), "eos": bool(eos)}
                for prompt, text, score, k, eos in zip(prompts, texts, scores.tolist(), kl.tolist(),
                                                        sampled.has_eos.tolist())]
        if self.gold_scorer is not None:
            for row in rows:
                row["gold"] = self.gold_scorer(row["response"])
        return rows

    # -- phase 2 ------------------------------------------------------------------------------
    def advantages(self, batch: dict) -> dict:
        """Per-token rewards with the KL penalty, then GAE and whitening."""
        cfg = self.config
        mask = batch["rollout"].response_mask.float()
        kl = kl_penalty(batch["logprobs"], batch["ref_logprobs"], cfg.kl_estimator) * mask
        rewards, non_score = per_token_rewards(kl, batch["scores"], mask, self.kl_ctl.value)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False, all_sum=distributed.all_sum)
        advantages, returns = gae(rewards, batch["values"], mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask, all_sum=distributed.all_sum)
        return {**batch, "mask": mask, "kl": kl, "rewards": rewards, "non_score": non_score,
                "advantages": advantages, "returns": returns}

    # -- phase 3 ------------------------------------------------------------------------------
    def update(self, batch: dict) -> dict:
        """ppo_epochs x minibatches of the clipped policy and value losses."""
        cfg = self.config
        roll: Rollout = batch["rollout"]
        ids, attn = roll.input_ids, roll.attention_mask
        length = roll.response_ids.shape[1]
        size = ids.shape[0]
        mb_size = size // cfg.num_mini_batches
        stats = {"pg": [], "vf": [], "clipfrac": [], "vf_clipfrac": [], "approxkl": [], "grad_norm": []}
        first_pass = batch.get("first_pass")
        self.shuffle_generator.manual_seed(self._step_seed(self.step_count) + 1)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(size, generator=self.shuffle_generator).to(ids.device)
            for start in range(0, size, mb_size):
                mb = order[start:start + mb_size]
                mask = batch["mask"][mb]
                # loss = policy loss + vf_coef * value loss; with a separate value adapter its two terms are
                # back-propagated one after the other (the same gradient, half the activations held at once).
                if first_pass is not None:  # epoch 1, whole batch, weights untouched: the rollout's own pass
                    new_logprobs, new_values = (x[mb] for x in first_pass)
                    first_pass = batch["first_pass"] = None
                else:
                    logits, new_values = self.model.policy_logits_and_values(ids[mb], attn[mb], length,
                                                                             cfg.temperature)
                    new_logprobs = token_logprobs(logits, roll.response_ids[mb])
                    del logits
                pg_loss, clipfrac, approx_kl = policy_loss(new_logprobs, batch["logprobs"][mb],
                                                           batch["advantages"][mb], mask, cfg.cliprange)
                check_finite("policy loss", pg_loss, self.step_count)
                if new_values is None:
                    pg_loss.backward()
                    new_values = self.model.values(ids[mb], attn[mb], length)
                vf_loss, vf_clipfrac = value_loss(new_values, batch["values"][mb], batch["returns"][mb], mask,
                                                  cfg.cliprange_value)
                check_finite("value loss", vf_loss, self.step_count)
                if self.model.shared:
                    (pg_loss + cfg.vf_coef * vf_loss).backward()
                else:
                    (cfg.vf_coef * vf_loss).backward()
                distributed.average_gradients(self.params)  # data parallel: every replica takes the same step
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self._trim_memory()
                for key, value in (("pg", pg_loss), ("vf", vf_loss), ("clipfrac", clipfrac),
                                   ("vf_clipfrac", vf_clipfrac), ("approxkl", approx_kl), ("grad_norm", grad_norm)):
                    stats[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
        self.model.use(POLICY)
        return {key: sum(v) / len(v) for key, v in stats.items()}

    def next_prompts(self) -> list:
        """This process's prompts of the coming step (seeded shuffle per epoch; same on resume).

        With several data-parallel processes, each takes every world_size-th prompt of the step's batch.
        """
        idx = batch_indices(len(self.prompts), self.config.batch_size, self.step_count + 1, self.config.seed)
        return [self.prompts[i] for i in idx][self.rank::self.world_size]

    def step(self, on_rollout: Callable[[dict], None] | None = None,
             sampled: tuple[Rollout, float] | None = None) -> tuple[dict, list[dict]]:
        """One PPO iteration: rollout, advantages, update. Returns (metrics, samples).

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
        batch = self.rollout(prompts, sampled)
        check_finite("reward-model score", batch["scores"], self.step_count)
        check_finite("log-probs", batch["logprobs"], self.step_count)
        batch = self.advantages(batch)
        beta, lr = self.kl_ctl.value, self.scheduler.get_last_lr()[0]
        mask = batch["mask"]
        kl_per_response = batch["kl"].sum(1)
        non_score = batch["non_score"].sum(1)
        rollout_metrics = {
            "step": self.step_count,
            "objective/scores": batch["scores"].mean().item(),
            "objective/raw_scores": batch["raw_scores"].mean().item(),
            "objective/kl": kl_per_response.mean().item(),
            **{f"kl/{name}": value for name, value in kl_estimates(batch["logprobs"], batch["ref_logprobs"],
                                                                   mask).items()},
            "objective/non_score_reward": non_score.mean().item(),
            "objective/rlhf_reward": (batch["scores"] + non_score).mean().item(),
            "objective/entropy": (batch["entropy"] * mask).sum(1).mean().item(),
            "beta": beta,
            "response_length": batch["rollout"].response_lengths.float().mean().item(),
            "eos_fraction": batch["rollout"].has_eos.float().mean().item(),
            "time/rollout_s": time.perf_counter() - started,
            **{f"time/{phase}_s": seconds for phase, seconds in batch["times"].items()},
        }
        gold = [self.gold_scorer(text) for text in batch["texts"]] if self.gold_scorer else None
        if gold is not None:
            rollout_metrics["gold/score"] = sum(gold) / len(gold)
        if self.world_size > 1:  # the whole batch's means (equal shares per process)
            rollout_metrics = {**distributed.mean_over_processes(rollout_metrics), "step": self.step_count}
        if on_rollout is not None:
            on_rollout(dict(rollout_metrics))
        update_started = time.perf_counter()
        stats = self.update(batch)
        update_s = time.perf_counter() - update_started
        self.scheduler.step()
        self.kl_ctl.update(rollout_metrics["objective/kl"], cfg.batch_size)
        elapsed = time.perf_counter() - started
        tokens = mask.sum().item()
        metrics = {
            **rollout_metrics,
            "policy/approxkl": stats["approxkl"],
            "policy/clipfrac": stats["clipfrac"],
            "val/clipfrac": stats["vf_clipfrac"],
            "loss/policy": stats["pg"],
            "loss/value": stats["vf"],
            "grad_norm": stats["grad_norm"],
            "lr": lr,
            "time/update_s": update_s,
            "time/step_s": elapsed,
            "tokens_per_s": tokens / elapsed,
            "sequence_tokens": int(batch["rollout"].attention_mask.sum().item()),
        }
        if self.world_size > 1:
            local = {k: v for k, v in metrics.items() if k not in rollout_metrics}
            metrics.update(distributed.mean_over_processes(local))
            metrics["tokens_per_s"] *= self.world_size  # each process's tokens per second, summed
            metrics["sequence_tokens"] = int(round(metrics["sequence_tokens"] * self.world_size))
        for name in ("objective/scores", "objective/kl", "loss/policy", "loss/value"):
            if not math.isfinite(metrics[name]):
                raise NonFiniteError(f"{name} is NaN or infinite at step {self.step_count}; the run was stopped")
        samples = [self.sample_row(batch, i, prompts[i]) for i in range(min(cfg.samples_per_step, len(prompts)))]
        if gold is not None:
            for row, score in zip(samples, gold):
                row["gold"] = score
        return metrics, samples

    def sample_row(self, batch: dict, i: int, prompt) -> dict:
        """One logged sample with its token view: each response token with its KL, value and advantage."""
        n = int(batch["mask"][i].sum().item())
        ids = batch["rollout"].response_ids[i, :n].tolist()
        return {"step": self.step_count, "prompt": prompt_text(prompt), "response": batch["texts"][i],
                "score": batch["scores"][i].item(), "kl": batch["kl"][i].sum().item(),
                "tokens": [self.tokenizer.decode([t]) for t in ids],
                "token_kl": _rounded(batch["kl"][i, :n]), "token_value": _rounded(batch["values"][i, :n]),
                "token_advantage": _rounded(batch["advantages"][i, :n])}

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, folder: Path) -> None:
        """Adapters + value head (safetensors) and optimiser/schedule/beta/RNG state (torch, tensors only)."""
        folder = Path(folder)
        self.model.save_adapters(folder)
        torch.save({
            "step": self.step_count,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "beta": self.kl_ctl.value,
        }, folder / "trainer_state.pt")

    def load_checkpoint(self, folder: Path) -> None:
        """Restore what save_checkpoint wrote."""
        folder = Path(folder)
        self.model.load_adapters(folder)
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.value = state["beta"]
        self.step_count = state["step"]
