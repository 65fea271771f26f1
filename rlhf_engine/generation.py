"""Sampling responses and reading token log-probs back, with left padding done right.

Rollouts sample with temperature T, top_k 0 and top_p 1; log-probs are taken from logits / T so the
PPO ratio compares the distribution that actually produced the tokens. Responses are cut after the
first EOS; everything after it is the pad token and masked out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import encode_prompt, left_pad, position_ids_from_mask


@dataclass
class Rollout:
    """Token tensors of one batch of prompts and their sampled responses."""

    query_ids: torch.Tensor  # [B, P] left-padded prompt tokens
    query_mask: torch.Tensor  # [B, P] 1 on real prompt tokens
    response_ids: torch.Tensor  # [B, R] response tokens, pad after the first EOS
    response_mask: torch.Tensor  # [B, R] 1 up to and including the first EOS
    has_eos: torch.Tensor  # [B] bool: the response ended with EOS within R tokens

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)


def truncate_after_eos(response_ids: torch.Tensor, eos_id: int, pad_id: int):
    """Pad everything after the first EOS; return (ids, mask, has_eos)."""
    is_eos = response_ids == eos_id
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.float().argmax(1), torch.full_like(has_eos, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1], device=response_ids.device)[None, :]
    mask = positions <= first[:, None]
    ids = torch.where(mask, response_ids, torch.full_like(response_ids, pad_id))
    return ids, mask.long(), has_eos


class NonFiniteLogitsError(FloatingPointError):
    """The model's next-token logits hold NaN or inf while sampling (its weights or activations blew up)."""


@functools.cache
def _non_finite_logits_check():
    """A logits processor that stops sampling with NonFiniteLogitsError instead of torch.multinomial's
    'probability tensor contains either inf, nan or element < 0' (-inf alone is a masked token: allowed).
    Stateless: built once (transformers imported on first use), shared by every generate call."""
    from transformers import LogitsProcessor

    class RefuseNonFiniteLogits(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            if torch.isnan(scores).any() or torch.isposinf(scores).any():
                raise NonFiniteLogitsError("the next-token logits are NaN or infinite while sampling")
            return scores

    return RefuseNonFiniteLogits()


@torch.no_grad()
def sample_responses(model, tokenizer, prompts, max_new_tokens: int, temperature: float,
                     chat_template: bool = True, max_prompt_tokens: int = 512) -> Rollout:
    """Sample one response per prompt (temperature T, no top-k/top-p), cut after the first EOS."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p, chat_template, max_prompt_tokens) for p in prompts]
    query_ids, query_mask = left_pad(encoded, tokenizer.pad_token_id, device)
    generation = GenerationConfig(
        do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    output = model.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=generation,
                            logits_processor=[_non_finite_logits_check()])
    # As wide as the longest response (generation stops when every sequence has ended), not always
    # max_new_tokens: no pass over the batch spends time on columns that are padding in every row.
    response = output[:, query_ids.shape[1]:]
    response_ids, response_mask, has_eos = truncate_after_eos(response, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return Rollout(query_ids, query_mask, response_ids, response_mask, has_eos)


def decode_responses(tokenizer, rollout: Rollout) -> list[str]:
    """Response texts without special tokens."""
    return [
        tokenizer.decode(ids[mask.bool()], skip_special_tokens=True)
        for ids, mask in zip(rollout.response_ids, rollout.response_mask)
    ]


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_length: int,
                    temperature: float, with_hidden: bool = False):
    """Logits / T that predict each response token: [B, R, V], computed only where needed.

    ``with_hidden``: also the final hidden states at those positions, [B, R, d] (for a value head),
    from the same pass: returns (logits, hidden).
    """
    width = input_ids.shape[1]
    # The positions as an index tensor, not a count: the LM head then gets a contiguous [B, R, d] copy and
    # runs as one matrix product instead of a batched product over a strided view (measured ~20 % faster).
    predicting = torch.arange(width - response_length - 1, width - 1, device=input_ids.device)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        logits_to_keep=predicting,
        output_hidden_states=with_hidden,
        use_cache=False,
    )
    logits = out.logits.float() / temperature
    if with_hidden:
        return logits, out.hidden_states[-1][:, predicting]
    return logits


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under softmax(logits): [B, R]."""
    return torch.gather(F.log_softmax(logits, dim=-1), 2, tokens.unsqueeze(-1)).squeeze(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) at each position: [B, R]."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def last_hidden_state(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final (normed) hidden states [B, L, d] without computing the full LM head."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        output_hidden_states=True,
        logits_to_keep=1,
        use_cache=False,
    )
    return out.hidden_states[-1]
