"""The topic tree: :class:`Topic` and :class:`Hierarchy` (paths, memberships, prediction, save/load, print).

A :class:`Hierarchy` is self-contained: it stores the vocabulary, the idf weights and every topic vector, so a
loaded hierarchy places new texts (queries, new documents) without the estimator that built it.

Placing a document: at every split, the document's TF-IDF row is projected onto the children's topic vectors
with the divergence the topics were fitted with (:attr:`Hierarchy.beta_loss`): KL over L1-normalised topics
(:func:`heal_rag.hierarchy._nmf.project_kl`, the default) or non-negative least squares
(:func:`heal_rag.hierarchy._nmf.project`); the normalised weights are its
conditional memberships and the largest one picks the child. Soft memberships at a level are the products of
the conditional memberships along each root-to-topic branch, so each row sums to 1. A document without
any vocabulary term (an all-zero row) cannot be placed by content: it follows the most populous child at every
split and its conditional memberships are the children's size proportions (the prior). It is never dropped
(only texts with no text at all are left out when :class:`HNMFk` fits, with a warning naming them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from heal_rag._io import atomic_write_json, atomic_write_npz, load_npz, loads_json
from heal_rag.errors import InputNotFoundError, InvalidTypeError, InvalidValueError
from heal_rag.hierarchy import _nmf
from heal_rag.hierarchy._validation import check_matrix

logger = logging.getLogger(__name__)

FORMAT_NAME = "heal-rag-hierarchy"
FORMAT_VERSION = 1
_JSON_FILE = "hierarchy.json"
_NPZ_FILE = "hierarchy_arrays.npz"


@dataclass(frozen=True, eq=False)
class Topic:
    """One topic of the tree ("topic", since in LlamaIndex "node" means a text node).

    Attributes:
        id: topic id, unique across the whole tree.
        parent: id of the parent topic, ``None`` at level 0.
        depth: level of the topic (0 = coarsest).
        size: number of training documents whose path goes through this topic.
        top_terms: highest-weighted terms of the topic vector.
        vector: float array of shape (n_features,), the unit-norm topic over the vocabulary.
        children: ids of the child topics (empty for a leaf).

    """

    id: int
    parent: int | None
    depth: int
    size: int
    top_terms: list[str]
    vector: np.ndarray = field(repr=False)
    children: tuple[int, ...] = ()

    @property
    def is_leaf(self) -> bool:
        """Whether the topic has no children."""
        return not self.children

    def to_dict(self, *, with_vector: bool = False) -> dict[str, Any]:
        """JSON-ready dict (the vector only when asked)."""
        out: dict[str, Any] = {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "size": self.size,
            "top_terms": list(self.top_terms),
            "children": list(self.children),
        }
        if with_vector:
            out["vector"] = self.vector.tolist()
        return out


# ----------------------------------------------------------------------------------------------- tf-idf
DEFAULT_TOKEN_PATTERN = r"(?u)\b(?=\w*[^\W\d_])\w\w+\b"  # tokens of 2+ characters with at least one letter


def count_vectorizer(tfidf: dict[str, Any], vocabulary: Sequence[str] | None = None, **fit_args: Any) -> Any:
    """Build the CountVectorizer that tokenises texts (fit arguments only when learning a vocabulary)."""
    return CountVectorizer(
        lowercase=tfidf["lowercase"],
        strip_accents=tfidf["strip_accents"],
        stop_words=tfidf["stop_words"],
        token_pattern=tfidf["token_pattern"],
        ngram_range=tuple(tfidf["ngram_range"]),
        vocabulary=None if vocabulary is None else {term: i for i, term in enumerate(vocabulary)},
        dtype=np.float32,
        **fit_args,
    )


def counts_to_tfidf(counts: sp.spmatrix, idf: np.ndarray, sublinear_tf: bool) -> sp.csr_matrix:
    """TF-IDF with L2-normalised rows from a count matrix (the same arithmetic for fitting and predicting)."""
    if counts.shape[0] <= _FAST_TFIDF_MAX_ROWS:
        return _counts_to_tfidf_few_rows(counts, idf, sublinear_tf)
    X = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    if sublinear_tf:
        np.log(X.data, out=X.data)
        X.data += 1.0
    X = X.multiply(idf.astype(np.float32)[None, :]).tocsr()
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    X = sp.csr_matrix(sp.diags(1.0 / norms).astype(np.float32) @ X, dtype=np.float32)
    X.sort_indices()
    return X


#: Up to this many rows (a query, a few queries), :func:`counts_to_tfidf` works on the CSR arrays directly:
#: the same float32 operations in the same order as the scipy expressions, without their per-call overhead.
_FAST_TFIDF_MAX_ROWS = 32


def _counts_to_tfidf_few_rows(counts: sp.spmatrix, idf: np.ndarray, sublinear_tf: bool) -> sp.csr_matrix:
    X = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    X.sum_duplicates()  # canonical: sorted indices, as the scipy expressions leave them
    data = X.data
    if sublinear_tf:
        np.log(data, out=data)
        data += 1.0
    data = data * idf.astype(np.float32)[X.indices]
    squares = data * data
    # each row's sum of squares, reduced as scipy's CSR row sum reduces it (np.add.reduceat), in float32
    sums = np.zeros(X.shape[0], dtype=np.float32)
    filled = np.flatnonzero(np.diff(X.indptr))
    if filled.size:
        sums[filled] = np.add.reduceat(squares, X.indptr[filled])
    norms = np.sqrt(sums)
    norms[norms == 0] = 1.0
    scale = (1.0 / norms).astype(np.float32)
    data = scale[np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))] * data
    out = sp.csr_matrix((data, X.indices.copy(), X.indptr.copy()), shape=X.shape, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def check_texts(texts: Any, owner: str) -> list[str]:
    """Validate a list of strings (a single string is refused: it is almost always a mistake)."""
    if isinstance(texts, str):
        raise InvalidValueError(f"{owner} expected a list of texts; got a single string. Wrap it in a list.")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise InvalidValueError(
            f"{owner} expected texts (str); item {bad[0]} is {type(texts[bad[0]]).__name__}. "
            "Replace missing texts with '' (they get an all-zero row and a documented fallback placement)."
        )
    return texts


def is_text_input(data: Any) -> bool:
    """Whether ``data`` looks like texts rather than a numeric matrix."""
    if isinstance(data, str):
        return True
    if sp.issparse(data) or isinstance(data, np.ndarray):
        return False
    if isinstance(data, (list, tuple)):
        return len(data) > 0 and isinstance(data[0], str) or len(data) == 0
    return False


# ----------------------------------------------------------------------------------------------- placement
def conditional_memberships(
    X: sp.csr_matrix,
    vectors: np.ndarray,
    prior: np.ndarray,
    n_iter: int | None = None,
    beta_loss: str = "frobenius",
) -> np.ndarray:
    """Conditional memberships of the rows of ``X`` over sibling topics (rows sum to 1).

    Args:
        X: matrix of shape (n_documents, n_features).
        vectors: sibling topic vectors, shape (k, n_features).
        prior: sibling sizes, shape (k,); all-zero rows get ``prior / prior.sum()``.
        n_iter: sweeps (HALS) or multiplicative updates (KL) of the projection; None for the defaults of
            :func:`heal_rag.hierarchy._nmf.project` / :func:`heal_rag.hierarchy._nmf.project_kl`.
        beta_loss: the divergence the topics were fitted with (``"frobenius"`` or ``"kullback-leibler"``).

    Returns:
        Array of shape (n_documents, k).

    """
    weights = _nmf.project_weights(X, vectors, beta_loss, n_iter=n_iter)
    return _normalise_weights(weights, prior)


def _normalise_weights(weights: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Rows of projection weights scaled to sum to 1; all-zero rows get the normalised prior."""
    weights = weights.astype(np.float64)
    total = weights.sum(axis=1, keepdims=True)
    prior = np.asarray(prior, dtype=np.float64)
    prior = prior / prior.sum() if prior.sum() > 0 else np.full(len(prior), 1.0 / len(prior))
    empty = total[:, 0] <= 0
    out = np.where(total > 0, weights / np.where(total > 0, total, 1.0), 0.0)
    if empty.any():
        # argmax of the prior is the most populous child, the fallback branch of an all-zero row
        out[empty] = prior
    return out


