"""CLI: ``python -m rlhf_engine {validate-data,train-rm,ppo,grpo,rloo,dpo,sweep,resume,sample,report,runs,...}``.

Every user error (bad file, bad flag value, missing run) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rlhf_engine.config import GRPO_LOSS_TYPES, KL_ESTIMATORS, KL_PLACES, POOLINGS, QUANT_CHOICES
from rlhf_engine.data import collect
from rlhf_engine.lab.sweep import DEFAULT_BETAS, SWEEPABLE

EXIT_USER_ERROR = 2
# What runs under `accelerate launch` (rlhf_engine/distributed.py).
DATA_PARALLEL_COMMANDS = ("ppo", "grpo", "rloo", "dpo", "resume")


class UserError(Exception):
    """A mistake in the command's input: one line, exit 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _float_above(bound: float, inclusive: bool):
    """An argparse type: a number > bound (or >= bound when ``inclusive``)."""
    sign = ">=" if inclusive else ">"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= bound if inclusive else value > bound):
            raise argparse.ArgumentTypeError(f"expected a number {sign} {bound:g}, got {text!r}")
        return value

    return parse


_positive_float = _float_above(0.0, inclusive=False)
_non_negative_float = _float_above(0.0, inclusive=True)


WORKSPACE = Path(os.environ.get("RLHF_WORKSPACE", "workspace"))  # the dashboard's workspace
DEFAULT_RUNS = WORKSPACE / "runs"
DEFAULT_STORE = WORKSPACE / "pairs.sqlite"


def _add_model_flags(p: argparse.ArgumentParser, quant: str, quant_help: str = "") -> None:
    """--model and --quant: the base model of a command that loads one."""
    p.add_argument("--model", default="default",
                   help="base model: default (the bundled SmolLM2-135M-Instruct), a hub id, a folder or a .gguf file")
    p.add_argument("--quant", choices=QUANT_CHOICES, default=quant,
                   help=quant_help or f"quantization of the base model (default {quant})")


def _add_ppo_knobs(p: argparse.ArgumentParser) -> None:
    """The PPO settings shared by ``ppo`` and ``sweep``."""
    _add_policy_knobs(p, "PPOConfig", "ppo_epochs=2 --set cliprange=0.1")
    p.add_argument("--kl-target", type=_non_negative_float)


def _add_policy_knobs(p: argparse.ArgumentParser, config_name: str, set_example: str) -> None:
    """The settings every policy-training command shares (``ppo``, ``grpo``, ``rloo``, ``sweep``)."""
    p.add_argument("--prompts", type=Path,
                   help="prompts file (.txt one per line, or .jsonl/.csv/.parquet with 'prompt'); "
                        "default: demo prompts")
    _add_model_flags(p, quant="4bit")
    p.add_argument("--steps", type=_positive_int)
    p.add_argument("--kl-coef", type=_non_negative_float, help="beta, the KL penalty weight")
    p.add_argument("--kl-estimator", choices=KL_ESTIMATORS)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--response-length", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--temperature", type=_positive_float)
    p.add_argument("--missing-eos-penalty", type=float)
    p.add_argument("--checkpoint-every", type=_positive_int)
    p.add_argument("--seed", type=int, default=0)
    _add_report_to(p)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"any other {config_name} field, e.g. --set {set_example} (repeatable)")


def _add_report_to(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report-to", metavar="TRACKERS",
                   help="also mirror each step's metrics to tensorboard, trackio and/or wandb (comma-separated; "
                        "offline or local; the run folder stays the record)")


def _add_reward_and_out(p: argparse.ArgumentParser) -> None:
    """--reward and --out: what every on-policy training command starts from and writes."""
    p.add_argument("--reward", type=Path, required=True, help="reward-model folder (a train-rm --out folder)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")


