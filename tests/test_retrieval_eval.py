from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from heal_rag._models import default_model_path
from heal_rag.cli import main
from heal_rag.datasets import CorpusDocument, RetrievalDataset
from heal_rag.evaluation import bm25_run, dense_run, evaluate_models
from heal_rag.evaluation.retrieval import model_fingerprint


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(default_model_path(), device="cpu")


@pytest.fixture
def self_query_dataset(small_dataset) -> RetrievalDataset:
    """Every query is the exact text of one document: an exact retriever must rank that document first."""
    queries = {f"self-{doc.id}": doc.full_text for doc in small_dataset.documents}
    qrels = {f"self-{doc.id}": {doc.id: 1} for doc in small_dataset.documents}
    return RetrievalDataset(small_dataset.corpus, queries, qrels, name="self")


def _model_copy(tmp_path: Path) -> Path:
    """A cheap copy of the bundled model: symlinks to its files, so one file can be replaced."""
    source = Path(default_model_path())
    target = tmp_path / "model_copy"
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return target


def test_a_document_queried_by_its_own_text_ranks_first(model, self_query_dataset):
    result = dense_run(model, self_query_dataset, k=5, show_progress=False)
    for qid, ranking in result.run.items():
        best = max(ranking, key=ranking.get)
        assert best == qid.removeprefix("self-")
        assert ranking[best] == pytest.approx(1.0, abs=1e-4)  # cosine of a text with itself
        assert len(ranking) == 5
    assert result.cache == {"corpus": "off", "queries": "off"}


def test_evaluate_models_on_a_beir_folder(small_beir_dir):
    results = evaluate_models(
        small_beir_dir, ["default"], include_bm25=True, show_progress=False, batch_size=8
    )
    assert list(results) == ["default", "bm25"]
    for name in ("default", "bm25"):
        assert set(results[name]) == {"ndcg@10", "recall@100", "mrr@10"}
        # 12 documents, k=100: every relevant document is somewhere in the ranking of a dense model
        assert 0.0 <= results[name]["ndcg@10"] <= 1.0
    assert results["default"]["recall@100"] == pytest.approx(1.0)
    # three clearly separated topics: the model finds the right documents near the top
    assert results["default"]["mrr@10"] > 0.7
    assert results["bm25"]["mrr@10"] > 0.5
    assert results.split == "test" and results.dataset == "small_beir"
    # the per-query scores are kept (for paired tests) and their mean is the reported figure
    per_query = results.per_query["default"]["ndcg@10"]
    assert sorted(per_query) == [f"q{i}" for i in range(6)]
    assert np.mean(list(per_query.values())) == pytest.approx(results["default"]["ndcg@10"])
    assert len(results.runs["default"].run["q0"]) == 12


def test_cache_hit_reuses_embeddings(small_dataset, tmp_path):
    cache = tmp_path / "cache"
    first = dense_run(default_model_path(), small_dataset, cache_dir=cache, show_progress=False)
    assert first.cache == {"corpus": "miss", "queries": "miss"}
    assert first.n_encoded == len(small_dataset.corpus) + len(small_dataset.queries)
    assert len(list((cache / "embeddings").glob("*.npz"))) == 2

    second = dense_run(default_model_path(), small_dataset, cache_dir=cache, show_progress=False)
    assert second.cache == {"corpus": "hit", "queries": "hit"}
    assert second.n_encoded == 0
    assert second.run == first.run

    # another truncation length changes the embeddings: not a hit
    third = dense_run(
        default_model_path(), small_dataset, cache_dir=cache, max_seq_length=16, show_progress=False
    )
    assert third.cache["corpus"] == "miss"

    # a changed corpus text is re-encoded; the unchanged queries still come from the cache
    corpus = dict(small_dataset.corpus)
    corpus["d0"] = CorpusDocument(id="d0", text="A different first document.")
    changed = RetrievalDataset(corpus, small_dataset.queries, small_dataset.qrels)
    fourth = dense_run(default_model_path(), changed, cache_dir=cache, show_progress=False)
    assert fourth.cache == {"corpus": "miss", "queries": "hit"}


