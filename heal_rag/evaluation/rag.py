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
- judge-free, with a generator: ``answers_without_evidence`` (evidence exposure; called
  ``ungrounded_answers`` before) = 1 when the question was answered from contexts that contain none of its
  relevant documents, 0 when they contain one (lower is better). It is a property of the retrieval behind
  the answers, not a judgment of the answers. ``decision_accuracy`` = the answer's leading yes/no/maybe
  equals the gold decision: a measure of the answers, readable only next to the gold-context and
  no-context conditions of the same generator (:mod:`heal_rag.evaluation.references`).
- LLM judge (opt-in): RAGAS ``faithfulness``, ``answer_correctness``, ``answer_relevancy``.

Example:
    >>> questions = load_beir("data/scifact", split="test").sample_queries(50)  # doctest: +SKIP
    >>> configs = [RAGConfiguration("base", retriever=base_index.as_retriever(similarity_top_k=10)),
    ...            RAGConfiguration("heal", retriever=heal_retriever)]  # doctest: +SKIP
    >>> result = evaluate_rag(configs, questions, out_dir="runs/rag")  # doctest: +SKIP
    >>> result.summary["heal"]["ndcg@10"]  # doctest: +SKIP

"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heal_rag._checks import check_passage_max_tokens
from heal_rag._deprecation import warn_deprecated
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.datasets import DECISIONS, CorpusDocument, RetrievalDataset
from heal_rag.errors import InvalidTypeError, InvalidValueError
from heal_rag.evaluation._checkpoint import CHECKPOINT_FORMAT, Checkpoint, config_hash
from heal_rag.evaluation._rag_runner import (
    DECISION_QA_TEMPLATE,
    DOC_ID_METADATA_KEYS,
    RAGRunner,
    node_doc_id,
    parse_decision,
)
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
    "DECISION_QA_TEMPLATE",
    "DECISIONS",
    "CHECKPOINT_FORMAT",
    "load_pubmedqa_mixed",
    "METRIC_INFO",
    "ranked_configurations",
]

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
    "answers_without_evidence": (False, "answered from contexts lacking every relevant passage"),
    "decision_accuracy": (True, "leading yes/no/maybe equals the gold decision"),
    "faithfulness": (True, "RAGAS judge: answer statements supported by the contexts"),
    "answer_correctness": (True, "RAGAS judge: agreement with the reference answer"),
    "answer_relevancy": (True, "RAGAS judge: the answer addresses the question"),
}


class QuestionSet:
    """Deprecated: a question set is a :class:`heal_rag.datasets.RetrievalDataset` (issue 11).

    ``QuestionSet(questions, qrels, contexts, references=..., decisions=..., name=...)`` returns the
    equivalent ``RetrievalDataset`` (``questions`` become its queries, ``contexts`` its corpus), and
    ``QuestionSet.from_dataset(dataset, max_questions=n, seed=s)`` returns
    ``dataset.sample_queries(n, seed=s)`` with the given references and decisions. Both warn.
    """

    def __new__(  # type: ignore[misc]
        cls,
        questions: Mapping[str, str],
        qrels: Mapping[str, Mapping[str, int]],
        contexts: Mapping[str, str],
        references: Mapping[str, str] | None = None,
        decisions: Mapping[str, str] | None = None,
        name: str = "",
    ) -> RetrievalDataset:
        """Return the equivalent :class:`~heal_rag.datasets.RetrievalDataset` (deprecated)."""
        _warn_question_set("QuestionSet(...)", "RetrievalDataset(corpus, queries, qrels, ...)")
        if not questions:
            raise InvalidValueError(f"The question set {name!r} has no questions.")
        return RetrievalDataset(
            corpus={str(d): CorpusDocument(str(d), str(text)) for d, text in contexts.items()},
            queries={str(q): str(text) for q, text in questions.items()},
            qrels={str(q): {str(d): int(g) for d, g in judged.items()} for q, judged in qrels.items()},
            name=name,
            references={q: a for q, a in (references or {}).items() if q in questions},
            decisions={q: d for q, d in (decisions or {}).items() if q in questions},
        )

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
    ) -> RetrievalDataset:
        """Return ``dataset.sample_queries(max_questions, seed=seed)`` with these answers (deprecated)."""
        _warn_question_set("QuestionSet.from_dataset(...)", "RetrievalDataset.sample_queries(...)")
        with_answers = RetrievalDataset(
            corpus=dataset.corpus,
            queries=dataset.queries,
            qrels=dataset.qrels,
            name=dataset.name,
            references={
                **dataset.references,
                **{q: a for q, a in (references or {}).items() if q in dataset.queries},
            },
            decisions={
                **dataset.decisions,
                **{q: d for q, d in (decisions or {}).items() if q in dataset.queries},
            },
        )
        return with_answers.sample_queries(max_questions, seed=seed, only_judged=only_judged)


