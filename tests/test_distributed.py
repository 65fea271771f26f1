"""Data-parallel PPO: two CPU processes under ``accelerate launch`` (gloo), and the pieces it rests on."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rlhf_engine.methods.ppo import whiten


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _whiten_half(rank: int, port: int, x: torch.Tensor, mask: torch.Tensor, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from rlhf_engine.core import distributed

    half = slice(0, 3) if rank == 0 else slice(3, 5)
    result = whiten(x[half], mask[half], all_sum=distributed.all_sum)
    torch.save(result, f"{out}.{rank}")
    dist.destroy_process_group()


def test_whitening_over_two_processes_uses_the_whole_batch_statistics(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(5, 7) * 3 + 1
    mask = (torch.rand(5, 7) > 0.3).float()
    out = str(tmp_path / "half")
    mp.spawn(_whiten_half, args=(_free_port(), x, mask, out), nprocs=2, join=True)
    halves = torch.cat([torch.load(f"{out}.0"), torch.load(f"{out}.1")])
    assert torch.allclose(halves, whiten(x, mask), atol=1e-5)
    assert not torch.allclose(torch.load(f"{out}.0"), whiten(x[:3], mask[:3]), atol=1e-3)  # not per-process stats


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ppo", "grpo"])
def test_ppo_and_grpo_run_data_parallel_on_two_cpu_processes_under_accelerate_launch(tmp_path, tiny_model_dir,
                                                                                    trained_tiny_reward_dir, method):
    out = tmp_path / f"{method}-dp"
    knobs = ["--set", "ppo_epochs=2"] if method == "ppo" else ["--group-size", "2", "--set", "epochs=2"]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               str(_free_port()), "-m", "rlhf_engine", method, "--model", tiny_model_dir, "--quant", "none",
               "--reward", str(trained_tiny_reward_dir), "--out", str(out), "--steps", "3", "--batch-size", "4",
               "--response-length", "6", *knobs, "--set", "probe_every=0", "--set", "checkpoint_every=2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("step 1 ") == 1  # process 0 prints, the other trains beside it
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 3
    assert status["processes"] == 2 and status["replicas_in_sync"] is True  # gradients were averaged
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]  # one writer: no step logged twice
    events = (out / "events.log").read_text()
    assert "data parallel over 2 processes, 2 answers each per step" in events  # GRPO: one group of 2 each
    assert (out / "policy" / "adapter_model.safetensors").is_file()
    assert (out / "checkpoints" / "step-000002" / "trainer_state.pt").is_file()


def test_commands_other_than_ppo_refuse_to_run_under_a_launcher(monkeypatch, capsys, tmp_path):
    from rlhf_engine.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["validate-data", str(tmp_path / "x.jsonl")]) == 2
    assert "only ppo, grpo, rloo, dpo, resume run data-parallel" in capsys.readouterr().err