#: Up to this many rows, :meth:`Hierarchy.route` projects on every split in one grouped KL pass
#: (:func:`heal_rag.hierarchy._nmf.project_kl_groups`, bit-identical); larger batches amortise the per-call
#: overhead anyway and go split by split, which is faster for them.
_GROUPED_MAX_ROWS = 32


@dataclass(frozen=True)
class _PlacementPlan:
    """What :meth:`Hierarchy.route` needs on every call, computed once (a hierarchy never changes)."""

    columns: list[dict[int, int]]  # per level: topic id -> column of memberships(level)
    parents: list[int | None]  # one per split: the parent topic (None = the root)
    vectors: list[np.ndarray]  # per split: the stacked sibling topic vectors
    priors: list[np.ndarray]  # per split: the siblings' sizes
    kl_topics: np.ndarray  # every split's L1-normalised topics, stacked (KL placement)
    sizes: list[int]  # siblings per split
    root_ids: np.ndarray
    children_ids: dict[int, np.ndarray]


def top_terms(vector: np.ndarray, vocabulary: Sequence[str] | None, n: int) -> list[str]:
    """Return the ``n`` highest-weighted terms of a topic vector (``feature_<j>`` without vocabulary)."""
    order = np.argsort(-vector, kind="stable")[:n]
    order = [j for j in order if vector[j] > 0]
    return [vocabulary[j] if vocabulary is not None else f"feature_{j}" for j in order]


