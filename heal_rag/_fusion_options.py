"""Names and defaults of the hybrid (dense + BM25) fusion, kept light for the CLI.

The retriever and the run-level fusion live in :mod:`heal_rag.integrations.hybrid`.
"""

from __future__ import annotations

from typing import Any

from heal_rag.errors import InvalidValueError

#: heal-rag's fusion names -> LlamaIndex ``FUSION_MODES`` values.
FUSION_METHODS: dict[str, str] = {
    "rrf": "reciprocal_rerank",  # 1 / (60 + rank), unweighted (LlamaIndex fixes k = 60)
    "relative_score": "relative_score",  # min-max scaled scores, weighted sum
    "dist_based_score": "dist_based_score",  # scores scaled by mean +- 3 sd, weighted sum
}
#: Fusion chosen on the SciFact train-dev split (``evals/bench_hybrid.py``): distribution-based score fusion
#: with equal weights beat RRF there by +0.031 nDCG@10 (paired p = 0.001); no weight was tuned.
DEFAULT_FUSION = "dist_based_score"
#: Documents each retriever contributes to the fusion before the fused list is cut to the final top k.
DEFAULT_CANDIDATES = 100


def check_fusion(fusion: str, dense_weight: Any) -> list[float] | None:
    """Validate the fusion settings; return LlamaIndex's ``retriever_weights`` (dense, BM25) or None."""
    if fusion not in FUSION_METHODS:
        raise InvalidValueError(f"fusion must be one of {sorted(FUSION_METHODS)}. Got {fusion!r} instead.")
    if dense_weight is None:
        return None
    if fusion == "rrf":
        raise InvalidValueError(
            "fusion='rrf' is unweighted in LlamaIndex (every retriever counts 1 / (60 + rank)); leave "
            "dense_weight=None, or use fusion='relative_score' or 'dist_based_score' for a weighted sum."
        )
    if (
        isinstance(dense_weight, bool)
        or not isinstance(dense_weight, int | float)
        or not 0 < dense_weight < 1
    ):
        raise InvalidValueError(f"dense_weight must be a number in (0, 1). Got {dense_weight!r} instead.")
    return [float(dense_weight), 1.0 - float(dense_weight)]