def _add_group_knobs(p: argparse.ArgumentParser) -> None:
    """What the group methods add: answers per prompt."""
    p.add_argument("--group-size", type=_positive_int,
                   help="answers sampled per prompt, judged against each other (default 4); --batch-size counts "
                        "answers, so it must be a multiple")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlhf_engine", description="RLHF Workbench engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate-data", help="check a preference-pair file and print its pair count")
    p.add_argument("file", type=Path)

    p = sub.add_parser("make-demo-pairs",
                       help="simulated pairs: the base model's completions labelled by the gold annotator")
    p.add_argument("--n", type=_positive_int, required=True, help="number of pairs")
    p.add_argument("--out", type=Path, required=True, help="output file (.jsonl, .csv or .parquet)")
    _add_model_flags(p, quant="none", quant_help="quantization for generating the completions (default none: "
                                                 "fastest on CPU)")
    p.add_argument("--completions", type=_positive_int, default=4,
                   help="completions per prompt; the annotator pairs the most and least positive (default 4)")
    p.add_argument("--temperature", type=_positive_float, default=0.7,
                   help="sampling temperature of the completions (default 0.7, as PPO samples)")
    p.add_argument("--response-length", type=_positive_int, default=32,
                   help="new tokens per completion (default 32; as long as PPO's answers will be)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-rm", help="train a Bradley-Terry reward model with QLoRA")
    p.add_argument("--data", type=Path, required=True,
                   help="preference pairs: a file, a datasets folder, or a hub dataset ORG/NAME[:split] (read from "
                        "the local Hugging Face cache)")
    p.add_argument("--out", type=Path, required=True, help="run folder to create; holds the trained reward model")
    _add_model_flags(p, quant="4bit")
    p.add_argument("--steps", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--pooling", choices=POOLINGS,
                   help="score from the last real token (default, as in Ziegler et al.) "
                        "or the mean of the response tokens")
    p.add_argument("--seed", type=int, default=0)
    _add_report_to(p)
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="any other RewardConfig field, e.g. --set eval_every=10 (repeatable)")

    p = sub.add_parser("ppo", help="PPO against a reward model with a KL penalty to the reference")
    _add_reward_and_out(p)
    _add_ppo_knobs(p)
    p.add_argument("--adaptive-kl", action="store_true", help="adapt beta towards --kl-target (Ziegler et al.)")

    p = sub.add_parser("grpo", help="GRPO (or Dr. GRPO) against a reward model: group-normalised advantages, "
                                    "no value model, KL to the reference in the loss")
    _add_reward_and_out(p)
    _add_policy_knobs(p, "GRPOConfig", "epochs=2 --set cliprange=0.1")
    _add_group_knobs(p)
    p.add_argument("--loss-type", choices=GRPO_LOSS_TYPES,
                   help="grpo (default: std-scaled advantages, per-answer token means) or dr_grpo (Liu et al. "
                        "2025: neither)")
    p.add_argument("--kl-in", choices=KL_PLACES,
                   help="loss (default: beta * k3 per token in the loss, as GRPO) or reward (beta * KL off each score)")

    p = sub.add_parser("rloo", help="RLOO against a reward model: REINFORCE with a leave-one-out baseline, "
                                    "KL in the reward")
    _add_reward_and_out(p)
    _add_policy_knobs(p, "RLOOConfig", "kl_estimator=k3")
    _add_group_knobs(p)

    p = sub.add_parser("dpo", help="DPO on preference pairs (offline); its answers to held-out prompts are scored "
                                   "by the reward model to place it beside the other methods")
    p.add_argument("--reward", type=Path, required=True,
                   help="reward-model folder: scores the probe answers; its pairs are the default --data")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--data", type=Path, help="preference pairs: a file, a datasets folder or a hub dataset "
                                             "ORG/NAME[:split] (default: the pairs the reward model learnt from)")
    _add_policy_knobs(p, "DPOConfig", "max_length=512")

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
    p.add_argument("--methods", help="comma-separated methods to set side by side (ppo,grpo,rloo,dpo) instead of "
                                     "one PPO setting: one reward model, one prompt set, one frontier")
    p.add_argument("--betas", action="append", default=[], metavar="METHOD=B1,B2",
                   help="with --methods: one method's betas, e.g. --betas ppo=0.02,0.1 --betas dpo=0.1 (repeatable; "
                        "default: --kl-coefs, else the method's own default)")
    p.add_argument("--best-of-n", type=int, default=0, metavar="N",
                   help="also sample N reference answers per prompt: the best-of-n baseline for n = 1, 2, 4, ..., N")
    p.add_argument("--best-of-n-prompts", type=_positive_int, default=16, help="prompts for best-of-n (default 16)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="run the sweep's runs one after another, each loading its own model, instead of side by "
                        "side in one process (the default: one base model, one decoding batch; same results)")
    _add_ppo_knobs(p)

    p = sub.add_parser("resume", help="continue a stopped, failed or interrupted run from its last checkpoint")
    p.add_argument("run", type=Path)

    p = sub.add_parser("sample", help="generate a response from a model (optionally with a trained adapter)")
    _add_model_flags(p, quant="none")
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder, or a PPO run folder (uses its policy/)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=_positive_int, default=64)
    p.add_argument("--temperature", type=_positive_float, default=0.7)
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

    p = sub.add_parser("pairs", help="the preference-pair store the dashboard uses (SQLite)")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"store file (default {DEFAULT_STORE})")
    actions = p.add_subparsers(dest="action", required=True)
    a = actions.add_parser("add", help="validate a pairs file and store all its pairs (or none)")
    a.add_argument("file", type=Path)
    a = actions.add_parser("list", help="stored pairs, newest first")
    a.add_argument("--search", help="case-insensitive text in the prompt or answers")
    a.add_argument("--limit", type=_positive_int, default=20)
    actions.add_parser("count", help="number of stored pairs")
    a = actions.add_parser("delete", help="delete pairs by id")
    a.add_argument("ids", type=int, nargs="+")
    a = actions.add_parser("export", help="write every stored pair to a .jsonl, .csv or .parquet file")
    a.add_argument("out", type=Path)

    p = sub.add_parser("collect", help="collect pairs by hand: the model answers twice, you pick the better one")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help=f"store file (default {DEFAULT_STORE})")
    _add_model_flags(p, quant="none")
    p.add_argument("--prompt", action="append", help="prompt to ask (repeatable); default: the demo prompts")
    p.add_argument("--max-new-tokens", type=_positive_int, default=collect.MAX_NEW_TOKENS,
                   help=f"tokens per answer (default {collect.MAX_NEW_TOKENS})")
    p.add_argument("--temperature", type=_positive_float, default=collect.TEMPERATURE,
                   help=f"sampling temperature (default {collect.TEMPERATURE})")
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    from rlhf_engine.config import ModelSourceError
    from rlhf_engine.data.pairs import DataError

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)  # bad flags: argparse prints usage + one line, exits 2
    try:
        # distributed.launched(), read here without importing torch: most commands never need it
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by accelerate launch (or torchrun)
            from rlhf_engine.core import distributed

            if args.command not in DATA_PARALLEL_COMMANDS:
                raise UserError(f"'{args.command}' runs in one process; only {', '.join(DATA_PARALLEL_COMMANDS)} "
                                "run data-parallel under accelerate launch")
            distributed.init_from_environment()
        return COMMANDS[args.command](args)
    except (UserError, DataError, ModelSourceError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _validate_data(args) -> int:
    from rlhf_engine.data.pairs import read_pairs

    pairs = read_pairs(args.file)
    print(f"{len(pairs)} pairs")
    return 0


def _make_demo_pairs(args) -> int:
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.data.pairs import write_pairs
    from rlhf_engine.lab.demo import make_demo_pairs

    if args.out.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
        raise UserError(f"--out must end in .jsonl, .csv or .parquet, got {args.out.name!r}")
    config = ModelConfig(source=args.model, quant=args.quant)
    if args.completions < 2:
        raise UserError(f"--completions must be at least 2 (a pair needs two), got {args.completions}")
    pairs = make_demo_pairs(args.n, config, seed=args.seed, temperature=args.temperature,
                            completions_per_prompt=args.completions, response_length=args.response_length,
                            on_progress=lambda done, total: print(f"\r{done}/{total} pairs", end="",
                                                                  file=sys.stderr, flush=True))
    print(file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs(pairs, args.out)
    print(f"wrote {len(pairs)} pairs to {args.out}")
    return 0


def _overrides(args, mapping: dict[str, str]) -> dict:
    return {field: getattr(args, flag) for flag, field in mapping.items() if getattr(args, flag, None) is not None}


def _set_fields(cls, assignments: list[str]) -> dict:
    """--set FIELD=VALUE pairs, each value parsed as its field's default is typed."""
    from rlhf_engine.config import field_defaults

    defaults = {k: v for k, v in field_defaults(cls).items() if k != "model"}
    fields = {}
    for item in assignments:
        name, sep, text = item.partition("=")
        if not sep or name not in defaults:
            raise UserError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(sorted(defaults))}")
        default = defaults[name]
        try:
            if isinstance(default, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value = text.lower() in ("true", "1")
            elif isinstance(default, int):
                value = int(text)
            elif isinstance(default, float) or default is None:
                value = None if text.lower() == "none" else float(text)
            else:
                value = text
        except ValueError:
            raise UserError(f"--set {item!r}: {text!r} is not a valid {type(default).__name__}") from None
        fields[name] = value
    return fields


def _reward_config(args):
    from rlhf_engine.config import ModelConfig, RewardConfig

    return RewardConfig(model=ModelConfig(source=args.model, quant=args.quant), seed=args.seed,
                        **_overrides(args, {"steps": "steps", "batch_size": "batch_size", "lr": "learning_rate",
                                            "pooling": "pooling", "report_to": "report_to"}),
                        **_set_fields(RewardConfig, args.set))


def _train_rm(args) -> int:
    config = _reward_config(args)  # a bad flag value is refused before torch is imported
    from rlhf_engine.runs.jobs import start_reward_job

    job = start_reward_job(args.out, config, args.data)
    return _follow(job)


def _ppo_config(args, **fields):
    from rlhf_engine.config import PPOConfig

    return _policy_config(args, PPOConfig, **fields)


def _policy_config(args, config_class, only_known: bool = False, **fields):
    """The config of a policy-training command: its method's class, from the flags it was given. ``only_known``
    (a sweep of several methods): the flags and --set fields a method does not have are left out for it."""
    import dataclasses

    from rlhf_engine.config import ModelConfig

    flags = _overrides(args, {
        "steps": "steps", "kl_coef": "kl_coef", "kl_target": "kl_target", "kl_estimator": "kl_estimator",
        "batch_size": "batch_size", "response_length": "response_length", "lr": "learning_rate",
        "temperature": "temperature", "missing_eos_penalty": "missing_eos_penalty",
        "checkpoint_every": "checkpoint_every", "group_size": "group_size", "loss_type": "loss_type",
        "kl_in": "kl_in", "report_to": "report_to",
    })
    if args.prompts is not None and not args.prompts.exists():
        raise UserError(f"{args.prompts}: file not found")
    assignments = args.set
    if only_known:
        known = {f.name for f in dataclasses.fields(config_class)}
        flags = {k: v for k, v in flags.items() if k in known}
        assignments = [item for item in args.set if item.partition("=")[0] in known]
    return config_class(model=ModelConfig(source=args.model, quant=args.quant), seed=args.seed,
                        **{**fields, **flags, **_set_fields(config_class, assignments)})


def _ppo(args) -> int:
    return _train_policy(args, _ppo_config(args, adaptive_kl=args.adaptive_kl))


def _grpo(args) -> int:
    from rlhf_engine.config import GRPOConfig

    return _train_policy(args, _policy_config(args, GRPOConfig))


def _rloo(args) -> int:
    from rlhf_engine.config import RLOOConfig

    return _train_policy(args, _policy_config(args, RLOOConfig))


def _dpo(args) -> int:
    from rlhf_engine.config import DPOConfig
    from rlhf_engine.data.pairs import hub_dataset

    if args.data is not None and not args.data.exists() and hub_dataset(args.data) is None:
        raise UserError(f"{args.data}: file not found")
    return _train_policy(args, _policy_config(args, DPOConfig), pairs=args.data)


def _train_policy(args, config, pairs: Path | None = None) -> int:
    """Start a policy run of ``config``'s method (its flags were checked before torch is imported) and follow it."""
    from rlhf_engine.runs.jobs import prepare_policy_job

    return _follow(_prepared_by_main(
        lambda: prepare_policy_job(args.out, config, args.reward, args.prompts, pairs)).start())


def _prepared_by_main(prepare):
    """The queued Job that ``prepare()`` makes; under accelerate launch process 0 prepares the run folder and
    the other processes open it once it is there (an error on process 0 stops them all with its message)."""
    from rlhf_engine.core import distributed
    from rlhf_engine.runs.jobs import prepared_job

    if not distributed.launched():
        return prepare()
    outcome = None
    if distributed.is_main():
        try:
            outcome = ("folder", str(prepare().run.path))
        except Exception as err:  # noqa: BLE001 - passed to every process, then raised as the user's error
            outcome = ("error", f"{err}")
    kind, text = distributed.from_main(outcome)
    if kind == "error":
        raise UserError(text)
    return prepared_job(Path(text))


def _sweep(args) -> int:
    """Prepare every run of the sweep (all queued), then run them one after another in this process."""
    from rlhf_engine.config import PPOConfig
    from rlhf_engine.lab.sweep import prepare_sweep

    methods = _method_members(args) if args.methods else None
    if methods is not None:
        values = None
    elif args.betas:
        raise UserError("--betas gives each method's betas: use it with --methods")
    elif args.vary == "kl_coef":
        if args.values is not None and args.kl_coefs is not None:
            raise UserError("give the betas with --kl-coefs or --values, not both")
        flag, given = ("--values", args.values) if args.values is not None else ("--kl-coefs", args.kl_coefs)
    elif args.values is None:
        raise UserError(f"--vary {args.vary} needs --values (comma-separated)")
    else:
        flag, given = "--values", args.values
    if methods is None:
        values = _sweep_values(flag, args.vary, given) if given is not None else list(DEFAULT_BETAS)
    if args.best_of_n == 1 or args.best_of_n < 0:
        raise UserError(f"--best-of-n must be 0 (none) or at least 2, got {args.best_of_n}")
    base = _policy_config(args, PPOConfig, only_known=methods is not None)
    jobs = prepare_sweep(args.out, base, args.reward, args.vary, values, args.adaptive,
                         args.best_of_n, args.best_of_n_prompts, args.prompts, batched=not args.one_at_a_time,
                         methods=methods)
    if not args.one_at_a_time:
        from rlhf_engine.lab.sweep import Sweep

        runs = Sweep(args.out).runs()
        print(f"sweep {args.out}: {len(runs)} runs side by side in this process: "
              + ", ".join(run.id for run in runs), flush=True)
        code = _follow(jobs[0].start())
        if jobs[0].run.status().get("state") == "stopped":
            print(f"sweep stopped; 'python -m rlhf_engine resume {args.out}' continues every run", file=sys.stderr)
            return 130
        print(f"sweep done: python -m rlhf_engine report {args.out} writes its one-file HTML report")
        return code
    print(f"sweep {args.out}: {len(jobs)} runs queued: " + ", ".join(job.run.id for job in jobs), flush=True)
    worst = 0
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.run.path}", flush=True)
        code = _follow(job.start())
        if job.run.status().get("state") == "stopped":  # Ctrl-C: the rest stay queued; 'resume' runs each
            print("sweep stopped; the runs not started show as interrupted: resume each with "
                  "'python -m rlhf_engine resume <run folder>'", file=sys.stderr)
            return 130
        worst = max(worst, code)
    print(f"sweep done: python -m rlhf_engine report {args.out} writes its one-file HTML report")
    return worst


def _sweep_values(flag: str, field: str, text: str, given: str | None = None) -> list:
    """``sweep.parse_values`` of a flag's text, its error as the user's one line naming the flag and what it was
    given (``given``: the whole of it, when ``text`` is a part)."""
    from rlhf_engine.lab.sweep import parse_values

    try:
        return parse_values(field, text)
    except ValueError as err:
        raise UserError(f"{flag} {given if given is not None else text!r}: {err}") from None


def _method_members(args) -> list:
    """The (label, config) members of ``sweep --methods``: each method's config from the flags, at the betas
    --betas METHOD=... gives it, else --kl-coefs', else its own default."""
    import dataclasses

    from rlhf_engine.config import METHOD_CONFIGS
    from rlhf_engine.lab.sweep import plan_methods

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHOD_CONFIGS]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise UserError(f"--methods {args.methods!r}: give each of {', '.join(METHOD_CONFIGS)} at most once, "
                        "comma-separated")
    if args.vary != "kl_coef" or args.values is not None or args.adaptive:
        raise UserError("--methods varies the method (and each method's beta): not with --vary, --values or "
                        "--adaptive")
    betas = {}
    for item in args.betas:
        method, sep, text = item.partition("=")
        if not sep or method not in methods:
            raise UserError(f"--betas {item!r}: expected METHOD=B1,B2 with METHOD one of --methods ({args.methods})")
        betas[method] = _sweep_values("--betas", "kl_coef", text, given=item)
    if args.kl_coefs is not None:
        everyone = _sweep_values("--kl-coefs", "kl_coef", args.kl_coefs)
        betas = {method: betas.get(method, everyone) for method in methods}
    known = set().union(*({f.name for f in dataclasses.fields(METHOD_CONFIGS[m])} for m in methods))
    for item in args.set:
        if item.partition("=")[0] not in known:
            raise UserError(f"--set {item!r}: none of {', '.join(methods)} has that setting")
    configs = {m: _policy_config(args, METHOD_CONFIGS[m], only_known=True) for m in methods}
    return plan_methods(configs, betas)


