from __future__ import annotations

import json
import math
from html.parser import HTMLParser

import numpy as np
import pytest

from heal_rag.evaluation.rag import RAGEvaluationResult
from heal_rag.evaluation.report import report_dict, summary_table, to_markdown, write_report
from heal_rag.evaluation.stats import bootstrap_ci, compare_configurations

pytest.importorskip("matplotlib")


class _Tree:
    """A minimal object with the Hierarchy display API (format_tree, n_levels, fingerprint)."""

    n_levels = 2
    fingerprint = "abc123"

    def format_tree(self) -> str:
        return "topic 0 [cell, protein]\n  topic 2 [apoptosis]\ntopic 1 [vaccine, trial]"


def _result() -> RAGEvaluationResult:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.7, size=25)
    per_question = {
        "base": {"ndcg@10": base, "answers_without_evidence": (base < 0.4).astype(float)},
        "heal": {"ndcg@10": base + 0.15, "answers_without_evidence": (base < 0.3).astype(float)},
    }
    per_question["heal"]["ndcg@10"][3] = np.nan  # a failed question
    intervals = {
        c: {m: bootstrap_ci(v, n_resamples=500) for m, v in per.items()} for c, per in per_question.items()
    }
    return RAGEvaluationResult(
        question_ids=[f"q{i}" for i in range(25)],
        records={},
        per_question=per_question,
        summary={c: {m: ci.mean for m, ci in per.items()} for c, per in intervals.items()},
        intervals=intervals,
        comparisons=compare_configurations(per_question, n_resamples=500),
        counts={
            c: {
                "questions": 25,
                "retrieval_failures": int(c == "heal"),
                "generation_failures": 0,
                "answered": 25,
                "judge_failures": {},
                "nan": {m: int(np.isnan(v).sum()) for m, v in per_question[c].items()},
            }
            for c in per_question
        },
        notes=["No LLM judge: faithfulness, answer_correctness and answer_relevancy were not computed."],
        config={
            "question_set": "tiny",
            "k": 10,
            "configurations": {"base": {"model": "m"}, "heal": {"model": "h"}},
        },
    )


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.ids: set[str] = set()
        self.images: list[str] = []
        self.stack: list[str] = []
        self.void = {"meta", "img", "br", "link", "hr", "input"}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag not in self.void:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()


def test_write_report_files_are_well_formed(tmp_path):
    result = _result()
    paths = write_report(result, tmp_path / "out", hierarchy=_Tree())
    assert {p.name for p in paths.values()} == {"report.md", "report.html", "report.json"}

    data = json.loads(paths["json"].read_text())
    assert set(data["configurations"]) == {"base", "heal"}
    assert data["configurations"]["base"]["ndcg@10"] == pytest.approx(result.summary["base"]["ndcg@10"])
    assert data["per_question"]["heal"]["ndcg@10"][3] is None  # NaN -> null, valid JSON
    assert {"comparisons", "config", "versions", "counts", "notes", "intervals"} <= set(data)
    assert data["versions"]["ragas"] and data["hierarchy"]["fingerprint"] == "abc123"
    comp = [c for c in data["comparisons"] if c["metric"] == "ndcg@10"][0]
    assert comp["n"] == 24 and comp["diff"] == pytest.approx(0.15) and comp["significant"] is True

    page = paths["html"].read_text()
    parser = _Collector()
    parser.feed(page)
    assert parser.stack == []
    assert {"metrics", "comparisons", "counts", "versions", "topic-tree"} <= parser.ids
    assert len(parser.images) == 2 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "apoptosis" in page and "0.150" in page

    md = paths["md"].read_text()
    assert "| ndcg@10 ↑ |" in md and "| answers_without_evidence ↓ |" in md
    assert "heal − base" in md and "## Topic tree" in md


def test_best_value_respects_metric_direction_and_summary_table():
    result = _result()
    md = to_markdown(result, versions={"x": "1"})
    ungrounded = next(line for line in md.splitlines() if line.startswith("| answers_without_evidence"))
    # lower is better: heal (fewer ungrounded answers) is the bold one
    assert ungrounded.split("|")[3].strip().startswith("**")
    table = summary_table(result)
    assert "base" in table.splitlines()[0] and "heal" in table.splitlines()[0]
    assert any(line.startswith("ndcg@10") and line.rstrip().endswith("*") for line in table.splitlines())
    assert "heal vs base: ndcg@10 +0.150" in table


def test_report_dict_handles_all_nan_metric():
    result = _result()
    result.per_question["base"]["faithfulness"] = np.full(25, np.nan)
    result.intervals["base"]["faithfulness"] = bootstrap_ci(result.per_question["base"]["faithfulness"])
    result.summary["base"]["faithfulness"] = math.nan
    data = report_dict(result, versions={})
    assert data["configurations"]["base"]["faithfulness"] is None
    json.dumps(data, allow_nan=False)
