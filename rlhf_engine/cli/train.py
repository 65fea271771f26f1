"""The commands that train: train-rm, the one command per method (train_method), sweep, resume and run-job.

Each builds its config from the flags first (flags.py maps each flag to the field of the same name), so a bad
value is refused with one line before torch is imported; then it starts the job and follows it (follow.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rlhf_engine.methods import registry

from .errors import UserError
from .flags import flag_fields, set_fields
from .follow import follow, stop_on_signals


def _model_config(args):
    from rlhf_engine.config import ModelConfig

    return ModelConfig(source=args.model, quant=args.quant)


def reward_config(args):
    """train-rm's RewardConfig: its flags, then --set (which wins)."""
    from rlhf_engine.config import RewardConfig

    return RewardConfig(model=_model_config(args), **{**flag_fields(args, RewardConfig),
                                                      **set_fields(RewardConfig, args.set)})


def policy_config(args, config_class, only_known: bool = False, method: str | None = None):
    """The config of a policy-training command: its method's class, from the flags it was given, then --set.
    ``only_known`` (a sweep of several methods, on PPO's flags): the --set fields a method does not have are
    left out for it; flags are read by the names of its own fields, so a PPO-only flag never reaches it.
    ``method``: its name, whose --set METHOD.FIELD=VALUE items are its own (applied after the shared ones)."""
    import dataclasses

    if args.prompts is not None and not args.prompts.exists():
        raise UserError(f"{args.prompts}: file not found")
    assignments = [item for item in args.set if "." not in item.partition("=")[0]]
    if only_known:
        known = {f.name for f in dataclasses.fields(config_class)}
        assignments = [item for item in assignments if item.partition("=")[0] in known]
    if method is not None:  # "grpo.epochs=2" is grpo's "epochs=2"
        assignments += [item.partition(".")[2] for item in args.set if item.partition("=")[0].partition(".")[0] ==
                        method and "." in item.partition("=")[0]]
    from rlhf_engine.config import bundled_policy_defaults

    model = _model_config(args)
    return config_class(model=model, **{**bundled_policy_defaults(model, config_class),
                                        **flag_fields(args, config_class), **set_fields(config_class, assignments)})


def ppo_config(args):
    from rlhf_engine.config import PPOConfig

    return policy_config(args, PPOConfig)


def train_rm(args) -> int:
    """Train, then end with how often the model agrees with its held-out pairs against chance (``heldout_verdict``,
    the words its page and events.log show), so a model no better than chance does not end on "completed"."""
    config = reward_config(args)  # a bad flag value is refused before torch is imported
    from rlhf_engine.runs.reward_job import reward_verdict, start_reward_job

    code = follow(start_reward_job(args.out, config, args.data))
    verdict = reward_verdict(args.out)
    if verdict is not None:  # None: stopped or failed before its evaluation
        print(verdict, flush=True)
    return code


def warn_of_weak_reward_model(reward_dir: Path) -> None:
    """On the terminal, once, what a policy run on this reward model logs at its start when the model agrees with
    its held-out pairs no better than chance (``reward_job.weak_reward_model_warning``)."""
    from rlhf_engine.core import distributed
    from rlhf_engine.runs.reward_job import weak_reward_model_warning

    warning = weak_reward_model_warning(reward_dir)
    if warning is not None and distributed.is_main():
        print(f"warning: {warning}", file=sys.stderr, flush=True)


def train_method(args) -> int:
    """The command of a method of the registry (``args.command`` is its name): a policy run of its config, on
    --data's pairs when the method learns from pairs."""
    method = registry.get(args.command)
    pairs = None
    if method.learns_from_pairs:
        from rlhf_engine.data.hub import hub_dataset

        pairs = args.data
        if pairs is not None and not pairs.exists() and hub_dataset(pairs) is None:
            raise UserError(f"{pairs}: file not found")
    config = policy_config(args, method.config)  # checked before torch is imported
    from rlhf_engine.runs.policy_job import prepare_policy_job

    job = prepared_by_main(lambda: prepare_policy_job(args.out, config, args.reward, args.prompts, pairs))
    warn_of_weak_reward_model(args.reward)
    return follow(job.start())


def prepared_by_main(prepare):
    """The queued Job that ``prepare()`` makes; under accelerate launch process 0 prepares the run folder and
    the other processes open it once it is there (an error on process 0 stops them all with its message)."""
    from rlhf_engine.core import distributed
    from rlhf_engine.runs.resume import prepared_job

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


def sweep(args) -> int:
    """Prepare every run of the sweep (all queued), then run them side by side in this process (or one after
    another with --one-at-a-time)."""
    from rlhf_engine.config import PPOConfig
    from rlhf_engine.lab.sweep_job import prepare_sweep

    if args.seeds and not args.methods:
        raise UserError("--seeds trains each method once per seed: use it with --methods")
    methods = _method_members(args) if args.methods else None
    values = None if methods is not None else _varied_values(args)
    if args.best_of_n == 1 or args.best_of_n < 0:
        raise UserError(f"--best-of-n must be 0 (none) or at least 2, got {args.best_of_n}")
    base = policy_config(args, PPOConfig, only_known=methods is not None)
    if args.ray:
        from rlhf_engine.cli.cluster import sweep_on_cluster

        return sweep_on_cluster(args, lambda: prepare_sweep(
            args.out, base, args.reward, args.vary, values, args.adaptive, args.best_of_n, args.best_of_n_prompts,
            args.prompts, batched=False, methods=methods))
    jobs = prepare_sweep(args.out, base, args.reward, args.vary, values, args.adaptive,
                         args.best_of_n, args.best_of_n_prompts, args.prompts, batched=not args.one_at_a_time,
                         methods=methods)
    warn_of_weak_reward_model(args.reward)
    return _run_one_at_a_time(args, jobs) if args.one_at_a_time else _run_side_by_side(args, jobs[0])


