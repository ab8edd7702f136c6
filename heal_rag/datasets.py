"""Retrieval data as plain Python objects: documents, queries and relevance judgments (qrels).

Loaders read a BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``), a plain JSONL
file or a text file (one document per line); converters go to and from LlamaIndex ``TextNode`` /
``Document`` objects and the JSON format of LlamaIndex's ``EmbeddingQAFinetuneDataset``. Nothing here imports
LlamaIndex until a conversion function is called.

Example:
    >>> from heal_rag.datasets import load_demo_dataset
    >>> dataset = load_demo_dataset(split="test")
    >>> dataset.name
    'scifact_demo'

"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.resources
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag._checks import preview_ids as _preview
from heal_rag._io import atomic_write_json, loads_json
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError

if TYPE_CHECKING:  # pragma: no cover
    from llama_index.core.schema import BaseNode, TextNode
    from llama_index.core.schema import Document as LlamaDocument

logger = logging.getLogger(__name__)

__all__ = [
    "CorpusDocument",
    "RetrievalDataset",
    "DECISIONS",
    "document_fields",
    "load_beir",
    "load_corpus",
    "load_queries",
    "load_qrels",
    "available_splits",
    "documents_to_nodes",
    "nodes_to_documents",
    "documents_to_llama",
    "save_qa_finetune_json",
    "load_qa_finetune_json",
    "demo_corpus_path",
    "load_demo_dataset",
    "DEMO_DATASET_NAME",
]

DEMO_DATASET_NAME = "scifact_demo"
#: The gold decisions a question may carry (PubMedQA's ``final_decision``).
DECISIONS = ("yes", "no", "maybe")

# How many offending ids an error message lists before "... and N more".


# ------------------------------------------------------------------------------------------------------------
# data objects
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusDocument:
    """One corpus document.

    Args:
        id: Unique document id (a non-empty string).
        text: The document body (for SciFact: the abstract).
        title: Optional title; :attr:`full_text` prepends it, as BEIR models embed ``title + " " + text``.
        metadata: Other JSON-serialisable fields (kept through every conversion).

    Example:
        >>> CorpusDocument("d1", "Aspirin lowers fever.", title="Aspirin").full_text
        'Aspirin Aspirin lowers fever.'

    """

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise InvalidValueError(
                f"A CorpusDocument id must be a non-empty string. Got {self.id!r} instead."
            )
        if not isinstance(self.text, str):
            raise InvalidValueError(
                f"The text of document {self.id!r} must be a string. Got {type(self.text).__name__} instead."
            )
        if not isinstance(self.title, str):
            raise InvalidValueError(
                f"The title of document {self.id!r} must be a string. "
                f"Got {type(self.title).__name__} instead."
            )
        if not isinstance(self.metadata, dict):
            raise InvalidValueError(
                f"The metadata of document {self.id!r} must be a dict. Got {type(self.metadata).__name__}."
            )

    @property
    def full_text(self) -> str:
        """Title and text, each stripped, joined by one space (just the text when there is no title)."""
        return join_title(self.title, self.text)


def join_title(title: str, text: str) -> str:
    """Join a title and a body with one space, as BEIR models embed them (``title + " " + text``)."""
    title, text = title.strip(), text.strip()
    if title and text:
        return f"{title} {text}"
    return title or text


def document_fields(document: Any) -> tuple[str, str, str]:
    """Return ``(doc_id, title, body)`` of anything heal-rag accepts as a corpus document.

    Accepted: a :class:`CorpusDocument`, a LlamaIndex node or document (content without metadata, its
    ``title`` metadata as the title), a mapping with ``id`` / ``_id`` / ``doc_id`` and ``text`` (and an
    optional ``title``), or an ``(id, text)`` tuple. This is the one reader of the shapes the training API
    takes, so that every part of it accepts the same inputs.

    Example:
        >>> document_fields({"id": "d1", "title": "Aspirin", "text": "Lowers fever."})
        ('d1', 'Aspirin', 'Lowers fever.')

    """
    if isinstance(document, CorpusDocument):
        return document.id, document.title, document.text
    if isinstance(document, Mapping):
        doc_id = document.get("id", document.get("_id", document.get("doc_id")))
        return str(doc_id), str(document.get("title") or ""), str(document.get("text") or "")
    if hasattr(document, "node_id") and hasattr(document, "get_content"):  # LlamaIndex BaseNode
        from llama_index.core.schema import MetadataMode

        title = (getattr(document, "metadata", None) or {}).get("title") or ""
        return str(document.node_id), str(title), str(document.get_content(metadata_mode=MetadataMode.NONE))
    for id_attr in ("id", "doc_id"):
        if hasattr(document, id_attr) and hasattr(document, "text"):
            return (
                str(getattr(document, id_attr)),
                str(getattr(document, "title", "") or ""),
                str(document.text or ""),
            )
    if isinstance(document, tuple) and len(document) == 2:
        return str(document[0]), "", str(document[1])
    raise InvalidTypeError(
        "Expected a heal_rag CorpusDocument, a LlamaIndex node/document, a mapping with 'id' and 'text', or "
        f"an (id, text) tuple; got {type(document).__name__}."
    )


@dataclass
class RetrievalDataset:
    """A corpus, a set of queries and their relevance judgments (qrels), validated on construction.

    The one data type of heal-rag: training reads its queries and qrels, retrieval evaluation its qrels, and
    the RAG harness also its optional reference answers and gold decisions.

    Args:
        corpus: Document id -> :class:`CorpusDocument`, in corpus order (the order is kept everywhere).
        queries: Query id -> query text.
        qrels: Query id -> {document id: relevance grade}; grades > 0 mean relevant. Every id must be known.
        name: A short name used in reports.
        references: Query id -> reference answer (optional; enables the RAG harness' answer_correctness).
            Empty answers are left out.
        decisions: Query id -> gold ``"yes"`` / ``"no"`` / ``"maybe"`` (optional; enables
            decision_accuracy). Case and surrounding spaces are ignored.

    Raises:
        ValueError: on an empty corpus, ids that do not match, non-string texts or qrels that point to
            unknown queries or documents (the message lists a few of the offending ids).

    Example:
        >>> docs = [CorpusDocument("d1", "Aspirin lowers fever."), CorpusDocument("d2", "Statins.")]
        >>> corpus = {doc.id: doc for doc in docs}
        >>> ds = RetrievalDataset(corpus, {"q1": "What lowers fever?"}, {"q1": {"d1": 1}}, name="toy")
        >>> ds.relevant("q1")
        ['d1']

    """

    corpus: dict[str, CorpusDocument]
    queries: dict[str, str] = field(default_factory=dict)
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)
    name: str = ""
    references: dict[str, str] = field(default_factory=dict)
    decisions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.corpus, Mapping):
            raise InvalidValueError(
                "corpus must be a dict of document id -> CorpusDocument. "
                f"Got {type(self.corpus).__name__} instead."
            )
        if len(self.corpus) == 0:
            raise InvalidValueError(
                f"The corpus of dataset {self.name!r} is empty: it needs at least one document."
            )
        self.corpus = dict(self.corpus)
        not_documents = [key for key, doc in self.corpus.items() if not isinstance(doc, CorpusDocument)]
        if not_documents:
            raise InvalidValueError(
                "corpus values must be heal_rag.datasets.CorpusDocument objects; these ids are not: "
                f"{_preview(not_documents)}."
            )
        mismatched = [key for key, doc in self.corpus.items() if key != doc.id]
        if mismatched:
            raise InvalidValueError(
                f"corpus keys must equal their CorpusDocument.id; mismatched keys: {_preview(mismatched)}."
            )
        self.queries = dict(self.queries)
        bad_queries = [
            qid for qid, text in self.queries.items() if not isinstance(qid, str) or not isinstance(text, str)
        ]
        if bad_queries:
            raise InvalidValueError(
                f"Query ids and texts must be strings; offending query ids: {_preview(bad_queries)}."
            )
        self.qrels = {qid: dict(judged) for qid, judged in self.qrels.items()}
        unknown_queries = [qid for qid in self.qrels if qid not in self.queries]
        if unknown_queries:
            raise InvalidValueError(
                f"{len(unknown_queries)} query id(s) in the qrels of dataset {self.name!r} are not among its "
                f"queries: {_preview(unknown_queries)}."
            )
        unknown_docs = sorted(
            {did for judged in self.qrels.values() for did in judged if did not in self.corpus}
        )
        if unknown_docs:
            raise InvalidValueError(
                f"{len(unknown_docs)} document id(s) in the qrels of dataset {self.name!r} are not in its "
                f"corpus: {_preview(unknown_docs)}. Check that the qrels belong to this corpus."
            )
        bad_grades = [
            qid
            for qid, judged in self.qrels.items()
            for grade in judged.values()
            if not isinstance(grade, int) or isinstance(grade, bool)
        ]
        if bad_grades:
            raise InvalidValueError(
                f"Relevance grades must be integers; offending query ids: {_preview(bad_grades)}."
            )
        self._check_answers()

    def _check_answers(self) -> None:
        for mapping, what in ((self.references, "references"), (self.decisions, "decisions")):
            if not isinstance(mapping, Mapping):
                raise InvalidValueError(
                    f"{what} must be a dict of query id -> str. Got {type(mapping).__name__} instead."
                )
            unknown = [qid for qid in mapping if qid not in self.queries]
            if unknown:
                raise InvalidValueError(
                    f"{len(unknown)} query id(s) in the {what} of dataset {self.name!r} are not among its "
                    f"queries: {_preview(unknown)}."
                )
            not_text = [qid for qid, value in mapping.items() if not isinstance(value, str)]
            if not_text:
                raise InvalidValueError(f"{what} must be strings; offending query ids: {_preview(not_text)}.")
        self.references = {qid: answer for qid, answer in self.references.items() if answer.strip()}
        self.decisions = {qid: decision.strip().lower() for qid, decision in self.decisions.items()}
        bad = [f"{qid}={decision!r}" for qid, decision in self.decisions.items() if decision not in DECISIONS]
        if bad:
            raise InvalidValueError(f"Gold decisions must be yes, no or maybe; got {_preview(bad)}.")

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def documents(self) -> list[CorpusDocument]:
        """The documents in corpus order."""
        return list(self.corpus.values())

    @property
    def doc_ids(self) -> list[str]:
        """Document ids in corpus order."""
        return list(self.corpus)

    @property
    def texts(self) -> list[str]:
        """:attr:`CorpusDocument.full_text` of every document, in corpus order."""
        return [doc.full_text for doc in self.corpus.values()]

    @property
    def empty_doc_ids(self) -> list[str]:
        """Ids of the documents with neither title nor text, in corpus order.

        They stay in the corpus (qrels may judge them: such a judgment counts as a miss), but they are left
        out of every index and of training: an empty text would otherwise be embedded and retrieved.
        """
        return [doc.id for doc in self.corpus.values() if not doc.full_text.strip()]

    @property
    def query_ids(self) -> list[str]:
        """Query ids in order."""
        return list(self.queries)

    @property
    def n_judgments(self) -> int:
        """Number of (query, document) judgments with a grade > 0."""
        return sum(1 for judged in self.qrels.values() for grade in judged.values() if grade > 0)

    def relevant(self, query_id: str) -> list[str]:
        """Ids of the documents judged relevant (grade > 0) to ``query_id`` (empty when unjudged)."""
        if query_id not in self.queries:
            raise KeyError(f"Unknown query id {query_id!r} in dataset {self.name!r}.")
        return [did for did, grade in self.qrels.get(query_id, {}).items() if grade > 0]

    @property
    def fingerprint(self) -> str:
        """SHA-256 of queries, qrels, references, decisions and the corpus' ids (a run's identity)."""
        payload = json.dumps(
            [self.queries, self.qrels, self.references, self.decisions, sorted(self.corpus)], sort_keys=True
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        return (
            f"RetrievalDataset(name={self.name!r}, documents={len(self.corpus)}, "
            f"queries={len(self.queries)}, judgments={self.n_judgments})"
        )

    # -- derived datasets ----------------------------------------------------------------------------------
    def subset(
        self,
        query_ids: Iterable[str] | None = None,
        name: str | None = None,
        *,
        doc_ids: Iterable[str] | None = None,
    ) -> RetrievalDataset:
        """Return a dataset with only the given queries and/or documents (in their original order).

        Args:
            query_ids: The queries to keep, with their qrels, references and decisions (None: all).
            name: The new dataset's name (None: this one's).
            doc_ids: The documents to keep (None: the whole corpus). Judgments of the kept queries that point
                to a dropped document are an error, not silently lost: keep every judged document.

        """
        if query_ids is None:
            query_ids = list(self.queries)
        query_ids = list(dict.fromkeys(query_ids))
        unknown = [qid for qid in query_ids if qid not in self.queries]
        if unknown:
            raise InvalidValueError(f"Unknown query ids for dataset {self.name!r}: {_preview(unknown)}.")
        corpus = self.corpus
        if doc_ids is not None:
            keep = set(doc_ids)
            unknown = sorted(keep - set(self.corpus))
            if unknown:
                raise InvalidValueError(
                    f"Unknown document ids for dataset {self.name!r}: {_preview(unknown)}."
                )
            corpus = {did: doc for did, doc in self.corpus.items() if did in keep}
        wanted = set(query_ids)
        return RetrievalDataset(
            corpus=corpus,
            queries={qid: self.queries[qid] for qid in query_ids},
            qrels={qid: dict(self.qrels[qid]) for qid in query_ids if qid in self.qrels},
            name=self.name if name is None else name,
            references={qid: answer for qid, answer in self.references.items() if qid in wanted},
            decisions={qid: decision for qid, decision in self.decisions.items() if qid in wanted},
        )

    def sample_queries(
        self, max_queries: int | None = None, *, seed: int = 0, only_judged: bool = True
    ) -> RetrievalDataset:
        """Return the dataset restricted to a seeded sample of its queries (kept in their original order).

        Args:
            max_queries: How many queries to keep (None: all of them).
            seed: Seed of the sample.
            only_judged: Keep only queries with at least one relevant document (the ones retrieval can be
                scored on).

        Example:
            >>> load_demo_dataset("test").sample_queries(50, seed=0).n_judgments > 0
            True

        """
        ids = [qid for qid in self.queries if not only_judged or self.relevant(qid)]
        if not ids:
            raise InvalidValueError(
                f"Dataset {self.name!r} has no query with a relevant document; check the qrels split."
            )
        if max_queries is not None:
            if isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1:
                raise InvalidValueError(f"max_queries must be a positive integer; got {max_queries!r}.")
            if max_queries < len(ids):
                keep = set(random.Random(seed).sample(ids, max_queries))
                ids = [qid for qid in ids if qid in keep]
        return self.subset(ids)

    def reduce_corpus(self, max_docs: int, *, seed: int = 0, keep: Iterable[str] = ()) -> RetrievalDataset:
        """Return the dataset over a smaller corpus: every judged-relevant document, plus a seeded sample.

        The documents relevant to a query, and those in ``keep``, always stay; the other documents are sampled
        until the corpus has ``max_docs`` documents (or none when those alone reach it). Used to make a large
        corpus cheap to index for a quick RAG evaluation.
        """
        if isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1:
            raise InvalidValueError(f"max_docs must be a positive integer; got {max_docs!r}.")
        if max_docs >= len(self.corpus):
            return self
        kept = list(dict.fromkeys([*(d for q in self.queries for d in self.relevant(q)), *keep]))
        kept_set = set(kept)
        others = [did for did in self.corpus if did not in kept_set]
        extra = max(0, max_docs - len(kept))
        sampled = set(random.Random(seed).sample(others, min(extra, len(others))))
        return self.subset(doc_ids=kept_set | sampled)

    def split(self, test_size: float = 0.2, *, seed: int = 0) -> tuple[RetrievalDataset, RetrievalDataset]:
        """Split the queries at random into two disjoint sets; both halves share the whole corpus.

        Args:
            test_size: Share of the queries (0 < test_size < 1) that go into the second dataset.
            seed: Seed of the shuffle.

        Returns:
            ``(train, test)`` datasets named ``"<name>-train"`` and ``"<name>-test"``.

        """
        if not (isinstance(test_size, float | int) and 0 < test_size < 1):
            raise InvalidValueError(
                f"The 'test_size' parameter must be a float in (0, 1). Got {test_size!r} instead."
            )
        if len(self.queries) < 2:
            raise InvalidValueError(
                f"Cannot split dataset {self.name!r}: it has {len(self.queries)} query(ies), need 2."
            )
        ids = list(self.queries)
        random.Random(seed).shuffle(ids)
        n_test = min(max(1, round(len(ids) * test_size)), len(ids) - 1)
        test_ids = set(ids[:n_test])
        # keep the original order inside each half
        train = self.subset([q for q in self.queries if q not in test_ids], name=f"{self.name}-train")
        test = self.subset([q for q in self.queries if q in test_ids], name=f"{self.name}-test")
        return train, test

    def to_nodes(self) -> list[TextNode]:
        """Convert the corpus to LlamaIndex ``TextNode`` objects (see :func:`documents_to_nodes`).

        Documents without text are left out (see :attr:`empty_doc_ids`): they are never retrieved.
        """
        empty = set(self.empty_doc_ids)
        return documents_to_nodes(d for d in self.documents if d.id not in empty)


# ------------------------------------------------------------------------------------------------------------
# file readers
# ------------------------------------------------------------------------------------------------------------


def _open_text(path: Path):
    """Open a text file for reading, transparently decompressing ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line of a (possibly gzipped) JSONL file."""
    try:
        with _open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = loads_json(line)
                except json.JSONDecodeError as error:
                    raise InvalidValueError(f"{path}:{line_number}: malformed JSON ({error.msg}).") from None
                if not isinstance(record, dict):
                    raise InvalidValueError(
                        f"{path}:{line_number}: expected a JSON object per line, got {type(record).__name__}."
                    )
                yield line_number, record
    except (OSError, EOFError, UnicodeDecodeError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise InvalidValueError(f"Cannot read {path}: {error}") from None


def _id_of(record: Mapping[str, Any], where: str, *, keys: Sequence[str] = ("_id", "id")) -> str | None:
    for key in keys:
        if key in record:
            value = record[key]
            # BEIR ids are strings, but some exports write numbers; anything else is an error.
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise InvalidValueError(
                    f"{where}: the {key!r} field must be a string. Got {value!r} instead."
                )
            value = str(value)
            if not value:
                raise InvalidValueError(f"{where}: the {key!r} field is empty.")
            return value
    return None


def _string_field(record: Mapping[str, Any], key: str, where: str, *, required: bool) -> str:
    if key not in record:
        if required:
            raise InvalidValueError(f"{where}: missing the {key!r} field.")
        return ""
    value = record[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise InvalidValueError(
            f"{where}: the {key!r} field must be a string. Got {type(value).__name__} instead."
        )
    return value


def _read_jsonl_documents(path: Path) -> list[CorpusDocument]:
    """Read documents from JSONL: ``_id``/``id``, ``title`` (optional), ``text``; other fields -> metadata."""
    documents: list[CorpusDocument] = []
    seen: dict[str, int] = {}
    n_with_id = n_without_id = 0
    for line_number, record in _iter_jsonl(path):
        where = f"{path}:{line_number}"
        doc_id = _id_of(record, where)
        text = _string_field(record, "text", where, required=True)
        title = _string_field(record, "title", where, required=False)
        metadata = {k: v for k, v in record.items() if k not in ("_id", "id", "text", "title")}
        if doc_id is None:
            n_without_id += 1
            doc_id = str(len(documents))
        else:
            n_with_id += 1
            if doc_id in seen:
                raise InvalidValueError(
                    f"{where}: duplicate document id {doc_id!r} (first seen on line {seen[doc_id]})."
                )
            seen[doc_id] = line_number
        if n_with_id and n_without_id:
            raise InvalidValueError(
                f"{where}: some lines of {path.name} have an '_id'/'id' field and some do not; give every "
                "document an id, or none (then ids are the 0-based line order)."
            )
        documents.append(CorpusDocument(id=doc_id, text=text, title=title, metadata=metadata))
    if not documents:
        raise InvalidValueError(f"{path} contains no documents (the file is empty or has only blank lines).")
    _warn_empty(documents, path)
    return documents


def _read_txt_documents(path: Path) -> list[CorpusDocument]:
    """One document per non-empty line; ids are ``"0"``, ``"1"``, ... and metadata records the line number."""
    documents: list[CorpusDocument] = []
    try:
        with _open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                text = line.strip()
                if text:
                    documents.append(
                        CorpusDocument(id=str(len(documents)), text=text, metadata={"line": line_number})
                    )
    except (OSError, EOFError, UnicodeDecodeError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise InvalidValueError(f"Cannot read {path}: {error}") from None
    if not documents:
        raise InvalidValueError(f"{path} contains no documents (the file is empty or has only blank lines).")
    return documents


def _warn_empty(documents: Sequence[CorpusDocument], path: Path) -> None:
    empty = [doc.id for doc in documents if not doc.full_text.strip()]
    if empty:
        logger.warning(
            "%s: %d document(s) have neither title nor text: %s", path, len(empty), _preview(empty)
        )


def _find_file(folder: Path, stem: str) -> Path:
    """``folder/stem.jsonl`` or ``folder/stem.jsonl.gz``."""
    for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InputNotFoundError(
        f"{folder} has no {stem}.jsonl (or {stem}.jsonl.gz); a BEIR folder holds corpus.jsonl, queries.jsonl "
        "and qrels/<split>.tsv."
    )


def _is_beir_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("corpus.jsonl", "corpus.jsonl.gz"))


def available_splits(folder: str | os.PathLike[str]) -> list[str]:
    """Names of the qrels splits of a BEIR folder (``qrels/<split>.tsv``), sorted."""
    qrels_dir = Path(folder) / "qrels"
    if not qrels_dir.is_dir():
        return []
    return sorted(p.name[: -len(".tsv")] for p in qrels_dir.iterdir() if p.name.endswith(".tsv"))


def check_train_split(
    train_split: str | None, eval_split: str | None, *, train_name: str = "train_split", advice: str = ""
) -> None:
    """Refuse to train on the split that is evaluated on (its queries would leak into training).

    The one split-level check of the engine, the pipeline and ``heal-rag finetune``; the engine also drops
    any single training query that is an evaluation query (``exclude_eval_queries``).

    Example:
        >>> check_train_split("train", "test")  # fine
        >>> check_train_split("test", "test")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        heal_rag.errors.InvalidValueError: train_split 'test' is the evaluation split: ...

    """
    if train_split is not None and train_split == eval_split:
        raise InvalidValueError(
            f"{train_name} {train_split!r} is the evaluation split: training on it would leak the evaluation "
            f"queries. Train on another split (e.g. 'train'){advice}."
        )


def load_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl`` (``_id``, ``text``; other fields ignored) into ``{query_id: text}``."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"Query file {path} does not exist.")
    queries: dict[str, str] = {}
    for line_number, record in _iter_jsonl(path):
        where = f"{path}:{line_number}"
        query_id = _id_of(record, where)
        if query_id is None:
            raise InvalidValueError(f"{where}: missing the '_id' field of the query.")
        if query_id in queries:
            raise InvalidValueError(f"{where}: duplicate query id {query_id!r}.")
        queries[query_id] = _string_field(record, "text", where, required=True)
    return queries


def load_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (``query-id``, ``corpus-id``, ``score``; header optional) into nested dicts."""
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"Qrels file {path} does not exist.")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for line_number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 3:
                raise InvalidValueError(
                    f"{path}:{line_number}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"got {len(row)}."
                )
            query_id, doc_id, score = (cell.strip() for cell in row)
            try:
                grade = int(score)
            except ValueError:
                if line_number == 1:  # the BEIR header "query-id corpus-id score"
                    continue
                raise InvalidValueError(
                    f"{path}:{line_number}: the score {score!r} is not an integer."
                ) from None
            if not query_id or not doc_id:
                raise InvalidValueError(f"{path}:{line_number}: empty query or document id.")
            judged = qrels.setdefault(query_id, {})
            if doc_id in judged and judged[doc_id] != grade:
                raise InvalidValueError(
                    f"{path}:{line_number}: conflicting grades for ({query_id!r}, {doc_id!r}): "
                    f"{judged[doc_id]} and {grade}."
                )
            judged[doc_id] = grade
    return qrels


