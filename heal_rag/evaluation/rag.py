"""The RAG evaluation harness: configurations side by side over one question set.

For every question and every configuration the harness retrieves (and, when the configuration has a
generator, answers), builds the RAGAS sample itself from the source nodes, scores it, and appends one JSON
line to a checkpoint. At the end it aggregates per-question scores into means, bootstrap confidence intervals
and paired tests between configurations.

Document ids of retrieved nodes (the convention every metric relies on): a node's BEIR document id is
``node.metadata["doc_id"]``, else ``node.metadata["_id"]``, else ``node.ref_doc_id`` (the source document of a
chunk), else ``node.node_id`` (``RetrievalDataset.to_nodes()`` uses the document id as node id). See
:func:`node_doc_id`.

Metrics per question (NaN where a metric does not apply; the reason is counted and noted in the report):

- retrieval, no LLM: ``ndcg@10``, ``mrr@10``, ``recall@k`` (ranx, via :func:`heal_rag.evaluation.metrics`),
  RAGAS ``id_based_context_precision/recall`` and ``non_llm_context_precision_with_reference`` /
  ``non_llm_context_recall``.
- judge-free hallucination signal (needs a generator): ``ungrounded_answers`` = 1 when the question was
  answered from contexts that contain none of its relevant documents, 0 when they contain one (lower is
  better); ``decision_accuracy`` = the answer's leading yes/no/maybe equals the gold decision.
- LLM judge (opt-in): RAGAS ``faithfulness``, ``answer_correctness``, ``answer_relevancy``.

Example:
    >>> questions = QuestionSet.from_dataset(dataset, max_questions=50)  # doctest: +SKIP
    >>> configs = [RAGConfiguration("base", retriever=base_index.as_retriever(similarity_top_k=10)),
    ...            RAGConfiguration("heal", retriever=heal_retriever)]  # doctest: +SKIP
    >>> result = evaluate_rag(configs, questions, out_dir="runs/rag")  # doctest: +SKIP
    >>> result.summary["heal"]["ndcg@10"]  # doctest: +SKIP

"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heal_rag._io import loads_json
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError
from heal_rag.evaluation.stats import (
    ConfidenceInterval,
    PairedComparison,
    bootstrap_ci,
    compare_configurations,
)

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.llms import LLM
    from llama_index.core.prompts import BasePromptTemplate
    from llama_index.core.schema import BaseNode, NodeWithScore

    from heal_rag.datasets import RetrievalDataset
    from heal_rag.evaluation.ragas_metrics import RagasJudge

logger = logging.getLogger(__name__)

__all__ = [
    "DOC_ID_METADATA_KEYS",
    "node_doc_id",
    "QuestionSet",
    "RAGConfiguration",
    "RAGEvaluationResult",
    "evaluate_rag",
    "parse_decision",
    "load_pubmedqa_mixed",
    "METRIC_INFO",
    "ranked_configurations",
]

CHECKPOINT_FORMAT = 1
DOC_ID_METADATA_KEYS = ("doc_id", "_id")
DECISIONS = ("yes", "no", "maybe")

# name -> (higher is better, short description); the report uses this to label and orient metrics
METRIC_INFO: dict[str, tuple[bool, str]] = {
    "ndcg@10": (True, "nDCG@10 (ranx)"),
    "mrr@10": (True, "MRR@10 (ranx)"),
    "id_based_context_precision": (True, "RAGAS: share of retrieved doc ids that are relevant"),
    "id_based_context_recall": (True, "RAGAS: share of relevant doc ids retrieved"),
    "non_llm_context_precision_with_reference": (
        True,
        "RAGAS: precision by string similarity to relevant texts",
    ),
    "non_llm_context_recall": (True, "RAGAS: recall by string similarity to relevant texts"),
    "ungrounded_answers": (False, "answered from contexts lacking every relevant passage (lower is better)"),
    "decision_accuracy": (True, "leading yes/no/maybe equals the gold decision"),
    "faithfulness": (True, "RAGAS judge: answer statements supported by the contexts"),
    "answer_correctness": (True, "RAGAS judge: agreement with the reference answer"),
    "answer_relevancy": (True, "RAGAS judge: the answer addresses the question"),
}

# An answer that declines to answer is not counted as "answered" by the judge-free signal.
_ABSTENTION = re.compile(
    r"^\s*(empty response|i (do not|don't|cannot|can't) (know|answer|determine)|"
    r"(the )?(context|information) (does not|doesn't) (provide|contain|mention)|"
    r"(there is )?not enough information)",
    re.IGNORECASE,
)
_DECISION = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)

DECISION_QA_TEMPLATE = (
    "Context information is below.\n---------------------\n{context_str}\n---------------------\n"
    "Using only the context, answer the question. Begin the answer with yes, no or maybe, then "
    "explain in one "
    "sentence.\nQuestion: {query_str}\nAnswer: "
)


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


def _preview(ids: Iterable[Any], limit: int = 5) -> str:
    ids = list(ids)
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" ... and {len(ids) - limit} more" if len(ids) > limit else "")


# ------------------------------------------------------------------------------------------------------------
# question set
# ------------------------------------------------------------------------------------------------------------


@dataclass
class QuestionSet:
    """Questions with their relevant documents and, optionally, reference answers and gold decisions.

    Args:
        questions: question id -> question text, in evaluation order.
        qrels: question id -> {document id: grade}; grade > 0 means relevant. Questions without any relevant
            document are kept, but metrics that need one are skipped for them (NaN, noted in the report).
        contexts: document id -> text of every document the retrievers may return (usually the whole corpus).
            Used for ``reference_contexts`` and to check that retrieved ids belong to this corpus.
        references: question id -> reference answer (enables ``answer_correctness``).
        decisions: question id -> gold "yes"/"no"/"maybe" (enables ``decision_accuracy``).
        name: a short name for reports.

    Raises:
        ValueError: when qrels name questions or documents that are unknown (a corpus/qrels mismatch), or a
            decision is not yes/no/maybe.

    Example:
        >>> qs = QuestionSet({"q1": "Does aspirin lower fever?"}, {"q1": {"d1": 1}}, {"d1": "Aspirin helps."})
        >>> qs.relevant("q1")
        ['d1']

    """

    questions: dict[str, str]
    qrels: dict[str, dict[str, int]]
    contexts: dict[str, str]
    references: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.questions = {str(k): str(v) for k, v in dict(self.questions).items()}
        if not self.questions:
            raise InvalidValueError(f"The question set {self.name!r} has no questions.")
        if not self.contexts:
            raise InvalidValueError(f"The question set {self.name!r} has an empty corpus (contexts).")
        self.qrels = {str(q): {str(d): int(g) for d, g in judged.items()} for q, judged in self.qrels.items()}
        self.contexts = {str(k): str(v) for k, v in self.contexts.items()}
        unknown_q = [q for q in self.qrels if q not in self.questions]
        if unknown_q:
            raise InvalidValueError(
                f"{len(unknown_q)} question id(s) in the qrels are not among the questions: "
                f"{_preview(unknown_q)}. "
                "Check that the qrels split matches the queries."
            )
        unknown_d = sorted({d for judged in self.qrels.values() for d in judged if d not in self.contexts})
        if unknown_d:
            raise InvalidValueError(
                f"Corpus/qrels mismatch: {len(unknown_d)} relevant document id(s) are not in the corpus: "
                f"{_preview(unknown_d)}. Check that the qrels belong to this corpus (same BEIR folder)."
            )
        for mapping, what in ((self.references, "references"), (self.decisions, "decisions")):
            stray = [q for q in mapping if q not in self.questions]
            if stray:
                logger.debug("%d %s belong to no question; ignored", len(stray), what)
        self.references = {
            q: str(a) for q, a in self.references.items() if q in self.questions and str(a).strip()
        }
        self.decisions = {q: str(d).strip().lower() for q, d in self.decisions.items() if q in self.questions}
        bad = {q: d for q, d in self.decisions.items() if d not in DECISIONS}
        if bad:
            raise InvalidValueError(f"Gold decisions must be yes, no or maybe; got {_preview(bad.items())}.")

    @classmethod
    def from_dataset(
        cls,
        dataset: RetrievalDataset,
        *,
        references: Mapping[str, str] | None = None,
        decisions: Mapping[str, str] | None = None,
        max_questions: int | None = None,
        only_judged: bool = True,
        seed: int = 0,
    ) -> QuestionSet:
        """Build a question set from a :class:`heal_rag.datasets.RetrievalDataset`.

        Args:
            dataset: corpus, queries and qrels.
            references: optional reference answers by question id.
            decisions: optional gold yes/no/maybe by question id.
            max_questions: keep a seeded random sample of this many questions (in their original order).
            only_judged: keep only questions with at least one relevant document.
            seed: seed of the sample.

        """
        ids = [
            q
            for q in dataset.queries
            if not only_judged or any(g > 0 for g in dataset.qrels.get(q, {}).values())
        ]
        if not ids:
            raise InvalidValueError(
                f"Dataset {dataset.name!r} has no question with a relevant document; check the qrels split."
            )
        if max_questions is not None:
            if max_questions < 1:
                raise InvalidValueError(f"max_questions must be >= 1; got {max_questions}.")
            if max_questions < len(ids):
                keep = set(random.Random(seed).sample(ids, max_questions))
                ids = [q for q in ids if q in keep]
        return cls(
            questions={q: dataset.queries[q] for q in ids},
            qrels={q: dict(dataset.qrels[q]) for q in ids if q in dataset.qrels},
            contexts={d: doc.full_text for d, doc in dataset.corpus.items()},
            references={q: a for q, a in (references or {}).items() if q in ids},
            decisions={q: a for q, a in (decisions or {}).items() if q in ids},
            name=dataset.name,
        )

    def relevant(self, question_id: str) -> list[str]:
        """Ids of the documents relevant to a question (grade > 0)."""
        return [d for d, g in self.qrels.get(question_id, {}).items() if g > 0]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of questions, qrels, references and decisions (the corpus enters through its ids)."""
        payload = json.dumps(
            [self.questions, self.qrels, self.references, self.decisions, sorted(self.contexts)],
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# configurations
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RAGConfiguration:
    """One RAG system to evaluate: a retriever (retrieval only, or with a generator) or a query engine.

    Args:
        name: unique name shown in reports.
        retriever: a LlamaIndex retriever. With ``llm`` the harness also answers, from the top
            ``generation_top_n`` retrieved nodes, with a compact response synthesizer.
        query_engine: a LlamaIndex query engine instead of ``retriever``. If it exposes ``retrieve`` and
            ``synthesize`` (``RetrieverQueryEngine``), retrieval is kept even when generation fails; otherwise
            ``query()`` is called and its ``source_nodes`` are the retrieved nodes.
        llm: the generator for ``retriever``; None means retrieval only.
        generation_top_n: how many retrieved nodes the generator sees (None: all).
        text_qa_template: prompt of the response synthesizer (default: LlamaIndex's, or a yes/no/maybe
            prompt when the question set has gold decisions).
        description: what the configuration is (model, retriever mode, ...); recorded in the report and in
            the checkpoint hash, so describe everything that changes results.

    Example:
        >>> RAGConfiguration("base", retriever=index.as_retriever(similarity_top_k=10))  # doctest: +SKIP

    """

    name: str
    retriever: BaseRetriever | None = None
    query_engine: BaseQueryEngine | None = None
    llm: LLM | None = None
    generation_top_n: int | None = 3
    text_qa_template: BasePromptTemplate | str | None = None
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InvalidValueError(f"A RAGConfiguration needs a non-empty name; got {self.name!r}.")
        if (self.retriever is None) == (self.query_engine is None):
            raise InvalidValueError(
                f"Configuration {self.name!r}: give exactly one of retriever= or query_engine= "
                f"(got {'both' if self.retriever is not None else 'neither'})."
            )
        if self.query_engine is not None and self.llm is not None:
            raise InvalidValueError(
                f"Configuration {self.name!r}: llm= is for a retriever; a query engine brings its own LLM."
            )
        if self.generation_top_n is not None and self.generation_top_n < 1:
            raise InvalidValueError(f"Configuration {self.name!r}: generation_top_n must be >= 1 or None.")

    @property
    def generates(self) -> bool:
        """Whether this configuration produces answers."""
        return self.query_engine is not None or self.llm is not None

    def describe(self) -> dict[str, Any]:
        """Describe the configuration for reports and in the checkpoint hash."""
        component = self.retriever if self.retriever is not None else self.query_engine
        out: dict[str, Any] = {"component": type(component).__name__}
        top_k = getattr(component, "similarity_top_k", None) or getattr(component, "_similarity_top_k", None)
        if isinstance(top_k, int):
            out["similarity_top_k"] = top_k
        if self.llm is not None:
            model = getattr(getattr(self.llm, "metadata", None), "model_name", None)
            out["llm"] = f"{type(self.llm).__name__}({model})" if model else type(self.llm).__name__
            out["generation_top_n"] = self.generation_top_n
        if self.text_qa_template is not None:
            template = self.text_qa_template
            out["text_qa_template"] = (
                template if isinstance(template, str) else getattr(template, "template", "")
            )
        out.update(self.description)
        return out


# ------------------------------------------------------------------------------------------------------------
# results
# ------------------------------------------------------------------------------------------------------------


@dataclass
class RAGEvaluationResult:
    """Everything a report needs.

    Attributes:
        question_ids: question ids in evaluation order (the order of every per-question array).
        records: configuration -> question id -> checkpoint record (retrieved ids, response, scores, errors).
        per_question: configuration -> metric -> array of shape (n_questions,) (NaN = not scored).
        summary: configuration -> metric -> mean over the questions that were scored.
        intervals: configuration -> metric -> bootstrap :class:`ConfidenceInterval`.
        comparisons: paired tests between configurations (see :func:`compare_configurations`).
        counts: configuration -> failure and NaN counts.
        notes: human-readable notes (skipped metrics and why).
        config: the run's configuration (also hashed for the checkpoint).
        checkpoint: path of the JSONL checkpoint (None when no out_dir was given).

    """

    question_ids: list[str]
    records: dict[str, dict[str, dict[str, Any]]]
    per_question: dict[str, dict[str, np.ndarray]]
    summary: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, ConfidenceInterval]]
    comparisons: list[PairedComparison]
    counts: dict[str, dict[str, Any]]
    notes: list[str]
    config: dict[str, Any]
    checkpoint: str | None = None

    @property
    def configurations(self) -> list[str]:
        """Configuration names in order."""
        return list(self.summary)

    @property
    def metrics(self) -> list[str]:
        """Metric names present in at least one configuration, in a stable order."""
        seen: dict[str, None] = {}
        for per_metric in self.per_question.values():
            for name in per_metric:
                seen.setdefault(name, None)
        return list(seen)