def _varied_values(args) -> list:
    """The values of --vary, from --values (or, for beta, --kl-coefs); the default betas if neither."""
    from rlhf_engine.lab.sweep import DEFAULT_BETAS

    if args.betas:
        raise UserError("--betas gives each method's betas: use it with --methods")
    if args.vary == "kl_coef":
        if args.values is not None and args.kl_coefs is not None:
            raise UserError("give the betas with --kl-coefs or --values, not both")
        flag, given = ("--values", args.values) if args.values is not None else ("--kl-coefs", args.kl_coefs)
    elif args.values is None:
        raise UserError(f"--vary {args.vary} needs --values (comma-separated)")
    else:
        flag, given = "--values", args.values
    return sweep_values(flag, args.vary, given) if given is not None else list(DEFAULT_BETAS)


def _run_side_by_side(args, job) -> int:
    from rlhf_engine.lab.sweep import Sweep

    runs = Sweep(args.out).runs()
    print(f"sweep {args.out}: {len(runs)} runs side by side in this process: "
          + ", ".join(run.id for run in runs), flush=True)
    code = follow(job.start())
    if job.run.status().get("state") == "stopped":
        print(f"sweep stopped; 'python -m rlhf_engine resume {args.out}' continues every run", file=sys.stderr)
        return 130
    print(f"sweep done: python -m rlhf_engine report {args.out} writes its one-file HTML report")
    return code


def _run_one_at_a_time(args, jobs: list) -> int:
    print(f"sweep {args.out}: {len(jobs)} runs queued: " + ", ".join(job.run.id for job in jobs), flush=True)
    worst = 0
    for i, job in enumerate(jobs, 1):
        print(f"[{i}/{len(jobs)}] {job.run.path}", flush=True)
        code = follow(job.start())
        if job.run.status().get("state") == "stopped":  # Ctrl-C: the rest stay queued; 'resume' runs each
            print("sweep stopped; the runs not started show as interrupted: resume each with "
                  "'python -m rlhf_engine resume <run folder>'", file=sys.stderr)
            return 130
        worst = max(worst, code)
    print(f"sweep done: python -m rlhf_engine report {args.out} writes its one-file HTML report")
    return worst


def sweep_values(flag: str, field: str, text: str, given: str | None = None) -> list:
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

    from rlhf_engine.lab.sweep import plan_methods

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in registry.names()]
    if unknown or not methods or len(set(methods)) != len(methods):
        raise UserError(f"--methods {args.methods!r}: give each of {', '.join(registry.names())} at most once, "
                        "comma-separated")
    if args.vary != "kl_coef" or args.values is not None or args.adaptive:
        raise UserError("--methods varies the method (and each method's beta): not with --vary, --values or "
                        "--adaptive")
    betas = {}
    for item in args.betas:
        method, sep, text = item.partition("=")
        if not sep or method not in methods:
            raise UserError(f"--betas {item!r}: expected METHOD=B1,B2 with METHOD one of --methods ({args.methods})")
        betas[method] = sweep_values("--betas", "kl_coef", text, given=item)
    if args.kl_coefs is not None:
        everyone = sweep_values("--kl-coefs", "kl_coef", args.kl_coefs)
        betas = {method: betas.get(method, everyone) for method in methods}
    fields = {m: {f.name for f in dataclasses.fields(registry.get(m).config)} for m in methods}
    for item in args.set:
        name = item.partition("=")[0]
        owner, dot, field = name.partition(".")
        if (dot and field not in fields.get(owner, ())) or (not dot and not any(name in f for f in fields.values())):
            raise UserError(f"--set {item!r}: " + (f"{owner} is not among --methods or has no {field!r}" if dot else
                                                  f"none of {', '.join(methods)} has that setting"))
    configs = {m: policy_config(args, registry.get(m).config, only_known=True, method=m) for m in methods}
    return plan_methods(configs, betas, _seeds(args))


def _seeds(args) -> tuple[int, ...] | None:
    """--seeds as integers (several: each method once per seed), or None."""
    if not args.seeds:
        return None
    try:
        seeds = tuple(int(t) for t in args.seeds.split(",") if t.strip())
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds {args.seeds!r}: give at least one seed, none twice")
    return seeds


def resume(args) -> int:
    from rlhf_engine.runs.resume import prepare_resume

    if args.ray:
        from rlhf_engine.cli.cluster import resume_on_cluster

        return resume_on_cluster(args)
    return follow(prepared_by_main(lambda: prepare_resume(args.run)).start())


def run_job(args) -> int:
    """Execute a queued run folder; end it cleanly (checkpoint first) on SIGINT or when the parent exits."""
    import threading
    import time

    from rlhf_engine.runs.job import DETACHED_ENV, apply_job_resources
    from rlhf_engine.runs.resume import prepared_job

    stop_on_signals()
    apply_job_resources()  # the CPUs and threads of the room's slot, if it gave any
    job = prepared_job(args.run).start()
    parent = os.getppid()

    def watch_parent() -> None:  # the dashboard server died: stop at the end of the step, with a checkpoint
        while job.alive:
            if os.getppid() != parent:
                job.stop()
                return
            time.sleep(1.0)

    if not os.environ.get(DETACHED_ENV):  # a room's job outlives its server, which takes it back on restart
        threading.Thread(target=watch_parent, daemon=True).start()
    return follow(job)
