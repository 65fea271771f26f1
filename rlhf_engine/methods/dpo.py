"""DPO (Rafailov et al. 2023): the sigmoid preference loss, as a pure tensor function unit-tested against
hand-computed numbers (tests/test_methods_math.py).

Offline, from preference pairs: no sampling and no reward model. Its β is the KL coefficient of the
objective it solves (max E[r] − β KL), so a DPO policy can be placed on the same reward-vs-KL axes as the
on-policy runs by sampling it on held-out prompts (the DPO paper's Fig. 2).

``DPOTrainer`` takes a step on a batch of pairs (a pairs file or the dashboard's pair store, copied into the
run folder); the shared trainer (core/trainer.py) owns the loop and gives it the reference, the optimiser,
checkpoints and the probe answers on held-out prompts, scored by the reward model (and the gold annotator)
as every method's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhf_engine.core.generation import Rollout
from rlhf_engine.core.models import encode_prompt, left_pad
from rlhf_engine.core.rollout import POLICY
from rlhf_engine.core.trainer import PolicyTrainer, Step, UpdatePlan
from rlhf_engine.data.pairs import PreferencePair, prompt_text


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """−mean log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]) over pairs.

    Arguments are each answer's summed log-probability [B] under the policy and the reference (chosen y_w,
    rejected y_l). Returns (loss, metrics) with TRL's DPOTrainer names: ``rewards/chosen`` and
    ``rewards/rejected`` (the implicit rewards β(log π − log π_ref), means), ``rewards/accuracies`` (share
    of pairs whose chosen reward is higher), ``rewards/margins``, ``logps/chosen``, ``logps/rejected``.
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    loss = -F.logsigmoid(chosen_rewards - rejected_rewards).mean()
    with torch.no_grad():
        metrics = {"rewards/chosen": float(chosen_rewards.mean()), "rewards/rejected": float(rejected_rewards.mean()),
                   "rewards/accuracies": float((chosen_rewards > rejected_rewards).float().mean()),
                   "rewards/margins": float((chosen_rewards - rejected_rewards).mean()),
                   "logps/chosen": float(policy_chosen.mean()), "logps/rejected": float(policy_rejected.mean())}
    return loss, metrics


def pair_rollout(tokenizer, pairs: list[PreferencePair], chat_template: bool, max_length: int, device=None) -> Rollout:
    """The chosen answers (rows 0..n-1) then the rejected ones (n..2n-1) of ``pairs`` as a Rollout: prompts
    left-padded, each answer + EOS right-padded, as a sampled rollout is laid out. An answer keeps at most
    max_length − 1 tokens; its prompt keeps its last tokens up to max_length in all."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    answers = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    responses = [(tokenizer(text, add_special_tokens=False)["input_ids"] + [eos])[:max_length - 1] for text in answers]
    prompts = [encode_prompt(tokenizer, pairs[i % len(pairs)].prompt, chat_template) for i in range(len(answers))]
    prompts = [ids[-(max_length - len(response)):] for ids, response in zip(prompts, responses)]
    query_ids, query_mask = left_pad(prompts, pad, device)
    width = max(len(r) for r in responses)
    response_ids = torch.full((len(responses), width), pad, dtype=torch.long)
    response_mask = torch.zeros((len(responses), width), dtype=torch.long)
    for i, response in enumerate(responses):
        response_ids[i, :len(response)] = torch.tensor(response)
        response_mask[i, :len(response)] = 1
    has_eos = torch.tensor([response[-1] == eos for response in responses])
    return Rollout(query_ids, query_mask, response_ids.to(device), response_mask.to(device), has_eos.to(device))


@dataclass
class PairBatch:
    """A step's preference pairs, and what DPO's loss leaves in it for the step's metrics and samples."""

    pairs: list[PreferencePair]  # this process's pairs of the step
    margins: torch.Tensor  # [n] each pair's implicit reward margin, filled in by the loss
    answer_tokens: int = 0  # chosen and rejected answer tokens (EOS included), counted by the loss
    sequence_tokens: int = 0  # prompt and answer tokens, counted by the loss

    def __len__(self) -> int:
        return len(self.pairs)


class DPOTrainer(PolicyTrainer):
    """DPO steps on batches of preference pairs; ``step()`` returns (metrics, samples), the samples being the
    step's first pairs with their implicit reward margins."""

    method_name = "DPO"

    def __init__(self, config, reward_model, pairs: list[PreferencePair], gold_scorer=None, base=None,
                 name: str = POLICY):
        self.pairs = list(pairs)
        super().__init__(config, reward_model, [pair.prompt for pair in self.pairs], gold_scorer, base, name)

    def settings(self) -> str:
        cfg = self.config
        return f"DPO: beta={cfg.kl_coef:g}, {len(self.pairs)} pairs, at most {cfg.max_length} tokens per answer"

    def update_plan(self) -> UpdatePlan:
        return UpdatePlan(rows_per_part=self.config.pairs_per_pass)

    def next_pairs(self) -> list[PreferencePair]:
        """This process's pairs of the coming step (a seeded shuffle per epoch; the same on resume)."""
        return [self.pairs[i] for i in self.step_indices(len(self.pairs))]

    def begin(self, sampled=None) -> Step:
        """The step's pairs: DPO samples nothing (its answers to held-out prompts are the probes)."""
        if sampled is not None:
            raise ValueError("DPO samples nothing: it learns from its pairs")
        started = time.perf_counter()
        pairs = self.next_pairs()
        self.step_count += 1
        batch = PairBatch(pairs, torch.zeros(len(pairs)))
        return Step(batch, {"step": self.step_count, "beta": self.beta}, started, [pair.prompt for pair in pairs])

    def answer_logprobs(self, roll: Rollout, reference: bool = False) -> torch.Tensor:
        """Each answer's summed log-probability [2n] under the policy (with its graph) or the reference, at
        temperature 1: DPO's log π(y|x)."""
        return (self.token_logprobs_of(roll, reference, temperature=1.0) * roll.response_mask).sum(1)

    def loss(self, batch: PairBatch, rows: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """``dpo_loss`` of the pairs ``rows``, their chosen and rejected answers read in one pass."""
        cfg = self.config
        roll = pair_rollout(self.tokenizer, [batch.pairs[i] for i in rows.tolist()], cfg.model.chat_template,
                            cfg.max_length, self.model.peft.device)
        k = len(rows)
        reference = self.answer_logprobs(roll, reference=True)
        policy = self.answer_logprobs(roll)
        loss, metrics = dpo_loss(policy[:k], policy[k:], reference[:k], reference[k:], self.beta)
        with torch.no_grad():
            batch.margins[rows] = self.beta * ((policy[:k] - reference[:k]) - (policy[k:] - reference[k:])).cpu()
        batch.answer_tokens += int(roll.response_mask.sum().item())
        batch.sequence_tokens += int(roll.attention_mask.sum().item())
        return loss, {"loss": loss.item(), **metrics}

    def sample_rows(self, step: Step) -> list[dict]:
        """The step's first pairs with their implicit reward margins."""
        batch: PairBatch = step.batch
        return [{"step": self.step_count, "prompt": prompt_text(pair.prompt), "chosen": pair.chosen,
                 "rejected": pair.rejected, "margin": round(float(margin), 5)}
                for pair, margin in zip(batch.pairs[:self.config.samples_per_step], batch.margins.tolist())]
