"""HierarchicalRetriever over real LlamaIndex stores (FAISS, simple, Qdrant local) and a real HNMFk tree."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import uuid

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.schema import MetadataMode, NodeRelationship, RelatedNodeInfo, TextNode

from heal_rag import HEALEmbedding, HierarchicalRetriever
from heal_rag.hierarchy import HNMFk
from heal_rag.hierarchy.routing import hierarchy_layout, membership_lookup, route_topics
from heal_rag.integrations import add_hierarchy_metadata, build_faiss_index

THEMES = {
    "cardiology": {
        "pressure": "blood pressure hypertension arteries vessels salt",
        "cholesterol": "cholesterol statins lipids plaque liver diet",
    },
    "astronomy": {
        "stars": "stars supernova galaxy light nebula fusion",
        "planets": "planet orbit moon gravity comet asteroid",
    },
    "cooking": {
        "bread": "bread dough oven yeast flour crust",
        "sauce": "tomato sauce garlic basil pasta olive",
    },
}
QUERY = "how to bake bread with yeast and flour"


def make_corpus(n_per: int = 8, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    docs = []
    for theme, subs in THEMES.items():
        for sub, words in subs.items():
            for i in range(n_per):
                docs.append((f"{theme}-{sub}-{i}", f"{theme}: {' '.join(rng.sample(words.split(), 4))}."))
    return docs


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def hierarchy(corpus):
    # a ragged tree (leaves at level 0) exercises the repeated-leaf convention; tests do not rely on its shape
    return (
        HNMFk(
            depth=2,
            k_range=(2, 4),
            min_topic_size=3,
            n_perturbations=3,
            min_df=1,
            max_df=1.0,
            random_state=0,
            show_progress=False,
        )
        .fit([t for _, t in corpus], doc_ids=[i for i, _ in corpus])
        .hierarchy_
    )


@pytest.fixture(scope="module")
def embed():
    return HEALEmbedding(device="cpu")


def nodes_of(corpus):
    return [TextNode(id_=i, text=t) for i, t in corpus]


@pytest.fixture(scope="module")
def faiss_index(corpus, embed, hierarchy):
    return build_faiss_index(nodes_of(corpus), embed, hierarchy=hierarchy)


@pytest.fixture(scope="module")
def simple_index(corpus, embed, hierarchy):
    return VectorStoreIndex(add_hierarchy_metadata(nodes_of(corpus), hierarchy), embed_model=embed)


@pytest.fixture(scope="module")
def vectors(corpus, embed):
    return {
        i: np.asarray(v)
        for (i, _), v in zip(corpus, embed.get_text_embedding_batch([t for _, t in corpus]), strict=False)
    }


def brute_force_route(query_vec, hierarchy, vectors, k, breadth=2):
    by_level, children = hierarchy_layout(hierarchy)
    memberships = hierarchy.predict_memberships([QUERY])
    leaves = route_topics(memberships, by_level, children, breadth)[-1]
    leaf_of = dict(zip(hierarchy.doc_ids, hierarchy.paths[:, -1], strict=False))
    allowed = [d for d in vectors if leaf_of[d] in leaves]
    scored = sorted(allowed, key=lambda d: -float(vectors[d] @ query_vec))
    k = min(k, len(scored))  # the tree's exact shape is HNMFk's business: use what the routed leaves hold
    assert k >= 3
    return scored[:k], leaves


def test_flat_mode_matches_llamaindex_vector_retriever(faiss_index):
    ours = HierarchicalRetriever(faiss_index, mode="flat", similarity_top_k=5).retrieve(QUERY)
    theirs = VectorIndexRetriever(faiss_index, similarity_top_k=5).retrieve(QUERY)
    assert [h.node.node_id for h in ours] == [h.node.node_id for h in theirs]
    np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], atol=1e-6)


def test_results_carry_path_and_top_terms_excluded_from_llm_text(faiss_index, hierarchy):
    hits = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=3
    ).retrieve(QUERY)
    assert len(hits) == 3
    for hit in hits:
        meta = hit.node.metadata
        path = [int(t) for t in meta["heal_path"].split("/")]
        index_of = hierarchy.doc_ids.index(hit.node.node_id)
        assert path == hierarchy.paths[index_of].tolist()
        assert meta["heal_topic_l0"] == path[0]
        leaf_terms = hierarchy.topics[path[-1]].top_terms[:2]
        assert all(term in meta["heal_top_terms"] for term in leaf_terms)
        assert "heal_" not in hit.node.get_content(metadata_mode=MetadataMode.LLM)
        assert "heal_" not in hit.node.get_content(metadata_mode=MetadataMode.EMBED)
    assert hits[0].node.node_id.startswith("cooking-bread")


def test_rescore_score_is_similarity_plus_alpha_times_agreement(faiss_index, hierarchy, vectors, embed):
    alpha = 0.3
    hits = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=8, alpha=alpha
    ).retrieve(QUERY)
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    lookup = membership_lookup(hierarchy.predict_memberships([QUERY]), hierarchy_layout(hierarchy)[0])
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    for hit in hits:
        path = [int(t) for t in hit.node.metadata["heal_path"].split("/")]
        agreement = np.mean([lookup[t] for t in path])  # uniform level weights, hand-computed
        similarity = float(vectors[hit.node.node_id] @ query_vec)
        assert hit.node.metadata["heal_agreement"] == pytest.approx(agreement, abs=1e-5)
        assert hit.score == pytest.approx(similarity + alpha * agreement, abs=1e-4)


def test_rescore_with_zero_alpha_equals_flat(faiss_index, hierarchy):
    flat = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="flat", similarity_top_k=6).retrieve(
        QUERY
    )
    zero = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=6, alpha=0.0
    ).retrieve(QUERY)
    assert [h.node.node_id for h in zero] == [h.node.node_id for h in flat]


def test_route_over_faiss_equals_brute_force_within_routed_topics(faiss_index, hierarchy, vectors, embed):
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    expected, leaves = brute_force_route(query_vec, hierarchy, vectors, k=5, breadth=1)
    hits = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode="route", similarity_top_k=len(expected), route_breadth=1
    ).retrieve(QUERY)
    assert [h.node.node_id for h in hits] == expected
    assert all(h.node.metadata["heal_topic_l1"] in leaves for h in hits)


@pytest.mark.parametrize("store", ["simple", "faiss_overfetch"])
def test_route_over_filter_store_and_overfetch_fallback(
    store, simple_index, faiss_index, hierarchy, vectors, embed, caplog
):
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    expected, _ = brute_force_route(query_vec, hierarchy, vectors, k=5, breadth=1)
    if store == "simple":
        retriever = HierarchicalRetriever(
            simple_index, hierarchy=hierarchy, mode="route", similarity_top_k=len(expected), route_breadth=1
        )
    else:  # FAISS store without the partitioned index: no metadata filters -> over-fetch + filter, logged
        retriever = HierarchicalRetriever(
            faiss_index,
            hierarchy=hierarchy,
            mode="route",
            similarity_top_k=len(expected),
            route_breadth=1,
            partitioned=False,
        )
    with caplog.at_level(logging.WARNING, logger="heal_rag.integrations.retriever"):
        hits = retriever.retrieve(QUERY)
    assert [h.node.node_id for h in hits] == expected
    assert ("does not support metadata filters" in caplog.text) == (store != "simple")


def faiss_store_index(kind, corpus, embed, hierarchy, vectors):
    """A VectorStoreIndex on a FaissVectorStore holding a user's own IVF-Flat or HNSW index."""
    import faiss
    from llama_index.vector_stores.faiss import FaissVectorStore

    matrix = np.stack([vectors[i] for i, _ in corpus]).astype(np.float32)
    dimension = matrix.shape[1]
    if kind == "hnsw":
        faiss_index = faiss.IndexHNSWFlat(dimension, 8, faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw_l2":
        faiss_index = faiss.IndexHNSWFlat(dimension, 8)
    else:
        faiss_index = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(dimension), dimension, 2, faiss.METRIC_INNER_PRODUCT
        )
        faiss_index.cp.min_points_per_centroid = 1  # a toy corpus: no "too few training points" note
        faiss_index.train(matrix)
    context = StorageContext.from_defaults(vector_store=FaissVectorStore(faiss_index=faiss_index))
    return VectorStoreIndex(
        add_hierarchy_metadata(nodes_of(corpus), hierarchy), storage_context=context, embed_model=embed
    )


