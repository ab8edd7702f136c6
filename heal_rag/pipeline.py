"""The end-to-end pipeline: topic hierarchy, HEAL and flat fine-tunes, indexes, evaluation, report.

:func:`run_pipeline` is what ``heal-rag demo`` runs; it works on the bundled SciFact subset (the default), on
a BEIR folder or on a plain ``.jsonl`` / ``.txt`` corpus, fully offline unless an LLM endpoint is given.

Steps and the files they leave in ``out_dir``:

1. ``hierarchy/``: the HNMFk topic tree of the corpus (:meth:`Hierarchy.save`).
2. ``heal-model/``: the HEAL fine-tuned model directory (see :mod:`heal_rag.model_dir`). Training
   queries: the judged queries of ``train_split`` when the corpus has that split, else offline
   pseudo-queries. Evaluation questions are never trained on.
3. ``flat-model/``: the flat fine-tune, the baseline a user would otherwise train: the same pairs, steps,
   batch size, learning rate and seed, without the hierarchy (``heal-rag finetune --no-hierarchy``).
4. BM25 and the base, flat and HEAL models index the corpus (FAISS, exact inner product), and each dense
   model is also fused with BM25 (:func:`heal_rag.integrations.hybrid.hybrid_retriever`).
5. ``checkpoints/`` + ``report.md``, ``report.html``, ``report.json``: the seven configurations ``bm25``,
   ``base``, ``flat``, ``heal``, ``base+bm25``, ``flat+bm25``, ``heal+bm25`` evaluated side by side on the
   evaluation questions with paired tests (:data:`COMPARISONS`), a per-topic view and a one-line verdict
   (:func:`heal_rag.evaluation.rag.evaluate_rag`, :func:`heal_rag.evaluation.report.write_report`).
6. ``pipeline.json``: the run's configuration, the key of every finished step, timings.

Re-running into the same ``out_dir`` resumes: a step whose inputs (corpus, parameters, upstream steps) are
unchanged is reused, a step whose inputs changed is redone, and everything downstream of a redone step is
redone too, so a report never mixes results of different runs. ``restart=True`` redoes everything.
Steps 1-3 are :class:`_Stage` objects (the key of their inputs, how to load their saved output, how to make
it, what a rerun makes stale) run in order by one :class:`_StageRunner`.

Evaluation questions by corpus kind:

- bundled corpus / BEIR folder with qrels ``split``: its judged queries;
- a corpus without qrels (``.jsonl``, ``.txt``, a BEIR folder without the split): offline pseudo-queries
  (titles, else sentences) of a held-out, seeded sample of documents. They measure how well each model finds
  a document from its own title or sentence, an easier task than real user questions; the report says so.

Example:
    >>> from heal_rag.pipeline import run_pipeline
    >>> result = run_pipeline(out_dir="heal_rag_out")  # doctest: +SKIP
    >>> result.reports["html"]  # doctest: +SKIP
    PosixPath('heal_rag_out/report.html')
    >>> result.evaluation.summary["heal"]["ndcg@10"]  # doctest: +SKIP

"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from heal_rag._checks import check_passage_max_tokens, check_positive_int
from heal_rag._io import atomic_write_json, check_writable, loads_json
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.errors import InputNotFoundError, InvalidValueError, OutputExistsError
from heal_rag.training_args import HEALTrainingArguments

if TYPE_CHECKING:  # pragma: no cover
    from heal_rag.datasets import CorpusDocument, RetrievalDataset
    from heal_rag.evaluation.rag import RAGEvaluationResult
    from heal_rag.hierarchy import Hierarchy

logger = logging.getLogger(__name__)

__all__ = ["PipelineResult", "run_pipeline", "DEMO_DEFAULTS", "STATE_FILE"]

STATE_FILE = "pipeline.json"
STATE_FORMAT = 1
HIERARCHY_SUBDIR = "hierarchy"
MODEL_SUBDIR = "heal-model"
FLAT_SUBDIR = "flat-model"
CHECKPOINT_SUBDIR = "checkpoints"
REPORT_FILES = ("report.md", "report.html", "report.json")
# everything the pipeline writes in out_dir; nothing else there is ever touched
OWNED = (STATE_FILE, HIERARCHY_SUBDIR, MODEL_SUBDIR, FLAT_SUBDIR, CHECKPOINT_SUBDIR, *REPORT_FILES)
# The paired tests the report always shows (b - a): HEAL against what a user would otherwise pick, alone
# and on top of BM25. evaluate_rag adds the winner against the runner-up.
COMPARISONS = (
    ("flat", "heal"),
    ("base", "heal"),
    ("bm25", "heal"),
    ("bm25", "heal+bm25"),
    ("base+bm25", "heal+bm25"),
    ("flat+bm25", "heal+bm25"),
)

# Settings that keep the demo within ~4 minutes on a 2-core laptop (see docs in heal_rag/cli/_demo.py).
DEMO_DEFAULTS: dict[str, Any] = {
    "max_steps": 20,
    "batch_size": 32,
    "max_seq_length": 128,
    "local_llm_questions": 10,
    "llm_max_new_tokens": 64,
    # the prompt is what costs time on a CPU: three passages cut to what the 256-token retrievers read
    "passage_max_tokens": 256,
}

#: What heal-rag's own study found, quoted in every report so that a demo's one-run HEAL - flat difference is
#: read against it (issue 9; evals/study_heal.py, evals/results/study_heal.md).
STUDY_NOTE = (
    "heal-rag's own study (evals/results/study_heal.md: SciFact test, 3 seeds, equal budgets, defaults "
    "chosen on a dev split) finds HEAL level with a plain fine-tune given the same mined hard negatives: "
    "nDCG@10 0.743 vs 0.743 dense (p = 0.97) and 0.770 vs 0.773 fused with BM25 (p = 0.51). Both beat the "
    "base model by about 0.10; the hierarchy itself has not yet been shown to help retrieval. On MED, "
    "trained on pseudo-queries only (no judged query), both fine-tunes fell about 0.04 below the base model: "
    "without judged training queries, check the fine-tune against the base model before using it."
)

# Held-out pseudo-query questions for corpora without qrels: a share of the documents, within bounds.
_PSEUDO_EVAL_SHARE = 0.2
_PSEUDO_EVAL_MIN = 5
_PSEUDO_EVAL_MAX = 300


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` produced.

    Attributes:
        out_dir: the output folder.
        hierarchy: the topic hierarchy of the corpus.
        model_dir: the saved HEAL model directory.
        evaluation: the side-by-side evaluation (``evaluation.summary[name][metric]``).
        reports: ``{"md", "html", "json"}`` -> path of each report file.
        timings: seconds per step (``hierarchy``, ``finetune``, ``finetune_flat``, ``index``,
            ``evaluation``, ``total``); a reused step counts its (short) loading time.
        reused: the steps taken from an earlier run in the same folder.
        notes: what the user should know about this run (question source, skipped parts).

    Example:
        >>> result = run_pipeline(out_dir="out")  # doctest: +SKIP
        >>> print(result.summary_table())  # doctest: +SKIP

    """

    out_dir: Path
    hierarchy: Hierarchy
    model_dir: Path
    evaluation: RAGEvaluationResult
    reports: dict[str, Path]
    timings: dict[str, float]
    reused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary_table(self) -> str:
        """Return the terminal summary table of the evaluation (means, best marked ``*``)."""
        from heal_rag.evaluation.report import summary_table

        return summary_table(self.evaluation)


