"""Built-in offline demo: a prompt set and a simulated annotator.

The "gold" annotator likes positive answers and dislikes answers that repeat themselves: its score is
the VADER sentiment (compound score in [-1, 1]) minus the share of repeated word pairs (Welleck et al.
2019's seq-rep-2). It ranks a few completions of one prompt and pairs its favourite with its least
favourite. With it a user with no data can run the whole loop: the base model writes four completions
per prompt, the annotator labels them, a reward model learns the labels, and PPO learns to write more
positive text, which the gold scorer can check on held-out prompts.

The base model rarely repeats itself (2 % of its word pairs), so the pairs teach the reward model
sentiment and next to nothing about repetition. A policy pushed far enough collapses into repeating
its favourite phrases, which the reward model has never seen and keeps scoring high; the annotator,
like a person, does not. That gap is what over-optimisation looks like (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.normalisation import normalized as normalized_scores
from rlhf_engine.data.pairs import PreferencePair

PROMPTS_FILE = Path(__file__).parent / "assets" / "demo_prompts.txt"
HELD_OUT_EVERY = 5  # every 5th demo prompt is kept out of training, for gold evaluation
MIN_GOLD_GAP = 0.5  # best and worst completions closer than this in gold score are a tie: the prompt is skipped
DEMO_TEMPERATURE = 0.7  # sampling temperature of the completions: PPO's, so the RM learns on text like the policy's
REPETITION_PENALTY = 1.0  # gold points lost per unit of repetition: a text made of one repeated word pair loses ~1
WORD = re.compile(r"[\w']+")  # a word, for counting repeated word pairs


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
    """The gold annotator's score in [-2, 1]: VADER compound sentiment minus REPETITION_PENALTY × repetition."""
    return float(_vader().polarity_scores(text)["compound"]) - REPETITION_PENALTY * repetition(text)


def repetition(text: str) -> float:
    """Share of the text's word pairs that repeat an earlier pair, in [0, 1) (seq-rep-2 of Welleck et al. 2019)."""
    words = WORD.findall(text.lower())
    pairs = list(zip(words, words[1:]))
    return 1.0 - len(set(pairs)) / len(pairs) if pairs else 0.0


class GoldReward:
    """The gold annotator as a reward model (same ``score`` and normalisation as RewardModel).

    PPO against it optimises the true demo objective, with no reward-model error: a sanity check that
    PPO itself raises a reward that is right by construction.
    """

    normalized_on = None

    def __init__(self, gain: float = 1.0, bias: float = 0.0):
        self.gain = gain
        self.bias = bias

    def score(self, prompts: Sequence, responses: Sequence[str], normalized: bool = True):
        import torch

        raw = torch.tensor([gold_score(text) for text in responses], dtype=torch.float32)
        return normalized_scores(raw, self) if normalized else raw


def gold_label(prompt, first: str, second: str) -> PreferencePair | None:
    """The annotator's choice between two completions; None for a tie (gap below MIN_GOLD_GAP)."""
    return gold_best_worst(prompt, [first, second])


def gold_best_worst(prompt, completions: Sequence[str]) -> PreferencePair | None:
    """The annotator ranks completions and pairs its favourite with its least favourite; None for a tie."""
    scored = sorted(((gold_score(text), text) for text in completions), key=lambda item: item[0])
    (low, worst), (high, best) = scored[0], scored[-1]
    if high - low < MIN_GOLD_GAP or best.strip() == worst.strip():
        return None
    return PreferencePair(prompt=prompt, chosen=best, rejected=worst)


def labelled_by_gold_annotator(pairs: Sequence[PreferencePair]) -> bool:
    """Whether every pair follows the simulated annotator's rule (chosen beats rejected by MIN_GOLD_GAP).

    Pairs made by ``make_demo_pairs`` always do; human or dataset pairs practically never all do. PPO
    runs on a reward model trained on such pairs also log the gold score, to show over-optimisation.
    """
    return bool(pairs) and all(gold_score(p.chosen) - gold_score(p.rejected) >= MIN_GOLD_GAP for p in pairs)


def make_demo_pairs(
    n: int,
    model_config: ModelConfig | None = None,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    response_length: int = 32,
    temperature: float = DEMO_TEMPERATURE,
    completions_per_prompt: int = 4,
    batch_size: int = 16,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    model_and_tokenizer=None,
) -> list[PreferencePair]:
    """n simulated preference pairs from the base model's own completions, labelled by the gold annotator.

    For each training prompt (seeded shuffle, cycled) the model samples ``completions_per_prompt``
    completions; the annotator pairs the one it likes best with the one it likes least, and skips
    the prompt when they tie.
    """
    from rlhf_engine.core.batching import batch_indices
    from rlhf_engine.core.generation import decode_responses, sample_responses
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed

    config = model_config or ModelConfig()
    model, tokenizer = model_and_tokenizer or load_model_and_tokenizer(config)
    pool = list(prompts) if prompts is not None else demo_prompt_split()[0]
    if not pool:
        raise ValueError("no prompts to make pairs from")
    set_seed(seed)
    per_batch = max(1, batch_size // completions_per_prompt)
    pairs: list[PreferencePair] = []
    step = 0
    while len(pairs) < n:
        step += 1
        if step * per_batch > 20 * n + 100:
            raise RuntimeError(f"only {len(pairs)} of {n} pairs after {step * per_batch} prompts: "
                               "completions tie too often")
        batch = [pool[i] for i in batch_indices(len(pool), per_batch, step, seed)]
        repeated = [p for p in batch for _ in range(completions_per_prompt)]
        rollout = sample_responses(model, tokenizer, repeated, response_length, temperature, config.chat_template)
        texts = decode_responses(tokenizer, rollout)
        for i, prompt in enumerate(batch):
            pair = gold_best_worst(prompt, texts[i * completions_per_prompt:(i + 1) * completions_per_prompt])
            if pair is not None and len(pairs) < n:
                pairs.append(pair)
        on_progress(len(pairs), n)
    return pairs
