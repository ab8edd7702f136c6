"""FAISS plumbing: store creation (GPU when available) and a topic-partitioned index for ``route`` search.

``build_faiss_index`` picks the index: exact inner product (``IndexFlatIP``) below
:data:`LARGE_CORPUS_NODES` nodes, and HNSW (``IndexHNSWFlat``, inner product) from there on, on CPU; a GPU
keeps exact search. ``evals/bench_route_peers.py`` compared exact, IVF-Flat, HNSW and route search on
110,895 real passages: HNSW was the fastest at every matched recall@10 (0.90, 0.95, 0.99; 0.22 ms p50 at
0.995 with efSearch 128, exact 10.4 ms, one thread), so it is the large-corpus default;
``index_type="flat"`` keeps exact search at any size.

``TopicPartitionedIndex`` is an inverted-file (IVF) index whose coarse cells are the hierarchy's leaf topics
rather than k-means cells: every vector sits in the cell of its document's leaf topic, and a routed query
scans only the cells of the topics it was routed to (faiss ``search_preassigned``). It serves ``route``
mode: search restricted to chosen topics, exact within them. As a general-purpose ANN index it loses to
HNSW and IVF (the routed topics miss relevant documents that sit in other topics), so it is not used for
plain large-corpus search.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from heal_rag._optional import require
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.errors import InvalidValueError

logger = logging.getLogger(__name__)


def import_faiss() -> Any:
    """Import faiss or raise an error naming the package to install."""
    return require("faiss", extra="gpu", purpose="FAISS vector search (faiss-cpu is a core dependency)")


def faiss_gpu_count() -> int:
    """Return the number of GPUs faiss can use (0 with faiss-cpu)."""
    faiss = import_faiss()
    get_num_gpus = getattr(faiss, "get_num_gpus", None)
    return int(get_num_gpus()) if get_num_gpus is not None else 0


def new_flat_index(dimension: int, use_gpu: bool | None = None) -> Any:
    """Exact inner-product index (cosine on normalised vectors); on GPU when asked for or available.

    Args:
        dimension: vector dimension.
        use_gpu: ``True`` requires a GPU faiss build and a GPU, ``False`` forces CPU, ``None`` uses a GPU
            when one is usable.

    Raises:
        ValueError: ``use_gpu=True`` without a usable GPU.

    """
    faiss = import_faiss()
    if int(dimension) <= 0:
        raise InvalidValueError(f"The FAISS index dimension must be positive. Got {dimension} instead.")
    index = faiss.IndexFlatIP(int(dimension))
    gpus = faiss_gpu_count()
    if use_gpu and gpus == 0:
        raise InvalidValueError(
            "use_gpu=True was requested but faiss sees no GPU (faiss-cpu is installed, or no CUDA device is "
            'visible). Install "heal-rag[gpu]" on a GPU machine, or pass use_gpu=None/False.'
        )
    if gpus > 0 and use_gpu is not False:
        logger.info("Placing the FAISS index on GPU 0.")
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    return index


#: From this many nodes on, ``build_faiss_index(index_type="auto")`` builds an HNSW index on CPU.
LARGE_CORPUS_NODES = 100_000
#: HNSW settings of the large-corpus index (``evals/bench_route_peers.py``: efSearch 128 found 0.995 of the
#: exact top-10 on 110k passages); the index stores efSearch, so a saved index keeps it.
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
INDEX_TYPES = ("auto", "flat", "hnsw")


def new_hnsw_index(
    dimension: int,
    *,
    m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    ef_search: int = HNSW_EF_SEARCH,
) -> Any:
    """Approximate inner-product index (``IndexHNSWFlat``, CPU): the large-corpus default.

    Args:
        dimension: vector dimension.
        m: graph neighbours per node.
        ef_construction: candidate list while building.
        ef_search: candidate list while searching (larger: higher recall, slower); stored in the index.

    """
    faiss = import_faiss()
    if int(dimension) <= 0:
        raise InvalidValueError(f"The FAISS index dimension must be positive. Got {dimension} instead.")
    index = faiss.IndexHNSWFlat(int(dimension), int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    index.hnsw.efSearch = int(ef_search)
    return index


def choose_index_type(n_nodes: int, index_type: str = "auto", use_gpu: bool | None = None) -> str:
    """``"flat"`` or ``"hnsw"``: what ``build_faiss_index`` builds for ``n_nodes`` nodes.

    ``"auto"`` is exact search below :data:`LARGE_CORPUS_NODES` nodes or when a GPU is used (exact GPU
    search is fast, and faiss has no GPU HNSW), HNSW otherwise.
    """
    if index_type not in INDEX_TYPES:
        raise InvalidValueError(f"index_type must be one of {INDEX_TYPES}. Got {index_type!r} instead.")
    if index_type != "auto":
        if index_type == "hnsw" and use_gpu:
            raise InvalidValueError("index_type='hnsw' runs on CPU only (faiss has no GPU HNSW index).")
        return index_type
    if use_gpu or (use_gpu is None and faiss_gpu_count() > 0):
        return "flat"
    return "hnsw" if int(n_nodes) >= LARGE_CORPUS_NODES else "flat"


def is_gpu_index(index: Any) -> bool:
    """Whether ``index`` is a faiss GPU index (``faiss.GpuIndex``; always false with faiss-cpu)."""
    gpu_index = getattr(import_faiss(), "GpuIndex", None)
    return isinstance(gpu_index, type) and isinstance(index, gpu_index)


def to_cpu_index(index: Any) -> Any:
    """Return a CPU copy of a (possibly GPU) faiss index, e.g. to write it to disk."""
    if is_gpu_index(index):
        return import_faiss().index_gpu_to_cpu(index)
    return index


def is_l2_index(index: Any) -> bool:
    """Whether a faiss index reports (squared) L2 distances rather than similarities."""
    faiss = import_faiss()
    return int(getattr(index, "metric_type", faiss.METRIC_INNER_PRODUCT)) == int(faiss.METRIC_L2)


class TopicPartitionedIndex:
    """Exact search restricted to chosen leaf topics: an IVF index whose cells are the leaf topics.

    Args:
        vectors: array of shape (n_vectors, dimension), float32; rows should be L2-normalised.
        cells: array of shape (n_vectors,), the leaf topic id of each vector.
        ids: array of shape (n_vectors,), the id returned for each vector (default: the row number).

    Example:
        >>> index = TopicPartitionedIndex(vectors, leaf_ids)  # doctest: +SKIP
        >>> scores, ids = index.search(queries, k=10, topics=[[3, 7], [5]])  # doctest: +SKIP

    """

    def __init__(self, vectors: np.ndarray, cells: np.ndarray, ids: np.ndarray | None = None) -> None:
        faiss = import_faiss()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        cells = np.asarray(cells, dtype=np.int64)
        if vectors.ndim != 2 or cells.shape != (vectors.shape[0],):
            raise InvalidValueError(
                f"TopicPartitionedIndex needs vectors of shape (n, d) and one topic per vector. Got vectors "
                f"{vectors.shape} and cells {cells.shape}."
            )
        ids = np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        self.topics = np.unique(cells)
        self._cell_of_topic = {int(t): i for i, t in enumerate(self.topics)}
        assign = np.searchsorted(self.topics, cells).astype(np.int64)
        dimension = vectors.shape[1]
        # The quantizer is never used to assign (assignment comes from the hierarchy), but IVF needs one;
        # the cell centroids keep it meaningful for callers who want plain nprobe search.
        centroids = np.zeros((len(self.topics), dimension), dtype=np.float32)
        np.add.at(centroids, assign, vectors)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        self._quantizer = faiss.IndexFlatIP(dimension)
        self._quantizer.add(centroids)
        self.index = faiss.IndexIVFFlat(
            self._quantizer, dimension, len(self.topics), faiss.METRIC_INNER_PRODUCT
        )
        self.index.is_trained = True
        from faiss.contrib.ivf_tools import add_preassigned

        add_preassigned(self.index, vectors, assign, ids=np.ascontiguousarray(ids))
        self.centroids = centroids
        self.ntotal = int(self.index.ntotal)
        self.sizes = np.bincount(assign, minlength=len(self.topics))

    def cells_for(self, topics: Sequence[Sequence[int]]) -> np.ndarray:
        """Array of shape (n_queries, width) of cell numbers, padded with -1 (unknown topics are skipped)."""
        rows = [[self._cell_of_topic[int(t)] for t in row if int(t) in self._cell_of_topic] for row in topics]
        width = max(1, max((len(r) for r in rows), default=1))
        out = np.full((len(rows), width), -1, dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out

    def search(
        self, queries: np.ndarray, k: int, topics: Sequence[Sequence[int]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` inner products among the vectors of each query's topics.

        Args:
            queries: array of shape (n_queries, dimension).
            k: results per query.
            topics: for each query, the leaf topic ids whose members to search.

        Returns:
            ``(scores, ids)``, arrays of shape (n_queries, k); missing results have id -1.

        """
        from faiss.contrib.ivf_tools import search_preassigned

        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if len(topics) != len(queries):
            raise InvalidValueError(f"Got {len(queries)} queries but topic lists for {len(topics)}.")
        cells = self.cells_for(topics)
        self.index.nprobe = cells.shape[1]
        scores, ids = search_preassigned(self.index, queries, int(k), cells)
        return scores, ids


