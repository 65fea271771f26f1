"""Peer benchmark: TRL's current RewardTrainer (trl 1.16.0) on CPU, timed per optimizer step.

Run it with benchmarks/peer/.venv-reward/bin/python (see setup.sh).

    python trl_reward.py --model PATH --pairs pairs.jsonl --steps N --warmup W --out result.json

pairs.jsonl rows: {"prompt": str, "chosen": str, "rejected": str}. By default the prompt is rendered with the
chat template (user turn + assistant header) and passed as a plain string; TRL then tokenizes
prompt + response + EOS, the same tokens the workbench's reward model scores. --conversational passes TRL's
conversational format instead (the template then also appends "\\n" after the closing <|im_end|>).
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
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--pairs", required=True)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--conversational", action="store_true", help="pass TRL's conversational format")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="RewardConfig's own default (True); off by default here, as in the workbench")
    p.add_argument("--threads", type=int)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    tokenizer = AutoTokenizer.from_pretrained(a.model)
    tokenizer.pad_token = pick_pad_token(tokenizer)

    rows = [json.loads(line) for line in open(a.pairs) if line.strip()]
    if len(rows) < a.batch_size:
        raise SystemExit(f"need at least --batch-size={a.batch_size} pairs")
    if a.conversational:
        data = {"prompt": [[{"role": "user", "content": r["prompt"]}] for r in rows],
                "chosen": [[{"role": "assistant", "content": r["chosen"]}] for r in rows],
                "rejected": [[{"role": "assistant", "content": r["rejected"]}] for r in rows]}
    else:
        data = {"prompt": [tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}],
                                                         add_generation_prompt=True, tokenize=False) for r in rows],
                "chosen": [r["chosen"] for r in rows],  # TRL appends the EOS token to plain-text responses
                "rejected": [r["rejected"] for r in rows]}
    dataset = Dataset.from_dict(data)

    torch.manual_seed(0)  # fresh score head (RewardTrainer also calls set_seed(args.seed) itself)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    rss_after_load = resident_rss(model)

    # task_type SEQ_CLS puts the score head in modules_to_save, so it trains alongside the LoRA weights.
    lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      bias="none", task_type="SEQ_CLS")
    config = RewardConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-reward-"),
        per_device_train_batch_size=a.batch_size,  # pairs: TRL stacks chosen + rejected into 2x this many rows
        gradient_accumulation_steps=1,
        max_steps=a.warmup + a.steps,
        max_length=a.max_length,  # NB: TRL drops longer pairs, it does not truncate them
        learning_rate=a.lr,
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        bf16=False,  # RewardConfig defaults bf16 to True; compare fp32 with fp32
        fp16=False,
        gradient_checkpointing=a.gradient_checkpointing,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        dataloader_drop_last=True,  # every step a full batch of pairs, even when an epoch ends
        seed=0,
    )
    timer = StepTimer()
    trainer = RewardTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                            peft_config=lora, callbacks=[timer])
    if len(trainer.train_dataset) < len(rows):
        print(f"note: TRL dropped {len(rows) - len(trainer.train_dataset)} pairs longer than {a.max_length} tokens")
    timer.start()
    trainer.train()

    step_s = timer.step_s
    measured = step_s[a.warmup:]
    median = statistics.median(measured) if measured else None
    result = {
        "peer": "trl-reward",
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "step_s": step_s,
        "measured_s": measured,
        "median_step_s": median,
        "pairs_per_s": a.batch_size / median if median else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_after_load,
        "settings": {
            "model": a.model, "pairs": len(rows), "pairs_used": len(trainer.train_dataset), "steps": a.steps,
            "warmup": a.warmup, "batch_size_pairs": a.batch_size, "lora_r": a.lora_r, "lora_alpha": a.lora_alpha,
            "lora_target_modules": "all-linear", "max_length": a.max_length, "lr": a.lr,
            "optimizer": getattr(config.optim, "value", config.optim),
            "lr_scheduler": getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type),
            "max_grad_norm": config.max_grad_norm,
            "weight_decay": config.weight_decay, "gradient_checkpointing": a.gradient_checkpointing,
            "format": "conversational" if a.conversational else "plain (chat-formatted prompt string)",
            "pooling": "last non-pad token (transformers *ForSequenceClassification)",
            "dtype": "float32", "pad_token": tokenizer.pad_token,
        },
        "trl_logs": timer.logs,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("step_s", "median_step_s", "pairs_per_s", "peak_rss_bytes",
                                             "rss_after_load_bytes")}))


if __name__ == "__main__":
    main()
