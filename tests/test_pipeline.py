"""The end-to-end pipeline (heal_rag.pipeline.run_pipeline) on a tiny slice of the bundled corpus."""

from __future__ import annotations

import json
import math
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


def test_pipeline_writes_the_three_reports_with_both_configurations(first_run):
    out, result, steps = first_run
    assert steps == ["hierarchy", "finetune", "index", "evaluation"]
    assert {p.name for p in result.reports.values()} == {"report.md", "report.html", "report.json"}
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["configurations"]) == {"base", "heal"}
    for name in ("base", "heal"):
        for metric in RETRIEVAL_METRICS:
            value = report["configurations"][name][metric]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (name, metric, value)
    assert len(report["question_ids"]) == 10
    # paired comparisons of heal against base, with p-values
    assert any(
        c["a"] == "base" and c["b"] == "heal" and 0 <= c["p_value"] <= 1 for c in report["comparisons"]
    )
    # the two configurations really are two different models
    described = report["config"]["configurations"]
    assert described["base"]["weights"] != described["heal"]["weights"]
    assert report["hierarchy"]["n_documents"] == 60
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<table id='metrics'>" in html and ">heal<" in html and ">base<" in html and "topic-tree" in html
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "| ndcg@10 ↑ |" in markdown
    # no LLM: generation is off and the report says how to turn it on
    assert "ungrounded_answers" not in report["configurations"]["heal"]
    assert any("--llm local" in note for note in report["notes"])
    assert described["base"]["model"] == "all-MiniLM-L6-v2 (bundled copy)"
    # the model and the state of the run are in the folder
    assert (out / "heal-model" / "heal_config.json").is_file()
    state = json.loads((out / STATE_FILE).read_text(encoding="utf-8"))
    assert state["status"] == "done" and set(state["stages"]) == {"hierarchy", "finetune"}
    assert result.summary_table().splitlines()[0].split() == ["metric", "base", "heal"]


def test_rerun_resumes_unchanged_steps_and_redoes_changed_ones(first_run, tiny_beir):
    out, first, _ = first_run
    weights = json.loads((out / "report.json").read_text(encoding="utf-8"))["config"]["configurations"]
    again = run_pipeline(tiny_beir, out_dir=out, **FAST)
    assert again.reused == ["hierarchy", "finetune"]
    assert again.evaluation.summary == first.evaluation.summary  # same models, same questions, same figures
    # one more training step: the hierarchy is reused, the model and the evaluation are redone (not mixed)
    changed = run_pipeline(tiny_beir, out_dir=out, **{**FAST, "max_steps": 3})
    assert changed.reused == ["hierarchy"]
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


def test_bad_inputs_fail_before_training(tmp_path, tiny_beir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_pipeline(tmp_path / "missing", out_dir=tmp_path / "a", **FAST)
    with pytest.raises(ValueError, match="no qrels split 'dev'"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "b", split="dev", **FAST)
    with pytest.raises(ValueError, match="leak"):
        run_pipeline(tiny_beir, out_dir=tmp_path / "c", train_split="test", **FAST)
    with pytest.raises(ValueError, match="'none', 'local'"):
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
