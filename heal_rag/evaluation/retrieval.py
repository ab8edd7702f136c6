"""Exact retrieval evaluation of embedding models (and BM25) on a BEIR folder.

Dense retrieval here is exhaustive: every query is compared with every document by cosine similarity (a
chunked matrix product on unit vectors), so a score difference between two models is a property of the models,
never of an approximate index. BM25 (``bm25s``) is the classical reference.

Encoding a corpus is the expensive part (SciFact's 5,183 abstracts take about 10 minutes on two CPU cores),
so embeddings can be cached on disk: pass ``cache_dir``. A cache entry is keyed by the model's file
fingerprint, the exact texts (ids and content, in order), the role (query or document) and the effective
``max_seq_length``; a model that changes in any way is re-encoded, an unchanged one never is.

Example:
    >>> from heal_rag.evaluation import evaluate_models
    >>> results = evaluate_models("scifact", ["default", "runs/heal"], include_bm25=True)  # doctest: +SKIP
    >>> results["runs/heal"]["ndcg@10"]  # doctest: +SKIP
    0.69

"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from heal_rag._artifacts import HIERARCHY_DIR, MODEL_CONFIG_FILE
from heal_rag._checks import check_positive_int
from heal_rag._io import atomic_write_npz, fingerprint_files, load_npz
from heal_rag._models import resolve_model_name
from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.backends import (
    ONNX_FOLDER,
    TORCH_WEIGHT_SUFFIXES,
    check_backend,
    check_onnx_device,
    onnx_file,
)
from heal_rag.datasets import RetrievalDataset, load_beir
from heal_rag.errors import InputNotFoundError, InvalidValueError
from heal_rag.evaluation.metrics import DEFAULT_METRICS, per_query_metrics

if TYPE_CHECKING:  # pragma: no cover
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

__all__ = [
    "BM25_NAME",
    "RetrievalRun",
    "RetrievalResults",
    "bm25_run",
    "dense_run",
    "evaluate_models",
    "hybrid_name",
    "load_model",
    "model_fingerprint",
]

#: Result key of the BM25 baseline.
BM25_NAME = "bm25"


def hybrid_name(model: str) -> str:
    """Return the result key of a model's run fused with BM25: ``"<model>+bm25"``."""
    return f"{model}+{BM25_NAME}"


# Bump when the layout of cache files changes, so old entries are ignored rather than misread.
_CACHE_FORMAT = 1
# Upper bound on the (queries x documents) score block held in memory at once (float32 entries: 128 MiB).
_MAX_BLOCK_ENTRIES = 1 << 25
# Files of a model folder that do not change its embeddings: heal-rag's own side files, the model card,
# trainer checkpoints and logs. Everything else (weights, configs, tokenizer, prompts) is fingerprinted.
_IGNORED_TOP_LEVEL = {"README.md", MODEL_CONFIG_FILE, HIERARCHY_DIR, "runs", "eval", "logs"}


@dataclass
class RetrievalRun:
    """The ranking one system produced for every query, with how it was obtained.

    Attributes:
        name: The system's name (the model string as given, or ``"bm25"``).
        run: Query id -> {document id: score}, the top ``k`` documents per query (higher = better).
        seconds: Wall time per phase (``"load"``, ``"encode_corpus"``, ``"encode_queries"``, ``"search"``, or
            ``"index"`` / ``"search"`` for BM25).
        cache: Per role (``"corpus"``, ``"queries"``): ``"hit"``, ``"miss"`` (encoded and stored) or
            ``"off"``.
        n_encoded: Number of texts the model actually encoded (0 when everything came from the cache).
        config: What produced the run (model path, fingerprint, max_seq_length, k, BM25 settings, ...).

    """

    name: str
    run: dict[str, dict[str, float]]
    seconds: dict[str, float] = field(default_factory=dict)
    cache: dict[str, str] = field(default_factory=dict)
    n_encoded: int = 0
    config: dict[str, Any] = field(default_factory=dict)


