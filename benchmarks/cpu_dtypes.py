"""Generation and LoRA-step time of the bundled model per precision (fp32, bf16, bnb 4-bit with bf16 or fp32 compute).

Run by hand: ``.venv/bin/python benchmarks/cpu_dtypes.py [--repeats 2]``. Prints one line per setting.
This is what decides ``dtype=auto`` (fp32 on CPU) and why PPO on CPU runs faster with ``--quant none``.
"""

from __future__ import annotations

import argparse
import time

import bench  # noqa: F401  (this checkout on sys.path)
import torch

from rlhf_engine.config import ModelConfig  # noqa: E402
from rlhf_engine.core.generation import sample_responses  # noqa: E402
from rlhf_engine.core.models import load_model_and_tokenizer, lora_config  # noqa: E402

SETTINGS = {
    "fp32": ModelConfig(quant="none", dtype="float32"),
    "bf16": ModelConfig(quant="none", dtype="bfloat16"),
    "4bit, bf16 compute": ModelConfig(quant="4bit", dtype="bfloat16"),
    "4bit, fp32 compute": ModelConfig(quant="4bit", dtype="float32"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from peft import get_peft_model

    prompts = [f"Write a short review of movie number {i}." for i in range(8)]
    tokens = torch.randint(20, 49000, (8, 64))
    for name, config in SETTINGS.items():
        model, tokenizer = load_model_and_tokenizer(config)
        gen = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            sample_responses(model, tokenizer, prompts, 32, 0.7)
            gen.append(time.perf_counter() - started)
        peft_model = get_peft_model(model, lora_config(config))
        optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
        steps = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            loss = peft_model(input_ids=tokens).logits.float().logsumexp(-1).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            steps.append(time.perf_counter() - started)
        print(f"{name:20s} generate 8x32: {min(gen):6.1f} s   LoRA step 8x64: {min(steps):6.1f} s", flush=True)
        del model, peft_model, optimizer


if __name__ == "__main__":
    main()
