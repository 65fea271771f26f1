"""Built-in offline demo: a prompt set and a simulated annotator.

The "gold" annotator scores a response by its VADER sentiment (compound score in [-1, 1]) and
prefers the more positive of two completions. With it a user with no data can run the whole loop:
the base model writes two completions per prompt, the annotator labels them, a reward model learns
the labels, and PPO learns to write more positive text, which the gold scorer can check on held-out
prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from .config import ModelConfig
from .data import PreferencePair

PROMPTS_FILE = Path(__file__).parent / "assets" / "demo_prompts.txt"
HELD_OUT_EVERY = 5  # every 5th demo prompt is kept out of training, for gold evaluation
MIN_GOLD_GAP = 0.3  # completions closer than this in gold score are a tie: the annotator skips them


def demo_prompts() -> list[str]:
    """All demo prompts, in file order."""
    return [line.strip() for line in PROMPTS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def demo_prompt_split() -> tuple[list[str], list[str]]:
    """(training prompts, held-out prompts): every 5th prompt is held out."""
    prompts = demo_prompts()
    held = [p for i, p in enumerate(prompts) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train = [p for i, p in enumerate(prompts) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    return train, held


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def gold_score(text: str) -> float:
    """The gold annotator's score: VADER compound sentiment in [-1, 1]."""
    return float(_vader().polarity_scores(text)["compound"])


def gold_label(prompt, first: str, second: str) -> PreferencePair | None:
    """The annotator's choice between two completions; None for a tie (gap below MIN_GOLD_GAP)."""
    a, b = gold_score(first), gold_score(second)
    if abs(a - b) < MIN_GOLD_GAP or first.strip() == second.strip():
        return None
    chosen, rejected = (first, second) if a > b else (second, first)
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def make_demo_pairs(
    n: int,
    model_config: ModelConfig | None = None,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    response_length: int = 32,
    temperature: float = 1.0,
    batch_size: int = 16,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    model_and_tokenizer=None,
) -> list[PreferencePair]:
    """n simulated preference pairs: two sampled completions per training prompt, labelled by the gold annotator.

    Prompts are cycled (in a seeded order) until n non-tied pairs exist.
    """
    import random

    from .generation import decode_responses, sample_responses
    from .models import load_model_and_tokenizer, set_seed

    config = model_config or ModelConfig()
    model, tokenizer = model_and_tokenizer or load_model_and_tokenizer(config)
    pool = list(prompts) if prompts is not None else demo_prompt_split()[0]
    if not pool:
        raise ValueError("no prompts to make pairs from")
    set_seed(seed)
    order = random.Random(seed)
    pairs: list[PreferencePair] = []
    attempts = 0
    while len(pairs) < n:
        if attempts > 20 * n + 100:
            raise RuntimeError(f"only {len(pairs)} of {n} pairs after {attempts} prompts: completions too often tie")
        batch = [pool[order.randrange(len(pool))] for _ in range(batch_size // 2)]
        doubled = batch + batch
        rollout = sample_responses(model, tokenizer, doubled, response_length, temperature, config.chat_template)
        texts = decode_responses(tokenizer, rollout)
        half = len(batch)
        for i, prompt in enumerate(batch):
            attempts += 1
            pair = gold_label(prompt, texts[i], texts[half + i])
            if pair is not None and len(pairs) < n:
                pairs.append(pair)
        on_progress(len(pairs), n)
    return pairs