# ------------------------------------------------------------------------------------------------------------
# checkpoint
# ------------------------------------------------------------------------------------------------------------


def _config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


# what every checkpoint record holds (RAGRunner.run writes them all), with its type
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "configuration": str,
    "question_id": str,
    "retrieved_ids": list,
    "generation_ids": list,
    "scores": dict,
    "errors": dict,
}


def _is_record(record: Any) -> bool:
    """Whether a parsed checkpoint line is a complete record (a line lacking keys is treated as torn)."""
    return (
        isinstance(record, dict)
        and all(isinstance(record.get(key), kind) for key, kind in _RECORD_FIELDS.items())
        and all(isinstance(d, str) for d in record["retrieved_ids"])
        and all(v is None or isinstance(v, (int, float)) for v in record["scores"].values())
    )


class _Checkpoint:
    """Append-only JSONL of per-(question, configuration) records, one file per configuration hash."""

    def __init__(self, out_dir: Path | None, config_hash: str, resume: bool) -> None:
        self.path = None if out_dir is None else out_dir / "checkpoints" / f"rag-{config_hash}.jsonl"
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        others = [p.name for p in self.path.parent.glob("rag-*.jsonl") if p != self.path]
        if others:
            logger.info(
                "ignoring %d checkpoint(s) of other configurations in %s", len(others), self.path.parent
            )
        if not resume and self.path.exists():
            self.path.unlink()
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            # the run was killed mid-line: drop the torn record so the next append starts on a fresh line
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as handle:
                handle.truncate(len(raw))
        skipped = 0
        for line in raw.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = loads_json(line)
            except json.JSONDecodeError:
                record = None
            if not _is_record(record):
                skipped += 1  # torn, edited or foreign: that question is simply run again
                continue
            self.records[(record["configuration"], record["question_id"])] = record
        if skipped:
            logger.warning(
                "skipped %d unreadable or incomplete line(s) in %s; those questions are run again",
                skipped,
                self.path,
            )
        if self.records:
            logger.info("resuming: %d record(s) found in %s", len(self.records), self.path)

    def get(self, configuration: str, question_id: str) -> dict[str, Any] | None:
        return self.records.get((configuration, question_id))

    def append(self, record: dict[str, Any]) -> None:
        self.records[(record["configuration"], record["question_id"])] = record
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise InvalidTypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------------