@pytest.mark.parametrize("kind", ["ivf", "hnsw", "hnsw_l2"])
@pytest.mark.parametrize("partitioned", [True, False])
def test_route_over_a_users_faiss_ivf_or_hnsw_index_filters_by_topic(
    kind, partitioned, corpus, embed, hierarchy, vectors
):
    # a store the user built with FAISS's own approximate indexes still gets the topic filter of route mode:
    # the partitioned copy (exact within the routed topics) or, without it, over-fetch and filter
    index = faiss_store_index(kind, corpus, embed, hierarchy, vectors)
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    expected, leaves = brute_force_route(query_vec, hierarchy, vectors, k=5, breadth=1)
    hits = HierarchicalRetriever(
        index,
        hierarchy=hierarchy,
        mode="route",
        similarity_top_k=len(expected),
        route_breadth=1,
        partitioned=partitioned,
    ).retrieve(QUERY)
    assert [h.node.node_id for h in hits] == expected
    assert all(h.node.metadata["heal_topic_l1"] in leaves for h in hits)


def test_build_faiss_index_uses_hnsw_for_large_corpora_only(corpus, embed, hierarchy, vectors, monkeypatch):
    from heal_rag.integrations import _faiss

    small = build_faiss_index(nodes_of(corpus), embed)
    assert type(small.vector_store.client).__name__ == "IndexFlatIP"  # exact below the threshold
    monkeypatch.setattr(_faiss, "LARGE_CORPUS_NODES", len(corpus))  # this corpus now counts as large
    large = build_faiss_index(nodes_of(corpus), embed, hierarchy=hierarchy)
    assert type(large.vector_store.client).__name__ == "IndexHNSWFlat"
    assert large.vector_store.client.hnsw.efSearch == _faiss.HNSW_EF_SEARCH
    forced = build_faiss_index(nodes_of(corpus), embed, index_type="flat")
    assert type(forced.vector_store.client).__name__ == "IndexFlatIP"
    # the same answers as exact search on a toy corpus, and route's topic filter on top of it
    flat = HierarchicalRetriever(small, mode="flat", similarity_top_k=5).retrieve(QUERY)
    approx = HierarchicalRetriever(large, mode="flat", similarity_top_k=5).retrieve(QUERY)
    assert [h.node.node_id for h in approx] == [h.node.node_id for h in flat]
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    expected, _ = brute_force_route(query_vec, hierarchy, vectors, k=5, breadth=1)
    routed = HierarchicalRetriever(
        large, hierarchy=hierarchy, mode="route", similarity_top_k=len(expected), route_breadth=1
    ).retrieve(QUERY)
    assert [h.node.node_id for h in routed] == expected


