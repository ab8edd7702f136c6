"""Input and parameter validation for the hierarchy estimators (scikit-learn style messages)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import scipy.sparse as sp

from heal_rag.errors import InvalidValueError
from heal_rag.hierarchy._nmf import BETA_LOSSES, DTYPE

_DEVICES = ("auto", "cpu", "cuda")


def _bad(owner: str, name: str, expected: str, value: Any) -> ValueError:
    return InvalidValueError(f"The '{name}' parameter of {owner} must be {expected}. Got {value!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_int(owner: str, name: str, value: Any, low: int) -> int:
    if not _is_int(value) or value < low:
        raise _bad(owner, name, f"an int >= {low}", value)
    return int(value)


def _check_real(
    owner: str, name: str, value: Any, low: float, high: float, *, high_open: bool = False
) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise _bad(owner, name, f"a float in [{low}, {high}{bracket}", value)
    return float(value)


def _check_pair(owner: str, value: Any) -> tuple[int, int]:
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value)
    if not ok or not 2 <= value[0] <= value[1]:
        raise _bad(
            owner,
            "k_range",
            "a pair (k_min, k_max) of ints with 2 <= k_min <= k_max, or a list of such pairs (one per depth)",
            value,
        )
    return int(value[0]), int(value[1])


def check_k_ranges(owner: str, k_range: Any, depth: int) -> list[tuple[int, int]]:
    """Normalise ``k_range`` to one ``(k_min, k_max)`` per depth (a single pair applies to every depth)."""
    if isinstance(k_range, (tuple, list)) and len(k_range) == 2 and all(_is_int(v) for v in k_range):
        return [_check_pair(owner, k_range)] * depth
    if isinstance(k_range, (tuple, list)) and k_range and all(isinstance(v, (tuple, list)) for v in k_range):
        pairs = [_check_pair(owner, v) for v in k_range]
        if len(pairs) > depth:
            raise _bad(owner, "k_range", f"at most one pair per depth (depth={depth})", k_range)
        # a shorter list repeats its last pair for the deeper levels
        return pairs + [pairs[-1]] * (depth - len(pairs))
    return [_check_pair(owner, k_range)]


def check_params(est: Any, *, per_depth: bool) -> dict[str, Any]:
    """Validate the shared parameters of NMFk / HNMFk; returns normalised values (``k_range`` as a list)."""
    owner = type(est).__name__
    depth = _check_int(owner, "depth", est.depth, 1) if per_depth else 1
    out: dict[str, Any] = {"depth": depth, "k_range": check_k_ranges(owner, est.k_range, depth)}
    _check_int(owner, "n_perturbations", est.n_perturbations, 2)
    _check_real(owner, "noise", est.noise, 0.0, 1.0, high_open=True)
    _check_int(owner, "max_iter", est.max_iter, 1)
    _check_int(owner, "perturbation_max_iter", est.perturbation_max_iter, 1)
    _check_real(owner, "tol", est.tol, 0.0, np.inf, high_open=True)
    _check_real(owner, "stability_threshold", est.stability_threshold, -1.0, 1.0)
    _check_real(owner, "stability_tolerance", est.stability_tolerance, 0.0, 2.0)
    if not isinstance(est.bootstrap, (bool, np.bool_)):
        raise _bad(owner, "bootstrap", "a bool", est.bootstrap)
    if est.beta_loss not in BETA_LOSSES:
        raise _bad(owner, "beta_loss", f"one of {BETA_LOSSES}", est.beta_loss)
    if est.device not in _DEVICES:
        raise _bad(owner, "device", f"one of {_DEVICES}", est.device)
    if per_depth:
        out["min_topic_size"] = _check_int(owner, "min_topic_size", est.min_topic_size, 1)
        _check_int(owner, "n_top_terms", est.n_top_terms, 1)
        if est.max_features is not None:
            _check_int(owner, "max_features", est.max_features, 1)
    return out


def check_fit_sample(owner: str, value: Any, n: int, n_empty: int = 0) -> int | None:
    """Resolve ``fit_sample`` to a number of documents in ``[1, n]``, or None to fit on all ``n``.

    Args:
        owner: estimator name, for the messages.
        value: None, an int in ``[1, n]``, or a float in ``(0, 1]`` (share of ``n``, rounded up).
        n: number of documents the tree is built from (after documents without text are left out).
        n_empty: documents without text that were left out (named in the message when they matter).

    Returns:
        The sample size, or None when ``value`` is None.

    """
    if value is None:
        return None
    expected = "None, an int >= 1 (number of documents) or a float in (0, 1] (share of the documents)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _bad(owner, "fit_sample", expected, value)
    if _is_int(value):
        if value < 1:
            raise _bad(owner, "fit_sample", expected, value)
        if value > n:
            left_out = f" ({n_empty} documents without text are left out)" if n_empty else ""
            raise InvalidValueError(
                f"The 'fit_sample' parameter of {owner} asks for {int(value)} documents, but the corpus has "
                f"only {n}{left_out}. Pass at most {n}, a share such as 0.1, or None to fit on all."
            )
        return int(value)
    if not np.isfinite(value) or not 0.0 < value <= 1.0:
        raise _bad(owner, "fit_sample", expected, value)
    return max(1, min(n, int(np.ceil(float(value) * n))))


def check_matrix(X: Any, owner: str, *, allow_empty: bool = False) -> sp.csr_matrix:
    """Validate a non-negative numeric matrix (dense or sparse) and return it as float32 CSR."""
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    else:
        try:
            X = np.asarray(X)
        except Exception as error:  # ragged lists and the like
            raise InvalidValueError(
                f"{owner} expected a 2-D numeric matrix; could not convert the input: {error}"
            ) from None
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise InvalidValueError(
                f"{owner} expected a 2-D numeric matrix (or a list of texts); got an array of dtype "
                f"{X.dtype}."
            )
        if X.ndim != 2:
            raise InvalidValueError(
                f"{owner} expected a 2-D matrix of shape (n_documents, n_features); got shape {X.shape}."
            )
        X = sp.csr_matrix(X)
    if X.shape[0] == 0 and not allow_empty:
        raise InvalidValueError(f"{owner} got an empty corpus (0 documents); at least 1 document is needed.")
    if X.shape[1] == 0:
        raise InvalidValueError(f"{owner} got a matrix with 0 features (columns).")
    data = X.data
    if not np.all(np.isfinite(data)):
        raise InvalidValueError(
            f"{owner} got a matrix with NaN or infinite values; replace or drop them first."
        )
    if data.size and data.min() < 0:
        raise InvalidValueError(
            f"{owner} needs a non-negative matrix (NMF); found a negative value ({data.min():.4g}). "
            "Use TF-IDF or counts, or shift/clip the values."
        )
    X = X.astype(DTYPE)
    X.eliminate_zeros()
    X.sort_indices()
    return X
