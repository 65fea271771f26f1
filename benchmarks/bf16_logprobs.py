"""How far bf16 moves the bundled model's log-probs from fp32's: the cost in exactness of ``--dtype bfloat16``.

Run by hand: ``.venv/bin/python benchmarks/bf16_logprobs.py``. Samples 8 answers (32 new tokens at T 0.7)
to demo prompts with the fp32 model, then reads the log-prob of every answer token with the fp32 and the
bf16 model (the same weights rounded) and prints the mean and RMS of the difference per token and the
mean absolute difference summed over an answer, in nats: to set beside the KL a run reports.
"""

from __future__ import annotations

import bench  # noqa: F401  (this checkout on sys.path)
import torch

from rlhf_engine.config import ModelConfig  # noqa: E402
from rlhf_engine.core.generation import response_logits, sample_responses, token_logprobs  # noqa: E402
from rlhf_engine.core.models import load_model_and_tokenizer  # noqa: E402
from rlhf_engine.lab.demo import demo_prompts  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    fp32, tokenizer = load_model_and_tokenizer(ModelConfig(quant="none", dtype="float32"))
    bf16, _ = load_model_and_tokenizer(ModelConfig(quant="none", dtype="bfloat16"))
    rollout = sample_responses(fp32, tokenizer, demo_prompts()[:8], 32, 0.7)
    length = rollout.response_ids.shape[1]
    with torch.no_grad():
        exact, rounded = (token_logprobs(response_logits(m, rollout.input_ids, rollout.attention_mask, length, 0.7),
                                         rollout.response_ids) for m in (fp32, bf16))
    mask = rollout.response_mask.bool()
    diff = (rounded - exact)[mask]
    per_answer = ((rounded - exact) * mask).sum(1).abs().mean()
    print(f"{int(mask.sum())} answer tokens: mean |d log p| {diff.abs().mean():.3f} nats, "
          f"RMS {diff.pow(2).mean().sqrt():.3f}, "
          f"summed over an answer {per_answer:.2f} nats (mean of |sum|)")


if __name__ == "__main__":
    main()