# ------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------


@dataclass
class _Inputs:
    """The corpus, the evaluation questions and the training queries, resolved from the user's corpus."""

    name: str
    source: str
    documents: list[CorpusDocument]
    eval_dataset: RetrievalDataset
    questions: RetrievalDataset  # the evaluation questions: a seeded sample of eval_dataset's queries
    train_queries: Any  # a RetrievalDataset split, "pseudo" or a list of TrainingPair
    train_description: str
    question_description: str
    notes: list[str]


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _corpus_fingerprint(documents: list[CorpusDocument]) -> str:
    digest = hashlib.sha256()
    for doc in documents:
        digest.update(doc.id.encode("utf-8") + b"\x00" + doc.full_text.encode("utf-8") + b"\x01")
    return digest.hexdigest()[:16]


def _resolve_inputs(
    corpus: str | os.PathLike[str] | None,
    split: str,
    train_split: str | None,
    max_questions: int | None,
    seed: int,
) -> _Inputs:
    from heal_rag.datasets import (
        RetrievalDataset,
        available_splits,
        check_train_split,
        demo_corpus_path,
        load_beir,
        load_corpus,
    )

    notes: list[str] = []
    if corpus is None:
        folder: Path | None = demo_corpus_path()
        source = "bundled SciFact subset (heal_rag/data/scifact_demo, CC BY 4.0 / ODC-By 1.0)"
    else:
        path = Path(corpus)
        if not path.exists():
            raise InputNotFoundError(
                f"Corpus {path} does not exist. Give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/), a "
                ".jsonl(.gz) file (_id/id, title, text) or a .txt file (one document per line)."
            )
        folder = path if path.is_dir() else None
        source = str(path.resolve())

    splits = available_splits(folder) if folder is not None else []
    if folder is not None and splits and split not in splits:
        raise InvalidValueError(
            f"{folder} has no qrels split {split!r} to evaluate on (available: {', '.join(splits)}). "
            "Pass split=<one of them> (CLI: --split)."
        )
    if folder is not None and split in splits:
        check_train_split(train_split, split, advice=", or None for offline pseudo-queries")
        eval_dataset = load_beir(folder, split=split)
        documents = eval_dataset.documents
        questions = eval_dataset.sample_queries(max_questions, seed=seed)
        question_description = f"judged queries of qrels split {split!r}"
        if train_split is not None and train_split in splits:
            train_queries: Any = load_beir(folder, split=train_split)
            train_description = f"judged queries of qrels split {train_split!r}"
        else:
            train_queries = "pseudo"
            train_description = "offline pseudo-queries (titles, else sentences) of the corpus"
            why = (
                f"The corpus has no qrels split {train_split!r}"
                if train_split is not None
                else "No train split"
            )
            notes.append(
                f"{why}: flat and HEAL were both trained on offline pseudo-queries (titles, else sentences) "
                "of the corpus, with the same pairs and steps; judged training queries train better."
            )
        return _Inputs(
            name=eval_dataset.name,
            source=source,
            documents=documents,
            eval_dataset=eval_dataset,
            questions=questions,
            train_queries=train_queries,
            train_description=train_description,
            question_description=question_description,
            notes=notes,
        )

    # A corpus without qrels: held-out pseudo-queries are the evaluation questions.
    from heal_rag.training.queries import make_pseudo_queries

    documents = load_corpus(folder if folder is not None else corpus)  # type: ignore[arg-type]
    if not documents:
        raise InvalidValueError(f"The corpus {source} has no documents.")
    pairs = make_pseudo_queries(documents, seed=seed)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = min(_PSEUDO_EVAL_MAX, max(_PSEUDO_EVAL_MIN, round(_PSEUDO_EVAL_SHARE * len(pairs))))
    if len(pairs) < n_eval + 2:
        raise InvalidValueError(
            f"The corpus {source} gives only {len(pairs)} pseudo-queries (documents need a title or at least "
            f"two sentences); the pipeline needs at least {n_eval + 2} to hold {n_eval} out for evaluation "
            "and train on the rest. Give more documents, or a BEIR folder with qrels."
        )
    held_out = [pairs[i] for i in sorted(order[:n_eval])]
    train_pairs = [pairs[i] for i in sorted(order[n_eval:])]
    queries = {f"pseudo-{i}": p.query for i, p in enumerate(held_out)}
    qrels = {f"pseudo-{i}": {p.doc_id: 1} for i, p in enumerate(held_out)}
    name = (folder or Path(str(corpus))).name
    eval_dataset = RetrievalDataset(
        corpus={d.id: d for d in documents}, queries=queries, qrels=qrels, name=f"{name} (pseudo-queries)"
    )
    questions = eval_dataset.sample_queries(max_questions, seed=seed)
    held_docs = {p.doc_id for p in held_out}
    train_pairs = [p for p in train_pairs if p.doc_id not in held_docs]  # never train on a held-out document
    notes.append(
        "The corpus has no relevance judgments: flat and HEAL trained on offline pseudo-queries of the other "
        "documents, and the evaluation questions are offline pseudo-queries (a title "
        "or a sentence) of held-out documents, never trained on. They measure how well each model finds a "
        "document from its own title/sentence, an easier task than real questions; use a BEIR folder with "
        "qrels for real figures."
    )
    return _Inputs(
        name=eval_dataset.name,
        source=source,
        documents=documents,
        eval_dataset=eval_dataset,
        questions=questions,
        train_queries=train_pairs,
        train_description=f"offline pseudo-queries of {len(train_pairs)} non-held-out documents",
        question_description=f"pseudo-queries of {len(held_out)} held-out documents",
        notes=notes,
    )


