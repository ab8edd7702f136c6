"""HierarchicalRetriever: a LlamaIndex retriever that uses the HEAL topic hierarchy.

Modes (``mode=``):

- ``"flat"``: plain embedding similarity (what ``VectorIndexRetriever`` does), for comparison.
- ``"rescore"``: over-fetch ``similarity_top_k * candidate_multiplier`` candidates by similarity, then rank by
  ``similarity + alpha * agreement``, where ``agreement`` in [0, 1] is the mean over levels of the query's
  soft membership of the candidate's topic at that level, divided by the query's largest membership at
  that level (1 = the candidate lies in the query's most likely topic at every level).
- ``"route"``: search only the members of the query's top topics: the ``route_breadth[0]`` most likely
  level-0 topics, then the most likely ``route_breadth[1]`` of their children, and so on down to the leaves.
  Over FAISS this scans only the routed leaves' cells of a topic-partitioned index; over
  stores with metadata filters it filters on ``heal_topic_l{i}`` (``FilterOperator.IN``); over other stores it
  over-fetches and filters. If the routed topics hold fewer than ``similarity_top_k`` matches, the rest is
  filled from plain similarity search, so a query always gets ``similarity_top_k`` results (when the corpus
  has that many).

  What route is for: searching *inside* chosen topics (the query's most likely ones, ``route_breadth`` per
  level) and explaining why a hit was returned (its topic path and top terms). It is not a faster
  approximate index for a large corpus: on 110k real passages (``evals/bench_route_peers.py``) it finds 0.43
  of the exact top-10 at breadth 1 (the rest sit in other topics) and 0.99 only when it scans 97 % of the
  corpus, and placing the query in the tree costs about 20 ms, while FAISS HNSW reaches recall@10 0.99 at
  0.22 ms (``build_faiss_index``'s default from 100,000 nodes); IVF-Flat is also faster at every recall.
  Route works on top of those stores: over any FAISS index (flat, IVF, HNSW) it searches a topic-partitioned
  float32 copy of the vectors, exact within the routed topics; over Qdrant (and other stores with metadata
  filters) the store applies the ``heal_topic_l{i}`` filter itself, with its own index.

Every returned node carries ``heal_path``, ``heal_topic_l{i}``, ``heal_top_terms`` (and in rescore mode
``heal_similarity`` / ``heal_agreement``) in its metadata, all excluded from the LLM and embedding text.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.indices.vector_store.base import VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)

import heal_rag.hierarchy.routing as _routing
from heal_rag._artifacts import HIERARCHY_DIR
from heal_rag._deprecation import warn_deprecated
from heal_rag._node_metadata import (
    AGREEMENT_KEY,
    HIERARCHY_KEY,
    MODE_KEY,
    PATH_KEY,
    SIMILARITY_KEY,
    TOP_TERMS_KEY,
    exclude_keys,
    topic_key,
    write_topic_path,
)
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError
from heal_rag.integrations._faiss import TopicPartitionedIndex, is_l2_index, to_cpu_index
from heal_rag.integrations._metadata import NodePlacer, add_hierarchy_metadata
from heal_rag.integrations._stores import (
    corpus_size,
    index_embed_model,
    is_faiss_store,
    store_dimension,
)

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

__all__ = [
    "AGREEMENT_KEY",
    "DEFAULT_ALPHA",
    "HIERARCHY_KEY",
    "MODES",
    "PATH_KEY",
    "SIMILARITY_KEY",
    "TOP_TERMS_KEY",
    "HierarchicalRetriever",
    "NodePlacer",
    "add_hierarchy_metadata",
    "resolve_hierarchy",
    "topic_key",
]

MODES = ("flat", "rescore", "route")
#: Default weight of the hierarchy agreement in rescore mode (see evals/bench_retriever_modes.py).
DEFAULT_ALPHA = 0.05

# The routing maths moved to heal_rag.hierarchy.routing (pure numpy, no LlamaIndex).
_MOVED_TO_ROUTING = ("hierarchy_layout", "membership_lookup", "path_agreement", "route_topics")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_ROUTING:
        warn_deprecated(
            f"heal_rag.integrations.retriever.{name}",
            f"it moved to heal_rag.hierarchy.routing.{name}; the old path goes in a future release",
        )
        return getattr(_routing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------------
# the retriever
# --------------------------------------------------------------------------------------------------------
def resolve_hierarchy(hierarchy: Any) -> Hierarchy | None:
    """Accept a Hierarchy, a HEAL model directory, a ``Hierarchy.save`` directory, or None."""
    if hierarchy is None:
        return None
    if isinstance(hierarchy, (str, Path)):
        path = Path(hierarchy)
        if not path.exists():
            raise InputNotFoundError(
                f"hierarchy={str(path)!r} does not exist. Pass a Hierarchy object, a HEAL model directory "
                "(with heal_hierarchy/ inside) or a folder written by Hierarchy.save()."
            )
        from heal_rag.integrations.embedding import load_directory_hierarchy

        if (path / HIERARCHY_DIR).is_dir():
            return load_directory_hierarchy(path)
        if (path / "modules.json").exists() or (path / "config.json").exists():
            raise InvalidValueError(
                f"The model directory {str(path)!r} has no {HIERARCHY_DIR}/ folder: it was fine-tuned "
                "without a hierarchy (or is a plain sentence-transformers model), so hierarchical "
                "modes have no "
                "topics to use. Use mode='flat', fine-tune with a hierarchy, or pass hierarchy=Hierarchy "
                "(e.g. HNMFk(...).fit(texts).hierarchy_)."
            )
        from heal_rag.hierarchy import Hierarchy

        return Hierarchy.load(path)
    for attribute in ("n_levels", "paths", "predict_memberships", "topics_at"):
        if not hasattr(hierarchy, attribute):
            raise InvalidTypeError(
                "The 'hierarchy' parameter of HierarchicalRetriever must be a Hierarchy, a HEAL model "
                f"directory or None. Got {type(hierarchy).__name__} instead."
            )
    return hierarchy


class HierarchicalRetriever(BaseRetriever):
    """Hierarchy-aware retriever over a ``VectorStoreIndex`` built with :class:`HEALEmbedding`.

    Args:
        index: a ``VectorStoreIndex`` (FAISS, the in-memory simple store, Qdrant, or any other store).
        hierarchy: a ``Hierarchy``, a HEAL model directory, or ``None`` to use the hierarchy of the index's
            ``HEALEmbedding``. Required for ``rescore`` and ``route``.
        mode: ``"flat"``, ``"rescore"`` or ``"route"``.
        similarity_top_k: results per query (>= 1). Larger than the corpus: clamped, with a warning.
        alpha: weight of the hierarchy agreement in ``rescore`` (>= 0).
        candidate_multiplier: ``rescore`` ranks ``similarity_top_k * candidate_multiplier`` candidates.
        route_breadth: topics kept per level in ``route`` (an int for every level, or one per level).
            Route searches inside the chosen topics and says why a hit was returned; for plain speed on a
            large corpus use an HNSW/IVF index with ``mode="flat"`` or ``"rescore"`` instead (see the
            module docstring).
        route_overfetch: in ``route`` over stores without metadata filters, candidates fetched per result.
        level_weights: weights of the levels in the agreement (default uniform).
        embed_model: the query embedding (default: the index's).
        n_top_terms: top terms per topic written to ``heal_top_terms``.
        partitioned: in ``route`` over FAISS (any index type: flat, IVF, HNSW), search a topic-partitioned
            copy of the vectors (built on the first routed query, exact within the routed topics; it holds
            a float32 copy of every vector). ``False`` uses the generic path (over-fetch and filter).
        placement_cache_size: query placements (memberships) kept by query string, least recently used
            first out; 0 keeps none. The hierarchy never changes, so a kept placement is always valid.

    Example:
        >>> embed = HEALEmbedding.from_pretrained("runs/heal-model")  # doctest: +SKIP
        >>> index = build_faiss_index(nodes, embed, hierarchy=embed.hierarchy)  # doctest: +SKIP
        >>> retriever = HierarchicalRetriever(index, mode="rescore")  # doctest: +SKIP
        >>> for hit in retriever.retrieve("What causes X?"):  # doctest: +SKIP
        ...     print(hit.score, hit.node.metadata["heal_path"], hit.node.metadata["heal_top_terms"])

    """

    def __init__(
        self,
        index: VectorStoreIndex,
        hierarchy: Hierarchy | str | Path | None = None,
        mode: str = "rescore",
        similarity_top_k: int = 10,
        *,
        alpha: float = DEFAULT_ALPHA,
        candidate_multiplier: int = 5,
        route_breadth: int | Sequence[int] = 2,
        route_overfetch: int = 10,
        level_weights: Sequence[float] | None = None,
        embed_model: BaseEmbedding | None = None,
        n_top_terms: int = 5,
        partitioned: bool = True,
        placement_cache_size: int = 1024,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(index, VectorStoreIndex):
            raise InvalidTypeError(
                "The 'index' parameter of HierarchicalRetriever must be a llama_index VectorStoreIndex. "
                f"Got {type(index).__name__} instead."
            )
        if mode not in MODES:
            raise InvalidValueError(
                f"The 'mode' parameter of HierarchicalRetriever must be one of {MODES}. Got {mode!r}."
            )
        if isinstance(similarity_top_k, bool) or not isinstance(similarity_top_k, (int, np.integer)):
            raise InvalidTypeError(
                f"similarity_top_k must be an integer >= 1. Got {similarity_top_k!r} instead."
            )
        if similarity_top_k < 1:
            raise InvalidValueError(
                f"similarity_top_k must be >= 1 (the number of results to return). Got {similarity_top_k}."
            )
        if not np.isfinite(alpha) or alpha < 0:
            raise InvalidValueError(f"alpha must be a finite number >= 0. Got {alpha!r} instead.")
        if candidate_multiplier < 1 or route_overfetch < 1:
            raise InvalidValueError("candidate_multiplier and route_overfetch must be integers >= 1.")
        if isinstance(placement_cache_size, bool) or not isinstance(placement_cache_size, (int, np.integer)):
            raise InvalidTypeError(
                f"placement_cache_size must be an integer >= 0. Got {placement_cache_size!r}."
            )
        if placement_cache_size < 0:
            raise InvalidValueError(f"placement_cache_size must be >= 0. Got {placement_cache_size}.")
        self._placement_cache_size = int(placement_cache_size)
        self._index = index
        self._embed_model = embed_model or index_embed_model(index)
        self._mode = mode
        self._top_k = int(similarity_top_k)
        self._alpha = float(alpha)
        self._candidate_multiplier = int(candidate_multiplier)
        self._route_overfetch = int(route_overfetch)
        self._n_top_terms = int(n_top_terms)
        self._use_partitioned = bool(partitioned)

        self._hierarchy = resolve_hierarchy(hierarchy)
        if self._hierarchy is None:
            self._hierarchy = getattr(self._embed_model, "hierarchy", None)
        if self._hierarchy is None and mode != "flat":
            raise InvalidValueError(
                f"mode={mode!r} needs a topic hierarchy, but none was given and the embedding model "
                f"({type(self._embed_model).__name__} "
                f"{getattr(self._embed_model, 'model_name', '')!r}) has none "
                "(a model directory without heal_hierarchy/). Pass hierarchy=<Hierarchy or HEAL model "
                "directory>, or use mode='flat'."
            )
        self._check_embedding_matches_index()

        if self._hierarchy is not None:
            n_levels = int(self._hierarchy.n_levels)
            self._layout = _routing.hierarchy_layout(self._hierarchy)
            self._placer = NodePlacer(self._hierarchy)
            weights = np.ones(n_levels) if level_weights is None else np.asarray(level_weights, dtype=float)
            if weights.shape != (n_levels,) or (weights < 0).any() or weights.sum() <= 0:
                raise InvalidValueError(
                    f"level_weights must be {n_levels} non-negative numbers (one per hierarchy level) with a "
                    f"positive sum. Got {level_weights!r} instead."
                )
            self._level_weights = weights / weights.sum()
            breadth = [int(route_breadth)] * n_levels if np.isscalar(route_breadth) else list(route_breadth)
            if len(breadth) != n_levels or min(breadth) < 1:
                raise InvalidValueError(
                    f"route_breadth must be an integer >= 1 or {n_levels} of them (one per level). "
                    f"Got {route_breadth!r} instead."
                )
            self._route_breadth = breadth
        self._partitioned: TopicPartitionedIndex | None = None
        self._partitioned_ntotal = -1
        # rescore over FAISS: the topic path of every stored vector, by position (built on first use)
        self._position_paths: np.ndarray | None = None
        self._position_paths_ntotal = -1
        # query string -> its memberships (None: no word of the vocabulary); the hierarchy never changes
        self._placements: OrderedDict[str, list[np.ndarray] | None] = OrderedDict()
        self._local = threading.local()  # retrieve_many's placements, for this thread's retrieve() calls
        self._top_terms_cache: dict[tuple[int, ...], str] = {}
        self._lock = threading.Lock()
        self._filters_supported: bool | None = None
        self._warned_clamp = False
        self._dimension_checked = False
        super().__init__(callback_manager=callback_manager or CallbackManager(), verbose=verbose)

    # --- properties -------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """Retrieval mode."""
        return self._mode

    @property
    def similarity_top_k(self) -> int:
        """Results per query."""
        return self._top_k

    @property
    def alpha(self) -> float:
        """Weight of the hierarchy agreement in rescore mode."""
        return self._alpha

    @property
    def hierarchy(self) -> Hierarchy | None:
        """The topic hierarchy used (None in flat mode without one)."""
        return self._hierarchy

    # --- checks -----------------------------------------------------------------------------------------
    def _check_embedding_matches_index(self) -> None:
        index_embed = index_embed_model(self._index)
        a = getattr(index_embed, "weights_fingerprint", None)
        b = getattr(self._embed_model, "weights_fingerprint", None)
        if a and b and a != b:
            raise InvalidValueError(
                "The query embedding model differs from the one the index was built with (weights "
                f"fingerprint {b[:12]} vs {a[:12]}): queries and documents would live in different spaces. "
                "Re-index the documents with this model, or retrieve with the index's own embed_model."
            )
        dim_store = store_dimension(self._index.vector_store)
        dim_model = getattr(self._embed_model, "dimension", None)
        if dim_store is not None and isinstance(dim_model, int) and dim_store != dim_model:
            raise InvalidValueError(
                f"The index holds {dim_store}-dimensional vectors but the embedding model produces "
                f"{dim_model}-dimensional ones: the index was built with another embedding model. "
                "Re-index the "
                "documents with this model (or load the model the index was built with)."
            )

    def _effective_top_k(self) -> int:
        size = corpus_size(self._index)
        if size is not None and self._top_k > size:
            if not self._warned_clamp:
                logger.warning(
                    "similarity_top_k=%d is larger than the corpus (%d vectors); returning at most %d "
                    "results.",
                    self._top_k,
                    size,
                    size,
                )
                self._warned_clamp = True
            return max(size, 0)
        return self._top_k

    def _query_embedding(self, query_bundle: QueryBundle) -> list[float]:
        if query_bundle.embedding is not None:
            embedding = list(query_bundle.embedding)
        else:
            strings = [s for s in query_bundle.embedding_strs if s and s.strip()]
            if not strings:
                raise InvalidValueError("The query is empty: pass a non-empty question to retrieve().")
            embedding = self._embed_model.get_agg_embedding_from_queries(strings)
        if not self._dimension_checked:
            dim_store = store_dimension(self._index.vector_store)
            if dim_store is not None and dim_store != len(embedding):
                raise InvalidValueError(
                    f"The query embedding has {len(embedding)} dimensions but the index holds {dim_store}-"
                    "dimensional vectors: the index was built with another embedding model. Re-index with "
                    "this model or query with the index's own model."
                )
            self._dimension_checked = True
        return embedding

    # --- store access -----------------------------------------------------------------------------------
    def _store_search(
        self, embedding: list[float], k: int, query_str: str, filters: MetadataFilters | None = None
    ) -> list[NodeWithScore]:
        retriever = VectorIndexRetriever(
            self._index, similarity_top_k=k, filters=filters, embed_model=self._embed_model
        )
        hits = retriever.retrieve(QueryBundle(query_str=query_str, embedding=embedding))
        store = self._index.vector_store
        if is_faiss_store(store) and is_l2_index(store.client):
            # FAISS L2 indexes report squared distances; on unit vectors cosine = 1 - d / 2 (higher = better)
            for hit in hits:
                hit.score = 1.0 - float(hit.score) / 2.0
        return hits

    def _nodes_from_positions(self, positions: np.ndarray, scores: np.ndarray) -> list[NodeWithScore]:
        nodes_dict = self._index.index_struct.nodes_dict
        keep = [(str(int(p)), float(s)) for p, s in zip(positions, scores, strict=False) if p >= 0]
        node_ids = [nodes_dict[p] for p, _ in keep]
        nodes = self._index.docstore.get_nodes(node_ids)
        return [NodeWithScore(node=n, score=s) for n, (_, s) in zip(nodes, keep, strict=False)]

    def _partitioned_index(self) -> TopicPartitionedIndex:
        faiss_index = to_cpu_index(self._index.vector_store.client)
        with self._lock:
            if self._partitioned is None or self._partitioned_ntotal != faiss_index.ntotal:
                n = int(faiss_index.ntotal)
                vectors = faiss_index.reconstruct_n(0, n)
                nodes_dict = self._index.index_struct.nodes_dict
                nodes = self._index.docstore.get_nodes([nodes_dict[str(i)] for i in range(n)])
                leaves = self._placer.paths(nodes)[:, -1]
                if is_l2_index(faiss_index):
                    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                self._partitioned = TopicPartitionedIndex(vectors, leaves)
                self._partitioned_ntotal = n
                logger.info(
                    "Built the topic-partitioned FAISS index (%d vectors, %d leaves).", n, len(leaves)
                )
            return self._partitioned

    # --- retrieval --------------------------------------------------------------------------------------
    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if not (query_bundle.query_str or "").strip() and query_bundle.embedding is None:
            raise InvalidValueError("The query is empty: pass a non-empty question to retrieve().")
        embedding = self._query_embedding(query_bundle)
        k = self._effective_top_k()
        if k == 0:
            return []
        query_str = query_bundle.query_str
        memberships = None if self._mode == "flat" else self._query_memberships(query_str)
        if memberships is None:
            hits = self._store_search(embedding, k, query_str)
            return self._annotate(hits, None)
        if self._mode == "rescore":
            return self._rescore(embedding, k, query_str, memberships)
        hits = self._route(embedding, k, query_str, memberships)
        return self._annotate(hits, memberships)

    def _query_memberships(self, query_str: str) -> list[np.ndarray] | None:
        """Return the query's soft memberships per level, or None (with a warning) without a known word.

        The query is turned into TF-IDF once and placed in one call (:meth:`Hierarchy.route`); placements
        are kept by query string (an LRU of ``placement_cache_size``): the hierarchy never changes.
        """
        primed = getattr(self._local, "placements", None)
        if primed and query_str in primed:
            return primed[query_str]
        with self._lock:
            if query_str in self._placements:
                self._placements.move_to_end(query_str)
                placed = self._placements[query_str]
                if placed is None:
                    self._warn_unknown_terms(query_str)
                return placed
        placed = self._place([query_str])[0]
        if placed is None:
            self._warn_unknown_terms(query_str)
        self._remember({query_str: placed})
        return placed

    def _place(self, query_strs: Sequence[str]) -> list[list[np.ndarray] | None]:
        """Memberships of each query (None for a query without a word of the vocabulary), in one call."""
        hierarchy = self._hierarchy
        if getattr(hierarchy, "vocabulary", None) is None:
            # a matrix-built hierarchy: predict_memberships gives the clear error
            memberships = hierarchy.predict_memberships(list(query_strs))
            return [[m[i : i + 1] for m in memberships] for i in range(len(query_strs))]
        X = hierarchy.vectorize(list(query_strs))
        known = np.flatnonzero(np.diff(X.indptr) > 0)
        out: list[list[np.ndarray] | None] = [None] * len(query_strs)
        if known.size:
            if hasattr(hierarchy, "route"):  # place the TF-IDF rows just computed, not the texts again
                memberships = hierarchy.route(X[known] if known.size < X.shape[0] else X)[1]
            else:
                memberships = hierarchy.predict_memberships([query_strs[i] for i in known.tolist()])
            for row, i in enumerate(known.tolist()):
                placed = [np.asarray(m[row : row + 1]).copy() for m in memberships]
                for m in placed:
                    m.flags.writeable = False  # shared through the cache
                out[i] = placed
        return out

    def _remember(self, placements: dict[str, list[np.ndarray] | None]) -> None:
        if not self._placement_cache_size:
            return
        with self._lock:
            for query_str, placed in placements.items():
                self._placements[query_str] = placed
                self._placements.move_to_end(query_str)
            while len(self._placements) > self._placement_cache_size:
                self._placements.popitem(last=False)

    def _warn_unknown_terms(self, query_str: str) -> None:
        """Warn that a query without a word of the vocabulary goes flat.

        Without one the query cannot be placed by content (emoji, another script, only stop words): the
        hierarchy would put it in the most populous topic, so rescore/route would favour an arbitrary topic.
        """
        logger.warning(
            "The query %r has no word of the topic hierarchy's vocabulary, so it cannot be placed in a "
            "topic; %s retrieval falls back to flat for it.",
            query_str[:60] + ("..." if len(query_str) > 60 else ""),
            self._mode,
        )

    def retrieve_many(self, queries: Sequence[str | QueryBundle]) -> list[list[NodeWithScore]]:
        """Retrieve for many queries: the same results as ``[retrieve(q) for q in queries]``, placed at once.

        The queries are placed in the hierarchy in one matrix call (one TF-IDF matrix, one projection for
        all of them) instead of one call each; then each query goes through :meth:`retrieve` (callbacks,
        instrumentation and recursive retrieval as usual), which finds its placement ready. Queries given as
        ``QueryBundle`` with an ``embedding`` are not embedded again, so a caller that embeds its queries in
        one batch saves that too.

        Args:
            queries: query strings or ``QueryBundle`` objects.

        Returns:
            One list of results per query, in order.

        """
        bundles = [q if isinstance(q, QueryBundle) else QueryBundle(query_str=q) for q in queries]
        primed: dict[str, list[np.ndarray]] = {}
        if self._mode != "flat" and self._hierarchy is not None:
            texts = list(dict.fromkeys(b.query_str for b in bundles if (b.query_str or "").strip()))
            if texts:
                # a query without a known word is left to retrieve(), which warns and goes flat
                placed = zip(texts, self._place(texts), strict=True)
                primed = {t: p for t, p in placed if p is not None}
                self._remember(primed)
        self._local.placements = primed
        try:
            return [self.retrieve(bundle) for bundle in bundles]
        finally:
            self._local.placements = None

    async def aretrieve_many(self, queries: Sequence[str | QueryBundle]) -> list[list[NodeWithScore]]:
        """Async :meth:`retrieve_many` (in a worker thread: the work is CPU-bound)."""
        return await asyncio.to_thread(self.retrieve_many, queries)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # The work is CPU-bound (embedding, search); a worker thread keeps the event loop responsive.
        return await asyncio.to_thread(self._retrieve, query_bundle)

    def _rescore(self, embedding, k, query_str, memberships) -> list[NodeWithScore]:
        size = corpus_size(self._index)
        fetch = k * self._candidate_multiplier
        fetch = min(fetch, size) if size is not None else fetch
        table = self._agreement_table(memberships)
        store = self._index.vector_store
        if is_faiss_store(store) and self._index.index_struct.nodes_dict:
            # Score the candidates from FAISS positions and their cached paths; only the k kept are read
            # from the docstore (the same numbers as going through VectorIndexRetriever for all of them).
            position_paths = self._candidate_paths()
            query = np.asarray(embedding, dtype=np.float32)[np.newaxis, :]
            scores, positions = store.client.search(query, fetch)
            keep = positions[0] >= 0
            positions, scores = positions[0][keep], scores[0][keep]
            if not len(positions):
                return []
            similarity = scores.astype(np.float64)
            if is_l2_index(store.client):  # squared distances of unit vectors: cosine = 1 - d / 2
                similarity = 1.0 - similarity / 2.0
            paths = position_paths[positions]
            agreement = self._agreement(table, paths)
            combined = similarity + self._alpha * agreement
            order = np.argsort(-combined, kind="stable")[:k]
            nodes = self._nodes_from_positions(positions[order], combined[order])
            kept = [(hit.node, paths[i]) for hit, i in zip(nodes, order, strict=True)]
        else:
            hits = self._store_search(embedding, fetch, query_str)
            if not hits:
                return []
            paths = self._placer.paths([h.node for h in hits])
            agreement = self._agreement(table, paths)
            similarity = np.asarray([float(h.score or 0.0) for h in hits])
            combined = similarity + self._alpha * agreement
            order = np.argsort(-combined, kind="stable")[:k]
            kept = [(hits[int(i)].node, paths[int(i)]) for i in order]
        out = []
        for (node, path), i in zip(kept, order, strict=True):
            extra = {
                SIMILARITY_KEY: round(float(similarity[i]), 6),
                AGREEMENT_KEY: round(float(agreement[i]), 6),
            }
            out.append(NodeWithScore(node=self._annotated(node, path, extra), score=float(combined[i])))
        return out

    def _agreement_table(self, memberships) -> np.ndarray:
        """Topic id -> the query's scaled membership (:func:`membership_lookup` as an array)."""
        lookup = _routing.membership_lookup(memberships, self._layout[0])
        table = np.zeros(max(lookup, default=-1) + 1)
        for tid, value in lookup.items():  # in lookup order, as path_agreement reads it
            table[tid] = value
        return table

    def _agreement(self, table: np.ndarray, paths: np.ndarray) -> np.ndarray:
        """:func:`path_agreement` of candidate paths read from the table (ids it lacks count 0)."""
        paths = np.asarray(paths, dtype=np.int64)
        if paths.size == 0:
            return np.zeros(len(paths))
        inside = (paths >= 0) & (paths < len(table))
        values = np.where(inside, table[np.where(inside, paths, 0)], 0.0)
        return values @ self._level_weights

    def _candidate_paths(self) -> np.ndarray:
        """Topic path of every vector of the FAISS store, by position (built on first use, kept).

        The paths are those :class:`NodePlacer` gives the stored nodes (metadata, hierarchy documents,
        prediction); they are rebuilt when the number of stored vectors changes.
        """
        ntotal = int(self._index.vector_store.client.ntotal)
        with self._lock:
            if self._position_paths is not None and self._position_paths_ntotal == ntotal:
                return self._position_paths
        nodes_dict = self._index.index_struct.nodes_dict
        nodes = self._index.docstore.get_nodes([nodes_dict[str(i)] for i in range(ntotal)])
        paths = self._placer.paths(nodes)
        with self._lock:
            self._position_paths, self._position_paths_ntotal = paths, ntotal
        return paths

    def _route(self, embedding, k, query_str, memberships) -> list[NodeWithScore]:
        allowed = _routing.route_topics(memberships, self._layout[0], self._layout[1], self._route_breadth)
        leaves = allowed[-1]
        store = self._index.vector_store
        is_faiss = is_faiss_store(store)
        if is_faiss and self._use_partitioned and self._index.index_struct.nodes_dict:
            partitioned = self._partitioned_index()
            query = np.asarray(embedding, dtype=np.float32)[None, :]
            scores, positions = partitioned.search(query, k, [sorted(leaves)])
            hits = self._nodes_from_positions(positions[0], scores[0])
        elif self._filters_supported is not False:
            filters = MetadataFilters(
                filters=[
                    MetadataFilter(
                        key=topic_key(level), value=sorted(int(t) for t in topics), operator=FilterOperator.IN
                    )
                    for level, topics in enumerate(allowed)
                ],
                condition=FilterCondition.AND,
            )
            try:
                hits = self._store_search(embedding, k, query_str, filters)
                self._filters_supported = True
            except (ValueError, NotImplementedError, TypeError) as error:
                logger.warning(
                    "The vector store %s does not support metadata filters (%s); route mode falls back to "
                    "over-fetching and filtering.",
                    type(store).__name__,
                    error,
                )
                self._filters_supported = False
                return self._route(embedding, k, query_str, memberships)
            if hits and self._placer.stale_metadata_seen is False:
                self._placer.paths([h.node for h in hits])  # flags metadata written by another hierarchy
            if self._placer.stale_metadata_seen:
                self._filters_supported = False
                return self._route(embedding, k, query_str, memberships)
        else:
            size = corpus_size(self._index)
            fetch = k * self._route_overfetch
            fetch = min(fetch, size) if size is not None else fetch
            candidates = self._store_search(embedding, fetch, query_str)
            paths = self._placer.paths([h.node for h in candidates])
            hits = [h for h, p in zip(candidates, paths, strict=False) if int(p[-1]) in leaves][:k]
        if len(hits) < k:
            # The routed topics hold fewer than k matches: fill up from plain similarity search.
            seen = {h.node.node_id for h in hits}
            extra = [
                h
                for h in self._store_search(embedding, k + len(hits), query_str)
                if h.node.node_id not in seen
            ]
            if not hits:
                logger.info(
                    "route: no match in the routed topics %s (do the nodes carry heal_topic_l* metadata? see "
                    "add_hierarchy_metadata); results come from plain similarity search.",
                    sorted(leaves),
                )
            hits = hits + extra[: k - len(hits)]
        return hits

    def _annotate(self, hits: list[NodeWithScore], memberships: Any) -> list[NodeWithScore]:
        if self._hierarchy is None:
            return hits
        paths = self._placer.paths([h.node for h in hits])
        return [
            NodeWithScore(node=self._annotated(hit.node, path), score=hit.score)
            for hit, path in zip(hits, paths, strict=False)
        ]

    def _annotated(self, node: Any, path: Sequence[int], extra: dict[str, Any] | None = None) -> Any:
        """Return a shallow copy of ``node`` (never mutate a docstore's nodes) with its topic metadata."""
        copy = node.model_copy(deep=False)
        copy.metadata = {**node.metadata, **extra} if extra else dict(node.metadata)
        copy.excluded_embed_metadata_keys = list(node.excluded_embed_metadata_keys)
        copy.excluded_llm_metadata_keys = list(node.excluded_llm_metadata_keys)
        write_topic_path(copy, path, fingerprint=self._placer.fingerprint)
        copy.metadata[TOP_TERMS_KEY] = self._top_terms(path)
        copy.metadata[MODE_KEY] = self._mode
        exclude_keys(copy, [TOP_TERMS_KEY, MODE_KEY, SIMILARITY_KEY, AGREEMENT_KEY])
        return copy

    def _top_terms(self, path: Sequence[int]) -> str:
        key = tuple(int(t) for t in path)
        text = self._top_terms_cache.get(key)
        if text is None:
            text = self._top_terms_cache[key] = self._format_top_terms(key)
        return text

    def _format_top_terms(self, path: Sequence[int]) -> str:
        parts, seen = [], set()
        for level, tid in enumerate(path):
            if int(tid) in seen:  # ragged tree: a leaf repeated at deeper levels
                continue
            seen.add(int(tid))
            topic = self._hierarchy.topics.get(int(tid))
            terms = list(getattr(topic, "top_terms", []) or [])[: self._n_top_terms]
            parts.append(f"l{level} {int(tid)}: " + ", ".join(terms))
        return " | ".join(parts)
