"""What heal-rag needs to know about a LlamaIndex vector store or index, asked in one place.

Stores are told apart with ``isinstance`` against the store classes, looked up only in modules that are
already imported: a store object exists only once its module is loaded, so an optional store package
(Qdrant, ...) is never imported just to find out that a store is not one of its kind.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "corpus_size",
    "index_embed_model",
    "is_faiss_store",
    "is_local_store",
    "is_qdrant_store",
    "is_simple_store",
    "store_dimension",
]

_FAISS = ("llama_index.vector_stores.faiss", "FaissVectorStore")
_SIMPLE = ("llama_index.core.vector_stores.simple", "SimpleVectorStore")
_QDRANT = ("llama_index.vector_stores.qdrant", "QdrantVectorStore")


def _is_instance(obj: Any, where: tuple[str, str]) -> bool:
    module = sys.modules.get(where[0])
    cls = getattr(module, where[1], None) if module is not None else None
    return isinstance(cls, type) and isinstance(obj, cls)


def is_faiss_store(store: Any) -> bool:
    """Whether ``store`` is a LlamaIndex ``FaissVectorStore`` (or a subclass)."""
    return _is_instance(store, _FAISS)


def is_simple_store(store: Any) -> bool:
    """Whether ``store`` is LlamaIndex's in-memory ``SimpleVectorStore`` (or a subclass)."""
    return _is_instance(store, _SIMPLE)


def is_qdrant_store(store: Any) -> bool:
    """Whether ``store`` is a LlamaIndex ``QdrantVectorStore`` (or a subclass)."""
    return _is_instance(store, _QDRANT)


def is_local_store(store: Any) -> bool:
    """Whether the store keeps its vectors in the index's own persist folder (FAISS, simple)."""
    return is_faiss_store(store) or is_simple_store(store)


def index_embed_model(index: Any) -> Any:
    """Return the embedding model a ``VectorStoreIndex`` embeds its nodes (and, by default, queries) with.

    LlamaIndex (0.12–0.14) offers no public accessor for it: ``VectorStoreIndex`` keeps it as
    ``_embed_model`` and its own ``as_retriever()`` reads that attribute. This is the one place heal-rag
    reads it; a public ``embed_model`` attribute, should LlamaIndex add one, is preferred.
    """
    public = getattr(type(index), "embed_model", None)
    if isinstance(public, property):
        return index.embed_model
    return getattr(index, "_embed_model", None)


def _qdrant_errors() -> tuple[type[BaseException], ...]:
    """Return what a Qdrant client raises when a collection cannot be read.

    API errors, a missing collection (``ValueError`` in local mode), a connection failure (``OSError``).
    """
    errors: tuple[type[BaseException], ...] = (OSError, ValueError)
    exceptions = sys.modules.get("qdrant_client.http.exceptions")
    api_error = getattr(exceptions, "ApiException", None) if exceptions is not None else None
    return (*errors, api_error) if isinstance(api_error, type) else errors


def store_dimension(store: Any) -> int | None:
    """Vector dimension of a store when it can be read cheaply (FAISS, simple, Qdrant), else ``None``."""
    if is_faiss_store(store):
        return int(store.client.d)
    if is_simple_store(store):
        embeddings = store.data.embedding_dict
        return len(next(iter(embeddings.values()))) if embeddings else None
    if is_qdrant_store(store):
        try:
            info = store.client.get_collection(store.collection_name)
        except _qdrant_errors() as error:
            logger.warning(
                "Cannot read the vector dimension of the Qdrant collection %r (%s: %s); it is checked "
                "against the query embedding at query time instead.",
                store.collection_name,
                type(error).__name__,
                error,
            )
            return None
        vectors = info.config.params.vectors
        if isinstance(vectors, dict):
            vectors = next(iter(vectors.values()))
        return int(vectors.size)
    return None


def corpus_size(index: Any) -> int | None:
    """Return the number of vectors in a ``VectorStoreIndex`` (from the store when it can say)."""
    store = index.vector_store
    if is_faiss_store(store):
        return int(store.client.ntotal)
    if is_simple_store(store):
        return len(store.data.embedding_dict)
    if is_qdrant_store(store):
        try:
            return int(store.client.count(store.collection_name).count)
        except _qdrant_errors() as error:
            logger.warning(
                "Cannot count the vectors of the Qdrant collection %r (%s: %s); using the index's node "
                "count.",
                store.collection_name,
                type(error).__name__,
                error,
            )
    nodes = index.index_struct.nodes_dict
    return len(nodes) if nodes else None