# ------------------------------------------------------------------------------------------------------------
# public loaders
# ------------------------------------------------------------------------------------------------------------


def load_beir(
    folder: str | os.PathLike[str], split: str | None = "test", name: str | None = None
) -> RetrievalDataset:
    """Load a BEIR-layout folder.

    Args:
        folder: Folder with ``corpus.jsonl`` (or ``.jsonl.gz``), ``queries.jsonl`` (or ``.jsonl.gz``) and
            ``qrels/<split>.tsv``.
        split: Which qrels to load. As in BEIR, only the queries judged in that split are kept. ``None``
            loads the corpus and every query, without qrels.
        name: Dataset name (default: the folder name).

    Returns:
        A validated :class:`RetrievalDataset`.

    Raises:
        FileNotFoundError: when the folder, one of its files or the split is missing (the message lists the
            available splits).
        ValueError: on malformed lines (reported as ``file:line``), duplicate ids or qrels that point to
            unknown ids.

    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputNotFoundError(f"BEIR folder {folder} does not exist or is not a folder.")
    corpus_path = _find_file(folder, "corpus")
    documents = _read_jsonl_documents(corpus_path)
    queries_path = _find_file(folder, "queries")
    queries = load_queries(queries_path)
    qrels: dict[str, dict[str, int]] = {}
    if split is not None:
        qrels_path = folder / "qrels" / f"{split}.tsv"
        if not qrels_path.is_file():
            splits = available_splits(folder)
            listing = ", ".join(repr(s) for s in splits) if splits else "none"
            raise InputNotFoundError(
                f"{folder} has no split {split!r} (no file qrels/{split}.tsv). Available splits: {listing}. "
                "Pass split=None to load the corpus and queries without qrels."
            )
        qrels = load_qrels(qrels_path)
        unknown = [qid for qid in qrels if qid not in queries]
        if unknown:
            raise InvalidValueError(
                f"{len(unknown)} query id(s) in {qrels_path} are not in {queries_path.name}: "
                f"{_preview(unknown)}."
            )
        queries = {qid: text for qid, text in queries.items() if qid in qrels}
    return RetrievalDataset(
        corpus={doc.id: doc for doc in documents},
        queries=queries,
        qrels=qrels,
        name=folder.name if name is None else name,
    )


def load_corpus(path: str | os.PathLike[str]) -> list[CorpusDocument]:
    """Load the documents of a corpus, whatever its format.

    Args:
        path: A BEIR folder (its ``corpus.jsonl``), a ``.jsonl`` / ``.jsonl.gz`` file (fields ``_id`` or
            ``id``, ``title`` (optional), ``text``; any other field goes to ``metadata``; without any id field
            the ids are the 0-based line order) or a ``.txt`` / ``.txt.gz`` file (one document per non-empty
            line, ids ``"0"``, ``"1"``, ...).

    Returns:
        The documents in file order (ids are unique).

    Raises:
        FileNotFoundError: when the path does not exist.
        ValueError: on an unsupported format, malformed lines (``file:line``), duplicate ids, non-string texts
            or an empty corpus.

    """
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(f"Corpus {path} does not exist.")
    if path.is_dir():
        if not _is_beir_folder(path):
            raise InvalidValueError(
                f"{path} is a folder without corpus.jsonl; give a BEIR folder, a .jsonl file or a .txt file."
            )
        return _read_jsonl_documents(_find_file(path, "corpus"))
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffixes in (".jsonl", ".jsonl.gz", ".json.gz") or path.suffix == ".jsonl":
        return _read_jsonl_documents(path)
    if suffixes in (".txt", ".txt.gz"):
        return _read_txt_documents(path)
    raise InvalidValueError(
        f"Unsupported corpus format {path.name!r}: expected a BEIR folder, a .jsonl(.gz) file or a .txt file "
        "(one document per line)."
    )


# ------------------------------------------------------------------------------------------------------------
# LlamaIndex conversions (LlamaIndex is imported only here)
# ------------------------------------------------------------------------------------------------------------

# The title is node metadata rendered as its bare value, so that a node's embedding text
# (``node.get_content(MetadataMode.EMBED)``) equals ``CorpusDocument.full_text`` exactly: the model embeds in
# LlamaIndex what it was trained on. Other metadata keys are kept on the node but hidden from the embedding
# and the LLM, because the bare-value template would show them without their names.
_TITLE_KEY = "title"
_NODE_TEXT_TEMPLATE = "{metadata_str} {content}"
_NODE_METADATA_TEMPLATE = "{value}"


def _node_kwargs(doc: CorpusDocument) -> dict[str, Any]:
    if _TITLE_KEY in doc.metadata:
        raise InvalidValueError(
            f"Document {doc.id!r} has a metadata key 'title', which would clash with its title in LlamaIndex "
            "metadata; rename the metadata key."
        )
    metadata = ({_TITLE_KEY: doc.title} if doc.title else {}) | dict(doc.metadata)
    hidden = [key for key in doc.metadata]
    return {
        "id_": doc.id,
        "text": doc.text,
        "metadata": metadata,
        "excluded_embed_metadata_keys": hidden,
        "excluded_llm_metadata_keys": list(hidden),
        "metadata_template": _NODE_METADATA_TEMPLATE,
        "text_template": _NODE_TEXT_TEMPLATE,
    }


def documents_to_nodes(documents: Iterable[CorpusDocument]) -> list[TextNode]:
    """Convert documents to LlamaIndex ``TextNode`` objects (node id = document id).

    The title goes into ``metadata["title"]`` and is rendered so that
    ``node.get_content(MetadataMode.EMBED) == document.full_text``; other metadata is kept but excluded from
    the embedding and LLM text. :func:`nodes_to_documents` inverts this exactly.
    """
    from llama_index.core.schema import TextNode

    return [TextNode(**_node_kwargs(doc)) for doc in _as_documents(documents)]


def documents_to_llama(documents: Iterable[CorpusDocument]) -> list[LlamaDocument]:
    """Convert documents to LlamaIndex ``Document`` objects (e.g. to feed an ingestion pipeline)."""
    from llama_index.core.schema import Document as LlamaDocument

    return [LlamaDocument(**_node_kwargs(doc)) for doc in _as_documents(documents)]


def nodes_to_documents(nodes: Iterable[BaseNode]) -> list[CorpusDocument]:
    """Convert LlamaIndex nodes or Documents (with ``node_id``, ``text`` and ``metadata``) to documents.

    ``metadata["title"]`` (if a string) becomes the title; other metadata is kept. Node ids must be unique.
    """
    documents: list[CorpusDocument] = []
    seen: set[str] = set()
    for position, node in enumerate(nodes):
        node_id = getattr(node, "node_id", None)
        text = getattr(node, "text", None)
        if node_id is None or text is None:
            raise InvalidValueError(
                f"Item {position} ({type(node).__name__}) is not a LlamaIndex text node: it needs node_id "
                "and text."
            )
        if node_id in seen:
            raise InvalidValueError(f"Duplicate node id {node_id!r} at position {position}.")
        seen.add(node_id)
        metadata = dict(node.metadata or {})
        title = metadata.pop(_TITLE_KEY, "")
        if not isinstance(title, str):
            metadata[_TITLE_KEY] = title  # not ours: keep it as metadata rather than lose it
            title = ""
        documents.append(CorpusDocument(id=node_id, text=text, title=title, metadata=metadata))
    return documents


def _as_documents(documents: Iterable[CorpusDocument]) -> list[CorpusDocument]:
    documents = list(documents)
    bad = [i for i, doc in enumerate(documents) if not isinstance(doc, CorpusDocument)]
    if bad:
        raise InvalidValueError(
            f"Expected heal_rag.datasets.CorpusDocument objects; items at positions {_preview(bad)} are not."
        )
    ids = [doc.id for doc in documents]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dupes = [i for i in ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        raise InvalidValueError(f"Duplicate document ids: {_preview(dict.fromkeys(dupes))}.")
    return documents


# ------------------------------------------------------------------------------------------------------------
# EmbeddingQAFinetuneDataset JSON (llama-index-finetuning's format, without depending on it)
# ------------------------------------------------------------------------------------------------------------


def save_qa_finetune_json(dataset: RetrievalDataset, path: str | os.PathLike[str]) -> None:
    """Write ``dataset`` in the JSON format of LlamaIndex's ``EmbeddingQAFinetuneDataset``.

    The file has ``queries`` ({id: text}), ``corpus`` ({id: full_text}), ``relevant_docs`` ({query id: [doc
    ids with grade > 0]}) and ``mode`` ("text"), and loads with
    ``EmbeddingQAFinetuneDataset.from_json(path)``. Queries without a relevant document are left out (that
    engine would fail on them); a warning says how many. Titles are folded into the corpus texts.
    """
    relevant_docs = {qid: dataset.relevant(qid) for qid in dataset.queries}
    relevant_docs = {qid: ids for qid, ids in relevant_docs.items() if ids}
    dropped = len(dataset.queries) - len(relevant_docs)
    if dropped:
        logger.warning(
            "%d of %d queries of %r have no relevant document and are left out of %s.",
            dropped,
            len(dataset.queries),
            dataset.name,
            path,
        )
    payload = {
        "queries": {qid: dataset.queries[qid] for qid in relevant_docs},
        "corpus": {doc.id: doc.full_text for doc in dataset.documents},
        "relevant_docs": relevant_docs,
        "mode": "text",
    }
    atomic_write_json(path, payload)


def load_qa_finetune_json(path: str | os.PathLike[str], name: str | None = None) -> RetrievalDataset:
    """Read an ``EmbeddingQAFinetuneDataset`` JSON file (as written by ``save_json``) as a dataset.

    Corpus strings become documents without a title; every listed relevant document gets grade 1.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"QA fine-tune dataset {path} does not exist.")
    try:
        with open(path, encoding="utf-8") as handle:
            payload = loads_json(handle.read())
    except json.JSONDecodeError as error:
        raise InvalidValueError(f"{path}: malformed JSON at line {error.lineno} ({error.msg}).") from None
    if not isinstance(payload, dict):
        raise InvalidValueError(
            f"{path}: expected a JSON object with 'queries', 'corpus' and 'relevant_docs'."
        )
    missing = [key for key in ("queries", "corpus", "relevant_docs") if key not in payload]
    if missing:
        raise InvalidValueError(
            f"{path} is not an EmbeddingQAFinetuneDataset file: missing key(s) "
            f"{', '.join(map(repr, missing))}."
        )
    mode = payload.get("mode", "text")
    if mode != "text":
        raise InvalidValueError(f"{path}: only mode 'text' is supported. Got mode {mode!r}.")
    for key in ("queries", "corpus", "relevant_docs"):
        if not isinstance(payload[key], dict):
            raise InvalidValueError(
                f"{path}: {key!r} must be a JSON object. Got {type(payload[key]).__name__}."
            )
    bad_corpus = [did for did, text in payload["corpus"].items() if not isinstance(text, str)]
    if bad_corpus:
        raise InvalidValueError(
            f"{path}: corpus texts must be strings; offending ids: {_preview(bad_corpus)}."
        )
    bad_relevant = [
        qid
        for qid, ids in payload["relevant_docs"].items()
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids)
    ]
    if bad_relevant:
        raise InvalidValueError(
            f"{path}: relevant_docs values must be lists of document ids; offending query ids: "
            f"{_preview(bad_relevant)}."
        )
    return RetrievalDataset(
        corpus={did: CorpusDocument(id=did, text=text) for did, text in payload["corpus"].items()},
        queries=dict(payload["queries"]),
        qrels={qid: dict.fromkeys(ids, 1) for qid, ids in payload["relevant_docs"].items()},
        name=path.stem if name is None else name,
    )