def _warn_question_set(old: str, new: str) -> None:
    warn_deprecated(
        f"heal_rag.evaluation.rag.{old}",
        f"questions are a heal_rag.datasets.RetrievalDataset (with references and decisions); use {new}",
        stacklevel=4,
    )


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
        passage_max_tokens: cut each passage the generator (and the judge) sees to its first this many
            tokens of LlamaIndex's tokenizer, at a sentence or word boundary (None: whole passages). The
            prompt, not the answer, is what costs time on a CPU: 256 matches what a 256-token embedding
            model read of the passage. Retrieval and the evidence measures still use the whole document.
        text_qa_template: prompt of the response synthesizer (default: LlamaIndex's, or a yes/no/maybe
            prompt when the question set has gold decisions).
        description: what the configuration is (model, retriever mode, ...); recorded in the report and in
            the checkpoint hash, so describe everything that changes results.
        reference: a reference condition (the gold passages, no context: see
            :func:`heal_rag.systems.reference_systems`), not a system: reported and tested, never ranked
            best nor named the winner.

    Example:
        >>> RAGConfiguration("base", retriever=index.as_retriever(similarity_top_k=10))  # doctest: +SKIP

    """

    name: str
    retriever: BaseRetriever | None = None
    query_engine: BaseQueryEngine | None = None
    llm: LLM | None = None
    generation_top_n: int | None = 3
    passage_max_tokens: int | None = None
    text_qa_template: BasePromptTemplate | str | None = None
    description: dict[str, Any] = field(default_factory=dict)
    reference: bool = False

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
        check_passage_max_tokens(self.passage_max_tokens, f"Configuration {self.name!r}: ")

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
            if self.passage_max_tokens is not None:
                out["passage_max_tokens"] = self.passage_max_tokens
        if self.text_qa_template is not None:
            template = self.text_qa_template
            out["text_qa_template"] = (
                template if isinstance(template, str) else getattr(template, "template", "")
            )
        out.update(self.description)
        if self.reference:
            out["reference"] = True
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
        references: the configurations that are reference conditions, not systems (never ranked best).

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
    references: list[str] = field(default_factory=list)

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


# ------------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------------


def _resolve_ir_functions() -> Any:
    from heal_rag.evaluation import metrics as ir_module

    return ir_module


def _ir_per_question(
    dataset: RetrievalDataset, records: Mapping[str, dict[str, Any]], k: int
) -> dict[str, dict[str, float]]:
    """nDCG@10, MRR@10 and Recall@k per question from the retrieved rankings, via the shared ranx wrapper."""
    names = ["ndcg@10", "mrr@10", f"recall@{k}"]
    qrels = {q: {d: g for d, g in dataset.qrels.get(q, {}).items() if g > 0} for q in records}
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
    dataset: RetrievalDataset,
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
        dataset: the questions (its queries, in order), their qrels over its corpus, and optional reference
            answers and gold decisions (e.g. ``load_beir(...).sample_queries(100)``).
        judge: an opt-in LLM judge: a :class:`RagasJudge` or any LlamaIndex LLM (then ``judge_embeddings``
            is required). None: retrieval metrics and judge-free signals only.
        judge_embeddings: a LlamaIndex embedding for the judge's embedding-based metrics.
        judge_timeout: seconds per judge metric and sample when ``judge`` is an LLM.
        k: the cut-off of Recall@k (nDCG and MRR are at 10).
        out_dir: folder of the JSONL checkpoint (``checkpoints/rag-<config hash>.jsonl``); None keeps
            everything in memory. Records are appended per question, so an interrupted run resumes.
        resume: reuse a checkpoint of the same configuration (questions whose retrieval or generation failed,
            e.g. while a server was down, are run again); False starts clean.
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
    if not isinstance(dataset, RetrievalDataset):
        raise InvalidTypeError(
            "evaluate_rag needs a heal_rag.datasets.RetrievalDataset of questions; "
            f"got {type(dataset).__name__}."
        )
    if not dataset.queries:
        raise InvalidValueError(f"Dataset {dataset.name!r} has no questions (queries) to evaluate.")
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
        "question_set": dataset.name,
        "question_set_fingerprint": dataset.fingerprint,
        "n_questions": len(dataset.queries),
        "k": k,
        "configurations": {c.name: c.describe() for c in configurations},
        "judge": judge_obj.describe() if judge_obj is not None else None,
        **dict(extra_config or {}),
    }
    run_hash = config_hash(run_config)
    run_config["config_hash"] = run_hash
    out_path = Path(out_dir) if out_dir is not None else None
    checkpoint = Checkpoint(out_path, run_hash, resume)
    runner = RAGRunner(dataset, retrieval_metrics, judge_obj)

    question_ids = list(dataset.queries)
    disable = not resolve_show_progress(show_progress)
    try:
        for question_id in tqdm(question_ids, desc="RAG evaluation", unit="question", disable=disable):
            for config in configurations:
                done = checkpoint.get(config.name, question_id)
                if done is not None and not _failed(done):
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
        dataset,
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


#: New metric name -> its name in checkpoints written before the rename (read back on resume).
_RENAMED_METRICS = {"answers_without_evidence": "ungrounded_answers"}


def _failed(record: Mapping[str, Any]) -> bool:
    """Whether a checkpoint record's retrieval or generation failed (a resumed run tries it again)."""
    return bool({"retrieval", "generation"} & set(record.get("errors", {})))


