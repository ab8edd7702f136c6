from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from heal_rag.datasets import (
    CorpusDocument,
    RetrievalDataset,
    available_splits,
    demo_corpus_path,
    documents_to_llama,
    documents_to_nodes,
    load_beir,
    load_corpus,
    load_demo_dataset,
    load_qa_finetune_json,
    load_qrels,
    nodes_to_documents,
    save_qa_finetune_json,
)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- CorpusDocument / RetrievalDataset ----------------------------------------------------------------------


def test_document_full_text_joins_title_and_text():
    assert CorpusDocument("a", "body", title="Title").full_text == "Title body"
    assert CorpusDocument("a", "body").full_text == "body"
    assert CorpusDocument("a", "", title="Only title").full_text == "Only title"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"id": "", "text": "x"}, "non-empty string"),
        ({"id": 3, "text": "x"}, "non-empty string"),
        ({"id": "a", "text": None}, "text of document 'a' must be a string"),
        ({"id": "a", "text": "x", "title": 5}, "title of document 'a'"),
    ],
)
def test_document_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorpusDocument(**kwargs)


def test_dataset_views(small_dataset):
    assert len(small_dataset.documents) == 12
    assert small_dataset.doc_ids[:2] == ["d0", "d1"]
    assert small_dataset.texts[0].startswith("Doc 0 The heart")
    assert small_dataset.relevant("q2") == ["d4", "d7"]
    assert small_dataset.n_judgments == 7
    assert "documents=12" in repr(small_dataset)
    with pytest.raises(KeyError, match="Unknown query id"):
        small_dataset.relevant("nope")


def test_dataset_relevant_ignores_zero_grades():
    corpus = {i: CorpusDocument(i, "t") for i in ("a", "b")}
    ds = RetrievalDataset(corpus, {"q": "x"}, {"q": {"a": 0, "b": 2}})
    assert ds.relevant("q") == ["b"]
    assert ds.n_judgments == 1


def test_dataset_rejects_unknown_ids_and_lists_them():
    corpus = {"a": CorpusDocument("a", "t")}
    with pytest.raises(ValueError, match=r"2 document id\(s\).*not in its corpus: 'x', 'y'"):
        RetrievalDataset(corpus, {"q": "x"}, {"q": {"x": 1, "y": 1, "a": 1}})
    with pytest.raises(ValueError, match=r"not among its queries: 'q9'"):
        RetrievalDataset(corpus, {"q": "x"}, {"q9": {"a": 1}})


def test_dataset_lists_only_a_few_bad_ids():
    corpus = {"a": CorpusDocument("a", "t")}
    qrels = {"q": {f"x{i}": 1 for i in range(20)}}
    with pytest.raises(ValueError, match=r"and 15 more"):
        RetrievalDataset(corpus, {"q": "x"}, qrels)


def test_dataset_rejects_empty_corpus_and_mismatched_keys():
    with pytest.raises(ValueError, match="corpus .* is empty"):
        RetrievalDataset({}, {}, {})
    with pytest.raises(ValueError, match="must equal their CorpusDocument.id"):
        RetrievalDataset({"a": CorpusDocument("b", "t")})
    with pytest.raises(ValueError, match="must be heal_rag.datasets.CorpusDocument"):
        RetrievalDataset({"a": "just a string"})
    with pytest.raises(ValueError, match="Query ids and texts must be strings"):
        RetrievalDataset({"a": CorpusDocument("a", "t")}, {"q": 1})
    with pytest.raises(ValueError, match="grades must be integers"):
        RetrievalDataset({"a": CorpusDocument("a", "t")}, {"q": "x"}, {"q": {"a": 0.5}})


def test_split_is_disjoint_deterministic_and_keeps_corpus(small_dataset):
    train, test = small_dataset.split(test_size=0.5, seed=3)
    assert set(train.queries).isdisjoint(test.queries)
    assert set(train.queries) | set(test.queries) == set(small_dataset.queries)
    assert len(test.queries) == 3
    assert train.corpus == small_dataset.corpus and test.corpus == small_dataset.corpus
    assert set(train.qrels) == set(train.queries)
    train2, test2 = small_dataset.split(test_size=0.5, seed=3)
    assert train2.queries == train.queries and test2.queries == test.queries
    other_splits = {frozenset(small_dataset.split(test_size=0.5, seed=s)[1].queries) for s in range(4, 12)}
    assert other_splits - {frozenset(test.queries)}  # the seed matters
    with pytest.raises(ValueError, match="'test_size' parameter"):
        small_dataset.split(test_size=1.5)