class _Runner:
    """Runs one configuration on one question and scores it (the per-question unit of the checkpoint)."""

    def __init__(
        self,
        questions: QuestionSet,
        retrieval_metrics: Any,
        judge: RagasJudge | None,
    ) -> None:
        self.questions = questions
        self.retrieval_metrics = retrieval_metrics
        self.judge = judge
        self._synthesizers: dict[str, Any] = {}
        self._checked_ids = False

    def _synthesizer(self, config: RAGConfiguration) -> Any:
        if config.name not in self._synthesizers:
            from llama_index.core import get_response_synthesizer
            from llama_index.core.prompts import PromptTemplate

            template = config.text_qa_template
            if template is None and self.questions.decisions:
                template = DECISION_QA_TEMPLATE
            if isinstance(template, str):
                template = PromptTemplate(template)
            kwargs = {"text_qa_template": template} if template is not None else {}
            self._synthesizers[config.name] = get_response_synthesizer(
                llm=config.llm, response_mode="compact", **kwargs
            )
        return self._synthesizers[config.name]

    def _check_ids(self, config: RAGConfiguration, ids: list[str]) -> None:
        """Fail early when the index's document ids do not match the corpus (wrong id convention)."""
        if self._checked_ids or not ids:
            return
        known = [d for d in ids if d in self.questions.contexts]
        if not known:
            raise InvalidValueError(
                f"Configuration {config.name!r} retrieved document ids that are not in the corpus "
                f"({_preview(ids, 3)}). heal-rag reads a node's document id from metadata 'doc_id' or '_id', "
                "then ref_doc_id, then node_id: index nodes built from the same corpus "
                "(RetrievalDataset.to_nodes())."
            )
        self._checked_ids = True

    def run(self, config: RAGConfiguration, question_id: str) -> dict[str, Any]:
        from llama_index.core.schema import MetadataMode, QueryBundle

        question = self.questions.questions[question_id]
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
        nodes: list[NodeWithScore] = []
        generation_nodes: list[NodeWithScore] = []
        response: str | None = None
        # 1. retrieve (and generate)
        try:
            engine = config.query_engine
            if engine is None:
                nodes = list(config.retriever.retrieve(question))  # type: ignore[union-attr]
            elif hasattr(engine, "retrieve") and hasattr(engine, "synthesize"):
                nodes = list(engine.retrieve(QueryBundle(question)))
            else:
                answer = engine.query(question)
                nodes = list(getattr(answer, "source_nodes", []) or [])
                generation_nodes = nodes
                response = str(getattr(answer, "response", None) or "")
        except Exception as error:  # noqa: BLE001 - one failing question must not end the run; it is counted
            record["errors"]["retrieval"] = f"{type(error).__name__}: {error}"[:300]
            logger.warning("%s: retrieval failed for question %s: %s", config.name, question_id, error)
            return record
        ids = [node_doc_id(n) for n in nodes]
        self._check_ids(config, ids)
        record["retrieved_ids"] = ids
        record["retrieved_scores"] = [
            _finite_or_none(n.score) if n.score is not None else None for n in nodes
        ]
        if config.generates and response is None:
            generation_nodes = nodes if config.generation_top_n is None else nodes[: config.generation_top_n]
            try:
                if config.query_engine is not None:
                    answer = config.query_engine.synthesize(QueryBundle(question), generation_nodes)  # type: ignore[attr-defined]
                else:
                    answer = self._synthesizer(config).synthesize(question, nodes=generation_nodes)
                response = str(getattr(answer, "response", None) or "")
            except Exception as error:  # noqa: BLE001 - an LLM error/timeout is counted, the run goes on
                record["errors"]["generation"] = f"{type(error).__name__}: {error}"[:300]
                logger.warning("%s: generation failed for question %s: %s", config.name, question_id, error)
        record["generation_ids"] = [node_doc_id(n) for n in generation_nodes]
        record["response"] = response
        record["seconds"] = round(time.perf_counter() - started, 4)

        # 2. RAGAS sample built from the source nodes
        relevant = self.questions.relevant(question_id)
        contexts = [n.node.get_content(metadata_mode=MetadataMode.LLM) for n in nodes]
        sample_kwargs: dict[str, Any] = {
            "user_input": question,
            "retrieved_contexts": contexts,
            "retrieved_context_ids": ids,
            "reference_context_ids": relevant or None,
            "reference_contexts": [self.questions.contexts[d] for d in relevant] or None,
        }
        scores: dict[str, float] = {}
        if self.retrieval_metrics is not None:
            from ragas import SingleTurnSample

            scores.update(self.retrieval_metrics.score(SingleTurnSample(**sample_kwargs)))

        # 3. judge-free hallucination signal
        answered = bool(response) and not _ABSTENTION.match(response or "")
        if config.generates:
            record["answered"] = answered
            if answered and relevant:
                scores["ungrounded_answers"] = float(not set(record["generation_ids"]) & set(relevant))
            else:
                scores["ungrounded_answers"] = math.nan
            gold = self.questions.decisions.get(question_id)
            if gold is not None:
                predicted = parse_decision(response) if response else None
                record["decision"] = predicted
                # an answer without a decision word counts as wrong; a failed generation is not scored
                scores["decision_accuracy"] = float(predicted == gold) if response is not None else math.nan

        # 4. LLM judge on the contexts the generator actually saw
        if self.judge is not None and config.generates:
            if answered:
                from ragas import SingleTurnSample

                judge_sample = SingleTurnSample(
                    user_input=question,
                    retrieved_contexts=[
                        n.node.get_content(metadata_mode=MetadataMode.LLM) for n in generation_nodes
                    ],
                    response=response,
                    reference=self.questions.references.get(question_id),
                )
                judge_scores, judge_errors = self.judge.score(judge_sample)
                scores.update(judge_scores)
                record["errors"].update({f"judge:{k}": v for k, v in judge_errors.items()})
            else:
                for name in self.judge.names:
                    scores[name] = math.nan
                record["errors"]["judge"] = "skipped: no answer to judge"
        record["scores"] = {k: _finite_or_none(v) for k, v in scores.items()}
        return record


