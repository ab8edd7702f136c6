"""The end-to-end pipeline (heal_rag.pipeline.run_pipeline) on a tiny slice of the bundled corpus."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from heal_rag.datasets import load_demo_dataset
from heal_rag.pipeline import STATE_FILE, run_pipeline

# small enough for a 60-document corpus to split; the plumbing, not the clustering, is tested here
HNMFK = {"depth": 2, "k_range": (2, 4), "min_topic_size": 5, "n_perturbations": 2, "max_iter": 30}
FAST = {
    "hierarchy_params": HNMFK,
    "max_steps": 2,
    "batch_size": 8,
    "max_seq_length": 64,
    "n_resamples": 200,
    "show_progress": False,
}
RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@10", "id_based_context_recall", "non_llm_context_recall")
CONFIGURATIONS = {"bm25", "base", "flat", "heal", "base+bm25", "flat+bm25", "heal+bm25"}


@pytest.fixture(scope="module")
def tiny_beir(tmp_path_factory) -> Path:
    """60 documents of the bundled corpus: those of 10 test claims and of some train claims, as BEIR."""
    test = load_demo_dataset(split="test")
    train = load_demo_dataset(split="train")
    test_q = list(test.qrels)[:10]
    keep = list(dict.fromkeys(d for q in test_q for d in test.relevant(q)))
    train_q = []
    for q in train.qrels:
        docs = train.relevant(q)
        if len(keep) + len([d for d in docs if d not in keep]) > 60:
            continue
        keep += [d for d in docs if d not in keep]
        train_q.append(q)
    keep += [d for d in test.corpus if d not in keep][: 60 - len(keep)]
    folder = tmp_path_factory.mktemp("tiny") / "tiny_beir"
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for d in keep:
            doc = test.corpus[d]
            handle.write(json.dumps({"_id": d, "title": doc.title, "text": doc.text}) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as handle:
        for q in test_q:
            handle.write(json.dumps({"_id": q, "text": test.queries[q]}) + "\n")
        for q in train_q:
            handle.write(json.dumps({"_id": q, "text": train.queries[q]}) + "\n")
    for split, ids, data in (("test", test_q, test), ("train", train_q, train)):
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as handle:
            handle.write("query-id\tcorpus-id\tscore\n")
            handle.writelines(f"{q}\t{d}\t1\n" for q in ids for d in data.relevant(q))
    return folder


@pytest.fixture(scope="module")
def first_run(tiny_beir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    steps: list[str] = []
    result = run_pipeline(tiny_beir, out_dir=out, on_step=lambda step, _: steps.append(step), **FAST)
    return out, result, steps


def test_pipeline_writes_the_three_reports_with_every_configuration(first_run):
    out, result, steps = first_run
    assert steps == ["hierarchy", "finetune", "finetune_flat", "index", "evaluation"]
    assert {p.name for p in result.reports.values()} == {"report.md", "report.html", "report.json"}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["configurations"]) == CONFIGURATIONS
    for name in CONFIGURATIONS:
        for metric in RETRIEVAL_METRICS:
            value = report["configurations"][name][metric]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (name, metric, value)
    assert len(report["question_ids"]) == 10
    # the paired tests a user needs, with p-values, on nDCG@10
    tested = {(c["a"], c["b"]) for c in report["comparisons"] if c["metric"] == "ndcg@10"}
    for pair in (("flat", "heal"), ("base", "heal"), ("bm25", "heal"), ("bm25", "heal+bm25")):
        assert pair in tested, pair
    assert all(0 <= c["p_value"] <= 1 for c in report["comparisons"])
    # the verdict line names the winner and its margin over the runner-up, with the p-value of that pair
    means = {c: report["configurations"][c]["ndcg@10"] for c in CONFIGURATIONS}
    ranked = sorted(means.values(), reverse=True)
    if ranked[0] > ranked[1]:
        match = re.match(
            r"Best ndcg@10: (\S+) [0-9.]+, \+[0-9.]+ over (\S+) \(runner-up; paired permutation p = ",
            report["headline"],
        )
        assert match, report["headline"]
        winner, runner_up = match.groups()
        assert means[winner] == ranked[0] and means[runner_up] == ranked[1]
        assert (runner_up, winner) in tested or (winner, runner_up) in tested
    # the three dense configurations really are three different models; flat trained without the tree
    described = report["config"]["configurations"]
    assert len({described[n]["weights"] for n in ("base", "flat", "heal")}) == 3
    assert described["flat"]["hierarchy"] is None and described["heal"]["hierarchy"]
    flat_config = json.loads((out / "flat-model" / "heal_config.json").read_text(encoding="utf-8"))
    heal_config = json.loads((out / "heal-model" / "heal_config.json").read_text(encoding="utf-8"))
    assert flat_config["use_hierarchy"] is False and heal_config["use_hierarchy"] is True
    for key in ("max_steps", "batch_size", "learning_rate", "seed"):
        assert flat_config["training"][key] == heal_config["training"][key], key
    assert flat_config["metrics"]["n_pairs"] == heal_config["metrics"]["n_pairs"]
    assert report["hierarchy"]["n_documents"] == 60
    # the per-topic view: every topic row counts questions and scores each configuration
    assert report["topics"], "no per-topic rows"
    level0 = [row for row in report["topics"] if row["level"] == 0]
    assert sum(row["n_questions"] for row in level0) >= 10  # each question counts in its documents' topics
    assert set(level0[0]["means"]) == CONFIGURATIONS
    html = (out / "report.html").read_text(encoding="utf-8")
    assert (
        "<table id='metrics'>" in html and ">heal+bm25<" in html and ">bm25<" in html and "topic-tree" in html
    )
    assert "<table id='topics'>" in html and "id='headline'" in html
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| ndcg@10 ↑ |" in markdown and "## nDCG@10 by topic" in markdown
    # no LLM: generation is off and the report says how to turn it on
    assert "answers_without_evidence" not in report["configurations"]["heal"]
    assert any("--llm local" in note for note in report["notes"])
    assert described["base"]["model"] == "all-MiniLM-L6-v2 (bundled copy)"
    # the models and the state of the run are in the folder
    assert (out / "heal-model" / "heal_config.json").is_file()
    state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    assert state["status"] == "done" and set(state["stages"]) == {"hierarchy", "finetune", "finetune_flat"}
    assert result.summary_table().splitlines()[0].split() == [
        "metric",
        "bm25",
        "base",
        "flat",
        "heal",
        "base+bm25",
        "flat+bm25",
        "heal+bm25",
    ]


def test_rerun_resumes_unchanged_steps_and_redoes_changed_ones(first_run, tiny_beir):
    out, first, _ = first_run
    weights = json.loads((out / "report.json").read_text(encoding="utf-8"))["config"]["configurations"]
    again = run_pipeline(tiny_beir, out_dir=out, **FAST)
    assert again.reused == ["hierarchy", "finetune", "finetune_flat"]
    assert again.evaluation.summary == first.evaluation.summary  # same models, same questions, same figures
    # one more training step: the hierarchy is reused, the model and the evaluation are redone (not mixed)
    changed = run_pipeline(tiny_beir, out_dir=out, **{**FAST, "max_steps": 3})
    assert changed.reused == ["hierarchy"]  # both fine-tunes redone: they share the training settings
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["config"]["configurations"]["heal"]["weights"] != weights["heal"]["weights"]
    assert report["config"]["configurations"]["base"]["weights"] == weights["base"]["weights"]
    assert len(list((out / "checkpoints").glob("rag-*.jsonl"))) == 1  # the old run's records are gone


def test_jsonl_corpus_uses_held_out_pseudo_queries(tmp_path, tiny_beir):
    corpus = tmp_path / "docs.jsonl"
    lines = (tiny_beir / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_pipeline(corpus, out_dir=tmp_path / "out", max_questions=None, **FAST)
    ids = result.evaluation.question_ids
    assert len(ids) == 12 and all(q.startswith("pseudo-") for q in ids)  # 20 % of 60 documents held out
    assert any("pseudo-queries" in note for note in result.notes)
    assert math.isfinite(result.evaluation.summary["heal"]["ndcg@10"])
    # every report reads its one-run HEAL - flat difference against the study's multi-seed finding
    from heal_rag.pipeline import STUDY_NOTE

    assert STUDY_NOTE in result.notes and "study_heal.md" in (tmp_path / "out" / "report.md").read_text()


def test_bad_inputs_fail_before_training(tmp_path, tiny_beir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_pipeline(tmp_path / "missing", out_dir=tmp_path / "a", **FAST)
    with pytest.raises(ValueError, match="no qrels split 'dev'"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "b", split="dev", **FAST)
    with pytest.raises(ValueError, match="leak"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "c", train_split="test", **FAST)
    with pytest.raises(ValueError, match="must be none, local"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "d", llm="gpt", **FAST)
    with pytest.raises(ValueError, match="Cannot reach the LLM endpoint"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "e", llm="http://127.0.0.1:9/v1", **FAST)
    with pytest.raises(ValueError, match="'max_steps'"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "f", **{**FAST, "max_steps": 0})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(FileExistsError, match="not empty"):
        run_pipeline(tiny_beir, out_dir=foreign, **FAST)
    assert (foreign / "notes.txt").read_text(encoding="utf-8") == "mine"  # never touched
    for name in "abcdef":
        assert not (tmp_path / name / "heal-model").exists()


def test_an_interrupted_run_resumes_after_the_fine_tunes(tiny_beir, tmp_path):
    out = tmp_path / "out"

    def stop_at_index(step, _):
        if step == "index":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_pipeline(tiny_beir, out_dir=out, on_step=stop_at_index, **FAST)
    assert not (out / "report.json").exists()
    resumed = run_pipeline(tiny_beir, out_dir=out, **FAST)
    assert resumed.reused == ["hierarchy", "finetune", "finetune_flat"]  # no training redone
    assert set(resumed.evaluation.summary) == CONFIGURATIONS


def test_without_ragas_the_pipeline_reports_ir_metrics_and_says_what_is_missing(
    tiny_beir, tmp_path, monkeypatch
):
    from heal_rag.evaluation import ragas_metrics

    monkeypatch.setattr(ragas_metrics, "ragas_available", lambda: False)
    result = run_pipeline(tiny_beir, out_dir=tmp_path / "out", **FAST)
    summary = result.evaluation.summary
    assert set(summary) == CONFIGURATIONS
    assert "id_based_context_recall" not in summary["heal"] and 0 <= summary["heal"]["ndcg@10"] <= 1
    assert any('pip install "heal-rag[eval]"' in note for note in result.notes)


def test_a_corpus_of_one_document_is_refused_with_a_clear_message(tmp_path):
    corpus = tmp_path / "one.jsonl"
    corpus.write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "One. Two. Three."}) + "\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="pseudo-queries"):
        run_pipeline(corpus, out_dir=tmp_path / "out", **FAST)
    assert not (tmp_path / "out" / "heal-model").exists()


def test_an_unreadable_corpus_file_is_refused_with_a_clear_message(tmp_path):
    corpus = tmp_path / "broken.jsonl"
    corpus.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00 not json at all")
    with pytest.raises(ValueError, match="broken.jsonl"):
        run_pipeline(corpus, out_dir=tmp_path / "out", **FAST)
    pdf = tmp_path / "paper.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match=r"\.pdf"):
        run_pipeline(pdf, out_dir=tmp_path / "out2", **FAST)


def test_with_a_generator_the_reference_conditions_are_answered_too(first_run, tiny_beir):
    """Any LlamaIndex LLM generates; gold and no-context ground the reading and are never the winner."""
    from llama_index.core.llms import MockLLM

    out = first_run[0]
    result = run_pipeline(
        tiny_beir, out_dir=out, llm=MockLLM(max_tokens=8), max_questions=3, **{**FAST, "max_steps": 3}
    )
    evaluation = result.evaluation
    assert {"gold", "no-context"} <= set(evaluation.configurations)
    assert evaluation.references == ["gold", "no-context"]
    assert evaluation.summary["gold"]["answers_without_evidence"] == 0.0
    assert evaluation.summary["no-context"]["answers_without_evidence"] == 1.0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert not (report["headline"] or "").startswith("Best ndcg@10: gold")
    described = report["config"]["configurations"]
    assert all(described[c]["passage_max_tokens"] == 256 for c in ("gold", "bm25", "heal"))
    assert report["config"]["pipeline"]["passage_max_tokens"] == 256
    with pytest.raises(ValueError, match="passage_max_tokens must be an integer >= 16"):
        run_pipeline(tiny_beir, out_dir=out, llm=MockLLM(), passage_max_tokens=4, **FAST)
