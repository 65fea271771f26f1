"""Peer benchmark: TRL 1.16's GRPOTrainer, RLOOTrainer or DPOTrainer on CPU, timed per optimizer step.

Run it with benchmarks/peer/.venv-reward/bin/python (see setup.sh); ``compare_trl.py --methods`` runs it
beside ``benchmarks/method_speed.py``, taking turns.

    python trl_methods.py --method grpo --model PATH --prompts prompts.json --steps N --warmup W --out result.json
    python trl_methods.py --method dpo --model PATH --pairs pairs.jsonl --steps N --warmup W --out result.json

The settings are the workbench's (benchmarks/method_speed.py): fp32, LoRA rank 8 (alpha 16) on every linear
layer with the reference = adapter off; GRPO and RLOO: 8 completions a step (2 prompts × 4 generations), 32 new
tokens at T 0.7 (top-k 0, top-p 1), one optimizer step per generation batch (num_iterations 1), the reward
from an AutoModelForSequenceClassification on the same base with an untrained head, GRPO β 0.04 with
loss_type "grpo" (per-sequence token means, std-scaled advantages) and RLOO β 0.05 (KL in the reward); DPO:
8 pairs a step, sigmoid loss, β 0.1, max_length 256, reference log-probs computed each step. Prompts are
conversational (TRL applies the chat template, as the workbench does).
"""

import argparse
import json
import resource
import statistics
import tempfile

import torch
import transformers
import trl
from common import StepTimer, pick_pad_token, resident_rss  # sets the offline environment first
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def common_args(a, steps: int) -> dict:
    """The Trainer arguments every method shares: CPU, fp32, no saving, no logging elsewhere, one step a row."""
    return dict(output_dir=tempfile.mkdtemp(prefix=f"trl-{a.method}-"), per_device_train_batch_size=a.batch_size,
                gradient_accumulation_steps=1, max_steps=steps, learning_rate=a.lr, lr_scheduler_type="constant",
                save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True, use_cpu=True, bf16=False,
                fp16=False, gradient_checkpointing=False, dataloader_num_workers=0, dataloader_pin_memory=False,
                seed=0)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", choices=("grpo", "rloo", "dpo"), required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", help="JSON list of prompts (GRPO, RLOO)")
    p.add_argument("--pairs", help="pairs .jsonl (DPO)")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8, help="completions per step (DPO: pairs)")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    tokenizer.pad_token = pick_pad_token(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    models = [model]
    lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules="all-linear", bias="none",
                      task_type="CAUSAL_LM")
    timer = StepTimer()
    steps = a.warmup + a.iterations
    if a.method == "dpo":
        rows = [json.loads(line) for line in open(a.pairs) if line.strip()]
        dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                                     "chosen": [[{"role": "assistant", "content": r["chosen"]}] for r in rows],
                                     "rejected": [[{"role": "assistant", "content": r["rejected"]}] for r in rows]})
        config = trl.DPOConfig(**common_args(a, steps), beta=0.1, max_length=a.max_length, loss_type=["sigmoid"],
                               precompute_ref_log_probs=False, dataloader_drop_last=True)
        rss_after_load = resident_rss(*models)
        trainer = trl.DPOTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                                 peft_config=lora, callbacks=[timer])
    else:
        prompts = json.load(open(a.prompts))
        dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": text}] for text in prompts]})
        torch.manual_seed(0)  # the reward model's untrained head
        reward = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=torch.float32)
        reward.config.pad_token_id = tokenizer.pad_token_id
        models.append(reward)
        shared = dict(num_generations=a.group_size, max_completion_length=a.response_length, temperature=0.7,
                      top_p=1.0, top_k=0, num_iterations=1, log_completions=False)
        if a.method == "grpo":
            config = trl.GRPOConfig(**common_args(a, steps), **shared, beta=0.04, loss_type="grpo",
                                    scale_rewards="group")
            trainer_class = trl.GRPOTrainer
        else:
            config = trl.RLOOConfig(**common_args(a, steps), **shared, beta=0.05)
            trainer_class = trl.RLOOTrainer
        rss_after_load = resident_rss(*models)
        trainer = trainer_class(model=model, reward_funcs=reward, args=config, train_dataset=dataset,
                                processing_class=tokenizer, reward_processing_classes=tokenizer, peft_config=lora,
                                callbacks=[timer])
    timer.start()
    trainer.train()

    step_s = timer.step_s
    measured = step_s[a.warmup:]
    median = statistics.median(measured) if measured else None
    result = {
        "peer": f"trl-{a.method}", "method": a.method, "trl_version": trl.__version__,
        "transformers_version": transformers.__version__, "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "step_s": step_s, "measured_s": measured, "median_s": median,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_after_load,
        "settings": {k: v for k, v in vars(a).items() if k != "out"},
        "trl_logs": timer.logs,
    }
    if a.method == "dpo":
        result["pairs_per_s"] = a.batch_size / median if median else None
    else:
        lengths = [row["completions/mean_length"] for row in timer.logs if "completions/mean_length" in row]
        tokens = statistics.median(lengths[a.warmup:] or lengths) * a.batch_size if lengths else None
        result.update(response_tokens_per_step=tokens, tokens_per_s=tokens / median if tokens and median else None)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result.get(k) for k in ("step_s", "median_s", "tokens_per_s", "pairs_per_s",
                                                 "peak_rss_bytes")}))


if __name__ == "__main__":
    main()
