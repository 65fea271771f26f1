"""Shared fixtures: the bundled model's folder, a tiny randomly initialised model, temp run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs the suite on several pytest-xdist workers: the cores are shared out between them
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))

# Property tests: a quick profile by default, a deep one on demand (HYPOTHESIS_PROFILE=deep make test).
settings.register_profile("default", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def bundled_model_dir() -> str:
    """The bundled SmolLM2-135M-Instruct as a cached safetensors folder (converted on first use)."""
    from rlhf_engine.core.models import resolve_source

    return resolve_source("default")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> str:
    """A 2-layer Llama with random weights and the bundled tokenizer: fast enough for engine tests."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def tiny_model_config(tiny_model_dir):
    """ModelConfig for the tiny model, unquantized, small LoRA."""
    from rlhf_engine.config import ModelConfig

    return ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def pairs_file(tmp_path) -> Path:
    """Twelve easy preference pairs (positive chosen, negative rejected) as JSONL."""
    from rlhf_engine.data.pairs import PreferencePair, write_pairs

    path = tmp_path / "pairs.jsonl"
    write_pairs([PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.",
                                "Awful, bad, terrible.") for i in range(12)], path)
    return path


def pytest_collection_modifyitems(items):
    """The slow tests first (a stable sort): on several xdist workers the suite then ends on short tests
    that the idle worker can take over, not on one long test that the other worker waits for."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def trained_tiny_reward_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny reward model trained once per test process on twelve easy pairs (tests that write beside a
    reward model copy it first)."""
    from rlhf_engine.config import ModelConfig, RewardConfig
    from rlhf_engine.data.pairs import PreferencePair, write_pairs
    from rlhf_engine.runs.reward_job import start_reward_job

    root = tmp_path_factory.mktemp("trained-rm")
    write_pairs([PreferencePair(f"Say something about item {i}.", "Lovely, great, wonderful.",
                                "Awful, bad, terrible.") for i in range(12)], root / "pairs.jsonl")
    model = ModelConfig(source=tiny_model_dir, quant="none", lora_r=4, lora_alpha=8)
    config = RewardConfig(model=model, steps=4, eval_every=2, norm_samples=4, norm_response_length=4)
    job = start_reward_job(root / "rm", config, root / "pairs.jsonl", background=False)
    assert job.state == "completed", job.run.status()
    return root / "rm"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A Hugging Face datasets cache of this test's own, and a hub that cannot be reached: ``add(repo, splits)``
    writes a dataset {split: rows} into the cache as ``datasets.load_dataset(repo)`` would have left it."""
    import shutil

    import datasets.config
    import huggingface_hub.constants
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def add(repo: str, splits: dict[str, list[dict]]) -> None:
        org, name = repo.split("/")
        source = tmp_path / "hub-source" / repo
        source.mkdir(parents=True)
        for split, rows in splits.items():
            pq.write_table(pa.Table.from_pylist(rows), source / f"{split}.parquet")
        builder = Parquet(cache_dir=str(tmp_path / "hub-build"), dataset_name=name, config_name="default",
                          data_files={split: str(source / f"{split}.parquet") for split in splits}, hash="0123abcd")
        builder.download_and_prepare()
        shutil.copytree(builder.cache_dir, cache / f"{org}___{name}" / "default" / "0.0.0" / "0123abcd")

    return add
