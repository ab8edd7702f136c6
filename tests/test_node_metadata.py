"""The one writer of heal-rag's node metadata, and the vector-store checks of the integration."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from heal_rag._node_metadata import path_metadata, topic_key, write_topic_path


@dataclass
class Record:
    metadata: dict = field(default_factory=dict)
    excluded_embed_metadata_keys: list = field(default_factory=list)
    excluded_llm_metadata_keys: list = field(default_factory=list)


def test_path_metadata_by_hand():
    assert path_metadata([3, 17]) == {"heal_path": "3/17", "heal_topic_l0": 3, "heal_topic_l1": 17}
    assert topic_key(2) == "heal_topic_l2"


def test_write_topic_path_replaces_an_older_deeper_path_and_hides_it():
    excluded = ["title", "heal_topic_l2"]
    node = Record(
        metadata={
            "title": "t",
            "heal_path": "1/2/3",
            "heal_topic_l0": 1,
            "heal_topic_l1": 2,
            "heal_topic_l2": 3,
        },
        excluded_embed_metadata_keys=excluded,
        excluded_llm_metadata_keys=["title"],
    )
    write_topic_path(node, [5, 9], fingerprint="abc")
    assert node.metadata == {
        "title": "t",
        "heal_path": "5/9",
        "heal_topic_l0": 5,
        "heal_topic_l1": 9,
        "heal_hierarchy": "abc",
    }
    for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        assert keys == ["title", "heal_path", "heal_topic_l0", "heal_topic_l1", "heal_hierarchy"]
    assert excluded == ["title", "heal_topic_l2"]  # the old list object is not edited in place


def test_write_topic_path_works_without_excluded_key_lists():
    class Plain:
        def __init__(self):
            self.metadata = {}

    node = Plain()
    write_topic_path(node, [1])
    assert node.metadata == {"heal_path": "1", "heal_topic_l0": 1}


def test_vector_stores_are_told_apart_by_class():
    pytest.importorskip("llama_index.vector_stores.faiss")
    import faiss
    from llama_index.core.vector_stores import SimpleVectorStore
    from llama_index.vector_stores.faiss import FaissVectorStore

    from heal_rag.integrations._stores import is_faiss_store, is_local_store, is_qdrant_store, is_simple_store

    class RenamedFaiss(FaissVectorStore):  # a subclass under another name is still a FAISS store
        pass

    faiss_store = RenamedFaiss(faiss_index=faiss.IndexFlatIP(4))
    simple = SimpleVectorStore()
    assert is_faiss_store(faiss_store) and not is_simple_store(faiss_store)
    assert is_simple_store(simple) and not is_faiss_store(simple)
    assert is_local_store(faiss_store) and is_local_store(simple)
    assert not is_qdrant_store(simple) and not is_local_store(object())

    class FaissVectorStoreLookalike:  # the class name alone no longer passes
        pass

    assert not is_faiss_store(FaissVectorStoreLookalike())
