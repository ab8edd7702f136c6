"""Information-retrieval metrics (nDCG@k, Recall@k, MRR@k, ...) computed with ranx.

The maths is ranx's (a maintained, numba-compiled library checked against trec_eval); this module only fixes
the conventions that ranx leaves to the caller, so that every figure heal-rag reports means the same thing:

- **Queries judged in the qrels but missing from the run** (or with an empty ranking) score 0 on every metric
  and count in the mean, as ``trec_eval -c`` does. A model that returns nothing for a query is penalised
  rather than silently averaged over fewer queries. (Plain ranx refuses such input unless
  ``make_comparable=True``; we fill the zeros ourselves so the rule is explicit and does not depend on
  ranx internals.)
- **Queries in the run but not in the qrels** are ignored (there is nothing to score them against).
- **Grades <= 0 are non-relevant.** A query whose judgments are all <= 0 has no relevant document, so its
  metrics are undefined; it is left out of the mean with a warning (trec_eval does the same).
- Gains in nDCG are the grades themselves (linear gain, Järvelin & Kekäläinen), as in trec_eval and BEIR.

Example:
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d3": 1}}
    >>> run = {"q1": {"d1": 0.9, "d2": 0.5}, "q2": {"d2": 0.8, "d3": 0.4}}
    >>> ir_metrics(qrels, run, metrics=("mrr@10",))
    {'mrr@10': 0.75}

"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from numbers import Real

from heal_rag._checks import preview_ids as _preview
from heal_rag.errors import InvalidValueError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_METRICS", "SUPPORTED_METRICS", "ir_metrics", "per_query_metrics"]

#: The three figures every heal-rag retrieval report shows.
DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "recall@100", "mrr@10")

#: ranx metric names accepted (each optionally with a cut-off, ``name@k``).
SUPPORTED_METRICS: tuple[str, ...] = (
    "ndcg",
    "ndcg_burges",
    "recall",
    "precision",
    "mrr",
    "map",
    "hit_rate",
    "hits",
    "r-precision",
    "f1",
    "bpref",
)

_METRIC_PATTERN = re.compile(r"^(?P<name>[a-z_\-]+)(@(?P<k>[1-9][0-9]*))?$")

# Queries with at most this many ids are listed in full in warnings.


def _check_metrics(metrics: Sequence[str] | str) -> list[str]:
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = list(metrics)
    if not metrics:
        raise InvalidValueError("The 'metrics' parameter must name at least one metric, e.g. ('ndcg@10',).")
    checked: list[str] = []
    for metric in metrics:
        match = _METRIC_PATTERN.match(metric) if isinstance(metric, str) else None
        if match is None or match.group("name") not in SUPPORTED_METRICS:
            raise InvalidValueError(
                f"Unknown metric {metric!r}. Use one of {', '.join(SUPPORTED_METRICS)}, optionally with a "
                "cut-off such as 'ndcg@10'."
            )
        if metric in checked:
            raise InvalidValueError(f"Metric {metric!r} is listed twice.")
        checked.append(metric)
    return checked


def _check_qrels(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Validate qrels; return only the relevant (grade > 0) judgments of queries that have any."""
    if not isinstance(qrels, Mapping):
        raise InvalidValueError(
            f"qrels must be a dict of query id -> {{document id: grade}}. Got {type(qrels).__name__} instead."
        )
    if len(qrels) == 0:
        raise InvalidValueError(
            "qrels is empty: there are no relevance judgments to evaluate against. Load the qrels of a split "
            "that has judgments (e.g. qrels/test.tsv of a BEIR folder)."
        )
    relevant: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        if not isinstance(judged, Mapping):
            raise InvalidValueError(
                f"qrels[{qid!r}] must be a dict of document id -> integer grade. Got {type(judged).__name__}."
            )
        for doc_id, grade in judged.items():
            if isinstance(grade, bool) or not isinstance(grade, int):
                raise InvalidValueError(
                    f"Relevance grades must be integers; qrels[{qid!r}][{doc_id!r}] is {grade!r}."
                )
        positives = {str(doc_id): int(grade) for doc_id, grade in judged.items() if grade > 0}
        if positives:
            relevant[str(qid)] = positives
    unjudged = [str(qid) for qid in qrels if str(qid) not in relevant]
    if unjudged:
        logger.warning(
            "%d of %d queries in the qrels have no relevant document (no grade > 0); their metrics are "
            "undefined and they are left out of the mean: %s",
            len(unjudged),
            len(qrels),
            _preview(unjudged),
        )
    if not relevant:
        raise InvalidValueError(
            f"None of the {len(qrels)} queries in the qrels has a relevant document (grade > 0); there is "
            "nothing to evaluate."
        )
    return relevant


