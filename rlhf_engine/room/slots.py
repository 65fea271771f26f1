"""How many of a room's jobs run at once (its slots), and how much memory one policy job takes.

Slots are the smaller of two bounds: the cores (each job gets ``threads_per_job`` of them) and the memory (the
free RAM, or on CUDA the GPU's free memory, less what the server keeps for its own shared models, over one job's
peak). The teacher's ``SLOTS=`` overrides both; the plan's reason still says what the machine would give.

A job's memory is estimated from the model's shape (its config.json, never its weights) and the run's sizes,
calibrated on the peaks measured in benchmarks/RESULTS.md (see ``estimate_job_memory``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

GIB = 2 ** 30
# The bundled SmolLM2-135M-Instruct's shape, from the config.json of its cached safetensors folder (the source
# "default" is resolved without converting the GGUF file, which would load the model).
BUNDLED_SHAPE = {"hidden_size": 576, "num_hidden_layers": 30, "intermediate_size": 1536, "vocab_size": 49152,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True}
RUNTIME_BYTES = int(0.6 * GIB)  # Python, torch, transformers and the tokenizer in a job process (CPU)
CUDA_CONTEXT_BYTES = int(0.5 * GIB)  # a CUDA context per job process on the GPU (an assumption: not measured here)
PROMPT_TOKENS = 48  # a demo prompt in the chat template, left-padded to the batch's longest (mean 42, max 49)
PACKED_LIMIT = 2 * GIB  # cpu_matmul "auto" keeps a packed copy of the frozen fp32 weights up to this size
BITS = {"4bit": 4.5, "8bit": 8.0}  # bits per quantized linear weight (models.BITS_PER_WEIGHT)


@dataclass(frozen=True)
class SlotPlan:
    """How many jobs run at once, and why, in a sentence the teacher reads."""

    slots: int  # jobs that run at once (at least 1)
    threads_per_job: int  # torch threads of each job
    job_memory_bytes: int  # one job's estimated peak
    cores: int  # cores this server may use
    free_memory_bytes: int  # free RAM (on CUDA: free GPU memory), less the server's reserve
    device: str  # "cpu" or "cuda": which memory bounds the slots
    reason: str  # e.g. "2 slots: 2 cores / 1 thread per job = 2; 21.3 GiB free / 3.0 GiB per job = 7; ..."
    cpus: tuple[int, ...] = ()  # the CPU numbers the slots share out

    def slot_env(self, slot: int) -> dict[str, str]:
        """The environment of a job process in ``slot``: its threads, and its own CPUs when there are enough
        for every slot (else all of them, shared)."""
        from rlhf_engine.runs.job import CPUS_ENV, THREADS_ENV

        threads = str(self.threads_per_job)
        own = self.cpus[slot * self.threads_per_job:(slot + 1) * self.threads_per_job]
        cpus = own if len(self.cpus) >= self.slots * self.threads_per_job and own else self.cpus
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, THREADS_ENV: threads}
        return {**env, CPUS_ENV: format_cpus(cpus)} if cpus else env

    def slot_envs(self) -> list[dict[str, str]]:
        """One environment per slot: ``JobQueue(slot_env=plan.slot_envs())``."""
        return [self.slot_env(slot) for slot in range(self.slots)]


def format_cpus(cpus) -> str:
    """CPU numbers as a list of ranges: [0, 1, 2, 3, 6] -> "0-3,6" (``job.parse_cpus`` reads it back)."""
    parts, run = [], []
    for cpu in sorted(set(cpus)):
        if run and cpu != run[-1] + 1:
            parts.append(run)
            run = []
        run.append(cpu)
    parts += [run] if run else []
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in parts)


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def _torch_if_installed():
    """torch when it is installed (imported now if need be); None otherwise. Never required here."""
    if "torch" in sys.modules:
        return sys.modules["torch"]
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def detect_device(preference: str | None = None) -> str:
    """"cuda" when asked for, or (auto) when torch sees a CUDA device; else "cpu"."""
    if preference in ("cpu", "cuda"):
        return preference
    torch = _torch_if_installed()
    return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"


def plan_slots(job_memory_bytes: int, threads_per_job: int | None = None, cores: int | None = None,
               free_memory_bytes: int | None = None, gpu_free_bytes: int | None = None, override: int | None = None,
               reserved_bytes: int = 0, device: str | None = None, cpus: list[int] | None = None) -> SlotPlan:
    """The room's slots: min(cores / threads per job, (free memory - reserved) / job memory), at least 1.

    ``cpus``: the CPU numbers the jobs share out (default: this process's, ``os.sched_getaffinity``); ``cores``: how
    many of them, all unless given; ``free_memory_bytes``: RAM available
    (psutil) unless given; on CUDA (``device``, or auto: given ``gpu_free_bytes`` or torch seeing a GPU) the GPU's
    free memory bounds the slots instead, the jobs' weights and activations living there. ``reserved_bytes``: what
    the server keeps for its own shared models. ``threads_per_job`` None: 1 for the core bound, then the cores
    left over are shared out among the slots. ``override`` (the teacher's ``SLOTS=``) wins.
    """
    if cpus:
        allowed = sorted(set(cpus))
    elif hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
    else:
        allowed = list(range(os.cpu_count() or 1))
    cores = cores or len(allowed)
    cpus = tuple(allowed[:cores]) if len(allowed) >= cores else tuple(range(cores))
    device = "cuda" if device is None and gpu_free_bytes is not None else detect_device(device)
    if device == "cuda":
        if gpu_free_bytes is None:
            gpu_free_bytes = _torch_if_installed().cuda.mem_get_info()[0]
        free, where = gpu_free_bytes - reserved_bytes, "GPU memory free"
    else:
        if free_memory_bytes is None:
            import psutil

            free_memory_bytes = psutil.virtual_memory().available
        free, where = free_memory_bytes - reserved_bytes, "free"
    free = max(int(free), 0)
    threads = threads_per_job or 1
    core_slots = max(cores // threads, 0)
    memory_slots = free // max(int(job_memory_bytes), 1)
    machine = max(1, min(core_slots, memory_slots))
    reserve = f" (after {_gib(reserved_bytes)} kept for the server's models)" if reserved_bytes else ""
    sums = (f"{cores} cores / {threads} thread{'s' * (threads != 1)} per job = {core_slots}; "
            f"{_gib(free)} {where}{reserve} / {_gib(job_memory_bytes)} per job = {memory_slots}")
    if override:
        slots, reason = _overridden(override, "the machine", machine, sums)
    else:
        slots = machine
        why = "the smaller wins" if min(core_slots, memory_slots) >= 1 else "at least 1, though a job may not fit"
        reason = f"{slots} slot{'s' * (slots != 1)}: {sums}; {why}"
    if threads_per_job is None and cores // slots > threads:
        threads = cores // slots
        reason += f"; each job gets {threads} threads"
    return SlotPlan(slots=slots, threads_per_job=threads, job_memory_bytes=int(job_memory_bytes), cores=cores,
                    free_memory_bytes=free, device=device, reason=reason, cpus=cpus)


def cluster_plan(cluster, job_memory_bytes: int, override: int | None = None) -> SlotPlan:
    """The room's slots on a Ray cluster (``rlhf_engine.cluster.connect.Cluster``): on each node the smaller of its
    CPUs (one per job) and its Ray memory over one job's peak, summed over the nodes, at least 1; the teacher's
    ``SLOTS=`` wins. Each task then asks for the CPUs every node can give each of its jobs (its torch threads), so
    that a node bounded by memory lends its spare cores, as ``plan_slots`` does on one machine."""
    job = max(int(job_memory_bytes), 1)
    per_node = [(node, max(min(int(node.cpus), node.memory_bytes // job), 0)) for node in cluster.nodes]
    machine = max(1, sum(k for _, k in per_node))
    spare = [int(node.cpus) // k for node, k in per_node if k]
    threads = max(1, min(spare)) if spare else 1
    sums = ", ".join(f"{node.address} min({node.cpus:g} CPUs, {_gib(node.memory_bytes)} / {_gib(job)} per job = "
                     f"{node.memory_bytes // job}) = {k}" for node, k in per_node)
    where = (f"{cluster.describe()}; on each node the smaller of its CPUs (one per job) and the jobs its memory "
             f"holds: {sums or 'no node'}")
    if override:
        slots, reason = _overridden(override, "the cluster", machine, where)
        threads = max(1, min(threads, int(sum(node.cpus for node in cluster.nodes)) // slots))
    else:
        slots = machine
        reason = f"{slots} slot{'s' * (slots != 1)}: {where}"
    if threads > 1:
        reason += f"; each task asks for {threads} CPUs"
    return SlotPlan(slots=slots, threads_per_job=threads, job_memory_bytes=job,
                    cores=int(sum(node.cpus for node in cluster.nodes)),
                    free_memory_bytes=sum(node.memory_bytes for node in cluster.nodes),
                    device="cuda" if cluster.gpus else "cpu", reason=reason)


def _overridden(override: int, what: str, would: int, sums: str) -> tuple[int, str]:
    """The teacher's ``SLOTS=``, and the sentence that says what ``what`` (the machine, the cluster) would give."""
    slots = max(1, int(override))
    return slots, f"{slots} slot{'s' * (slots != 1)}: the teacher's SLOTS={slots}; {what} would give {would} ({sums})"


def model_shape(source: str) -> dict:
    """A model's config.json (its shape), read without loading the model: the bundled one's is known; a folder's
    is read; a hub id's from the Hugging Face cache; a GGUF file's from its converted copy in our cache.
    ValueError when none is to be had here."""
    source = (source or "default").strip()
    if source == "default":
        return dict(BUNDLED_SHAPE)
    path = Path(source).expanduser()
    found = path / "config.json" if path.is_dir() else None
    if source.lower().endswith(".gguf"):
        from rlhf_engine.core.models import cache_dir

        copies = sorted((cache_dir() / "models").glob(f"{path.stem}-*/config.json"), key=lambda p: p.stat().st_mtime)
        found = copies[-1] if copies else None
    elif found is None and not path.exists():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(source, "config.json")
            found = Path(cached) if isinstance(cached, str) else None
        except (ImportError, ValueError):
            found = None
    if found is None or not found.is_file():
        raise ValueError(f"cannot size a job of {source}: its config.json is not on this machine "
                         "(load the model once, or set the room's slots by hand)")
    return json.loads(found.read_text(encoding="utf-8"))


def _dims(shape: dict) -> tuple[int, int, int]:
    """(hidden size, layers, intermediate size) under the names of Llama-like and GPT-2-like configs."""
    hidden = shape.get("hidden_size") or shape.get("n_embd") or shape["d_model"]
    layers = shape.get("num_hidden_layers") or shape["n_layer"]
    return hidden, layers, shape.get("intermediate_size") or shape.get("n_inner") or 4 * hidden


def parameter_counts(shape: dict) -> tuple[int, int]:
    """(parameters of the linear layers, parameters of the embeddings and LM head) of a decoder-only model from
    its config.json: attention (q, k, v, o with grouped key/value heads), a gated MLP (three matrices)."""
    hidden, layers, inner = _dims(shape)
    heads = shape.get("num_attention_heads") or shape.get("n_head") or 1
    head_dim = shape.get("head_dim") or hidden // heads
    kv = (shape.get("num_key_value_heads") or heads) * head_dim
    linear = layers * (2 * hidden * heads * head_dim + 2 * hidden * kv + 3 * hidden * inner)
    embeddings = shape["vocab_size"] * hidden * (1 if shape.get("tie_word_embeddings", False) else 2)
    return linear, embeddings


def estimate_job_memory(model_config, policy_config, device: str | None = None) -> int:
    """A policy job's peak memory in bytes (RSS on CPU; GPU memory on CUDA), from the model's shape and the run's
    sizes, without loading the model::

        peak = runtime + weights (+ their packed copy) + tokens held x bytes per token
        bytes per token = b x (layers x (8 hidden + 4 intermediate) + 3 vocab)

    ``tokens held``: the sequences whose graph the update keeps (PPO: batch / minibatches; GRPO, RLOO:
    answers_per_pass; DPO: 2 x pairs_per_pass) x (``PROMPT_TOKENS`` + response length); twice that for PPO's
    separate value model. A layer keeps about 8 hidden-wide and 4 intermediate-wide vectors per token for its
    backward pass; the logits three vocabulary-wide ones (logits, log-softmax, their gradient). b: 4 bytes (fp32)
    or 2 (bf16, fp16). Weights: b per parameter, 4.5 or 8 bits per linear weight when quantized; on CPU in fp32
    the packed copy of ``cpu_matmul`` doubles them (up to 2 GiB).

    Calibration (benchmarks/RESULTS.md, bundled 135M model, fp32, 2 CPU cores): 0.50 GiB after loading and 1.56
    after the first pass (weights paged in and packed), so runtime ~0.6 GiB; PPO, 8 answers x 32 tokens, peaks at
    2.73 GiB (3.09 before issue 28): the formula gives 2.72 (the workshop's CPU preset, 8 x 40 tokens: 2.83).
    DPO, pairs_per_pass 2: 2.17-2.25 measured, 2.16 given; the separate value model 3.78 measured, 3.84 given.
    The reward model's adapter rides on the policy's base (one copy); a reward model on another base would add
    its weights. On CUDA: not measured yet.
    """
    fixed, per_run = job_memory_parts(model_config, policy_config, device)
    return fixed + per_run


def job_memory_parts(model_config, policy_config, device: str | None = None) -> tuple[int, int]:
    """``estimate_job_memory`` in its two parts: (runtime + weights, what one run's update holds). Runs trained side
    by side in one process share the first: k runs peak at about fixed + k x per run."""
    device = detect_device(device or getattr(model_config, "device", "auto"))
    shape = model_shape(model_config.source)
    linear, embeddings = parameter_counts(shape)
    dtype = getattr(model_config, "dtype", "auto")
    width = 4 if dtype == "float32" or (dtype == "auto" and device == "cpu") else 2
    quant = getattr(model_config, "quant", "none")
    weights = linear * (BITS[quant] / 8 if quant in BITS else width) + embeddings * width
    packed = getattr(model_config, "cpu_matmul", "auto") in ("auto", "packed")
    if device == "cpu" and quant not in BITS and width == 4 and packed and weights <= PACKED_LIMIT:
        weights *= 2
    hidden, layers, inner = _dims(shape)
    per_token = width * (layers * (8 * hidden + 4 * inner) + 3 * shape["vocab_size"])
    tokens = sequences_held(policy_config) * (PROMPT_TOKENS + policy_config.response_length)
    runtime = CUDA_CONTEXT_BYTES if device == "cuda" else RUNTIME_BYTES
    return int(runtime + weights), int(tokens * per_token)


def sequences_held(policy_config) -> int:
    """How many sequences' activations a method's update holds at once (see ``estimate_job_memory``)."""
    batch = policy_config.batch_size
    if hasattr(policy_config, "pairs_per_pass"):  # DPO: a chosen and a rejected answer per pair
        return 2 * min(policy_config.pairs_per_pass, batch)
    if hasattr(policy_config, "answers_per_pass"):  # GRPO, RLOO
        return min(policy_config.answers_per_pass, batch)
    held = max(batch // getattr(policy_config, "num_mini_batches", 1), 1)
    return 2 * held if getattr(policy_config, "value_model", "shared") == "separate" else held
