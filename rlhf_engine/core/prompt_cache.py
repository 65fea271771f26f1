"""A prompt's keys and values computed once and shared by its several answers.

Attention is causal, so a prompt's states do not depend on what follows it: a prompt with several answers (a
preference pair's two, best-of-n's samples, a group method's group) passes through the model once, and each answer
continues from its cached keys and values with positions counting on from the prompt's length. Every token then
sees what it sees in the whole sequence; the work on the prompt is done once instead of once per answer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhf_engine.core.generation import token_logprobs
from rlhf_engine.core.models import encode_prompt, left_pad, plain_kv_cache, position_ids_from_mask


def shared_prompt_scores(rm, prompts: Sequence, responses: Sequence[str],
                         rows: int | None = None) -> torch.Tensor | None:
    """Raw scores [N] of responses to prompts with each distinct prompt passed once, or None.

    Pass 1 runs the distinct left-padded prompts and keeps their keys and values; pass 2 runs the
    right-padded answers (response + EOS) on their prompt's cache, with positions counting on from the
    prompt's length: every token sees exactly what it sees in the whole sequence (attention is causal).
    ``rows``: at most that many answers per pass 2 (a prompt's answers stay together); None: all at once.
    None when a sequence would be cut to max_length or the model's cache is not a plain key/value cache.
    """
    prompt_ids = [encode_prompt(rm.tokenizer, p, rm.model_config.chat_template) for p in prompts]
    answers = [rm.tokenizer(text, add_special_tokens=False)["input_ids"] + [rm.tokenizer.eos_token_id]
               for text in responses]
    if any(len(p) + len(a) > rm.max_length for p, a in zip(prompt_ids, answers)):
        return None
    groups: dict[tuple, list[int]] = {}  # a distinct prompt -> its answers' indices
    for i, ids in enumerate(prompt_ids):
        groups.setdefault(tuple(ids), []).append(i)
    scores: list[torch.Tensor | None] = [None] * len(answers)
    with rm.reward_adapter():
        for chunk in _chunks(list(groups.items()), rows or len(answers)):
            out = _answers_on_prompts(rm, [list(key) for key, _ in chunk],
                                      [[answers[i] for i in members] for _, members in chunk])
            if out is None:
                return None
            for i, score in zip((i for _, members in chunk for i in members), out):
                scores[i] = score
    return torch.stack(scores) if scores else torch.zeros(0, device=rm.device)


def _answers_on_prompts(rm, prompts: list[list[int]], answers: list[list[list[int]]]) -> torch.Tensor | None:
    """Raw scores of answers[g] (token lists, EOS included) after prompts[g], in that order; None for a cache
    that is not a plain key/value cache."""
    prompt_ids, prompt_mask = left_pad(prompts, rm.tokenizer.pad_token_id, rm.device)
    flat = [a for group in answers for a in group]
    of_prompt = torch.tensor([g for g, group in enumerate(answers) for _ in group], device=rm.device)
    width = max(len(a) for a in flat)
    answer_ids = torch.tensor([a + [rm.tokenizer.pad_token_id] * (width - len(a)) for a in flat],
                              device=rm.device)
    answer_mask = torch.tensor([[1] * len(a) + [0] * (width - len(a)) for a in flat], device=rm.device)
    cache = rm.backbone(input_ids=prompt_ids, attention_mask=prompt_mask,
                        position_ids=position_ids_from_mask(prompt_mask), use_cache=True, logits_to_keep=1).cache
    if not plain_kv_cache(cache):
        return None  # sliding-window, hybrid or recurrent caches: score whole sequences
    cache.batch_select_indices(of_prompt)
    out = rm.backbone(input_ids=answer_ids, attention_mask=torch.cat([prompt_mask[of_prompt], answer_mask], 1),
                      position_ids=prompt_mask.sum(1)[of_prompt, None] + torch.arange(width, device=rm.device),
                      cache=cache, use_cache=True, output_hidden_states=True, logits_to_keep=1)
    # [N, width, d]: the answers' positions only, each answer all response (+ EOS)
    return rm.pooled_score(out.hidden_states[-1], answer_mask, answer_mask).float()


def _chunks(groups: list, rows: int) -> list[list]:
    """Consecutive groups (key, members) with at most ``rows`` members in all (a larger group alone)."""
    chunks: list[list] = []
    for group in groups:
        if chunks and sum(len(m) for _, m in chunks[-1]) + len(group[1]) <= rows:
            chunks[-1].append(group)
        else:
            chunks.append([group])
    return chunks


@torch.no_grad()
def shared_prompt_logprobs(model, rollouts: Sequence, temperature: float, rows: int = 32) -> list | None:
    """[B_i, R_i] log-probs (from logits / T) of each rollout's answer tokens under ``model`` as it stands (the
    reference: a PEFT model inside ``disable_adapter()``), each distinct prompt passed once for every rollout's
    answers to it, at most ``rows`` answers at a time; None for a cache that is not a plain key/value cache.

    The prompt's pass gives the first answer token's logits (at its last position) and the cache; the answers' pass,
    all but their last token on that cache, gives the rest: what ``generation.response_logits`` reads from whole
    sequences, with the prompt's tokens run once instead of once per answer."""
    device = next(model.parameters()).device
    groups: dict[tuple, list[tuple[int, int]]] = {}  # a distinct prompt -> its answers (rollout, row)
    for i, roll in enumerate(rollouts):
        for r in range(len(roll.query_ids)):
            groups.setdefault(tuple(roll.query_ids[r][roll.query_mask[r].bool()].tolist()), []).append((i, r))
    out = [torch.zeros(roll.response_ids.shape, device=device) for roll in rollouts]
    for chunk in _chunks(list(groups.items()), rows):
        answers = [(i, r) for _, members in chunk for i, r in members]
        prompt_ids, prompt_mask = left_pad([list(key) for key, _ in chunk], 0, device)
        of_prompt = torch.tensor([g for g, (_, members) in enumerate(chunk) for _ in members], device=device)
        width = max(rollouts[i].response_ids.shape[1] for i, _ in answers)
        ids, mask = (torch.zeros(len(answers), width, dtype=torch.long, device=device) for _ in range(2))
        for k, (i, r) in enumerate(answers):
            length = rollouts[i].response_ids.shape[1]
            ids[k, :length], mask[k, :length] = rollouts[i].response_ids[r], rollouts[i].response_mask[r]
        prompts = model(input_ids=prompt_ids, attention_mask=prompt_mask, use_cache=True, logits_to_keep=1,
                        position_ids=position_ids_from_mask(prompt_mask))
        if not plain_kv_cache(prompts.cache):
            return None
        prompts.cache.batch_select_indices(of_prompt)
        first = prompts.logits[of_prompt, -1:].float()  # [N, 1, V]: the first answer token's
        rest = model(input_ids=ids[:, :-1], attention_mask=torch.cat([prompt_mask[of_prompt], mask[:, :-1]], 1),
                     position_ids=prompt_mask.sum(1)[of_prompt, None] + torch.arange(width - 1, device=device),
                     cache=prompts.cache, use_cache=True).logits.float()
        logprobs = token_logprobs(torch.cat([first, rest], 1) / temperature, ids)
        for k, (i, r) in enumerate(answers):
            out[i][r] = logprobs[k, :rollouts[i].response_ids.shape[1]]
    return out