def _resume(args) -> int:
    from rlhf_engine.runs.jobs import prepare_resume

    return _follow(_prepared_by_main(lambda: prepare_resume(args.run)).start())


def _run_job(args) -> int:
    """Execute a queued run folder; end it cleanly (checkpoint first) on SIGINT or when the parent exits."""
    import threading
    import time

    from rlhf_engine.runs.jobs import prepared_job

    _stop_on_signals()
    job = prepared_job(args.run).start()
    parent = os.getppid()

    def watch_parent() -> None:  # the dashboard server died: stop at the end of the step, with a checkpoint
        while job.alive:
            if os.getppid() != parent:
                job.stop()
                return
            time.sleep(1.0)

    threading.Thread(target=watch_parent, daemon=True).start()
    return _follow(job)


# What the commands that run a job print each step, by the run's kind; `runs` shows the last row's, less the time.
FOLLOWED_METRICS = {
    "ppo": ("objective/scores", "objective/kl", "beta", "time/step_s"),
    "grpo": ("objective/scores", "objective/kl", "frac_reward_zero_std", "time/step_s"),
    "rloo": ("objective/scores", "objective/kl", "frac_reward_zero_std", "time/step_s"),
    "dpo": ("loss", "rewards/accuracies", "rewards/margins", "time/step_s"),
    "reward_model": ("loss", "accuracy", "eval/accuracy"),
}


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C, ``kill -INT`` and a plain ``kill`` (SIGTERM) all stop a run cleanly, checkpoint first.

    A command started in the background (``nohup ... &``, or a server started so) gets SIGINT ignored, and
    Python then never raises KeyboardInterrupt: take it back, or the dashboard's Stop would do nothing.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _follow(job) -> int:
    """Print one line per logged step (and each health alarm once) until the job ends; Ctrl-C or SIGTERM
    stops it cleanly (checkpoint first)."""
    import time

    from rlhf_engine.core import distributed

    _stop_on_signals()

    if not distributed.is_main():  # process 0 prints; the others train beside it
        try:
            job.join()
        except KeyboardInterrupt:
            job.stop()
            job.join()
        return 1 if job.error else 0
    kind = job.run.config()["kind"]
    if kind == "sweep":  # every member's lines, each with its run's name
        from rlhf_engine.lab.sweep import Sweep

        followed = [(run, f"{run.id}: ", FOLLOWED_METRICS.get(run.config()["kind"], ()))
                    for run in Sweep(job.run.path).runs()]
    else:
        followed = [(job.run, "", FOLLOWED_METRICS.get(kind, ()))]
    seen = {run.id: (len(run.metrics()), len(_alarm_lines(run))) for run, _, _ in followed}
    from rlhf_engine.runs.trackers import reported_commands

    shown = set()
    for run, prefix, _ in followed:
        for name, command in reported_commands(run):
            if command not in shown:  # trackio's one project serves every run of a sweep
                shown.add(command)
                print(f"{prefix}metrics mirrored to {name}: {command}", flush=True)

    def print_new() -> None:
        for run, prefix, keys in followed:
            rows, alarms = seen[run.id]
            seen[run.id] = (_print_new_metrics(run, rows, keys, prefix), _print_new_alarms(run, alarms, prefix))

    try:
        while job.alive:
            time.sleep(0.5)
            print_new()
    except KeyboardInterrupt:
        print("stopping (writing a checkpoint)...", file=sys.stderr)
        job.stop()
        job.join()
    print_new()
    status = job.run.status()
    print(f"run {job.run.path}: {status['state']} at step {status.get('step', 0)}")
    if status["state"] == "failed":
        print(f"error: {status.get('error')}", file=sys.stderr)
        return 1
    return 0


