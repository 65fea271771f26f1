"""Bradley-Terry reward model: a (4-bit) base with a LoRA adapter and a linear score head.

The score is read at the last real token of prompt + response + EOS (never at a pad), or, with
``pooling="mean"``, from the mean of the response tokens' states (EOS included); the head starts
at N(0, 1/sqrt(d+1)) (Ziegler et al. 2019), and scores are normalised to mean 0, std 1 on responses
of the initial policy; the gain and bias are stored with the model. A saved model is a PEFT adapter
folder plus ``score_head.safetensors`` and ``reward_model.json``:
``PeftModel.from_pretrained(base, folder / 'reward')`` loads the adapter elsewhere.

On a base model shared with a policy (``share_base``, or ``load`` with ``base=``) the adapter is named "reward"
when that name is free, else "reward-<hash of its folder>": several reward models (a workshop group's members,
each with their own) then score side by side on one copy of the base weights, each as it does alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rlhf_engine.config import ModelConfig, RewardConfig, from_dict, to_dict
from rlhf_engine.core.batching import batch_indices
from rlhf_engine.core.generation import decode_responses, last_hidden_state, sample_responses
from rlhf_engine.core.heads import load_head, new_head, new_lora_model, save_head
from rlhf_engine.core.lora_fused import fuse_lora_products
from rlhf_engine.core.models import encode_prompt, left_pad, load_model_and_tokenizer, set_seed
from rlhf_engine.core.normalisation import normalized as normalized_scores
from rlhf_engine.core.prompt_cache import shared_prompt_scores
from rlhf_engine.core.rollout import check_finite
from rlhf_engine.data.pairs import PreferencePair, prompt_text
from rlhf_engine.runs.runfolder import atomic_write_text

log = logging.getLogger(__name__)

ADAPTER_NAME = "reward"  # the adapter's subfolder of a saved reward model, and its name in a model of its own
META_FILE = "reward_model.json"
HEAD_FILE = "score_head.safetensors"


def score_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left or right padding."""
    width = attention_mask.shape[1]
    flipped_first = attention_mask.flip(1).long().argmax(1)
    return width - 1 - flipped_first


def same_base_weights(a: ModelConfig, b: ModelConfig) -> bool:
    """Whether models loaded with configs ``a`` and ``b`` have exactly the same base weights."""
    return (a.source, a.quant, a.dtype, a.device) == (b.source, b.quant, b.dtype, b.device)


def free_adapter_name(peft_model, folder: Path | None) -> str:
    """A name for a reward model's adapter that no adapter of ``peft_model`` has: "reward" when it is free, else
    "reward-" and 8 hex digits of its folder's path (another reward model is there already), then "-2", "-3", ...
    when the same folder was loaded there twice."""
    taken = set(peft_model.peft_config)
    if ADAPTER_NAME not in taken:
        return ADAPTER_NAME
    digest = hashlib.sha1(str(Path(folder).resolve() if folder else "").encode()).hexdigest()[:8]
    name, copy = f"{ADAPTER_NAME}-{digest}", 1
    while name in taken:
        copy += 1
        name = f"{ADAPTER_NAME}-{digest}-{copy}"
    return name


