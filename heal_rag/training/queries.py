"""Training queries: (query, source document) pairs from three sources.

Every pair names the document it was made from; the engine gives the query that document's topic path
and identity as labels (a query inherits its document's labels).

1. **Given** pairs: the qrels of a :class:`~heal_rag.datasets.RetrievalDataset` split
   (:func:`pairs_from_qrels`) or an ``EmbeddingQAFinetuneDataset`` JSON file from llama-index-finetuning
   (:func:`pairs_from_qa_json`).
2. **LLM** questions: :func:`generate_llm_queries` asks any LlamaIndex LLM (anything with
   ``complete(prompt)``) for questions about each document, with an on-disk JSONL cache, retries, a
   time-out, a progress bar and filtering of empty, duplicate and degenerate outputs.
3. **Pseudo** queries, offline: :func:`make_pseudo_queries` uses a document's title as a query for its body
   where the document has a title, and otherwise one sentence as a query for the rest of its document
   (the inverse cloze task).

:func:`exclude_eval_queries` keeps evaluation queries out of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from heal_rag._io import loads_json
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.datasets import document_fields, join_title
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_QUERY_PROMPT",
    "LLMQueryGenerator",
    "QueryGenerationStats",
    "TrainingPair",
    "exclude_eval_queries",
    "generate_llm_queries",
    "make_pseudo_queries",
    "normalize_query",
    "pairs_from_qa_json",
    "pairs_from_qrels",
]

# Same role and shape as llama-index-finetuning's DEFAULT_QA_GENERATE_PROMPT_TMPL, so users can reuse theirs
# (``{num_questions_per_chunk}`` is accepted as an alias of ``{num_questions}``).
DEFAULT_QUERY_PROMPT = """\
Context information is below.

---------------------
{context_str}
---------------------

Given the context information and no prior knowledge, generate {num_questions} question(s) that a \
user searching a collection of such documents could ask, and that this context answers. The questions \
should be diverse, self-contained and must not copy sentences from the context. Write one question per \
line, without numbering or any other text.
"""


@dataclass(frozen=True)
class TrainingPair:
    """One training sample: a query and the id of the document it belongs to.

    Attributes:
        query: the query text.
        doc_id: id of its source (relevant) document in the corpus.
        source: where the pair comes from: ``"given"``, ``"llm"``, ``"pseudo-title"`` or ``"pseudo-ict"``.
        positive: the text to train the query against, when it is not the document's full text
            (a title query trains against the body, an inverse-cloze sentence against the rest of its
            document). ``None`` means the document's full text.

    Example:
        >>> TrainingPair("what causes scurvy?", "doc-7", "given")
        TrainingPair(query='what causes scurvy?', doc_id='doc-7', source='given', positive=None)

    """

    query: str
    doc_id: str
    source: str = "given"
    positive: str | None = None


# ---------------------------------------------------------------------------------------------------------
# corpus access: every document shape of heal_rag.datasets.document_fields works
# ---------------------------------------------------------------------------------------------------------


def embed_text(document: Any) -> str:
    """Return the text a document is embedded (and trained) as.

    A LlamaIndex node gives ``get_content(MetadataMode.EMBED)`` (what LlamaIndex embeds, metadata included
    unless excluded); anything else its title and body joined by one space.
    """
    if hasattr(document, "node_id") and hasattr(document, "get_content"):
        from llama_index.core.schema import MetadataMode

        return str(document.get_content(metadata_mode=MetadataMode.EMBED))
    _, title, body = document_fields(document)
    return join_title(title, body)


def normalize_query(text: str) -> str:
    """Normalise a query for overlap and duplicate checks: NFKC, case-folded, punctuation-free, one space."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[\W_]+", " ", text).split())


# ---------------------------------------------------------------------------------------------------------
# 1. given pairs
# ---------------------------------------------------------------------------------------------------------


