"""Topic paths of LlamaIndex nodes: where a node sits in the hierarchy, and writing it into its metadata."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from llama_index.core.schema import BaseNode, MetadataMode

from heal_rag._node_metadata import HIERARCHY_KEY, PATH_KEY, write_topic_path

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger("heal_rag.integrations.retriever")  # the name these warnings always had

__all__ = ["NodePlacer", "add_hierarchy_metadata"]


def add_hierarchy_metadata(nodes: Sequence[BaseNode], hierarchy: Hierarchy) -> list[BaseNode]:
    """Write each node's topic path into its metadata (in place) before indexing, for ``route`` filters.

    Nodes whose id (or source document id) is one of ``hierarchy.doc_ids`` get their stored path; others are
    placed with ``hierarchy.predict`` on their text. Keys: ``heal_path``, ``heal_topic_l{i}`` and
    ``heal_hierarchy`` (the hierarchy's fingerprint), all excluded from the LLM and embedding text.

    Returns:
        The same nodes.

    """
    nodes = list(nodes)
    paths = NodePlacer(hierarchy).paths(nodes, use_metadata=False)
    for node, path in zip(nodes, paths, strict=False):
        write_topic_path(node, path, fingerprint=hierarchy.fingerprint)
    return nodes


class NodePlacer:
    """Find the topic path of nodes: node metadata, then the hierarchy's documents, then prediction.

    Predicted paths are cached by node id.
    """

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.n_levels = int(hierarchy.n_levels)
        self.fingerprint = hierarchy.fingerprint
        paths = np.asarray(hierarchy.paths, dtype=np.int64)
        self._known = {str(doc_id): paths[i] for i, doc_id in enumerate(hierarchy.doc_ids)}
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self.stale_metadata_seen = False

    def _from_metadata(self, node: BaseNode) -> np.ndarray | None:
        meta = node.metadata or {}
        raw = meta.get(PATH_KEY)
        if raw is None:
            return None
        written_by = meta.get(HIERARCHY_KEY)
        if written_by is not None and written_by != self.fingerprint:
            if not self.stale_metadata_seen:
                logger.warning(
                    "Some nodes carry heal_path metadata written with another hierarchy (fingerprint %s, "
                    "expected %s); their paths are recomputed. Re-index with the current hierarchy.",
                    str(written_by)[:12],
                    self.fingerprint[:12],
                )
            self.stale_metadata_seen = True
            return None
        try:
            path = np.asarray([int(t) for t in str(raw).split("/")], dtype=np.int64)
        except ValueError:
            return None
        return path if len(path) == self.n_levels else None

    def paths(self, nodes: Sequence[BaseNode], use_metadata: bool = True) -> np.ndarray:
        """Array of shape (n_nodes, n_levels) of topic ids."""
        out = np.zeros((len(nodes), self.n_levels), dtype=np.int64)
        missing: list[int] = []
        for i, node in enumerate(nodes):
            path = self._from_metadata(node) if use_metadata else None
            if path is None:
                path = self._known.get(str(node.node_id))
            if path is None and node.ref_doc_id is not None:
                path = self._known.get(str(node.ref_doc_id))
            if path is None:
                with self._lock:
                    path = self._cache.get(str(node.node_id))
            if path is None:
                missing.append(i)
            else:
                out[i] = path
        if missing:
            texts = [nodes[i].get_content(metadata_mode=MetadataMode.NONE) for i in missing]
            predicted = np.asarray(self.hierarchy.predict(texts), dtype=np.int64).reshape(len(missing), -1)
            with self._lock:
                for i, path in zip(missing, predicted, strict=False):
                    out[i] = path
                    self._cache[str(nodes[i].node_id)] = path
        return out