def add_frozen_adapter(peft_model, name: str, config, state: dict) -> None:
    """Add a LoRA adapter with weights ``state`` (PEFT's saved keys) to ``peft_model`` as ``name``, untrained."""
    from peft.utils import set_peft_model_state_dict

    peft_model.add_adapter(name, config)
    set_peft_model_state_dict(peft_model, state, adapter_name=name)
    for param_name, param in peft_model.named_parameters():
        if f".{name}." in param_name:
            param.requires_grad_(False)
    fuse_lora_products(peft_model)  # idempotent: layers the adapter added take the fused path too


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(r_chosen - r_rejected), averaged over pairs."""
    return -F.logsigmoid(chosen - rejected).mean()


class RewardModel(nn.Module):
    """Base LM + LoRA adapter + linear head on the last real token's hidden state (or the response mean)."""

    def __init__(self, backbone, tokenizer, head: nn.Linear, model_config: ModelConfig,
                 gain: float = 1.0, bias: float = 0.0, max_length: int = 256, normalized_on: str | None = None,
                 pooling: str = "last", adapter_name: str = ADAPTER_NAME, folder: Path | None = None):
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.head = head
        self.model_config = model_config
        self.gain = gain
        self.bias = bias
        self.max_length = max_length
        self.normalized_on = normalized_on
        self.pooling = pooling
        self.adapter_name = adapter_name  # its adapter's name in ``backbone`` (a shared base may hold several)
        self.folder = folder  # where it was loaded from (None: trained in this process)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def same_base(self, config: ModelConfig) -> bool:
        """Whether a model loaded with ``config`` has exactly this reward model's base weights."""
        return same_base_weights(config, self.model_config)

    def share_base(self, peft_model) -> None:
        """Move this model's adapter onto ``peft_model`` (a PEFT model of the same base) and drop its own base.

        PPO's policy is usually the reward model's base: one copy of the base weights then serves policy,
        reference, value and reward. Scoring activates this model's adapter and puts back the one active before.
        The adapter is "reward" there unless another reward model took that name (``free_adapter_name``).
        """
        from peft.utils import get_peft_model_state_dict

        if peft_model is self.backbone:  # a second run on the same base (a batched sweep): shared already
            return
        name = free_adapter_name(peft_model, self.folder)
        state = get_peft_model_state_dict(self.backbone, adapter_name=self.adapter_name)
        add_frozen_adapter(peft_model, name, self.backbone.peft_config[self.adapter_name], state)
        self.backbone, self.adapter_name = peft_model, name

    def twin(self) -> "RewardModel":
        """Another handle on this model's adapter and head (no copy) with a gain and bias of its own, as saved: runs
        that score with one reward model on one base each normalise its scores for their own policy."""
        gain, bias = self.gain, self.bias
        if self.folder is not None:
            meta = json.loads((Path(self.folder) / META_FILE).read_text())
            gain, bias = meta["gain"], meta["bias"]
        return RewardModel(self.backbone, self.tokenizer, self.head, self.model_config, gain, bias, self.max_length,
                           self.normalized_on, self.pooling, self.adapter_name, self.folder)

    @contextlib.contextmanager
    def reward_adapter(self):
        """This model's adapter active while scoring; the previously active adapter restored after."""
        previous = getattr(self.backbone, "active_adapter", self.adapter_name)
        if previous == self.adapter_name:
            yield
            return
        trainable = {n for n, p in self.backbone.named_parameters() if p.requires_grad}
        self.backbone.set_adapter(self.adapter_name)
        try:
            yield
        finally:
            self.backbone.set_adapter(previous)
            for name, param in self.backbone.named_parameters():  # set_adapter also changed what trains
                param.requires_grad_(name in trainable)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                response_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Raw (unnormalised) scores [B]; ``response_mask`` (1 on response tokens) is needed for mean pooling."""
        with self.reward_adapter():
            hidden = last_hidden_state(self.backbone, input_ids, attention_mask)
        return self.pooled_score(hidden, attention_mask, response_mask)

    def pooled_score(self, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     response_mask: torch.Tensor | None) -> torch.Tensor:
        """The head on the last real token's state (or the response tokens' mean): [B]."""
        if self.pooling == "mean":
            if response_mask is None:
                raise ValueError("a mean-pooled reward model needs the response mask")
            weights = response_mask.to(hidden.dtype).unsqueeze(-1)
            features = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        else:
            rows = torch.arange(hidden.shape[0], device=hidden.device)
            features = hidden[rows, score_index(attention_mask)]
        return self.head(features.to(self.head.weight.dtype)).squeeze(-1)

    def encode(self, prompt, response: str) -> tuple[list[int], int]:
        """Tokens of prompt (chat-formatted) + response + EOS, cut from the left to max_length, and how
        many of them (at the end) are the response with its EOS."""
        prompt_ids = encode_prompt(self.tokenizer, prompt, self.model_config.chat_template)
        response_ids = self.tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids + [self.tokenizer.eos_token_id])[-self.max_length:]
        return ids, min(len(response_ids) + 1, len(ids))

    def batch(self, prompts: Sequence, responses: Sequence[str]):
        """(input_ids, attention_mask, response_mask) for prompt/response pairs, left-padded."""
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses)]
        ids, mask = left_pad([tokens for tokens, _ in encoded], self.tokenizer.pad_token_id, self.device)
        positions = torch.arange(ids.shape[1], device=ids.device)
        response_starts = torch.tensor([ids.shape[1] - n for _, n in encoded], device=ids.device)
        return ids, mask, (positions[None, :] >= response_starts[:, None]).long()

    def answer_pair_scores(self, pairs: Sequence[PreferencePair]) -> torch.Tensor | None:
        """Raw scores [2B] of (chosen_0, rejected_0, chosen_1, …) with each prompt passed once, or None
        (``shared_prompt_scores``)."""
        return shared_prompt_scores(self, [p.prompt for p in pairs for _ in range(2)],
                                    [text for p in pairs for text in (p.chosen, p.rejected)])

    @torch.no_grad()
    def score(self, prompts: Sequence, responses: Sequence[str], normalized: bool = True,
              batch_size: int = 16) -> torch.Tensor:
        """Scores of responses to prompts; normalised with the stored gain and bias unless asked not to. A prompt
        with several answers (best-of-n's samples, a group method's) passes once (``shared_prompt_scores``)."""
        raw = None
        if len({prompt_text(p) for p in prompts}) < len(prompts):
            raw = shared_prompt_scores(self, prompts, responses, rows=4 * batch_size)
        if raw is None:
            out = [self(*self.batch(prompts[i:i + batch_size], responses[i:i + batch_size])).float()
                   for i in range(0, len(prompts), batch_size)]
            raw = torch.cat(out) if out else torch.zeros(0)
        raw = raw.cpu()
        return normalized_scores(raw, self) if normalized else raw

    def save(self, folder: Path) -> None:
        """Adapter (PEFT, safetensors), score head (safetensors) and settings (JSON)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.adapter_name == ADAPTER_NAME:
            self.backbone.save_pretrained(folder, selected_adapters=[ADAPTER_NAME])  # -> folder/reward/
        else:  # named apart on a shared base: saved as reward/ all the same
            self._save_adapter_as_reward(folder / ADAPTER_NAME)
        save_head(self.head, folder / HEAD_FILE)
        meta = {
            "model": to_dict(self.model_config),
            "gain": self.gain,
            "bias": self.bias,
            "max_length": self.max_length,
            "normalized_on": self.normalized_on,
            "pooling": self.pooling,
        }
        atomic_write_text(folder / META_FILE, json.dumps(meta, indent=2) + "\n")  # last: it marks the folder whole

    def _save_adapter_as_reward(self, target: Path) -> None:
        """This model's adapter as the PEFT folder ``target`` (what ``save_pretrained`` writes for "reward")."""
        from peft.utils import get_peft_model_state_dict
        from safetensors.torch import save_file

        target.mkdir(parents=True, exist_ok=True)
        weights = get_peft_model_state_dict(self.backbone, adapter_name=self.adapter_name)
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                  str(target / "adapter_model.safetensors"))
        self.backbone.peft_config[self.adapter_name].save_pretrained(str(target))

    @classmethod
    def load(cls, folder: Path, model_config: ModelConfig | None = None, base: tuple | None = None) -> "RewardModel":
        """Reload a saved reward model (optionally on other quantization/device settings).

        ``base`` = (PEFT model, tokenizer, the ModelConfig it was loaded with), a policy's: when it has this
        reward model's base weights (``same_base``), the adapter goes onto it under a name of its own
        (``free_adapter_name``) and no second copy of the base is loaded; otherwise the model loads its own.
        """
        from peft import PeftModel

        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise FileNotFoundError(f"{folder} is not a reward model folder (no {META_FILE})")
        meta = json.loads((folder / META_FILE).read_text())
        config = model_config or from_dict(ModelConfig, meta["model"])
        if base is not None and same_base_weights(config, base[2]):
            backbone, tokenizer, name = base[0], base[1], free_adapter_name(base[0], folder)
            _load_adapter_onto(backbone, name, folder / ADAPTER_NAME)
        else:
            model, tokenizer = load_model_and_tokenizer(config)
            name = ADAPTER_NAME
            backbone = PeftModel.from_pretrained(model, str(folder / ADAPTER_NAME), adapter_name=name)
            fuse_lora_products(backbone)
            backbone.eval()
        head = load_head(folder / HEAD_FILE, device=backbone.device)
        return cls(backbone, tokenizer, head, config, meta["gain"], meta["bias"], meta["max_length"],
                   meta.get("normalized_on"), meta.get("pooling", "last"), adapter_name=name, folder=folder)