def pairs_from_qrels(
    queries: Mapping[str, str] | Any,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    *,
    min_relevance: int = 1,
) -> list[TrainingPair]:
    """Pairs from labelled queries: one pair per (query, relevant document).

    Args:
        queries: ``{query_id: text}``, or a RetrievalDataset split / any object with ``queries`` and
            ``qrels`` attributes (then ``qrels`` must be omitted).
        qrels: ``{query_id: {doc_id: relevance}}``.
        min_relevance: judgments below this grade are not positives.

    Returns:
        Pairs in query order, then document order (sorted by id, so the result is deterministic).

    Raises:
        ValueError: if a judged query has no text, or nothing is relevant.

    """
    if qrels is None:
        if not (hasattr(queries, "queries") and hasattr(queries, "qrels")):
            raise InvalidTypeError(
                "pairs_from_qrels() needs either (queries, qrels) mappings or an object with 'queries' and "
                f"'qrels' attributes (a RetrievalDataset split); got {type(queries).__name__}."
            )
        queries, qrels = queries.queries, queries.qrels
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise InvalidValueError(
            f"{len(missing)} judged queries have no text in the queries (e.g. {missing[:3]}). Check that the "
            "qrels file belongs to this queries file."
        )
    pairs = [
        TrainingPair(str(queries[qid]), str(doc_id), "given")
        for qid, judged in qrels.items()
        for doc_id, grade in sorted(judged.items())
        if int(grade) >= min_relevance
    ]
    if not pairs:
        raise InvalidValueError(
            f"The qrels hold no judgment with relevance >= {min_relevance}; nothing to train on."
        )
    return pairs


def pairs_from_qa_json(path: str | os.PathLike[str]) -> list[TrainingPair]:
    """Pairs from an ``EmbeddingQAFinetuneDataset`` JSON (``queries``, ``corpus``, ``relevant_docs``).

    That is the file llama-index-finetuning's ``generate_qa_embedding_pairs`` writes with ``save_json``; the
    document ids are its ``corpus`` keys (LlamaIndex node ids).
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"No EmbeddingQAFinetuneDataset JSON at {path}.")
    try:
        data = loads_json(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise InvalidValueError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(data, dict) or not {"queries", "relevant_docs"} <= set(data):
        raise InvalidValueError(
            f"{path} is not an EmbeddingQAFinetuneDataset JSON: expected the keys 'queries', 'corpus' and "
            "'relevant_docs'."
        )
    qrels = {qid: {str(doc_id): 1 for doc_id in doc_ids} for qid, doc_ids in data["relevant_docs"].items()}
    return pairs_from_qrels(data["queries"], qrels)


# ---------------------------------------------------------------------------------------------------------
# 2. LLM-generated questions
# ---------------------------------------------------------------------------------------------------------

_NUMBERING = re.compile(
    r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):\]]|\(?[a-zA-Z][.)]|(?:q(?:uestion)?\s*\d*\s*[:.)-]))\s*", re.I
)
_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i cannot|i can'?t|i can not|i'?m unable|i am unable|as an ai\b|as a language "
    r"model|cannot (?:help|assist|generate|provide)|no (?:context|information) (?:is )?provided)",
    re.I,
)
_PREAMBLE = re.compile(r"^(here (?:are|is)|sure\b|certainly\b|okay\b|the following|below (?:are|is))", re.I)


@dataclass
class QueryGenerationStats:
    """What happened while generating questions (returned by :class:`LLMQueryGenerator` as ``stats_``)."""

    documents: int = 0
    cached: int = 0
    llm_calls: int = 0
    errors: int = 0
    timeouts: int = 0
    garbage_outputs: int = 0
    failed_documents: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-friendly copy."""
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}


class LLMTimeoutError(TimeoutError):
    """An LLM call took longer than the time-out."""


def _call_with_timeout(fn: Any, timeout: float | None) -> Any:
    """Run ``fn()``; give up after ``timeout`` seconds.

    A blocking ``complete`` cannot be interrupted from Python, so the call runs in a daemon thread that is
    abandoned on time-out (it finishes or dies with the process; it never blocks the exit).
    """
    if timeout is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:  # re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True, name="heal-rag-llm-call")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise LLMTimeoutError(f"the LLM did not answer within {timeout:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _progress_disabled(show_progress: bool | None) -> bool:
    return not resolve_show_progress(show_progress)


