"""Fast query placement (issue 10): the same placements and rescore results as the straightforward code.

The reference functions below are the placement and rescoring as they were before they were optimised (one
projection per split and per query, every candidate read from the docstore); the optimised code must give
the same paths, the same memberships and the same retrieval results, node for node and score for score.
"""

from __future__ import annotations

import asyncio
import logging
import random

import numpy as np
import pytest
import scipy.sparse as sp
from llama_index.core import VectorStoreIndex
from llama_index.core.indices.vector_store.retrievers import VectorIndexRetriever
from llama_index.core.schema import QueryBundle, TextNode

from heal_rag import HEALEmbedding, HierarchicalRetriever
from heal_rag.hierarchy import Hierarchy, HNMFk, _nmf
from heal_rag.hierarchy.routing import hierarchy_layout, membership_lookup, path_agreement
from heal_rag.integrations import add_hierarchy_metadata, build_faiss_index
from heal_rag.integrations._metadata import NodePlacer

THEMES = {
    "cardiology": [
        "blood pressure hypertension arteries vessels salt",
        "cholesterol statins lipids plaque diet",
    ],
    "astronomy": ["stars supernova galaxy light nebula fusion", "planet orbit moon gravity comet asteroid"],
    "cooking": ["bread dough oven yeast flour crust", "tomato sauce garlic basil pasta olive"],
}
QUERIES = [
    "how to bake bread with yeast and flour",
    "statins lower cholesterol",
    "a comet on its orbit around the planet",
    "supernova light",
    "garlic and basil in a tomato sauce for pasta, with bread",
    "blood pressure of stars",
    "oven",
]
NO_KNOWN_WORD = "zzzz qqqq"


def make_corpus(n_per: int = 8, seed: int = 1) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    docs = []
    for theme, subs in THEMES.items():
        for s, words in enumerate(subs):
            for i in range(n_per):
                docs.append((f"{theme}-{s}-{i}", f"{theme}: {' '.join(rng.sample(words.split(), 4))}."))
    return docs


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


def fit(corpus, beta_loss: str) -> Hierarchy:
    return (
        HNMFk(
            depth=2,
            k_range=(2, 4),
            min_topic_size=3,
            n_perturbations=3,
            min_df=1,
            max_df=1.0,
            beta_loss=beta_loss,
            random_state=0,
            show_progress=False,
        )
        .fit([t for _, t in corpus], doc_ids=[i for i, _ in corpus])
        .hierarchy_
    )


@pytest.fixture(scope="module", params=["kullback-leibler", "frobenius"])
def hierarchy(request, corpus):
    return fit(corpus, request.param)


@pytest.fixture(scope="module")
def embed():
    return HEALEmbedding(device="cpu")


@pytest.fixture(scope="module")
def bundles(embed):
    """Every test query with its embedding, computed once (embedding dominates these tests' time)."""
    texts = [*QUERIES, NO_KNOWN_WORD]
    vectors = embed.get_query_embeddings(texts)
    return {t: QueryBundle(query_str=t, embedding=v) for t, v in zip(texts, vectors, strict=True)}


@pytest.fixture(scope="module")
def faiss_index(corpus, embed, hierarchy):
    return build_faiss_index([TextNode(id_=i, text=t) for i, t in corpus], embed, hierarchy=hierarchy)


# --------------------------------------------------------------------------------------------------------
# the reference: placement and rescoring as written before the optimisation
# --------------------------------------------------------------------------------------------------------
def reference_conditional(X, vectors, prior, beta_loss):
    project = _nmf.project_kl if beta_loss == "kullback-leibler" else _nmf.project
    weights = project(X, vectors).astype(np.float64)
    total = weights.sum(axis=1, keepdims=True)
    prior = np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum() if prior.sum() > 0 else np.full(len(prior), 1.0 / len(prior))
    empty = total[:, 0] <= 0
    out = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)
    if empty.any():
        out[empty] = prior
    return out


def reference_route(h: Hierarchy, X) -> tuple[np.ndarray, list[np.ndarray]]:
    """Hierarchy.route before issue 10: one projection per split, everything rebuilt on every call."""
    n = X.shape[0]
    paths = np.zeros((n, h.n_levels), dtype=np.int64)
    columns = [{t.id: j for j, t in enumerate(h.topics_at(level))} for level in range(h.n_levels)]
    out = [np.zeros((n, len(c))) for c in columns]
    siblings = [h.root_topics] + [t.children for t in h.topics.values() if t.children]
    parents = [None] + [t.id for t in h.topics.values() if t.children]
    conditional = {}
    for parent, ids in zip(parents, siblings, strict=True):
        vectors = np.stack([h.topics[i].vector for i in ids])
        prior = np.array([h.topics[i].size for i in ids], dtype=np.float64)
        conditional[parent] = reference_conditional(X, vectors, prior, h.beta_loss)
    mass = {tid: conditional[None][:, j] for j, tid in enumerate(h.root_topics)}
    for level in range(h.n_levels):
        for tid, col in columns[level].items():
            out[level][:, col] = mass[tid]
        if level + 1 < h.n_levels:
            nxt = {}
            for tid in columns[level]:
                topic = h.topics[tid]
                if topic.children:
                    for j, child in enumerate(topic.children):
                        nxt[child] = mass[tid] * conditional[tid][:, j]
                else:
                    nxt[tid] = mass[tid]
            mass = nxt
    current = np.asarray(h.root_topics, dtype=np.int64)[np.argmax(conditional[None], axis=1)]
    paths[:, 0] = current
    for level in range(1, h.n_levels):
        nxt_ids = current.copy()
        for tid in np.unique(current):
            topic = h.topics[int(tid)]
            if not topic.children:
                continue
            rows = current == tid
            nxt_ids[rows] = np.asarray(topic.children)[np.argmax(conditional[int(tid)][rows], axis=1)]
        paths[:, level] = nxt_ids
        current = nxt_ids
    return paths, out


