"""Where retrieval fails, by topic: per-topic scores of an evaluation, for every level of the topic tree.

A question belongs to every topic that holds one of its relevant documents (a claim with two relevant
abstracts in two topics counts in both). For each topic the breakdown gives the number of such questions and
each configuration's mean score over them, so a domain team sees which part of its corpus retrieval gets
wrong, and where a fine-tune helped or hurt.

Example:
    >>> rows = topic_breakdown(result, hierarchy, questions.qrels)  # doctest: +SKIP
    >>> rows[0]["terms"], rows[0]["n_questions"], rows[0]["means"]["heal"]  # doctest: +SKIP

"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.evaluation.rag import RAGEvaluationResult
    from heal_rag.hierarchy import Hierarchy

__all__ = ["topic_breakdown"]


def topic_breakdown(
    result: RAGEvaluationResult,
    hierarchy: Hierarchy,
    qrels: Mapping[str, Mapping[str, int]],
    *,
    metric: str = "ndcg@10",
    n_terms: int = 3,
) -> list[dict[str, Any]]:
    """Per-topic means of ``metric`` for every configuration, level by level.

    Args:
        result: the evaluation (its ``per_question`` arrays follow ``result.question_ids``).
        hierarchy: the topic tree of the evaluated corpus.
        qrels: question id -> {document id: grade}; grades > 0 are relevant.
        metric: the metric to break down.
        n_terms: top terms kept per topic (its label).

    Returns:
        One dict per topic that holds at least one question's relevant document, ordered by level then topic
        id: ``level``, ``topic``, ``terms`` (list of str), ``n_documents`` (topic size), ``n_questions``,
        ``means`` (configuration -> mean over those questions, None when none was scored). Topics of a
        ragged branch that stopped early are listed at their own level only.

    """
    row_of = {str(doc_id): row for row, doc_id in enumerate(hierarchy.doc_ids)}
    position = {q: i for i, q in enumerate(result.question_ids)}
    rows: list[dict[str, Any]] = []
    for level in range(hierarchy.n_levels):
        labels = hierarchy.labels(level)
        members: dict[int, set[int]] = {}
        for question, judged in qrels.items():
            if question not in position:
                continue
            for doc_id, grade in judged.items():
                if grade > 0 and doc_id in row_of:
                    members.setdefault(int(labels[row_of[doc_id]]), set()).add(position[question])
        for topic in hierarchy.topics_at(level):
            if topic.depth != level or topic.id not in members:
                continue
            index = np.array(sorted(members[topic.id]))
            means: dict[str, float | None] = {}
            for config, per_metric in result.per_question.items():
                values = per_metric.get(metric)
                scored = values[index][np.isfinite(values[index])] if values is not None else np.array([])
                means[config] = float(scored.mean()) if scored.size else None
            rows.append(
                {
                    "level": level,
                    "topic": int(topic.id),
                    "terms": list(topic.top_terms[:n_terms]),
                    "n_documents": int(topic.size),
                    "n_questions": int(index.size),
                    "means": means,
                }
            )
    return rows


def difference(row: Mapping[str, Any], a: str, b: str) -> float:
    """``means[b] - means[a]`` of a :func:`topic_breakdown` row (NaN when either is missing)."""
    mean_a, mean_b = row["means"].get(a), row["means"].get(b)
    if mean_a is None or mean_b is None:
        return math.nan
    return float(mean_b - mean_a)
