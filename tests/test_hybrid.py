"""Hybrid retrieval: LlamaIndex's BM25 and fusion retrievers, and the run-level fusion the evaluation uses."""

from __future__ import annotations

import json

import pytest

from heal_rag.cli import main
from heal_rag.datasets import load_demo_dataset
from heal_rag.evaluation.retrieval import bm25_run, dense_run, evaluate_models
from heal_rag.integrations import HEALEmbedding, build_faiss_index, hybrid_retriever
from heal_rag.integrations.hybrid import bm25_retriever, fuse_runs


@pytest.fixture(scope="module")
def demo_slice():
    """The bundled corpus with its first 20 test claims."""
    test = load_demo_dataset(split="test")
    return test.subset(list(test.queries)[:20])


def test_llamaindex_bm25_ranks_exactly_like_the_evaluation_baseline(demo_slice):
    expected = bm25_run(demo_slice, k=50, show_progress=False).run
    retriever = bm25_retriever(demo_slice.to_nodes(), similarity_top_k=50)
    for query_id, text in demo_slice.queries.items():
        got = [hit.node.node_id for hit in retriever.retrieve(text)]
        # bm25_run drops zero-score documents; the retriever fills up to k with them
        assert got[: len(expected[query_id])] == list(expected[query_id]), query_id


def test_rrf_by_hand():
    dense = {"q": {"x": 0.9, "y": 0.5}}
    bm25 = {"q": {"y": 7.0, "z": 1.0}}
    fused = fuse_runs(dense, bm25, fusion="rrf")["q"]
    # 1 / (60 + rank), rank from 0: y = 1/61 + 1/60, x = 1/60, z = 1/61
    assert list(fused) == ["y", "x", "z"]
    assert fused["y"] == pytest.approx(1 / 61 + 1 / 60)
    assert fused["z"] == pytest.approx(1 / 61)


def test_weighted_relative_score_by_hand():
    dense = {"q": {"x": 0.9, "y": 0.5, "w": 0.1}}
    bm25 = {"q": {"y": 7.0, "z": 1.0}}
    # min-max per retriever: dense x 1, y 0.5, w 0; bm25 y 1, z 0; weights 0.8 / 0.2
    fused = fuse_runs(dense, bm25, fusion="relative_score", dense_weight=0.8)["q"]
    assert fused["x"] == pytest.approx(0.8)
    assert fused["y"] == pytest.approx(0.8 * 0.5 + 0.2 * 1.0)
    assert fused["z"] == pytest.approx(0.0)
    assert list(fused)[0] == "x"
    # a query only one run knows keeps that run's documents
    assert list(fuse_runs({"a": {"d1": 1.0}}, {}, fusion="rrf")["a"]) == ["d1"]


def test_hybrid_retriever_returns_what_the_run_fusion_computes(demo_slice):
    nodes = demo_slice.to_nodes()[:120]
    kept = {n.node_id for n in nodes}
    dataset = demo_slice.subset([q for q in demo_slice.queries if set(demo_slice.relevant(q)) & kept][:5])
    dataset = type(dataset)(
        corpus={d: dataset.corpus[d] for d in kept},
        queries=dataset.queries,
        qrels=dataset.qrels,
        name="slice",
    )
    embed = HEALEmbedding(device="cpu", max_length=64)
    index = build_faiss_index(dataset.to_nodes(), embed)
    retriever = hybrid_retriever(index, similarity_top_k=10, candidates=30)
    dense = dense_run(embed._model, dataset, k=30, max_seq_length=64, show_progress=False).run
    bm25 = bm25_retriever(dataset.to_nodes(), similarity_top_k=30)
    bm25_ranked = {
        q: {hit.node.node_id: float(hit.score) for hit in bm25.retrieve(text)}
        for q, text in dataset.queries.items()
    }
    expected = fuse_runs(dense, bm25_ranked, k=10)
    for query_id, text in dataset.queries.items():
        hits = retriever.retrieve(text)
        assert [h.node.node_id for h in hits] == list(expected[query_id])
        assert [h.score for h in hits] == pytest.approx(list(expected[query_id].values()), abs=1e-5)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))  # higher = better


def test_bad_fusion_settings_are_clear_errors():
    run = {"q": {"d": 1.0}}
    with pytest.raises(ValueError, match="fusion must be one of"):
        fuse_runs(run, run, fusion="max")
    with pytest.raises(ValueError, match="rrf.*unweighted"):
        fuse_runs(run, run, fusion="rrf", dense_weight=0.3)
    with pytest.raises(ValueError, match=r"dense_weight must be a number in \(0, 1\)"):
        fuse_runs(run, run, fusion="relative_score", dense_weight=1.5)
    with pytest.raises(TypeError, match="VectorStoreIndex or retriever"):
        hybrid_retriever("not an index", nodes=[])
    with pytest.raises(ValueError, match="at least one node"):
        bm25_retriever([])


def test_evaluate_models_adds_a_fused_run_per_model(small_dataset):
    results = evaluate_models(
        small_dataset, ["default"], include_hybrid=True, show_progress=False, max_seq_length=32
    )
    assert list(results) == ["default", "default+bm25"]  # BM25 ran for the fusion, its own row is off
    fused = results.runs["default+bm25"]
    assert fused.config["fusion"] == "dist_based_score"
    expected = fuse_runs(results.runs["default"].run, bm25_run(small_dataset, show_progress=False).run)
    assert fused.run.keys() == expected.keys()
    for query_id, ranking in expected.items():
        assert list(fused.run[query_id]) == list(ranking)
        assert list(fused.run[query_id].values()) == pytest.approx(list(ranking.values()))
    with pytest.raises(ValueError, match="give at least one model"):
        evaluate_models(small_dataset, [], include_hybrid=True, include_bm25=True)


def test_cli_hybrid_writes_the_fused_runs(small_beir_dir, tmp_path):
    out = tmp_path / "metrics.json"
    args = ["-q", "evaluate", "retrieval", str(small_beir_dir), "--model", "default", "--bm25", "--hybrid"]
    assert main([*args, "--max-seq-length", "32", "--json", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert list(written) == ["default", "bm25", "default+bm25"]
    assert all(0.0 <= v <= 1.0 for v in written["default+bm25"].values())
    assert main(["-q", "evaluate", "retrieval", str(small_beir_dir), "--bm25", "--hybrid"]) == 2  # no --model