def reference_rescore(index, h, query: QueryBundle, k: int, alpha: float, multiplier: int = 5):
    """Rescore before issue 10: over-fetch through VectorIndexRetriever, read every candidate's path."""
    fetch = min(k * multiplier, len(index.index_struct.nodes_dict))
    hits = VectorIndexRetriever(index, similarity_top_k=fetch).retrieve(query)
    memberships = reference_route(h, h.vectorize([query.query_str]))[1]
    lookup = membership_lookup(memberships, hierarchy_layout(h)[0])
    paths = NodePlacer(h).paths([hit.node for hit in hits])
    agreement = path_agreement(lookup, paths, np.full(h.n_levels, 1.0 / h.n_levels))
    similarity = np.asarray([float(hit.score or 0.0) for hit in hits])
    combined = similarity + alpha * agreement
    order = np.argsort(-combined, kind="stable")[:k]
    return [(hits[i].node.node_id, float(combined[i]), paths[i].tolist()) for i in order]


def assert_same_placement(expected, got):
    np.testing.assert_array_equal(got[0], expected[0])
    assert len(got[1]) == len(expected[1])
    for level, (e, g) in enumerate(zip(expected[1], got[1], strict=True)):
        assert g.shape == e.shape, level
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-10, err_msg=f"level {level}")


def summary(hits):
    return [(h.node.node_id, h.score, dict(h.node.metadata)) for h in hits]


# --------------------------------------------------------------------------------------------------------
# placement
# --------------------------------------------------------------------------------------------------------
def test_route_matches_the_reference_one_query_at_a_time_and_batched(hierarchy, corpus):
    texts = QUERIES + [NO_KNOWN_WORD, ""] + [t for _, t in corpus]
    X = hierarchy.vectorize(texts)
    for i in range(len(texts)):  # one row: the grouped KL pass (what a query costs)
        assert_same_placement(reference_route(hierarchy, X[i]), hierarchy.route(X[i]))
    for rows in (slice(0, 9), slice(None)):  # a small batch (grouped) and a large one (split by split)
        assert_same_placement(reference_route(hierarchy, X[rows]), hierarchy.route(X[rows]))
    np.testing.assert_array_equal(
        hierarchy.predict(QUERIES), reference_route(hierarchy, X[: len(QUERIES)])[0]
    )


def test_grouped_kl_projection_is_project_kl_split_by_split_bit_for_bit():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n, m = int(rng.integers(1, 30)), int(rng.integers(5, 120))
        X = sp.random(
            n, m, density=rng.uniform(0.02, 0.4), random_state=trial, format="csr", dtype=np.float32
        )
        if trial % 5 == 0:
            X = sp.vstack([sp.csr_matrix((1, m), dtype=np.float32), X]).tocsr()  # an all-zero row
        sizes = [int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 6)))]
        groups = [(rng.random((k, m)) * (rng.random((k, m)) < 0.6)).astype(np.float32) + 1e-3 for k in sizes]
        expected = np.concatenate([_nmf.project_kl(X, H) for H in groups], axis=1)
        stacked = np.concatenate([_nmf.kl_topics(H) for H in groups])
        for budget in (1, 40, 1 << 16):  # blocks of rows: one at a time, a few, all
            got = _nmf.project_kl_groups(X, stacked, sizes, budget=budget)
            np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="sizes"):
        _nmf.project_kl_groups(X, stacked, [])


def test_the_placement_constants_are_not_saved_and_change_nothing(hierarchy, tmp_path):
    fingerprint = hierarchy.fingerprint
    X = hierarchy.vectorize(QUERIES)
    first = hierarchy.route(X)
    assert hierarchy._placement_plan() is hierarchy._placement_plan()  # built once
    assert hierarchy.fingerprint == fingerprint
    loaded = Hierarchy.load(hierarchy.save(tmp_path / "h"))
    assert loaded.fingerprint == fingerprint
    assert_same_placement(first, loaded.route(loaded.vectorize(QUERIES)))


