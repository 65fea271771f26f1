"""Sampling responses and reading token log-probs back, with left padding done right.

Rollouts sample with temperature T, top_k 0 and top_p 1; log-probs are taken from logits / T so the
PPO ratio compares the distribution that actually produced the tokens. The sampler keeps each token's
log-prob and each step's entropy as it decodes (``Rollout.logprobs``, ``.entropy``): a method without a
value model reads them instead of running a policy pass over the rollout. Responses are cut after the
first EOS; everything after it is the pad token and masked out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhf_engine.core.models import encode_prompt, left_pad, plain_kv_cache, position_ids_from_mask


@dataclass
class Rollout:
    """Token tensors of one batch of prompts and their sampled responses."""

    query_ids: torch.Tensor  # [B, P] left-padded prompt tokens
    query_mask: torch.Tensor  # [B, P] 1 on real prompt tokens
    response_ids: torch.Tensor  # [B, R] response tokens, pad after the first EOS
    response_mask: torch.Tensor  # [B, R] 1 up to and including the first EOS
    has_eos: torch.Tensor  # [B] bool: the response ended with EOS within R tokens
    logprobs: torch.Tensor | None = None  # [B, R] the sampler's log-probs of its tokens (logits / T; 0 after EOS)
    entropy: torch.Tensor | None = None  # [B, R] the sampler's entropy (nats) at each token (0 after EOS)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.response_mask.sum(1)

    def rows(self, index: slice) -> "Rollout":
        """Some rows of the batch, as narrow as they allow: prompt columns that are padding in each of them
        and response columns past their longest response are dropped (what sampling them alone gives)."""
        query_mask, response_mask = self.query_mask[index], self.response_mask[index]
        first = int(query_mask.any(0).long().argmax()) if query_mask.numel() else 0
        width = int(response_mask.sum(1).max()) if response_mask.numel() else 0
        sampler = [None if x is None else x[index, :width] for x in (self.logprobs, self.entropy)]
        return Rollout(self.query_ids[index, first:], query_mask[:, first:], self.response_ids[index, :width],
                       response_mask[:, :width], self.has_eos[index], *sampler)


def truncate_after_eos(response_ids: torch.Tensor, eos_id: int, pad_id: int):
    """Pad everything after the first EOS; return (ids, mask, has_eos)."""
    is_eos = response_ids == eos_id
    has_eos = is_eos.any(1)
    first = torch.where(has_eos, is_eos.float().argmax(1),
                        torch.full_like(has_eos, response_ids.shape[1], dtype=torch.long))
    positions = torch.arange(response_ids.shape[1], device=response_ids.device)[None, :]
    mask = positions <= first[:, None]
    ids = torch.where(mask, response_ids, torch.full_like(response_ids, pad_id))
    return ids, mask.long(), has_eos


class NonFiniteLogitsError(FloatingPointError):
    """The model's next-token logits hold NaN or inf while sampling (its weights or activations blew up)."""


SAMPLING_ROWS = 8  # rows of the vocabulary-wide sampling arithmetic at a time, so that their [rows, V] tensors stay in
# the CPU's cache (2-core AMD EPYC, V = 49152: 162 rows took 91 ms a token at once, 27 ms in parts; 54 rows 28 vs 11)


def sample_tokens(logits: torch.Tensor, temperature: float, generators: Sequence[torch.Generator]):
    """One token per row from softmax(logits / T) by inverse-CDF sampling, row i drawing from generators[i]:
    (tokens, their log-probs, the entropy of each row's distribution), all [B].

    Consecutive rows with the same generator take one draw of as many uniforms, so a group of rows gets
    the same tokens whether it is sampled alone or inside a larger batch (a batched sweep). One uniform
    per row, against torch.multinomial's one exponential per vocabulary entry (~60 ms a step at 32 rows).
    Row by row arithmetic, done ``SAMPLING_ROWS`` rows at a time. NaN or +inf logits raise NonFiniteLogitsError
    (-inf alone is a masked token: allowed).
    """
    top = logits.amax(-1)  # NaN where a row has one (max propagates it), +inf where a row has +inf
    if torch.isnan(top).any() or torch.isposinf(top).any():
        raise NonFiniteLogitsError("the next-token logits are NaN or infinite while sampling")
    uniforms = torch.empty(len(generators), dtype=torch.float64)
    start = 0
    for generator, rows in _runs_of(generators):
        uniforms[start:start + rows] = torch.rand(rows, generator=generator, dtype=torch.float64)
        start += rows
    uniforms = uniforms.to(logits.device)
    parts = [_sample_rows(logits[i:i + SAMPLING_ROWS], temperature, uniforms[i:i + SAMPLING_ROWS])
             for i in range(0, len(logits), SAMPLING_ROWS)]
    return tuple(torch.cat(values) for values in zip(*parts)) if parts else (
        logits.new_zeros(0, dtype=torch.long), logits.new_zeros(0), logits.new_zeros(0))


def _sample_rows(logits: torch.Tensor, temperature: float, uniforms: torch.Tensor):
    """``sample_tokens`` of a few rows, given their uniforms."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    probs = logp.exp()
    cdf = probs.double().cumsum(-1)
    tokens = torch.searchsorted(cdf, uniforms[:, None] * cdf[:, -1:]).clamp(max=logits.shape[-1] - 1).squeeze(-1)
    return tokens, logp.gather(1, tokens[:, None]).squeeze(1), -(probs * logp).nansum(-1)


def _runs_of(items: Sequence) -> list[tuple[object, int]]:
    """(item, count) of each run of consecutive identical objects."""
    runs: list[tuple[object, int]] = []
    for item in items:
        if runs and runs[-1][0] is item:
            runs[-1] = (item, runs[-1][1] + 1)
        else:
            runs.append((item, 1))
    return runs


def generator_from_global_rng() -> torch.Generator:
    """A CPU generator seeded from torch's global RNG: set_seed() still makes a sampling call repeatable."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))