def _load_adapter_onto(peft_model, name: str, adapter_dir: Path) -> None:
    """A saved PEFT adapter folder onto ``peft_model`` as the frozen adapter ``name``."""
    from peft import PeftConfig
    from safetensors.torch import load_file

    config = PeftConfig.from_pretrained(str(adapter_dir))
    config.inference_mode = True
    state = load_file(str(adapter_dir / "adapter_model.safetensors"), device=str(peft_model.device))
    add_frozen_adapter(peft_model, name, config, state)


def new_reward_model(config: RewardConfig) -> RewardModel:
    """Base model + fresh LoRA adapter + head initialised N(0, 1/sqrt(d+1))."""
    backbone, tokenizer = new_lora_model(config.model, ADAPTER_NAME)
    fuse_lora_products(backbone)
    return RewardModel(backbone, tokenizer, new_head(backbone, random_init=True), config.model,
                       max_length=config.max_length, pooling=config.resolved_pooling())


def split_pairs(pairs: Sequence[PreferencePair], eval_fraction: float, seed: int):
    """Seeded (train, held-out) split; at least one pair on each side."""
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 preference pairs to train and evaluate, got {len(pairs)}")
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = min(max(1, round(len(pairs) * eval_fraction)), len(pairs) - 1)
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def pair_scores(rm: RewardModel, pairs: Sequence[PreferencePair]):
    """(chosen scores, rejected scores) of a batch of pairs.

    Both answers of a pair follow the same prompt, and attention is causal, so the prompt's states do not
    depend on the answer: the prompt passes through the model once and both answers continue from its
    cached keys and values (``RewardModel.answer_pair_scores``; the same scores and gradients, a third
    fewer tokens with the demo's pairs). When a sequence would be cut to max_length (its prompt would then
    differ between the answers), or the model's cache is not a plain key/value cache, it scores one batch
    of 2B whole sequences instead.
    """
    scores = rm.answer_pair_scores(pairs)
    if scores is not None:
        return scores[0::2], scores[1::2]
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    scores = rm(*rm.batch(prompts, responses)).float()
    return scores[: len(pairs)], scores[len(pairs):]