class RetrievalResults(dict):
    """Mean metrics per system (``{name: {metric: value}}``, a plain dict) plus the detail behind them.

    Attributes:
        runs: Name -> :class:`RetrievalRun` (rankings, timings, cache use).
        per_query: Name -> metric -> {query id: score}, for paired significance tests.
        qrels: The relevance judgments the runs were scored against.
        dataset: Name of the evaluated dataset; ``split``: its split (None for an in-memory dataset).

    """

    def __init__(
        self,
        metrics: dict[str, dict[str, float]],
        *,
        runs: dict[str, RetrievalRun],
        per_query: dict[str, dict[str, dict[str, float]]],
        qrels: dict[str, dict[str, int]],
        dataset: str,
        split: str | None,
    ) -> None:
        super().__init__(metrics)
        self.runs = runs
        self.per_query = per_query
        self.qrels = qrels
        self.dataset = dataset
        self.split = split

    def __repr__(self) -> str:
        return f"RetrievalResults(dataset={self.dataset!r}, split={self.split!r}, {dict(self)!r})"


# --------------------------------------------------------------------------------------------------------
# input checks and loading
# ----------------------------------------------------------------------------------------------------------


def _as_dataset(dataset_or_folder: RetrievalDataset | str | os.PathLike[str], split: str) -> RetrievalDataset:
    if isinstance(dataset_or_folder, RetrievalDataset):
        dataset = dataset_or_folder
    elif isinstance(dataset_or_folder, str | os.PathLike):
        dataset = load_beir(dataset_or_folder, split=split)
    else:
        raise InvalidValueError(
            "dataset_or_folder must be a BEIR folder path or a heal_rag.datasets.RetrievalDataset. Got "
            f"{type(dataset_or_folder).__name__} instead."
        )
    if not dataset.qrels:
        raise InvalidValueError(
            f"Dataset {dataset.name!r} has no relevance judgments (qrels) to evaluate against; load it "
            "with a split that has qrels, e.g. split='test'."
        )
    if not dataset.queries:
        raise InvalidValueError(f"Dataset {dataset.name!r} has no queries to evaluate.")
    return dataset


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith((".", "/", "~")) or (os.sep in name and not _is_hub_id(name)) or Path(name).exists()
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _is_hub_id(name: str) -> bool:
    # "org/model" with exactly one slash and no leading dot/slash: a Hugging Face hub id.
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def load_model(
    model: str | os.PathLike[str],
    *,
    max_seq_length: int | None = None,
    device: str | None = None,
    backend: str = "torch",
) -> SentenceTransformer:
    """Load a sentence-transformers model from a name, a local folder or a saved HEAL model directory.

    Args:
        model: ``"default"`` (the bundled all-MiniLM-L6-v2), a local folder that holds a
            sentence-transformers model (a HEAL model directory is one), or a Hugging Face hub id available
            offline in the local cache.
        max_seq_length: Truncate inputs to this many tokens (default: the model's own setting).
        device: Torch device (default: CUDA when available, else CPU).
        backend: ``"torch"``, or ``"onnx"`` for the folder's ONNX export (``heal-rag export``; the int8
            file when present), run by ONNX Runtime on the CPU.

    Raises:
        FileNotFoundError: when ``model`` is a path that does not exist.
        ValueError: when the folder is not a sentence-transformers model, or the name cannot be loaded.

    """
    from heal_rag._models import load_sentence_transformer

    backend = check_backend(backend)
    name = resolve_model_name(str(model))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidValueError(
                f"Model path {path} is a file; give the folder of a sentence-transformers model."
            )
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise InvalidValueError(
                f"{path} is not a sentence-transformers model folder (no modules.json or config.json). "
                "Give a folder written by SentenceTransformer.save() or heal-rag finetune --out."
            )
        name = str(path)
    elif _looks_like_path(name):
        raise InputNotFoundError(
            f"Model path {name} does not exist. Give an existing model folder or a model name."
        )
    if backend == "onnx":
        from heal_rag.backends import load_onnx_sentence_transformer

        check_onnx_device(device)
        loaded = load_onnx_sentence_transformer(name)
        if max_seq_length is not None:
            loaded.max_seq_length = check_positive_int(max_seq_length, "max_seq_length")
        return loaded
    try:
        loaded = load_sentence_transformer(name, device=device, what="model")
    except (OSError, ValueError) as error:
        raise InvalidValueError(
            f"Cannot load the embedding model {str(model)!r}: it is neither a local sentence-transformers "
            "folder nor a model available offline in the Hugging Face cache "
            f"({type(error).__name__}: {error})."
        ) from None
    if max_seq_length is not None:
        loaded.max_seq_length = check_positive_int(max_seq_length, "max_seq_length")
    return loaded