def test_model_fingerprint_tracks_weights_not_side_files(tmp_path):
    copy = _model_copy(tmp_path)
    original = model_fingerprint(copy)
    assert original is not None and original == model_fingerprint(default_model_path())
    (copy / "heal_config.json").write_text("{}")  # heal-rag's metadata does not change embeddings
    (copy / "README.md").unlink()
    (copy / "README.md").write_text("a new model card")
    assert model_fingerprint(copy) == original
    config = copy / "sentence_bert_config.json"
    content = json.loads(config.read_text())
    config.unlink()
    config.write_text(json.dumps({**content, "max_seq_length": 64}))
    assert model_fingerprint(copy) != original


def test_bm25_run_ranks_word_overlap_first(small_dataset):
    result = bm25_run(small_dataset, k=3, show_progress=False)
    assert max(result.run["q3"], key=result.run["q3"].get) == "d6"  # the only text with "supernova"
    assert all(0 < len(ranking) <= 3 for ranking in result.run.values())
    assert all(score > 0 for ranking in result.run.values() for score in ranking.values())


def test_bm25_query_without_known_words_gets_an_empty_ranking(small_dataset):
    queries = {**small_dataset.queries, "zz": "xylophone quokka"}
    dataset = RetrievalDataset(small_dataset.corpus, queries, {**small_dataset.qrels, "zz": {"d0": 1}})
    result = bm25_run(dataset, show_progress=False)
    assert result.run["zz"] == {}
    results = evaluate_models(dataset, [], include_bm25=True, show_progress=False)
    assert results.per_query["bm25"]["mrr@10"]["zz"] == 0.0


def test_cli_writes_the_json_contract(small_beir_dir, tmp_path, capsys):
    out = tmp_path / "out" / "metrics.json"
    model = default_model_path()
    code = main(
        [
            "-q",
            "evaluate",
            "retrieval",
            str(small_beir_dir),
            "--split",
            "test",
            "--model",
            model,
            "--json",
            str(out),
            "--bm25",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--batch-size",
            "4",
            "--max-seq-length",
            "64",
        ]
    )
    assert code == 0
    written = json.loads(out.read_text())
    assert list(written) == [model, "bm25"]
    for values in written.values():
        assert set(values) == {"ndcg@10", "recall@100", "mrr@10"}
        assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in values.values())
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "bm25" in printed and f"{written['bm25']['ndcg@10']:.4f}" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--split", "dev", "--bm25"], "no split 'dev'"),
        (["--model", "/nonexistent/heal-model"], "does not exist"),
        ([], "nothing to evaluate"),
        (["--model", "default", "--model", "default"], "more than once"),
    ],
)
def test_cli_bad_input_is_a_one_line_error(small_beir_dir, capsys, extra, message):
    code = main(["-q", "evaluate", "retrieval", str(small_beir_dir), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_corpus_qrels_mismatch_is_reported(small_beir_dir):
    with open(small_beir_dir / "qrels" / "test.tsv", "a", encoding="utf-8") as handle:
        handle.write("q0\tmissing-doc\t1\n")
    with pytest.raises(ValueError, match="not in its corpus"):
        evaluate_models(small_beir_dir, [], include_bm25=True, show_progress=False)


def test_a_folder_that_is_not_a_model(small_beir_dir, tmp_path):
    (tmp_path / "not_a_model").mkdir()
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        evaluate_models(small_beir_dir, [str(tmp_path / "not_a_model")], show_progress=False)


def test_bad_parameters(small_dataset):
    with pytest.raises(ValueError, match="'k' parameter"):
        evaluate_models(small_dataset, ["default"], k=0)
    with pytest.raises(ValueError, match="Nothing to evaluate"):
        evaluate_models(small_dataset, [])
    no_qrels = RetrievalDataset(small_dataset.corpus, small_dataset.queries, {})
    with pytest.raises(ValueError, match="no relevance judgments"):
        evaluate_models(no_qrels, [], include_bm25=True)


def test_saved_model_folder_evaluates_like_its_source(small_dataset, model, tmp_path):
    folder = tmp_path / "saved"
    model.save(str(folder))
    saved = dense_run(str(folder), small_dataset, show_progress=False)
    source = dense_run(model, small_dataset, show_progress=False)
    for qid in small_dataset.queries:
        assert list(saved.run[qid]) == list(source.run[qid])