# --------------------------------------------------------------------------------------------------------
# retrieval
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 10])
def test_rescore_over_faiss_returns_what_the_reference_returns(faiss_index, hierarchy, bundles, k):
    retriever = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="rescore", similarity_top_k=k)
    for query in (bundles[q] for q in QUERIES):
        expected = reference_rescore(faiss_index, hierarchy, query, k, retriever.alpha)
        hits = retriever.retrieve(query)
        assert [
            (h.node.node_id, h.score, [int(t) for t in h.node.metadata["heal_path"].split("/")]) for h in hits
        ] == (expected)


def test_rescore_over_a_store_without_faiss_returns_what_the_reference_returns(
    corpus, embed, hierarchy, bundles
):
    nodes = add_hierarchy_metadata([TextNode(id_=i, text=t) for i, t in corpus], hierarchy)
    index = VectorStoreIndex(nodes, embed_model=embed)
    retriever = HierarchicalRetriever(index, hierarchy=hierarchy, mode="rescore", similarity_top_k=5)
    for query in (bundles[q] for q in QUERIES):
        got = [(h.node.node_id, h.score) for h in retriever.retrieve(query)]
        assert got == [(i, s) for i, s, _ in reference_rescore(index, hierarchy, query, 5, retriever.alpha)]


@pytest.mark.parametrize("mode", ["flat", "rescore", "route"])
def test_retrieve_many_returns_what_retrieve_returns(faiss_index, hierarchy, bundles, mode, caplog):
    queries = [bundles[q] for q in [*QUERIES, QUERIES[0], NO_KNOWN_WORD]]
    one_by_one = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode=mode, similarity_top_k=4, placement_cache_size=0
    )
    expected = [summary(one_by_one.retrieve(q)) for q in queries]
    batched = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode=mode, similarity_top_k=4)
    with caplog.at_level(logging.WARNING, logger="heal_rag.integrations.retriever"):
        assert [summary(hits) for hits in batched.retrieve_many(queries)] == expected
    if mode != "flat":  # the query without a known word still warns and goes flat
        assert "no word of the topic hierarchy's vocabulary" in caplog.text
    uncached = HierarchicalRetriever(
        faiss_index, hierarchy=hierarchy, mode=mode, similarity_top_k=4, placement_cache_size=0
    )
    assert [summary(hits) for hits in asyncio.run(uncached.aretrieve_many(queries))] == expected
    if mode == "rescore":  # query strings: embedded by retrieve(), one by one
        strings = [q.query_str for q in queries[:2]]
        assert [summary(hits) for hits in uncached.retrieve_many(strings)] == [
            summary(one_by_one.retrieve(q)) for q in strings
        ]


def test_placements_are_cached_by_query_string(faiss_index, hierarchy, bundles, monkeypatch):
    calls = []
    route = hierarchy.route
    monkeypatch.setattr(hierarchy, "route", lambda X: calls.append(X.shape[0]) or route(X))
    cached = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="rescore", placement_cache_size=2)
    q0, q1, q2 = (bundles[q] for q in QUERIES[:3])
    first = summary(cached.retrieve(q0))
    assert summary(cached.retrieve(q0)) == first and calls == [1]
    cached.retrieve(q1)
    cached.retrieve(q2)  # evicts q0, the least recently used
    assert summary(cached.retrieve(q0)) == first and calls == [1, 1, 1, 1]
    uncached = HierarchicalRetriever(faiss_index, hierarchy=hierarchy, mode="rescore", placement_cache_size=0)
    calls.clear()
    assert summary(uncached.retrieve(q0)) == first
    assert summary(uncached.retrieve(q0)) == first and calls == [1, 1]
    with pytest.raises(ValueError, match="placement_cache_size"):
        HierarchicalRetriever(faiss_index, hierarchy=hierarchy, placement_cache_size=-1)


def test_tfidf_of_a_few_rows_is_the_scipy_arithmetic_bit_for_bit(hierarchy, corpus):
    from heal_rag.hierarchy.tree import _FAST_TFIDF_MAX_ROWS, counts_to_tfidf

    texts = [t for _, t in corpus] + QUERIES + [NO_KNOWN_WORD, "", "bread bread bread yeast"]
    assert len(texts) > _FAST_TFIDF_MAX_ROWS  # all at once: the scipy expressions
    hierarchy.vectorize(["warm up"])
    counts = hierarchy._vectorizer.transform(texts)
    for sublinear in (False, True):
        full = counts_to_tfidf(counts, hierarchy.idf, sublinear)
        for start in range(0, len(texts), 5):  # a few rows at a time: the direct path
            few = counts_to_tfidf(counts[start : start + 5], hierarchy.idf, sublinear)
            expected = full[start : start + 5]
            np.testing.assert_array_equal(few.indptr, expected.indptr)
            np.testing.assert_array_equal(few.indices, expected.indices)
            np.testing.assert_array_equal(few.data, expected.data)
