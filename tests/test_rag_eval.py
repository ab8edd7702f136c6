"""The RAG harness on a tiny real corpus (30 SciFact-demo abstracts) with real LlamaIndex and RAGAS objects.

Stand-ins (allowed by the issue, tests only): a deterministic extractive generator and a rule-based judge,
both
real LlamaIndex ``CustomLLM`` subclasses, so RAGAS runs its own prompts and parsers against them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

pytest.importorskip("ragas")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.base.embeddings.base import BaseEmbedding  # noqa: E402
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata  # noqa: E402
from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from heal_rag.datasets import CorpusDocument, RetrievalDataset, load_demo_dataset  # noqa: E402
from heal_rag.evaluation.pubmedqa import load_pubmedqa  # noqa: E402
from heal_rag.evaluation.rag import (  # noqa: E402
    RAGConfiguration,
    evaluate_rag,
    node_doc_id,
    parse_decision,
)
from heal_rag.evaluation.ragas_metrics import RagasJudge  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_WORD = re.compile(r"[a-z0-9]+")


# ---------------------------------------------------------------------------------------------- fixtures


class MiniLMEmbedding(BaseEmbedding):
    """A small LlamaIndex embedding over the bundled all-MiniLM-L6-v2 (test fixture)."""

    _model: Any = PrivateAttr()

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        from sentence_transformers import SentenceTransformer

        from heal_rag._models import default_model_path

        self._model = SentenceTransformer(default_model_path(), device="cpu")

    def _encode(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True, batch_size=32).tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


class KeywordRetriever(BaseRetriever):
    """Ranks nodes by word overlap with the query (a real, deterministic LlamaIndex retriever)."""

    def __init__(self, nodes: list[TextNode], top_k: int = 5, fail_on: str | None = None) -> None:
        super().__init__()
        self._nodes = nodes
        self._top_k = top_k
        self._fail_on = fail_on

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self._fail_on and self._fail_on in query_bundle.query_str:
            raise RuntimeError("vector store unavailable")
        words = set(_WORD.findall(query_bundle.query_str.lower()))
        scored = [
            (len(words & set(_WORD.findall(n.get_content().lower()))), i) for i, n in enumerate(self._nodes)
        ]
        scored.sort(key=lambda t: (-t[0], t[1]))
        return [NodeWithScore(node=self._nodes[i], score=float(s)) for s, i in scored[: self._top_k]]


class ExtractiveLLM(CustomLLM):
    """Deterministic generator: 'Yes.' plus the first sentence of the first context (test stand-in).

    ``fail_every``: every n-th call raises (an LLM that errors mid-run); ``sleep``: seconds per call.
    """

    fail_every: int = 0
    calls: int = 0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="extractive-stand-in", context_window=100_000, num_output=256)

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise TimeoutError("the LLM timed out")
        context = (
            prompt.split("---------------------\n", 2)[1] if "---------------------\n" in prompt else prompt
        )
        first = re.split(r"(?<=[.!?])\s", context.strip(), maxsplit=1)[0]
        return CompletionResponse(text=f"Yes. {first}")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):  # pragma: no cover
        yield self.complete(prompt, formatted=formatted, **kwargs)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if len(w) > 3}


def _input_json(prompt: str) -> dict[str, Any]:
    body = prompt[prompt.rindex("input: ") + len("input: ") :]
    body = body[: body.rindex("Output:")]
    return json.loads(body)


class RuleJudgeLLM(CustomLLM):
    """Deterministic RAGAS judge (test stand-in): answers RAGAS's own prompts by word overlap.

    A statement is supported when >= 60% of its content words occur in the context / ground truth.
    ``fail_on``: raise for prompts containing this text (a judge that errors on some samples).
    """

    fail_on: str | None = None
    sleep: float = 0.0

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name="rule-judge", context_window=100_000, num_output=512)

    @staticmethod
    def _supported(statement: str, context: str) -> bool:
        words = _content_words(statement)
        return bool(words) and len(words & _content_words(context)) / len(words) >= 0.6

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail_on and self.fail_on in prompt:
            raise ConnectionError("judge endpoint refused the connection")
        data = _input_json(prompt)
        if prompt.startswith("Given a question and an answer"):
            sentences = [s for s in re.split(r"(?<=[.!?])\s+", data["answer"].strip()) if _content_words(s)]
            out: Any = {"statements": sentences}
        elif prompt.startswith("Your task is to judge the faithfulness"):
            out = {
                "statements": [
                    {"statement": s, "reason": "overlap", "verdict": int(self._supported(s, data["context"]))}
                    for s in data["statements"]
                ]
            }
        elif prompt.startswith("Generate a question for the given answer"):
            out = {
                "question": data["response"],
                "noncommittal": int("don't know" in data["response"].lower()),
            }
        elif prompt.startswith("Given a ground truth and an answer"):
            truth = " ".join(data["ground_truth"])
            answer = " ".join(data["answer"])
            tp = [s for s in data["answer"] if self._supported(s, truth)]
            fp = [s for s in data["answer"] if s not in tp]
            fn = [s for s in data["ground_truth"] if not self._supported(s, answer)]
            out = {
                k: [{"statement": s, "reason": "overlap"} for s in v]
                for k, v in {"TP": tp, "FP": fp, "FN": fn}.items()
            }
        else:  # pragma: no cover - a prompt this stand-in does not know
            raise ValueError(f"unexpected prompt: {prompt[:80]!r}")
        return CompletionResponse(text=json.dumps(out))

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any):  # pragma: no cover
        yield self.complete(prompt, formatted=formatted, **kwargs)


@pytest.fixture(scope="module")
def tiny() -> RetrievalDataset:
    """8 questions, 30 documents: their relevant abstracts plus distractors from the bundled demo corpus."""
    demo = load_demo_dataset("test")
    qids = [q for q in demo.queries if demo.relevant(q)][:8]
    doc_ids = list(dict.fromkeys(d for q in qids for d in demo.relevant(q)))
    doc_ids += [d for d in demo.corpus if d not in doc_ids][: 30 - len(doc_ids)]
    return RetrievalDataset(
        corpus={d: demo.corpus[d] for d in doc_ids},
        queries={q: demo.queries[q] for q in qids},
        qrels={q: demo.qrels[q] for q in qids},
        name="tiny",
    )


@pytest.fixture(scope="module")
def embed_model() -> MiniLMEmbedding:
    return MiniLMEmbedding()


@pytest.fixture(scope="module")
def vector_index(tiny: RetrievalDataset, embed_model: MiniLMEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex(tiny.to_nodes(), embed_model=embed_model, show_progress=False)


@pytest.fixture()
def questions(tiny: RetrievalDataset) -> RetrievalDataset:
    # reference answer: the first sentence of the relevant abstract (title included, as the LLM sees it)
    references = {
        q: re.split(r"(?<=[.!?])\s", tiny.corpus[tiny.relevant(q)[0]].full_text, maxsplit=1)[0]
        for q in tiny.queries
    }
    return dataclasses.replace(tiny, references=references).sample_queries()


def _configs(
    tiny: RetrievalDataset, vector_index: VectorStoreIndex, llm: Any = None
) -> list[RAGConfiguration]:
    return [
        RAGConfiguration("keyword", retriever=KeywordRetriever(tiny.to_nodes(), top_k=5), llm=llm),
        RAGConfiguration("dense", retriever=vector_index.as_retriever(similarity_top_k=5), llm=llm),
    ]


# ---------------------------------------------------------------------------------------------- tests


def test_retrieval_only_metrics_match_hand_computation(tiny, vector_index, questions, tmp_path):
    result = evaluate_rag(_configs(tiny, vector_index), questions, k=5, out_dir=tmp_path, n_resamples=500)
    assert result.configurations == ["keyword", "dense"]
    for name in ("keyword", "dense"):
        arrays = result.per_question[name]
        assert {"ndcg@10", "mrr@10", "recall@5", "id_based_context_recall", "non_llm_context_recall"} <= set(
            arrays
        )
        assert "faithfulness" not in arrays and "answers_without_evidence" not in arrays
        for i, q in enumerate(result.question_ids):
            record = result.records[name][q]
            relevant = set(questions.relevant(q))
            retrieved = record["retrieved_ids"]
            # RAGAS ID-based recall and ranx recall@5 agree with a hand count on these rankings
            expected_recall = len(relevant & set(retrieved)) / len(relevant)
            assert arrays["id_based_context_recall"][i] == pytest.approx(expected_recall)
            assert arrays["recall@5"][i] == pytest.approx(expected_recall)
            ranks = [r for r, d in enumerate(retrieved, 1) if d in relevant]
            assert arrays["mrr@10"][i] == pytest.approx(1 / ranks[0] if ranks else 0.0)
            assert arrays["id_based_context_precision"][i] == pytest.approx(
                len(relevant & set(retrieved)) / len(set(retrieved))
            )
        # the relevant abstract itself is retrieved, so the string-similarity recall agrees with the ID one
        assert np.nanmean(arrays["non_llm_context_recall"]) == pytest.approx(
            np.nanmean(arrays["id_based_context_recall"])
        )
    # dense retrieval over MiniLM finds the claims' abstracts for most questions
    assert result.summary["dense"]["recall@5"] >= 0.6
    assert result.comparisons and {c.metric for c in result.comparisons} >= {"ndcg@10", "mrr@10"}
    assert any("No LLM judge" in n for n in result.notes)
    assert result.counts["dense"]["retrieval_failures"] == 0


def test_node_doc_id_convention():
    assert node_doc_id(TextNode(id_="n1", text="x", metadata={"doc_id": "d9"})) == "d9"
    assert node_doc_id(TextNode(id_="n1", text="x", metadata={"_id": "d8"})) == "d8"
    assert node_doc_id(NodeWithScore(node=TextNode(id_="d7", text="x"), score=1.0)) == "d7"
    assert parse_decision("Maybe: the data are mixed") == "maybe"
    assert parse_decision("Not clear") is None


def test_generation_judge_free_and_llm_judge_with_real_ragas_metrics(
    tiny, vector_index, questions, embed_model, tmp_path, monkeypatch
):
    # no OpenAI key, and any OpenAI client construction fails the test: no silent remote fallback
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    import openai

    def _forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an OpenAI client was constructed")

    monkeypatch.setattr(openai.OpenAI, "__init__", _forbidden)
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", _forbidden)

    questions = dataclasses.replace(
        questions, decisions={q: "yes" if i % 2 == 0 else "no" for i, q in enumerate(questions.queries)}
    )
    judge = RagasJudge(RuleJudgeLLM(), embed_model, timeout=30)
    configs = _configs(tiny, vector_index, llm=ExtractiveLLM())
    result = evaluate_rag(configs, questions, judge=judge, k=5, out_dir=tmp_path, n_resamples=500)
    dense = result.per_question["dense"]
    for name in (
        "faithfulness",
        "answer_correctness",
        "answer_relevancy",
        "answers_without_evidence",
        "decision_accuracy",
    ):
        assert name in dense
    # extractive answers copy a context sentence: fully faithful by the rule judge
    assert np.nanmin(dense["faithfulness"]) == pytest.approx(1.0)
    assert result.counts["dense"]["judge_failures"] == {
        "faithfulness": 0,
        "answer_correctness": 0,
        "answer_relevancy": 0,
    }
    # ungrounded = answered from contexts that miss every relevant document (hand check on the records)
    for i, q in enumerate(result.question_ids):
        record = result.records["dense"][q]
        grounded = bool(set(record["generation_ids"]) & set(questions.relevant(q)))
        assert dense["answers_without_evidence"][i] == float(not grounded)
        # every answer starts with "Yes": right exactly on the questions whose gold decision is yes
        assert dense["decision_accuracy"][i] == float(questions.decisions[q] == "yes")
        # answer correctness is high when the answer was drawn from the abstract the reference comes from
        if record["generation_ids"][0] == questions.relevant(q)[0]:
            assert dense["answer_correctness"][i] > 0.5
    assert 0.0 < np.nanmean(dense["answer_relevancy"]) <= 1.0
    assert result.summary["dense"]["decision_accuracy"] == pytest.approx(0.5)


def test_faithfulness_detects_unsupported_answer(embed_model):
    from ragas import SingleTurnSample

    judge = RagasJudge(RuleJudgeLLM(), embed_model, metrics=("faithfulness",), timeout=30)
    context = ["Aspirin irreversibly inhibits cyclooxygenase and lowers fever in adults."]
    good, _ = judge.score(
        SingleTurnSample(
            user_input="q", retrieved_contexts=context, response="Aspirin lowers fever in adults."
        )
    )
    bad, _ = judge.score(
        SingleTurnSample(
            user_input="q", retrieved_contexts=context, response="Statins cure diabetes quickly."
        )
    )
    assert good["faithfulness"] == 1.0 and bad["faithfulness"] == 0.0


def test_llm_errors_and_judge_failures_are_counted_not_fatal(
    tiny, vector_index, questions, embed_model, tmp_path
):
    # the generator times out on every 3rd call; the judge refuses one question's prompts
    first_q = next(iter(questions.queries.values()))
    judge = RagasJudge(
        RuleJudgeLLM(fail_on=first_q), embed_model, metrics=("answer_relevancy",), max_retries=0, timeout=30
    )
    configs = [
        RAGConfiguration(
            "dense", retriever=vector_index.as_retriever(similarity_top_k=5), llm=ExtractiveLLM(fail_every=3)
        )
    ]
    result = evaluate_rag(configs, questions, judge=judge, k=5, out_dir=tmp_path, n_resamples=200)
    counts = result.counts["dense"]
    n = len(questions.queries)
    assert counts["generation_failures"] == n // 3
    assert counts["retrieval_failures"] == 0
    # retrieval metrics survive a generation failure: partial results kept
    assert not np.isnan(result.per_question["dense"]["ndcg@10"]).any()
    failed = [q for q in result.question_ids if "generation" in result.records["dense"][q]["errors"]]
    assert all("timed out" in result.records["dense"][q]["errors"]["generation"] for q in failed)
    # the judge refuses the first question's prompts: counted as a failure (unless its answer failed first)
    relevancy = result.per_question["dense"]["answer_relevancy"]
    assert counts["nan"]["answer_relevancy"] == int(np.isnan(relevancy).sum()) >= len(failed)


def test_judge_timeout_is_counted(embed_model):
    from ragas import SingleTurnSample

    judge = RagasJudge(
        RuleJudgeLLM(sleep=1.5), embed_model, metrics=("answer_relevancy",), timeout=0.2, max_retries=0
    )
    scores, errors = judge.score(
        SingleTurnSample(user_input="q", response="An answer.", retrieved_contexts=["c"])
    )
    assert math.isnan(scores["answer_relevancy"])
    assert "timeout" in errors["answer_relevancy"]


def test_retrieval_failure_is_counted(tiny, questions, tmp_path):
    victim = next(iter(questions.queries.values()))
    configs = [RAGConfiguration("flaky", retriever=KeywordRetriever(tiny.to_nodes(), fail_on=victim))]
    result = evaluate_rag(configs, questions, k=5, n_resamples=200)
    assert result.counts["flaky"]["retrieval_failures"] == 1
    assert np.isnan(result.per_question["flaky"]["ndcg@10"][0])
    assert not np.isnan(result.per_question["flaky"]["ndcg@10"][1:]).any()


def test_questions_without_references_skip_answer_correctness(tiny, vector_index, embed_model, tmp_path):
    questions = tiny.sample_queries()  # no reference answers
    judge = RagasJudge(RuleJudgeLLM(), embed_model, metrics=("answer_correctness",), timeout=30)
    configs = [
        RAGConfiguration(
            "dense", retriever=vector_index.as_retriever(similarity_top_k=3), llm=ExtractiveLLM()
        )
    ]
    result = evaluate_rag(configs, questions, judge=judge, k=3, n_resamples=200)
    assert np.isnan(result.per_question["dense"]["answer_correctness"]).all()
    assert result.counts["dense"]["judge_failures"]["answer_correctness"] == 0  # skipped, not failed
    assert any("no reference answers" in n for n in result.notes)


def test_questions_without_qrels_skip_retrieval_metrics(tiny, tmp_path):
    questions = RetrievalDataset(
        corpus=tiny.corpus,
        queries={"q1": tiny.queries[next(iter(tiny.queries))], "q2": "An unjudged question"},
        qrels={"q1": dict(tiny.qrels[next(iter(tiny.queries))])},
    )
    result = evaluate_rag(
        [RAGConfiguration("kw", retriever=KeywordRetriever(tiny.to_nodes()))], questions, k=5, n_resamples=100
    )
    for values in result.per_question["kw"].values():
        assert np.isnan(values[1]) and not np.isnan(values[0])
    assert any("no relevant document" in n for n in result.notes)


def test_bad_inputs_raise_clear_errors(tiny, vector_index, questions):
    with pytest.raises(ValueError, match="yes, no or maybe"):
        dataclasses.replace(questions, decisions={next(iter(questions.queries)): "perhaps"})
    with pytest.raises(ValueError, match="no questions"):
        evaluate_rag(_configs(tiny, vector_index), RetrievalDataset(tiny.corpus))
    with pytest.raises(TypeError, match="RetrievalDataset"):
        evaluate_rag(_configs(tiny, vector_index), dict(tiny.queries))
    with pytest.raises(ValueError, match="exactly one of retriever= or query_engine="):
        RAGConfiguration("x")
    with pytest.raises(ValueError, match="unique"):
        evaluate_rag(_configs(tiny, vector_index) * 2, questions)
    with pytest.raises(ValueError, match="judge_embeddings"):
        evaluate_rag(_configs(tiny, vector_index), questions, judge=RuleJudgeLLM())
    # an index whose node ids are not the corpus ids (a corpus/index mismatch) fails up front
    foreign = [TextNode(id_=f"other-{i}", text=d.text) for i, d in enumerate(tiny.documents)]
    with pytest.raises(ValueError, match="not in the corpus"):
        evaluate_rag([RAGConfiguration("foreign", retriever=KeywordRetriever(foreign))], questions)


def test_resume_after_interruption_and_clean_start_on_change(tiny, questions, tmp_path, caplog):
    class Interrupting(KeywordRetriever):
        def __init__(self, *args: Any, stop_after: int, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.calls = 0
            self._stop_after = stop_after

        def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
            self.calls += 1
            if self.calls > self._stop_after:
                raise KeyboardInterrupt
            return super()._retrieve(query_bundle)

    nodes = tiny.to_nodes()
    config = RAGConfiguration(
        "kw", retriever=Interrupting(nodes, stop_after=3), description={"model": "kw-v1"}
    )
    with pytest.raises(KeyboardInterrupt):
        evaluate_rag([config], questions, k=5, out_dir=tmp_path, n_resamples=100)
    checkpoints = list((tmp_path / "checkpoints").glob("rag-*.jsonl"))
    assert len(checkpoints) == 1
    assert len(checkpoints[0].read_text().splitlines()) == 3
    # a line that is valid JSON but lacks keys (issue 13) is skipped like a torn one: its question reruns
    lines = checkpoints[0].read_text().splitlines()
    partial = json.loads(lines[0])
    del partial["retrieved_ids"], partial["scores"]
    checkpoints[0].write_text("\n".join([json.dumps(partial), *lines[1:], '{"configuration": "kw"}']) + "\n")
    # simulate a torn last line (killed mid-write): it is dropped, not mixed in
    with open(checkpoints[0], "a") as handle:
        handle.write('{"configuration": "kw", "question_id"')
    resumed_retriever = Interrupting(nodes, stop_after=100)
    config = RAGConfiguration("kw", retriever=resumed_retriever, description={"model": "kw-v1"})
    with caplog.at_level("WARNING", logger="heal_rag"):
        result = evaluate_rag([config], questions, k=5, out_dir=tmp_path, n_resamples=100)
    assert "skipped 2 unreadable or incomplete line(s)" in caplog.text
    assert resumed_retriever.calls == len(questions.queries) - 2  # the missing and the incomplete ran
    assert len(checkpoints[0].read_text().splitlines()) == len(questions.queries) + 2
    fresh = evaluate_rag(
        [RAGConfiguration("kw", retriever=KeywordRetriever(nodes), description={"model": "kw-v1"})],
        questions,
        k=5,
    )
    for metric, values in fresh.per_question["kw"].items():
        np.testing.assert_allclose(result.per_question["kw"][metric], values)
    # a changed configuration starts clean in its own checkpoint
    changed_retriever = Interrupting(nodes, stop_after=100)
    changed = RAGConfiguration("kw", retriever=changed_retriever, description={"model": "kw-v2"})
    evaluate_rag([changed], questions, k=5, out_dir=tmp_path, n_resamples=100)
    assert changed_retriever.calls == len(questions.queries)
    assert len(list((tmp_path / "checkpoints").glob("rag-*.jsonl"))) == 2


@pytest.mark.data
def test_pubmedqa_mixed_loader():
    pubmedqa, scifact = DATA / "pubmedqa_pqal", DATA / "scifact"
    if not (pubmedqa.exists() and scifact.exists()):
        pytest.skip("../shared/data is absent")
    dataset = load_pubmedqa(pubmedqa, scifact, split="test", n_distractors=200)
    questions = dataset.sample_queries(20, seed=0)
    assert len(questions.queries) == 20
    assert len(dataset.corpus) == 1000 + 200
    assert sum(1 for d in dataset.corpus if d.startswith("distractor:")) == 200
    assert set(questions.decisions) == set(questions.queries)
    assert set(questions.decisions.values()) <= {"yes", "no", "maybe"}
    assert set(questions.references) == set(questions.queries)
    assert all(
        isinstance(dataset.corpus[d], CorpusDocument)
        for d in questions.relevant(next(iter(questions.queries)))
    )
    # the deprecated loader returns the same (all questions, the sample) pair
    from heal_rag.evaluation.rag import load_pubmedqa_mixed

    with pytest.warns(DeprecationWarning, match="load_pubmedqa"):
        old_all, old_sample = load_pubmedqa_mixed(
            pubmedqa, scifact, split="test", max_questions=20, n_distractors=200
        )
    assert old_all.fingerprint == dataset.fingerprint and old_sample.fingerprint == questions.fingerprint


def test_deprecated_question_set_returns_the_equivalent_dataset(tiny, questions):
    from heal_rag.evaluation.rag import QuestionSet

    with pytest.warns(DeprecationWarning, match="sample_queries"):
        sampled = QuestionSet.from_dataset(tiny, references=questions.references)
    assert isinstance(sampled, RetrievalDataset)
    assert sampled.fingerprint == questions.fingerprint  # so old checkpoints keep resuming
    with pytest.warns(DeprecationWarning, match="RetrievalDataset"):
        built = QuestionSet(
            {"q1": "x"}, {"q1": {"d1": 1}}, {"d1": "text", "d2": "other"}, decisions={"q1": "Yes "}
        )
    assert (
        built.queries == {"q1": "x"}
        and built.corpus["d1"].text == "text"
        and built.decisions == {"q1": "yes"}
    )
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="not in its corpus"):
        QuestionSet({"q1": "x"}, {"q1": {"missing-doc": 1}}, {"d1": "text"})


@pytest.mark.slow  # loads the embedding model twice and indexes with each (about a minute on a busy core)
def test_cli_evaluate_rag_writes_three_reports(tmp_path, capsys):
    from heal_rag.cli import main
    from heal_rag.datasets import demo_corpus_path

    out = tmp_path / "report"
    argv = [
        "-q",
        "evaluate",
        "rag",
        str(demo_corpus_path()),
        "--split",
        "test",
        "--model",
        "default",
        "--model",
        "all-MiniLM-L6-v2",
        "--max-questions",
        "5",
        "--max-docs",
        "30",
        "--top-k",
        "5",
        "--resamples",
        "200",
        "--bm25",
        "--hybrid",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    data = json.loads((out / "report.json").read_text())
    # both names resolve to the bundled model; --bm25 and --hybrid add the pipeline's BM25 systems
    assert set(data["configurations"]) == {"bm25", "base", "base-2", "base+bm25", "base-2+bm25"}
    scores = {name: values["ndcg@10"] for name, values in data["configurations"].items()}
    assert 0.0 <= scores["base"] <= 1.0
    assert scores["base"] == scores["base-2"] and scores["base+bm25"] == scores["base-2+bm25"]
    assert (out / "report.md").read_text().startswith("# RAG evaluation")
    assert "<img" in (out / "report.html").read_text()
    assert "report:" in capsys.readouterr().out


def test_cli_unreachable_endpoint_fails_up_front(tmp_path, capsys):
    from heal_rag.cli import main
    from heal_rag.datasets import demo_corpus_path

    argv = [
        "evaluate",
        "rag",
        str(demo_corpus_path()),
        "--model",
        "default",
        "--llm",
        "http://127.0.0.1:9/v1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "Cannot reach the LLM endpoint http://127.0.0.1:9/v1" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_gold_and_no_context_reference_conditions(tiny, questions, vector_index, tmp_path):
    from heal_rag.errors import InvalidValueError
    from heal_rag.evaluation._rag_runner import NO_CONTEXT_ID
    from heal_rag.evaluation.references import NO_CONTEXT_TEXT, GoldContextRetriever
    from heal_rag.systems import reference_systems

    llm = ExtractiveLLM()
    configs = [*reference_systems(questions, llm=llm), *_configs(tiny, vector_index, llm=llm)[1:]]
    result = evaluate_rag(configs, questions, k=5, out_dir=tmp_path, n_resamples=200)
    for q in result.question_ids:
        gold, prior = result.records["gold"][q], result.records["no-context"][q]
        # gold: exactly the judged passages, so every answer had its evidence
        assert gold["generation_ids"] == questions.relevant(q)[:3]
        # no context: the placeholder only, and the generator was shown it (the stand-in echoes it)
        assert prior["generation_ids"] == [NO_CONTEXT_ID]
        assert NO_CONTEXT_TEXT in prior["response"]
    assert result.summary["gold"]["answers_without_evidence"] == 0.0
    assert result.summary["no-context"]["answers_without_evidence"] == 1.0
    assert result.summary["gold"]["ndcg@10"] == pytest.approx(1.0)
    assert result.summary["no-context"]["ndcg@10"] == 0.0
    # references ground the reading; they are no contenders: gold (nDCG 1.0) is never the winner
    from heal_rag.evaluation.report import headline, report_dict, summary_table

    assert result.references == ["gold", "no-context"]
    assert headline(result) is None  # one system (dense) and two references: no winner to name
    ndcg_row = next(line for line in summary_table(result).splitlines() if line.startswith("ndcg@10"))
    assert "*" not in ndcg_row  # gold's 1.000 is not marked best
    assert report_dict(result)["references"] == ["gold", "no-context"]
    assert any("reference conditions" in note for note in result.notes)
    duplicate = dataclasses.replace(tiny, queries={**tiny.queries, "copy": next(iter(tiny.queries.values()))})
    with pytest.raises(InvalidValueError, match="same text"):
        GoldContextRetriever(duplicate)


class PromptRecordingLLM(ExtractiveLLM):
    """The extractive stand-in, keeping every prompt it was given."""

    prompts: list[str] = []

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return super().complete(prompt, formatted=formatted, **kwargs)


def _context(prompt: str) -> str:
    return prompt.split("---------------------\n", 2)[1].strip()


def test_passages_are_cut_for_the_generator_but_not_for_retrieval(tiny, questions, tmp_path):
    from llama_index.core import Settings

    from heal_rag.errors import InvalidValueError

    runs = {}
    for limit in (None, 96):
        llm = PromptRecordingLLM(prompts=[])
        config = RAGConfiguration(
            "keyword",
            retriever=KeywordRetriever(tiny.to_nodes(), top_k=5),
            llm=llm,
            generation_top_n=1,
            passage_max_tokens=limit,
        )
        result = evaluate_rag([config], questions, k=5, out_dir=tmp_path / str(limit), n_resamples=100)
        runs[limit] = (result, [_context(p) for p in llm.prompts])
    (whole, whole_contexts), (cut, cut_contexts) = runs[None], runs[96]
    assert len(cut_contexts) == len(questions.queries)
    for full, short in zip(whole_contexts, cut_contexts, strict=True):
        assert len(Settings.tokenizer(short)) <= 96 < len(Settings.tokenizer(full))
        assert full.startswith(short.rstrip(". "))  # the passage's opening, cut at a boundary
    for q in cut.question_ids:  # the same documents retrieved and credited: only the prompt changed
        assert cut.records["keyword"][q]["generation_ids"] == whole.records["keyword"][q]["generation_ids"]
    assert cut.summary["keyword"]["ndcg@10"] == whole.summary["keyword"]["ndcg@10"]
    assert config.describe()["passage_max_tokens"] == 96  # part of the checkpoint hash
    for bad in (0, 8, 2.5, True):
        with pytest.raises(InvalidValueError, match="passage_max_tokens must be an integer >= 16"):
            RAGConfiguration("x", retriever=KeywordRetriever(tiny.to_nodes()), passage_max_tokens=bad)
