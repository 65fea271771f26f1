"""Data-parallel PPO under Hugging Face ``accelerate launch``: every process holds the whole model, rolls
out its share of each batch and updates on it; gradients are averaged before each optimiser step, so the
replicas stay identical.

    accelerate launch --multi_gpu --num_processes 2 -m rlhf_engine ppo ...

(on CPU too: ``accelerate`` then starts the processes with the gloo backend). Without a launcher every
function here is a no-op and the engine runs in one process, as usual. Process 0 is the one that writes
the run folder.
"""

from __future__ import annotations

import os

import torch


def launched() -> bool:
    """Whether this process was started by a multi-process launcher (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_environment() -> None:
    """Join the process group the launcher described (gloo on CPU, NCCL on CUDA); nothing when not launched."""
    if not launched() or torch.distributed.is_initialized():
        return
    from accelerate import PartialState

    PartialState(cpu=not torch.cuda.is_available())


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    return torch.distributed.get_rank() if _active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _active() else 1


def is_main() -> bool:
    """Process 0 (or the only process): the one that writes files and prints."""
    return rank() == 0


def local_rank() -> int:
    """This process's index on its machine (which GPU it uses; 0 without a launcher)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched() else 0


def _device() -> torch.device:
    """Where small control tensors go: NCCL only reduces CUDA tensors, gloo CPU ones."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """x summed over the processes (x itself in one process)."""
    if not _active():
        return x
    x = x.clone()
    torch.distributed.all_reduce(x)
    return x


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
    """Each number averaged over the processes (the same keys on every process)."""
    if not _active():
        return values
    keys = sorted(values)
    total = all_sum(torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_device()))
    return {k: v / world_size() for k, v in zip(keys, total.tolist())}


def any_process(flag: bool) -> bool:
    """True when the flag is set on any process: every process then takes the same branch."""
    if not _active():
        return flag
    return bool(all_sum(torch.tensor([1.0 if flag else 0.0], device=_device())).item() > 0)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the processes (one flat all-reduce)."""
    if not _active():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(p).clone()
        offset += g.numel()


def replicas_in_sync(params: list[torch.nn.Parameter]) -> bool:
    """Whether every process holds the same trainable weights (compared by exact checksums)."""
    if not _active():
        return True
    mine = torch.stack([torch.stack([p.detach().double().sum(), (p.detach().double() ** 2).sum()]) for p in params])
    gathered = [torch.zeros_like(mine) for _ in range(world_size())]
    torch.distributed.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def from_main(value):
    """Process 0's ``value`` (any picklable object) on every process; the others' values are ignored."""
    if not _active():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