class Hierarchy:
    """A topic tree over a corpus: topics, one path per document, soft memberships, placement of new texts.

    Built by :class:`heal_rag.hierarchy.HNMFk`; loaded with :meth:`Hierarchy.load`. Level 0 is the coarsest.
    Ragged trees: where a branch stops early, deeper levels repeat the deepest topic id reached (a leaf acts
    as its own only child), so :meth:`labels` is defined for every document at every level.

    Attributes:
        topics: dict topic id -> :class:`Topic`, in id order (ids are assigned breadth-first).
        doc_ids: list of document ids (str), one per training document.
        paths: int64 array of shape (n_documents, n_levels), topic id per level.
        vocabulary: list of terms (the columns of the topic vectors), or None for a matrix without names.
        split_info: dict parent topic id (-1 = the root) -> NMFk diagnostics of that split (chosen k, reason,
            per-k silhouettes and errors).
        params: the settings the hierarchy was built with.

    Example:
        >>> from heal_rag.hierarchy import HNMFk, Hierarchy
        >>> h = HNMFk(depth=2, random_state=0).fit(texts).hierarchy_  # doctest: +SKIP
        >>> print(h)  # doctest: +SKIP
        >>> h.save("topics/"); Hierarchy.load("topics/").predict(["a new query"])  # doctest: +SKIP

    """

    def __init__(
        self,
        topics: dict[int, Topic],
        doc_ids: list[str],
        paths: np.ndarray,
        memberships: list[np.ndarray],
        *,
        n_features: int,
        vocabulary: list[str] | None = None,
        idf: np.ndarray | None = None,
        tfidf: dict[str, Any] | None = None,
        split_info: dict[int, dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.topics = dict(sorted(topics.items()))
        self.doc_ids = list(doc_ids)
        self.paths = np.asarray(paths, dtype=np.int64)
        self._memberships = [np.asarray(m, dtype=np.float64) for m in memberships]
        self.n_features = int(n_features)
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float32)
        self.tfidf = tfidf
        self.split_info = dict(split_info or {})
        self.params = dict(params or {})
        if self.params.get("beta_loss", "frobenius") not in _nmf.BETA_LOSSES:
            raise InvalidValueError(
                f"Hierarchy params give beta_loss={self.params['beta_loss']!r}; expected one of "
                f"{_nmf.BETA_LOSSES}."
            )
        self._fingerprint: str | None = None
        self._vectorizer: Any = None
        self._plan: _PlacementPlan | None = None  # route()'s constants, built on first use

    # ------------------------------------------------------------------------------------------- structure
    @property
    def n_levels(self) -> int:
        """Number of levels (columns of :attr:`paths`)."""
        return int(self.paths.shape[1])

    @property
    def n_documents(self) -> int:
        """Number of training documents."""
        return int(self.paths.shape[0])

    @property
    def root_topics(self) -> tuple[int, ...]:
        """Ids of the level-0 topics."""
        return tuple(t.id for t in self.topics.values() if t.parent is None)

    def _check_level(self, level: int) -> int:
        if not isinstance(level, (int, np.integer)) or isinstance(level, bool):
            raise InvalidTypeError(f"level must be an int; got {type(level).__name__}.")
        if not -self.n_levels <= level < self.n_levels:
            raise InvalidValueError(
                f"level must be in [0, {self.n_levels - 1}] for this hierarchy; got {level}."
            )
        return int(level) % self.n_levels

    def topics_at(self, level: int) -> list[Topic]:
        """Topics labelling documents at ``level``: that depth's topics plus shallower leaves (ragged)."""
        level = self._check_level(level)
        return [t for t in self.topics.values() if t.depth == level or (t.depth < level and t.is_leaf)]

    def labels(self, level: int) -> np.ndarray:
        """Topic id of every training document at ``level``, int64 array of shape (n_documents,)."""
        return self.paths[:, self._check_level(level)].copy()

    def memberships(self, level: int) -> np.ndarray:
        """Soft memberships at ``level``: float array (n_documents, len(topics_at(level))), rows sum to 1."""
        return self._memberships[self._check_level(level)].copy()

    def leaves(self) -> list[Topic]:
        """Topics without children."""
        return [t for t in self.topics.values() if t.is_leaf]

    # ------------------------------------------------------------------------------------------- placement
    @property
    def beta_loss(self) -> str:
        """Divergence used to place documents: the one the topics were fitted with.

        ``params["beta_loss"]``; ``"frobenius"`` for hierarchies saved before the option existed.
        """
        return str(self.params.get("beta_loss", "frobenius"))

    def vectorize(self, texts: Sequence[str]) -> sp.csr_matrix:
        """TF-IDF rows of ``texts`` in this hierarchy's vocabulary, shape (n_texts, n_features)."""
        if self.vocabulary is None or self.idf is None or self.tfidf is None:
            raise InvalidValueError(
                "This hierarchy was built from a matrix, not from texts, so it has no vocabulary to turn "
                "texts into features. Pass a non-negative matrix with the same features instead."
            )
        texts = check_texts(texts, "Hierarchy")
        if self._vectorizer is None:
            self._vectorizer = count_vectorizer(self.tfidf, self.vocabulary)
        counts = self._vectorizer.transform(texts)
        return counts_to_tfidf(counts, self.idf, bool(self.tfidf["sublinear_tf"]))

    def _as_matrix(self, data: Any) -> sp.csr_matrix:
        if is_text_input(data):
            return self.vectorize(data)
        X = check_matrix(data, "Hierarchy", allow_empty=True)
        if X.shape[1] != self.n_features:
            raise InvalidValueError(f"X has {X.shape[1]} features, but this hierarchy has {self.n_features}.")
        return X

    def _placement_plan(self) -> _PlacementPlan:
        """Return the per-hierarchy constants of :meth:`route`, built on first use and kept (not saved)."""
        plan = getattr(self, "_plan", None)  # getattr: a Hierarchy unpickled from before the cache existed
        if plan is None:
            levels = range(self.n_levels)
            columns = [{t.id: j for j, t in enumerate(self.topics_at(level))} for level in levels]
            siblings = [self.root_topics] + [t.children for t in self.topics.values() if t.children]
            parents = [None] + [t.id for t in self.topics.values() if t.children]
            vectors = [np.stack([self.topics[i].vector for i in ids]) for ids in siblings]
            plan = _PlacementPlan(
                columns=columns,
                parents=parents,
                vectors=vectors,
                priors=[np.array([self.topics[i].size for i in ids], dtype=np.float64) for ids in siblings],
                kl_topics=np.concatenate([_nmf.kl_topics(v) for v in vectors]),
                sizes=[len(ids) for ids in siblings],
                root_ids=np.asarray(self.root_topics, dtype=np.int64),
                children_ids={
                    t.id: np.asarray(t.children, dtype=np.int64) for t in self.topics.values() if t.children
                },
            )
            self._plan = plan
        return plan

    def route(self, X: sp.csr_matrix) -> tuple[np.ndarray, list[np.ndarray]]:
        """Paths and per-level soft memberships of the rows of a feature matrix (see the module docstring)."""
        plan = self._placement_plan()
        n = X.shape[0]
        paths = np.zeros((n, self.n_levels), dtype=np.int64)
        columns = plan.columns
        out = [np.zeros((n, len(c))) for c in columns]
        mass: dict[int, np.ndarray] = {}
        conditional = {}
        if self.beta_loss == "kullback-leibler" and n <= _GROUPED_MAX_ROWS:
            # one pass over every split: the same numbers as split by split, without its per-call overhead
            weights = _nmf.project_kl_groups(X, plan.kl_topics, plan.sizes)
            start = 0
            for parent, k, prior in zip(plan.parents, plan.sizes, plan.priors, strict=True):
                conditional[parent] = _normalise_weights(weights[:, start : start + k], prior)
                start += k
        else:
            for parent, vectors, prior in zip(plan.parents, plan.vectors, plan.priors, strict=True):
                conditional[parent] = conditional_memberships(X, vectors, prior, beta_loss=self.beta_loss)
        # soft: products along the branches, level by level
        for j, tid in enumerate(self.root_topics):
            mass[tid] = conditional[None][:, j]
        for level in range(self.n_levels):
            for tid, col in columns[level].items():
                out[level][:, col] = mass[tid]
            if level + 1 < self.n_levels:
                nxt: dict[int, np.ndarray] = {}
                for tid in columns[level]:
                    topic = self.topics[tid]
                    if topic.children:
                        for j, child in enumerate(topic.children):
                            nxt[child] = mass[tid] * conditional[tid][:, j]
                    else:
                        nxt[tid] = mass[tid]
                mass = nxt
        # hard: greedy argmax of the conditional memberships at every split
        current = plan.root_ids[np.argmax(conditional[None], axis=1)]
        paths[:, 0] = current
        for level in range(1, self.n_levels):
            nxt_ids = current.copy()
            for tid in np.unique(current):
                topic = self.topics[int(tid)]
                if not topic.children:
                    continue
                rows = current == tid
                choice = np.argmax(conditional[int(tid)][rows], axis=1)
                nxt_ids[rows] = plan.children_ids[int(tid)][choice]
            paths[:, level] = nxt_ids
            current = nxt_ids
        return paths, out

    def predict(self, texts: Any) -> np.ndarray:
        """Place new texts (or rows of a feature matrix) in the tree.

        Args:
            texts: list of str (hierarchies built from texts), or a non-negative matrix of shape
                (n, n_features).

        Returns:
            int64 array of shape (n, n_levels): one topic id per level, as in :attr:`paths`.

        """
        return self.route(self._as_matrix(texts))[0]

    def predict_memberships(self, texts: Any) -> list[np.ndarray]:
        """Soft memberships of new texts: one array (n, len(topics_at(level))) per level, rows sum to 1."""
        return self.route(self._as_matrix(texts))[1]

    # ------------------------------------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> str:
        """Stable SHA-256 of the tree (structure, vocabulary, topic vectors, document ids and paths)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            structure = {
                "topics": [t.to_dict() for t in self.topics.values()],
                "vocabulary": self.vocabulary,
                "n_features": self.n_features,
                "doc_ids": self.doc_ids,
            }
            if self.beta_loss != "frobenius":  # placement differs; absent for Frobenius, as before the option
                structure["beta_loss"] = self.beta_loss
            digest.update(json.dumps(structure, sort_keys=True).encode("utf-8"))
            digest.update(np.ascontiguousarray(self._vectors(), dtype="<f4").tobytes())
            digest.update(np.ascontiguousarray(self.paths, dtype="<i8").tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def _vectors(self) -> np.ndarray:
        if not self.topics:
            return np.zeros((0, self.n_features), dtype=np.float32)
        return np.stack([t.vector for t in self.topics.values()]).astype(np.float32)

    # ------------------------------------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the hierarchy to ``directory`` (JSON + ``.npz``, each written atomically; no pickle).

        The arrays are written first and the JSON last, so a folder with a valid JSON is complete.

        Returns:
            The directory path.

        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {"vectors": self._vectors(), "paths": self.paths}
        for level, m in enumerate(self._memberships):
            arrays[f"memberships_{level}"] = m
        if self.idf is not None:
            arrays["idf"] = self.idf
        atomic_write_npz(directory / _NPZ_FILE, **arrays)
        from heal_rag._version import __version__

        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "heal_rag_version": __version__,
            "fingerprint": self.fingerprint,
            "n_levels": self.n_levels,
            "n_documents": self.n_documents,
            "n_features": self.n_features,
            "topics": [t.to_dict() for t in self.topics.values()],
            "doc_ids": self.doc_ids,
            "vocabulary": self.vocabulary,
            "tfidf": self.tfidf,
            "split_info": {str(k): v for k, v in self.split_info.items()},
            "params": self.params,
        }
        atomic_write_json(directory / _JSON_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Hierarchy:
        """Load a hierarchy written by :meth:`save`.

        Raises:
            FileNotFoundError: the folder or its files are missing.
            ValueError: the files are corrupted, inconsistent, or from an incompatible format version.

        """
        directory = Path(directory)
        json_path, npz_path = directory / _JSON_FILE, directory / _NPZ_FILE
        if not json_path.is_file():
            raise InputNotFoundError(
                f"No saved hierarchy in {str(directory)!r}: {_JSON_FILE} is missing "
                "(save one with Hierarchy.save)."
            )
        try:
            meta = loads_json(json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InvalidValueError(
                f"The saved hierarchy {str(json_path)!r} is corrupted (invalid JSON: {error})."
            ) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise InvalidValueError(f"{str(json_path)!r} is not a heal-rag hierarchy file.")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidValueError(
                f"The saved hierarchy in {str(directory)!r} has format version {version!r}, but this "
                f"heal-rag reads version {FORMAT_VERSION}. Rebuild it with this version "
                "(heal-rag hierarchy build)."
            )
        if not npz_path.is_file():
            raise InputNotFoundError(
                f"The saved hierarchy in {str(directory)!r} is incomplete: {_NPZ_FILE} is missing."
            )
        try:
            expected = cls._declared_arrays(meta)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InvalidValueError(
                f"The saved hierarchy {str(json_path)!r} is corrupted or inconsistent: {error!r}"
            ) from None
        try:
            arrays = load_npz(npz_path, expected, optional=("idf",))
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
            raise InvalidValueError(
                f"The saved hierarchy file {str(npz_path)!r} is corrupted or inconsistent with {_JSON_FILE} "
                f"({error}). Rebuild it (heal-rag hierarchy build) or copy the folder again."
            ) from None
        try:
            hierarchy = cls._from_parts(meta, arrays)
        except (KeyError, TypeError, IndexError, ValueError) as error:
            raise InvalidValueError(
                f"The saved hierarchy in {str(directory)!r} is corrupted or inconsistent: {error}"
            ) from None
        if hierarchy.fingerprint != meta.get("fingerprint"):
            raise InvalidValueError(
                f"The saved hierarchy in {str(directory)!r} is corrupted: its content does not match its "
                "fingerprint."
            )
        return hierarchy

    @staticmethod
    def _declared_arrays(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str]]:
        """Return the arrays :meth:`save` writes, with the shapes and dtype kinds the JSON implies."""
        entries = meta["topics"]
        n_topics, n_features = len(entries), int(meta["n_features"])
        n_docs, n_levels = len(meta["doc_ids"]), int(meta["n_levels"])
        if n_levels < 1 or n_features < 0:
            raise InvalidValueError(f"n_levels={n_levels}, n_features={n_features}")
        declared: dict[str, tuple[tuple[int, ...], str]] = {
            "vectors": ((n_topics, n_features), "f"),
            "paths": ((n_docs, n_levels), "i"),
            "idf": ((n_features,), "f"),
        }
        for level in range(n_levels):  # the columns of topics_at(level): that depth plus shallower leaves
            n_at = sum(
                1
                for e in entries
                if int(e["depth"]) == level or (int(e["depth"]) < level and not e["children"])
            )
            declared[f"memberships_{level}"] = ((n_docs, n_at), "f")
        return declared

    @classmethod
    def _from_parts(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Hierarchy:
        vectors = arrays["vectors"]
        entries = meta["topics"]
        if vectors.shape != (len(entries), int(meta["n_features"])):
            raise InvalidValueError(
                f"topic vectors have shape {vectors.shape}, expected ({len(entries)}, {meta['n_features']})"
            )
        topics = {}
        for entry, vector in zip(entries, vectors, strict=True):
            topics[int(entry["id"])] = Topic(
                id=int(entry["id"]),
                parent=None if entry["parent"] is None else int(entry["parent"]),
                depth=int(entry["depth"]),
                size=int(entry["size"]),
                top_terms=[str(t) for t in entry["top_terms"]],
                vector=vector,
                children=tuple(int(c) for c in entry["children"]),
            )
        n_levels = int(meta["n_levels"])
        paths = arrays["paths"]
        if paths.shape != (len(meta["doc_ids"]), n_levels):
            raise InvalidValueError(
                f"paths have shape {paths.shape}, expected ({len(meta['doc_ids'])}, {n_levels})"
            )
        memberships = [arrays[f"memberships_{level}"] for level in range(n_levels)]
        return cls(
            topics,
            [str(d) for d in meta["doc_ids"]],
            paths,
            memberships,
            n_features=int(meta["n_features"]),
            vocabulary=meta["vocabulary"],
            idf=arrays.get("idf"),
            tfidf=meta["tfidf"],
            split_info={int(k): v for k, v in meta.get("split_info", {}).items()},
            params=meta.get("params", {}),
        )

    # ------------------------------------------------------------------------------------------- views
    def format_tree(self, n_terms: int = 6, max_depth: int | None = None) -> str:
        """Format the tree as indented text: topic id, size and top terms per line."""
        lines = [
            f"Hierarchy: {len(self.topics)} topics, {self.n_levels} levels, {self.n_documents} documents"
        ]

        def walk(tid: int, indent: str, last: bool) -> None:
            topic = self.topics[tid]
            branch = "└── " if last else "├── "
            terms = ", ".join(topic.top_terms[:n_terms])
            lines.append(f"{indent}{branch}[{topic.id}] ({topic.size} docs) {terms}")
            if max_depth is not None and topic.depth + 1 > max_depth:
                return
            for i, child in enumerate(topic.children):
                walk(child, indent + ("    " if last else "│   "), i == len(topic.children) - 1)

        roots = self.root_topics
        for i, tid in enumerate(roots):
            walk(tid, "", i == len(roots) - 1)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format_tree()

    def __repr__(self) -> str:
        return (
            f"Hierarchy(n_topics={len(self.topics)}, n_levels={self.n_levels}, "
            f"n_documents={self.n_documents}, "
            f"fingerprint={self.fingerprint[:12]!r})"
        )

    def to_dict(self, *, with_vectors: bool = False) -> dict[str, Any]:
        """JSON-ready dict: topics (optionally with vectors), document ids and paths."""
        return {
            "n_levels": self.n_levels,
            "n_documents": self.n_documents,
            "fingerprint": self.fingerprint,
            "topics": [t.to_dict(with_vector=with_vectors) for t in self.topics.values()],
            "doc_ids": list(self.doc_ids),
            "paths": self.paths.tolist(),
        }

    def to_pandas(self, kind: str = "topics") -> Any:
        """Return a pandas DataFrame of the topics (``kind="topics"``) or the paths (``"documents"``)."""
        import pandas as pd

        if kind == "topics":
            rows = [
                {
                    "id": t.id,
                    "parent": t.parent,
                    "depth": t.depth,
                    "size": t.size,
                    "n_children": len(t.children),
                    "top_terms": ", ".join(t.top_terms),
                }
                for t in self.topics.values()
            ]
            return pd.DataFrame(rows).set_index("id")
        if kind == "documents":
            frame = pd.DataFrame(self.paths, columns=[f"level_{i}" for i in range(self.n_levels)])
            frame.insert(0, "doc_id", self.doc_ids)
            return frame
        raise InvalidValueError(f"kind must be 'topics' or 'documents'; got {kind!r}.")

    def plot(self, ax: Any = None, n_terms: int = 3) -> Any:
        """Draw the tree with matplotlib (optional dependency); returns the Axes."""
        from heal_rag._optional import require

        plt = require("matplotlib.pyplot", extra="eval", purpose="Hierarchy.plot")
        if ax is None:
            _, ax = plt.subplots(figsize=(max(6, len(self.leaves()) * 1.2), 1.5 + 1.5 * self.n_levels))
        x_of: dict[int, float] = {}
        cursor = [0.0]

        def place(tid: int) -> float:
            topic = self.topics[tid]
            if not topic.children:
                x_of[tid] = cursor[0]
                cursor[0] += 1.0
            else:
                x_of[tid] = float(np.mean([place(c) for c in topic.children]))
            return x_of[tid]

        for tid in self.root_topics:
            place(tid)
        for topic in self.topics.values():
            x, y = x_of[topic.id], -topic.depth
            for child in topic.children:
                ax.plot([x, x_of[child]], [y, y - 1], color="0.6", lw=0.8, zorder=1)
            label = f"{topic.id} ({topic.size})\n" + "\n".join(topic.top_terms[:n_terms])
            ax.text(x, y, label, ha="center", va="center", fontsize=7, bbox={"boxstyle": "round", "fc": "w"})
        ax.set_ylim(-self.n_levels + 0.5, 0.5)
        ax.set_xlim(-0.7, max(cursor[0] - 0.3, 0.7))
        ax.axis("off")
        return ax