def build_faiss_index(
    nodes: Sequence[Any],
    embed_model: Any,
    *,
    hierarchy: Any = None,
    use_gpu: bool | None = None,
    index_type: str = "auto",
    show_progress: bool | None = None,
    **index_kwargs: Any,
) -> Any:
    """Build a LlamaIndex ``VectorStoreIndex`` on FAISS (inner product on normalised vectors).

    Below :data:`LARGE_CORPUS_NODES` (100,000) nodes the index is exact (``IndexFlatIP``); from there on it is
    HNSW (``IndexHNSWFlat``, M 32, efSearch 128), the fastest at every matched recall in
    ``evals/results/bench_route_peers.md`` (recall@10 0.995 against exact search on 110k passages). Pass
    ``index_type="flat"`` for exact search at any size. A GPU (``use_gpu``) keeps exact search.

    Args:
        nodes: LlamaIndex nodes, or ``Document`` objects (chunked by LlamaIndex's default node parser;
            their count, not the chunks', decides ``index_type="auto"``).
        embed_model: the embedding (normally :class:`HEALEmbedding`, whose vectors are unit-norm).
        hierarchy: when given, each node's topic path is written to its metadata first
            (:func:`~heal_rag.integrations.add_hierarchy_metadata`), for ``route`` mode.
        use_gpu: ``None`` puts the FAISS index on a GPU when faiss-gpu and a GPU are present.
        index_type: ``"auto"`` (exact below 100,000 nodes, HNSW from there on, exact on GPU), ``"flat"``
            (exact) or ``"hnsw"``.
        show_progress: show LlamaIndex's embedding progress bar; ``None`` follows the ``heal_rag`` logger.
        **index_kwargs: passed to ``VectorStoreIndex``.

    Example:
        >>> index = build_faiss_index(nodes, HEALEmbedding(), hierarchy=h)  # doctest: +SKIP

    """
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.schema import Document
    from llama_index.vector_stores.faiss import FaissVectorStore

    nodes = list(nodes)
    if not nodes:
        raise InvalidValueError("build_faiss_index needs at least one node or document; got none.")
    if getattr(embed_model, "normalize", True) is False:
        logger.warning("The embedding is not normalised: inner-product scores are not cosine similarities.")
    dimension = getattr(embed_model, "dimension", None)
    if not isinstance(dimension, int):
        dimension = len(embed_model.get_text_embedding("dimension probe"))
    if hierarchy is not None:
        from heal_rag.integrations._metadata import add_hierarchy_metadata

        add_hierarchy_metadata(nodes, hierarchy)
    show_progress = resolve_show_progress(show_progress)
    chosen = choose_index_type(len(nodes), index_type, use_gpu)
    if chosen == "hnsw":
        logger.info("Building an HNSW FAISS index (%d nodes; index_type=%r).", len(nodes), index_type)
        faiss_index = new_hnsw_index(dimension)
    else:
        faiss_index = new_flat_index(dimension, use_gpu=use_gpu)
    store = FaissVectorStore(faiss_index=faiss_index)
    context = StorageContext.from_defaults(vector_store=store)
    if all(isinstance(n, Document) for n in nodes):
        return VectorStoreIndex.from_documents(
            nodes,
            storage_context=context,
            embed_model=embed_model,
            show_progress=show_progress,
            **index_kwargs,
        )
    return VectorStoreIndex(
        nodes, storage_context=context, embed_model=embed_model, show_progress=show_progress, **index_kwargs
    )