# ------------------------------------------------------------------------------------------------------------
# bundled demo corpus
# ------------------------------------------------------------------------------------------------------------


def demo_corpus_path() -> Path:
    """Folder of the bundled BEIR-layout demo corpus (a SciFact subset; see its README.md and LICENSE.md)."""
    # importlib.resources finds the data inside an installed (or editable) package; a regular install
    # unpacks it to the file system, so the Traversable is a real path.
    path = Path(str(importlib.resources.files("heal_rag").joinpath("data", DEMO_DATASET_NAME)))
    if not _is_beir_folder(path):
        raise InputNotFoundError(
            f"The bundled demo corpus is missing from {path}; reinstall heal-rag (pip install heal-rag)."
        )
    return path


def load_demo_dataset(split: str | None = "test") -> RetrievalDataset:
    """Load the bundled demo corpus (about 800 SciFact abstracts with claims and qrels).

    Args:
        split: ``"test"`` (the SciFact claims of BEIR's test split), ``"train"``, or ``None`` (all claims,
            no qrels).

    """
    return load_beir(demo_corpus_path(), split=split, name=DEMO_DATASET_NAME)


def __getattr__(name: str) -> Any:
    # ``Document`` was renamed (issue 11): it shared its name with LlamaIndex's ``Document``
    if name == "Document":
        from heal_rag._deprecation import warn_deprecated

        warn_deprecated(
            "heal_rag.datasets.Document",
            "it was renamed heal_rag.datasets.CorpusDocument (easily confused with LlamaIndex's Document)",
        )
        return CorpusDocument
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
