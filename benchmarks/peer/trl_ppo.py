"""Peer benchmark: TRL's PPO (trl.experimental.ppo, trl 1.12.0) on CPU, timed per iteration.

Run it with benchmarks/peer/.venv-ppo/bin/python (see setup.sh). The setup is TRL's documented one:
LoRA policy (reference = the policy with its adapter disabled), a fully trainable value model and a
frozen reward model, both AutoModelForSequenceClassification with a random score head.

    python trl_ppo.py --model PATH --prompts prompts.json --iterations N --warmup W --out result.json
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
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer
from trl.experimental.ppo import ppo_trainer as trl_ppo_module


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--threads", type=int)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="weights of all four models; bfloat16 also turns on TRL's bf16 mode")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    dtype = getattr(torch, a.dtype)
    if a.threads:
        torch.set_num_threads(a.threads)

    tokenizer = AutoTokenizer.from_pretrained(a.model, padding_side="left")
    tokenizer.pad_token = pick_pad_token(tokenizer)

    prompts = json.load(open(a.prompts))
    if len(prompts) < a.batch_size:
        raise SystemExit(f"need at least --batch-size={a.batch_size} prompts "
                         "(TRL's dataloader drops the last ragged batch)")
    ids = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        for text in prompts
    ]
    dataset = Dataset.from_dict({"input_ids": ids})

    policy = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype)
    torch.manual_seed(0)  # the score heads are freshly initialised: make them reproducible
    value_model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=dtype)
    reward_model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=dtype)
    for m in (policy, value_model, reward_model):
        m.config.pad_token_id = tokenizer.pad_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id  # fill after EOS with pad, not EOS
    rss_after_load = resident_rss(policy, value_model, reward_model)

    lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")
    total_iterations = a.warmup + a.iterations
    config = PPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-ppo-"),
        per_device_train_batch_size=a.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=a.epochs,
        response_length=a.response_length,
        temperature=a.temperature,
        kl_coef=a.kl_coef,
        stop_token="eos",
        total_episodes=a.batch_size * total_iterations,  # one iteration = one batch of episodes
        learning_rate=a.lr,
        local_rollout_forward_batch_size=a.batch_size,  # whole batch in one generate / forward
        num_sample_generations=0,  # no debugging sample generations between steps
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=True,
        bf16=a.dtype == "bfloat16",  # PPOConfig defaults bf16 to True; fp32 is compared against fp32
        fp16=False,
        gradient_checkpointing=False,  # defaults to True, but PPOTrainer.train() never turns it on anyway
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        seed=0,
    )

    # Count the real response tokens per iteration (up to and including EOS; later positions are pad and
    # masked out of every loss). TRL only logs the EOS count, so observe its truncate_response() call:
    # the wrapper returns exactly what TRL computes.
    counted = {"tokens": 0}
    truncate = trl_ppo_module.truncate_response

    def counting_truncate(stop_token_id, pad_token_id, responses):
        out = truncate(stop_token_id, pad_token_id, responses)
        counted["tokens"] += int(trl_ppo_module.first_true_indices(out == pad_token_id).sum())
        return out

    trl_ppo_module.truncate_response = counting_truncate

    timer = StepTimer()
    tokens_per_iteration = []

    class TokenCounter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            tokens_per_iteration.append(counted["tokens"])
            counted["tokens"] = 0

    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, value_model=value_model, train_dataset=dataset,
                         peft_config=lora, callbacks=[TokenCounter(), timer])
    timer.start()
    trainer.train()

    iteration_s = timer.step_s
    measured = iteration_s[a.warmup:]
    median = statistics.median(measured) if measured else None
    measured_tokens = tokens_per_iteration[a.warmup:]
    tokens = statistics.median(measured_tokens) if measured_tokens else None
    result = {
        "peer": "trl",
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "iteration_s": iteration_s,
        "measured_s": measured,
        "median_s": median,
        "response_tokens_per_iteration": tokens,  # median over the measured iterations
        "response_tokens_all": tokens_per_iteration,
        "response_tokens_note": "non-pad response tokens incl. EOS (what TRL's losses average over), "
                                f"upper bound batch_size*response_length = {a.batch_size * a.response_length}",
        "eos_per_iteration": [log.get("val/num_eos_tokens") for log in timer.logs if "val/num_eos_tokens" in log],
        "tokens_per_s": tokens / median if median and tokens else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": rss_after_load,
        "settings": {
            "model": a.model, "prompts": len(prompts), "iterations": a.iterations, "warmup": a.warmup,
            "batch_size": a.batch_size, "response_length": a.response_length, "ppo_epochs": a.epochs,
            "num_mini_batches": 1, "lora_r": a.lora_r, "lora_alpha": a.lora_alpha,
            "lora_target_modules": "all-linear", "temperature": a.temperature, "lr": a.lr,
            "kl_coef": a.kl_coef, "kl_estimator": config.kl_estimator, "vf_coef": config.vf_coef,
            "cliprange": config.cliprange, "cliprange_value": config.cliprange_value,
            "gamma": config.gamma, "lam": config.lam, "dtype": a.dtype, "pad_token": tokenizer.pad_token,
            "optimizer": getattr(config.optim, "value", config.optim),
            "lr_scheduler": getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type),
            "grad_clipping": "none (PPOTrainer.train() never clips)",
            "value_model": "full AutoModelForSequenceClassification, all weights trainable",
            "reward_model": "AutoModelForSequenceClassification, random score head (seed 0), frozen",
            "reference": "policy with LoRA adapter disabled",
        },
        "trl_logs": timer.logs,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("iteration_s", "median_s", "response_tokens_per_iteration",
                                             "tokens_per_s", "peak_rss_bytes", "rss_after_load_bytes")}))


if __name__ == "__main__":
    main()