@torch.no_grad()
def evaluate(rm: RewardModel, pairs: Sequence[PreferencePair], batch_size: int = 16) -> dict:
    """Held-out accuracy (chosen scored above rejected) and margins (raw score units)."""
    margins: list[float] = []
    for i in range(0, len(pairs), batch_size):
        chosen, rejected = pair_scores(rm, pairs[i:i + batch_size])
        margins.extend((chosen - rejected).cpu().tolist())
    n = max(len(margins), 1)
    return {
        "accuracy": sum(m > 0 for m in margins) / n,
        "margin_mean": sum(margins) / n,
        "margins": margins,
    }


@torch.no_grad()
def normalize_on_policy(rm: RewardModel, policy, policy_tokenizer, prompts: Sequence, n_samples: int,
                        response_length: int, temperature: float, chat_template: bool = True,
                        batch_size: int = 16, policy_context: Callable = contextlib.nullcontext) -> dict:
    """Set gain/bias so scores of the policy's own samples have mean 0 and std 1 (Ziegler et al.).

    ``policy_context`` is entered only while sampling: when the policy is the RM's own base with its
    adapter disabled, the scoring must still run with the adapter on.
    """
    chosen_prompts = [prompts[i % len(prompts)] for i in range(n_samples)]
    raw = []
    for i in range(0, n_samples, batch_size):
        batch = chosen_prompts[i:i + batch_size]
        with policy_context():
            rollout = sample_responses(policy, policy_tokenizer, batch, response_length, temperature, chat_template)
        raw.append(rm.score(batch, decode_responses(policy_tokenizer, rollout), normalized=False))
    scores = torch.cat(raw)
    mean, std = scores.mean().item(), scores.std().item() if len(scores) > 1 else 1.0
    std = std if std > 1e-6 else 1.0
    rm.gain, rm.bias = 1.0 / std, -mean / std
    return {"norm/raw_mean": mean, "norm/raw_std": std, "norm/samples": len(scores)}


