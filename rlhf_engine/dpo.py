"""DPO (Rafailov et al. 2023): the sigmoid preference loss, as a pure tensor function unit-tested against
hand-computed numbers (tests/test_methods_math.py).

Offline, from preference pairs: no sampling and no reward model. Its β is the KL coefficient of the
objective it solves (max E[r] − β KL), so a DPO policy can be placed on the same reward-vs-KL axes as the
on-policy runs by sampling it on held-out prompts (the DPO paper's Fig. 2). The trainer reads the pair
store or a pairs file (issue 19; not written yet).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
