"""The one list of policy-training methods: a record per method that every command, job, sweep, export, figure,
report and page reads. Adding a method is its module (loss, advantages, trainer) and one record here.

A method kept outside this package is a module that defines ``METHOD = Method(...)``, named in the environment
variable RLHF_WORKBENCH_METHODS (comma-separated module paths) and importable where the dashboard or the CLI
was started (its PYTHONPATH or working folder; a job process adds the repository root). Jobs run in processes of
their own, which inherit the variable and so know the same methods. No torch here: the CLI builds its commands
from these records before any model is loaded; a record names its trainer by path, imported when a run needs it.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from rlhf_engine.config import DPOConfig, GRPOConfig, PolicyConfig, PPOConfig, RLOOConfig

EXTRA_METHODS_ENV = "RLHF_WORKBENCH_METHODS"  # comma-separated module paths of methods kept outside the package

Panel = tuple[str, tuple[str, ...]]  # a live chart: (title, the metrics drawn on one set of axes)


class MethodError(ValueError):
    """An unknown method, or an extra method module that cannot be used; str() is one line for the user."""


@dataclass(frozen=True)
class Method:
    """One policy-training method, as everything outside its module sees it."""

    name: str  # the run kind and the CLI command ("ppo")
    title: str  # what pages, charts, reports and model cards call it ("PPO")
    config: type[PolicyConfig]  # its settings: a PolicyConfig subclass (the CLI's flags and the forms come from it)
    trainer: str  # "module:Class" of its core.trainer.PolicyTrainer subclass, imported when a run needs it
    summary: str  # what it does, in one breath: the policy page's words above its form, the CLI command's help
    panels: tuple[Panel, ...]  # its live charts, in the order drawn (the gold and KL-estimator charts are added)
    followed: tuple[str, ...]  # the metrics the CLI prints each step and `runs` shows
    learns_from_pairs: bool = False  # trains on a fixed set of preference pairs, sampling nothing (DPO)
    metric_labels: dict[str, str] = field(default_factory=dict)  # axis labels of names that mean another thing here
    more_panels: Callable[[dict], tuple[Panel, ...]] | None = None  # charts a run's settings add (its config dict)

    def charts(self, config: dict) -> tuple[Panel, ...]:
        """The live charts of a run with this saved config (those its settings add go before the last, the step
        time's)."""
        more = self.more_panels(config) if self.more_panels else ()
        return self.panels[:-1] + more + self.panels[-1:]

    def trainer_class(self) -> type:
        """The trainer class (imports the method's module, and so torch)."""
        module, _, name = self.trainer.partition(":")
        return getattr(importlib.import_module(module), name)


# -- the charts ------------------------------------------------------------------------------------------------
KL_PANEL = ("KL to the reference", ("objective/kl",))
STEP_TIME_PANEL = ("Step time (s)", ("time/step_s", "time/rollout_s"))
PPO_PANELS = (
    ("Score and RLHF reward (score units)", ("objective/scores", "objective/rlhf_reward")),
    KL_PANEL,
    ("β (KL coefficient)", ("beta",)),
    ("Entropy", ("objective/entropy",)),
    ("Clip fraction (share of tokens)", ("policy/clipfrac", "val/clipfrac")),
    ("Value loss", ("loss/value",)),
    STEP_TIME_PANEL,
)
# the group methods' charts (GRPO, RLOO), with TRL's metric names
GROUP_PANELS = (
    ("Reward: the RM score (score units)", ("reward",)),
    KL_PANEL,
    ("Score spread within a group (score units)", ("reward_std",)),
    ("Groups that teach nothing", ("frac_reward_zero_std",)),
    ("Entropy (nats / token)", ("entropy",)),
    ("Answer length (tokens)", ("completions/mean_length",)),
    ("Loss", ("loss",)),
    STEP_TIME_PANEL,
)
CLIP_PANEL = ("Clipped ratio (share of tokens)", ("clip_ratio/region_mean",))
# DPO's (TRL's names); its KL, RM and gold scores are measured on the held-out probes, drawn below them
DPO_PANELS = (
    ("Implicit rewards (chosen, rejected)", ("rewards/chosen", "rewards/rejected")),
    ("Pairs ranked right by the implicit reward", ("rewards/accuracies",)),
    ("Implicit reward margin", ("rewards/margins",)),
    ("Log-probability of the answers", ("logps/chosen", "logps/rejected")),
    ("Loss", ("loss",)),
    ("Step time (s)", ("time/step_s",)),
)


def clip_panel_past_one_epoch(config: dict) -> tuple[Panel, ...]:
    """The clipped share, for a run that takes more than one pass over a rollout (with one, nothing is clipped)."""
    return (CLIP_PANEL,) if config.get("epochs", 1) > 1 else ()


GROUP_FOLLOWED = ("objective/scores", "objective/kl", "frac_reward_zero_std", "time/step_s")

BUILTIN = (
    Method("ppo", "PPO", PPOConfig, "rlhf_engine.methods.ppo:PPOTrainer",
           "The policy (base + LoRA) writes answers, the reward model scores them, and PPO raises the probability of "
           "well-scored answers, token by token, against a learnt value baseline. Each token also pays β·KL to the "
           "frozen reference, so the policy cannot drift far from the base model to please the reward model "
           "(Ziegler et al. 2019).",
           PPO_PANELS, ("objective/scores", "objective/kl", "beta", "time/step_s")),
    Method("grpo", "GRPO", GRPOConfig, "rlhf_engine.methods.grpo:GRPOTrainer",
           "GRPO samples a group of answers to each prompt and judges each against its group: advantage = (score − "
           "group mean) / group std, no value model. The KL to the frozen reference is β·k3 per token in the loss "
           "(Shao et al. 2024). Dr. GRPO drops the std division and the per-answer length mean (Liu et al. 2025).",
           GROUP_PANELS, GROUP_FOLLOWED, metric_labels={"loss": "GRPO loss"},
           more_panels=clip_panel_past_one_epoch),
    Method("rloo", "RLOO", RLOOConfig, "rlhf_engine.methods.rloo:RLOOTrainer",
           "RLOO samples k answers to each prompt; each answer's baseline is the mean reward of the other k − 1, and "
           "REINFORCE raises answers above it. The KL to the frozen reference is taken off each answer's reward, "
           "β·KL, as PPO does (Ahmadian et al. 2024).",
           GROUP_PANELS, GROUP_FOLLOWED, metric_labels={"loss": "REINFORCE loss (score units · nats)"},
           more_panels=clip_panel_past_one_epoch),
    Method("dpo", "DPO", DPOConfig, "rlhf_engine.methods.dpo:DPOTrainer",
           "DPO learns from the preference pairs directly, offline: no sampling, no reward model in training. Its "
           "loss −log σ(β[(log π − log π_ref)(chosen) − (log π − log π_ref)(rejected)]) solves the same "
           "reward-minus-β·KL objective (Rafailov et al. 2023). To compare it with the others, the policy answers "
           "held-out prompts every few steps: the reward model scores them and their KL is measured.",
           DPO_PANELS, ("loss", "rewards/accuracies", "rewards/margins", "time/step_s"), learns_from_pairs=True,
           metric_labels={"loss": "DPO loss (nats / pair)"}),
)


def methods() -> dict[str, Method]:
    """Every method by name: the built-in ones, then those of RLHF_WORKBENCH_METHODS' modules, in order."""
    return dict(_load(os.environ.get(EXTRA_METHODS_ENV, "")))


@lru_cache(maxsize=8)
def _load(extra: str) -> tuple[tuple[str, Method], ...]:
    found = {method.name: method for method in BUILTIN}
    for path in (p.strip() for p in extra.split(",")):
        if not path:
            continue
        try:
            module = importlib.import_module(path)
        except ImportError as err:
            raise MethodError(f"{EXTRA_METHODS_ENV}: cannot import {path} ({err})") from None
        record = getattr(module, "METHOD", None)
        if not isinstance(record, Method):
            raise MethodError(f"{EXTRA_METHODS_ENV}: {path} defines no METHOD = Method(...)")
        if record.name in found:
            raise MethodError(f"{EXTRA_METHODS_ENV}: {path} names its method {record.name!r}, which is taken")
        found[record.name] = record
    return tuple(found.items())


def names() -> tuple[str, ...]:
    """Every method's name (the kinds of policy runs), built-in first."""
    return tuple(methods())


def get(name: str) -> Method:
    """The method called ``name``; MethodError naming the known ones if there is none."""
    found = methods()
    if name not in found:
        raise MethodError(f"unknown method {name!r}: one of {', '.join(found)}")
    return found[name]


def of_config(config: PolicyConfig) -> Method:
    """The method whose settings ``config`` is (a PPOConfig is PPO's, ...)."""
    for method in methods().values():
        if type(config) is method.config:
            return method
    raise MethodError(f"no method has {type(config).__name__} as its settings")


def is_policy_kind(kind: str) -> bool:
    """Whether a run of this kind trains a policy (its kind is a method's name)."""
    return kind in methods()
