from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from heal_rag.evaluation.stats import bootstrap_ci, compare_configurations, holm_adjust, paired_test


def test_bootstrap_ci_contains_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.normal(0.5, 0.2, size=20)
    large = rng.normal(0.5, 0.2, size=2000)
    ci_small, ci_large = bootstrap_ci(small, seed=0), bootstrap_ci(large, seed=0)
    assert ci_small.low <= ci_small.mean <= ci_small.high
    assert ci_small.mean == pytest.approx(small.mean())
    assert (ci_large.high - ci_large.low) < (ci_small.high - ci_small.low) / 5
    # the normal-theory interval of the mean: the bootstrap agrees to within a few percent
    half = 1.96 * large.std(ddof=1) / math.sqrt(large.size)
    assert ci_large.high - ci_large.low == pytest.approx(2 * half, rel=0.1)


def test_bootstrap_is_seeded_and_skips_nan():
    values = np.array([0.1, np.nan, 0.9, 0.4, np.nan, 0.7])
    a, b = bootstrap_ci(values, seed=3), bootstrap_ci(values, seed=3)
    assert a == b
    assert a.n == 4 and a.n_missing == 2
    assert a.mean == pytest.approx(np.nanmean(values))
    assert math.isnan(bootstrap_ci([np.nan, np.nan]).mean)
    assert bootstrap_ci([0.5, 0.5, 0.5]).low == 0.5


def test_identical_systems_give_p_one():
    scores = np.random.default_rng(0).uniform(size=40)
    result = paired_test(scores, scores.copy(), metric="ndcg@10")
    assert result.p_value == 1.0 and result.p_wilcoxon == 1.0
    assert result.diff == 0.0 and result.low == 0.0 and result.high == 0.0
    assert result.n_ties == 40 and not result.significant


def test_clear_shift_gives_small_p_and_ci_excluding_zero():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.2, 0.6, size=50)
    b = a + 0.1 + rng.normal(0, 0.02, size=50)
    result = paired_test(a, b, n_resamples=5000)
    assert result.p_value < 0.001 and result.p_wilcoxon < 0.001
    assert result.low > 0.05 and result.high < 0.15
    assert result.diff == pytest.approx(np.mean(b - a))


def test_exact_permutation_matches_enumeration():
    diffs = np.array([0.3, -0.1, 0.2, 0.25, 0.05, -0.05, 0.4])
    observed = abs(diffs.mean())
    flips = [abs(np.mean(np.array(s) * diffs)) for s in itertools.product([-1, 1], repeat=diffs.size)]
    expected = np.mean([f >= observed - 1e-12 for f in flips])
    assert paired_test(np.zeros(7), diffs).p_value == pytest.approx(expected)


def test_noise_only_is_not_significant():
    rng = np.random.default_rng(5)
    a = rng.uniform(size=60)
    b = a + rng.normal(0, 0.05, size=60)
    assert paired_test(a, b, seed=1).p_value > 0.05


def test_paired_test_drops_unpaired_nan_and_checks_lengths():
    result = paired_test([0.1, np.nan, 0.5, 0.2], [0.3, 0.4, np.nan, 0.2])
    assert result.n == 2
    with pytest.raises(ValueError, match="same questions"):
        paired_test([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2], confidence=95)


def test_holm_and_compare_configurations():
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm_adjust([np.nan, 0.2])[0])
    rng = np.random.default_rng(2)
    base = rng.uniform(size=30)
    scores = {
        "base": {"ndcg@10": base, "mrr@10": base},
        "heal": {"ndcg@10": base + 0.2, "mrr@10": base},
        "other": {"ndcg@10": base},
    }
    comparisons = compare_configurations(scores, n_resamples=2000)
    pairs = {(c.a, c.b, c.metric): c for c in comparisons}
    assert set(pairs) == {
        ("base", "heal", "ndcg@10"),
        ("base", "heal", "mrr@10"),
        ("base", "other", "ndcg@10"),
        ("heal", "other", "ndcg@10"),
    }
    assert pairs[("base", "heal", "ndcg@10")].significant
    assert pairs[("base", "heal", "ndcg@10")].p_holm >= pairs[("base", "heal", "ndcg@10")].p_value
    assert not pairs[("base", "heal", "mrr@10")].significant
    assert pairs[("heal", "other", "ndcg@10")].diff == pytest.approx(-0.2)
