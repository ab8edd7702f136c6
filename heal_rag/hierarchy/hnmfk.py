"""HNMFk: hierarchical NMF with the number of topics chosen automatically at every split.

The corpus is turned into TF-IDF (or a user-supplied non-negative matrix is used as is), NMFk splits the
root into ``k`` topics, every document goes to the child with its largest weight, and each child is split
again, breadth first, until the depth limit. A topic stays a leaf when it is too small to give two children of
``min_topic_size``, when its documents are all identical, when no candidate ``k`` is stable (NMFk chooses
``k = 1``), or when merging children smaller than ``min_topic_size`` leaves fewer than two.

Large corpora: ``fit_sample`` builds the tree (vocabulary, idf and every split) on a seeded sample of the
documents and then places every document, sample included, with the stored topic vectors
(:meth:`Hierarchy.route`), :data:`PLACEMENT_CHUNK_SIZE` documents at a time, so the memory the placement
needs does not grow with the corpus. A full fit places its documents the same way, so a document's path
depends only on the tree, never on whether it was in the sample.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from heal_rag._progress import show_progress as resolve_show_progress
from heal_rag.errors import InvalidValueError, NotFittedError
from heal_rag.hierarchy import _nmf
from heal_rag.hierarchy._validation import check_fit_sample, check_matrix, check_params
from heal_rag.hierarchy.nmfk import make_rng, nmfk, nmfk_settings
from heal_rag.hierarchy.tree import (
    DEFAULT_TOKEN_PATTERN,
    Hierarchy,
    Topic,
    check_texts,
    count_vectorizer,
    counts_to_tfidf,
    is_text_input,
    top_terms,
)

logger = logging.getLogger(__name__)

ROOT = -1  # key of the root split in ``k_selection_`` / ``Hierarchy.split_info``
# documents vectorised and placed per step after the tree is built (results do not depend on it: every
# document is projected on its own); bounds the placement's working memory whatever the corpus size
PLACEMENT_CHUNK_SIZE = 8192


class HNMFk(BaseEstimator):
    """Hierarchical NMF topic tree with automatic ``k`` per split (HNMFk), scikit-learn style.

    Args:
        depth: number of levels of the tree (>= 1).
        k_range: candidate numbers of topics per split: a pair ``(k_min, k_max)`` for every depth, or a list
            of pairs, one per depth (a shorter list repeats its last pair).
        min_topic_size: smallest allowed topic; smaller children are merged into their siblings.
        n_perturbations: perturbed copies factorised per candidate ``k``.
        noise: multiplicative noise on the matrix entries in each perturbation, in ``[0, 1)``.
        bootstrap: resample the documents with replacement in each perturbation.
        max_iter: HALS sweeps of each final fit.
        perturbation_max_iter: HALS sweeps of each perturbed fit.
        tol: relative error improvement below which HALS stops.
        stability_threshold: minimum worst-topic silhouette for a ``k`` to count as stable.
        stability_tolerance: how far below the most stable candidate a chosen ``k`` may be.
        beta_loss: divergence of each split's final fit and of the placement of documents:
            ``"kullback-leibler"`` (default: on TF-IDF it separates documents far better, see
            ``evals/results/bench_hierarchy.md``) or ``"frobenius"``. The perturbed fits that choose ``k``
            always use fast Frobenius HALS.
        max_features: vocabulary size of the TF-IDF (most frequent terms), None for all.
        min_df: minimum document frequency (int count or float fraction) of a term.
        max_df: maximum document frequency of a term (drops near-stop-words).
        stop_words: ``"english"``, a list of words, or None.
        sublinear_tf: use ``1 + log(tf)``.
        ngram_range: word n-gram range of the TF-IDF.
        token_pattern: regular expression of a token (default: 2+ characters, at least one letter).
        lowercase: lowercase the texts first.
        strip_accents: ``"ascii"``, ``"unicode"`` or None.
        n_top_terms: terms kept per topic in :attr:`Topic.top_terms`.
        fit_sample: build the tree on a sample of the documents and place the rest with the stored factors
            (for corpora too large to factorise whole): an int (number of documents), a float in ``(0, 1]``
            (share of the documents, rounded up), or None (default) to fit on every document. The sample
            is drawn without replacement with ``random_state`` and kept in input order; the vocabulary, idf
            and every split are learned from it alone. Every document, sample included, is then placed with
            :meth:`Hierarchy.route`, so :attr:`hierarchy_` holds paths and memberships of all documents in
            input order, and topic sizes count all of them (``k_selection_`` describes the sample).
            A sample as large as the corpus is a full fit. Documents with no text are left out first, and
            a share or count refers to the documents that remain.
        random_state: seed; the same seed gives the same tree (and the same ``fit_sample`` sample).
        device: ``"auto"`` (torch on CUDA when available), ``"cpu"`` or ``"cuda"``.
        show_progress: show tqdm bars of the topics split and of the documents placed; ``None`` (default)
            shows them when the ``heal_rag`` logger is enabled for INFO (see
            :func:`heal_rag._progress.show_progress`).
        progress: deprecated alias of ``show_progress``.

    Attributes:
        hierarchy_: the fitted :class:`Hierarchy`.
        vectorizer_: the CountVectorizer of the vocabulary (None when fitted on a matrix).
        k_selection_: dict parent topic id (``-1`` = root) -> NMFk diagnostics of that split.
        n_features_in_: number of features (vocabulary size).
        fit_sample_indices_: sorted row positions (in ``hierarchy_.doc_ids`` and ``paths``) of the documents
            the tree was built on; every position when ``fit_sample`` is None.

    Example:
        >>> from heal_rag.hierarchy import HNMFk
        >>> model = HNMFk(depth=2, random_state=0).fit(texts)  # doctest: +SKIP
        >>> print(model.hierarchy_)  # doctest: +SKIP
        >>> model.predict(["a new question"])  # doctest: +SKIP

    """

    def __init__(
        self,
        depth: int = 2,
        k_range: Any = (2, 10),
        *,
        min_topic_size: int = 10,
        n_perturbations: int = 4,
        noise: float = 0.05,
        bootstrap: bool = True,
        max_iter: int = 100,
        perturbation_max_iter: int = 30,
        tol: float = 1e-3,
        stability_threshold: float = 0.6,
        stability_tolerance: float = 0.15,
        beta_loss: str = "kullback-leibler",
        max_features: int | None = 5000,
        min_df: int | float = 2,
        max_df: int | float = 0.5,
        stop_words: str | list[str] | None = "english",
        sublinear_tf: bool = True,
        ngram_range: tuple[int, int] = (1, 1),
        token_pattern: str = DEFAULT_TOKEN_PATTERN,
        lowercase: bool = True,
        strip_accents: str | None = "unicode",
        n_top_terms: int = 10,
        fit_sample: int | float | None = None,
        random_state: Any = 0,
        device: str = "auto",
        show_progress: bool | None = None,
        progress: bool | None = None,
    ) -> None:
        self.depth = depth
        self.k_range = k_range
        self.min_topic_size = min_topic_size
        self.n_perturbations = n_perturbations
        self.noise = noise
        self.bootstrap = bootstrap
        self.max_iter = max_iter
        self.perturbation_max_iter = perturbation_max_iter
        self.tol = tol
        self.stability_threshold = stability_threshold
        self.stability_tolerance = stability_tolerance
        self.beta_loss = beta_loss
        self.max_features = max_features
        self.min_df = min_df
        self.max_df = max_df
        self.stop_words = stop_words
        self.sublinear_tf = sublinear_tf
        self.ngram_range = ngram_range
        self.token_pattern = token_pattern
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.n_top_terms = n_top_terms
        self.fit_sample = fit_sample
        self.random_state = random_state
        self.device = device
        self.show_progress = show_progress
        self.progress = progress

    # ------------------------------------------------------------------------------------------- input
    def _tfidf_settings(self) -> dict[str, Any]:
        return {
            "lowercase": bool(self.lowercase),
            "strip_accents": self.strip_accents,
            "stop_words": self.stop_words
            if isinstance(self.stop_words, (str, type(None)))
            else list(self.stop_words),
            "token_pattern": self.token_pattern,
            "ngram_range": list(self.ngram_range),
            "sublinear_tf": bool(self.sublinear_tf),
            "norm": "l2",
        }

    def _vectorize(self, texts: list[str]) -> tuple[sp.csr_matrix, list[str], np.ndarray, Any]:
        n = len(texts)
        settings = self._tfidf_settings()
        min_df, max_df = self.min_df, self.max_df
        low = min_df if isinstance(min_df, (int, np.integer)) else min_df * n
        high = max_df if isinstance(max_df, (int, np.integer)) else max_df * n
        if high < low:
            # tiny corpora: the frequency filters would contradict each other; keep every term instead
            logger.info(
                "corpus of %d texts too small for min_df=%r/max_df=%r; using all terms", n, min_df, max_df
            )
            min_df, max_df = 1, 1.0
        vectorizer = count_vectorizer(settings, max_features=self.max_features, min_df=min_df, max_df=max_df)
        try:
            counts = vectorizer.fit_transform(texts)
        except ValueError as error:
            if "empty vocabulary" in str(error) or "no terms remain" in str(error):
                raise InvalidValueError(
                    "HNMFk found no vocabulary in the texts: after tokenising, stop-word removal "
                    f"(stop_words={self.stop_words!r}) and the frequency filters (min_df={min_df!r}, "
                    f"max_df={max_df!r}) no term is left. Check that the texts are not empty or only stop "
                    "words, "
                    "or relax these settings."
                ) from None
            raise InvalidValueError(f"HNMFk could not build the TF-IDF vocabulary: {error}") from None
        vocabulary = [str(t) for t in vectorizer.get_feature_names_out()]
        # a fixed-vocabulary vectorizer for later texts (the fitted one carries the stop-word list as state)
        df = np.bincount(sp.csr_matrix(counts).indices, minlength=len(vocabulary)).astype(np.float64)
        idf = (np.log((n + 1.0) / (df + 1.0)) + 1.0).astype(np.float32)  # scikit-learn's smoothed idf
        X = counts_to_tfidf(counts, idf, settings["sublinear_tf"])
        return X, vocabulary, idf, count_vectorizer(settings, vocabulary)

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any = None, *, doc_ids: Any = None, feature_names: Any = None) -> HNMFk:
        """Build the topic tree.

        Args:
            X: list of texts (str), or a non-negative matrix (dense or scipy sparse) of shape
                (n_documents, n_features).
            y: ignored (scikit-learn API).
            doc_ids: one id per document (default ``"0", "1", ...``); must be unique.
            feature_names: names of the matrix columns, used as top terms (matrix input only).

        Returns:
            self, with :attr:`hierarchy_` set.

        """
        params = check_params(self, per_depth=True)
        owner = type(self).__name__
        show = self._resolve_progress()
        # one draw from random_state seeds both the sample and the splits (a Generator is advanced once)
        seed = int(make_rng(self.random_state).integers(0, 2**31 - 1))
        if is_text_input(X):
            texts = check_texts(X, owner)
            if not texts:
                raise InvalidValueError(
                    f"{owner} got an empty corpus (0 documents); at least 1 document is needed."
                )
            ids = self._check_doc_ids(doc_ids, len(texts))
            empty = [i for i, text in enumerate(texts) if not text.strip()]
            if empty:
                if len(empty) == len(texts):
                    raise InvalidValueError(
                        f"None of the {len(texts)} texts given to {owner} has any text: nothing to cluster."
                    )
                # empty texts say nothing about topics: leave them out of the tree (issue 13), say so once
                shown = ", ".join(repr(ids[i]) for i in empty[:5]) + (", ..." if len(empty) > 5 else "")
                warnings.warn(
                    f"{len(empty)} of {len(texts)} documents have no text and are left out of the topic "
                    f"hierarchy: {shown}.",
                    UserWarning,
                    stacklevel=2,
                )
                keep = set(range(len(texts))) - set(empty)
                texts = [t for i, t in enumerate(texts) if i in keep]
                ids = [d for i, d in enumerate(ids) if i in keep]
            n = len(texts)
            sample = _draw_sample(check_fit_sample(owner, self.fit_sample, n, len(empty)), n, seed)
            fit_texts = texts if sample is None else [texts[i] for i in sample]
            matrix, vocabulary, idf, self.vectorizer_ = self._vectorize(fit_texts)
            tfidf = self._tfidf_settings()
            # without a sample the rows are already vectorised; with one, every text is vectorised again
            source: Any = matrix if sample is None else texts
        else:
            source = check_matrix(X, owner)
            n = source.shape[0]
            ids = self._check_doc_ids(doc_ids, n)
            vocabulary, idf, tfidf, self.vectorizer_ = None, None, None, None
            if feature_names is not None:
                vocabulary = [str(f) for f in feature_names]
                if len(vocabulary) != source.shape[1]:
                    raise InvalidValueError(
                        f"feature_names has {len(vocabulary)} names but X has {source.shape[1]} columns."
                    )
            sample = _draw_sample(check_fit_sample(owner, self.fit_sample, n, 0), n, seed)
            matrix = source if sample is None else source[sample]
        builder = _TreeBuilder(self, params, matrix, vocabulary, seed=seed, show_progress=show)
        topics, split_info = builder.build()
        n_levels = 1 + max(t.depth for t in topics.values())
        skeleton = Hierarchy(
            topics,
            ids[:0],
            np.zeros((0, n_levels), dtype=np.int64),
            [],
            n_features=matrix.shape[1],
            vocabulary=vocabulary,
            idf=idf,
            tfidf=tfidf,
            params={"beta_loss": self.beta_loss},  # routing needs the divergence the topics were fitted with
        )
        n_features = matrix.shape[1]
        del builder, matrix  # a sample's rows are not needed for the placement
        paths, memberships = _place(skeleton, source, n, show)
        # sizes from the final placement of every document (the same routine that predict uses)
        final = {}
        for tid, topic in topics.items():
            size = int(np.sum(paths[:, topic.depth] == tid))
            final[tid] = Topic(
                tid, topic.parent, topic.depth, size, topic.top_terms, topic.vector, topic.children
            )
        self.k_selection_ = split_info
        self.fit_sample_indices_ = np.arange(n) if sample is None else sample
        hierarchy_params = _jsonable(self.get_params())
        hierarchy_params["n_fit_documents"] = int(len(self.fit_sample_indices_))
        self.hierarchy_ = Hierarchy(
            final,
            ids,
            paths,
            memberships,
            n_features=n_features,
            vocabulary=vocabulary,
            idf=idf,
            tfidf=tfidf,
            split_info=split_info,
            params=hierarchy_params,
        )
        self.n_features_in_ = n_features
        return self

    @staticmethod
    def _check_doc_ids(doc_ids: Any, n: int) -> list[str]:
        if doc_ids is None:
            return [str(i) for i in range(n)]
        if isinstance(doc_ids, str):
            raise InvalidValueError("doc_ids must be a list of ids, not a single string.")
        ids = [str(d) for d in doc_ids]
        if len(ids) != n:
            raise InvalidValueError(f"doc_ids has {len(ids)} ids but there are {n} documents.")
        if len(set(ids)) != n:
            seen: set[str] = set()
            dup = next(d for d in ids if d in seen or seen.add(d))  # type: ignore[func-returns-value]
            raise InvalidValueError(f"doc_ids must be unique; {dup!r} occurs more than once.")
        return ids

    # ------------------------------------------------------------------------------------------- predict
    def _check_fitted(self) -> Hierarchy:
        if not hasattr(self, "hierarchy_"):
            raise NotFittedError("This HNMFk instance is not fitted yet. Call 'fit' first.")
        return self.hierarchy_

    def predict(self, X: Any) -> np.ndarray:
        """Topic ids per level of new texts (or matrix rows): int64 array of shape (n, n_levels)."""
        return self._check_fitted().predict(X)

    def predict_memberships(self, X: Any) -> list[np.ndarray]:
        """Soft memberships of new texts: one array (n, n_topics_at_level) per level, rows sum to 1."""
        return self._check_fitted().predict_memberships(X)

    def transform(self, X: Any) -> np.ndarray:
        """Soft memberships at the finest level, shape (n, len(hierarchy_.topics_at(-1)))."""
        return self.predict_memberships(X)[-1]

    def _resolve_progress(self) -> bool:
        explicit = self.show_progress
        if self.progress is not None:
            warnings.warn(
                "The 'progress' parameter of HNMFk is deprecated; use show_progress instead.",
                DeprecationWarning,
                stacklevel=3,
            )
            if explicit is None:
                explicit = self.progress
        return resolve_show_progress(explicit)

    def fit_predict(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """Fit and return the training documents' paths, shape (n_documents, n_levels)."""
        return self.fit(X, **fit_params).hierarchy_.paths.copy()