def test_subset_rejects_unknown_queries(small_dataset):
    sub = small_dataset.subset(["q1", "q0"])
    assert list(sub.queries) == ["q1", "q0"] and sub.relevant("q1") == ["d3"]
    with pytest.raises(ValueError, match="Unknown query ids"):
        small_dataset.subset(["zz"])


def test_subset_by_documents_keeps_judged_ones_or_says_which_are_missing(small_dataset):
    sub = small_dataset.subset(["q0", "q1"], doc_ids=["d3", "d1", "d0"])
    assert sub.doc_ids == ["d0", "d1", "d3"]  # corpus order, not argument order
    assert sub.qrels == {"q0": {"d1": 1}, "q1": {"d3": 1}}
    with pytest.raises(ValueError, match="not in its corpus"):  # q1's judged d3 would be lost
        small_dataset.subset(["q1"], doc_ids=["d0"])
    with pytest.raises(ValueError, match="Unknown document ids"):
        small_dataset.subset(doc_ids=["nope"])


def test_sample_queries_is_seeded_ordered_and_only_judged(small_dataset):
    with_unjudged = RetrievalDataset(
        small_dataset.corpus, {**small_dataset.queries, "qx": "unjudged"}, small_dataset.qrels
    )
    assert list(with_unjudged.sample_queries().queries) == list(small_dataset.queries)
    assert "qx" in with_unjudged.sample_queries(only_judged=False).queries
    sample = small_dataset.sample_queries(3, seed=1)
    assert len(sample.queries) == 3 and sample.corpus == small_dataset.corpus
    order = list(small_dataset.queries)
    assert [order.index(q) for q in sample.queries] == sorted(order.index(q) for q in sample.queries)
    assert small_dataset.sample_queries(3, seed=1).queries == sample.queries
    assert {frozenset(small_dataset.sample_queries(3, seed=s).queries) for s in range(8)} != {
        frozenset(sample.queries)
    }
    with pytest.raises(ValueError, match="positive integer"):
        small_dataset.sample_queries(0)
    with pytest.raises(ValueError, match="no query with a relevant document"):
        RetrievalDataset(small_dataset.corpus, {"qx": "unjudged"}).sample_queries()


def test_reduce_corpus_keeps_every_relevant_document(small_dataset):
    two = small_dataset.subset(["q0", "q2"])
    reduced = two.reduce_corpus(5, seed=0)
    assert len(reduced.corpus) == 5 and {"d1", "d4", "d7"} <= set(reduced.corpus)
    assert two.reduce_corpus(5, seed=0).doc_ids == reduced.doc_ids
    assert two.reduce_corpus(2, seed=0).doc_ids == ["d1", "d4", "d7"]  # relevant ones are never dropped
    assert two.reduce_corpus(100) is two


def test_references_and_decisions_are_validated_and_follow_subsets(small_dataset):
    ds = RetrievalDataset(
        small_dataset.corpus,
        small_dataset.queries,
        small_dataset.qrels,
        references={"q0": "Salt.", "q1": "  "},
        decisions={"q0": " YES", "q1": "no"},
    )
    assert ds.references == {"q0": "Salt."}  # an empty answer is no reference
    assert ds.decisions == {"q0": "yes", "q1": "no"}
    sub = ds.subset(["q1"])
    assert sub.references == {} and sub.decisions == {"q1": "no"}
    assert sub.fingerprint != ds.fingerprint and ds.subset().fingerprint == ds.fingerprint
    with pytest.raises(ValueError, match="yes, no or maybe"):
        RetrievalDataset(small_dataset.corpus, small_dataset.queries, decisions={"q0": "perhaps"})
    with pytest.raises(ValueError, match="references of dataset .* not among its queries"):
        RetrievalDataset(small_dataset.corpus, small_dataset.queries, references={"zz": "x"})


