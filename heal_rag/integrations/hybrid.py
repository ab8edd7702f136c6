"""Hybrid retrieval: a dense retriever fused with BM25, with LlamaIndex's own parts.

BM25 comes from ``llama-index-retrievers-bm25`` (built on bm25s, stemmed with PyStemmer) and the fusion is
LlamaIndex's :class:`~llama_index.core.retrievers.QueryFusionRetriever` with a single query (no LLM query
rewriting). :func:`hybrid_retriever` returns that retriever, ready for a ``RetrieverQueryEngine``;
:func:`fuse_runs` applies the very same fusion code to precomputed rankings, so that
``heal-rag evaluate retrieval --hybrid`` measures exactly what the retriever returns.

The default fusion, :data:`DEFAULT_FUSION`, was chosen on a dev split of SciFact's *train* claims with the
untrained base model (``python evals/bench_hybrid.py``, ``evals/results/bench_hybrid.md``): LlamaIndex's
distribution-based score fusion (each retriever's scores rescaled by their mean +- 3 standard deviations,
then summed) with *equal* weights, over the top :data:`DEFAULT_CANDIDATES` of each retriever. It beat
reciprocal rank fusion by +0.031 nDCG@10 on dev (paired p = 0.001); the weights were left equal (the best
on dev), so nothing corpus-specific was tuned. On SciFact test it scores 0.731 (BM25 0.687, dense 0.645),
on MED 0.792 (dense 0.788, BM25 0.690).

Example:
    >>> from heal_rag.integrations import HEALEmbedding, build_faiss_index, hybrid_retriever
    >>> index = build_faiss_index(nodes, HEALEmbedding.from_pretrained("runs/heal"))  # doctest: +SKIP
    >>> retriever = hybrid_retriever(index, similarity_top_k=5)  # doctest: +SKIP
    >>> retriever.retrieve("Vitamin D reduces fractures.")  # doctest: +SKIP

"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from heal_rag._checks import check_positive_int
from heal_rag._fusion_options import DEFAULT_CANDIDATES, DEFAULT_FUSION, FUSION_METHODS, check_fusion
from heal_rag.errors import InvalidTypeError, InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.retrievers import BaseRetriever, QueryFusionRetriever
    from llama_index.core.schema import BaseNode

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CANDIDATES",
    "DEFAULT_FUSION",
    "FUSION_METHODS",
    "bm25_retriever",
    "fuse_runs",
    "hybrid_retriever",
]


def _fusion_retriever(
    retrievers: list[BaseRetriever], fusion: str, weights: list[float] | None, top_k: int
) -> QueryFusionRetriever:
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever

    return QueryFusionRetriever(
        retrievers,
        # num_queries=1: the query is never rewritten, so no LLM is called; a MockLLM keeps LlamaIndex from
        # resolving Settings.llm (which would look for an OpenAI key).
        llm=MockLLM(),
        mode=FUSION_METHODS[fusion],  # type: ignore[arg-type]
        similarity_top_k=top_k,
        num_queries=1,
        use_async=False,
        retriever_weights=weights,
    )


def bm25_retriever(nodes: Sequence[BaseNode], *, similarity_top_k: int = 10, stem: bool = True) -> Any:
    """Return LlamaIndex's ``BM25Retriever`` over ``nodes`` with heal-rag's BM25 settings.

    Lucene BM25 (k1 = 1.5, b = 0.75), English stop words, Snowball English stemming: the same ranking as
    :func:`heal_rag.evaluation.retrieval.bm25_run` (a test checks it).

    Args:
        nodes: The nodes to index (their ``MetadataMode.EMBED`` text, i.e. title and text).
        similarity_top_k: Nodes returned per query.
        stem: Stem words (``False``: exact word forms).

    """
    import Stemmer
    from llama_index.retrievers.bm25 import BM25Retriever

    nodes = list(nodes)
    if not nodes:
        raise InvalidValueError("bm25_retriever needs at least one node; got none.")
    check_positive_int(similarity_top_k, "similarity_top_k")
    return BM25Retriever.from_defaults(
        nodes=nodes,
        stemmer=Stemmer.Stemmer("english") if stem else None,
        skip_stemming=not stem,
        language="en",
        similarity_top_k=min(similarity_top_k, len(nodes)),
    )


def hybrid_retriever(
    dense: Any,
    nodes: Sequence[BaseNode] | None = None,
    *,
    similarity_top_k: int = 10,
    candidates: int = DEFAULT_CANDIDATES,
    fusion: str = DEFAULT_FUSION,
    dense_weight: float | None = None,
    bm25: BaseRetriever | None = None,
) -> QueryFusionRetriever:
    """Fuse a dense retriever with BM25 into one LlamaIndex retriever.

    Args:
        dense: A ``VectorStoreIndex`` (its retriever then fetches ``candidates`` nodes) or any LlamaIndex
            retriever, e.g. a :class:`~heal_rag.integrations.HierarchicalRetriever` (set its
            ``similarity_top_k`` to the number of candidates it should contribute).
        nodes: The nodes BM25 indexes; default: the index's docstore (required when ``dense`` is a retriever
            and ``bm25`` is not given).
        similarity_top_k: Nodes returned per query, after fusion.
        candidates: Nodes each retriever contributes before fusion.
        fusion: ``"dist_based_score"`` (default) or ``"relative_score"`` (weighted sums of rescaled
            scores), or ``"rrf"`` (unweighted reciprocal rank fusion).
        dense_weight: Weight of the dense retriever in (0, 1) for the weighted fusions (BM25 gets the rest);
            None: equal weights.
        bm25: A ready BM25 retriever to reuse (e.g. one per corpus shared by several dense models).

    Returns:
        LlamaIndex's ``QueryFusionRetriever``: scores are fusion scores, higher = better.

    Example:
        >>> retriever = hybrid_retriever(index, similarity_top_k=5)  # doctest: +SKIP
        >>> [n.node_id for n in retriever.retrieve("statins and dementia")]  # doctest: +SKIP

    """
    weights = check_fusion(fusion, dense_weight)
    check_positive_int(similarity_top_k, "similarity_top_k")
    check_positive_int(candidates, "candidates")
    if hasattr(dense, "as_retriever"):
        if nodes is None and bm25 is None:
            nodes = list(dense.docstore.docs.values())
            if not nodes:
                raise InvalidValueError(
                    "The index's docstore holds no nodes (a vector store that keeps the text itself?): pass "
                    "nodes= for BM25."
                )
        dense = dense.as_retriever(similarity_top_k=candidates)
    elif not callable(getattr(dense, "retrieve", None)):
        raise InvalidTypeError(
            f"dense must be a LlamaIndex VectorStoreIndex or retriever. Got {type(dense).__name__} instead."
        )
    if bm25 is None:
        if nodes is None:
            raise InvalidValueError(
                "Give nodes= (the corpus BM25 indexes) or bm25= when dense is a retriever."
            )
        bm25 = bm25_retriever(nodes, similarity_top_k=candidates)
    return _fusion_retriever([dense, bm25], fusion, weights, similarity_top_k)


def _run_retriever(run: Mapping[str, Mapping[str, float]]) -> BaseRetriever:
    """Return a retriever that replays a precomputed ranking: the query string is the query id."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    class _RunRetriever(BaseRetriever):
        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            ranking = run.get(query_bundle.query_str, {})
            # the text is the document id: LlamaIndex de-duplicates fused nodes by their content hash
            return [NodeWithScore(node=TextNode(id_=d, text=d), score=s) for d, s in ranking.items()]

    return _RunRetriever()


def fuse_runs(
    dense: Mapping[str, Mapping[str, float]],
    bm25: Mapping[str, Mapping[str, float]],
    *,
    k: int = DEFAULT_CANDIDATES,
    fusion: str = DEFAULT_FUSION,
    dense_weight: float | None = None,
) -> dict[str, dict[str, float]]:
    """Fuse two precomputed runs (query id -> {document id: score}) exactly as :func:`hybrid_retriever` does.

    Args:
        dense: The dense run (e.g. ``RetrievalRun.run`` of a model).
        bm25: The BM25 run.
        k: Documents kept per query after fusion.
        fusion: See :func:`hybrid_retriever`.
        dense_weight: See :func:`hybrid_retriever`.

    Returns:
        The fused run, query id -> {document id: fusion score}, for every query of either run.

    """
    weights = check_fusion(fusion, dense_weight)
    check_positive_int(k, "k")
    retriever = _fusion_retriever([_run_retriever(dense), _run_retriever(bm25)], fusion, weights, k)
    fused: dict[str, dict[str, float]] = {}
    for query_id in dict.fromkeys([*dense, *bm25]):
        fused[query_id] = {n.node.node_id: float(n.score or 0.0) for n in retriever.retrieve(query_id)}
    return fused
