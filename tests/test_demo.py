"""The built-in demo prompts and the simulated (gold) annotator."""

import pytest

from rlhf_engine.lab.demo import (
    GoldReward,
    demo_prompt_split,
    demo_prompts,
    gold_best_worst,
    gold_label,
    gold_score,
    make_demo_pairs,
    repetition,
)


def test_demo_prompt_set_is_large_varied_and_split():
    prompts = demo_prompts()
    assert len(prompts) >= 200
    assert len(set(prompts)) == len(prompts)
    train, held = demo_prompt_split()
    assert not set(train) & set(held)
    assert len(held) >= 40 and len(train) + len(held) == len(prompts)


def test_gold_annotator_prefers_positive_text():
    assert gold_score("What a wonderful, lovely day. I loved it!") > 0.5
    assert gold_score("This was awful and I hated every minute.") < -0.5
    pair = gold_label("p", "It was terrible.", "It was great fun!")
    assert pair.chosen == "It was great fun!" and pair.rejected == "It was terrible."


def test_gold_annotator_dislikes_repetition_as_a_person_would():
    assert repetition("What a lovely day, I loved it.") == 0.0
    assert repetition("great fun great fun great fun") == pytest.approx(3 / 5)  # 5 word pairs, 3 seen before
    assert repetition("") == 0.0 and repetition("Great!") == 0.0
    fluent = "I'm thrilled to share my passion and expertise with you today."
    looping = "I'm thrilled to share my passion and my passion and my passion and my passion."
    assert gold_score(looping) < gold_score(fluent) - 0.3  # same words, same sentiment: the loop costs it


def test_gold_reward_scores_like_a_reward_model():
    responses = ["What a wonderful, lovely day.", "This is awful and I hate it."]
    reward = GoldReward(gain=2.0, bias=-0.5)
    raw = reward.score(["p", "p"], responses, normalized=False)
    assert raw.tolist() == pytest.approx([gold_score(r) for r in responses])
    assert reward.score(["p", "p"], responses).tolist() == pytest.approx([2 * g - 0.5 for g in raw.tolist()])


def test_near_ties_are_skipped():
    assert gold_label("p", "The table is brown.", "The chair is brown and fine.") is None


def test_the_annotator_pairs_its_favourite_with_its_least_favourite():
    completions = ["It was fine.", "It was awful and sad.", "It was wonderful, I loved it!", "It was ok."]
    pair = gold_best_worst("p", completions)
    assert (pair.chosen, pair.rejected) == ("It was wonderful, I loved it!", "It was awful and sad.")


def test_make_demo_pairs_labels_model_completions(tiny_model_config, monkeypatch):
    import rlhf_engine.lab.demo as demo

    # a random tiny model writes no sentiment words; score by length so every pair is labelled
    monkeypatch.setattr(demo, "gold_score", lambda text: len(text) / 10)
    pairs = make_demo_pairs(3, tiny_model_config, seed=1, response_length=6, batch_size=8,
                            prompts=["It was a great", "I did not like"])
    assert len(pairs) == 3
    for pair in pairs:
        assert len(pair.chosen) - len(pair.rejected) >= 5  # the gold gap is at least 0.5
        assert pair.prompt in ("It was a great", "I did not like")
