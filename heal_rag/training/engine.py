"""HEALFinetuneEngine: fine-tune a sentence-transformers model on a corpus with the HEAL loss.

The engine is plumbing, no maths: it builds (or takes) the topic hierarchy, writes each node's path into its
metadata, turns training queries into labelled (query, document) pairs, and trains with
sentence-transformers' own ``SentenceTransformerTrainer`` (so CPU, one GPU and several GPUs through
``torchrun`` / ``accelerate launch`` work as they do there), then saves a HEAL model directory
(:mod:`heal_rag.model_dir`).

Its interface is the one users know from llama-index-finetuning (``finetune()``, ``get_finetuned_model()``),
without depending on that package.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heal_rag._checks import preview_ids as _preview
from heal_rag._models import load_sentence_transformer, resolve_model_name
from heal_rag._node_metadata import write_topic_path
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag._version import __version__
from heal_rag.datasets import document_fields, join_title
from heal_rag.errors import InvalidTypeError, InvalidValueError, NotFittedError
from heal_rag.model_dir import check_output_dir, save_model_dir
from heal_rag.training.queries import (
    TrainingPair,
    embed_text,
    exclude_eval_queries,
    generate_llm_queries,
    make_pseudo_queries,
    pairs_from_qa_json,
    pairs_from_qrels,
)
from heal_rag.training_args import HEALTrainingArguments

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

    from heal_rag.datasets import RetrievalDataset
    from heal_rag.hierarchy import Hierarchy
    from heal_rag.integrations.embedding import HEALEmbedding

logger = logging.getLogger(__name__)

__all__ = ["HEALFinetuneEngine", "HEAL_METADATA_PREFIX"]

HEAL_METADATA_PREFIX = "heal_"


def _check_device(device: str | None) -> str | None:
    """Validate the requested device now, with a clear message, instead of deep inside torch."""
    if device is None:
        return None
    if not isinstance(device, str) or not device:
        raise InvalidValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or None. Got {device!r} instead."
        )
    import torch

    kind = device.split(":")[0]
    if kind == "cpu":
        return device
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InvalidValueError(
                f"device={device!r} was asked for but CUDA is not available (torch {torch.__version__}, "
                f"cuda build: {torch.version.cuda or 'none'}). Install a CUDA build of torch, or use "
                "device='cpu'."
            )
        if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
            raise InvalidValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are visible."
            )
        return device
    if kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise InvalidValueError(
                "device='mps' was asked for but Apple MPS is not available; use device='cpu'."
            )
        return device
    raise InvalidValueError(f"device must be 'cpu', 'cuda', 'cuda:N', 'mps' or None. Got {device!r} instead.")


def _json_scalars(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the entries of ``settings`` that heal_config.json records as is (numbers, strings, bools)."""
    return {k: v for k, v in dict(settings).items() if isinstance(v, (int, float, str, bool))}


