"""HEALFinetuneEngine and ``heal-rag finetune``: tiny end-to-end runs, flat vs HEAL, bad input.

The end-to-end runs train the bundled all-MiniLM-L6-v2 for 2 steps (batch 8, 64 tokens) on 40 abstracts of the
bundled demo corpus, then load the saved directory back and embed with it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.schema import MetadataMode

from heal_rag.cli import main
from heal_rag.datasets import CorpusDocument, documents_to_nodes, load_demo_dataset
from heal_rag.errors import NotFittedError
from heal_rag.hierarchy import HNMFk
from heal_rag.model_dir import CONFIG_FILE, HIERARCHY_DIR
from heal_rag.training import HEALFinetuneEngine, HEALTrainingArguments, TrainingPair, load_model_dir

# A 2-level tree even on 40 documents: threshold -1 accepts any k (the default keeps so few in one topic).
HNMFK_PARAMS = dict(
    depth=2,
    k_range=(2, 3),
    min_topic_size=4,
    min_df=1,
    stability_threshold=-1.0,
    n_perturbations=2,
    show_progress=False,
)
TINY_TRAINING = dict(max_steps=2, batch_size=8, max_seq_length=64, device="cpu", show_progress=False)


def tiny_documents(n: int = 40) -> list[CorpusDocument]:
    """Fresh copies (the engine writes topic paths into metadata) of the first ``n`` demo abstracts."""
    docs = load_demo_dataset(split=None).documents[:n]
    return [dataclasses.replace(d, metadata=dict(d.metadata)) for d in docs]


class QuestionLLM(CustomLLM):
    """Deterministic LlamaIndex LLM stand-in: asks about the first five words of the passage, or fails."""

    mode: str = "good"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=f"question-{self.mode}")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.mode == "raise":
            raise ConnectionError("server unreachable")
        if self.mode == "garbage":
            return CompletionResponse(text="Sure! Here are the questions:\n\n1. ?\n2. ok")
        passage = prompt.split("---------------------")[1].split()
        return CompletionResponse(text=f"1. What does the study of {' '.join(passage[:5])} report?")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):
        raise NotImplementedError


@pytest.fixture(scope="module")
def heal_run(tmp_path_factory):
    """One HEAL fine-tune on LlamaIndex nodes with pseudo-queries; one evaluation query overlaps a title."""
    documents = tiny_documents()
    nodes = documents_to_nodes(documents)
    for node, document in zip(nodes, documents, strict=True):
        node.metadata["full_text"] = document.full_text  # what LlamaIndex must keep embedding
        node.excluded_embed_metadata_keys.append("full_text")
        node.excluded_llm_metadata_keys.append("full_text")
    out = tmp_path_factory.mktemp("heal") / "model"
    eval_queries = {"q1": nodes[3].metadata["title"].upper() + " ", "q2": "an unrelated evaluation claim"}
    engine = HEALFinetuneEngine.from_nodes(
        nodes,
        output_dir=out,
        hierarchy=HNMFK_PARAMS,
        queries="pseudo",
        eval_queries=eval_queries,
        **TINY_TRAINING,
    )
    engine.finetune()
    return engine, nodes, out


def test_heal_end_to_end_saves_a_directory_that_loads_and_embeds(heal_run):
    engine, nodes, out = heal_run
    saved = load_model_dir(out)
    assert saved.hierarchy is not None and saved.hierarchy.n_levels == 2
    assert saved.hierarchy.fingerprint == engine.hierarchy_.fingerprint
    assert saved.hierarchy.doc_ids == [n.node_id for n in nodes]
    config = saved.config
    assert config["use_hierarchy"] is True and config["training"]["seed"] == 0
    # the training block is the engine's settings object, and reads back as the same settings
    assert HEALTrainingArguments.from_dict(config["training"]) == engine.args
    metrics = config["metrics"]
    assert metrics["steps"] == 2 and metrics["samples_per_second"] > 0 and metrics["training_wall_time_s"] > 0
    assert metrics["pair_sources"] == {"pseudo-title": 39}
    assert metrics["dropped_eval_overlap"] == 1  # the title that is also an evaluation query
    assert {"level_0", "level_1", "document"} <= set(metrics["loss_history"][0])
    assert config["versions"]["sentence-transformers"]
    assert not any(p.query == nodes[3].metadata["title"] for p in engine.training_pairs_)

    model = saved.load_model(device="cpu")
    texts = ["Vitamin D and bone density", "gene expression in mice"]
    embeddings = model.encode(texts, normalize_embeddings=True)
    assert embeddings.shape == (2, 384) and np.all(np.isfinite(embeddings))
    from sentence_transformers import SentenceTransformer

    from heal_rag._models import default_model_path

    base = SentenceTransformer(default_model_path(), device="cpu").encode(texts, normalize_embeddings=True)
    assert not np.allclose(base, embeddings, atol=1e-4)  # training changed the weights


def test_heal_writes_topic_paths_into_copies_of_the_nodes(heal_run):
    engine, nodes, _ = heal_run
    hierarchy = engine.hierarchy_
    # the caller's nodes are left as they were; the engine's copies carry the paths
    assert not any(key.startswith("heal_") for node in nodes for key in node.metadata)
    assert [n.node_id for n in engine.documents_] == [n.node_id for n in nodes]
    assert all(copy is not node for copy, node in zip(engine.documents_, nodes, strict=True))
    for row, node in enumerate(engine.documents_):
        assert node.metadata["heal_hierarchy"] == hierarchy.fingerprint
        path = [int(t) for t in hierarchy.paths[row]]
        assert node.metadata["heal_path"] == "/".join(map(str, path))
        assert [node.metadata["heal_topic_l0"], node.metadata["heal_topic_l1"]] == path
        for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
            assert {"heal_path", "heal_topic_l0", "heal_topic_l1"} <= set(keys)
        # the paths are hidden: the embedding and LLM texts are exactly the document's title and text
        assert node.get_content(metadata_mode=MetadataMode.EMBED) == node.metadata["full_text"]
        assert node.get_content(metadata_mode=MetadataMode.LLM) == node.metadata["full_text"]


def test_get_finetuned_model_returns_a_llamaindex_embedding(heal_run):
    engine, _, out = heal_run
    embed_model = engine.get_finetuned_model(device="cpu")
    if isinstance(embed_model, str):  # the LlamaIndex integration is not importable: the saved path
        assert Path(embed_model) == out
    else:
        from llama_index.core.base.embeddings.base import BaseEmbedding

        assert isinstance(embed_model, BaseEmbedding)
        assert len(embed_model.get_query_embedding("bone density")) == 384


def test_flat_baseline_with_llm_questions(tmp_path):
    docs = tiny_documents(24)
    out = tmp_path / "flat"
    engine = HEALFinetuneEngine(
        docs,
        output_dir=out,
        use_hierarchy=False,
        queries=QuestionLLM(),
        query_cache_path=tmp_path / "questions.jsonl",
        **TINY_TRAINING,
    )
    engine.finetune()
    saved = load_model_dir(out)
    assert saved.hierarchy is None and not (out / HIERARCHY_DIR).exists()
    assert saved.config["use_hierarchy"] is False and saved.config["hierarchy"] is None
    assert set(saved.config["metrics"]["loss_history"][0]) >= {"loss", "document"}
    assert not any(k.startswith("level_") for k in saved.config["metrics"]["loss_history"][0])
    assert saved.config["metrics"]["pair_sources"] == {"llm": 24}
    assert engine.training_pairs_[0].query.startswith("What does the study of")
    assert len((tmp_path / "questions.jsonl").read_text().splitlines()) == 24
    assert all("heal_path" not in d.metadata for d in docs)  # no hierarchy, no paths
    assert saved.load_model(device="cpu").encode(["a query"]).shape == (1, 384)


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_corpus():
    with pytest.raises(ValueError, match="corpus is empty"):
        HEALFinetuneEngine([], output_dir="unused")
    with pytest.raises(ValueError, match="None of the 2 documents has any text"):
        HEALFinetuneEngine([CorpusDocument("a", ""), CorpusDocument("b", "  ")], output_dir="unused")
    with pytest.raises(ValueError, match="Only 1 of 2 documents have text.*'b'"):
        HEALFinetuneEngine([CorpusDocument("a", "text"), CorpusDocument("b", "")], output_dir="unused")
    with pytest.raises(ValueError, match="unique; duplicated: 'a'"):
        HEALFinetuneEngine([CorpusDocument("a", "one"), CorpusDocument("a", "two")], output_dir="unused")
    with pytest.raises(ValueError, match="Cannot read the corpus"):
        HEALFinetuneEngine([3.14], output_dir="unused")


def test_queries_pointing_to_unknown_documents(small_dataset, tmp_path):
    docs = small_dataset.documents
    with pytest.raises(ValueError, match="1 training pairs point to 1 document.*'nope'"):
        HEALFinetuneEngine(docs, output_dir=tmp_path / "m", queries=[TrainingPair("q text", "nope")])
    other = small_dataset.subset(["q0"])
    with pytest.raises(ValueError, match="not in the corpus.*'d1'"):
        HEALFinetuneEngine(docs[2:], output_dir=tmp_path / "m", queries=other)
    with pytest.raises(TypeError, match="queries must be"):
        HEALFinetuneEngine(docs, output_dir=tmp_path / "m", queries=42)
    with pytest.raises(ValueError, match="Got the string 'psuedo'"):
        HEALFinetuneEngine(docs, output_dir=tmp_path / "m", queries="psuedo")


def test_hierarchy_that_does_not_match_the_corpus(small_dataset, small_texts, tmp_path):
    hierarchy = HNMFk(**HNMFK_PARAMS).fit(small_texts).hierarchy_  # ids "0".."11", not "d0".."d11"
    with pytest.raises(ValueError, match="hierarchy does not match the corpus.*'d0'"):
        HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m", hierarchy=hierarchy)
    fitted = HNMFk(**HNMFK_PARAMS).fit(small_texts, doc_ids=small_dataset.doc_ids).hierarchy_
    with pytest.raises(ValueError, match="covers 12 documents, the corpus has 11"):
        HEALFinetuneEngine(small_dataset.documents[:11], output_dir=tmp_path / "m", hierarchy=fitted)
    with pytest.raises(TypeError, match="hierarchy must be"):
        HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m", hierarchy="tree.json")
    # the matching hierarchy is accepted
    HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m", hierarchy=fitted)


def test_batch_size_too_small_for_the_sampler(small_dataset, tmp_path):
    engine = HEALFinetuneEngine(
        small_dataset.documents,
        output_dir=tmp_path / "m",
        hierarchy=HNMFK_PARAMS,
        batch_size=4,
        queries="pseudo",
        # 3 documents per leaf x 2 leaves need batch_size >= 6 whatever the tree's shape (the number of
        # level-0 topics HNMFk finds on 12 documents depends on the BLAS build)
        sampler_kwargs={"docs_per_leaf": 3},
        show_progress=False,
    )
    with pytest.raises(ValueError, match="batch sampler refuses.*batch_size=4 is too small"):
        engine.finetune()
    assert not (tmp_path / "m").exists()
    with pytest.raises(ValueError, match="batch_size.*>= 2"):
        HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m", batch_size=1)


def test_failing_or_garbage_llm_stops_before_training(small_dataset, tmp_path):
    for mode, message in (("raise", "server unreachable"), ("garbage", "unusable answers")):
        engine = HEALFinetuneEngine(
            small_dataset.documents,
            output_dir=tmp_path / "m",
            use_hierarchy=False,
            queries=QuestionLLM(mode=mode),
            llm_kwargs={"max_retries": 0},
            show_progress=False,
        )
        with pytest.raises(RuntimeError, match=message):
            engine.finetune()


def test_eval_overlap_can_be_refused(small_dataset, tmp_path):
    pairs = [TrainingPair("What raises blood pressure?", "d1"), TrainingPair("Another query", "d2")]
    engine = HEALFinetuneEngine(
        small_dataset.documents,
        output_dir=tmp_path / "m",
        use_hierarchy=False,
        queries=pairs,
        eval_queries=small_dataset,
        on_eval_overlap="raise",
    )
    with pytest.raises(ValueError, match="also evaluation queries"):
        engine.finetune()
    engine.args = engine.args.replace(on_eval_overlap="drop")
    engine.queries = pairs[:1]
    with pytest.raises(ValueError, match="Only 0 training pair"):
        engine.finetune()


def test_devices_and_parameters(small_dataset, tmp_path):
    docs = small_dataset.documents
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            HEALFinetuneEngine(docs, output_dir=tmp_path / "m", device="cuda")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            HEALFinetuneEngine(docs, output_dir=tmp_path / "m", device="cuda:999")
    with pytest.raises(ValueError, match="device must be"):
        HEALFinetuneEngine(docs, output_dir=tmp_path / "m", device="tpu")
    for bad in (dict(epochs=0), dict(temperature=0.0), dict(learning_rate=2), dict(max_steps=0)):
        with pytest.raises(ValueError, match=f"'{next(iter(bad))}' parameter"):
            HEALFinetuneEngine(docs, output_dir=tmp_path / "m", **bad)
    with pytest.raises(NotFittedError, match="call finetune") as caught:
        HEALFinetuneEngine(docs, output_dir=tmp_path / "m").get_finetuned_model()
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AttributeError)


def test_output_directory_holding_another_model(heal_run, small_dataset):
    _, _, out = heal_run
    before = (out / CONFIG_FILE).read_text()
    with pytest.raises(FileExistsError, match="already holds a HEAL model.*overwrite=True"):
        HEALFinetuneEngine(small_dataset.documents, output_dir=out)
    assert (out / CONFIG_FILE).read_text() == before


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def tiny_beir(tmp_path) -> Path:
    """40 demo abstracts as a BEIR folder with train and test splits; one train query is also a test query."""
    docs = tiny_documents()
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for d in docs:
            handle.write(json.dumps({"_id": d.id, "title": d.title, "text": d.text}) + "\n")
    queries = {f"tr{i}": f"training question number {i} about {docs[i].title}" for i in range(16)}
    queries["te0"] = queries["tr0"].upper()  # the same text as a training query, differently cased
    queries["te1"] = "a test claim about something else"
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"tr{i}\t{docs[i].id}\t1\n" for i in range(16))
    )
    (folder / "qrels" / "test.tsv").write_text(
        f"query-id\tcorpus-id\tscore\nte0\t{docs[0].id}\t1\nte1\t{docs[1].id}\t1\n"
    )
    return folder


@pytest.mark.filterwarnings("ignore:HNMFk did not split")  # HNMFk defaults keep 40 abstracts in one topic
def test_cli_finetune_on_train_qrels(tiny_beir, tmp_path, capsys):
    out = tmp_path / "cli-model"
    argv = [
        "-q",
        "finetune",
        str(tiny_beir),
        "--out",
        str(out),
        "--train-qrels",
        "train",
        "--max-steps",
        "2",
        "--batch-size",
        "8",
        "--max-seq-length",
        "64",
        "--seed",
        "3",
        "--depth",
        "2",
        "--k-max",
        "3",
        "--min-topic-size",
        "4",
        "--level-weights",
        "uniform",
        "--device",
        "cpu",
        "--export",
        "onnx-int8",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "Fine-tuned (HEAL) on 15 pairs" in printed and "1 pair(s) dropped as test queries" in printed
    # --export: the trained weights, exported where HEALEmbedding(backend="onnx") looks for them
    assert "onnx/model_qint8.onnx" in printed
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "model_qint8.onnx").is_file()
    saved = load_model_dir(out)
    assert saved.hierarchy is not None
    assert saved.config["training"]["seed"] == 3 and saved.config["training"]["level_weights"] == "uniform"
    assert saved.config["metrics"]["steps"] == 2
    assert saved.load_model(device="cpu").encode(["x"]).shape == (1, 384)
    # a second run into the same directory is refused without --overwrite
    assert main(argv) == 2
    assert "already holds a HEAL model" in capsys.readouterr().err


def test_cli_finetune_bad_input(tiny_beir, tmp_path, capsys):
    out = str(tmp_path / "m")
    assert main(["finetune", str(tiny_beir), "--out", out, "--train-qrels", "test"]) == 2
    assert "evaluation split" in capsys.readouterr().err
    assert main(["finetune", str(tiny_beir), "--out", out, "--train-qrels", "dev"]) == 2
    assert "no split 'dev'" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["finetune", str(tiny_beir), "--out", out, "--llm", "no_such_module_xyz:llm"]) == 2
    assert "cannot import module" in capsys.readouterr().err
    assert main(["finetune", str(tiny_beir), "--out", out, "--level-weights", "heavy"]) == 2
    assert "--level-weights" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["finetune", str(tiny_beir), "--out", out, "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_llm_spec_module_name_is_imported(tmp_path, monkeypatch):
    from heal_rag.llms import resolve_llm

    (tmp_path / "my_test_llms.py").write_text(
        "from llama_index.core.llms import MockLLM\nllm = MockLLM()\ndef make():\n    return "
        "MockLLM(max_tokens=3)\nnot_an_llm = 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    llm, description = resolve_llm("my_test_llms:llm")
    assert llm.class_name() == "MockLLM" and description.startswith("MockLLM")
    assert resolve_llm("my_test_llms:make")[0].max_tokens == 3
    with pytest.raises(ValueError, match="--llm my_test_llms:missing: module .* has no attribute"):
        resolve_llm("my_test_llms:missing", what="--llm")
    with pytest.raises(ValueError, match="is not a LlamaIndex LLM"):
        resolve_llm("my_test_llms:not_an_llm")
    with pytest.raises(ValueError, match="must be none, local"):
        resolve_llm("my_test_llms")
    sys.modules.pop("my_test_llms", None)


def test_alternative_constructors(tiny_beir, tmp_path):
    from llama_index.core import SummaryIndex

    nodes = documents_to_nodes(tiny_documents(12))
    engine = HEALFinetuneEngine.from_index(SummaryIndex(nodes), output_dir=tmp_path / "m")
    assert sorted(n.node_id for n in engine.documents) == sorted(n.node_id for n in nodes)
    with pytest.raises(ValueError, match="no docstore"):
        HEALFinetuneEngine.from_index(object(), output_dir=tmp_path / "m")

    engine = HEALFinetuneEngine.from_beir(tiny_beir, output_dir=tmp_path / "m")
    assert len(engine.documents) == 40 and set(engine.queries.qrels) == {f"tr{i}" for i in range(16)}
    assert set(engine.eval_queries) == {"te0", "te1"}  # the test split is kept out of training
    engine = HEALFinetuneEngine.from_beir(tiny_beir, train_split=None, output_dir=tmp_path / "m")
    assert engine.queries == "pseudo" and set(engine.eval_queries) == {"te0", "te1"}


def test_training_shows_a_bar_and_logs_losses_instead_of_printing_dicts(
    small_dataset, tmp_path, capfd, caplog
):
    import logging

    from heal_rag.training.engine import LOSS_LOGGER

    engine = HEALFinetuneEngine(
        small_dataset.documents,
        output_dir=tmp_path / "m",
        use_hierarchy=False,
        queries="pseudo",
        **{**TINY_TRAINING, "show_progress": True},
    )
    with caplog.at_level(logging.INFO, logger=LOSS_LOGGER):
        engine.finetune()
    printed = capfd.readouterr()
    assert "{'loss'" not in printed.out + printed.err and "'train_runtime'" not in printed.out + printed.err
    assert "2/2" in printed.err  # the training progress bar itself is still there
    lines = [r.getMessage() for r in caplog.records if r.name == LOSS_LOGGER]
    assert lines and lines[0].startswith("step 1/2: loss ")


@pytest.mark.parametrize("source", ["tree", "mined"])
def test_hard_negatives_train_and_are_recorded(source, tmp_path):
    """Each pair gets one negative column; the loss sees it (3 text columns) and the config records it."""
    documents = tiny_documents()
    engine = HEALFinetuneEngine(
        documents,
        output_dir=tmp_path / "model",
        hierarchy=HNMFK_PARAMS,
        queries="pseudo",
        hard_negatives=source,
        **TINY_TRAINING,
    )
    engine.finetune()
    counts = engine.metrics_["hard_negatives"]
    assert sum(counts.values()) == engine.metrics_["n_pairs"]
    if source == "tree":
        assert counts["random"] == 0  # 40 documents in a 2-level tree: every pair finds a topic negative
    config = load_model_dir(tmp_path / "model").config
    assert config["training"]["hard_negatives"] == source


def test_tree_negatives_need_the_hierarchy(tmp_path):
    with pytest.raises(ValueError, match="needs use_hierarchy=True"):
        HEALFinetuneEngine(tiny_documents(), output_dir=tmp_path, use_hierarchy=False, hard_negatives="tree")
    with pytest.raises(ValueError, match="'hard_negatives' parameter must be one of"):
        HEALFinetuneEngine(tiny_documents(), output_dir=tmp_path, hard_negatives="bm25")


def test_dev_set_evaluates_each_epoch_and_keeps_the_best(tmp_path):
    """Two epochs with a dev set: two dev scores are recorded, the best epoch is kept, dev queries unused."""
    from heal_rag.datasets import RetrievalDataset

    documents = tiny_documents()
    corpus = {d.id: d for d in documents}
    # dev queries are the titles of 5 documents: they must be dropped from the pseudo-query pairs
    dev = RetrievalDataset(
        corpus,
        {f"q{i}": documents[i].title for i in range(5)},
        {f"q{i}": {documents[i].id: 1} for i in range(5)},
        name="dev",
    )
    training = {**TINY_TRAINING, "max_steps": None, "epochs": 2}
    engine = HEALFinetuneEngine(
        documents, output_dir=tmp_path / "m", use_hierarchy=False, queries="pseudo", dev_set=dev, **training
    )
    engine.finetune()
    history = engine.metrics_["dev_history"]
    assert [round(e["epoch"]) for e in history] == [1, 2]
    assert engine.metrics_["best_epoch"] == max(history, key=lambda e: e["ndcg@10"])["epoch"]
    assert engine.metrics_["dropped_dev_overlap"] >= 5
    assert all(
        p.query.strip().lower() not in {d.title.lower() for d in documents[:5]}
        for p in engine.training_pairs_
    )
    with pytest.raises(TypeError, match="dev_set must be a RetrievalDataset"):
        HEALFinetuneEngine(documents, output_dir=tmp_path / "x", dev_set={"q": "text"})


def test_empty_documents_are_left_out_of_clustering_and_training_with_one_warning(
    small_texts, caplog, tmp_path
):
    from heal_rag.datasets import CorpusDocument
    from heal_rag.hierarchy import HNMFk
    from heal_rag.training.queries import TrainingPair

    docs = [CorpusDocument(f"d{i}", t) for i, t in enumerate(small_texts)] + [
        CorpusDocument("e1", ""),
        CorpusDocument("e2", " "),
    ]
    with pytest.warns(UserWarning, match="2 of 14 documents have no text"):
        hierarchy = (
            HNMFk(depth=1, k_range=(2, 3), min_topic_size=2, min_df=1, show_progress=False)
            .fit([d.full_text for d in docs], doc_ids=[d.id for d in docs])
            .hierarchy_
        )
    pairs = [TrainingPair(query=f"question {i}", doc_id=f"d{i}") for i in range(12)]
    pairs.append(TrainingPair(query="a question judged on an empty document", doc_id="e1"))
    with caplog.at_level("WARNING", logger="heal_rag"):
        engine = HEALFinetuneEngine(docs, hierarchy=hierarchy, queries=pairs, output_dir=tmp_path / "m")
    assert caplog.text.count("have no text") == 1 and "2 of 14 documents" in caplog.text
    assert "'e1'" in caplog.text and "'e2'" in caplog.text
    assert engine.empty_document_ids_ == ["e1", "e2"]
    assert [d.id for d in engine.documents] == [f"d{i}" for i in range(12)]
    caplog.clear()
    with caplog.at_level("WARNING", logger="heal_rag"):
        kept, _ = engine._make_pairs()
    assert [p.doc_id for p in kept] == [f"d{i}" for i in range(12)]
    assert "1 training pair(s) point to documents without text" in caplog.text


def test_get_finetuned_model_string_fallback_is_deprecated(small_dataset, tmp_path, monkeypatch):
    engine = HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m")
    engine.model_dir_ = tmp_path / "m"  # as after finetune(); the integration then cannot be imported
    monkeypatch.setitem(sys.modules, "heal_rag.integrations.embedding", None)
    with pytest.warns(DeprecationWarning, match="model_dir_"):
        assert engine.get_finetuned_model() == str(tmp_path / "m")


def test_engine_takes_an_arguments_object_and_keyword_overrides(small_dataset, tmp_path):
    base = HEALTrainingArguments(epochs=2, hard_negatives="none", seed=5)
    engine = HEALFinetuneEngine(small_dataset.documents, args=base, output_dir=tmp_path / "m", epochs=3)
    assert engine.args == base.replace(epochs=3) and base.epochs == 2  # the caller's object is not changed
    with pytest.raises(TypeError, match="args must be a HEALTrainingArguments"):
        HEALFinetuneEngine(small_dataset.documents, args={"epochs": 2}, output_dir=tmp_path / "m")
    with pytest.raises(TypeError, match="Unknown training setting.*'learnin_rate'"):
        HEALFinetuneEngine(small_dataset.documents, output_dir=tmp_path / "m", learnin_rate=1e-4)


def test_from_beir_refuses_to_train_on_the_evaluation_split(tiny_beir, tmp_path):
    # before, from_beir(train_split="test") skipped the exclusion silently and trained on the test queries
    with pytest.raises(ValueError, match="train_split 'test' is the evaluation split"):
        HEALFinetuneEngine.from_beir(tiny_beir, train_split="test", output_dir=tmp_path / "m")
    assert main(["finetune", str(tiny_beir), "--out", str(tmp_path / "m"), "--train-qrels", "test"]) == 2