# ------------------------------------------------------------------------------------------------------------
# output folder and resume state
# ------------------------------------------------------------------------------------------------------------


def _prepare_out_dir(out: Path, restart: bool) -> dict[str, Any]:
    """Check that ``out`` is ours (or empty) and return the state of an earlier run (empty when none)."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"The output path {out} is a file; give a folder.")
    state_path = out / STATE_FILE
    if out.is_dir() and not state_path.is_file():
        ours = [p for p in out.iterdir() if not p.name.startswith(".")]
        # A folder written by an older demo holds only hierarchy/ (a saved hierarchy): adopt it, rebuild.
        legacy = (
            len(ours) == 1 and ours[0].name == HIERARCHY_SUBDIR and (ours[0] / "hierarchy.json").is_file()
        )
        if ours and not legacy:
            names = ", ".join(sorted(p.name for p in ours)[:4]) + (", ..." if len(ours) > 4 else "")
            raise OutputExistsError(
                f"{out} is not empty ({names}) and holds no earlier heal-rag pipeline run ({STATE_FILE}); "
                "its files are left alone. Choose a new or empty output folder."
            )
    state: dict[str, Any] = {}
    if state_path.is_file() and not restart:
        try:
            state = loads_json(state_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            logger.warning("%s is unreadable; starting clean", state_path)
            state = {}
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            state = {}
    out.mkdir(parents=True, exist_ok=True)
    if restart:
        _remove(out, OWNED)
    return state


def _remove(out: Path, names: tuple[str, ...] | list[str]) -> None:
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _save_state(out: Path, state: dict[str, Any]) -> None:
    atomic_write_json(out / STATE_FILE, state)


@dataclass(frozen=True)
class _Stage:
    """One resumable step: the key of its inputs, how to load its saved output, how to (re)make it."""

    name: str  # its key in pipeline.json's "stages" and its on_step name
    key: str  # hash of everything its output depends on
    load: Callable[[], Any]  # the saved output, or None when it is missing or unusable
    run: Callable[[], Any]  # make (and save) the output
    invalidates: tuple[str, ...]  # files and folders under out/ that a rerun makes stale
    reusing: str  # log lines
    running: str


class _StageRunner:
    """Runs stages in order: reuse what an earlier run left when its key matches, else remake it."""

    def __init__(
        self,
        out: Path,
        old_stages: Mapping[str, str],
        state: dict[str, Any],
        timings: dict[str, float],
        reused: list[str],
        on_step: Callable[[str, Any], None] | None,
    ) -> None:
        self.out, self.old_stages, self.state = out, old_stages, state
        self.timings, self.reused, self.on_step = timings, reused, on_step
        self.rebuilt = False  # whether any stage so far was remade (later outputs are then stale)

    def run(self, stage: _Stage, *, force: bool = False) -> Any:
        start = time.perf_counter()
        value = None
        if not force and self.old_stages.get(stage.name) == stage.key:
            value = stage.load()
        if value is not None:
            self.reused.append(stage.name)
            logger.info(stage.reusing)
        else:
            self.rebuilt = True
            _remove(self.out, stage.invalidates)
            logger.info(stage.running)
            value = stage.run()
        self.state["stages"][stage.name] = stage.key
        _save_state(self.out, self.state)
        self.timings[stage.name] = round(time.perf_counter() - start, 2)
        if self.on_step is not None:
            self.on_step(stage.name, value)
        return value


# ------------------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------------------


def run_pipeline(
    corpus: str | os.PathLike[str] | None = None,
    *,
    out_dir: str | os.PathLike[str],
    split: str = "test",
    train_split: str | None = "train",
    base_model: str | None = None,
    llm: Any = None,
    llm_model: str = "default",
    llm_max_new_tokens: int = DEMO_DEFAULTS["llm_max_new_tokens"],
    hierarchy_params: Mapping[str, Any] | None = None,
    max_steps: int | None = DEMO_DEFAULTS["max_steps"],
    epochs: int = 1,
    batch_size: int = DEMO_DEFAULTS["batch_size"],
    learning_rate: float = 2e-5,
    max_seq_length: int = DEMO_DEFAULTS["max_seq_length"],
    retriever: Literal["flat", "rescore", "route"] = "flat",
    top_k: int = 10,
    generation_top_n: int = 3,
    passage_max_tokens: int | None = DEMO_DEFAULTS["passage_max_tokens"],
    max_questions: int | Literal["auto"] | None = "auto",
    n_resamples: int = 10_000,
    seed: int = 0,
    device: str | None = None,
    restart: bool = False,
    show_progress: bool | None = None,
    on_step: Callable[[str, Any], None] | None = None,
) -> PipelineResult:
    """Run heal-rag end to end: hierarchy, HEAL fine-tune, base vs HEAL indexes, evaluation, reports.

    Args:
        corpus: ``None`` (the bundled SciFact subset), a BEIR folder, or a ``.jsonl(.gz)`` / ``.txt`` corpus
            (then held-out pseudo-queries are the questions; see the module docstring).
        out_dir: output folder (created; a folder of an earlier run is resumed, see the module docstring).
            A non-empty folder that holds no earlier run is refused, never overwritten.
        split: qrels split of the evaluation questions.
        train_split: qrels split of the training queries (``None`` or absent: offline pseudo-queries).
        base_model: sentence-transformers model name or path; ``None`` is the bundled all-MiniLM-L6-v2.
        llm: generator for the answers: ``None``/``"none"`` (retrieval metrics only), ``"local"`` (the
            offline SmolLM2-135M, ~60 tokens/s on a laptop CPU), an ``http(s)://`` URL of an
            OpenAI-compatible server, ``"MODULE:NAME"``, or any LlamaIndex LLM (see
            :func:`heal_rag.llms.resolve_llm`).
        llm_model: model name sent to an LLM URL.
        llm_max_new_tokens: answer length of the ``"local"`` LLM.
        hierarchy_params: :class:`~heal_rag.hierarchy.HNMFk` parameters (default: its defaults).
        max_steps: training steps (``None``: ``epochs`` full epochs).
        epochs: epochs when ``max_steps`` is None.
        batch_size: training batch size.
        learning_rate: training learning rate.
        max_seq_length: token limit while training and while indexing (the same for both models, so the
            comparison is fair).
        retriever: retriever of the HEAL configuration: ``flat`` (embedding only), ``rescore`` or ``route``
            (hierarchy-aware, see :class:`~heal_rag.integrations.HierarchicalRetriever`). The base model is
            always flat.
        top_k: documents retrieved per question.
        generation_top_n: retrieved documents the generator sees.
        passage_max_tokens: each passage the generator sees is cut to this many tokens (``None``: whole).
            With a generator, two reference conditions of the same generator are evaluated too: ``gold``
            (the judged passages alone) and ``no-context`` (see :func:`heal_rag.systems.reference_systems`).
        max_questions: a seeded sample of the evaluation questions; ``None`` all; ``"auto"`` all, except
            with the local LLM, where generation costs seconds per question: then
            ``DEMO_DEFAULTS["local_llm_questions"]``.
        n_resamples: bootstrap / permutation resamples of the statistics.
        seed: seed of the hierarchy, the pseudo-queries, the question sample, training and statistics.
        device: torch device for training and embedding (``None``: automatic).
        restart: redo every step even when an earlier run in ``out_dir`` could be reused.
        show_progress: progress bars; ``None`` (default) shows them when the ``heal_rag`` logger is enabled
            for INFO (``TQDM_DISABLE=1`` always hides them).
        on_step: called as ``on_step(step, value)`` after each step: ``("hierarchy", Hierarchy)``,
            ``("finetune", model_dir)``, ``("finetune_flat", flat_dir)``, ``("index", {name: index})``,
            ``("evaluation", result)``; the CLI uses it to print as it goes.

    Returns:
        A :class:`PipelineResult`.

    Raises:
        FileNotFoundError: the corpus does not exist.
        FileExistsError: ``out_dir`` is a file, or a non-empty folder that is not an earlier run.
        ValueError: bad parameters, a corpus/qrels mismatch, too small a corpus, an unreachable LLM endpoint.
        ImportError: ``llm="local"`` without the local LLM runtime (the message says what to install).

    """
    from heal_rag._models import check_model_reference

    total_start = time.perf_counter()
    # the training settings, validated once (the demo's short runs keep plain in-batch negatives: its
    # figures in bench_demo predate mining)
    training_args = HEALTrainingArguments(
        epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_seq_length=max_seq_length,
        seed=seed,
        hard_negatives="none",
    )
    for name, value in (
        ("top_k", top_k),
        ("generation_top_n", generation_top_n),
        ("n_resamples", n_resamples),
        ("llm_max_new_tokens", llm_max_new_tokens),
    ):
        check_positive_int(value, name)
    check_passage_max_tokens(passage_max_tokens)
    if retriever not in ("flat", "rescore", "route"):
        raise InvalidValueError(f"retriever must be 'flat', 'rescore' or 'route'. Got {retriever!r} instead.")
    if max_questions != "auto" and max_questions is not None:
        if isinstance(max_questions, bool) or not isinstance(max_questions, int) or max_questions < 1:
            raise InvalidValueError(
                f"max_questions must be a positive integer, None (all) or 'auto'. Got {max_questions!r}."
            )
    out = Path(out_dir)

    # Everything that can fail fast does so before any training time is spent.
    from heal_rag.llms import resolve_llm

    generator, llm_description = resolve_llm(llm, model=llm_model, max_new_tokens=llm_max_new_tokens)
    if max_questions == "auto":
        local = isinstance(llm, str) and llm.strip().lower() == "local"
        max_questions = DEMO_DEFAULTS["local_llm_questions"] if local else None
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"The output path {out} is a file; give a folder.")
    check_writable(out, what="The output folder")  # before minutes of work, not at the first save
    base_path = check_model_reference(base_model, what="base_model")
    inputs = _resolve_inputs(corpus, split, train_split, max_questions, seed)
    state = _prepare_out_dir(out, restart)
    show = resolve_show_progress(show_progress)
    notes = list(inputs.notes)
    timings: dict[str, float] = {}
    reused: list[str] = []

    corpus_fp = _corpus_fingerprint(inputs.documents)
    config = {
        "corpus": inputs.source,
        "corpus_fingerprint": corpus_fp,
        "n_documents": len(inputs.documents),
        "questions": inputs.question_description,
        "n_questions": len(inputs.questions.queries),
        "training_queries": inputs.train_description,
        "base_model": base_model or "sentence-transformers/all-MiniLM-L6-v2 (bundled copy)",
        "hnmfk": dict(hierarchy_params or {}),
        "training": {
            "max_steps": max_steps,
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "max_seq_length": max_seq_length,
        },
        "retriever": retriever,
        "top_k": top_k,
        "llm": llm_description,
        "generation_top_n": generation_top_n if generator is not None else None,
        "passage_max_tokens": passage_max_tokens if generator is not None else None,
        "seed": seed,
    }
    old_stages = dict(state.get("stages", {})) if state.get("config", {}).get("corpus_fingerprint") else {}
    new_state: dict[str, Any] = {"format": STATE_FORMAT, "config": config, "stages": {}, "status": "running"}
    _save_state(out, new_state)

    # 1-3. the stages an earlier run can hand over: each is reused when its inputs' key is unchanged and
    # its output loads; a stage that reruns removes what depends on it.
    from heal_rag.model_dir import is_heal_model_dir

    model_dir, flat_dir = out / MODEL_SUBDIR, out / FLAT_SUBDIR
    # the one set of training settings both fine-tunes get (equal budgets); flat only drops the hierarchy
    engine_options: dict[str, Any] = {
        "base_model": base_model,
        "args": training_args,
        "device": device,
        "show_progress": show,
    }
    # what both fine-tunes depend on; HEAL also on the tree (so a new tree redoes HEAL, never flat)
    finetune_inputs = {
        "base_model": base_path,
        "training": config["training"],
        "queries": _training_fingerprint(inputs.train_queries),
        "eval_questions": inputs.questions.fingerprint,
        "seed": seed,
    }
    hierarchy_key = _hash({"corpus": corpus_fp, "params": config["hnmfk"], "seed": seed})
    runner = _StageRunner(out, old_stages, new_state, timings, reused, on_step)

    def build_hierarchy() -> Hierarchy:
        built = _build_hierarchy(inputs.documents, dict(hierarchy_params or {}), seed, show)
        built.save(out / HIERARCHY_SUBDIR)
        return built

    hierarchy = runner.run(
        _Stage(
            name="hierarchy",
            key=hierarchy_key,
            load=lambda: _load_hierarchy(out / HIERARCHY_SUBDIR, inputs.documents),
            run=build_hierarchy,
            invalidates=(HIERARCHY_SUBDIR, MODEL_SUBDIR, CHECKPOINT_SUBDIR, *REPORT_FILES),
            reusing=f"Step 1/5: reusing the topic hierarchy in {out / HIERARCHY_SUBDIR}",
            running=f"Step 1/5: building the topic hierarchy of {len(inputs.documents)} documents (HNMFk)",
        )
    )
    new_state["hierarchy_fingerprint"] = hierarchy.fingerprint
    _save_state(out, new_state)

    def train(folder: Path, tree: Hierarchy | None) -> Path:
        _finetune(inputs, tree, folder, **engine_options)
        return folder

    budget = max_steps if max_steps is not None else f"{epochs} epoch(s) of"
    model_key = _hash({**finetune_inputs, "hierarchy": hierarchy_key, "tree": hierarchy.fingerprint})
    runner.run(
        _Stage(
            name="finetune",
            key=model_key,
            load=lambda: model_dir if is_heal_model_dir(model_dir) else None,
            run=lambda: train(model_dir, hierarchy),
            invalidates=(MODEL_SUBDIR, CHECKPOINT_SUBDIR, *REPORT_FILES),
            reusing=f"Step 2/5: reusing the HEAL model in {model_dir}",
            running=(
                f"Step 2/5: HEAL fine-tune of {base_model or 'all-MiniLM-L6-v2'} on "
                f"{inputs.train_description} ({budget} steps, batch {batch_size}, {max_seq_length} tokens)"
            ),
        ),
        force=runner.rebuilt,  # a new tree: a new HEAL model
    )
    # the flat fine-tune: same pairs, steps, batch size, seed; no hierarchy
    runner.run(
        _Stage(
            name="finetune_flat",
            key=_hash(finetune_inputs),
            load=lambda: flat_dir if is_heal_model_dir(flat_dir) else None,
            run=lambda: train(flat_dir, None),
            invalidates=(FLAT_SUBDIR, CHECKPOINT_SUBDIR, *REPORT_FILES),
            reusing=f"Step 3/5: reusing the flat fine-tune in {flat_dir}",
            running="Step 3/5: flat fine-tune (the same pairs and steps, no hierarchy)",
        )
    )
    rebuilt = runner.rebuilt

    # 4. index with the three models and BM25 ---------------------------------------------------------
    step_start = time.perf_counter()
    logger.info(
        "Step 4/5: indexing %d documents with BM25 and the base, flat and HEAL models", len(inputs.documents)
    )
    configurations, indexes = _configurations(
        inputs,
        base_path,
        {"flat": flat_dir, "heal": model_dir},
        hierarchy,
        base_model=base_model,
        retriever=retriever,
        top_k=top_k,
        max_seq_length=max_seq_length,
        generator=generator,
        generation_top_n=generation_top_n,
        passage_max_tokens=passage_max_tokens,
        device=device,
        show_progress=show,
    )
    timings["index"] = round(time.perf_counter() - step_start, 2)
    if on_step is not None:
        on_step("index", indexes)

    # 5. evaluate and report ----------------------------------------------------------------------------
    from heal_rag.evaluation.rag import evaluate_rag
    from heal_rag.evaluation.report import write_report

    step_start = time.perf_counter()
    if rebuilt:
        _remove(out, [CHECKPOINT_SUBDIR, *REPORT_FILES])
    logger.info(
        "Step 5/5: evaluating %s on %d questions%s",
        " vs ".join(c.name for c in configurations),
        len(inputs.questions.queries),
        f" with generation by {llm_description}" if generator is not None else "",
    )
    evaluation = evaluate_rag(
        configurations,
        inputs.questions,
        k=top_k,
        out_dir=out,
        resume=not restart,
        n_resamples=n_resamples,
        seed=seed,
        extra_config={
            "pipeline": {k: v for k, v in config.items() if k not in {"questions", "n_questions"}},
            "question_source": inputs.question_description,
            "hierarchy_key": hierarchy_key,
            "model_key": model_key,
        },
        show_progress=show,
        pairs=COMPARISONS,
    )
    evaluation.notes[:0] = [*notes, STUDY_NOTE]
    reports = write_report(evaluation, out, hierarchy=hierarchy, qrels=inputs.questions.qrels)
    timings["evaluation"] = round(time.perf_counter() - step_start, 2)
    timings["total"] = round(time.perf_counter() - total_start, 2)
    if on_step is not None:
        on_step("evaluation", evaluation)
    new_state.update({"status": "done", "timings": timings, "reused": reused})
    _save_state(out, new_state)
    return PipelineResult(
        out_dir=out,
        hierarchy=hierarchy,
        model_dir=model_dir,
        evaluation=evaluation,
        reports=reports,
        timings=timings,
        reused=reused,
        notes=list(evaluation.notes),
    )


# ------------------------------------------------------------------------------------------------------------
# steps
# ------------------------------------------------------------------------------------------------------------


def _load_hierarchy(folder: Path, documents: list[CorpusDocument]) -> Hierarchy | None:
    from heal_rag.hierarchy import Hierarchy

    try:
        hierarchy = Hierarchy.load(folder)
    except (OSError, ValueError) as error:
        logger.info("cannot reuse the hierarchy in %s (%s); rebuilding", folder, error)
        return None
    usable = [d.id for d in documents if d.full_text.strip()]  # HNMFk leaves empty documents out
    if [str(i) for i in hierarchy.doc_ids] != usable:
        logger.info("the hierarchy in %s covers other documents; rebuilding", folder)
        return None
    return hierarchy


def _build_hierarchy(
    documents: list[CorpusDocument], params: dict[str, Any], seed: int, show: bool
) -> Hierarchy:
    from heal_rag.hierarchy import HNMFk

    params.setdefault("random_state", seed)
    try:
        estimator = HNMFk(**params)
    except TypeError as error:
        raise InvalidValueError(f"Invalid HNMFk parameters {params!r}: {error}") from error
    if "show_progress" in estimator.get_params():
        estimator.set_params(show_progress=show)
    # the estimator's warnings (e.g. "did not split") become log lines, not source excerpts on stderr
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit([d.full_text for d in documents], doc_ids=[d.id for d in documents])
    for warning in caught:
        logger.warning("%s", warning.message)
    return estimator.hierarchy_


def _training_fingerprint(train_queries: Any) -> str:
    if isinstance(train_queries, str):
        return train_queries
    if hasattr(train_queries, "qrels"):
        return _hash([train_queries.queries, train_queries.qrels])
    return _hash([(p.query, p.doc_id, p.source, p.positive) for p in train_queries])


def _finetune(
    inputs: _Inputs,
    hierarchy: Hierarchy | None,
    model_dir: Path,
    *,
    base_model: str | None,
    args: HEALTrainingArguments,
    device: str | None,
    show_progress: bool | None,
) -> None:
    from heal_rag.training.engine import HEALFinetuneEngine

    engine = HEALFinetuneEngine(  # the engine writes topic paths into copies: inputs stay untouched
        inputs.documents,
        args=args.replace(use_hierarchy=hierarchy is not None),
        base_model=base_model,
        output_dir=model_dir,
        hierarchy=hierarchy,
        queries=inputs.train_queries,
        eval_queries=inputs.questions.queries,
        device=device,
        show_progress=show_progress,
    )
    engine.finetune()
    metrics = engine.metrics_ or {}
    logger.info(
        "fine-tuned on %s pairs: %s steps in %s s, final loss %.4f",
        metrics.get("n_pairs"),
        metrics.get("steps"),
        metrics.get("training_wall_time_s"),
        metrics.get("train_loss", float("nan")),
    )


def _configurations(
    inputs: _Inputs,
    base_path: str,
    model_dirs: Mapping[str, Path],
    hierarchy: Hierarchy,
    *,
    base_model: str | None,
    retriever: str,
    top_k: int,
    max_seq_length: int,
    generator: Any,
    generation_top_n: int,
    passage_max_tokens: int | None,
    device: str | None,
    show_progress: bool,
) -> tuple[list[Any], dict[str, Any]]:
    """BM25, the three dense models and each dense model fused with BM25, as RAG configurations.

    With a generator, its two reference conditions (gold passages, no context) are added.
    """
    from heal_rag.integrations import HEALEmbedding
    from heal_rag.systems import bm25_candidates, bm25_system, dense_system, reference_systems

    nodes = inputs.eval_dataset.to_nodes()
    common = {
        "llm": generator,
        "generation_top_n": generation_top_n,
        "passage_max_tokens": passage_max_tokens,
    }
    configurations = [bm25_system(nodes, top_k=top_k, **common)]
    candidates = bm25_candidates(nodes)
    base_name = base_model or "all-MiniLM-L6-v2 (bundled copy)"
    models = {
        "base": (base_path, base_name),
        "flat": (str(model_dirs["flat"]), f"flat fine-tune of {base_name} (no hierarchy)"),
        "heal": (str(model_dirs["heal"]), f"HEAL fine-tune of {base_name}"),
    }
    indexes: dict[str, Any] = {}
    hybrids = []
    for name, (path, description) in models.items():
        system = dense_system(
            name,
            HEALEmbedding.from_pretrained(path, max_length=max_seq_length, device=device),
            nodes,
            top_k=top_k,
            mode=retriever if name == "heal" else "flat",
            hierarchy=hierarchy if name == "heal" else None,
            description={"model": description, "max_length": max_seq_length},
            bm25_candidates=candidates,
            show_progress=show_progress,
            **common,
        )
        indexes[name] = system.index
        configurations.append(system.configuration)
        hybrids.append(system.hybrid)
    references = []
    if generator is not None:
        try:
            references = reference_systems(inputs.questions, **common)
        except InvalidValueError as error:  # e.g. two pseudo-queries with the same text
            logger.warning("Answering without the reference conditions (gold, no-context): %s", error)
    return configurations + hybrids + references, indexes