class _TreeBuilder:
    """Breadth-first construction of the topics (ids assigned in creation order, so level 0 comes first)."""

    def __init__(
        self,
        est: HNMFk,
        params: dict[str, Any],
        X: sp.csr_matrix,
        vocabulary: list[str] | None,
        *,
        seed: int,
        show_progress: bool,
    ) -> None:
        self.est = est
        self.params = params
        self.X = X
        self.vocabulary = vocabulary
        self.nonzero = X.getnnz(axis=1) > 0
        self.ops = _nmf._Ops(_nmf.resolve_device(est.device))
        self.seed = seed
        self.show_progress = show_progress

    def build(self) -> tuple[dict[int, Topic], dict[int, dict[str, Any]]]:
        from tqdm.auto import tqdm

        X = self.X
        topics: dict[int, Topic] = {}
        children_of: dict[int, list[int]] = {}
        split_info: dict[int, dict[str, Any]] = {}
        queue: deque[tuple[int, int, np.ndarray]] = deque([(ROOT, 0, np.arange(X.shape[0]))])
        bar = tqdm(
            desc="HNMFk splits", unit="topic", disable=None if self.show_progress else True, leave=False
        )
        node_index = 0
        while queue:
            parent, depth, rows = queue.popleft()
            rng = np.random.default_rng([self.seed, node_index])
            node_index += 1
            split, info = self._split(rows, depth, rng)
            split_info[parent] = info
            bar.update(1)
            bar.set_postfix(topics=len(topics), depth=depth)
            if split is None:
                if parent == ROOT:
                    warnings.warn(
                        f"HNMFk did not split the corpus ({info['reason']}); "
                        "the hierarchy has a single topic.",
                        UserWarning,
                        stacklevel=4,
                    )
                    mean = np.asarray(X[rows].mean(axis=0)).ravel()
                    vector = _nmf.unit_rows(mean[None, :])[0].astype(np.float32)
                    topics[0] = self._topic(0, None, 0, rows, vector)
                continue
            vectors, assignment = split
            ids = []
            for j in range(len(vectors)):
                tid = len(topics)
                members = rows[assignment == j]
                topics[tid] = self._topic(tid, None if parent == ROOT else parent, depth, members, vectors[j])
                ids.append(tid)
                if depth + 1 < self.params["depth"]:
                    queue.append((tid, depth + 1, members))
            if parent != ROOT:
                children_of[parent] = ids
        bar.close()
        for pid, ids in children_of.items():
            t = topics[pid]
            topics[pid] = Topic(t.id, t.parent, t.depth, t.size, t.top_terms, t.vector, tuple(ids))
        return topics, split_info

    def _topic(self, tid: int, parent: int | None, depth: int, rows: np.ndarray, vector: np.ndarray) -> Topic:
        terms = top_terms(vector, self.vocabulary, self.est.n_top_terms)
        return Topic(tid, parent, depth, int(len(rows)), terms, vector.astype(np.float32), ())

    def _split(
        self, rows: np.ndarray, depth: int, rng: np.random.Generator
    ) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[str, Any]]:
        """Split the documents ``rows``: ((child vectors, child index per row) or None, diagnostics)."""
        est = self.est
        min_size = self.params["min_topic_size"]
        lo, hi = self.params["k_range"][depth]
        fit_rows = rows[self.nonzero[rows]]
        info: dict[str, Any] = {
            "depth": depth,
            "n_documents": int(len(rows)),
            "chosen_k": 1,
            "candidates": [],
        }

        def stop(reason: str) -> tuple[None, dict[str, Any]]:
            info["reason"] = reason
            logger.debug("leaf at depth %d with %d documents: %s", depth, len(rows), reason)
            return None, info

        if len(fit_rows) < max(2 * min_size, 2):
            return stop(
                f"{len(fit_rows)} documents with terms: too few for two topics of min_topic_size={min_size}"
            )
        Xn = self.X[fit_rows]
        n_unique = _count_unique_rows(Xn, limit=hi)
        if n_unique < 2:
            return stop("all documents are identical")
        used = np.flatnonzero(Xn.getnnz(axis=0))  # factorise only the terms present here (smaller, faster)
        k_hi = min(hi, n_unique, len(fit_rows) // min_size, len(used))
        if k_hi < lo:
            return stop(
                f"fewer distinct documents/terms than the smallest k={lo} allows "
                f"({len(fit_rows)} documents, {n_unique}+ distinct, min_topic_size={min_size})"
            )
        result = nmfk(
            Xn[:, used],
            list(range(lo, k_hi + 1)),
            rng=rng,
            ops=self.ops,
            **nmfk_settings(est),
        )
        info["candidates"] = [c.to_dict() for c in result.candidates]
        info["chosen_k"] = result.k
        info["selection"] = result.reason
        if result.components is None:
            return stop(result.reason)
        vectors = np.zeros((result.k, self.X.shape[1]), dtype=np.float32)
        vectors[:, used] = result.components
        vectors, assignment, merged = _assign_min_size(self.X[rows], vectors, min_size, est.beta_loss)
        info["merged_small_topics"] = merged
        if len(vectors) < 2:
            info["chosen_k"] = 1
            return stop(
                f"{result.reason}; children smaller than min_topic_size={min_size} were merged into one"
            )
        info["n_children"] = len(vectors)
        info["reason"] = result.reason
        return (vectors, assignment), info


def _draw_sample(size: int | None, n: int, seed: int) -> np.ndarray | None:
    """Sorted positions of a ``size``-document sample of ``n`` (None: fit on all, also when ``size == n``).

    Its own stream of the fit's seed (spawn key 1), independent of the per-split streams ``[seed, node]``.
    """
    if size is None or size >= n:
        return None
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def _place(
    hierarchy: Hierarchy, source: sp.csr_matrix | list[str], n: int, show_progress: bool
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Paths and memberships of all ``n`` documents (a matrix, or texts to vectorise), chunk by chunk.

    Only the outputs grow with ``n``; the TF-IDF rows and projections of one chunk of
    :data:`PLACEMENT_CHUNK_SIZE` documents are the working memory. Every row is projected on its own, so the
    result does not depend on the chunk size.
    """
    from tqdm.auto import tqdm

    chunk = int(PLACEMENT_CHUNK_SIZE)
    paths = np.zeros((n, hierarchy.n_levels), dtype=np.int64)
    memberships = [np.zeros((n, len(hierarchy.topics_at(level)))) for level in range(hierarchy.n_levels)]
    bar = tqdm(
        total=n, desc="HNMFk placement", unit="doc", disable=None if show_progress else True, leave=False
    )
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = source[start:stop]
        X = hierarchy.vectorize(rows) if isinstance(rows, list) else rows
        chunk_paths, chunk_memberships = hierarchy.route(X)
        paths[start:stop] = chunk_paths
        for level, values in enumerate(chunk_memberships):
            memberships[level][start:stop] = values
        bar.update(stop - start)
    bar.close()
    return paths, memberships


def _assign_min_size(
    X: sp.csr_matrix, vectors: np.ndarray, min_size: int, beta_loss: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Assign rows to their largest-weight topic, dropping the smallest topic while any is below ``min_size``.

    The rows of a dropped topic move to their best remaining topic (re-projected without it), the same routine
    that :meth:`Hierarchy.predict` uses later, so the training paths and the predictions agree.
    """
    merged = 0
    nonzero = X.getnnz(axis=1) > 0
    while True:
        k = len(vectors)
        weights = _nmf.project_weights(X, vectors, beta_loss)
        assignment = np.argmax(weights, axis=1)
        sizes = np.bincount(assignment[nonzero], minlength=k).astype(np.float64)
        # all-zero rows follow the most populous child, the rule tree.conditional_memberships applies later
        assignment[~nonzero] = int(np.argmax(sizes))
        sizes = np.bincount(assignment, minlength=k)
        if k < 2 or sizes.min() >= min_size:
            return vectors, assignment, merged
        smallest = int(np.flatnonzero(sizes == sizes.min())[-1])
        vectors = np.delete(vectors, smallest, axis=0)
        merged += 1


def _count_unique_rows(X: sp.csr_matrix, limit: int) -> int:
    """Count the distinct rows of ``X``, counting no further than ``limit`` (the count only caps ``k``)."""
    seen: set[bytes] = set()
    for i in range(X.shape[0]):
        start, end = X.indptr[i], X.indptr[i + 1]
        seen.add(X.indices[start:end].tobytes() + np.round(X.data[start:end], 5).tobytes())
        if len(seen) >= limit:
            break
    return len(seen)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if isinstance(value, (np.integer, np.floating)):
            value = value.item()
        elif isinstance(value, tuple):
            value = list(value)
        elif not isinstance(value, (str, int, float, bool, list, dict, type(None))):
            value = repr(value)
        out[key] = value
    return out