def parse_questions(
    output: str,
    passage: str,
    *,
    min_words: int = 3,
    max_words: int = 64,
    rejected: dict[str, int] | None = None,
    instructions: str = "",
) -> list[str]:
    """Split an LLM answer into clean questions, dropping degenerate lines.

    One question per line; list markers (``1.``, ``2)``, ``-``, ``Q1:``), surrounding quotes and bold marks
    are removed. A line is dropped (and counted in ``rejected`` under its reason) when it is empty, a
    preamble ("Here are ...", a line ending in ``:``), a refusal ("I'm sorry", "As an AI"), shorter than
    ``min_words`` or longer than ``max_words`` words, a copy of the passage (the passage itself, or 8+ words
    lifted verbatim from it), an echo of the prompt's ``instructions`` (the prompt without the passage), or a
    duplicate of an earlier line.
    """
    rejected = rejected if rejected is not None else {}

    def reject(reason: str) -> None:
        rejected[reason] = rejected.get(reason, 0) + 1

    norm_passage = normalize_query(passage)
    norm_instructions = f" {normalize_query(instructions)} " if instructions else ""
    seen: set[str] = set()
    questions: list[str] = []
    for raw in str(output or "").splitlines():
        line = raw.strip().strip("*").strip()
        line = _NUMBERING.sub("", line, count=1).strip().strip("*").strip()
        line = line.strip("\"'`\u201c\u201d").strip()
        if not line:
            continue  # blank lines separate list items: not a rejection
        norm = normalize_query(line)
        if not norm:
            reject("empty")
        elif line.endswith(":") or _PREAMBLE.match(line):
            reject("preamble")
        elif _REFUSAL.search(line):
            reject("refusal")
        elif len(norm.split()) < min_words:
            reject("too_short")
        elif len(norm.split()) > max_words:
            reject("too_long")
        elif norm == norm_passage or (len(norm.split()) >= 8 and f" {norm} " in f" {norm_passage} "):
            reject("copy_of_passage")
        elif norm_instructions and f" {norm} " in norm_instructions:
            reject("echo_of_prompt")
        elif norm in seen:
            reject("duplicate")
        else:
            seen.add(norm)
            questions.append(line)
    return questions