def _check_run(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    if not isinstance(run, Mapping):
        raise InvalidValueError(
            f"run must be a dict of query id -> {{document id: score}}. Got {type(run).__name__}."
        )
    checked: dict[str, dict[str, float]] = {}
    for qid, ranked in run.items():
        if not isinstance(ranked, Mapping):
            raise InvalidValueError(
                f"run[{qid!r}] must be a dict of document id -> score. Got {type(ranked).__name__}."
            )
        scores: dict[str, float] = {}
        for doc_id, score in ranked.items():
            if isinstance(score, bool) or not isinstance(score, Real) or not math.isfinite(float(score)):
                raise InvalidValueError(
                    f"Scores must be finite numbers; run[{qid!r}][{doc_id!r}] is {score!r}."
                )
            scores[str(doc_id)] = float(score)
        checked[str(qid)] = scores
    return checked


def per_query_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | str = DEFAULT_METRICS,
) -> dict[str, dict[str, float]]:
    """Score every judged query of ``run`` against ``qrels`` (for paired significance tests).

    Args:
        qrels: Query id -> {document id: integer grade}; grades > 0 are relevant.
        run: Query id -> {document id: score}; higher scores rank first.
        metrics: ranx metric names with optional cut-offs, e.g. ``("ndcg@10", "recall@100", "mrr@10")``.

    Returns:
        Metric -> {query id: score}, for every query of ``qrels`` with at least one relevant document, in
        qrels order. Queries missing from the run (or with an empty ranking) score 0.0.

    Raises:
        ValueError: on empty qrels, qrels without any relevant document, non-integer grades, non-finite scores
            or an unknown metric name.

    """
    metric_names = _check_metrics(metrics)
    relevant = _check_qrels(qrels)
    checked_run = _check_run(run)

    scored = [qid for qid in relevant if checked_run.get(qid)]
    missing = [qid for qid in relevant if not checked_run.get(qid)]
    if missing:
        logger.info(
            "%d of %d judged queries have no results in the run and score 0: %s",
            len(missing),
            len(relevant),
            _preview(missing),
        )
    extra = [qid for qid in checked_run if qid not in relevant]
    if extra:
        logger.debug("Ignoring %d run queries that have no relevance judgments.", len(extra))

    results: dict[str, dict[str, float]] = {metric: {} for metric in metric_names}
    if scored:
        from ranx import Qrels, Run, evaluate  # imported here: ranx pulls in numba (seconds to import)

        # Both sides restricted to the same query ids, so ranx never needs make_comparable.
        ranx_qrels = Qrels.from_dict({qid: relevant[qid] for qid in scored})
        ranx_run = Run.from_dict({qid: checked_run[qid] for qid in scored})
        with warnings.catch_warnings():
            # ranx's nDCG kernel casts its (small, non-negative) relevance grades from uint64; numba warns,
            # sometimes with terminal colour codes before the text (hence the leading .*)
            warnings.filterwarnings("ignore", message=r".*unsafe cast from uint64 to int64")
            evaluate(ranx_qrels, ranx_run, metric_names, save_results_in_run=True)
        for metric in metric_names:
            per_query = ranx_run.scores[metric]
            for qid in scored:
                results[metric][qid] = float(per_query[qid])
    # Fill the zeros and restore qrels order.
    return {metric: {qid: results[metric].get(qid, 0.0) for qid in relevant} for metric in metric_names}


def ir_metrics(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] | str = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean IR metrics of ``run`` over the judged queries of ``qrels``.

    Args:
        qrels: Query id -> {document id: integer grade}; grades > 0 are relevant.
        run: Query id -> {document id: score}; higher scores rank first.
        metrics: ranx metric names with optional cut-offs (default ``("ndcg@10", "recall@100", "mrr@10")``).

    Returns:
        Metric -> mean over every query of ``qrels`` that has a relevant document (missing queries count
        as 0).

    Raises:
        ValueError: see :func:`per_query_metrics`.

    Example:
        >>> ir_metrics({"q1": {"d2": 1}}, {"q1": {"d1": 2.0, "d2": 1.0}}, metrics=["mrr@10", "recall@1"])
        {'mrr@10': 0.5, 'recall@1': 0.0}

    """
    per_query = per_query_metrics(qrels, run, metrics)
    return {metric: float(sum(scores.values()) / len(scores)) for metric, scores in per_query.items()}
