"""The room server's shared base: one copy of the base model for every participant's chat and scoring, each
reward model an adapter of its own on it, scoring as it does loaded alone, and plain generation with every
adapter off."""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file

from rlhf_engine.config import ModelConfig
from rlhf_engine.core.generation import sample_responses
from rlhf_engine.core.models import load_model_and_tokenizer
from rlhf_engine.core.reward import ADAPTER_NAME, META_FILE, RewardModel
from rlhf_engine.room.shared_models import SharedBase

PROMPTS = ["Say something about item 1.", "Say something about item 2."]
ANSWERS = ["Lovely, great, wonderful.", "Awful, bad, terrible."]


def test_reward_models_share_one_base_and_score_as_alone(tmp_path, trained_tiny_reward_dir):
    other = tmp_path / "rm-b"
    shutil.copytree(trained_tiny_reward_dir, other)
    adapter = other / ADAPTER_NAME / "adapter_model.safetensors"
    generator = torch.Generator().manual_seed(0)
    save_file({k: v + 0.3 * torch.randn(v.shape, generator=generator) for k, v in load_file(str(adapter)).items()},
              str(adapter))
    alone = {folder: RewardModel.load(folder).score(PROMPTS, ANSWERS) for folder in (trained_tiny_reward_dir, other)}
    assert not torch.allclose(*alone.values())  # two different reward models

    config = RewardModel.load(trained_tiny_reward_dir).model_config
    shared = SharedBase(config)
    for folder in (trained_tiny_reward_dir, other, trained_tiny_reward_dir):
        with shared.reward_model(folder) as rm:
            assert rm.backbone is shared.model  # no second copy of the base
            torch.testing.assert_close(rm.score(PROMPTS, ANSWERS), alone[folder], rtol=1e-4, atol=1e-5)
    assert len(shared._rewards) == 2
    (other / META_FILE).touch()  # rewritten: loaded again, the old adapter dropped
    with shared.reward_model(other):
        pass
    assert len(shared._rewards) == 2


def test_plain_generation_has_every_adapter_off(trained_tiny_reward_dir):
    config = RewardModel.load(trained_tiny_reward_dir).model_config
    shared = SharedBase(config)
    with shared.reward_model(trained_tiny_reward_dir):
        pass
    base, tokenizer = load_model_and_tokenizer(ModelConfig(**{**config.__dict__}))
    torch.manual_seed(1)
    expected = sample_responses(base, tokenizer, PROMPTS, 6, 0.7, config.chat_template)
    with shared.plain() as (model, tok):
        torch.manual_seed(1)
        got = sample_responses(model, tok, PROMPTS, 6, 0.7, config.chat_template)
    assert torch.equal(got.response_ids, expected.response_ids)
