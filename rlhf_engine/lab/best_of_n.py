"""Best-of-n: the baseline every RLHF policy should beat (Nakano et al. 2021; Gao et al. 2022).

Sample n responses from the reference policy and keep the one the reward model scores highest. Its
KL to the reference is known in closed form (Stiennon et al. 2020, appendix; Gao et al. 2022, eq. 1):

    KL(best-of-n || reference) = log n - (n - 1) / n   nats per response

so best-of-n for n = 1, 2, 4, ... draws a reward-vs-KL curve with no training at all. From N samples
per prompt, the expected score of best-of-n for every n <= N is read without bias from the sorted
samples: the i-th smallest of N is the best of a random n-subset with probability
C(i-1, n-1) / C(N, n).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence


def best_of_n_kl(n: int) -> float:
    """KL of best-of-n sampling to the sampling policy, in nats per response: log n - (n - 1) / n."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return math.log(n) - (n - 1) / n


def expected_best_of_n(proxy: Sequence[float], n: int, other: Sequence[float] | None = None) -> float:
    """Expected value of the best of n samples drawn without replacement from these N, best by ``proxy``.

    With ``other`` (e.g. the gold score of the same samples), the expectation of ``other`` for the sample
    the proxy picks: what best-of-n achieves on the true reward.
    """
    total = len(proxy)
    if not 1 <= n <= total:
        raise ValueError(f"n must be between 1 and the number of samples ({total}), got {n}")
    values = other if other is not None else proxy
    order = sorted(range(total), key=lambda i: proxy[i])
    subsets = math.comb(total, n)
    return sum(math.comb(rank, n - 1) / subsets * values[i] for rank, i in enumerate(order) if rank >= n - 1)


def best_of_n_curve(proxy: Sequence[Sequence[float]], gold: Sequence[Sequence[float]] | None = None,
                    ns: Sequence[int] | None = None) -> list[dict]:
    """Rows {n, kl, score, gold}: scores averaged over prompts; proxy[p] holds prompt p's N sample scores.

    ``ns`` defaults to the powers of two up to N (and N itself).
    """
    if not proxy:
        raise ValueError("no prompts")
    total = min(len(scores) for scores in proxy)
    if ns is None:
        ns = sorted({2 ** k for k in range(int(math.log2(total)) + 1)} | {total})
    rows = []
    for n in ns:
        row = {"n": n, "kl": best_of_n_kl(n),
               "score": sum(expected_best_of_n(p[:total], n) for p in proxy) / len(proxy)}
        if gold is not None:
            row["gold"] = sum(expected_best_of_n(p[:total], n, g[:total]) for p, g in zip(proxy, gold)) / len(proxy)
        rows.append(row)
    return rows


def sample_and_score(policy, tokenizer, prompts: Sequence, n: int, reward_model, response_length: int,
                     temperature: float, chat_template: bool = True, gold_scorer: Callable[[str], float] | None = None,
                     batch_size: int = 16, on_progress: Callable[[int, int], None] = lambda done, total: None,
                     policy_context: Callable = contextlib.nullcontext):
    """n sampled responses per prompt, scored by the (normalised) reward model and, if given, the gold scorer.

    Returns (proxy, gold): one list of n scores per prompt; gold is None without a gold scorer.
    ``policy_context`` is entered only while sampling (the reference as a PEFT model with its adapters
    disabled, whose reward adapter must be on again to score).
    """
    from rlhf_engine.core.generation import decode_responses, sample_responses

    repeated = [p for p in prompts for _ in range(n)]
    proxy_flat, gold_flat = [], []
    for start in range(0, len(repeated), batch_size):
        batch = repeated[start:start + batch_size]
        with policy_context():
            rollout = sample_responses(policy, tokenizer, batch, response_length, temperature, chat_template)
        texts = decode_responses(tokenizer, rollout)
        proxy_flat += reward_model.score(batch, texts).tolist()
        if gold_scorer is not None:
            gold_flat += [gold_scorer(t) for t in texts]
        on_progress(start + len(batch), len(repeated))
    proxy = [proxy_flat[i * n:(i + 1) * n] for i in range(len(prompts))]
    gold = [gold_flat[i * n:(i + 1) * n] for i in range(len(prompts))] if gold_scorer is not None else None
    return proxy, gold