def test_document_fields_reads_every_accepted_shape():
    from llama_index.core.schema import TextNode

    from heal_rag.datasets import document_fields

    expected = ("d1", "Title", "Body.")
    assert document_fields(CorpusDocument("d1", "Body.", title="Title")) == expected
    assert document_fields({"_id": "d1", "title": "Title", "text": "Body."}) == expected
    assert document_fields(TextNode(id_="d1", text="Body.", metadata={"title": "Title"})) == expected
    assert document_fields(("d1", "Body.")) == ("d1", "", "Body.")
    with pytest.raises(TypeError, match="CorpusDocument"):
        document_fields(42)


def test_document_is_a_deprecated_alias_of_corpus_document():
    import heal_rag
    import heal_rag.datasets as datasets

    with pytest.warns(DeprecationWarning, match="CorpusDocument"):
        assert datasets.Document is CorpusDocument
    with pytest.warns(DeprecationWarning, match="CorpusDocument"):
        assert heal_rag.Document is CorpusDocument
    assert "Document" not in heal_rag.__all__


# -- BEIR ----------------------------------------------------------------------------------------------------


def test_load_beir_round_trip(small_beir_dir, small_dataset):
    ds = load_beir(small_beir_dir)
    assert ds.name == "small_beir"
    assert ds.corpus == small_dataset.corpus
    assert ds.queries == small_dataset.queries
    assert ds.qrels == small_dataset.qrels
    assert available_splits(small_beir_dir) == ["test"]


def test_load_beir_keeps_only_judged_queries_and_split_none(small_beir_dir):
    with open(small_beir_dir / "queries.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "q_unjudged", "text": "unjudged"}) + "\n")
    assert "q_unjudged" not in load_beir(small_beir_dir, split="test").queries
    everything = load_beir(small_beir_dir, split=None)
    assert "q_unjudged" in everything.queries and everything.qrels == {}


def test_load_beir_missing_split_lists_available(small_beir_dir):
    with pytest.raises(FileNotFoundError, match=r"no split 'dev'.*Available splits: 'test'"):
        load_beir(small_beir_dir, split="dev")


def test_load_beir_missing_folder_and_files(tmp_path, small_beir_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "nope")
    (small_beir_dir / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="no queries.jsonl"):
        load_beir(small_beir_dir)


def test_load_beir_reads_gzipped_corpus(small_beir_dir, small_dataset):
    raw = (small_beir_dir / "corpus.jsonl").read_bytes()
    (small_beir_dir / "corpus.jsonl").unlink()
    with gzip.open(small_beir_dir / "corpus.jsonl.gz", "wb") as handle:
        handle.write(raw)
    assert load_beir(small_beir_dir).corpus == small_dataset.corpus


def test_load_beir_qrels_pointing_to_unknown_doc(small_beir_dir):
    with open(small_beir_dir / "qrels" / "test.tsv", "a", encoding="utf-8") as handle:
        handle.write("q0\tghost\t1\n")
    with pytest.raises(ValueError, match="not in its corpus: 'ghost'"):
        load_beir(small_beir_dir)


def test_load_beir_qrels_with_unknown_query(small_beir_dir):
    with open(small_beir_dir / "qrels" / "test.tsv", "a", encoding="utf-8") as handle:
        handle.write("q_ghost\td0\t1\n")
    with pytest.raises(ValueError, match="not in queries.jsonl: 'q_ghost'"):
        load_beir(small_beir_dir)


def test_load_qrels_errors_name_file_and_line(tmp_path):
    path = write_lines(tmp_path / "q.tsv", ["query-id\tcorpus-id\tscore", "q\td\t1", "q\td2"])
    with pytest.raises(ValueError, match=r"q.tsv:3: expected 3 tab-separated columns"):
        load_qrels(path)
    path = write_lines(tmp_path / "q.tsv", ["q\td\t1", "q\td2\tx"])
    with pytest.raises(ValueError, match=r"q.tsv:2: the score 'x' is not an integer"):
        load_qrels(path)
    # no header is fine too
    assert load_qrels(write_lines(tmp_path / "ok.tsv", ["q\td\t1", "q\te\t0"])) == {"q": {"d": 1, "e": 0}}


# -- load_corpus ---------------------------------------------------------------------------------------------


def test_load_corpus_jsonl_with_metadata_and_id_variants(tmp_path):
    path = write_lines(
        tmp_path / "c.jsonl",
        [
            json.dumps({"_id": "a", "title": "T", "text": "x", "year": 2020}),
            "",
            json.dumps({"_id": 7, "text": "y"}),
        ],
    )
    docs = load_corpus(path)
    assert docs == [CorpusDocument("a", "x", title="T", metadata={"year": 2020}), CorpusDocument("7", "y")]
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"id": "z", "text": "w"})])
    assert load_corpus(path)[0].id == "z"