def ranked_configurations(
    summary: Mapping[str, Mapping[str, float]], metric: str, exclude: Iterable[str] = ()
) -> list[str]:
    """Return the configurations with a finite mean ``metric``, best first (ties keep their order).

    The headline of a report and the winner-vs-runner-up test both take the first two of this ranking;
    ``exclude`` leaves out the reference conditions, which are no contenders.
    """
    higher_is_better = METRIC_INFO.get(metric, (True, ""))[0]
    excluded = set(exclude)
    finite = {
        name: value
        for name, value in ((n, means.get(metric)) for n, means in summary.items())
        if name not in excluded and value is not None and math.isfinite(value)
    }
    return sorted(finite, key=finite.__getitem__, reverse=higher_is_better)


def _aggregate(
    dataset: RetrievalDataset,
    configurations: Sequence[RAGConfiguration],
    records: dict[str, dict[str, Any]],
    judge: RagasJudge | None,
    k: int,
    run_config: dict[str, Any],
    checkpoint: Checkpoint,
    n_resamples: int,
    confidence: float,
    seed: int,
    pairs: Sequence[tuple[str, str]] | None = None,
    *,
    ragas_metrics: bool = True,
) -> RAGEvaluationResult:
    from heal_rag.evaluation.ragas_metrics import RETRIEVAL_METRICS

    question_ids = list(dataset.queries)
    per_question: dict[str, dict[str, np.ndarray]] = {}
    counts: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    n_unjudged = sum(1 for q in question_ids if not dataset.relevant(q))
    if n_unjudged:
        notes.append(
            f"{n_unjudged} question(s) have no relevant document in the qrels: retrieval metrics skip them."
        )
    for config in configurations:
        recs = records[config.name]
        ir = _ir_per_question(dataset, recs, k)
        metric_names = ["ndcg@10", "mrr@10", f"recall@{k}", *(RETRIEVAL_METRICS if ragas_metrics else ())]
        if config.generates:
            metric_names.append("answers_without_evidence")
            if dataset.decisions:
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
                    scores = recs[q].get("scores", {})
                    value = scores.get(name, scores.get(_RENAMED_METRICS.get(name, "")))
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
            "No generator: answers_without_evidence and decision_accuracy need answers (--llm local or "
            "an endpoint URL)."
        )
    if not ragas_metrics:
        notes.append(
            "RAGAS is not installed: its context precision/recall were not computed (the IR metrics were); "
            'pip install "heal-rag[eval]" adds them.'
        )
    if judge is None:
        notes.append("No LLM judge: faithfulness, answer_correctness and answer_relevancy were not computed.")
    elif generating and not dataset.references:
        notes.append("The questions have no reference answers: answer_correctness was skipped (not faked).")
    if generating and not dataset.decisions:
        notes.append("The questions have no gold yes/no/maybe decisions: decision_accuracy was not computed.")

    references = [c.name for c in configurations if c.reference]
    if references:
        notes.append(
            f"{' and '.join(references)}: reference conditions of the same generator (see "
            "heal_rag.systems.reference_systems), not systems; they are never ranked best. Decision accuracy "
            "says something about retrieval only when gold is clearly above no-context."
        )
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
        ranked = ranked_configurations(summary, "ndcg@10", exclude=references)
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
        references=references,
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
) -> tuple[RetrievalDataset, RetrievalDataset]:
    """Load PubMedQA with distractors (deprecated: use :func:`~heal_rag.evaluation.pubmedqa.load_pubmedqa`).

    Returns ``(dataset, questions)``: all the split's questions, and the seeded sample of ``max_questions``.
    """
    from heal_rag.evaluation.pubmedqa import load_pubmedqa

    warn_deprecated(
        "heal_rag.evaluation.rag.load_pubmedqa_mixed",
        "use heal_rag.evaluation.pubmedqa.load_pubmedqa(...).sample_queries(max_questions, seed=seed)",
    )
    dataset = load_pubmedqa(
        pubmedqa_dir,
        distractor_dir,
        split=split,
        n_distractors=n_distractors,
        distractor_prefix=distractor_prefix,
        seed=seed,
    )
    return dataset, dataset.sample_queries(max_questions, seed=seed)


def __getattr__(name: str) -> Any:
    # make_endpoint_llm moved to heal_rag.llms with the other LLM constructors (issue 11)
    if name == "make_endpoint_llm":
        from heal_rag.llms import make_endpoint_llm

        warn_deprecated(
            "heal_rag.evaluation.rag.make_endpoint_llm", "it moved to heal_rag.llms.make_endpoint_llm"
        )
        return make_endpoint_llm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