def _resolve_ir_functions() -> Any:
    from heal_rag.evaluation import metrics as ir_module

    return ir_module


def _ir_per_question(
    questions: QuestionSet, records: Mapping[str, dict[str, Any]], k: int
) -> dict[str, dict[str, float]]:
    """nDCG@10, MRR@10 and Recall@k per question from the retrieved rankings, via the shared ranx wrapper."""
    names = ["ndcg@10", "mrr@10", f"recall@{k}"]
    qrels = {q: {d: g for d, g in questions.qrels.get(q, {}).items() if g > 0} for q in records}
    run: dict[str, dict[str, float]] = {}
    for q, record in records.items():
        if not qrels.get(q) or "retrieval" in record.get("errors", {}):
            continue
        ranking: dict[str, float] = {}
        for rank, doc_id in enumerate(record.get("retrieved_ids", [])):
            # rank-based scores: ties and missing node scores cannot reorder the list the retriever returned
            ranking.setdefault(doc_id, float(len(record["retrieved_ids"]) - rank))
        run[q] = ranking
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    scored = [q for q in run if run[q]]
    if scored:
        per_query = _resolve_ir_functions().per_query_metrics(
            {q: qrels[q] for q in scored}, {q: run[q] for q in scored}, metrics=tuple(names)
        )
        for name in names:
            out[name].update({q: float(v) for q, v in per_query[name].items()})
    for q in run:
        if not run[q]:  # retrieved nothing: every IR metric is 0, not missing
            for name in names:
                out[name][q] = 0.0
    return out