def test_load_corpus_keeps_empty_documents_with_a_warning(tmp_path, caplog):
    path = write_lines(
        tmp_path / "c.jsonl", [json.dumps({"_id": "a", "text": "x"}), json.dumps({"_id": "b", "text": ""})]
    )
    with caplog.at_level("WARNING", logger="heal_rag.datasets"):
        docs = load_corpus(path)
    assert [d.id for d in docs] == ["a", "b"]  # never dropped silently
    assert "1 document(s) have neither title nor text: 'b'" in caplog.text


def test_load_corpus_jsonl_without_ids_uses_line_order(tmp_path):
    path = write_lines(tmp_path / "c.jsonl", [json.dumps({"text": "x"}), json.dumps({"text": "y"})])
    assert [d.id for d in load_corpus(path)] == ["0", "1"]
    path = write_lines(
        tmp_path / "m.jsonl", [json.dumps({"id": "a", "text": "x"}), json.dumps({"text": "y"})]
    )
    with pytest.raises(ValueError, match=r"m.jsonl:2: some lines .* have an '_id'/'id' field"):
        load_corpus(path)


def test_load_corpus_txt_and_gz(tmp_path):
    path = write_lines(tmp_path / "c.txt", ["first doc", "", "   ", "second doc"])
    docs = load_corpus(path)
    assert [(d.id, d.text, d.metadata["line"]) for d in docs] == [
        ("0", "first doc", 1),
        ("1", "second doc", 4),
    ]
    gz = tmp_path / "c.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"_id": "g", "text": "zipped"}) + "\n")
    assert load_corpus(gz) == [CorpusDocument("g", "zipped")]


def test_load_corpus_beir_folder(small_beir_dir, small_dataset):
    assert load_corpus(small_beir_dir) == small_dataset.documents


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([json.dumps({"_id": "a", "text": "x"}), "{not json"], r"c.jsonl:2: malformed JSON"),
        (
            [json.dumps({"_id": "a", "text": "x"}), json.dumps({"_id": "a", "text": "y"})],
            r"c.jsonl:2: duplicate document id 'a' \(first seen on line 1\)",
        ),
        ([json.dumps({"_id": "a", "text": 3})], r"c.jsonl:1: the 'text' field must be a string. Got int"),
        ([json.dumps({"_id": "a", "text": None})], r"c.jsonl:1: the 'text' field must be a string"),
        ([json.dumps({"_id": "a", "title": "t"})], r"c.jsonl:1: missing the 'text' field"),
        ([json.dumps(["a", "b"])], r"c.jsonl:1: expected a JSON object per line, got list"),
        ([json.dumps({"_id": ["a"], "text": "x"})], r"c.jsonl:1: the '_id' field must be a string"),
        (["", "  "], "contains no documents"),
    ],
)
def test_load_corpus_bad_jsonl(tmp_path, lines, match):
    path = write_lines(tmp_path / "c.jsonl", lines)
    with pytest.raises(ValueError, match=match):
        load_corpus(path)


def test_load_corpus_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="Unsupported corpus format 'c.csv'"):
        load_corpus(write_lines(tmp_path / "c.csv", ["a,b"]))
    with pytest.raises(ValueError, match="folder without corpus.jsonl"):
        load_corpus(tmp_path)
    with pytest.raises(ValueError, match="contains no documents"):
        load_corpus(write_lines(tmp_path / "empty.txt", ["", ""]))
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="Cannot read .*broken.jsonl.gz"):
        load_corpus(broken)


# -- LlamaIndex ----------------------------------------------------------------------------------------------


