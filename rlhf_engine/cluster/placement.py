"""What a run's Ray task asks for: its CPUs, its share of a GPU and its memory, estimated as the room's slots are
(``room.slots``: from the model's shape and the run's sizes, never by loading the model).

A task of several runs trained side by side (a group, a batched sweep) holds one copy of the base model: it asks for
the runtime and weights once and each run's update on top (``job_memory_parts``). On a cluster with GPUs a task asks
for the fraction of one GPU its estimate takes (in steps of ``GPU_STEP``); on one without, for none, and trains on
its CPUs. Ray starts tasks with ``OMP_NUM_THREADS=1``: the task sets torch's threads to the CPUs it asked for.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from rlhf_engine.config import PPOConfig, from_dict
from rlhf_engine.methods import registry
from rlhf_engine.room.slots import job_memory_parts
from rlhf_engine.runs.runfolder import RunFolder

GPU_STEP = 0.05  # a task's GPU share is rounded up to a multiple of this
DEFAULT_CPUS = 1  # CPUs (and torch threads) a task asks for unless told: as a room's slot, one thread per job


@dataclass(frozen=True)
class TaskResources:
    """What one Ray task asks the cluster for."""

    cpus: int  # Ray's num_cpus, and the task's torch threads
    gpus: float  # Ray's num_gpus: 0, or a share of one GPU
    memory_bytes: int  # Ray's memory: the estimated peak of the runs it trains

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        gpu = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.cpus} CPU{'s' * (self.cpus != 1)}{gpu}, {self.memory_bytes / 2 ** 30:.1f} GiB"


def task_resources(run: RunFolder, members: list[RunFolder], cpus: int = DEFAULT_CPUS,
                   gpu_memory_bytes: int | None = None, cluster_gpus: float = 0) -> TaskResources:
    """The resources of the task that trains ``members`` (the run itself when alone; a group's or a batched
    sweep's runs) in ``run``'s job. ``gpu_memory_bytes``: one GPU's memory (None: whole GPUs)."""
    configs = [c for c in (_policy_config(m) for m in members or [run]) if c is not None]
    if not configs:  # a reward model, best-of-n alone: sized as a workshop PPO job on its model, as the room does
        configs = [_stand_in(run)]
    wants_gpu = cluster_gpus > 0 and all(c.model.device != "cpu" for c in configs)
    memory = _memory(configs, "cpu")
    gpus = 0.0
    if wants_gpu:
        needed = _memory(configs, "cuda")
        share = needed / gpu_memory_bytes if gpu_memory_bytes else 1.0
        gpus = min(1.0, max(GPU_STEP, math.ceil(share / GPU_STEP - 1e-9) * GPU_STEP))
    return TaskResources(cpus=max(1, int(cpus)), gpus=round(gpus, 2), memory_bytes=int(memory))


def _memory(configs: list, device: str) -> int:
    parts = [job_memory_parts(c.model, c, device) for c in configs]
    return max(fixed for fixed, _ in parts) + sum(per_run for _, per_run in parts)


def _policy_config(run: RunFolder):
    try:
        saved = run.config()
    except (OSError, ValueError):
        return None
    if not registry.is_policy_kind(saved.get("kind", "")):
        return None
    return from_dict(registry.get(saved["kind"]).config, saved["config"])


def _stand_in(run: RunFolder) -> PPOConfig:
    from rlhf_engine.config import ModelConfig
    from rlhf_engine.lab import workshop

    saved = run.config()
    model = saved.get("config", {}).get("model") or saved.get("model")
    return workshop.ppo_config(from_dict(ModelConfig, model) if isinstance(model, dict) else ModelConfig())
