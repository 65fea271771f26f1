"""Policy runs trained side by side on one copy of the base model, each as if alone (``core.batched``).

``step_runs`` is one step of each run: the rollouts of the methods that sample decoded as one batch, each
update one at a time, then the probe answers due decoded together. A batched sweep's runs take their steps so
(``lab.sweep_job``), and so do a workshop group's (``runs.group_job``), whose runs come and go between steps:
``RunsOnOneBase`` puts a joining run's adapters (policy, value, and its own reward model's, named apart) on the
base the first run loaded, and takes a leaving run's off again.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rlhf_engine.core.batched import probe_side_by_side, step_side_by_side
from rlhf_engine.core.memory import release_free_memory
from rlhf_engine.core.reward import RewardModel
from rlhf_engine.core.rollout import POLICY
from rlhf_engine.runs.policy_job import new_trainer, normalise_rewards, policy_run_inputs
from rlhf_engine.runs.policy_run import PolicyRun
from rlhf_engine.runs.runfolder import RunFolder

OnError = Callable[[PolicyRun, Exception], None]  # a run whose step failed, and why


def step_runs(going: list[PolicyRun], on_error: OnError | None = None) -> None:
    """One step of each run: the rollouts of those that sample decoded as one batch, each update one at a time;
    then the probe answers due, decoded together.

    ``on_error(run, error)``: a run whose step fails is handed to it and the others go on (a group's runs);
    without it the first failure is raised (a sweep's runs fail together).
    """
    failed: set[int] = set()

    def fail(loop: PolicyRun, err: Exception) -> None:
        failed.add(id(loop))
        on_error(loop, err)

    guard = fail if on_error is not None else None
    for loop in going:
        loop.begin_step()
    sampling = [loop for loop in going if not loop.learns_from_pairs]
    results = step_side_by_side([loop.trainer for loop in sampling], lambda i, metrics: sampling[i].on_rollout(metrics),
                                (lambda i, err: fail(sampling[i], err)) if guard else None) if sampling else []
    for loop, result in zip(sampling, results):
        if result is not None:
            loop.end_step(*result)
    for loop in going:
        if loop.learns_from_pairs:
            _guarded(loop.take_step, loop, guard)
    answer_due_probes([loop for loop in going if id(loop) not in failed], guard)


def answer_due_probes(loops: list[PolicyRun], on_error: OnError | None = None) -> None:
    """The probe answers due after this step, those of runs with the same probe prompts due decoded as one batch
    (with ``on_error``, a batch that fails is answered again run by run, each failure handed to it)."""
    for column, reference in enumerate((True, False)):
        due = [loop for loop in loops if loop.probes_due()[column]]
        for group in same_probe_prompts(due, reference):
            prompts = group[0].probe_prompts_due(reference)
            try:
                answers = probe_side_by_side([loop.trainer for loop in group], prompts, reference)
            except Exception:
                if on_error is None:
                    raise
                for loop in group:
                    _guarded(lambda loop=loop: loop.add_probes(loop.answer_probes(reference), reference), loop,
                             on_error)
                continue
            for loop, rows in zip(group, answers):
                loop.add_probes(rows, reference)


def _guarded(work: Callable[[], None], loop: PolicyRun, on_error: OnError | None) -> None:
    if on_error is None:
        work()
        return
    try:
        work()
    except Exception as err:  # noqa: BLE001 - this run's failure alone
        on_error(loop, err)


def same_probe_prompts(loops: list, reference: bool = False) -> list[list]:
    """Runs grouped by the probe prompts due now (``PolicyRun.probe_prompts_due``: all, or the first
    ``probe_subset``) and reference answers per prompt (a sweep's runs share them: one group)."""
    groups: dict[str, list] = {}
    for loop in loops:
        key = json.dumps([loop.probe_prompts_due(reference), loop.config.reference_probe_samples])
        groups.setdefault(key, []).append(loop)
    return list(groups.values())


@dataclass(eq=False)
class Member:
    """A run of a group: its folder, who owns it, and once it has joined, its PolicyRun and reward model."""

    run: RunFolder
    owner: str | None = None
    loop: PolicyRun | None = None
    reward_model: object = None
    joined_at: int = 0  # the group's step count when it joined


class RunsOnOneBase:
    """The runs of a group on one copy of the base model, joining between steps and leaving when done.

    The first run to join loads the base (with its policy adapter "policy"); each later run's adapters go onto it
    under names of its own ("policy<n>", never reused), and its reward model's adapter too (``RewardModel.load``
    with ``base=``: "reward", else "reward-<hash of its folder>"), so each run keeps its own adapters, value head,
    optimiser, random streams and reward model. A run that leaves takes its adapters off the base.
    """

    def __init__(self):
        self.live: list[Member] = []
        self.base: tuple | None = None  # (PEFT model, tokenizer, ModelConfig) once the first run loaded it
        self.joined = 0  # runs that joined so far (names their adapters)

    def join(self, member: Member, step: int) -> PolicyRun:
        """Build the run's trainer on the base (the first run loads it), resumed where its folder left off."""
        name = f"{POLICY}{self.joined}" if self.joined else POLICY
        self.joined += 1
        trainer = None
        try:
            saved = member.run.config()
            if self.base is not None:
                member.reward_model = self._reward_model(Path(saved["reward"]))
            saved, config, prompts, member.reward_model, gold_scorer = policy_run_inputs(member.run,
                                                                                         member.reward_model)
            trainer = new_trainer(member.run, saved, config, prompts, member.reward_model, gold_scorer,
                                  self.base[:2] if self.base is not None else None, name)
            if self.base is None:
                self.base = (trainer.model.peft, trainer.tokenizer, config.model)
            normalise_rewards(member.run, saved, config, member.reward_model, trainer, prompts)
            member.loop, member.joined_at = PolicyRun(member.run, saved, config, trainer), step
        except Exception:
            self._take_off(list(trainer.model.adapters.values()) if trainer is not None else [name],
                           member.reward_model)
            raise
        self.live.append(member)
        return member.loop

    def _reward_model(self, folder: Path):
        """The run's reward model on the base: a twin of a live run's from the same folder (one adapter, a gain and
        bias of its own), else loaded onto the base under a name of its own (``RewardModel.load`` with ``base=``)."""
        for other in self.live:
            rm = other.reward_model
            if rm.backbone is self.base[0] and rm.folder and Path(rm.folder).resolve() == folder.resolve():
                return rm.twin()
        return RewardModel.load(folder, base=self.base)

    def step(self) -> list[tuple[Member, Exception]]:
        """One step of every live run not done yet; the runs whose step failed, and why (the others took theirs)."""
        going = [m for m in self.live if not m.loop.done]
        by_loop = {id(m.loop): m for m in going}
        failed: list[tuple[Member, Exception]] = []
        step_runs([m.loop for m in going], lambda loop, err: failed.append((by_loop[id(loop)], err)))
        return failed

    def leave(self, member: Member) -> None:
        """Take the run off the base: its adapters (and its reward model's, unless another live run scores with the
        same one) deleted from the shared model, its trainer let go."""
        if member in self.live:
            self.live.remove(member)
        if member.loop is None or self.base is None:
            return
        self._take_off(list(member.loop.trainer.model.adapters.values()), member.reward_model)
        member.loop = member.reward_model = None
        release_free_memory()

    def _take_off(self, names: list[str], reward_model) -> None:
        """Delete adapters ``names`` from the base, and ``reward_model``'s when it is there and no live run scores
        with it."""
        if self.base is None:
            return
        peft = self.base[0]
        if getattr(reward_model, "backbone", None) is peft and all(
                m.reward_model.backbone is not peft or m.reward_model.adapter_name != reward_model.adapter_name
                for m in self.live):  # no live run scores with it (twins share one adapter)
            names = names + [reward_model.adapter_name]
        with warnings.catch_warnings():  # "adapter X was active which is now deleted": the next step picks its own
            warnings.simplefilter("ignore", UserWarning)
            for name in names:
                if name in peft.peft_config and len(peft.peft_config) > 1:  # PEFT keeps at least one adapter
                    peft.delete_adapter(name)
