"""Pairs picked by hand (rlhf_engine.data.collect): what each pick stores, for the CLI and the Preferences page."""

import pytest

from rlhf_engine.data.collect import picked_pair
from rlhf_engine.data.pairs import PreferencePair


def test_a_or_b_prefers_the_picked_answer_and_tie_or_skip_store_nothing():
    assert picked_pair("Q?", "first", "second", "a") == PreferencePair("Q?", "first", "second")
    assert picked_pair("Q?", "first", "second", "b") == PreferencePair("Q?", "second", "first")
    assert picked_pair("Q?", "first", "second", "tie") is None  # no preference for the Bradley-Terry loss
    assert picked_pair("Q?", "first", "second", "skip") is None


def test_identical_answers_or_an_unknown_pick_store_nothing_and_say_why():
    with pytest.raises(ValueError, match="identical"):
        picked_pair("Q?", "same ", " same", "a")
    assert picked_pair("Q?", "same", "same", "tie") is None
    with pytest.raises(ValueError, match="one of a, b, tie, skip"):
        picked_pair("Q?", "x", "y", "maybe")
