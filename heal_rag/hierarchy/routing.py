"""Routing maths of the hierarchical retriever: pure functions of topic memberships (numpy only).

They choose the topics a query is routed to and score how well a candidate's topic path agrees with the
query's memberships. No LlamaIndex here, so the scale benchmark and the tests use them directly;
:class:`heal_rag.integrations.HierarchicalRetriever` applies them to a vector store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.hierarchy.tree import Hierarchy

__all__ = ["hierarchy_layout", "membership_lookup", "path_agreement", "route_topics"]


def _topic_ids(topics: Sequence[Any]) -> list[int]:
    return [int(getattr(t, "id", t)) for t in topics]


def hierarchy_layout(hierarchy: Hierarchy) -> tuple[list[list[int]], dict[int, tuple[int, ...]]]:
    """Topic ids per level (in ``memberships(level)`` column order) and the children of every topic."""
    by_level = [_topic_ids(hierarchy.topics_at(level)) for level in range(hierarchy.n_levels)]
    children = {
        int(tid): tuple(int(c) for c in (topic.children or ())) for tid, topic in hierarchy.topics.items()
    }
    return by_level, children


def route_topics(
    memberships: Sequence[np.ndarray],
    topics_by_level: Sequence[Sequence[int]],
    children: Mapping[int, Sequence[int]],
    breadth: int | Sequence[int],
) -> list[set[int]]:
    """Choose the topics a query is routed to, level by level, top-down.

    Level 0: the ``breadth[0]`` topics with the largest membership. Level ``l``: among the children of the
    topics chosen at level ``l - 1``, the ``breadth[l]`` with the largest membership; a chosen topic without
    children (a leaf above the deepest level) stays chosen, as ragged trees repeat it at deeper levels.

    Args:
        memberships: per level, the query's memberships, array of shape (n_topics_at_level,) or (1, ...).
        topics_by_level: per level, the topic ids in membership column order.
        children: topic id -> child topic ids.
        breadth: topics to keep per level (an int applies to every level).

    Returns:
        Per level, the set of chosen topic ids (those at the last level are the leaves to search).

    """
    n_levels = len(topics_by_level)
    widths = [int(breadth)] * n_levels if np.isscalar(breadth) else [int(b) for b in breadth]
    if len(widths) < n_levels:
        widths += [widths[-1]] * (n_levels - len(widths))
    chosen: list[set[int]] = []
    for level in range(n_levels):
        row = np.asarray(memberships[level], dtype=np.float64).reshape(-1)
        score = dict(zip(topics_by_level[level], row.tolist(), strict=False))
        if level == 0:
            candidates = list(topics_by_level[0])
            carried: set[int] = set()
        else:
            candidates, carried = [], set()
            for parent in chosen[-1]:
                kids = children.get(parent, ())
                if kids:
                    candidates.extend(kids)
                else:
                    carried.add(parent)
        ranked = sorted(candidates, key=lambda t: -score.get(t, 0.0))
        chosen.append(set(ranked[: max(1, widths[level])]) | carried)
    return chosen


def membership_lookup(
    memberships: Sequence[np.ndarray], topics_by_level: Sequence[Sequence[int]]
) -> dict[int, float]:
    """Topic id -> the query's membership of it divided by its level's largest membership (in [0, 1])."""
    lookup: dict[int, float] = {}
    for level, topics in enumerate(topics_by_level):
        row = np.asarray(memberships[level], dtype=np.float64).reshape(-1)
        top = row.max() if row.size else 0.0
        scaled = row / top if top > 0 else np.zeros_like(row)
        lookup.update(zip((int(t) for t in topics), scaled.tolist(), strict=False))
    return lookup


def path_agreement(lookup: Mapping[int, float], paths: np.ndarray, level_weights: np.ndarray) -> np.ndarray:
    """Weighted mean over levels of ``lookup[path[l]]``: array of shape (n_candidates,) in [0, 1]."""
    paths = np.asarray(paths)
    if paths.size == 0:
        return np.zeros(len(paths))
    values = np.vectorize(lambda t: lookup.get(int(t), 0.0), otypes=[float])(paths)
    return values @ level_weights