def _judge_from_spec(judge: Any, judge_embeddings: Any, timeout: float) -> RagasJudge | None:
    from heal_rag.evaluation.ragas_metrics import RagasJudge

    if judge is None or isinstance(judge, RagasJudge):
        return judge
    if judge_embeddings is None:
        raise InvalidValueError(
            "An LLM judge needs judge_embeddings= (a LlamaIndex embedding, e.g. "
            "HEALEmbedding.from_pretrained(...)) "
            "for answer_relevancy and answer_correctness; heal-rag never falls back to a remote default."
        )
    return RagasJudge(judge, judge_embeddings, timeout=timeout)


def evaluate_rag(
    configurations: Sequence[RAGConfiguration],
    questions: QuestionSet,
    *,
    judge: RagasJudge | LLM | None = None,
    judge_embeddings: Any = None,
    judge_timeout: float = 120.0,
    k: int = 10,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    extra_config: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> RAGEvaluationResult:
    """Evaluate two or more RAG configurations side by side on one question set.

    Args:
        configurations: the systems to compare (unique names); the first is the baseline of comparisons.
        questions: the question set.
        judge: an opt-in LLM judge: a :class:`RagasJudge` or any LlamaIndex LLM (then ``judge_embeddings``
            is required). None: retrieval metrics and judge-free signals only.
        judge_embeddings: a LlamaIndex embedding for the judge's embedding-based metrics.
        judge_timeout: seconds per judge metric and sample when ``judge`` is an LLM.
        k: the cut-off of Recall@k (nDCG and MRR are at 10).
        out_dir: folder of the JSONL checkpoint (``checkpoints/rag-<config hash>.jsonl``); None keeps
            everything in memory. Records are appended per question, so an interrupted run resumes.
        resume: reuse a checkpoint of the same configuration; False starts clean.
        n_resamples: bootstrap / permutation resamples of the statistics.
        confidence: confidence level of the intervals.
        seed: seed of every random draw in the statistics.
        extra_config: more configuration to record and hash (e.g. the CLI's arguments).
        show_progress: tqdm progress bar over questions; ``None`` follows the ``heal_rag`` logger (bars at
            INFO); off when ``TQDM_DISABLE=1``.
        pairs: the ``(a, b)`` configuration pairs to test (``b - a``); None: every pair. When given, the two
            best configurations by nDCG@10 are tested too (runner-up, winner), so a report can always
            state the winner's margin with its p-value.

    RAGAS (``pip install "heal-rag[eval]"``) adds its id- and string-based context precision/recall; without
    it the IR metrics (nDCG@10, MRR@10, Recall@k, via ranx) are computed and a note says what is missing.
    An LLM judge always needs RAGAS.

    Returns:
        A :class:`RAGEvaluationResult`.

    Raises:
        ValueError: on duplicate or missing configurations, bad ``k``, or retrieved ids that do not belong to
            the corpus.

    """
    from tqdm.auto import tqdm

    from heal_rag.evaluation.ragas_metrics import RetrievalMetrics, import_ragas, ragas_available

    configurations = list(configurations)
    if not configurations:
        raise InvalidValueError("evaluate_rag needs at least one RAGConfiguration.")
    names = [c.name for c in configurations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidValueError(f"Configuration names must be unique; duplicated: {duplicates}.")
    if not isinstance(k, int) or k < 1:
        raise InvalidValueError(f"k must be a positive integer; got {k!r}.")
    if pairs is not None:
        unknown = sorted({n for pair in pairs for n in pair if n not in names})
        if unknown:
            raise InvalidValueError(f"pairs name unknown configuration(s) {unknown}; known: {names}.")
    retrieval_metrics = None
    if ragas_available():
        retrieval_metrics = RetrievalMetrics()
    elif judge is not None:
        import_ragas()  # raises the ImportError that names the extra
    judge_obj = _judge_from_spec(judge, judge_embeddings, judge_timeout)
    run_config: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "question_set": questions.name,
        "question_set_fingerprint": questions.fingerprint,
        "n_questions": len(questions.questions),
        "k": k,
        "configurations": {c.name: c.describe() for c in configurations},
        "judge": judge_obj.describe() if judge_obj is not None else None,
        **dict(extra_config or {}),
    }
    config_hash = _config_hash(run_config)
    run_config["config_hash"] = config_hash
    out_path = Path(out_dir) if out_dir is not None else None
    checkpoint = _Checkpoint(out_path, config_hash, resume)
    runner = _Runner(questions, retrieval_metrics, judge_obj)

    question_ids = list(questions.questions)
    disable = not resolve_show_progress(show_progress)
    try:
        for question_id in tqdm(question_ids, desc="RAG evaluation", unit="question", disable=disable):
            for config in configurations:
                if checkpoint.get(config.name, question_id) is not None:
                    continue
                checkpoint.append(runner.run(config, question_id))
    except KeyboardInterrupt:
        if checkpoint.path is not None:
            logger.warning(
                "interrupted: %s keeps what was done; re-run the same command to resume", checkpoint.path
            )
        raise

    records = {c.name: {q: checkpoint.get(c.name, q) for q in question_ids} for c in configurations}
    return _aggregate(
        questions,
        configurations,
        records,
        judge_obj,
        k,
        run_config,
        checkpoint,
        n_resamples,
        confidence,
        seed,
        pairs,
        ragas_metrics=retrieval_metrics is not None,
    )


def ranked_configurations(summary: Mapping[str, Mapping[str, float]], metric: str) -> list[str]:
    """Return the configurations with a finite mean ``metric``, best first (ties keep their order).

    The headline of a report and the winner-vs-runner-up test both take the first two of this ranking.
    """
    higher_is_better = METRIC_INFO.get(metric, (True, ""))[0]
    finite = {
        name: value
        for name, value in ((n, means.get(metric)) for n, means in summary.items())
        if value is not None and math.isfinite(value)
    }
    return sorted(finite, key=finite.__getitem__, reverse=higher_is_better)


def _aggregate(
    questions: QuestionSet,
    configurations: Sequence[RAGConfiguration],
    records: dict[str, dict[str, Any]],
    judge: RagasJudge | None,
    k: int,
    run_config: dict[str, Any],
    checkpoint: _Checkpoint,
    n_resamples: int,
    confidence: float,
    seed: int,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    ragas_metrics: bool = True,
) -> RAGEvaluationResult:
    from heal_rag.evaluation.ragas_metrics import RETRIEVAL_METRICS

    question_ids = list(questions.questions)
    per_question: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    n_unjudged = sum(1 for q in question_ids if not questions.relevant(q))
    if n_unjudged:
        notes.append(
            f"{n_unjudged} question(s) have no relevant document in the qrels: retrieval metrics skip them."
        )
    for config in configurations:
        recs = records[config.name]
        ir = _ir_per_question(questions, recs, k)
        metric_names = ["ndcg@10", "mrr@10", f"recall@{k}", *(RETRIEVAL_METRICS if ragas_metrics else ())]
        if config.generates:
            metric_names.append("ungrounded_answers")
            if questions.decisions:
                metric_names.append("decision_accuracy")
            if judge is not None:
                metric_names.extend(judge.names)
        arrays: dict[str, np.ndarray] = {}
        for name in metric_names:
            values = np.full(len(question_ids), np.nan)
            for i, q in enumerate(question_ids):
                if name in ir:
                    values[i] = ir[name].get(q, np.nan)
                else:
                    value = recs[q].get("scores", {}).get(name)
                    values[i] = np.nan if value is None else value
            arrays[name] = values
        per_question[config.name] = arrays
        errors = [r.get("errors", {}) for r in recs.values()]
        judge_failures = {
            name: sum(
                1
                for e in errors
                if f"judge:{name}" in e and not str(e[f"judge:{name}"]).startswith("skipped")
            )
            for name in (judge.names if judge is not None and config.generates else [])
        }
        counts[config.name] = {
            "questions": len(question_ids),
            "retrieval_failures": sum(1 for e in errors if "retrieval" in e),
            "generation_failures": sum(1 for e in errors if "generation" in e),
            "answered": sum(1 for r in recs.values() if r.get("answered")) if config.generates else None,
            "judge_failures": judge_failures,
            "nan": {name: int(np.isnan(values).sum()) for name, values in arrays.items()},
        }
    generating = [c for c in configurations if c.generates]
    if not generating:
        notes.append(
            "No generator: ungrounded_answers and decision_accuracy need answers (--llm local or "
            "an endpoint URL)."
        )
    if not ragas_metrics:
        notes.append(
            "RAGAS is not installed: its context precision/recall were not computed (the IR metrics were); "
            'pip install "heal-rag[eval]" adds them.'
        )
    if judge is None:
        notes.append("No LLM judge: faithfulness, answer_correctness and answer_relevancy were not computed.")
    elif generating and not questions.references:
        notes.append("The questions have no reference answers: answer_correctness was skipped (not faked).")
    if generating and not questions.decisions:
        notes.append("The questions have no gold yes/no/maybe decisions: decision_accuracy was not computed.")

    summary: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, ConfidenceInterval]] = {}
    for name, arrays in per_question.items():
        intervals[name] = {
            m: bootstrap_ci(v, n_resamples=n_resamples, confidence=confidence, seed=seed)
            for m, v in arrays.items()
        }
        summary[name] = {m: ci.mean for m, ci in intervals[name].items()}
    if pairs is not None:
        pairs = list(dict.fromkeys(tuple(p) for p in pairs))
        ranked = ranked_configurations(summary, "ndcg@10")
        if len(ranked) >= 2 and (ranked[1], ranked[0]) not in pairs and (ranked[0], ranked[1]) not in pairs:
            pairs.append((ranked[1], ranked[0]))
    comparisons = compare_configurations(
        per_question, n_resamples=n_resamples, confidence=confidence, seed=seed, pairs=pairs
    )
    return RAGEvaluationResult(
        question_ids=question_ids,
        records=records,
        per_question=per_question,
        summary=summary,
        intervals=intervals,
        comparisons=comparisons,
        counts=counts,
        notes=notes,
        config=run_config,
        checkpoint=None if checkpoint.path is None else str(checkpoint.path),
    )