def test_evaluated_dense_systems_stay_exact_on_large_corpora(corpus, embed, monkeypatch):
    from heal_rag.integrations import _faiss
    from heal_rag.systems import dense_system

    monkeypatch.setattr(_faiss, "LARGE_CORPUS_NODES", 1)  # every corpus counts as large
    built = []
    monkeypatch.setattr(_faiss, "new_hnsw_index", lambda *a, **k: built.append("hnsw"))
    system = dense_system("base", embed, nodes_of(corpus), top_k=3)
    assert built == []  # an evaluation measures the model, not an ANN index's misses
    assert system is not None


def test_choose_index_type():
    from heal_rag.integrations._faiss import LARGE_CORPUS_NODES, choose_index_type

    assert choose_index_type(LARGE_CORPUS_NODES - 1, use_gpu=False) == "flat"
    assert choose_index_type(LARGE_CORPUS_NODES, use_gpu=False) == "hnsw"
    assert choose_index_type(LARGE_CORPUS_NODES, use_gpu=True) == "flat"  # exact GPU search is kept
    assert choose_index_type(10, "hnsw") == "hnsw"
    assert choose_index_type(10**7, "flat") == "flat"
    with pytest.raises(ValueError, match="index_type must be one of"):
        choose_index_type(10, "ivf")
    with pytest.raises(ValueError, match="CPU only"):
        choose_index_type(10, "hnsw", use_gpu=True)


