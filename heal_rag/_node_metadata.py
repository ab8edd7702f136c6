"""The node metadata heal-rag writes: its keys and the one function that writes a topic path.

A light module (no torch, no LlamaIndex): it works on anything with a ``metadata`` dict and, optionally,
``excluded_embed_metadata_keys`` / ``excluded_llm_metadata_keys`` lists (LlamaIndex nodes, heal-rag's
own records), so the fine-tune engine and the LlamaIndex retriever write the same keys the same way.

Keys (see docs/ARCHITECTURE.md, "Node metadata"):

- ``heal_path``: the topic ids from level 0 down, joined by ``"/"`` (e.g. ``"3/17"``);
- ``heal_topic_l0``, ``heal_topic_l1``, ...: the topic id at each level (int);
- ``heal_hierarchy``: the fingerprint of the hierarchy the path comes from.

All of them are excluded from the embedding and LLM text of the node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PATH_KEY = "heal_path"
HIERARCHY_KEY = "heal_hierarchy"
TOP_TERMS_KEY = "heal_top_terms"
MODE_KEY = "heal_mode"
SIMILARITY_KEY = "heal_similarity"
AGREEMENT_KEY = "heal_agreement"
TOPIC_KEY_PREFIX = "heal_topic_l"
_EXCLUDED_ATTRS = ("excluded_embed_metadata_keys", "excluded_llm_metadata_keys")

__all__ = [
    "AGREEMENT_KEY",
    "HIERARCHY_KEY",
    "MODE_KEY",
    "PATH_KEY",
    "SIMILARITY_KEY",
    "TOPIC_KEY_PREFIX",
    "TOP_TERMS_KEY",
    "exclude_keys",
    "path_metadata",
    "topic_key",
    "write_topic_path",
]


def topic_key(level: int) -> str:
    """Metadata key holding a node's topic id at ``level``."""
    return f"{TOPIC_KEY_PREFIX}{int(level)}"


def path_metadata(path: Sequence[int]) -> dict[str, Any]:
    """Return the ``heal_path`` and ``heal_topic_l{i}`` entries of a topic path (level 0 first)."""
    meta: dict[str, Any] = {PATH_KEY: "/".join(str(int(t)) for t in path)}
    meta.update({topic_key(level): int(t) for level, t in enumerate(path)})
    return meta


def exclude_keys(node: Any, keys: Sequence[str]) -> None:
    """Add ``keys`` to the node's excluded embedding and LLM metadata keys (a new list, never in place)."""
    for attr in _EXCLUDED_ATTRS:
        excluded = getattr(node, attr, None)
        if excluded is None:
            continue
        excluded = list(excluded)
        excluded += [k for k in keys if k not in excluded]
        setattr(node, attr, excluded)


def write_topic_path(node: Any, path: Sequence[int], *, fingerprint: str | None = None) -> None:
    """Write a topic path into ``node.metadata`` (in place) and hide it from the embedding and LLM text.

    Topic levels left by an older, deeper hierarchy (``heal_topic_l{i}`` beyond ``len(path)``) are removed
    first, from the metadata and from the excluded-key lists.

    Args:
        node: an object with a ``metadata`` dict (a LlamaIndex node, a heal-rag record). Copy it first
            when it belongs to someone else.
        path: the topic ids, level 0 first.
        fingerprint: the hierarchy's fingerprint, written as ``heal_hierarchy`` when given.

    """
    metadata = node.metadata
    for key in [k for k in metadata if k.startswith(TOPIC_KEY_PREFIX)]:
        del metadata[key]
    metadata.update(path_metadata(path))
    keys = [PATH_KEY, *(topic_key(level) for level in range(len(path)))]
    if fingerprint is not None:
        metadata[HIERARCHY_KEY] = fingerprint
        keys.append(HIERARCHY_KEY)
    for attr in _EXCLUDED_ATTRS:
        excluded = getattr(node, attr, None)
        if excluded is not None:
            setattr(node, attr, [k for k in excluded if not k.startswith(TOPIC_KEY_PREFIX)])
    exclude_keys(node, keys)