# ------------------------------------------------------------------------------------------------------------
# PubMedQA mixed with distractors
# ------------------------------------------------------------------------------------------------------------


def load_pubmedqa_mixed(
    pubmedqa_dir: str | os.PathLike[str],
    distractor_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "test",
    max_questions: int | None = None,
    n_distractors: int | None = None,
    distractor_prefix: str = "distractor:",
    seed: int = 0,
) -> tuple[RetrievalDataset, QuestionSet]:
    """PubMedQA (PQA-L) questions over their passages mixed with another corpus's documents as distractors.

    PubMedQA questions are nearly their article titles, so retrieval over PubMedQA alone is too easy; mixing
    in e.g. SciFact abstracts makes wrong contexts plausible. Reference answers are the abstracts'
    conclusions (``long_answer``), gold decisions the ``final_decision`` labels.

    Args:
        pubmedqa_dir: the BEIR-style PubMedQA folder (``corpus.jsonl`` with ``long_answer``,
            ``queries.jsonl`` with ``final_decision``, ``qrels/<split>.tsv``).
        distractor_dir: a BEIR folder whose documents are added as distractors (ids prefixed with
            ``distractor_prefix`` so they cannot collide with PubMed ids); None adds none.
        split: qrels split of PubMedQA (``test``, ``trainval`` or ``all``).
        max_questions: a seeded sample of the questions.
        n_distractors: a seeded sample of the distractor documents (None: all of them).
        distractor_prefix: prefix of distractor ids.
        seed: seed of both samples.

    Returns:
        ``(dataset, questions)``: the mixed corpus with the selected questions, and the question set with
        references and decisions.

    """
    from heal_rag.datasets import Document, RetrievalDataset, load_beir

    folder = Path(pubmedqa_dir)
    if not (folder / "queries.jsonl").exists():
        raise InputNotFoundError(f"{folder} is not a PubMedQA BEIR folder: queries.jsonl is missing.")
    base = load_beir(folder, split=split, name="pubmedqa")
    decisions: dict[str, str] = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = loads_json(line)
                if row.get("final_decision"):
                    decisions[str(row["_id"])] = str(row["final_decision"])
    references: dict[str, str] = {}
    for line in _read_lines(folder / "corpus.jsonl"):
        row = loads_json(line)
        if row.get("long_answer"):
            references[str(row["_id"])] = str(row["long_answer"])
    # a question's reference is the conclusion of its own (single relevant) abstract
    question_refs = {
        q: references[docs[0]]
        for q, judged in base.qrels.items()
        if (docs := [d for d, g in judged.items() if g > 0]) and docs[0] in references
    }
    corpus = dict(base.corpus)
    if distractor_dir is not None:
        distractors = load_beir(distractor_dir, split=None, name="distractors")
        ids = list(distractors.corpus)
        if n_distractors is not None and n_distractors < len(ids):
            keep = set(random.Random(seed).sample(ids, n_distractors))
            ids = [d for d in ids if d in keep]
        for d in ids:
            doc = distractors.corpus[d]
            new_id = f"{distractor_prefix}{d}"
            corpus[new_id] = Document(id=new_id, text=doc.text, title=doc.title, metadata=dict(doc.metadata))
    mixed = RetrievalDataset(
        corpus=corpus, queries=base.queries, qrels=base.qrels, name="pubmedqa+distractors"
    )
    questions = QuestionSet.from_dataset(
        mixed, references=question_refs, decisions=decisions, max_questions=max_questions, seed=seed
    )
    questions.name = mixed.name if distractor_dir is not None else "pubmedqa"
    return mixed, questions


def _read_lines(path: Path) -> Iterable[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield line


def __getattr__(name: str) -> Any:
    # make_endpoint_llm moved to heal_rag.llms with the other LLM constructors (issue 11)
    if name == "make_endpoint_llm":
        import warnings

        from heal_rag.llms import make_endpoint_llm

        warnings.warn(
            "heal_rag.evaluation.rag.make_endpoint_llm moved to heal_rag.llms.make_endpoint_llm.",
            DeprecationWarning,
            stacklevel=2,
        )
        return make_endpoint_llm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
