"""Reward normalisation, shared by every scorer PPO can train against (the reward model, the gold annotator,
or any object with ``score``, ``gain`` and ``bias``).

Ziegler et al. 2019 scale the reward model's scores so that the initial policy's own samples score with
mean 0 and standard deviation 1; the gain and bias are fitted once (``reward.normalize_on_policy``) and
stored with the model.
"""

from __future__ import annotations


def normalized(raw, scorer):
    """gain · raw + bias of ``scorer``, for a float or a tensor of its raw scores."""
    return raw * scorer.gain + scorer.bias
