"""Collecting preference pairs by hand: the model answers a prompt twice, a person picks the better answer.

A pick of A or B is one pair (chosen = the picked answer); a tie or a skip is none (a tie carries no
preference for the Bradley–Terry loss). The CLI's ``collect`` and the Preferences page's Collect tab
both go through here.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlhf_engine.data.pairs import PreferencePair

SOURCE = "collected"  # the pair store's source label of hand-picked pairs
MAX_NEW_TOKENS = 64  # tokens per answer
TEMPERATURE = 0.9  # sampling temperature: a little hotter than PPO's 0.7, so the two answers differ
PICKS = ("a", "b", "tie", "skip")


def two_answers(model, tokenizer, prompt, max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = TEMPERATURE,
                chat_template: bool = True) -> Sequence[str]:
    """Two sampled answers to ``prompt``, decoded as one batch."""
    from rlhf_engine.core.generation import decode_responses, sample_responses

    rollout = sample_responses(model, tokenizer, [prompt, prompt], max_new_tokens, temperature, chat_template)
    return decode_responses(tokenizer, rollout)


def picked_pair(prompt, answer_a: str, answer_b: str, pick: str) -> PreferencePair | None:
    """The pair a pick makes: "a" or "b" prefers that answer; "tie" and "skip" make none.

    Raises ValueError when A or B is picked between two identical answers (nothing to prefer)."""
    if pick not in PICKS:
        raise ValueError(f"a pick is one of {', '.join(PICKS)}; got {pick!r}")
    if pick in ("tie", "skip"):
        return None
    if answer_a.strip() == answer_b.strip():
        raise ValueError("The two answers are identical; nothing stored")
    chosen, rejected = (answer_a, answer_b) if pick == "a" else (answer_b, answer_a)
    return PreferencePair(prompt, chosen, rejected)
