"""LlamaIndex adapters: the HEAL embedding, the hierarchy-aware and hybrid retrievers, FAISS, persistence."""

from heal_rag.integrations._faiss import TopicPartitionedIndex, build_faiss_index
from heal_rag.integrations.embedding import HEALEmbedding
from heal_rag.integrations.hybrid import bm25_retriever, fuse_runs, hybrid_retriever
from heal_rag.integrations.persistence import load_heal_index, save_heal_index
from heal_rag.integrations.retriever import HierarchicalRetriever, add_hierarchy_metadata

__all__ = [
    "HEALEmbedding",
    "HierarchicalRetriever",
    "TopicPartitionedIndex",
    "add_hierarchy_metadata",
    "bm25_retriever",
    "build_faiss_index",
    "fuse_runs",
    "hybrid_retriever",
    "load_heal_index",
    "save_heal_index",
]