def _print_new_metrics(run, seen: int, keys, prefix: str = "") -> int:
    rows = run.metrics()
    for row in rows[seen:]:
        parts = [f"step {row.get('step')}"] + [f"{k} {row[k]:.4g}" for k in keys
                                               if isinstance(row.get(k), (int, float))]
        print(prefix + "  ".join(parts), flush=True)
    return len(rows)


def _alarm_lines(run) -> list[str]:
    return [line.split(" ", 1)[1] for line in run.events().splitlines() if " alarm at step " in line]


def _print_new_alarms(run, seen: int, prefix: str = "") -> int:
    lines = _alarm_lines(run)
    for line in lines[seen:]:
        print(f"  ! {prefix}{line}", flush=True)
    return len(lines)


def _sample(args) -> int:
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.generation import decode_responses, sample_responses
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed

    model, tokenizer = load_model_and_tokenizer(ModelConfig(source=args.model, quant=args.quant))
    if args.adapter is not None:
        from peft import PeftModel

        from rlhf_engine.core.lora_fused import fuse_lora_products

        adapter = (args.adapter / "policy" if (args.adapter / "policy" / "adapter_config.json").is_file()
                   else args.adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise UserError(f"{args.adapter}: no PEFT adapter (adapter_config.json) found")
        model = PeftModel.from_pretrained(model, str(adapter))
        fuse_lora_products(model)
    set_seed(args.seed)
    rollout = sample_responses(model, tokenizer, [args.prompt], args.max_new_tokens, args.temperature)
    print(decode_responses(tokenizer, rollout)[0])
    return 0


def _export(args) -> int:
    from rlhf_engine.runs.export import export_run

    out = export_run(args.path, args.out, adapter_only=args.adapter)
    print(f"wrote {out} ({'the PEFT adapter' if args.adapter else 'a merged model'}; see its README.md)")
    return 0


def _report(args) -> int:
    from rlhf_engine.lab.report import write_report

    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out must end in .html, got {args.out.name!r}")
    print(f"wrote {write_report(args.path, args.out)}")
    return 0


def _runs(args) -> int:
    from rlhf_engine.runs.runfolder import list_runs

    runs = list_runs(args.root)
    if not runs:
        print(f"no runs in {args.root}")
        return 0
    for run in runs:
        status = run.status()
        metrics = run.metrics()
        last = metrics[-1] if metrics else {}
        kind = run.config().get("kind", "?")
        keys = [k for k in FOLLOWED_METRICS.get(kind, ()) if not k.startswith("time/")]
        shown = "  ".join(f"{k}={last[k]:.4g}" for k in keys if isinstance(last.get(k), (int, float)))
        line = (f"{run.id:24s} {kind:12s} {status['state']:11s} "
                f"step {status.get('step', 0)}/{status.get('total_steps', '?')}  {shown}")
        if status["state"] == "failed":
            line += f"  error: {status.get('error')}"
        print(line)
    return 0


def _pairs(args) -> int:
    from rlhf_engine.data.pairs import PairStore, prompt_text, read_pairs

    if args.action == "add":
        pairs = read_pairs(args.file)  # the whole file is checked before anything is stored
        PairStore(args.store).add_many(pairs, source=f"upload:{args.file.name}")
        print(f"stored {len(pairs)} pairs from {args.file} in {args.store}")
        return 0
    if not args.store.is_file():
        raise UserError(f"{args.store}: no pair store yet (add pairs first)")
    store = PairStore(args.store)
    if args.action == "count":
        print(store.count())
    elif args.action == "list":
        for row in store.list(limit=args.limit, search=args.search):
            print(f"#{row.id} [{row.source}] {prompt_text(row.pair.prompt)!r}\n"
                  f"  chosen:   {row.pair.chosen!r}\n  rejected: {row.pair.rejected!r}")
    elif args.action == "delete":
        missing = [i for i in args.ids if not store.delete(i)]
        print(f"deleted {len(args.ids) - len(missing)} pairs" + (f"; no pair with id {missing}" if missing else ""))
        return EXIT_USER_ERROR if missing else 0
    elif args.action == "export":
        if args.out.suffix.lower() not in (".jsonl", ".csv", ".parquet"):
            raise UserError(f"export file must end in .jsonl, .csv or .parquet, got {args.out.name!r}")
        print(f"wrote {store.export(args.out)} pairs to {args.out}")
    return 0


def _collect(args) -> int:
    """Two answers per prompt; type a or b to store the pair at once, t (tie) or s (skip) to store nothing."""
    import random

    from rlhf_engine.config import ModelConfig
    from rlhf_engine.core.models import load_model_and_tokenizer, set_seed
    from rlhf_engine.data.pairs import PairStore
    from rlhf_engine.lab.demo import demo_prompt_split

    config = ModelConfig(source=args.model, quant=args.quant)
    model, tokenizer = load_model_and_tokenizer(config)
    store = PairStore(args.store)
    set_seed(args.seed)
    prompts = args.prompt or random.Random(args.seed).sample(demo_prompt_split()[0], len(demo_prompt_split()[0]))
    keys = {"a": "a", "b": "b", "t": "tie", "s": "skip"}
    stored = 0
    for prompt in prompts:
        a, b = collect.two_answers(model, tokenizer, prompt, args.max_new_tokens, args.temperature,
                                   config.chat_template)
        print(f"\nprompt: {prompt}\n\n[A] {a}\n\n[B] {b}\n")
        answer = ""
        while answer not in (*keys, "q"):
            try:
                answer = input("better? a / b / t(ie) / s(kip) / q(uit): ").strip().lower()
            except EOFError:  # input closed: stop as if q
                answer = "q"
        if answer == "q":
            break
        try:
            pair = collect.picked_pair(prompt, a, b, keys[answer])
        except ValueError as err:
            print(err)
            continue
        if pair is not None:
            pair_id = store.add(pair, source=collect.SOURCE)
            stored += 1
            print(f"stored pair #{pair_id}")
    print(f"stored {stored} pairs in {args.store}")
    return 0


COMMANDS = {
    "validate-data": _validate_data,
    "make-demo-pairs": _make_demo_pairs,
    "train-rm": _train_rm,
    "ppo": _ppo,
    "grpo": _grpo,
    "rloo": _rloo,
    "dpo": _dpo,
    "sweep": _sweep,
    "resume": _resume,
    "sample": _sample,
    "runs": _runs,
    "export": _export,
    "report": _report,
    "run-job": _run_job,
    "pairs": _pairs,
    "collect": _collect,
}

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
