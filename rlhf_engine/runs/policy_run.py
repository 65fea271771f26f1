"""One policy run's bookkeeping around its trainer, the same alone or beside the other runs of a sweep."""

from __future__ import annotations

import json

from rlhf_engine.config import PolicyConfig
from rlhf_engine.core import distributed
from rlhf_engine.lab.alarms import check, new_alarms
from rlhf_engine.lab.raised_alarms import log_line
from rlhf_engine.methods import registry
from rlhf_engine.runs.runfolder import RunFolder, checkpoint_step


class PolicyRun:
    """One policy run's bookkeeping around its trainer: resume, metrics, samples, alarms, probes, checkpoints.

    The loop that drives it is ``policy_body``'s (the run alone) or ``sweep_body``'s (beside the other runs of
    a batched sweep); both do the same per step, in this order: ``begin_step``, the trainer's step,
    ``end_step``, then the probe answers that ``probes_due`` asks for.
    """

    def __init__(self, run: RunFolder, saved: dict, config: PolicyConfig, trainer):
        self.run, self.saved, self.config, self.trainer = run, saved, config, trainer
        self.learns_from_pairs = registry.of_config(config).learns_from_pairs
        self.latest = run.latest_checkpoint()
        if self.latest is not None:
            trainer.load_checkpoint(self.latest)
            run.truncate_to_step(checkpoint_step(self.latest))
            run.log(f"resumed from {self.latest.name}")
        else:
            run.truncate_to_step(0)
        run.log(trainer.settings())
        if trainer.world_size > 1:
            run.log(f"data parallel over {trainer.world_size} processes, "
                    f"{config.batch_size // trainer.world_size} {'pairs' if self.learns_from_pairs else 'answers'} "
                    "each per step")
        main = distributed.is_main()
        self.probe_prompts = load_probes(run) if config.probe_every and main else []  # answered by process 0
        self.reference_answered = any(r["policy"] == "reference" for r in run.probes())
        self.raised = set(run.status().get("alarms", []))
        self.history = run.metrics()  # the steps kept after the truncation above; the alarms read this
        self.probe_rows = run.probes() if self.probe_prompts else None  # kept as add_probes appends; alarms read it

    @property
    def done(self) -> bool:
        return self.trainer.step_count >= self.config.steps

    def begin_step(self) -> None:
        self.run.set_status("running", phase="rollout", rollout=None)

    def take_step(self) -> None:
        """One step of the run on its own: its rollout (shown while the update runs), its update, what it logs."""
        self.begin_step()
        step = self.trainer.begin()
        self.on_rollout(step.metrics)
        self.end_step(*self.trainer.finish(step))

    def answer_due_probes(self) -> None:
        """The probe answers due after this step, the run alone (a sweep's runs answer side by side)."""
        for reference, due in zip((True, False), self.probes_due()):
            if due:
                self.add_probes(self.answer_probes(reference), reference)

    def on_rollout(self, rollout: dict) -> None:
        """The step's score and KL, shown while its update runs."""
        self.run.set_status("running", phase="update", rollout=rollout)

    def end_step(self, metrics: dict, samples: list[dict]) -> None:
        run, trainer = self.run, self.trainer
        run.append_metrics(metrics)
        run.append_samples(samples)
        self.history.append(metrics)
        self.raise_alarms()
        run.set_status("running", step=trainer.step_count, phase="rollout", rollout=None, alarms=sorted(self.raised))
        if trainer.step_count % self.config.checkpoint_every == 0 and not self.done:
            self.latest = run.write_checkpoint(trainer.step_count, trainer.save_checkpoint)

    def raise_alarms(self) -> bool:
        """Check the run's health on its metrics and held-out probes; log each alarm once (events.log, and its
        code in ``self.raised`` for status.json). Whether a new one was raised."""
        found = new_alarms(check(self.history, self.saved["config"], probes=self.probe_rows), self.raised)
        for alarm in found:
            self.run.log(log_line(alarm))
            self.raised.add(alarm.code)
        return bool(found)

    def probes_due(self) -> list[bool]:
        """Which probe answers are due after this step: [the reference's, the policy's]. The reference answers
        after step 1 (the first plotted point should not wait for them), the policy every probe_every steps
        and at the end (which prompts: ``probe_prompts_due``)."""
        if not self.probe_prompts:
            return [False, False]
        step = self.trainer.step_count
        return [not self.reference_answered, step % self.config.probe_every == 0 or step == self.config.steps]

    def probe_prompts_due(self, reference: bool) -> list:
        """The probe prompts answered now: all of them by the reference and by the policy at a full probe, else
        the first ``probe_subset`` (a point on the run's path, not on the frontier)."""
        if reference or self.full_probe_due():
            return self.probe_prompts
        return self.probe_prompts[:self.config.probe_subset]

    def full_probe_due(self) -> bool:
        """Whether the policy's probe now answers every probe prompt: at the last step, and at every probe when
        ``probe_subset`` is 0 (or not below the number of probe prompts)."""
        subset = self.config.probe_subset
        return not subset or subset >= len(self.probe_prompts) or self.trainer.step_count >= self.config.steps

    def answer_probes(self, reference: bool) -> list[dict]:
        """This run's answers to the probe prompts due (``probe_prompts_due``), alone (a sweep's runs answer side
        by side: batched.probe_side_by_side): the policy's once, the reference's ``reference_probe_samples``
        times."""
        prompts = self.probe_prompts_due(reference)
        samples = range(self.config.reference_probe_samples if reference else 1)
        return [row for i in samples for row in self.trainer.probe_answers(prompts, reference, sample=i)]

    def add_probes(self, rows: list[dict], reference: bool) -> None:
        """Append the answers of this step's probe, each with its step (the reference's: 0) and, at a probe of the
        first ``probe_subset`` prompts only, ``"subset": true`` (its means are over fewer prompts)."""
        subset = not reference and not self.full_probe_due()
        for row in rows:
            row["step"] = 0 if reference else self.trainer.step_count
            if subset:
                row["subset"] = True
        self.run.append_probes(rows)
        self.reference_answered |= reference
        if self.probe_rows is not None:
            self.probe_rows.extend(rows)
        if not reference and self.raise_alarms():  # the held-out probes judge reward hacking: check them at once
            self.run.set_status("running", alarms=sorted(self.raised))

    def stop(self) -> str:
        """Checkpoint the last finished step (unless it has one) and end as stopped."""
        step = self.trainer.step_count
        if step and (self.latest is None or checkpoint_step(self.latest) != step):
            self.run.write_checkpoint(step, self.trainer.save_checkpoint)
        return "stopped"

    def finish(self) -> str:
        trainer = self.trainer
        if trainer.world_size > 1:
            in_sync = distributed.replicas_in_sync(trainer.params)
            self.run.log(f"replicas in sync after {trainer.step_count} steps: {'yes' if in_sync else 'NO'}")
            self.run.set_status("running", processes=trainer.world_size, replicas_in_sync=in_sync)
        if distributed.is_main():
            trainer.model.save_adapters(self.run.path)  # final policy/ (and value/) adapters, top of the run folder
        return "completed"


def load_probes(run: RunFolder) -> list:
    path = run.path / "probe_prompts.json"
    if not path.is_file():
        return []
    return [tuple(p) if isinstance(p, list) else p for p in json.loads(path.read_text())]
