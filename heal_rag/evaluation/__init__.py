"""Evaluation: IR metrics (ranx), exact retrieval evaluation of models and BM25, statistics, RAG harness.

Names are imported lazily, so ``from heal_rag.evaluation import ir_metrics`` does not import torch.

Example:
    >>> from heal_rag.evaluation import ir_metrics
    >>> ir_metrics({"q1": {"d1": 1}}, {"q1": {"d1": 0.9}}, metrics=["ndcg@10"])
    {'ndcg@10': 1.0}

"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "DEFAULT_METRICS": "heal_rag.evaluation.metrics",
    "ir_metrics": "heal_rag.evaluation.metrics",
    "per_query_metrics": "heal_rag.evaluation.metrics",
    "RetrievalResults": "heal_rag.evaluation.retrieval",
    "RetrievalRun": "heal_rag.evaluation.retrieval",
    "bm25_run": "heal_rag.evaluation.retrieval",
    "dense_run": "heal_rag.evaluation.retrieval",
    "evaluate_models": "heal_rag.evaluation.retrieval",
}

__all__ = [
    "DEFAULT_METRICS",
    "ir_metrics",
    "per_query_metrics",
    "RetrievalResults",
    "RetrievalRun",
    "bm25_run",
    "dense_run",
    "evaluate_models",
]

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.evaluation.metrics import DEFAULT_METRICS, ir_metrics, per_query_metrics
    from heal_rag.evaluation.retrieval import (
        RetrievalResults,
        RetrievalRun,
        bm25_run,
        dense_run,
        evaluate_models,
    )


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'heal_rag.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
