from __future__ import annotations

import logging
import math

import pytest

from heal_rag.evaluation.metrics import ir_metrics, per_query_metrics

# q1: two relevant docs, ranked 1st and 3rd. q2: graded (d3=2, d4=1), ranked 2nd and 3rd.
# q3: absent from the run.
QRELS = {"q1": {"d1": 1, "d2": 1}, "q2": {"d3": 2, "d4": 1}, "q3": {"d9": 1}}
RUN = {
    "q1": {"d1": 0.9, "d4": 0.8, "d2": 0.7},
    "q2": {"d5": 0.9, "d3": 0.5, "d4": 0.4},
}

# by hand, linear gains (trec_eval / BEIR convention): DCG = sum(grade / log2(rank + 1))
NDCG_Q1 = (1 / math.log2(2) + 1 / math.log2(4)) / (1 / math.log2(2) + 1 / math.log2(3))
NDCG_Q2 = (2 / math.log2(3) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))


def test_per_query_values_match_hand_computation():
    scores = per_query_metrics(QRELS, RUN, ["ndcg@10", "recall@100", "mrr@10", "recall@2"])
    assert scores["ndcg@10"]["q1"] == pytest.approx(NDCG_Q1)
    assert scores["ndcg@10"]["q2"] == pytest.approx(NDCG_Q2)
    assert scores["mrr@10"] == pytest.approx({"q1": 1.0, "q2": 0.5, "q3": 0.0})
    assert scores["recall@100"] == pytest.approx({"q1": 1.0, "q2": 1.0, "q3": 0.0})
    # top-2 holds one of the two relevant documents for both queries
    assert scores["recall@2"] == pytest.approx({"q1": 0.5, "q2": 0.5, "q3": 0.0})
    assert list(scores["ndcg@10"]) == ["q1", "q2", "q3"]  # qrels order


def test_missing_query_scores_zero_and_counts_in_the_mean():
    means = ir_metrics(QRELS, RUN)
    assert set(means) == {"ndcg@10", "recall@100", "mrr@10"}
    assert means["ndcg@10"] == pytest.approx((NDCG_Q1 + NDCG_Q2 + 0.0) / 3)
    assert means["recall@100"] == pytest.approx(2 / 3)
    assert means["mrr@10"] == pytest.approx(0.5)
    # an empty ranking is the same as a missing one
    assert ir_metrics(QRELS, {**RUN, "q3": {}}) == pytest.approx(means)


def test_cutoff_is_respected():
    # the relevant document sits at rank 11: invisible to nDCG@10 and MRR@10, found by recall@100
    run = {"q": {f"x{i}": 1.0 - i / 100 for i in range(10)} | {"rel": 0.5}}
    means = ir_metrics({"q": {"rel": 1}}, run)
    assert means == pytest.approx({"ndcg@10": 0.0, "recall@100": 1.0, "mrr@10": 0.0})


def test_run_queries_without_judgments_are_ignored():
    with_extra = {**RUN, "unjudged": {"d1": 1.0}}
    assert ir_metrics(QRELS, with_extra) == pytest.approx(ir_metrics(QRELS, RUN))


def test_queries_without_relevant_documents_are_left_out_with_a_warning(caplog):
    qrels = {"q1": {"d1": 1}, "q0": {"d2": 0}}
    with caplog.at_level(logging.WARNING, logger="heal_rag.evaluation.metrics"):
        scores = per_query_metrics(qrels, {"q1": {"d1": 1.0}, "q0": {"d2": 1.0}}, ["mrr@10"])
    assert scores == {"mrr@10": {"q1": 1.0}}
    assert "no relevant document" in caplog.text


def test_empty_qrels_is_a_clear_error():
    with pytest.raises(ValueError, match="qrels is empty"):
        ir_metrics({}, RUN)
    with pytest.raises(ValueError, match="None of the 1 queries"):
        ir_metrics({"q1": {"d1": 0}}, RUN)


@pytest.mark.parametrize(
    ("metrics", "message"),
    [(["ndcg@ten"], "Unknown metric"), (["bleu@10"], "Unknown metric"), ([], "at least one metric")],
)
def test_bad_metric_names(metrics, message):
    with pytest.raises(ValueError, match=message):
        ir_metrics(QRELS, RUN, metrics)


def test_bad_grades_and_scores():
    with pytest.raises(ValueError, match="grades must be integers"):
        ir_metrics({"q1": {"d1": 0.5}}, RUN)
    with pytest.raises(ValueError, match="finite numbers"):
        ir_metrics(QRELS, {"q1": {"d1": float("nan")}})
    with pytest.raises(ValueError, match="must be a dict"):
        ir_metrics(QRELS, {"q1": ["d1", "d2"]})


def test_ranx_numba_cast_warning_is_silenced_even_with_colour_codes(monkeypatch):
    import warnings

    import ranx

    original = ranx.evaluate

    def noisy_evaluate(*args, **kwargs):
        # what numba emits from ranx's nDCG kernel (in bold when it thinks it writes to a terminal)
        warnings.warn(
            "\x1b[1m\x1b[1munsafe cast from uint64 to int64. Precision may be lost.\x1b[0m", stacklevel=1
        )
        return original(*args, **kwargs)

    monkeypatch.setattr(ranx, "evaluate", noisy_evaluate)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = ir_metrics({"q1": {"d1": 1}}, {"q1": {"d1": 1.0, "d2": 0.5}}, ["ndcg@10"])
    assert scores["ndcg@10"] == pytest.approx(1.0)
