"""NMFk: non-negative matrix factorisation with the number of topics ``k`` chosen by stability.

For every candidate ``k`` the matrix is perturbed several times (bootstrap of the documents and multiplicative
noise on the entries), each copy is factorised, the topics of the copies are aligned (Hungarian matching of
cosine similarity) and the silhouette of the aligned topics measures how reproducible the ``k`` topics are.
One truncated SVD of the matrix initialises every perturbation and every candidate ``k`` (NNDSVD): the k range
and the perturbations share it, and stability then reflects the data, not the ordering of each copy's SVD.

How ``k`` is chosen (see :func:`select_k`): T-ELF takes the largest ``k`` whose silhouette stays above a
fixed threshold, which lands where the silhouette curve is about to collapse (or beyond it) and over-splits.
Here the chosen ``k`` ends the contiguous plateau of stable candidates that starts at the most stable ``k``,
where stable means a worst-topic silhouette above ``stability_threshold`` and within ``stability_tolerance``
of the best.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator

from heal_rag.errors import InvalidValueError, NotFittedError
from heal_rag.hierarchy import _nmf
from heal_rag.hierarchy._validation import check_matrix, check_params

logger = logging.getLogger(__name__)


@dataclass
class KCandidate:
    """Diagnostics of one candidate ``k``.

    Attributes:
        k: number of topics.
        silhouette_min: silhouette of the least stable topic (the worst topic decides if ``k`` is stable).
        silhouette_mean: mean silhouette over all aligned topics.
        rel_error: mean relative reconstruction error over the perturbations.
        rel_error_std: its standard deviation over the perturbations.
        eligible: whether ``k`` is above the stability floor used by :func:`select_k`.

    """

    k: int
    silhouette_min: float
    silhouette_mean: float
    rel_error: float
    rel_error_std: float
    eligible: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def select_k(
    candidates: list[KCandidate],
    *,
    threshold: float,
    tolerance: float,
) -> tuple[int, str]:
    """Choose ``k`` from the candidates' diagnostics (sets their ``eligible`` flag).

    Rule ("stable plateau"):
      1. ``best`` = the highest worst-topic silhouette ``silhouette_min`` over the candidates; the floor is
         ``max(threshold, best - tolerance)``: stable in absolute terms and nearly as the best ``k``.
      2. Start at the most stable ``k`` (the smallest one on ties) and walk up the k range while the next
         candidate stays above the floor; the last ``k`` of this contiguous plateau is chosen.
      3. No candidate above ``threshold`` -> ``k = 1`` (the topic is not split).

    Why contiguous: after the silhouette collapses (the data has no more stable topics), an isolated larger
    ``k`` can score well by chance; T-ELF's "largest k above the threshold" picks such points and over-splits.
    The relative floor keeps a ``k`` whose weakest topic is clearly less reproducible than the best split from
    being chosen just because it clears an absolute threshold.

    Returns:
        The chosen ``k`` (1 = no stable split) and a one-line reason.

    """
    if not candidates:
        return 1, "no candidate k"
    ordered = sorted(candidates, key=lambda c: c.k)
    best = max(c.silhouette_min for c in ordered)
    floor = max(threshold, best - tolerance)
    for c in ordered:
        c.eligible = bool(c.silhouette_min >= floor)
    if best < threshold:
        return (
            1,
            f"no k reached the stability threshold {threshold:.2f} (best worst-topic silhouette {best:.2f})",
        )
    start = next(i for i, c in enumerate(ordered) if c.silhouette_min == best)
    end = start
    while end + 1 < len(ordered) and ordered[end + 1].eligible:
        end += 1
    chosen = ordered[end]
    return chosen.k, (
        f"k={chosen.k}: end of the stable plateau k={ordered[start].k}..{chosen.k} "
        f"(worst-topic silhouette >= {floor:.2f}; best {best:.2f})"
    )


@dataclass
class NMFkResult:
    """What :func:`nmfk` returns: the chosen ``k``, its topics and the per-``k`` diagnostics."""

    k: int
    components: np.ndarray | None  # (k, n_terms), unit rows; None when k == 1
    candidates: list[KCandidate]
    reason: str
    rel_error: float | None = None


def nmfk(
    X: sp.csr_matrix,
    ks: list[int],
    *,
    n_perturbations: int,
    noise: float,
    bootstrap: bool,
    max_iter: int,
    perturbation_max_iter: int,
    tol: float,
    stability_threshold: float,
    stability_tolerance: float,
    rng: np.random.Generator,
    ops: _nmf._Ops,
    shared_init: bool = True,
    beta_loss: str = "frobenius",
) -> NMFkResult:
    """Run NMFk on a validated non-negative CSR matrix ``X`` (n_documents, n_terms) over ``ks``.

    Returns:
        The chosen ``k`` and, when ``k >= 2``, the final topics fitted on the unperturbed ``X``.

    """
    n, m = X.shape
    ks = sorted(k for k in ks if 2 <= k <= min(n, m))
    if not ks:
        return NMFkResult(1, None, [], "no candidate k fits the matrix size")
    k_max = max(ks)
    topics = {k: np.zeros((n_perturbations, k, m), dtype=_nmf.DTYPE) for k in ks}
    errors: dict[int, list[float]] = {k: [] for k in ks}
    seeds = rng.integers(0, 2**31 - 1, size=n_perturbations)
    if shared_init:
        # one NNDSVD of the unperturbed matrix starts every copy: stability then measures whether the data
        # (resampled, noisy) keeps the topics, not whether the SVD of each copy orders its components alike
        W_all, H_all = _nmf.nndsvd_components(X, k_max, int(seeds[0]))
    for p in range(n_perturbations):
        prng = np.random.default_rng(seeds[p])
        rows = _nmf.bootstrap_rows(n, prng) if bootstrap else np.arange(n)
        Xp = _nmf.perturb(X[rows], noise, prng)
        if shared_init:
            W0, H0 = W_all[rows], H_all
        else:
            W0, H0 = _nmf.nndsvd_components(Xp, k_max, int(prng.integers(0, 2**31 - 1)))
        prepared = ops.matrix(Xp)
        for k in ks:
            fit = _nmf.hals(
                Xp, W0[:, :k], H0[:k], max_iter=perturbation_max_iter, tol=tol, ops=ops, prepared=prepared
            )
            topics[k][p] = _nmf.unit_rows(fit.H)
            errors[k].append(fit.rel_error)
    candidates = []
    consensus = {}
    for k in ks:
        aligned, consensus[k] = _nmf.align_topics(topics[k])
        per_topic, mean = _nmf.stability(aligned)
        candidates.append(
            KCandidate(
                k=k,
                silhouette_min=float(per_topic.min()),
                silhouette_mean=mean,
                rel_error=float(np.mean(errors[k])),
                rel_error_std=float(np.std(errors[k])),
            )
        )
    k, reason = select_k(candidates, threshold=stability_threshold, tolerance=stability_tolerance)
    logger.debug("NMFk on %d x %d: %s", n, m, reason)
    if k < 2:
        return NMFkResult(1, None, candidates, reason)
    # final fit on the unperturbed matrix, started from the consensus topics so it lands on the stable ones
    H0 = consensus[k]
    W0 = np.maximum(_nmf.project(X, H0, n_iter=5), 1e-6)
    if beta_loss == "kullback-leibler":
        # the perturbed fits (stability, choice of k) stay on fast Frobenius HALS; the final topics minimise
        # the KL divergence, which separates documents far better on TF-IDF (PLSA-like topics)
        fit = _nmf.kl_nmf(X, W0, H0, max_iter=max_iter, tol=tol)
    else:
        fit = _nmf.hals(X, W0, H0, max_iter=max_iter, tol=tol, ops=ops)
    H = _nmf.unit_rows(fit.H)
    dead = np.linalg.norm(fit.H, axis=1) <= 1e-12
    if dead.any():  # a topic that vanished in the final fit keeps its consensus direction
        H[dead] = H0[dead]
    return NMFkResult(k, H.astype(_nmf.DTYPE), candidates, reason, fit.rel_error)


class NMFk(BaseEstimator):
    """NMF whose number of topics is chosen automatically by stability over perturbed copies of the data.

    Args:
        k_range: inclusive ``(k_min, k_max)`` of candidate numbers of topics, ``2 <= k_min <= k_max``.
        n_perturbations: perturbed copies factorised per candidate ``k`` (at least 2).
        noise: multiplicative noise level on the stored entries, in ``[0, 1)``.
        bootstrap: also resample the documents with replacement in each perturbation.
        max_iter: HALS sweeps of the final fit.
        perturbation_max_iter: HALS sweeps of each perturbed fit (stability needs only rough fits).
        tol: relative error improvement below which HALS stops early.
        stability_threshold: minimum worst-topic silhouette for a ``k`` to count as stable.
        stability_tolerance: how far below the most stable candidate a ``k`` may be and still be chosen.
        beta_loss: divergence of the final fit and of :meth:`transform`: ``"kullback-leibler"`` (default;
            clusters text far better) or ``"frobenius"`` (HALS). The perturbed fits always use HALS.
        random_state: seed (int), ``numpy.random.Generator``/``RandomState`` or None.
        device: ``"auto"`` (CUDA through torch when available, else CPU), ``"cpu"`` or ``"cuda"``.

    Attributes:
        k_: chosen number of topics (1 when no ``k`` is stable; then ``components_`` is the mean direction).
        components_: array of shape (k_, n_features), unit-norm topics over the features.
        k_selection_: list of dicts, the diagnostics of every candidate ``k`` (see :class:`KCandidate`).
        selection_reason_: one line explaining the choice.
        reconstruction_err_: error of the final fit: ``||X - WH||_F / ||X||_F`` (Frobenius) or the
            divergence divided by ``sum(X)`` (Kullback-Leibler).

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> X = np.kron(np.eye(3), np.ones((20, 10))) + 0.01 * rng.random((60, 30))
        >>> NMFk(k_range=(2, 5), random_state=0).fit(X).k_
        3

    """

    def __init__(
        self,
        k_range: tuple[int, int] = (2, 10),
        *,
        n_perturbations: int = 4,
        noise: float = 0.05,
        bootstrap: bool = True,
        max_iter: int = 100,
        perturbation_max_iter: int = 30,
        tol: float = 1e-3,
        stability_threshold: float = 0.6,
        stability_tolerance: float = 0.15,
        beta_loss: str = "kullback-leibler",
        random_state: Any = None,
        device: str = "auto",
    ) -> None:
        self.k_range = k_range
        self.n_perturbations = n_perturbations
        self.noise = noise
        self.bootstrap = bootstrap
        self.max_iter = max_iter
        self.perturbation_max_iter = perturbation_max_iter
        self.tol = tol
        self.stability_threshold = stability_threshold
        self.stability_tolerance = stability_tolerance
        self.beta_loss = beta_loss
        self.random_state = random_state
        self.device = device

    def fit(self, X: Any, y: Any = None) -> NMFk:
        """Choose ``k`` and fit the topics on a non-negative matrix ``X`` of shape (n_samples, n_features)."""
        params = check_params(self, per_depth=False)
        X = check_matrix(X, type(self).__name__)
        if X.shape[0] < 2:
            raise InvalidValueError(f"NMFk needs at least 2 samples; got {X.shape[0]}.")
        ops = _nmf._Ops(_nmf.resolve_device(self.device))
        rng = make_rng(self.random_state)
        lo, hi = params["k_range"][0]
        result = nmfk(
            X,
            list(range(lo, hi + 1)),
            rng=rng,
            ops=ops,
            **nmfk_settings(self),
        )
        self.k_ = result.k
        if result.components is None:
            mean = np.asarray(X.mean(axis=0)).ravel()
            self.components_ = _nmf.unit_rows(mean[None, :]).astype(_nmf.DTYPE)
            self.reconstruction_err_ = None
        else:
            self.components_ = result.components
            self.reconstruction_err_ = result.rel_error
        self.k_selection_ = [c.to_dict() for c in result.candidates]
        self.selection_reason_ = result.reason
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Non-negative topic weights of shape (n_samples, k_) with the topics fixed."""
        if not hasattr(self, "components_"):
            raise NotFittedError("This NMFk instance is not fitted yet. Call 'fit' first.")
        X = check_matrix(X, type(self).__name__, allow_empty=True)
        if X.shape[1] != self.n_features_in_:
            raise InvalidValueError(
                f"X has {X.shape[1]} features, but NMFk was fitted with {self.n_features_in_}."
            )
        return _nmf.project_weights(X, self.components_, self.beta_loss)

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """Fit, then return the weights of ``X``."""
        return self.fit(X).transform(X)


def nmfk_settings(estimator: Any) -> dict[str, Any]:
    """Collect the keyword arguments of :func:`nmfk` from the parameters of ``estimator`` (NMFk or HNMFk).

    Both estimators pass their NMFk settings through here, so a split of HNMFk is fitted exactly as
    :class:`NMFk` fits a matrix.
    """
    return {
        "n_perturbations": estimator.n_perturbations,
        "noise": float(estimator.noise),
        "bootstrap": bool(estimator.bootstrap),
        "max_iter": estimator.max_iter,
        "perturbation_max_iter": estimator.perturbation_max_iter,
        "tol": float(estimator.tol),
        "stability_threshold": float(estimator.stability_threshold),
        "stability_tolerance": float(estimator.stability_tolerance),
        "beta_loss": estimator.beta_loss,
    }


def make_rng(random_state: Any) -> np.random.Generator:
    """Make a numpy Generator from an int / None / Generator / RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, numbers.Integral):
        return np.random.default_rng(random_state)
    raise InvalidValueError(
        "The 'random_state' parameter must be an int, a numpy Generator/RandomState or None. "
        f"Got {random_state!r} instead."
    )