def test_nodes_round_trip_and_embed_text_equals_full_text():
    from llama_index.core.schema import MetadataMode, TextNode

    docs = [
        CorpusDocument("a", "Body A.", title="Title A", metadata={"year": 2020, "source": "x"}),
        CorpusDocument("b", "Body B."),
    ]
    nodes = documents_to_nodes(docs)
    assert all(isinstance(n, TextNode) for n in nodes)
    assert [n.node_id for n in nodes] == ["a", "b"]
    assert nodes[0].get_content(MetadataMode.EMBED) == "Title A Body A."
    assert nodes[1].get_content(MetadataMode.EMBED) == "Body B."
    assert nodes[0].get_content(MetadataMode.LLM) == "Title A Body A."
    assert nodes[0].metadata["year"] == 2020
    assert nodes_to_documents(nodes) == docs
    # a JSON round trip through LlamaIndex's own serialisation keeps everything
    restored = [TextNode.model_validate_json(n.model_dump_json()) for n in nodes]
    assert nodes_to_documents(restored) == docs


def test_llama_documents_round_trip():
    from llama_index.core.schema import Document as LlamaDocument

    docs = [
        CorpusDocument("a", "Body A.", title="Title A"),
        CorpusDocument("b", "Body B.", metadata={"k": "v"}),
    ]
    llama_docs = documents_to_llama(docs)
    assert all(isinstance(d, LlamaDocument) for d in llama_docs)
    assert [d.id_ for d in llama_docs] == ["a", "b"]
    assert nodes_to_documents(llama_docs) == docs


def test_nodes_to_documents_from_foreign_nodes():
    from llama_index.core.schema import TextNode

    node = TextNode(id_="n1", text="hello", metadata={"title": 3, "file": "f.txt"})
    (doc,) = nodes_to_documents([node])
    assert doc == CorpusDocument("n1", "hello", metadata={"title": 3, "file": "f.txt"})
    with pytest.raises(ValueError, match="Duplicate node id 'n1'"):
        nodes_to_documents([node, node])
    with pytest.raises(ValueError, match="not a LlamaIndex text node"):
        nodes_to_documents(["plain string"])


def test_documents_to_nodes_rejects_duplicates_and_title_clash():
    with pytest.raises(ValueError, match="Duplicate document ids: 'a'"):
        documents_to_nodes([CorpusDocument("a", "x"), CorpusDocument("a", "y")])
    with pytest.raises(ValueError, match="metadata key 'title'"):
        documents_to_nodes([CorpusDocument("a", "x", metadata={"title": "t"})])


# -- EmbeddingQAFinetuneDataset JSON -------------------------------------------------------------------------


def test_qa_finetune_json_format_and_round_trip(tmp_path, small_dataset):
    path = tmp_path / "qa.json"
    save_qa_finetune_json(small_dataset, path)
    payload = json.loads(path.read_text(encoding="utf-8"))
    assert set(payload) == {"queries", "corpus", "relevant_docs", "mode"}
    assert payload["mode"] == "text"
    assert payload["relevant_docs"]["q2"] == ["d4", "d7"]
    assert payload["corpus"]["d0"] == small_dataset.corpus["d0"].full_text
    loaded = load_qa_finetune_json(path)
    assert loaded.queries == small_dataset.queries
    assert loaded.qrels == small_dataset.qrels
    assert loaded.texts == small_dataset.texts  # titles are folded into the text
    assert loaded.name == "qa"


def test_qa_finetune_json_matches_llamaindex_pydantic_model(tmp_path, small_dataset):
    """The file validates against a field-for-field copy of LlamaIndex's EmbeddingQAFinetuneDataset."""
    from pydantic import BaseModel

    class EmbeddingQAFinetuneDataset(BaseModel):  # llama_index.finetuning.embeddings.common (0.4.x)
        queries: dict[str, str]
        corpus: dict[str, str]
        relevant_docs: dict[str, list[str]]
        mode: str = "text"

    path = tmp_path / "qa.json"
    save_qa_finetune_json(small_dataset, path)
    model = EmbeddingQAFinetuneDataset.model_validate_json(path.read_text(encoding="utf-8"))
    # what its SentenceTransformersFinetuneEngine does with it: the first relevant doc of every query
    for query_id in model.queries:
        assert model.corpus[model.relevant_docs[query_id][0]]