class LLMQueryGenerator:
    """Generate training questions for documents with any LlamaIndex LLM.

    Args:
        llm: a LlamaIndex LLM (anything with ``complete(prompt)`` returning an object with ``.text``, or a
            string).
        num_questions_per_doc: questions kept per document (the prompt asks for this many).
        prompt_template: a ``str.format`` template with ``{context_str}`` and ``{num_questions}`` (or
            llama-index-finetuning's ``{num_questions_per_chunk}``).
        cache_path: a JSONL file; answers are stored per (document id, text hash, prompt hash), so a rerun
            resumes where the last stopped and an edited document or prompt is asked again. One cache per
            LLM: point another LLM at another file.
        max_retries: extra attempts for a document when the call fails, times out or returns nothing usable.
        timeout: seconds to wait for one call (``None``: wait forever).
        show_progress: show a tqdm progress bar; ``None`` follows the ``heal_rag`` logger (bars at INFO);
            ``TQDM_DISABLE=1`` always hides it.
        min_words / max_words: length limits of a kept question, in words.

    Attributes:
        stats_: :class:`QueryGenerationStats` of the last :meth:`generate` call.

    Example:
        >>> from llama_index.core.llms import MockLLM
        >>> generator = LLMQueryGenerator(MockLLM(max_tokens=4), show_progress=False)
        >>> generator.generate([("d1", "Scurvy is caused by a lack of vitamin C.")])  # doctest: +SKIP

    """

    def __init__(
        self,
        llm: Any,
        *,
        num_questions_per_doc: int = 1,
        prompt_template: str = DEFAULT_QUERY_PROMPT,
        cache_path: str | os.PathLike[str] | None = None,
        max_retries: int = 2,
        timeout: float | None = 120.0,
        show_progress: bool | None = None,
        min_words: int = 3,
        max_words: int = 64,
    ) -> None:
        if not callable(getattr(llm, "complete", None)):
            raise InvalidTypeError(
                "llm must be a LlamaIndex LLM (an object with a complete(prompt) method); got "
                f"{type(llm).__name__}."
            )
        if int(num_questions_per_doc) < 1:
            raise InvalidValueError(f"num_questions_per_doc must be >= 1; got {num_questions_per_doc}.")
        if "{context_str}" not in prompt_template:
            raise InvalidValueError(
                "prompt_template must contain the placeholder {context_str} (the document text)."
            )
        try:
            prompt_template.format(context_str="x", num_questions=1, num_questions_per_chunk=1)
        except (KeyError, IndexError, ValueError) as error:
            raise InvalidValueError(
                f"prompt_template has a placeholder other than {{context_str}} and {{num_questions}}: "
                f"{error}. "
                "Write literal braces as {{ and }}."
            ) from error
        if int(max_retries) < 0:
            raise InvalidValueError(f"max_retries must be >= 0; got {max_retries}.")
        if timeout is not None and float(timeout) <= 0:
            raise InvalidValueError(f"timeout must be a positive number of seconds or None; got {timeout}.")
        self.llm = llm
        self.num_questions_per_doc = int(num_questions_per_doc)
        self.prompt_template = prompt_template
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.max_retries = int(max_retries)
        self.timeout = None if timeout is None else float(timeout)
        self.show_progress = show_progress
        self.min_words = min_words
        self.max_words = max_words

    # -- cache ------------------------------------------------------------------------------------------
    def _prompt_hash(self) -> str:
        key = f"{self.num_questions_per_doc}\x00{self.prompt_template}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]

    @staticmethod
    def _cache_key(doc_id: str, text: str, prompt_hash: str) -> str:
        text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return f"{doc_id}\x00{text_hash}\x00{prompt_hash}"

    def _load_cache(self) -> dict[str, list[str]]:
        cache: dict[str, list[str]] = {}
        if self.cache_path is None or not self.cache_path.exists():
            return cache
        bad = 0
        with open(self.cache_path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = loads_json(line)
                    cache[record["key"]] = [str(q) for q in record["questions"]]
                except (json.JSONDecodeError, KeyError, TypeError):
                    bad += 1  # a line cut short by a crash: that document is simply asked again
        if bad:
            logger.warning("Ignored %d unreadable line(s) in the query cache %s.", bad, self.cache_path)
        return cache

    def _append_cache(self, key: str, doc_id: str, questions: list[str]) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        # One JSON object per line, flushed and synced per document: a crash loses at most the line being
        # written, which the loader skips.
        with open(self.cache_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "doc_id": doc_id, "questions": questions}) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    # -- generation -------------------------------------------------------------------------------------
    def _prompt(self, text: str) -> str:
        n = self.num_questions_per_doc
        return self.prompt_template.format(context_str=text, num_questions=n, num_questions_per_chunk=n)

    def _ask(self, text: str, stats: QueryGenerationStats) -> list[str]:
        prompt = self._prompt(text)
        for _attempt in range(self.max_retries + 1):
            stats.llm_calls += 1
            try:
                response = _call_with_timeout(lambda: self.llm.complete(prompt), self.timeout)
            except LLMTimeoutError as error:
                stats.timeouts += 1
                stats.last_error = str(error)
                continue
            except Exception as error:  # any LLM client error: count it, retry, never crash the run
                stats.errors += 1
                stats.last_error = f"{type(error).__name__}: {error}"
                continue
            output = getattr(response, "text", response)
            questions = parse_questions(
                output if isinstance(output, str) else str(output or ""),
                text,
                min_words=self.min_words,
                max_words=self.max_words,
                rejected=stats.rejected,
                instructions=self._prompt(""),
            )
            if questions:
                return questions[: self.num_questions_per_doc]
            stats.garbage_outputs += 1
        return []

    def generate(self, documents: Iterable[Any]) -> list[TrainingPair]:
        """Generate questions for ``documents`` (heal-rag Documents, LlamaIndex nodes or ``(id, text)``).

        Returns:
            Pairs with ``source="llm"``, in document order. Questions that duplicate one made for another
            document are dropped (an ambiguous query would be a positive of two documents).

        Raises:
            RuntimeError: if the LLM produced no usable question for any document (the message says why:
                errors, time-outs or garbage). Failures on some documents are logged, not raised.

        """
        from tqdm.auto import tqdm

        records = [document_fields(d) for d in documents]
        stats = QueryGenerationStats(documents=len(records))
        self.stats_ = stats
        if not records:
            raise InvalidValueError("No documents to generate questions for.")
        cache = self._load_cache()
        prompt_hash = self._prompt_hash()
        pairs: list[TrainingPair] = []
        seen: dict[str, str] = {}
        cross_duplicates = 0
        bar = tqdm(records, desc="LLM questions", unit="doc", disable=_progress_disabled(self.show_progress))
        for doc_id, title, body in bar:
            text = join_title(title, body)
            if not text.strip():
                stats.failed_documents += 1
                continue
            key = self._cache_key(doc_id, text, prompt_hash)
            if key in cache:
                stats.cached += 1
                questions = cache[key][: self.num_questions_per_doc]
            else:
                questions = self._ask(text, stats)
                if questions:
                    self._append_cache(key, doc_id, questions)
            if not questions:
                stats.failed_documents += 1
            for question in questions:
                norm = normalize_query(question)
                if norm in seen and seen[norm] != doc_id:
                    cross_duplicates += 1
                    continue
                seen[norm] = doc_id
                pairs.append(TrainingPair(question, doc_id, "llm"))
        bar.close()
        if cross_duplicates:
            stats.rejected["duplicate_across_documents"] = cross_duplicates
        if not pairs:
            raise RuntimeError(
                f"The LLM produced no usable question for any of the {len(records)} documents "
                f"({stats.llm_calls} calls: {stats.errors} errors, {stats.timeouts} time-outs, "
                f"{stats.garbage_outputs} unusable answers; rejected lines: {stats.rejected or 'none'}; "
                f"last error: {stats.last_error or 'none'}). Check the LLM and the prompt, or train on "
                "offline "
                "pseudo-queries (queries='pseudo')."
            )
        if stats.failed_documents:
            logger.warning(
                "The LLM gave no usable question for %d of %d documents (%d errors, %d time-outs, %d "
                "unusable "
                "answers; last error: %s). Training goes on without them.",
                stats.failed_documents,
                len(records),
                stats.errors,
                stats.timeouts,
                stats.garbage_outputs,
                stats.last_error,
            )
        logger.info(
            "LLM questions: %d pairs for %d documents (%d from the cache, %d LLM calls, rejected: %s).",
            len(pairs),
            len(records),
            stats.cached,
            stats.llm_calls,
            stats.rejected,
        )
        return pairs