def linear_warmup_decay(optimizer, steps: int, warmup_ratio: float):
    """Learning rate rising linearly over the first ``warmup_ratio`` of steps, then falling linearly to 0."""
    warmup = max(1, int(steps * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )


def train_reward_model(
    config: RewardConfig,
    pairs: Sequence[PreferencePair],
    on_metrics: Callable[[dict], None] = lambda m: None,
    should_stop: Callable[[], bool] = lambda: False,
    on_checkpoint: Callable[[RewardModel, dict], None] | None = None,
    resume: dict | None = None,
) -> tuple[RewardModel, dict | None]:
    """Train with the Bradley-Terry loss; return the model and its final held-out evaluation.

    The evaluation is None when ``should_stop`` ended training early (a checkpoint of the last
    finished step is passed to ``on_checkpoint`` first). ``resume`` is such a checkpoint dict.
    """
    set_seed(config.seed)
    train, held_out = split_pairs(list(pairs), config.eval_fraction, config.seed)
    rm = new_reward_model(config)
    params = [p for p in rm.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = linear_warmup_decay(optimizer, config.steps, config.warmup_ratio)
    start = 0
    if resume is not None:
        rm.load_state_dict(resume["model"], strict=False)
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start = resume["step"]
    for step in range(start + 1, config.steps + 1):
        if should_stop():
            if on_checkpoint is not None and step - 1 > start:
                on_checkpoint(rm, checkpoint_state(rm, optimizer, scheduler, step - 1))
            return rm, None
        batch = [train[i] for i in batch_indices(len(train), config.batch_size, step, config.seed)]
        chosen, rejected = pair_scores(rm, batch)
        loss = bradley_terry_loss(chosen, rejected)
        for name, value in (("reward-model score", torch.cat([chosen, rejected])), ("reward-model loss", loss)):
            check_finite(name, value, step, hint="try a lower learning rate")
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        metrics = {
            "step": step,
            "loss": loss.item(),
            "accuracy": (chosen > rejected).float().mean().item(),
            "margin": (chosen - rejected).mean().item(),
            "grad_norm": float(grad_norm),
            "lr": scheduler.get_last_lr()[0],
        }
        if step % config.eval_every == 0 or step == config.steps:
            result = evaluate(rm, held_out)
            metrics["eval/accuracy"] = result["accuracy"]
            metrics["eval/margin"] = result["margin_mean"]
        on_metrics(metrics)
        if on_checkpoint is not None and step % config.checkpoint_every == 0 and step < config.steps:
            on_checkpoint(rm, checkpoint_state(rm, optimizer, scheduler, step))
    final = evaluate(rm, held_out)
    return rm, {"accuracy": final["accuracy"], "margin_mean": final["margin_mean"], "margins": final["margins"],
                "train_pairs": len(train), "held_out_pairs": len(held_out)}


def checkpoint_state(rm: RewardModel, optimizer, scheduler, step: int) -> dict:
    """Trainable tensors (adapter + head), optimiser and schedule: enough to resume."""
    trainable = {n for n, p in rm.named_parameters() if p.requires_grad}
    model = {k: v.detach().cpu() for k, v in rm.state_dict().items() if k in trainable}
    return {"model": model, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step}


@torch.no_grad()
def held_out_scores(rm: RewardModel, pairs: Sequence[PreferencePair], batch_size: int = 16) -> list[dict]:
    """Normalised scores and response lengths (tokens) of each held-out pair: for margin and length plots."""
    rows = []
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        chosen, rejected = (normalized_scores(s, rm) for s in pair_scores(rm, batch))
        for pair, c, r in zip(batch, chosen.tolist(), rejected.tolist()):
            rows.append({"chosen_score": c, "rejected_score": r,
                         "chosen_tokens": len(rm.tokenizer(pair.chosen, add_special_tokens=False)["input_ids"]),
                         "rejected_tokens": len(rm.tokenizer(pair.rejected, add_special_tokens=False)["input_ids"])})
    return rows


def unique_prompts(pairs: Sequence[PreferencePair]) -> list[str]:
    """Prompt texts of pairs, deduplicated in order (the prompts used for score normalisation)."""
    seen: dict[str, object] = {}
    for p in pairs:
        seen.setdefault(prompt_text(p.prompt), p.prompt)
    return list(seen.values())
