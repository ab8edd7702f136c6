"""The per-question unit of the RAG harness: retrieve, generate, score one configuration on one question.

:class:`RAGRunner` turns a (configuration, question) into one checkpoint record in four steps, each its own
method: retrieve (and, for an opaque query engine, answer), generate from the top retrieved nodes, score
retrieval (RAGAS id- and string-based metrics, from a sample built from the source nodes) and score the
answer (the judge-free hallucination signal, the gold decision and the opt-in LLM judge). A failure in one
step is recorded in the record's ``errors`` and counted; it never ends the run.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heal_rag._checks import preview_ids
from heal_rag.errors import InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.schema import BaseNode, NodeWithScore

    from heal_rag.datasets import RetrievalDataset
    from heal_rag.evaluation.rag import RAGConfiguration
    from heal_rag.evaluation.ragas_metrics import RagasJudge

logger = logging.getLogger("heal_rag.evaluation.rag")

#: Metadata keys read, in order, for a retrieved node's document id (see :func:`node_doc_id`).
DOC_ID_METADATA_KEYS = ("doc_id", "_id")

# An answer that declines to answer is not counted as "answered" by the judge-free signal.
_ABSTENTION = re.compile(
    r"^\s*(empty response|i (do not|don't|cannot|can't) (know|answer|determine)|"
    r"(the )?(context|information) (does not|doesn't) (provide|contain|mention)|"
    r"(there is )?not enough information)",
    re.IGNORECASE,
)
_DECISION = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)

#: Document id of the no-context condition's placeholder node (heal_rag.evaluation.references): no corpus id.
NO_CONTEXT_ID = "heal-rag:no-context"

DECISION_QA_TEMPLATE = (
    "Context information is below.\n---------------------\n{context_str}\n---------------------\n"
    "Using only the context, answer the question. Begin the answer with yes, no or maybe, then "
    "explain in one "
    "sentence.\nQuestion: {query_str}\nAnswer: "
)


def truncated_nodes(nodes: list[NodeWithScore], max_tokens: int) -> list[NodeWithScore]:
    """Return copies of ``nodes`` cut to their first ``max_tokens`` tokens (LlamaIndex's tokenizer).

    The budget covers what the generator is shown: the node's LLM metadata (a title, say) and its text. The
    cut is the first chunk of LlamaIndex's metadata-aware ``SentenceSplitter``, so it ends at a sentence or
    word boundary. Ids and metadata are kept, so the document a passage came from is still known; the nodes
    given are not changed.
    """
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.core.schema import NodeWithScore as Scored

    splitter = SentenceSplitter(chunk_size=max_tokens, chunk_overlap=0)
    out = []
    for scored in nodes:
        text = scored.node.get_content()
        metadata = scored.node.get_metadata_str(mode=MetadataMode.LLM)
        try:
            chunks = splitter.split_text_metadata_aware(text, metadata) if text else []
        except ValueError:  # the metadata alone is over the budget: cut the text alone
            chunks = splitter.split_text(text)
        if len(chunks) <= 1:
            out.append(scored)
            continue
        node = scored.node.model_copy()
        node.set_content(chunks[0])
        out.append(Scored(node=node, score=scored.score))
    return out


def node_doc_id(node: BaseNode | NodeWithScore) -> str:
    """Return the BEIR document id of a (retrieved) node.

    Order: ``metadata["doc_id"]``, ``metadata["_id"]``, ``ref_doc_id`` (a chunk's document), ``node_id``.
    """
    node = getattr(node, "node", node)
    metadata = getattr(node, "metadata", None) or {}
    for key in DOC_ID_METADATA_KEYS:
        value = metadata.get(key)
        if value is not None and str(value):
            return str(value)
    ref = getattr(node, "ref_doc_id", None)
    if ref:
        return str(ref)
    return str(node.node_id)


def parse_decision(text: str | None) -> str | None:
    """Return the first standalone yes/no/maybe word of an answer (lower case), or None."""
    if not text:
        return None
    match = _DECISION.search(text)
    return match.group(1).lower() if match else None


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:300]


@dataclass
class _Retrieved:
    """What the retrieval step hands to the later steps."""

    nodes: list[NodeWithScore] = field(default_factory=list)
    generation_nodes: list[NodeWithScore] = field(default_factory=list)
    response: str | None = None  # set when an opaque query engine answered while retrieving


class RAGRunner:
    """Runs one configuration on one question and scores it (the per-question unit of the checkpoint).

    Args:
        dataset: the questions (queries), their qrels, and optional references and decisions.
        retrieval_metrics: RAGAS' retrieval metrics (:class:`heal_rag.evaluation.ragas_metrics
            .RetrievalMetrics`), or None when RAGAS is not installed.
        judge: the opt-in LLM judge, or None.

    """

    def __init__(self, dataset: RetrievalDataset, retrieval_metrics: Any, judge: RagasJudge | None) -> None:
        self.dataset = dataset
        self.retrieval_metrics = retrieval_metrics
        self.judge = judge
        self._synthesizers: dict[str, Any] = {}
        self._checked_ids = False

    def run(self, config: RAGConfiguration, question_id: str) -> dict[str, Any]:
        """Return the checkpoint record of ``config`` on one question."""
        question = self.dataset.queries[question_id]
        record: dict[str, Any] = {
            "configuration": config.name,
            "question_id": question_id,
            "retrieved_ids": [],
            "generation_ids": [],
            "response": None,
            "scores": {},
            "errors": {},
        }
        started = time.perf_counter()
        try:
            retrieved = self._retrieve(config, question)
        except Exception as error:  # noqa: BLE001 - one failing question must not end the run; it is counted
            record["errors"]["retrieval"] = _error_text(error)
            logger.warning("%s: retrieval failed for question %s: %s", config.name, question_id, error)
            return record
        ids = [node_doc_id(n) for n in retrieved.nodes]
        self._check_ids(config, ids)
        record["retrieved_ids"] = ids
        record["retrieved_scores"] = [
            _finite_or_none(n.score) if n.score is not None else None for n in retrieved.nodes
        ]
        if config.generates and retrieved.response is None:
            self._generate(config, question, question_id, retrieved, record)
        record["generation_ids"] = [node_doc_id(n) for n in retrieved.generation_nodes]
        record["response"] = retrieved.response
        record["seconds"] = round(time.perf_counter() - started, 4)
        scores = self._score_retrieval(question, question_id, retrieved.nodes, ids)
        if config.generates:
            scores.update(self._score_answer(question_id, retrieved.response, record))
            if self.judge is not None:
                scores.update(self._judge(question, question_id, retrieved, record))
        record["scores"] = {k: _finite_or_none(v) for k, v in scores.items()}
        return record

    # -- 1. retrieve (an opaque query engine also answers here) ---------------------------------------------
    def _retrieve(self, config: RAGConfiguration, question: str) -> _Retrieved:
        from llama_index.core.schema import QueryBundle

        engine = config.query_engine
        if engine is None:
            return _Retrieved(nodes=list(config.retriever.retrieve(question)))  # type: ignore[union-attr]
        if hasattr(engine, "retrieve") and hasattr(engine, "synthesize"):
            return _Retrieved(nodes=list(engine.retrieve(QueryBundle(question))))
        answer = engine.query(question)
        nodes = list(getattr(answer, "source_nodes", []) or [])
        return _Retrieved(
            nodes=nodes, generation_nodes=nodes, response=str(getattr(answer, "response", None) or "")
        )

    def _check_ids(self, config: RAGConfiguration, ids: list[str]) -> None:
        """Fail early when the index's document ids do not match the corpus (wrong id convention)."""
        if self._checked_ids or not ids or ids == [NO_CONTEXT_ID]:
            return  # the no-context placeholder is no corpus document by design
        if not any(d in self.dataset.corpus for d in ids):
            raise InvalidValueError(
                f"Configuration {config.name!r} retrieved document ids that are not in the corpus "
                f"({preview_ids(ids, limit=3)}). heal-rag reads a node's document id from metadata 'doc_id' "
                "or '_id', then ref_doc_id, then node_id: index nodes built from the same corpus "
                "(RetrievalDataset.to_nodes())."
            )
        self._checked_ids = True

    # -- 2. generate from the top retrieved nodes -----------------------------------------------------------
    def _generate(
        self,
        config: RAGConfiguration,
        question: str,
        question_id: str,
        retrieved: _Retrieved,
        record: dict[str, Any],
    ) -> None:
        from llama_index.core.schema import QueryBundle

        nodes = retrieved.nodes
        retrieved.generation_nodes = (
            nodes if config.generation_top_n is None else nodes[: config.generation_top_n]
        )
        if config.passage_max_tokens is not None:
            retrieved.generation_nodes = truncated_nodes(
                retrieved.generation_nodes, config.passage_max_tokens
            )
        try:
            if config.query_engine is not None:
                answer = config.query_engine.synthesize(QueryBundle(question), retrieved.generation_nodes)  # type: ignore[attr-defined]
            else:
                answer = self._synthesizer(config).synthesize(question, nodes=retrieved.generation_nodes)
            retrieved.response = str(getattr(answer, "response", None) or "")
        except Exception as error:  # noqa: BLE001 - an LLM error/timeout is counted, the run goes on
            record["errors"]["generation"] = _error_text(error)
            logger.warning("%s: generation failed for question %s: %s", config.name, question_id, error)

    def _synthesizer(self, config: RAGConfiguration) -> Any:
        if config.name not in self._synthesizers:
            from llama_index.core import get_response_synthesizer
            from llama_index.core.prompts import PromptTemplate

            template = config.text_qa_template
            if template is None and self.dataset.decisions:
                template = DECISION_QA_TEMPLATE
            if isinstance(template, str):
                template = PromptTemplate(template)
            kwargs = {"text_qa_template": template} if template is not None else {}
            self._synthesizers[config.name] = get_response_synthesizer(
                llm=config.llm, response_mode="compact", **kwargs
            )
        return self._synthesizers[config.name]

    # -- 3. retrieval scores from a RAGAS sample built from the source nodes --------------------------------
    def _score_retrieval(
        self, question: str, question_id: str, nodes: list[NodeWithScore], ids: list[str]
    ) -> dict[str, float]:
        if self.retrieval_metrics is None:
            return {}
        from llama_index.core.schema import MetadataMode
        from ragas import SingleTurnSample

        relevant = self.dataset.relevant(question_id)
        sample = SingleTurnSample(
            user_input=question,
            retrieved_contexts=[n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes],
            retrieved_context_ids=ids,
            reference_context_ids=relevant or None,
            reference_contexts=[self.dataset.corpus[d].full_text for d in relevant] or None,
        )
        return dict(self.retrieval_metrics.score(sample))

    # -- 4. the answer: judge-free hallucination signal, gold decision, LLM judge ---------------------------
    def _score_answer(
        self, question_id: str, response: str | None, record: dict[str, Any]
    ) -> dict[str, float]:
        relevant = self.dataset.relevant(question_id)
        answered = _is_answer(response)
        record["answered"] = answered
        scores: dict[str, float] = {"answers_without_evidence": math.nan}
        if answered and relevant:
            scores["answers_without_evidence"] = float(not set(record["generation_ids"]) & set(relevant))
        gold = self.dataset.decisions.get(question_id)
        if gold is not None:
            predicted = parse_decision(response) if response else None
            record["decision"] = predicted
            # an answer without a decision word counts as wrong; a failed generation is not scored
            scores["decision_accuracy"] = float(predicted == gold) if response is not None else math.nan
        return scores

    def _judge(
        self, question: str, question_id: str, retrieved: _Retrieved, record: dict[str, Any]
    ) -> dict[str, float]:
        """Score the answer with the LLM judge, on the contexts the generator actually saw."""
        assert self.judge is not None
        if not _is_answer(retrieved.response):
            record["errors"]["judge"] = "skipped: no answer to judge"
            return dict.fromkeys(self.judge.names, math.nan)
        from llama_index.core.schema import MetadataMode
        from ragas import SingleTurnSample

        sample = SingleTurnSample(
            user_input=question,
            retrieved_contexts=[
                n.node.get_content(metadata_mode=MetadataMode.LLM) for n in retrieved.generation_nodes
            ],
            response=retrieved.response,
            reference=self.dataset.references.get(question_id),
        )
        scores, errors = self.judge.score(sample)
        record["errors"].update({f"judge:{k}": v for k, v in errors.items()})
        return dict(scores)


def _is_answer(response: str | None) -> bool:
    """Whether a response answers (is not empty and does not decline)."""
    return bool(response) and not _ABSTENTION.match(response or "")
