"""The argument parser. The training commands take their settings' flags from the config dataclasses
(flags.py): train-rm from RewardConfig, one command per method of methods/registry.py from the method's config,
sweep from PPOConfig. The commands that train nothing type their few flags here.

Built when a command runs, not at import: the registry then includes the methods RLHF_WORKBENCH_METHODS adds.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from rlhf_engine.config import QUANT_CHOICES, PPOConfig, RewardConfig
from rlhf_engine.data import collect
from rlhf_engine.methods import registry
from rlhf_engine.methods.registry import Method

from .flags import add_config_flags, positive_float, positive_int
from .room import add_room_command

WORKSPACE = Path(os.environ.get("RLHF_WORKSPACE", "workspace"))  # the dashboard's workspace
DEFAULT_RUNS = WORKSPACE / "runs"
DEFAULT_STORE = WORKSPACE / "pairs.sqlite"
PAIR_SOURCES = "a file, a datasets folder or a hub dataset ORG/NAME[:split] (read from the local Hugging Face cache)"


def build_parser() -> argparse.ArgumentParser:
    """Every command; raises registry.MethodError when RLHF_WORKBENCH_METHODS names a module that cannot be used."""
    parser = argparse.ArgumentParser(prog="python -m rlhf_engine", description="RLHF Workbench engine")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_data_commands(sub)
    _add_train_rm(sub)
    for method in registry.methods().values():
        _add_method_command(sub, method)
    _add_sweep(sub)
    _add_run_commands(sub)
    _add_pairs(sub)
    _add_collect(sub)
    add_room_command(sub)
    return parser


def _add_model_flags(p: argparse.ArgumentParser, quant: str, quant_help: str = "") -> None:
    """--model and --quant: the base model of a command that loads one."""
    p.add_argument("--model", default="default",
                   help="base model: default (the bundled SmolLM2-135M-Instruct), a hub id, a folder or a .gguf file")
    p.add_argument("--quant", choices=QUANT_CHOICES, default=quant,
                   help=quant_help or f"quantization of the base model (default {quant})")


def _add_policy_inputs(p: argparse.ArgumentParser) -> None:
    """What a policy run reads besides its settings: the prompts and the base model."""
    p.add_argument("--prompts", type=Path,
                   help="prompts file (.txt one per line, or .jsonl/.csv/.parquet with 'prompt'); "
                        "default: demo prompts")
    _add_model_flags(p, quant="4bit")


def _first_sentence(text: str) -> str:
    """A summary's first sentence: the command's one line in the list of commands."""
    return re.split(r"(?<=[a-z)])\.\s+(?=[A-Z])", text, maxsplit=1)[0].rstrip(".")


def _add_data_commands(sub) -> None:
    p = sub.add_parser("validate-data", help="check a preference-pair file and print its pair count")
    p.add_argument("file", type=Path)

    p = sub.add_parser("make-demo-pairs",
                       help="simulated pairs: the base model's completions labelled by the gold annotator")
    p.add_argument("--n", type=positive_int, required=True, help="number of pairs")
    p.add_argument("--out", type=Path, required=True, help="output file (.jsonl, .csv or .parquet)")
    _add_model_flags(p, quant="none", quant_help="quantization for generating the completions (default none: "
                                                 "fastest on CPU)")
    p.add_argument("--completions", type=positive_int, default=4,
                   help="completions per prompt; the annotator pairs the most and least positive (default 4)")
    p.add_argument("--temperature", type=positive_float, default=0.7,
                   help="sampling temperature of the completions (default 0.7, as PPO samples)")
    p.add_argument("--response-length", type=positive_int, default=32,
                   help="new tokens per completion (default 32; as long as PPO's answers will be)")
    p.add_argument("--seed", type=int, default=0)


def _add_train_rm(sub) -> None:
    p = sub.add_parser("train-rm", help="train a Bradley-Terry reward model with QLoRA")
    p.add_argument("--data", type=Path, required=True, help=f"preference pairs: {PAIR_SOURCES}")
    p.add_argument("--out", type=Path, required=True, help="run folder to create; holds the trained reward model")
    _add_model_flags(p, quant="4bit")
    add_config_flags(p, RewardConfig)


def _add_method_command(sub, method: Method) -> None:
    """The command that trains a policy with ``method``: its summary as help, its config's fields as flags; a
    method that learns from pairs takes --data."""
    p = sub.add_parser(method.name, help=_first_sentence(method.summary),
                       description=method.summary.replace("%", "%%"))
    if method.learns_from_pairs:
        p.add_argument("--reward", type=Path, required=True,
                       help="reward-model folder: scores the probe answers; its pairs are the default --data")
    else:
        p.add_argument("--reward", type=Path, required=True, help="reward-model folder (a train-rm --out folder)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    if method.learns_from_pairs:
        p.add_argument("--data", type=Path,
                       help=f"preference pairs: {PAIR_SOURCES} (default: the pairs the reward model learnt from)")
    _add_policy_inputs(p)
    add_config_flags(p, method.config)


def _add_sweep(sub) -> None:
    from rlhf_engine.lab.sweep import DEFAULT_BETAS, SWEEPABLE

    p = sub.add_parser("sweep",
                       help="queue PPO runs that differ only in beta (or one other setting) and run them in turn")
    p.add_argument("--reward", type=Path, required=True, help="reward-model folder (a train-rm --out folder)")
    p.add_argument("--out", type=Path, required=True,
                   help="sweep folder to create; each run goes beside it as OUT-<label> (e.g. OUT-beta-0.05)")
    p.add_argument("--kl-coefs",
                   help=f"comma-separated betas (default {','.join(format(b, 'g') for b in DEFAULT_BETAS)})")
    p.add_argument("--vary", choices=SWEEPABLE, default="kl_coef",
                   help="the one setting that differs between runs (default kl_coef); give its values with --values")
    p.add_argument("--values", help="comma-separated values of --vary, e.g. on,off or k1,k3 or none,1.0")
    p.add_argument("--adaptive", action="store_true",
                   help="add one run with adaptive beta (starts at --kl-coef, aims at --kl-target)")
    p.add_argument("--methods", help=f"comma-separated methods to set side by side ({','.join(registry.names())}) "
                                     "instead of one PPO setting: one reward model, one prompt set, one frontier")
    p.add_argument("--betas", action="append", default=[], metavar="METHOD=B1,B2",
                   help="with --methods: one method's betas, e.g. --betas ppo=0.02,0.1 (repeatable; default: "
                        "--kl-coefs, else the method's own default)")
    p.add_argument("--seeds", metavar="S1,S2",
                   help="with --methods: train each method once per seed, side by side (labels end -seed-S): a "
                        "ranking only stands where methods differ by more than their seeds do. --set METHOD.FIELD="
                        "VALUE sets one method's field (e.g. --set grpo.epochs=2)")
    p.add_argument("--best-of-n", type=int, default=0, metavar="N",
                   help="also sample N reference answers per prompt: the best-of-n baseline for n = 1, 2, 4, ..., N")
    p.add_argument("--best-of-n-prompts", type=positive_int, default=None, metavar="K",
                   help="best-of-n answers only the first K of the runs' held-out probe prompts (default: all "
                        "--probe-prompts of them, the prompts the runs' points stand on)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="run the sweep's runs one after another, each loading its own model, instead of side by "
                        "side in one process (the default: one base model, one decoding batch; same results)")
    _add_ray_flags(p)
    _add_policy_inputs(p)
    add_config_flags(p, PPOConfig)  # the runs' settings; with --methods, each method takes the fields it has


def _add_ray_flags(p, tasks: bool = True) -> None:
    """--ray and how a task is sized (sweep, resume)."""
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run on a Ray cluster: 'auto' starts a local one on this machine (bound to 127.0.0.1), "
                        "HOST:PORT joins a running one (its token in RAY_AUTH_TOKEN); the runs folder must lie on a "
                        "filesystem every node sees. Needs requirements-ray.txt installed")
    if tasks:
        p.add_argument("--runs-per-task", type=positive_int, default=1, metavar="K",
                       help="with --ray: train up to K runs side by side in one task (one base model), "
                            "instead of one task per run (default 1)")
    p.add_argument("--task-cpus", type=positive_int, default=1, metavar="N",
                   help="with --ray: the CPUs each task asks for, and its torch threads (default 1)")
    p.add_argument("--retries", type=int, default=2, metavar="N",
                   help="with --ray: how often Ray runs a task again whose worker died; a retried task resumes from "
                        "its checkpoint (default 2; 0: none, the run is then interrupted)")


def _add_run_commands(sub) -> None:
    """The commands that continue, use or show runs."""
    p = sub.add_parser("resume", help="continue a stopped, failed or interrupted run from its last checkpoint")
    p.add_argument("run", type=Path, help="a run folder (with --ray also a sweep folder: its runs not completed)")
    _add_ray_flags(p, tasks=False)

    p = sub.add_parser("sample", help="generate a response from a model (optionally with a trained adapter)")
    _add_model_flags(p, quant="none")
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder, or a policy run folder (uses its policy/)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--temperature", type=positive_float, default=0.7)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("run-job", help="run a prepared (queued) run folder in this process; the dashboard "
                                       "starts its jobs this way")
    p.add_argument("run", type=Path)

    p = sub.add_parser("export", help="write a run's model for plain transformers: a policy merged with its adapter "
                       "(AutoModelForCausalLM), a reward model as AutoModelForSequenceClassification, or --adapter")
    p.add_argument("path", type=Path, help="the run folder (a policy or reward-model run)")
    p.add_argument("--out", type=Path, required=True, help="a new folder to write (never over an existing one)")
    p.add_argument("--adapter", action="store_true", help="write the PEFT adapter alone instead of a merged model")

    p = sub.add_parser("report", help="write a one-file HTML report of a run or a sweep (plots, settings, samples)")
    p.add_argument("path", type=Path, help="run folder or sweep folder")
    p.add_argument("--out", type=Path, help="report file (default PATH/report.html)")

    p = sub.add_parser("runs", help="list runs with their state and last metrics")
    p.add_argument("root", nargs="?", type=Path, default=DEFAULT_RUNS,
                   help=f"folder of run folders (default {DEFAULT_RUNS}, the dashboard's)")


def _add_pairs(sub) -> None:
    p = sub.add_parser("pairs", help="the preference-pair store the dashboard uses (SQLite)")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"store file (default {DEFAULT_STORE})")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="validate a pairs file and store all its pairs (or none)")
    a.add_argument("file", type=Path)
    a = actions.add_parser("list", help="stored pairs, newest first")
    a.add_argument("--search", help="case-insensitive text in the prompt or answers")
    a.add_argument("--limit", type=positive_int, default=20)
    actions.add_parser("count", help="number of stored pairs")
    a = actions.add_parser("delete", help="delete pairs by id")
    a.add_argument("ids", type=int, nargs="+")
    a = actions.add_parser("export", help="write every stored pair to a .jsonl, .csv or .parquet file")
    a.add_argument("out", type=Path)


def _add_collect(sub) -> None:
    p = sub.add_parser("collect", help="collect pairs by hand: the model answers twice, you pick the better one")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"store file (default {DEFAULT_STORE})")
    _add_model_flags(p, quant="none")
    p.add_argument("--prompt", action="append", help="prompt to ask (repeatable); default: the demo prompts")
    p.add_argument("--max-new-tokens", type=positive_int, default=collect.MAX_NEW_TOKENS,
                   help=f"tokens per answer (default {collect.MAX_NEW_TOKENS})")
    p.add_argument("--temperature", type=positive_float, default=collect.TEMPERATURE,
                   help=f"sampling temperature (default {collect.TEMPERATURE})")
    p.add_argument("--seed", type=int, default=0)