def generate_llm_queries(
    documents: Iterable[Any],
    llm: Any,
    num_questions_per_doc: int = 1,
    prompt_template: str = DEFAULT_QUERY_PROMPT,
    cache_path: str | os.PathLike[str] | None = None,
    max_retries: int = 2,
    timeout: float | None = 120.0,
    show_progress: bool | None = None,
) -> list[TrainingPair]:
    """Questions about each document from any LlamaIndex LLM (see :class:`LLMQueryGenerator`).

    The role of llama-index-finetuning's ``generate_qa_embedding_pairs``, without that package.

    Example:
        >>> pairs = generate_llm_queries(nodes, llm, cache_path="questions.jsonl")  # doctest: +SKIP

    """
    generator = LLMQueryGenerator(
        llm,
        num_questions_per_doc=num_questions_per_doc,
        prompt_template=prompt_template,
        cache_path=cache_path,
        max_retries=max_retries,
        timeout=timeout,
        show_progress=show_progress,
    )
    return generator.generate(documents)


# ---------------------------------------------------------------------------------------------------------
# 3. offline pseudo-queries
# ---------------------------------------------------------------------------------------------------------

# A sentence ends at . ! or ? (maybe followed by closing quotes/brackets) and whitespace, unless the word
# before a full stop is a common abbreviation ("e.g.", "et al.", "Fig.") or a capital initial ("J. Smith").
# No capital is required after the boundary: lower-cased corpora (MED: "word . word") split too.
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+")
_ABBREVIATIONS = frozenset(
    "e.g i.e eg ie al vs cf ca approx resp fig figs eq eqs ref refs no nos vol dr mr mrs ms prof st sp spp "
    "u.s u.k jan feb mar apr jun jul aug sep sept oct nov dec".split()
)


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences (see ``_BOUNDARY`` and ``_ABBREVIATIONS``)."""
    sentences: list[str] = []
    start = 0
    for match in _BOUNDARY.finditer(text):
        before = text[start : match.start()].split()
        last_word = before[-1].rstrip(".!?") if before else ""
        if match.group().startswith(".") and (
            last_word.lower() in _ABBREVIATIONS or (len(last_word) == 1 and last_word.isupper())
        ):
            continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    tail = text[start:].strip()
    if tail:
        sentences.append(tail)
    return sentences


def make_pseudo_queries(
    documents: Iterable[Any],
    seed: int = 0,
    *,
    mode: Literal["auto", "title", "sentence", "both"] = "auto",
    min_words: int = 4,
    max_words: int = 64,
) -> list[TrainingPair]:
    """Offline pseudo-queries: a title for its body, else a sentence for the rest of its document.

    The rule, per document (``mode="auto"``):

    - it has a title of at least two words (and the title is not its body): the title is the query and
      the **body** is the positive (``source="pseudo-title"``);
    - otherwise one sentence of ``min_words``–``max_words`` words is drawn and is the query; the positive is
      the document **without that sentence** (inverse cloze task, Lee et al. 2019; ``source="pseudo-ict"``).
      A document with fewer than two sentences has no "rest" and gets no pair (counted in the log).

    ``mode="title"`` / ``"sentence"`` use only one rule; ``"both"`` makes up to one pair of each kind.
    The sentence is drawn with a generator seeded by ``(seed, crc32(doc_id))``, so a document's pair does
    not change when other documents are added or reordered.

    Args:
        documents: heal-rag Documents, LlamaIndex nodes or ``(id, text)`` tuples.
        seed: seed of every random draw.
        mode: which rule(s) to use (see above).
        min_words: shortest sentence query, in words.
        max_words: longest sentence query, in words.

    Returns:
        Pairs in document order.

    Example:
        >>> make_pseudo_queries([("d1", "Vitamin C prevents scurvy in sailors. It works.")])[0].query
        'Vitamin C prevents scurvy in sailors.'

    """
    if mode not in {"auto", "title", "sentence", "both"}:
        raise InvalidValueError(f"mode must be 'auto', 'title', 'sentence' or 'both'; got {mode!r}.")
    pairs: list[TrainingPair] = []
    skipped = 0
    for document in documents:
        doc_id, title, body = document_fields(document)
        made = False
        has_title = (
            len(title.split()) >= 2 and normalize_query(title) != normalize_query(body) and body.strip()
        )
        if has_title and mode in {"auto", "title", "both"}:
            pairs.append(TrainingPair(title.strip(), doc_id, "pseudo-title", positive=body.strip()))
            made = True
        if mode in {"sentence", "both"} or (mode == "auto" and not made):
            sentences = split_sentences(body)
            candidates = [i for i, s in enumerate(sentences) if min_words <= len(s.split()) <= max_words]
            if len(sentences) >= 2 and candidates:
                rng = np.random.default_rng([int(seed), zlib.crc32(doc_id.encode("utf-8"))])
                pick = candidates[int(rng.integers(len(candidates)))]
                rest = " ".join(s for i, s in enumerate(sentences) if i != pick)
                positive = join_title(title, rest)
                pairs.append(TrainingPair(sentences[pick], doc_id, "pseudo-ict", positive=positive))
                made = True
        if not made:
            skipped += 1
    if skipped:
        logger.info(
            "No pseudo-query for %d document(s): no title and fewer than two usable sentences.", skipped
        )
    return pairs


# ---------------------------------------------------------------------------------------------------------
# keeping evaluation queries out of training
# ---------------------------------------------------------------------------------------------------------


def exclude_eval_queries(
    pairs: Sequence[TrainingPair],
    eval_queries: Iterable[str] | Mapping[str, str],
    *,
    on_overlap: Literal["drop", "raise"] = "drop",
) -> tuple[list[TrainingPair], int]:
    """Remove training pairs whose query is an evaluation query (compared after :func:`normalize_query`).

    Args:
        pairs: training pairs.
        eval_queries: evaluation query texts, or ``{query_id: text}``.
        on_overlap: ``"drop"`` removes the overlapping pairs (and logs how many); ``"raise"`` refuses with a
            ValueError naming a few of them.

    Returns:
        ``(kept_pairs, n_dropped)``.

    """
    if on_overlap not in {"drop", "raise"}:
        raise InvalidValueError(f"on_overlap must be 'drop' or 'raise'; got {on_overlap!r}.")
    texts = eval_queries.values() if isinstance(eval_queries, Mapping) else eval_queries
    forbidden = {normalize_query(str(t)) for t in texts}
    forbidden.discard("")
    kept = [p for p in pairs if normalize_query(p.query) not in forbidden]
    dropped = len(pairs) - len(kept)
    if dropped and on_overlap == "raise":
        examples = [p.query for p in pairs if normalize_query(p.query) in forbidden][:3]
        raise InvalidValueError(
            f"{dropped} training queries are also evaluation queries (e.g. {examples}); training on them "
            "would "
            "leak the test set. Remove them, or let the engine drop them (on_eval_overlap='drop')."
        )
    if dropped:
        logger.warning("Dropped %d training pair(s) whose query is also an evaluation query.", dropped)
    return kept, dropped