def test_qa_finetune_json_drops_unjudged_queries_with_warning(tmp_path, caplog):
    corpus = {"a": CorpusDocument("a", "t")}
    ds = RetrievalDataset(corpus, {"q1": "x", "q2": "y"}, {"q1": {"a": 1}})
    with caplog.at_level("WARNING"):
        save_qa_finetune_json(ds, tmp_path / "qa.json")
    assert "1 of 2 queries" in caplog.text
    assert list(load_qa_finetune_json(tmp_path / "qa.json").queries) == ["q1"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{broken", "malformed JSON"),
        ("[]", "expected a JSON object"),
        (json.dumps({"queries": {}, "corpus": {}}), r"missing key\(s\) 'relevant_docs'"),
        (
            json.dumps({"queries": {}, "corpus": {"a": "t"}, "relevant_docs": {}, "mode": "image"}),
            "only mode 'text'",
        ),
        (
            json.dumps({"queries": {}, "corpus": {"a": 1}, "relevant_docs": {}}),
            "corpus texts must be strings",
        ),
        (
            json.dumps({"queries": {"q": "x"}, "corpus": {"a": "t"}, "relevant_docs": {"q": "a"}}),
            "must be lists",
        ),
        (
            json.dumps({"queries": {"q": "x"}, "corpus": {"a": "t"}, "relevant_docs": {"q": ["b"]}}),
            "not in its corpus: 'b'",
        ),
    ],
)
def test_load_qa_finetune_json_bad_input(tmp_path, content, match):
    path = tmp_path / "qa.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_qa_finetune_json(path)


# -- bundled demo corpus -------------------------------------------------------------------------------------


def test_demo_dataset_contents(demo_dataset):
    assert demo_dataset.name == "scifact_demo"
    assert 600 <= len(demo_dataset.corpus) <= 1500
    assert len(demo_dataset.queries) == 300
    assert demo_dataset.n_judgments == 339
    assert all(doc.text and doc.title for doc in demo_dataset.documents)
    train = load_demo_dataset(split="train")
    assert set(train.queries).isdisjoint(demo_dataset.queries)
    assert train.corpus.keys() == demo_dataset.corpus.keys()


def test_demo_corpus_ships_licence_and_is_small(demo_dataset_dir):
    licence = (demo_dataset_dir / "LICENSE.md").read_text(encoding="utf-8")
    assert "CC BY 4.0" in licence and "ODC-By 1.0" in licence and "Wadden" in licence
    assert (demo_dataset_dir / "README.md").is_file()
    size = sum(p.stat().st_size for p in demo_dataset_dir.rglob("*") if p.is_file())
    assert size < 1_500_000


def test_demo_corpus_found_through_importlib_resources_in_a_fresh_process():
    code = "from heal_rag.datasets import demo_corpus_path; print(demo_corpus_path())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    path = Path(out.stdout.strip())
    assert path == demo_corpus_path()
    assert (path / "qrels" / "test.tsv").is_file()


@pytest.mark.data
def test_demo_corpus_is_an_exact_subset_of_scifact(scifact_dir, demo_dataset):
    full = load_beir(scifact_dir, split="test")
    assert demo_dataset.queries == full.queries
    assert demo_dataset.qrels == full.qrels
    for doc_id, doc in demo_dataset.corpus.items():
        assert full.corpus[doc_id] == doc


def test_empty_documents_stay_in_the_corpus_but_are_never_indexed(small_dataset):
    from heal_rag.datasets import CorpusDocument, RetrievalDataset
    from heal_rag.evaluation.retrieval import bm25_run, dense_run

    corpus = dict(small_dataset.corpus, e1=CorpusDocument("e1", ""), e2=CorpusDocument("e2", "  ", title=""))
    qrels = dict(small_dataset.qrels, q0={"d1": 1, "e1": 1})  # the collection judges an empty document
    dataset = RetrievalDataset(corpus=corpus, queries=small_dataset.queries, qrels=qrels, name="untidy")
    assert dataset.empty_doc_ids == ["e1", "e2"] and "e1" in dataset.corpus
    assert [n.node_id for n in dataset.to_nodes()] == list(small_dataset.corpus)
    run = bm25_run(dataset, k=len(corpus)).run  # k above the corpus size: every indexed document is ranked
    assert all("e1" not in ranking and "e2" not in ranking for ranking in run.values())
    dense = dense_run("default", dataset, k=len(corpus), device="cpu").run  # an empty text is never embedded
    assert all(len(ranking) == 12 and "e1" not in ranking for ranking in dense.values())