def test_route_fills_up_when_routed_topics_are_too_small(faiss_index, hierarchy):
    hits = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode="route", similarity_top_k=20, route_breadth=1
    ).retrieve(QUERY)
    assert len(hits) == 20
    assert len({h.node.node_id for h in hits}) == 20


def test_qdrant_local_mode_all_modes(corpus, embed, hierarchy, vectors):
    # qdrant-client's local mode searches exactly; a Qdrant server answers the same filter with its HNSW
    qdrant_client = pytest.importorskip("qdrant_client")
    qdrant_store = pytest.importorskip("llama_index.vector_stores.qdrant")
    client = qdrant_client.QdrantClient(location=":memory:")
    store = qdrant_store.QdrantVectorStore(client=client, collection_name="heal_test")
    # Qdrant wants UUID point ids: chunk-like nodes whose source document is the corpus document
    to_doc = {str(uuid.uuid5(uuid.NAMESPACE_URL, i)): i for i, _ in corpus}
    nodes = [
        TextNode(
            id_=u, text=dict(corpus)[d], relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=d)}
        )
        for u, d in to_doc.items()
    ]
    index = VectorStoreIndex(
        add_hierarchy_metadata(nodes, hierarchy),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    query_vec = np.asarray(embed.get_query_embedding(QUERY))
    expected, _ = brute_force_route(query_vec, hierarchy, vectors, k=5, breadth=1)
    routed = HierarchicalRetriever(
        index, hierarchy=hierarchy, mode="route", similarity_top_k=len(expected), route_breadth=1
    )
    assert [to_doc[h.node.node_id] for h in routed.retrieve(QUERY)] == expected
    assert routed._filters_supported is True  # Qdrant applied the topic filter itself (no over-fetch)
    rescored = HierarchicalRetriever(index, hierarchy=hierarchy, mode="rescore", similarity_top_k=5).retrieve(
        QUERY
    )
    assert to_doc[rescored[0].node.node_id].startswith("cooking-bread")
    assert all("heal_path" in h.node.metadata for h in rescored)


def test_unseen_nodes_are_placed_on_the_fly(corpus, embed, hierarchy):
    new = TextNode(id_="new-doc", text="cooking: garlic basil tomato pasta sauce.")
    index = VectorStoreIndex(nodes_of(corpus) + [new], embed_model=embed)  # no heal metadata at all
    retriever = HierarchicalRetriever(index, hierarchy=hierarchy, mode="rescore", similarity_top_k=3)
    hits = retriever.retrieve("tomato sauce with garlic and basil")
    by_id = {h.node.node_id: h for h in hits}
    assert "new-doc" in by_id
    expected = "/".join(str(t) for t in hierarchy.predict([new.text])[0])
    assert by_id["new-doc"].node.metadata["heal_path"] == expected


def test_async_retrieve_matches_sync(faiss_index, hierarchy):
    retriever = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=4)
    sync = [h.node.node_id for h in retriever.retrieve(QUERY)]
    assert [h.node.node_id for h in asyncio.run(retriever.aretrieve(QUERY))] == sync