def _model_folder(name: str) -> Path | None:
    """Find the local folder of a model's files (hub ids: in the offline cache); None if there is none."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # any failure just means "no folder to fingerprint": caching is then switched off
        return None


def model_fingerprint(model: str | os.PathLike[str], backend: str = "torch") -> str | None:
    """SHA-256 over the files of a model folder that determine its embeddings, or None if not found locally.

    heal-rag's side files (``heal_config.json``, ``heal_hierarchy/``), the model card, hidden files and
    trainer checkpoints are left out, so re-saving metadata does not invalidate cached embeddings. The torch
    fingerprint leaves out the ONNX export (``onnx/``) and the ONNX one the torch weights, so exporting a
    model keeps its cached torch embeddings, and ONNX (int8) embeddings are cached apart from them.
    """
    backend = check_backend(backend)
    folder = _model_folder(resolve_model_name(str(model)))
    if folder is None:
        return None
    onnx = onnx_file(folder) if backend == "onnx" else None
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        top = relative.parts[0]
        if top in _IGNORED_TOP_LEVEL or top.startswith((".", "checkpoint-")) or not path.is_file():
            continue
        if top == ONNX_FOLDER and path != onnx:
            continue
        if onnx is not None and path.suffix in TORCH_WEIGHT_SUFFIXES:
            continue
        files.append(path)
    if not files:
        return None
    # fingerprint_files hashes names, not relative paths; hash the relative paths too so moving a file counts.
    digest = hashlib.sha256(fingerprint_files(files).encode())
    for relative in sorted(str(p.relative_to(folder)) for p in files):
        digest.update(relative.encode("utf-8"))
    return digest.hexdigest()


def _texts_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for item_id, text in zip(ids, texts, strict=True):
        # length-prefixed, so no two different lists can produce the same byte stream
        for part in (item_id, text):
            encoded = part.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------------
# dense retrieval
# ----------------------------------------------------------------------------------------------------------


def _encode(
    model: SentenceTransformer, texts: list[str], *, role: str, batch_size: int, show_progress: bool | None
) -> np.ndarray:
    # encode_query / encode_document apply the model's own query/document prompts when it defines them.
    encode = model.encode_query if role == "queries" else model.encode_document
    embeddings = encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=resolve_show_progress(show_progress),
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _cached_encode(
    model: SentenceTransformer,
    ids: list[str],
    texts: list[str],
    *,
    role: str,
    fingerprint: str | None,
    cache_dir: Path | None,
    batch_size: int,
    show_progress: bool | None,
) -> tuple[np.ndarray, str]:
    """Embeddings of ``texts`` (rows in order) and the cache status ``"hit"``, ``"miss"`` or ``"off"``."""
    if cache_dir is None or fingerprint is None:
        return _encode(model, texts, role=role, batch_size=batch_size, show_progress=show_progress), "off"
    key_fields = {
        "format": _CACHE_FORMAT,
        "model": fingerprint,
        "role": role,
        "texts": _texts_hash(ids, texts),
        "max_seq_length": model.max_seq_length,
    }
    key = hashlib.sha256(json.dumps(key_fields, sort_keys=True).encode()).hexdigest()[:40]
    path = cache_dir / "embeddings" / f"{role}-{key}.npz"
    if path.is_file():
        try:
            stored = load_npz(path)
            embeddings = stored["embeddings"]
            if embeddings.shape[0] == len(texts) and stored["ids"].tolist() == ids:
                logger.info("Loaded %d %s embeddings from the cache %s", len(texts), role, path)
                return embeddings.astype(np.float32, copy=False), "hit"
            logger.warning("Cache entry %s does not match the texts; re-encoding.", path)
        except (OSError, KeyError, ValueError) as error:
            logger.warning("Unreadable cache entry %s (%s); re-encoding.", path, error)
    embeddings = _encode(model, texts, role=role, batch_size=batch_size, show_progress=show_progress)
    # ids as a fixed-width unicode array: numeric dtype for numpy, so it saves and loads without pickle
    atomic_write_npz(path, embeddings=embeddings, ids=np.asarray(ids, dtype=str))
    return embeddings, "miss"


def _top_k(query_embeddings: np.ndarray, doc_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine neighbours of unit-norm rows: (indices, scores) of shape (n_queries, k)."""
    import torch

    n_docs = doc_embeddings.shape[0]
    k = min(k, n_docs)
    docs = torch.from_numpy(doc_embeddings)
    block = max(1, _MAX_BLOCK_ENTRIES // max(1, n_docs))
    all_indices, all_scores = [], []
    with torch.inference_mode():
        for start in range(0, query_embeddings.shape[0], block):
            queries = torch.from_numpy(query_embeddings[start : start + block])
            scores = queries @ docs.T
            top = torch.topk(scores, k=k, dim=1, largest=True, sorted=True)
            all_indices.append(top.indices.numpy())
            all_scores.append(top.values.numpy())
    if not all_indices:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
    return np.concatenate(all_indices), np.concatenate(all_scores)


def dense_run(
    model: str | os.PathLike[str] | SentenceTransformer,
    dataset: RetrievalDataset,
    *,
    k: int = 100,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
    device: str | None = None,
    name: str | None = None,
    backend: str = "torch",
) -> RetrievalRun:
    """Rank the whole corpus for every query of ``dataset`` by exact cosine similarity.

    Documents are embedded as ``title + " " + text`` (:attr:`CorpusDocument.full_text`), queries as their
    text, with the model's document/query prompts if it defines any, and L2-normalised.

    Args:
        model: Model name, local folder, saved HEAL model directory, or a loaded ``SentenceTransformer``
            (an in-memory model is never cached: it has no files to fingerprint).
        dataset: The corpus and queries to rank.
        k: Number of documents kept per query (at least the largest metric cut-off, e.g. 100 for recall@100).
        batch_size: Encoding batch size.
        max_seq_length: Truncate inputs to this many tokens (default: the model's own setting).
        cache_dir: Folder for the embedding cache (created if needed); None disables caching.
        show_progress: Show encoding progress bars; ``None`` follows the ``heal_rag`` logger (bars at INFO);
            off when ``TQDM_DISABLE=1``.
        device: Torch device for encoding (default: CUDA when available, else CPU).
        name: Name recorded in the result (default: the model string).
        backend: ``"torch"`` or ``"onnx"`` (the folder's ONNX export; see :func:`load_model`).

    Returns:
        A :class:`RetrievalRun` with the top-``k`` documents and scores of every query.

    """
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    if max_seq_length is not None:
        check_positive_int(max_seq_length, "max_seq_length")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if isinstance(model, str | os.PathLike):
        model_name = str(model)
        loaded = load_model(model_name, max_seq_length=max_seq_length, device=device, backend=backend)
        fingerprint = model_fingerprint(model_name, backend) if cache_dir is not None else None
        if cache_dir is not None and fingerprint is None:
            logger.info(
                "No local files to fingerprint for model %r: its embeddings are not cached.", model_name
            )
    else:
        model_name = name or type(model).__name__
        loaded = model
        if max_seq_length is not None:
            loaded.max_seq_length = max_seq_length
        fingerprint = None
    seconds["load"] = time.perf_counter() - start
    cache_path = Path(cache_dir) if cache_dir is not None else None

    empty = set(dataset.empty_doc_ids)  # never retrieved: an empty text is not embedded (judged = a miss)
    doc_ids = [d for d in dataset.doc_ids if d not in empty]
    doc_texts = [dataset.corpus[d].full_text for d in doc_ids]
    query_ids = list(dataset.queries)
    query_texts = [dataset.queries[qid] for qid in query_ids]
    common = {"fingerprint": fingerprint, "cache_dir": cache_path, "batch_size": batch_size}

    start = time.perf_counter()
    doc_embeddings, corpus_cache = _cached_encode(
        loaded, doc_ids, doc_texts, role="corpus", show_progress=show_progress, **common
    )
    seconds["encode_corpus"] = time.perf_counter() - start
    start = time.perf_counter()
    query_embeddings, query_cache = _cached_encode(
        loaded, query_ids, query_texts, role="queries", show_progress=False, **common
    )
    seconds["encode_queries"] = time.perf_counter() - start

    start = time.perf_counter()
    indices, scores = _top_k(query_embeddings, doc_embeddings, k)
    run = {
        qid: {doc_ids[j]: float(s) for j, s in zip(row_idx.tolist(), row_scores.tolist(), strict=True)}
        for qid, row_idx, row_scores in zip(query_ids, indices, scores, strict=True)
    }
    seconds["search"] = time.perf_counter() - start

    n_encoded = (len(doc_ids) if corpus_cache != "hit" else 0) + (
        len(query_ids) if query_cache != "hit" else 0
    )
    return RetrievalRun(
        name=name or model_name,
        run=run,
        seconds=seconds,
        cache={"corpus": corpus_cache, "queries": query_cache},
        n_encoded=n_encoded,
        config={
            "model": model_name,
            "fingerprint": fingerprint,
            "backend": backend,
            "max_seq_length": loaded.max_seq_length,
            "k": k,
            "batch_size": batch_size,
            "similarity": "cosine (exact)",
        },
    )


# --------------------------------------------------------------------------------------------------------
# BM25
# ----------------------------------------------------------------------------------------------------------


def _stemmer() -> Any:
    """PyStemmer's English Snowball stemmer if installed, else None (BM25 then matches unstemmed words)."""
    try:
        import Stemmer
    except ImportError:
        logger.info("PyStemmer is not installed: BM25 runs without stemming (pip install PyStemmer).")
        return None
    return Stemmer.Stemmer("english")


def bm25_run(
    dataset: RetrievalDataset,
    *,
    k: int = 100,
    k1: float = 1.5,
    b: float = 0.75,
    method: str = "lucene",
    stem: bool = True,
    show_progress: bool | None = None,
) -> RetrievalRun:
    """Rank the corpus for every query of ``dataset`` with BM25 (bm25s).

    Texts are lower-cased, split into words, English stop words removed and, when ``stem`` and PyStemmer is
    installed, stemmed with the Snowball English stemmer (bm25s's published SciFact setting). Documents whose
    score is 0 (no query word in common) are not returned.

    Args:
        dataset: The corpus and queries.
        k: Number of documents kept per query.
        k1: BM25 term-frequency saturation (bm25s default 1.5).
        b: BM25 length normalisation (default 0.75).
        method: BM25 variant of bm25s (default ``"lucene"``).
        stem: Stem words if PyStemmer is installed (recorded in the run's ``config``).
        show_progress: Show bm25s's progress bars.

    """
    import bm25s

    k = check_positive_int(k, "k")
    show_progress = resolve_show_progress(show_progress)
    stemmer = _stemmer() if stem else None
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    tokenizer = bm25s.tokenization.Tokenizer(stopwords="en", stemmer=stemmer)
    corpus_tokens = tokenizer.tokenize(dataset.texts, return_as="ids", show_progress=show_progress)
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(corpus_tokens, show_progress=show_progress)
    seconds["index"] = time.perf_counter() - start

    start = time.perf_counter()
    query_ids = list(dataset.queries)
    query_tokens = tokenizer.tokenize(
        [dataset.queries[qid] for qid in query_ids], update_vocab=False, return_as="ids", show_progress=False
    )
    doc_ids = dataset.doc_ids
    run: dict[str, dict[str, float]] = {qid: {} for qid in query_ids}
    # bm25s fails on a query with no known word; rank only the others (the rest keep an empty ranking -> 0).
    answerable = [i for i, tokens in enumerate(query_tokens) if len(tokens) > 0]
    if answerable:
        indices, scores = retriever.retrieve(
            [query_tokens[i] for i in answerable],
            k=min(k, len(doc_ids)),
            show_progress=show_progress,
            n_threads=1,
        )
        for row, i in enumerate(answerable):
            run[query_ids[i]] = {
                doc_ids[int(j)]: float(s) for j, s in zip(indices[row], scores[row], strict=True) if s > 0
            }
    seconds["search"] = time.perf_counter() - start
    return RetrievalRun(
        name=BM25_NAME,
        run=run,
        seconds=seconds,
        cache={"corpus": "off", "queries": "off"},
        config={
            "k": k,
            "k1": k1,
            "b": b,
            "method": method,
            "stopwords": "en",
            "stemmer": "snowball-english (PyStemmer)" if stemmer is not None else None,
            "bm25s": getattr(bm25s, "__version__", "unknown"),
        },
    )


# --------------------------------------------------------------------------------------------------------
# side-by-side evaluation
# ----------------------------------------------------------------------------------------------------------


def evaluate_models(
    dataset_or_folder: RetrievalDataset | str | os.PathLike[str],
    models: Sequence[str],
    split: str = "test",
    k: int = 100,
    batch_size: int = 32,
    max_seq_length: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    include_bm25: bool = False,
    show_progress: bool | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    device: str | None = None,
    include_hybrid: bool = False,
    fusion: str | None = None,
    dense_weight: float | None = None,
    backend: str = "torch",
) -> RetrievalResults:
    """Evaluate embedding models (and optionally BM25) side by side on the same queries and corpus.

    Args:
        dataset_or_folder: A BEIR folder (read by :func:`heal_rag.datasets.load_beir`) or a loaded dataset.
        models: Model names or folders (``"default"`` is the bundled all-MiniLM-L6-v2); result keys are these
            strings exactly as given.
        split: Which qrels of a BEIR folder to evaluate on (ignored for a loaded dataset).
        k: Documents retrieved per query (at least the largest metric cut-off).
        batch_size: Encoding batch size.
        max_seq_length: Truncate inputs to this many tokens (default: each model's own setting).
        cache_dir: Embedding cache folder (None: no cache).
        include_bm25: Add the BM25 baseline under the key ``"bm25"``.
        show_progress: Show progress bars.
        metrics: ranx metric names (default nDCG@10, Recall@100, MRR@10).
        device: Torch device for encoding.
        include_hybrid: Also fuse every model's run with BM25's, under the key ``"<model>+bm25"``
            (:func:`heal_rag.integrations.hybrid.fuse_runs`, the fusion of ``hybrid_retriever``). BM25 runs
            for it even when ``include_bm25`` is False (its own row is then left out).
        fusion: Fusion method of the hybrid runs (default ``DEFAULT_FUSION``, ``"dist_based_score"``).
        dense_weight: Dense weight of a weighted fusion (see ``hybrid_retriever``).
        backend: Encoder of every model: ``"torch"``, or ``"onnx"`` for each folder's ONNX export
            (``heal-rag export``), run by ONNX Runtime on the CPU.

    Returns:
        :class:`RetrievalResults`: ``{name: {metric: value}}`` with the runs and per-query scores attached.

    Raises:
        FileNotFoundError: a missing folder, split or model path.
        ValueError: no models, duplicate names, bad parameters, or a corpus/qrels mismatch.

    """
    if isinstance(models, str):
        models = [models]
    models = [str(m) for m in models]
    if not models and not include_bm25:
        raise InvalidValueError("Nothing to evaluate: give at least one model, or include_bm25=True.")
    duplicates = sorted({m for m in models if models.count(m) > 1})
    if duplicates:
        raise InvalidValueError(f"Model(s) listed more than once: {', '.join(duplicates)}.")
    if (include_bm25 or include_hybrid) and BM25_NAME in models:
        raise InvalidValueError(
            f"A model is called {BM25_NAME!r}, the name of the BM25 baseline; rename its folder."
        )
    if include_hybrid and not models:
        raise InvalidValueError("include_hybrid=True fuses each model with BM25: give at least one model.")
    from heal_rag._fusion_options import DEFAULT_FUSION, check_fusion

    fusion = DEFAULT_FUSION if fusion is None else fusion
    if include_hybrid:
        check_fusion(fusion, dense_weight)  # fail before minutes of encoding
    k = check_positive_int(k, "k")
    check_positive_int(batch_size, "batch_size")
    if max_seq_length is not None:
        check_positive_int(max_seq_length, "max_seq_length")
    backend = check_backend(backend)
    if backend == "onnx":
        check_onnx_device(device)
    cutoffs = [int(m.split("@")[1]) for m in metrics if "@" in m]
    if cutoffs and k < max(cutoffs):
        logger.warning(
            "k=%d is below the largest metric cut-off (%d): those metrics see only %d results.",
            k,
            max(cutoffs),
            k,
        )
    dataset = _as_dataset(dataset_or_folder, split)
    for model in models:  # fail on a bad model before spending minutes on the others
        resolved = resolve_model_name(model)
        if Path(resolved).expanduser().exists():
            continue
        if _looks_like_path(resolved):
            raise InputNotFoundError(
                f"Model path {model} does not exist. Give an existing model folder or a name."
            )
        if _offline() and _model_folder(resolved) is None:
            raise InvalidValueError(
                f"Model {model!r} is neither a local folder nor in the offline Hugging Face cache "
                "(HF_HUB_OFFLINE is set). Give the path of a model folder."
            )

    runs: dict[str, RetrievalRun] = {}
    if include_bm25 or include_hybrid:
        logger.info(
            "BM25 on %s (%d documents, %d queries)", dataset.name, len(dataset.corpus), len(dataset.queries)
        )
        runs[BM25_NAME] = bm25_run(dataset, k=k, show_progress=show_progress)
    for model in models:
        logger.info("Dense retrieval with %s on %s", model, dataset.name)
        runs[model] = dense_run(
            model,
            dataset,
            k=k,
            batch_size=batch_size,
            max_seq_length=max_seq_length,
            cache_dir=cache_dir,
            show_progress=show_progress,
            device=device,
            name=model,
            backend=backend,
        )
    hybrid_names = []
    if include_hybrid:
        from heal_rag.integrations.hybrid import fuse_runs

        for model in models:
            start = time.perf_counter()
            fused = fuse_runs(
                runs[model].run, runs[BM25_NAME].run, k=k, fusion=fusion, dense_weight=dense_weight
            )
            name = hybrid_name(model)
            runs[name] = RetrievalRun(
                name=name,
                run=fused,
                seconds={"fuse": time.perf_counter() - start},
                cache={"corpus": "off", "queries": "off"},
                config={
                    "dense": runs[model].config,
                    "bm25": runs[BM25_NAME].config,
                    "fusion": fusion,
                    "dense_weight": dense_weight,
                    "candidates": k,
                    "k": k,
                },
            )
            hybrid_names.append(name)
    ordered = [*models, *([BM25_NAME] if include_bm25 else []), *hybrid_names]
    per_query = {name: per_query_metrics(dataset.qrels, runs[name].run, metrics) for name in ordered}
    means = {
        name: {metric: float(np.mean(list(scores.values()))) for metric, scores in per_query[name].items()}
        for name in ordered
    }
    return RetrievalResults(
        means,
        runs={name: runs[name] for name in ordered},
        per_query=per_query,
        qrels=dataset.qrels,
        dataset=dataset.name,
        split=None if isinstance(dataset_or_folder, RetrievalDataset) else split,
    )
