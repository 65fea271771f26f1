"""What both peer scripts need: offline settings, the pad token, resident memory, a step timer."""

import os
import sys
from pathlib import Path

# Everything is local: never reach for the hub (TRL/transformers would otherwise try telemetry).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import psutil  # noqa: E402
import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from turns import StepClock  # noqa: E402  (benchmarks/turns.py: taking turns with our process)


def resident_rss(*models):
    """RSS once the weights are really in memory: transformers memory-maps safetensors, so pages only
    arrive when first read (during the first iteration otherwise). Touch every parameter, then read RSS."""
    with torch.no_grad():
        for m in models:
            for param in m.parameters():
                param.sum()
    return psutil.Process().memory_info().rss


def pick_pad_token(tokenizer):
    """An existing special token the chat template never emits. The stock pad is EOS: TRL's PPO masks every
    pad position (it would hide the EOS tokens) and sequence classification pools at the last non-pad token.
    No embedding resize."""
    template = tokenizer.chat_template or ""
    reserved = {tokenizer.eos_token, tokenizer.bos_token, tokenizer.unk_token}
    for _, tok in sorted(tokenizer.added_tokens_decoder.items()):
        if tok.special and tok.content not in template and tok.content not in reserved:
            return tok.content
    raise SystemExit("no unused special token to serve as pad")


class StepTimer(TrainerCallback):
    """Seconds per trainer step (for TRL's PPO: one rollout + num_ppo_epochs updates) and the logged rows.

    Put it last among the callbacks: under ``compare_trl.py`` the process stops at the end of each step
    until its turn comes again, and that wait is not counted.
    """

    def __init__(self):
        self.clock, self.logs = StepClock(), []

    @property
    def step_s(self):
        return self.clock.step_s

    def start(self):
        self.clock.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.step_done()

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))
