"""Hard negatives from the topic tree: the nearest topic with another document, never a judged document."""

from __future__ import annotations

import numpy as np
import pytest

from heal_rag.training.negatives import tree_negatives

# 6 documents: level-0 topic, leaf topic
PATHS = np.array([[0, 10], [0, 10], [0, 11], [1, 12], [1, 12], [1, 13]])


def test_same_leaf_first_then_the_parent_then_anywhere():
    rng = np.random.default_rng(0)
    # doc 0: its leaf holds doc 1; doc 2: alone in its leaf, parent 0 holds 0 and 1; doc 5: alone, parent 1
    negatives, counts = tree_negatives(PATHS, [0, 2, 5], [{0}, {2}, {5}], rng)
    assert negatives[0] == 1
    assert negatives[1] in {0, 1}
    assert negatives[2] in {3, 4}
    assert counts == {"level_1": 1, "level_0": 2, "random": 0}


def test_judged_documents_are_never_negatives():
    rng = np.random.default_rng(1)
    # doc 3's query is also judged relevant to docs 4 and 5: nothing left under topic 1, so a random other
    for _ in range(20):
        negatives, counts = tree_negatives(PATHS, [3], [{3, 4, 5}], rng)
        assert negatives[0] in {0, 1, 2}
        assert counts["random"] == 1


def test_draws_are_seeded_and_errors_are_clear():
    a = tree_negatives(PATHS, [0, 3, 3], [{0}, {3}, {3}], np.random.default_rng(7))
    b = tree_negatives(PATHS, [0, 3, 3], [{0}, {3}, {3}], np.random.default_rng(7))
    assert a == b
    with pytest.raises(ValueError, match="judged relevant to every document"):
        tree_negatives(PATHS, [0], [set(range(6))], np.random.default_rng(0))
    with pytest.raises(ValueError, match="one entry per pair"):
        tree_negatives(PATHS, [0, 1], [{0}], np.random.default_rng(0))
