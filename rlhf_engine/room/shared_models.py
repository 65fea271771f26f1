"""The models the room's server keeps for every participant: one copy of each base model, each participant's reward
models as adapters on it.

The server itself runs a little model work for participants: the Model page's chat, the Preferences page's "Write
two answers" and the reward model's "Try it". Loaded per participant, 20 participants would hold 20 copies of the
base (or reload it by turns). A ``SharedBase`` holds one copy; a reward model joins it as a LoRA adapter of its
own with its own head (``RewardModel.load(..., base=...)``), and plain generation runs with every adapter off.
Adapters switch per call, so calls take the base's lock one at a time; they are short (one answer, one score).
The memory of the bases is kept out of the room's job slots (``scheduler.shared_models_bytes``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

from rlhf_engine.config import ModelConfig

MAX_REWARD_ADAPTERS = 64  # reward models kept on one base (a LoRA adapter and head: a few MB each); oldest go first
IDLE_ADAPTER = "idle"  # a rank-1 adapter that makes the base a PEFT model before any reward model joins it


class SharedBase:
    """One base model for every participant's chat and scoring (see the module)."""

    def __init__(self, config: ModelConfig):
        from peft import get_peft_model

        from rlhf_engine.core.models import load_model_and_tokenizer, lora_config

        self.config = config
        model, self.tokenizer = load_model_and_tokenizer(config)
        idle = lora_config(config)
        idle.r, idle.lora_alpha, idle.inference_mode = 1, 1, True
        self.model = get_peft_model(model, idle, adapter_name=IDLE_ADAPTER)
        self.model.eval()
        self.lock = threading.RLock()
        self._rewards: OrderedDict[tuple, object] = OrderedDict()

    @contextmanager
    def plain(self):
        """(model, tokenizer) of the base alone, every adapter off, for as long as the block runs."""
        with self.lock, self.model.disable_adapter():
            yield self.model, self.tokenizer

    @contextmanager
    def reward_model(self, folder: Path):
        """A participant's trained reward model on this base (its adapter loaded once, again when its folder is
        rewritten), for as long as the block runs."""
        from rlhf_engine.core.reward import META_FILE, RewardModel

        folder = Path(folder).resolve()
        key = (str(folder), (folder / META_FILE).stat().st_mtime_ns)
        with self.lock:
            found = self._rewards.get(key)
            if found is None:
                for old in [k for k in self._rewards if k[0] == key[0]]:  # the same folder, saved before
                    self._forget(old)
                found = RewardModel.load(folder, model_config=self.config, base=(self.model, self.tokenizer,
                                                                                 self.config))
                self._rewards[key] = found
                while len(self._rewards) > MAX_REWARD_ADAPTERS:
                    self._forget(next(iter(self._rewards)))
            self._rewards.move_to_end(key)
            yield found

    def _forget(self, key: tuple) -> None:
        reward = self._rewards.pop(key)
        if reward.adapter_name in self.model.peft_config:
            self.model.delete_adapter(reward.adapter_name)
            self.model.set_adapter(IDLE_ADAPTER)

    def memory_bytes(self) -> int:
        return self.model.get_memory_footprint()