def test_route_topics_descends_the_tree():
    by_level = [[0, 1, 2], [3, 4, 5, 6, 2]]  # topic 2 is a leaf at level 0, repeated at level 1
    children = {0: (3, 4), 1: (5, 6), 2: (), 3: (), 4: (), 5: (), 6: ()}
    memberships = [np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.4, 0.25, 0.05, 0.2])]
    assert route_topics(memberships, by_level, children, 1) == [{0}, {4}]
    assert route_topics(memberships, by_level, children, (2, 1)) == [{0, 1}, {4}]
    assert route_topics(memberships, by_level, children, (3, 2)) == [{0, 1, 2}, {4, 5, 2}]


# ------------------------------------------------------------------------------------------ bad input
def test_top_k_zero_and_larger_than_corpus(faiss_index, hierarchy, caplog):
    with pytest.raises(ValueError, match="similarity_top_k must be >= 1"):
        HierarchicalRetriever(faiss_index, hierarchy=hierarchy, similarity_top_k=0)
    retriever = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=500)
    with caplog.at_level(logging.WARNING, logger="heal_rag.integrations.retriever"):
        hits = retriever.retrieve(QUERY)
    assert len(hits) == 48
    assert "larger than the corpus" in caplog.text


def test_empty_query_and_bad_mode(faiss_index, hierarchy):
    retriever = HierarchicalRetriever(faiss_index, hierarchy=hierarchy)
    with pytest.raises(ValueError, match="query is empty"):
        retriever.retrieve("   ")
    with pytest.raises(ValueError, match="'mode' parameter"):
        HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="tree")
    with pytest.raises(ValueError, match="alpha"):
        HierarchicalRetriever(faiss_index, hierarchy=hierarchy, alpha=-1)


def test_missing_hierarchy_is_explained(tmp_path, faiss_index, embed):
    with pytest.raises(ValueError, match="needs a topic hierarchy"):
        HierarchicalRetriever(faiss_index, mode="rescore")
    plain_dir = tmp_path / "plain_model"
    embed.model.save(str(plain_dir))
    with pytest.raises(ValueError, match="no heal_hierarchy/"):
        HierarchicalRetriever(faiss_index, hierarchy=plain_dir, mode="route")
    # flat mode works without any hierarchy
    assert len(HierarchicalRetriever(faiss_index, mode="flat", similarity_top_k=2).retrieve(QUERY)) == 2


def test_index_built_with_another_embedding(faiss_index, embed, hierarchy):
    model = copy.deepcopy(embed.model)
    model.truncate_dim = 64  # a genuinely different (64-dimensional) embedding
    other = HEALEmbedding(model=model)
    assert other.dimension == 64
    with pytest.raises(ValueError, match="another embedding"):
        HierarchicalRetriever(faiss_index, hierarchy=hierarchy, embed_model=other)


@pytest.mark.parametrize("mode", ["route", "rescore"])
def test_a_query_with_no_known_word_warns_and_falls_back_to_flat(faiss_index, hierarchy, mode, caplog):
    flat = HierarchicalRetriever(faiss_index, mode="flat", similarity_top_k=5)
    retriever = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode=mode, similarity_top_k=5)
    for query in ("🔭🌌✨", "心臓の血圧", "\x00\x00", "the of and"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="heal_rag"):
            hits = retriever.retrieve(query)
        assert (
            "no word of the topic hierarchy's vocabulary" in caplog.text
            and "falls back to flat" in caplog.text
        )
        expected = flat.retrieve(query)
        assert [h.node.node_id for h in hits] == [h.node.node_id for h in expected]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in expected], atol=1e-6)
    caplog.clear()
    with caplog.at_level("WARNING", logger="heal_rag"):
        retriever.retrieve("stars and galaxies")  # known words: placed, no warning
    assert "vocabulary" not in caplog.text
