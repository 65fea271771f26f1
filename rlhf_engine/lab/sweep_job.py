"""A sweep's job: its folder and members' run folders created at once (``prepare_sweep``), then its runs trained
side by side in one process (``sweep_body``; ``core.batched``), or one job per run, one after another."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from rlhf_engine.config import PPOConfig, from_dict, to_dict
from rlhf_engine.core import distributed
from rlhf_engine.core.batched import scoring_key
from rlhf_engine.core.models import load_model_and_tokenizer
from rlhf_engine.core.rollout import POLICY, Beside
from rlhf_engine.lab.best_of_n import ReferenceAnswers
from rlhf_engine.lab.best_of_n_job import prepare_best_of_n_job, run_best_of_n
from rlhf_engine.lab.sweep import DEFAULT_BETAS, METHOD_FIELD, SWEEP_FILE, SWEEP_KIND, Sweep, changes_of, plan
from rlhf_engine.runs.job import Job, describe_error
from rlhf_engine.runs.policy_job import new_trainer, normalise_rewards, policy_run_inputs, prepare_policy_job
from rlhf_engine.runs.policy_run import PolicyRun
from rlhf_engine.runs.runfolder import RunFolder, atomic_write_text, safe_name
from rlhf_engine.runs.side_by_side import step_runs


def prepare_sweep(sweep_dir: Path, base: PPOConfig, reward_dir: Path, field: str = "kl_coef",
                  values: list | None = None, adaptive: bool = False, best_of_n: int = 0,
                  best_of_n_prompts: int | None = None, prompts_path: Path | None = None, batched: bool = True,
                  methods: list | None = None, borrowed: list | None = None,
                  best_of_n_from: Path | None = None) -> list:
    """Create the sweep folder and its members' run folders (all queued); return the Jobs that run them.

    ``methods`` (``plan_methods``'s (label, config) list) makes a sweep of several methods instead of one
    setting of ``base``: ``field`` is then "method", and ``base`` (a PPOConfig) gives best-of-n its settings.

    ``batched`` (the default): one Job, the sweep's own, that trains every member side by side in one
    process (``rlhf_engine.core.batched``: one base model, one decoding batch; each run's metrics as alone).
    Otherwise one Job per member, to run one after another. Nothing is created if any input is wrong:
    the members are checked before the first folder is made.

    ``best_of_n``: n of the best-of-n baseline (0: none), sampled from the reference on the runs' probe prompts
    (``best_of_n_prompts``: only the first that many; default all, the same prompts as the runs' points).

    ``borrowed``: (label, run folder) of completed runs of another sweep in the same runs folder that this one
    shows as its own members instead of training them again (the Workshop's methods step takes the KL sweep's PPO
    run as PPO's first seed); ``best_of_n_from``: likewise a completed best-of-n run, instead of ``best_of_n``.
    Both must have trained on the same reward model.
    """
    sweep_dir = Path(sweep_dir)
    safe_name(sweep_dir.name, "sweep name")
    if (sweep_dir / SWEEP_FILE).exists():
        raise FileExistsError(f"{sweep_dir} already holds a sweep; choose another name")
    if methods is not None:
        field, values, members = METHOD_FIELD, [label for label, _ in methods], list(methods)
    else:
        members = plan(base, field, values if values is not None else list(DEFAULT_BETAS), adaptive)
    folders = [sweep_dir.parent / f"{sweep_dir.name}-{label}" for label, _ in members]
    bon_folder = sweep_dir.parent / f"{sweep_dir.name}-best-of-{best_of_n}" if best_of_n else None
    for folder in folders + ([bon_folder] if bon_folder else []):
        if RunFolder(folder).exists():
            raise FileExistsError(f"{folder} already holds a run; choose another sweep name")
    if not (Path(reward_dir) / "reward_model.json").is_file():
        raise FileNotFoundError(f"{reward_dir} holds no trained reward model (no reward_model.json)")
    if prompts_path is not None and not Path(prompts_path).is_file():
        raise FileNotFoundError(f"{prompts_path}: file not found")
    lent = _borrowable(sweep_dir, reward_dir, [(label, Path(run)) for label, run in borrowed or []]
                       + ([("best-of-n", Path(best_of_n_from))] if best_of_n_from else []))

    record = {"kind": "sweep", "vary": field, "values": values, "adaptive": adaptive, "base": to_dict(base),
              "reward": str(Path(reward_dir).resolve()), "batched": batched,
              "members": [{"label": label, "run": run.id, "changes": changes_of(base, _config_of(run)),
                           "borrowed": True} for label, run in lent if label != "best-of-n"]
              + [{"label": label, "run": folder.name, "changes": changes_of(base, config)}
                 for (label, config), folder in zip(members, folders)],
              "best_of_n": {"n": best_of_n, "run": bon_folder.name} if bon_folder else None}
    if best_of_n_from:
        run = RunFolder(best_of_n_from)
        record["best_of_n"] = {"n": run.config()["n"], "run": run.id, "borrowed": True}
    sweep_run = RunFolder(sweep_dir)
    if batched:  # the sweep folder is a run folder too: its job's state, step and process.log
        sweep_run.create(SWEEP_KIND, {k: v for k, v in record.items() if k != "kind"}, base.steps)
    else:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / SWEEP_FILE, json.dumps(record, indent=2) + "\n")
    jobs = [prepare_best_of_n_job(bon_folder, base, reward_dir, best_of_n, best_of_n_prompts, prompts_path)] \
        if bon_folder else []
    jobs += [prepare_policy_job(folder, config, reward_dir, prompts_path)
             for (_, config), folder in zip(members, folders)]
    return [Job(sweep_run, sweep_body)] if batched else jobs


def _borrowable(sweep_dir: Path, reward_dir: Path, lent: list[tuple[str, Path]]) -> list[tuple[str, RunFolder]]:
    """The runs a new sweep borrows, checked: each a completed run beside the sweep's folder, trained on the same
    reward model."""
    checked = []
    for label, folder in lent:
        run = RunFolder(folder)
        if Path(folder).resolve().parent != sweep_dir.resolve().parent:
            raise ValueError(f"{folder}: a sweep borrows runs from its own runs folder only")
        if not run.exists() or run.status().get("state") != "completed":
            raise ValueError(f"{folder}: only a completed run can be borrowed")
        if Path(run.config().get("reward", "")).resolve() != Path(reward_dir).resolve():
            raise ValueError(f"{folder} trained on another reward model than {reward_dir}")
        checked.append((label, run))
    return checked


def _config_of(run: RunFolder):
    """A policy run's saved config, as its method's config object."""
    from rlhf_engine.methods import registry

    saved = run.config()
    return from_dict(registry.get(saved["kind"]).config, saved["config"])


def sweep_body(job: Job) -> str:
    """The runs of a sweep side by side in this process (``core.batched``): the best-of-n baseline first, then
    every run not completed yet, one step of each at a time on one base model, the rollouts of the methods
    that sample and every run's probe answers decoded as one batch (a method that learns from pairs steps on
    them alone). Each member's run folder is written as if it ran alone.

    Best-of-n goes first because its first ``reference_probe_samples`` samples of each probe prompt are the
    reference's probe answers (the same random streams): the runs take them from it, each scoring them itself,
    instead of decoding them again after their first step (``_best_of_n_beside``)."""
    if distributed.world_size() > 1:
        raise ValueError("a batched sweep trains its runs side by side in one process, not data-parallel: resume it "
                         "without accelerate launch, or resume its runs one by one under it")
    sweep = Sweep(job.run.path)
    todo = [m.run for m in sweep.members() if m.run.status().get("state") != "completed"]
    bon = sweep.best_of_n_run()
    bon = bon if bon is not None and bon.status().get("state") != "completed" else None
    for run in todo + ([bon] if bon else []):
        run.set_status("queued")  # this process's id: if it dies, they read as interrupted
    live: list[RunFolder] = []
    try:
        loops, reward_model = _runs_on_one_base(todo)
        if bon is not None:
            live = [bon]
            if _best_of_n_beside(job, bon, loops, reward_model) == "stopped":
                return "stopped"
        live = [loop.run for loop in loops]
        for loop in loops:
            loop.run.set_status("running", error=None)
            loop.run.log(f"started (side by side with {len(loops) - 1} other runs of sweep {sweep.id})")
        while any(not loop.done for loop in loops):
            going = [loop for loop in loops if not loop.done]
            if job.stop_event.is_set():
                for loop in going:
                    loop.run.log(loop.stop())
                    loop.run.set_status("stopped")
                return "stopped"
            step_runs(going)
            job.run.set_status("running", step=max(loop.trainer.step_count for loop in loops))
            for loop in going:
                if loop.done:
                    loop.run.log(loop.finish())
                    loop.run.set_status("completed")
                    live.remove(loop.run)
        return "completed"
    except BaseException as err:  # every member still going fails with the sweep, saying why
        error = describe_error(err)
        for run in live:
            if run.status().get("state") in ("queued", "running"):
                run.log("failed: " + error)
                run.set_status("failed", error=error)
        raise
    finally:
        for run in todo + ([bon] if bon else []):
            if run.status().get("state") == "queued":  # never reached (an earlier failure or a stop)
                run.set_status("stopped")


def _runs_on_one_base(runs: list[RunFolder]) -> tuple[list[PolicyRun], object]:
    """A PolicyRun for each run, every trainer's adapters on the first one's base model, one reward model
    shared by all; (runs, the reward model or None when there are no runs)."""
    loops, reward_model, first = [], None, None
    for i, run in enumerate(runs):
        saved, config, prompts, reward_model, gold_scorer = policy_run_inputs(run, reward_model)
        base = None if first is None else (first.model.peft, first.tokenizer)
        trainer = new_trainer(run, saved, config, prompts, reward_model, gold_scorer, base,
                              POLICY if first is None else f"{POLICY}{i}")
        first = first or trainer
        normalise_rewards(run, saved, config, reward_model, trainer, prompts)
        loops.append(PolicyRun(run, saved, config, trainer))
    return loops, reward_model


def _best_of_n_beside(job: Job, bon: RunFolder, loops: list[PolicyRun], reward_model) -> str:
    """The best-of-n run, sampled from the runs' base model with adapters off (its own model when there are no
    runs), its first samples then handed to the runs as their reference probe answers; its end state."""
    bon.set_status("running", error=None)
    bon.log("started (in the sweep's process)")
    if not loops:
        model, tokenizer = load_model_and_tokenizer(from_dict(PPOConfig, bon.config()["config"]).model)
        context = contextlib.nullcontext
    else:
        first = loops[0].trainer
        model, tokenizer, context = first.model.peft, first.tokenizer, first.model.peft.disable_adapter
    state, reference = run_best_of_n(job, bon, model, tokenizer, reward_model or policy_run_inputs(bon)[3], context)
    bon.log(state)
    bon.set_status(state)
    if state == "completed":
        _hand_over_reference_answers(loops, bon.config(), reference)
    return state


def _hand_over_reference_answers(loops: list[PolicyRun], bon_saved: dict,
                                 reference: list[ReferenceAnswers]) -> None:
    """Best-of-n's first samples as the reference probe answers of each run that has not answered them yet and
    whose answers they are (``_same_reference_answers``). A run writes them as its own (``probe_answers`` with
    ``sampled=`` and best-of-n's raw RM and gold scores, ``beside=``: it normalises and penalises them by its own
    settings), so its rows are those it would have written after its first step; runs that score alike (the same
    reward model, normalisation, missing-EOS penalty and gold annotator) take the first such run's rows. The
    prompts × reference_probe_samples answers are decoded and scored once, not twice."""
    scored: dict[tuple, list[dict]] = {}
    for loop in loops:
        if loop.reference_answered or not _same_reference_answers(loop, bon_saved, reference):
            continue
        samples = loop.config.reference_probe_samples
        alike = (scoring_key(loop.trainer), samples)
        if alike not in scored:
            scored[alike] = [row for piece in reference if piece.sample < samples
                             for row in loop.trainer.probe_answers(piece.prompts, reference=True,
                                                                   sampled=piece.rollout, sample=piece.sample,
                                                                   beside=Beside(piece.raw, gold=piece.gold))]
        loop.add_probes([dict(row) for row in scored[alike]], reference=True)
        loop.run.log(f"reference probe answers ({samples} per prompt) taken from best-of-n's first samples: the same "
                     "random streams, decoded once")


def _same_reference_answers(loop: PolicyRun, bon_saved: dict, reference: list[ReferenceAnswers]) -> bool:
    """Whether best-of-n's kept samples are this run's reference probe answers: the same probe prompts, at least
    as many samples per prompt as the run asks, the same sampling (model, response length, temperature) and the
    same reward model (its raw scores are the run's)."""
    prompts = [p for piece in reference if piece.sample == 0 for p in piece.prompts]
    kept = {piece.sample for piece in reference}
    bon_config = from_dict(PPOConfig, bon_saved["config"])
    sampling = [(c.model, c.response_length, c.temperature) for c in (loop.config, bon_config)]
    return (bool(loop.probe_prompts) and list(loop.probe_prompts) == prompts and sampling[0] == sampling[1]
            and set(range(loop.config.reference_probe_samples)) <= kept and loop.saved["reward"] == bon_saved["reward"])