@torch.no_grad()
def sample_responses(model, tokenizer, prompts, max_new_tokens: int, temperature: float,
                     chat_template: bool = True, max_prompt_tokens: int = 512,
                     generators: Sequence[torch.Generator] | torch.Generator | None = None,
                     adapter_names: Sequence[str] | None = None, repeats: int = 1) -> Rollout:
    """Sample one response per prompt (temperature T, no top-k/top-p), cut after the first EOS.

    Our own decoding loop over the model's key/value cache, so that each row can draw from its own
    random stream (``generators``: one per row, or one for all; default: seeded from torch's global RNG)
    and, on a PEFT model, take its own LoRA adapter (``adapter_names``: one per row, "__base__" for none;
    ``lora_fused.rows_through_adapters``). The runs of a batched sweep decode together this way, each with its
    own adapter and random stream, and get the tokens they would get alone.

    ``repeats`` r > 1: r responses per prompt (best-of-n's samples), row s * len(prompts) + p the s-th response to
    prompt p; each prompt passes through the model once and its rows decode on copies of its keys and values
    (``prompt_cache``'s idea), with the tokens r separate calls would give. Not with ``adapter_names``.
    """
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p, chat_template, max_prompt_tokens) for p in prompts]
    query_ids, query_mask = left_pad(encoded, tokenizer.pad_token_id, device)
    if repeats > 1 and adapter_names is not None:
        raise ValueError("repeats share a prompt's pass between rows of one adapter: not with adapter_names")
    rows = len(encoded) * repeats
    if generators is None:
        generators = generator_from_global_rng()
    if isinstance(generators, torch.Generator):
        generators = [generators] * rows
    if len(generators) != rows or (adapter_names is not None and len(adapter_names) != rows):
        raise ValueError(f"{rows} prompts need as many generators and adapter names")
    if adapter_names is None:
        rows_context = contextlib.nullcontext()
    else:
        from rlhf_engine.core.lora_fused import rows_through_adapters

        rows_context = rows_through_adapters(model, adapter_names)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    tokens, logprobs, entropy = [], [], []
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    with rows_context, eager_attention(model):
        out, query_ids, query_mask = _prompts_pass(model, query_ids, query_mask, repeats)
        mask, positions = query_mask, position_ids_from_mask(query_mask)[:, -1:]
        for step in range(max_new_tokens):
            token, logprob, spread = sample_tokens(out.logits[:, -1], temperature, generators)
            token = torch.where(finished, torch.full_like(token, pad), token.to(device))
            tokens.append(token)
            logprobs.append(logprob.masked_fill(finished, 0.0))
            entropy.append(spread.masked_fill(finished, 0.0))
            finished |= token == eos
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            positions = positions + 1
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=positions, cache=out.cache,
                        use_cache=True, logits_to_keep=1)
    # As wide as the longest response (decoding stops when every row has ended), not always
    # max_new_tokens: no pass over the batch spends time on columns that are padding in every row.
    response = torch.stack(tokens, dim=1) if tokens else query_ids[:, :0]
    response_ids, response_mask, has_eos = truncate_after_eos(response, eos, pad)
    sampler = [torch.stack(x, dim=1) if x else torch.zeros(rows, 0, device=device) for x in (logprobs, entropy)]
    return Rollout(query_ids, query_mask, response_ids, response_mask, has_eos, *sampler)


def _prompts_pass(model, query_ids: torch.Tensor, query_mask: torch.Tensor, repeats: int):
    """The prompts' pass with their key/value cache, its rows repeated ``repeats`` times (row s * P + p from prompt
    p): (output with the last position's logits and the cache, query ids, query mask), each [P * repeats, …]."""
    def prompts_pass(ids, mask):
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=True,
                     logits_to_keep=1)

    out = prompts_pass(query_ids, query_mask)
    if repeats == 1:
        return out, query_ids, query_mask
    index = torch.arange(len(query_ids), device=query_ids.device).repeat(repeats)
    if not plain_kv_cache(out.cache):  # a cache whose rows cannot be picked: pass each repeat
        return prompts_pass(query_ids[index], query_mask[index]), query_ids[index], query_mask[index]
    out.cache.batch_select_indices(index)
    out.logits = out.logits[index]
    return out, query_ids[index], query_mask[index]


@contextlib.contextmanager
def eager_attention(model):
    """Decode with the model's plain ("eager") attention: its rows' results do not depend on the batch.

    Measured on CPU: torch's fused attention (sdpa) over a key/value cache gives a row of a 16-row batch
    outputs ~6e-8 off those of the same row in an 8-row batch (~4e-5 in the logits), enough to flip a
    sampled token now and then, after which a run of a batched sweep would part from the same run alone.
    The eager product is exact either way and decodes ~9 % slower. Training passes keep the fast kernel.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = getattr(inner.config, "_attn_implementation", None)
    if before in (None, "eager") or not hasattr(inner, "set_attn_implementation"):
        yield
        return
    inner.set_attn_implementation("eager")
    try:
        yield
    finally:
        inner.set_attn_implementation(before)


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
