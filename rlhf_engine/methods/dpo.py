"""DPO (Rafailov et al. 2023): the sigmoid preference loss, as a pure tensor function unit-tested against
hand-computed numbers (tests/test_methods_math.py).

Offline, from preference pairs: no sampling and no reward model. Its β is the KL coefficient of the
objective it solves (max E[r] − β KL), so a DPO policy can be placed on the same reward-vs-KL axes as the
on-policy runs by sampling it on held-out prompts (the DPO paper's Fig. 2).

``DPOTrainer`` takes a step on a batch of pairs (a pairs file or the dashboard's pair store, copied into the
run folder); the shared plumbing (trainer.py) gives it the reference, the optimiser, checkpoints and the
probe answers on held-out prompts, scored by the reward model (and the gold annotator) as every method's.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from rlhf_engine.core import distributed
from rlhf_engine.core.generation import Rollout
from rlhf_engine.core.models import encode_prompt, left_pad
from rlhf_engine.core.rollout import check_finite
from rlhf_engine.core.trainer import PolicyTrainer, in_parts
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


class DPOTrainer(PolicyTrainer):
    """DPO steps on batches of preference pairs (``prompts`` here are the pairs); ``step()`` returns (metrics,
    samples), the samples being the step's first pairs with their implicit rewards."""

    method_name = "DPO"

    def settings(self) -> str:
        cfg = self.config
        return f"DPO: beta={cfg.kl_coef:g}, {len(self.prompts)} pairs, at most {cfg.max_length} tokens per answer"

    def answer_logprobs(self, roll: Rollout, reference: bool = False) -> torch.Tensor:
        """Each answer's summed log-probability [2n] under the policy (with its graph) or the reference, at
        temperature 1: DPO's log π(y|x)."""
        return (self.token_logprobs_of(roll, reference, temperature=1.0) * roll.response_mask).sum(1)

    def step(self, on_rollout=None, sampled=None) -> tuple[dict, list[dict]]:
        cfg = self.config
        started = time.perf_counter()
        pairs = self.next_prompts()  # this process's pairs of the step (its "prompts" are the pairs)
        self.step_count += 1
        n = len(pairs)
        chosen, rejected, tokens = [], [], 0  # (policy, reference) log-probs of each pass's answers, detached
        # The batch's gradient in passes of pairs_per_pass pairs (each pass's loss weighted by its share of the
        # batch): the same gradient as one pass, with one pass's activations held at a time.
        for part, share in in_parts(pairs, cfg.pairs_per_pass):
            roll = pair_rollout(self.tokenizer, part, cfg.model.chat_template, cfg.max_length, self.model.peft.device)
            k = len(part)
            reference = self.answer_logprobs(roll, reference=True)
            policy = self.answer_logprobs(roll)
            loss, _ = dpo_loss(policy[:k], policy[k:], reference[:k], reference[k:], cfg.kl_coef)
            check_finite("DPO loss", loss, self.step_count)
            (loss * share).backward()
            chosen.append((policy[:k].detach(), reference[:k]))
            rejected.append((policy[k:].detach(), reference[k:]))
            tokens += roll.attention_mask.sum().item()
        grad_norm = self.optimizer_step()
        policy = torch.cat([c[0] for c in chosen] + [r[0] for r in rejected])
        reference = torch.cat([c[1] for c in chosen] + [r[1] for r in rejected])
        loss, pair_metrics = dpo_loss(policy[:n], policy[n:], reference[:n], reference[n:], cfg.kl_coef)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        elapsed = time.perf_counter() - started
        metrics = {"loss": loss.item(), **pair_metrics, "beta": cfg.kl_coef, "grad_norm": grad_norm, "lr": lr,
                   "time/step_s": elapsed, "tokens_per_s": tokens / elapsed}
        if self.world_size > 1:
            metrics = distributed.mean_over_processes(metrics)
            metrics["tokens_per_s"] *= self.world_size
        with torch.no_grad():
            margins = cfg.kl_coef * ((policy[:n] - reference[:n]) - (policy[n:] - reference[n:]))
        samples = [{"step": self.step_count, "prompt": prompt_text(pair.prompt), "chosen": pair.chosen,
                    "rejected": pair.rejected, "margin": round(float(margin), 5)}
                   for pair, margin in zip(pairs[:cfg.samples_per_step], margins.tolist())]
        return {"step": self.step_count, **metrics}, samples