def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"heal-rag": __version__, "python": platform.python_version()}
    for package in ("torch", "sentence-transformers", "transformers", "accelerate", "llama-index-core"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


class HEALFinetuneEngine:
    """Fine-tune an embedding model on a domain corpus with the HEAL loss.

    Args:
        documents: the corpus: heal-rag :class:`~heal_rag.datasets.Document` objects, LlamaIndex nodes or
            Documents, or a :class:`~heal_rag.datasets.RetrievalDataset` (its corpus). Ids must be unique and
            every document must have text.
        args: the training settings (:class:`~heal_rag.HEALTrainingArguments`: schedule, loss, negatives,
            seed; its defaults were chosen on a SciFact dev split). ``None`` takes the defaults.
        **training: any field of :class:`~heal_rag.HEALTrainingArguments` (``epochs=2``,
            ``use_hierarchy=False``, ``hard_negatives="tree"``, ...), applied on top of ``args``.
        base_model: a sentence-transformers model name or local path; ``None`` is the bundled offline copy of
            all-MiniLM-L6-v2.
        output_dir: where the HEAL model directory is saved.
        hierarchy: a fitted :class:`~heal_rag.hierarchy.Hierarchy` over exactly these documents, a dict of
            :class:`~heal_rag.hierarchy.HNMFk` parameters, or ``None`` (HNMFk with its defaults). The
            hierarchy is fit on the documents' full texts (title and body).
        queries: the training queries: ``"pseudo"`` (offline, see
            :func:`~heal_rag.training.queries.make_pseudo_queries`), a LlamaIndex LLM (questions generated per
            document, see :func:`~heal_rag.training.queries.generate_llm_queries`), a list of
            :class:`~heal_rag.training.queries.TrainingPair`, a RetrievalDataset split (its qrels), or the
            path of an ``EmbeddingQAFinetuneDataset`` JSON.
        eval_queries: evaluation queries (texts, ``{id: text}`` or a RetrievalDataset split) that must never
            be trained on.
        dev_set: a RetrievalDataset split (queries, qrels and a corpus, which may be a sample of the
            whole) to evaluate on after every epoch with sentence-transformers'
            ``InformationRetrievalEvaluator``; the epoch with the best dev nDCG@10 is kept and the curve
            recorded in ``metrics_["dev_history"]``. Its queries are never trained on.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or ``None`` (the trainer's choice). Asking
            for a device that is absent is an error.
        overwrite: replace a model already in ``output_dir``.
        query_cache_path: JSONL cache of LLM questions (only used when ``queries`` is an LLM).
        llm_kwargs: extra arguments of :func:`~heal_rag.training.queries.generate_llm_queries`
            (``num_questions_per_doc``, ``prompt_template``, ``max_retries``, ``timeout``).
        checkpoint_dir: save trainer checkpoints there each epoch; ``None`` (default) saves none.
        show_progress: progress bars; ``None`` (default) shows them when the ``heal_rag`` logger is
            enabled for INFO (``TQDM_DISABLE=1`` always hides them).

    Attributes:
        args: the validated :class:`~heal_rag.HEALTrainingArguments` this engine trains with.

    Attributes (after :meth:`finetune`):
        hierarchy_: the hierarchy used (``None`` in flat mode).
        documents_: the documents trained on; with a hierarchy, copies whose metadata holds their topic
            path (``heal_path``, ``heal_topic_l{i}``, ``heal_hierarchy``). The documents passed in are never
            changed: to write the paths onto your own nodes, call
            ``heal_rag.integrations.add_hierarchy_metadata(nodes, engine.hierarchy_)``.
        training_pairs_: the pairs trained on.
        metrics_: training metrics (also in ``heal_config.json``).
        model_dir_: the saved directory.

    Example:
        >>> from heal_rag import HEALFinetuneEngine, load_demo_dataset
        >>> dataset = load_demo_dataset(split="train")  # doctest: +SKIP
        >>> engine = HEALFinetuneEngine(  # doctest: +SKIP
        ...     dataset.documents, queries=dataset, output_dir="heal-model"
        ... )
        >>> engine.finetune()  # doctest: +SKIP
        >>> embed_model = engine.get_finetuned_model()  # a LlamaIndex embedding  # doctest: +SKIP

    """

    def __init__(
        self,
        documents: Sequence[Any] | RetrievalDataset,
        *,
        args: HEALTrainingArguments | None = None,
        base_model: str | None = None,
        output_dir: str | os.PathLike[str] = "heal-model",
        hierarchy: Hierarchy | Mapping[str, Any] | None = None,
        queries: Any = "pseudo",
        eval_queries: Iterable[str] | Mapping[str, str] | RetrievalDataset | None = None,
        dev_set: RetrievalDataset | None = None,
        device: str | None = None,
        overwrite: bool = False,
        query_cache_path: str | os.PathLike[str] | None = None,
        llm_kwargs: Mapping[str, Any] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        show_progress: bool | None = None,
        **training: Any,
    ) -> None:
        if args is not None and not isinstance(args, HEALTrainingArguments):
            raise InvalidTypeError(
                f"args must be a HEALTrainingArguments. Got {type(args).__name__} instead."
            )
        # every training setting validated once, before any work
        self.args = (args or HEALTrainingArguments()).replace(**training)
        if hasattr(documents, "corpus") and hasattr(documents, "qrels"):  # a RetrievalDataset
            documents = list(documents.corpus.values())
        self.documents = list(documents)
        self._records = self._check_documents(self.documents)
        # documents without text are left out of clustering and training (kept in the corpus for evaluation)
        self.empty_document_ids_ = [r[0] for r in self._records if not join_title(r[1], r[2]).strip()]
        if self.empty_document_ids_:
            usable = [
                (r, d)
                for r, d in zip(self._records, self.documents, strict=True)
                if r[0] not in set(self.empty_document_ids_)
            ]
            self._records, self.documents = [r for r, _ in usable], [d for _, d in usable]
        self.base_model = base_model
        self.output_dir = Path(output_dir)
        self.overwrite = bool(overwrite)
        check_output_dir(self.output_dir, overwrite=self.overwrite)  # fail before hours of training
        self.hierarchy = hierarchy
        if self.args.use_hierarchy:
            self._check_hierarchy_arg(hierarchy)
        elif hierarchy is not None:
            logger.warning("use_hierarchy=False: the given hierarchy is ignored (flat baseline).")
        self.queries = queries
        self._check_queries_arg(queries)
        if not isinstance(queries, (str, os.PathLike)) and not callable(getattr(queries, "complete", None)):
            # given pairs / qrels: check they point into this corpus now, before any work
            if hasattr(queries, "qrels"):
                referenced = [
                    d for judged in queries.qrels.values() for d, grade in judged.items() if grade > 0
                ]
            else:
                referenced = [p.doc_id for p in queries]
            self._check_known_documents(referenced)
        self.eval_queries = eval_queries
        if dev_set is not None and not (hasattr(dev_set, "qrels") and hasattr(dev_set, "corpus")):
            raise InvalidTypeError(
                "dev_set must be a RetrievalDataset split (queries, qrels, corpus). Got "
                f"{type(dev_set).__name__}."
            )
        if dev_set is not None and not dev_set.qrels:
            raise InvalidValueError("dev_set has no qrels: load a split with judgments to evaluate on.")
        self.dev_set = dev_set
        self.device = _check_device(device)
        self.query_cache_path = query_cache_path
        self.llm_kwargs = dict(llm_kwargs or {})
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.show_progress = show_progress
        self.hierarchy_: Hierarchy | None = None
        self.documents_: list[Any] | None = None
        self.training_pairs_: list[TrainingPair] | None = None
        self.metrics_: dict[str, Any] | None = None
        self.model_dir_: Path | None = None
        self._model: SentenceTransformer | None = None

    # -- alternative constructors ------------------------------------------------------------------------
    @classmethod
    def from_nodes(cls, nodes: Sequence[Any], **kwargs: Any) -> HEALFinetuneEngine:
        """Build from LlamaIndex nodes (or heal-rag Documents); they are read, never changed."""
        return cls(nodes, **kwargs)

    @classmethod
    def from_index(cls, index: Any, **kwargs: Any) -> HEALFinetuneEngine:
        """Build from a LlamaIndex index: its nodes are read from the index's docstore.

        The index and its nodes are left unchanged (see ``documents_`` for the nodes with their topic paths).
        """
        docstore = getattr(index, "docstore", None)
        docs = getattr(docstore, "docs", None)
        if docs is None:
            raise InvalidValueError(
                f"{type(index).__name__} has no docstore with nodes. Build the index with its nodes stored "
                "(the default for VectorStoreIndex), or pass the nodes to HEALFinetuneEngine.from_nodes()."
            )
        nodes = list(docs.values())
        if not nodes:
            raise InvalidValueError("The index's docstore holds no nodes: nothing to fine-tune on.")
        return cls(nodes, **kwargs)

    @classmethod
    def from_beir(
        cls,
        folder: str | os.PathLike[str],
        train_split: str | None = "train",
        *,
        eval_split: str | None = "test",
        **kwargs: Any,
    ) -> HEALFinetuneEngine:
        """Build from a BEIR folder.

        Args:
            folder: BEIR-layout folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/``).
            train_split: qrels split to train on; ``None`` trains on ``kwargs["queries"]`` (default: offline
                pseudo-queries).
            eval_split: when the folder has this split, its queries are kept out of training.
            **kwargs: the other constructor arguments.

        """
        from heal_rag.datasets import available_splits, check_train_split, load_beir

        folder = Path(folder)
        if eval_split in available_splits(folder):
            check_train_split(train_split, eval_split)  # was skipped silently: training on test
            if kwargs.get("eval_queries") is None:
                kwargs["eval_queries"] = load_beir(folder, split=eval_split).queries
        if train_split is None:
            dataset = load_beir(folder, split=None)
        else:
            dataset = load_beir(folder, split=train_split)
            if "queries" in kwargs:
                raise InvalidValueError("Pass either train_split or queries to from_beir(), not both.")
            kwargs["queries"] = dataset
        return cls(dataset.documents, **kwargs)

    # -- validation --------------------------------------------------------------------------------------
    @staticmethod
    def _check_documents(documents: list[Any]) -> list[tuple[str, str, str]]:
        if not documents:
            raise InvalidValueError("The corpus is empty: HEALFinetuneEngine needs documents to train on.")
        try:
            records = [document_fields(d) for d in documents]
        except TypeError as error:
            raise InvalidValueError(f"Cannot read the corpus: {error}") from error
        ids = [r[0] for r in records]
        if len(set(ids)) != len(ids):
            dupes = [i for i, n in Counter(ids).items() if n > 1]
            raise InvalidValueError(f"Document ids must be unique; duplicated: {_preview(dupes)}.")
        empty = [doc_id for doc_id, title, body in records if not join_title(title, body).strip()]
        if len(empty) == len(records):
            raise InvalidValueError(
                f"None of the {len(records)} documents has any text (title or body): there is nothing to "
                "train "
                "on. Check the corpus file's 'text' field."
            )
        if len(records) - len(empty) < 2:
            raise InvalidValueError(
                f"Only {len(records) - len(empty)} of {len(records)} documents have text (empty: "
                f"{_preview(empty)}); contrastive training needs at least two. Check the corpus' text field."
            )
        if empty:
            logger.warning(
                "%d of %d documents have no text and are left out of clustering and training: %s.",
                len(empty),
                len(records),
                _preview(empty),
            )
        return records

    def _check_hierarchy_arg(self, hierarchy: Any) -> None:
        if hierarchy is None or isinstance(hierarchy, Mapping):
            return
        if not all(hasattr(hierarchy, a) for a in ("doc_ids", "paths", "n_levels")):
            raise InvalidTypeError(
                "hierarchy must be a fitted heal_rag Hierarchy, a dict of HNMFk parameters or None. Got "
                f"{type(hierarchy).__name__} instead."
            )
        self._check_hierarchy_matches(hierarchy)

    def _check_hierarchy_matches(self, hierarchy: Hierarchy) -> None:
        corpus_ids = [r[0] for r in self._records]
        # a hierarchy fitted before empty documents were left out may still list them: ignore those
        tree_ids = [str(i) for i in hierarchy.doc_ids if str(i) not in set(self.empty_document_ids_)]
        if len(tree_ids) != len(corpus_ids) or set(tree_ids) != set(corpus_ids):
            missing = [i for i in corpus_ids if i not in set(tree_ids)]
            extra = [i for i in tree_ids if i not in set(corpus_ids)]
            raise InvalidValueError(
                f"The hierarchy does not match the corpus: it covers {len(tree_ids)} documents, the corpus "
                "has "
                f"{len(corpus_ids)}; corpus ids not in the hierarchy: {_preview(missing) or 'none'}; "
                "hierarchy "
                f"ids not in the corpus: {_preview(extra) or 'none'}. Fit the hierarchy on this corpus with "
                "doc_ids=<the document ids>, or pass hierarchy=None to build it here."
            )

    def _check_known_documents(self, doc_ids: Sequence[str]) -> None:
        known = {r[0] for r in self._records} | set(self.empty_document_ids_)
        unknown = sorted({d for d in doc_ids if d not in known})
        if unknown:
            raise InvalidValueError(
                f"{sum(d not in known for d in doc_ids)} training pairs point to {len(unknown)} "
                "document(s) that "
                f"are not in the corpus ({_preview(unknown)}). Check that the queries belong to this corpus."
            )

    @staticmethod
    def _check_queries_arg(queries: Any) -> None:
        if isinstance(queries, str):
            if queries == "pseudo":
                return
            if queries.endswith(".json"):
                return
            raise InvalidValueError(
                "queries must be 'pseudo', a LlamaIndex LLM, a list of TrainingPair, a RetrievalDataset "
                "split "
                f"or the path of an EmbeddingQAFinetuneDataset JSON. Got the string {queries!r}."
            )
        if isinstance(queries, os.PathLike):
            return
        if callable(getattr(queries, "complete", None)):
            return
        if hasattr(queries, "queries") and hasattr(queries, "qrels"):
            if not queries.qrels:
                raise InvalidValueError(
                    "The dataset given as queries has no qrels (loaded with split=None?); load a split "
                    "that has "
                    "judgments, e.g. load_beir(folder, split='train')."
                )
            return
        if isinstance(queries, Sequence) and all(isinstance(p, TrainingPair) for p in queries):
            if not queries:
                raise InvalidValueError("queries is an empty list: give at least one TrainingPair.")
            return
        raise InvalidTypeError(
            "queries must be 'pseudo', a LlamaIndex LLM, a list of TrainingPair, a RetrievalDataset split "
            "or an "
            f"EmbeddingQAFinetuneDataset JSON path. Got {type(queries).__name__} instead."
        )

    # -- steps of finetune() -----------------------------------------------------------------------------
    def _build_hierarchy(self) -> Hierarchy:
        if self.hierarchy is not None and not isinstance(self.hierarchy, Mapping):
            return self.hierarchy
        from heal_rag.hierarchy import HNMFk

        params = dict(self.hierarchy or {})
        params.setdefault("random_state", self.args.seed)
        params.setdefault("show_progress", self._show_progress())
        texts = [join_title(title, body) for _, title, body in self._records]
        ids = [r[0] for r in self._records]
        logger.info("Building the topic hierarchy with HNMFk(%s) on %d documents.", params, len(texts))
        try:
            estimator = HNMFk(**params)
        except TypeError as error:
            raise InvalidValueError(f"Invalid HNMFk parameters in hierarchy={params!r}: {error}") from error
        hierarchy = estimator.fit(texts, doc_ids=ids).hierarchy_
        self._check_hierarchy_matches(hierarchy)
        return hierarchy

    def _show_progress(self) -> bool:
        return resolve_show_progress(self.show_progress)

    @staticmethod
    def _warn_if_degenerate(hierarchy: Hierarchy) -> None:
        n_leaves = len({int(t) for t in hierarchy.paths[:, -1]})
        if n_leaves < 2:
            logger.warning(
                "The topic hierarchy has a single topic: its levels give every pair the same label, so HEAL "
                "adds nothing over the flat loss. Lower min_topic_size / k_range, or give more documents."
            )

    def _annotated_documents(self, hierarchy: Hierarchy) -> list[Any]:
        """Return copies of the documents with their topic path in metadata (hidden from embedding, LLM).

        The caller's objects are never changed: documents with a metadata dict are copied first (their
        metadata dict and excluded-key lists too); others (tuples, mappings) have nowhere to keep a path and
        are returned as they are.
        """
        row_of = {str(doc_id): row for row, doc_id in enumerate(hierarchy.doc_ids)}
        out = []
        for document, (doc_id, _, _) in zip(self.documents, self._records, strict=True):
            if not isinstance(getattr(document, "metadata", None), dict):
                out.append(document)
                continue
            annotated = _copy_with_own_metadata(document)
            write_topic_path(annotated, hierarchy.paths[row_of[doc_id]], fingerprint=hierarchy.fingerprint)
            out.append(annotated)
        return out

    def _make_pairs(self) -> tuple[list[TrainingPair], dict[str, Any]]:
        queries = self.queries
        info: dict[str, Any] = {}
        if isinstance(queries, str) and queries == "pseudo":
            pairs = make_pseudo_queries(self.documents, seed=self.args.seed, mode=self.args.pseudo_query_mode)
            info["queries"] = f"pseudo ({self.args.pseudo_query_mode})"
        elif isinstance(queries, (str, os.PathLike)):
            pairs = pairs_from_qa_json(queries)
            info["queries"] = f"EmbeddingQAFinetuneDataset JSON {os.fspath(queries)}"
        elif callable(getattr(queries, "complete", None)):
            kwargs = {"show_progress": self._show_progress(), **self.llm_kwargs}
            pairs = generate_llm_queries(self.documents, queries, cache_path=self.query_cache_path, **kwargs)
            metadata = getattr(queries, "metadata", None)
            info["queries"] = f"llm ({type(queries).__name__} {getattr(metadata, 'model_name', '')})".strip()
        elif hasattr(queries, "qrels"):
            pairs = pairs_from_qrels(queries)
            info["queries"] = f"given qrels ({getattr(queries, 'name', '') or 'RetrievalDataset'})"
        else:
            pairs = list(queries)
            info["queries"] = "given pairs"
        self._check_known_documents([p.doc_id for p in pairs])
        if self.empty_document_ids_:  # judged documents without text: nothing to train towards
            no_text = set(self.empty_document_ids_)
            kept = [p for p in pairs if p.doc_id not in no_text]
            if len(kept) < len(pairs):
                logger.warning(
                    "%d training pair(s) point to documents without text; skipped.", len(pairs) - len(kept)
                )
            pairs = kept
        empty = sum(1 for p in pairs if not p.query.strip())
        if empty:
            raise InvalidValueError(f"{empty} training pairs have an empty query; remove them.")
        dropped = 0
        if self.eval_queries is not None:
            eval_queries = self.eval_queries
            if hasattr(eval_queries, "queries") and hasattr(eval_queries, "qrels"):
                eval_queries = eval_queries.queries
            pairs, dropped = exclude_eval_queries(pairs, eval_queries, on_overlap=self.args.on_eval_overlap)
        info["dropped_eval_overlap"] = dropped
        if self.dev_set is not None:
            pairs, info["dropped_dev_overlap"] = exclude_eval_queries(
                pairs, self.dev_set.queries, on_overlap=self.args.on_eval_overlap
            )
        if len(pairs) < 2:
            raise InvalidValueError(
                f"Only {len(pairs)} training pair(s) are left; contrastive training needs at least two. Give "
                "more queries or more documents."
            )
        info["pair_sources"] = dict(Counter(p.source for p in pairs))
        return pairs, info

    def _label_rows(self, pairs: list[TrainingPair], hierarchy: Hierarchy | None) -> list[list[int]]:
        doc_index = {r[0]: i for i, r in enumerate(self._records)}
        if hierarchy is None:
            return [[doc_index[p.doc_id]] for p in pairs]
        row_of = {str(doc_id): row for row, doc_id in enumerate(hierarchy.doc_ids)}
        paths = hierarchy.paths
        return [[*(int(t) for t in paths[row_of[p.doc_id]]), doc_index[p.doc_id]] for p in pairs]

    def _positive_texts(self, pairs: list[TrainingPair], texts: list[str]) -> list[str]:
        text_of = {r[0]: text for r, text in zip(self._records, texts, strict=True)}
        return [p.positive if p.positive is not None else text_of[p.doc_id] for p in pairs]

    def _batch_sampler(self, label_width: int) -> Any:
        from heal_rag.training.sampler import heal_batch_sampler

        kwargs: dict[str, Any] = {"label_width": label_width}
        if self.args.hard_negatives != "none":
            # A negative may be another pair's positive in the same batch: the labels say so (same document
            # id), so only the pairs' own texts must not repeat.
            kwargs["dedup_columns"] = ["anchor", "positive"]
        return heal_batch_sampler(**kwargs, **self.args.sampler_kwargs)

    def _hard_negative_rows(
        self, pairs: list[TrainingPair], positives: list[str], texts: list[str], hierarchy: Hierarchy | None
    ) -> tuple[list[int], dict[str, Any]]:
        """One negative document (its row in the corpus) per pair, and counts for the log."""
        import numpy as np

        from heal_rag.training.negatives import mined_negatives, tree_negatives

        doc_row = {r[0]: i for i, r in enumerate(self._records)}
        judged: dict[str, set[int]] = {}
        for p in pairs:
            judged.setdefault(p.query, set()).add(doc_row[p.doc_id])
        exclude = [judged[p.query] for p in pairs]
        rng = np.random.default_rng(self.args.seed)
        if self.args.hard_negatives == "tree":
            assert hierarchy is not None  # checked in __init__
            tree_row = {str(d): i for i, d in enumerate(hierarchy.doc_ids)}
            paths = hierarchy.paths[[tree_row[r[0]] for r in self._records]]
            rows = [doc_row[p.doc_id] for p in pairs]
            return tree_negatives(paths, rows, exclude, rng)
        return mined_negatives(
            [p.query for p in pairs],
            positives,
            texts,
            exclude,
            rng,
            model_name=resolve_model_name(self.base_model),
            max_seq_length=self.args.max_seq_length,
            device=self.device,
            show_progress=self._show_progress(),
            mining_kwargs=self.args.hard_negative_kwargs,
        )

    def _dev_evaluator(self) -> Any:
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

        dev = self.dev_set
        corpus = {doc_id: embed_text(doc) for doc_id, doc in dev.corpus.items()}
        relevant = {q: {d for d, g in judged.items() if g > 0} for q, judged in dev.qrels.items()}
        relevant = {q: docs for q, docs in relevant.items() if docs and q in dev.queries}
        return InformationRetrievalEvaluator(
            {q: dev.queries[q] for q in relevant},
            corpus,
            relevant,
            name="dev",
            ndcg_at_k=[10],
            mrr_at_k=[10],
            accuracy_at_k=[1],
            precision_recall_at_k=[100],
            map_at_k=[100],
            show_progress_bar=self._show_progress(),
        )

    # -- public API --------------------------------------------------------------------------------------
    def finetune(self) -> None:
        """Build the hierarchy, make the labelled pairs, train, and save the model directory.

        Raises:
            ValueError: on bad input found at this stage (queries pointing to unknown documents, every pair
                excluded, a batch size too small for the sampler, ...).
            FileExistsError: if the output directory came to hold another model meanwhile.

        """
        check_output_dir(self.output_dir, overwrite=self.overwrite)
        start = time.perf_counter()
        hierarchy = None
        hierarchy_seconds = 0.0
        if self.args.use_hierarchy:
            hierarchy = self._build_hierarchy()
            hierarchy_seconds = time.perf_counter() - start
            self._warn_if_degenerate(hierarchy)
            self.documents_ = self._annotated_documents(hierarchy)
        else:
            self.documents_ = list(self.documents)
        dataset, pairs, info, label_width = self._training_dataset(hierarchy)
        sampler_factory = self._batch_sampler(label_width)
        total_steps = self.args.max_steps or self.args.epochs * self._steps_per_epoch(
            sampler_factory, dataset
        )
        model_name = resolve_model_name(self.base_model)
        model, loss, n_active = self._model_and_loss(model_name, hierarchy)

        # A dev set needs checkpoints to return to the best epoch; they go to a temporary folder.
        keep_trainer_dir = self.checkpoint_dir is not None
        trainer_dir = self.checkpoint_dir or Path(tempfile.mkdtemp(prefix="heal-rag-trainer-"))
        evaluator = self._dev_evaluator() if self.dev_set is not None else None
        trainer = self._trainer(model, loss, dataset, evaluator, sampler_factory, trainer_dir, total_steps)
        logger.info(
            "Training %s on %d pairs (%s), %d steps, batch %d, %s.",
            model_name,
            len(pairs),
            info["pair_sources"],
            total_steps,
            self.args.batch_size,
            "HEAL" if self.args.use_hierarchy else "flat",
        )
        train_start = time.perf_counter()
        try:
            output = trainer.train()
        finally:
            if not keep_trainer_dir:
                shutil.rmtree(trainer_dir, ignore_errors=True)
        train_seconds = time.perf_counter() - train_start
        metrics = self._training_metrics(
            trainer, output, train_seconds, hierarchy_seconds, start, pairs, info
        )
        config = self._saved_config(model, model_name, loss, n_active, trainer, sampler_factory, metrics)
        self.hierarchy_ = hierarchy
        self.training_pairs_ = pairs
        self.metrics_ = metrics
        self._model = model
        if trainer.is_world_process_zero():  # under torchrun / accelerate only the main process saves
            self.model_dir_ = save_model_dir(
                model, self.output_dir, hierarchy=hierarchy, config=config, overwrite=self.overwrite
            )
        else:
            self.model_dir_ = self.output_dir

    # -- the steps of finetune() -----------------------------------------------------------------------------
    def _training_dataset(
        self, hierarchy: Hierarchy | None
    ) -> tuple[Any, list[TrainingPair], dict[str, Any], int]:
        """Return the trainer's dataset, the pairs, their info and the width of one text's label row.

        The dataset's columns are anchor, positive, negative (with hard negatives) and label.
        """
        from datasets import Dataset

        pairs, info = self._make_pairs()
        labels = self._label_rows(pairs, hierarchy)
        texts = [embed_text(d) for d in self.documents]  # what each document is trained as, once
        columns: dict[str, list[Any]] = {
            "anchor": [p.query for p in pairs],
            "positive": self._positive_texts(pairs, texts),
        }
        label_width = len(labels[0])
        if self.args.hard_negatives != "none":
            negative_rows, info["hard_negatives"] = self._hard_negative_rows(
                pairs, columns["positive"], texts, hierarchy
            )
            negative_pairs = [
                TrainingPair(query=p.query, doc_id=self._records[row][0], source="negative")
                for p, row in zip(pairs, negative_rows, strict=True)
            ]
            columns["negative"] = [texts[row] for row in negative_rows]
            negative_labels = self._label_rows(negative_pairs, hierarchy)
            labels = [a + b for a, b in zip(labels, negative_labels, strict=True)]
        return Dataset.from_dict({**columns, "label": labels}), pairs, info, label_width

    def _steps_per_epoch(self, sampler_factory: Any, dataset: Any) -> int:
        """Return the sampler's batches per epoch.

        The sampler is built once here so that a batch size too small for it fails now, with its message,
        not after the model has loaded.
        """
        try:
            probe = sampler_factory(
                dataset,
                batch_size=self.args.batch_size,
                drop_last=False,
                valid_label_columns=["label"],
                seed=self.args.seed,
            )
        except ValueError as error:
            raise InvalidValueError(f"The batch sampler refuses this configuration: {error}") from error
        return max(1, len(probe))

    def _model_and_loss(self, model_name: str, hierarchy: Hierarchy | None) -> tuple[Any, Any, int]:
        """Load the base model and build the HEAL loss; return them with the number of active levels."""
        from heal_rag.training.loss import HEALLoss

        model = load_sentence_transformer(model_name, device=self.device, what="base_model")
        model.max_seq_length = self.args.max_seq_length
        loss = HEALLoss(
            model,
            level_weights=self.args.level_weights,
            temperature=self.args.temperature,
            use_hierarchy=self.args.use_hierarchy,
            use_document_level=self.args.use_document_level,
            contrast=self.args.contrast,
        )
        # Fail on a wrong number of level weights now rather than at the first step.
        n_active = (hierarchy.n_levels if hierarchy is not None else 0) + int(self.args.use_document_level)
        loss.resolve_level_weights(n_active)
        return model, loss, n_active

    def _trainer(
        self,
        model: Any,
        loss: Any,
        dataset: Any,
        evaluator: Any,
        sampler_factory: Any,
        trainer_dir: Path,
        total_steps: int,
    ) -> Any:
        """Return sentence-transformers' trainer, its progress and loss lines routed to heal-rag's own."""
        import torch
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        save_strategy = "epoch" if (self.checkpoint_dir or evaluator is not None) else "no"
        trainer_args = SentenceTransformerTrainingArguments(
            output_dir=str(trainer_dir),
            num_train_epochs=self.args.epochs,
            max_steps=self.args.max_steps or -1,
            per_device_train_batch_size=self.args.batch_size,
            learning_rate=self.args.learning_rate,
            warmup_steps=int(math.ceil(self.args.warmup_ratio * total_steps)),
            seed=self.args.seed,
            data_seed=self.args.seed,
            batch_sampler=sampler_factory,
            save_strategy=save_strategy,
            eval_strategy="epoch" if evaluator is not None else "no",
            load_best_model_at_end=evaluator is not None,
            metric_for_best_model=DEV_METRIC if evaluator is not None else None,
            greater_is_better=True,
            save_only_model=evaluator is not None and self.checkpoint_dir is None,
            report_to="none",
            logging_steps=max(1, total_steps // 50),
            disable_tqdm=not self._show_progress(),
            # device=None on a machine without CUDA trains on the CPU: say so, or transformers refuses bf16
            use_cpu=self.device == "cpu" or (self.device is None and not torch.cuda.is_available()),
            fp16=self.args.mixed_precision == "fp16",
            bf16=self.args.mixed_precision == "bf16",
            dataloader_drop_last=False,
            dataloader_pin_memory=torch.cuda.is_available() and self.device != "cpu",
        )
        trainer = SentenceTransformerTrainer(
            model=model, args=trainer_args, train_dataset=dataset, loss=loss, evaluator=evaluator
        )
        # transformers writes every log dict (loss, per-level losses) between progress-bar redraws, or prints
        # it without bars. They go to the log instead (LOSS_LOGGER, shown by `heal-rag -v`) and, through
        # trainer.state.log_history, to heal_config.json.
        trainer.remove_callback(PrinterCallback)
        if not trainer_args.disable_tqdm:
            trainer.remove_callback(ProgressCallback)
            trainer.add_callback(_progress_callback_class()())
        trainer.add_callback(_loss_logging_callback_class()())
        return trainer

    def _training_metrics(
        self,
        trainer: Any,
        output: Any,
        train_seconds: float,
        hierarchy_seconds: float,
        start: float,
        pairs: list[TrainingPair],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """Return the run's metrics: wall times, steps, losses and, with a dev set, the dev curve."""
        history = [
            {k: v for k, v in entry.items() if k not in {"learning_rate", "grad_norm"}}
            for entry in trainer.state.log_history
            if "loss" in entry
        ]
        steps = int(output.global_step)
        dev_history = [
            {"epoch": round(float(e["epoch"]), 3), "step": int(e["step"]), "ndcg@10": float(e[DEV_METRIC])}
            for e in trainer.state.log_history
            if DEV_METRIC in e
        ]
        best: dict[str, Any] = {}
        if dev_history:
            best = max(dev_history, key=lambda e: e["ndcg@10"])
            logger.info(
                "Dev nDCG@10 per epoch: %s; kept epoch %g.",
                ", ".join(f"{e['ndcg@10']:.4f}" for e in dev_history),
                best["epoch"],
            )
        return {
            "training_wall_time_s": round(train_seconds, 3),
            "hierarchy_wall_time_s": round(hierarchy_seconds, 3),
            "total_wall_time_s": round(time.perf_counter() - start, 3),
            "steps": steps,
            "samples_seen": steps * self.args.batch_size,
            "samples_per_second": round(steps * self.args.batch_size / train_seconds, 3)
            if train_seconds
            else None,
            "train_loss": float(output.training_loss),
            "loss_history": history,
            "n_pairs": len(pairs),
            "n_documents": len(self._records),
            **({"dev_history": dev_history, "best_epoch": best["epoch"]} if dev_history else {}),
            **info,
        }

    def _saved_config(
        self,
        model: Any,
        model_name: str,
        loss: Any,
        n_active: int,
        trainer: Any,
        sampler_factory: Any,
        metrics: dict[str, Any],
    ) -> dict[str, Any]:
        """Return what ``heal_config.json`` records: the settings, as resolved, the metrics and versions."""
        import torch

        return {
            "base_model": self.base_model or "sentence-transformers/all-MiniLM-L6-v2 (bundled copy)",
            "base_model_path": model_name,
            "use_hierarchy": self.args.use_hierarchy,
            "training": {
                **self.args.to_dict(),
                "hard_negative_kwargs": _json_scalars(self.args.hard_negative_kwargs),
                "sampler_kwargs": _json_scalars(self.args.sampler_kwargs),
                "dev_set": None if self.dev_set is None else getattr(self.dev_set, "name", "given"),
                "resolved_level_weights": loss.resolve_level_weights(n_active),
                "device": str(model.device),
                "world_size": int(trainer.args.world_size),
                "sampler": {"name": getattr(sampler_factory, "__name__", type(sampler_factory).__name__)}
                | _json_scalars(self.args.sampler_kwargs),
                "hnmfk": None
                if not self.args.use_hierarchy
                or (self.hierarchy is not None and not isinstance(self.hierarchy, Mapping))
                else _json_scalars(self.hierarchy or {}),
            },
            "metrics": metrics,
            "versions": _versions(),
            "torch_cuda": torch.version.cuda,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def get_finetuned_model(self, **kwargs: Any) -> HEALEmbedding:
        """Return the fine-tuned model for LlamaIndex.

        Returns:
            A :class:`heal_rag.integrations.HEALEmbedding` loaded from the saved directory (keyword
            arguments are passed to ``HEALEmbedding.from_pretrained``). The directory itself is
            :attr:`model_dir_`.

        Raises:
            NotFittedError: before :meth:`finetune` has run.

        Deprecated:
            When the LlamaIndex integration cannot be imported this still returns the directory's path as a
            string, with a ``DeprecationWarning``; a future release raises the ImportError instead. Use
            :attr:`model_dir_` (or :func:`heal_rag.load_model_dir`) for the path.

        """
        if self.model_dir_ is None:
            raise NotFittedError(
                "This HEALFinetuneEngine is not fine-tuned yet: call finetune() before get_finetuned_model()."
            )
        try:
            from heal_rag.integrations.embedding import HEALEmbedding
        except ImportError as error:
            warnings.warn(
                f"heal_rag.integrations cannot be imported ({error}), so get_finetuned_model() returns the "
                "model directory's path as a string. This fallback is deprecated: a future release raises "
                "the ImportError. Use engine.model_dir_ for the path.",
                DeprecationWarning,
                stacklevel=2,
            )
            return str(self.model_dir_)  # type: ignore[return-value]
        return HEALEmbedding.from_pretrained(self.model_dir_, **kwargs)


#: Logger of the per-step training losses (INFO; the CLI shows them with ``-v``).
LOSS_LOGGER = f"{__name__}.losses"
#: The dev metric the trainer selects the best epoch by (``InformationRetrievalEvaluator`` named "dev").
DEV_METRIC = "eval_dev_cosine_ndcg@10"


def _copy_with_own_metadata(document: Any) -> Any:
    """Return a shallow copy of a document whose ``metadata`` dict is its own (so writing to it is safe)."""
    metadata = dict(document.metadata)
    if hasattr(document, "model_copy"):  # pydantic: LlamaIndex nodes and documents
        copied = document.model_copy()
        copied.metadata = metadata
        return copied
    if dataclasses.is_dataclass(document) and not isinstance(
        document, type
    ):  # heal_rag.datasets.CorpusDocument
        return dataclasses.replace(document, metadata=metadata)
    copied = copy.copy(document)
    copied.metadata = metadata
    return copied


def _loss_logging_callback_class() -> type:
    """Return a trainer callback class that logs each loss record as one line, not a printed dict."""
    from transformers import TrainerCallback

    losses = logging.getLogger(LOSS_LOGGER)

    class _LossLoggingCallback(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not logs or not state.is_world_process_zero:
                return
            parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()]
            losses.info("step %d/%d: %s", state.global_step, state.max_steps, ", ".join(parts))

    return _LossLoggingCallback


def _progress_callback_class() -> type:
    """Return transformers' training progress bar class, without the log dicts written between redraws."""
    from transformers.trainer_callback import ProgressCallback

    class _QuietProgressCallback(ProgressCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            return None

    return _QuietProgressCallback
